//! The pure merge of the fleet's etcd objects over a gateway's file: a [`Snapshot`] of the
//! objects under the prefix at one revision, laid over the file's config value, with the
//! [`Origins`] that rewrite validation issues to name the etcd key at fault. No I/O.

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use switchyard_registry::ConfigIssue;

/// The sections whose objects may live in etcd.
pub const OBJECT_SECTIONS: [&str; 5] =
    ["routes", "upstreams", "consumers", "auth", "route_defaults"];

/// The objects under the prefix at one revision: keys relative to the prefix
/// (`routes/web`) with their raw values.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The prefix they were read under.
    pub prefix: String,
    /// The etcd revision read.
    pub revision: i64,
    /// Relative key → raw value.
    pub objects: BTreeMap<String, Vec<u8>>,
}

impl Snapshot {
    /// The full etcd key of a relative one.
    pub fn key(&self, relative: &str) -> String {
        format!("{}/{relative}", self.prefix)
    }
}

/// Where the merged config's objects came from: config paths (`routes[3]`,
/// `upstreams.web`) of etcd objects, with their relative keys.
#[derive(Clone, Debug, Default)]
pub struct Origins {
    prefix: String,
    entries: Vec<(String, String)>,
}

impl Origins {
    /// Rewrites issues about etcd objects to name the object's key:
    /// `routes[3].upstream: unknown upstream` becomes
    /// `etcd:/switchyard/config/routes/web: upstream: unknown upstream`.
    pub fn translate(&self, issues: Vec<ConfigIssue>) -> Vec<ConfigIssue> {
        issues
            .into_iter()
            .map(|issue| self.translate_one(issue))
            .collect()
    }

    fn translate_one(&self, issue: ConfigIssue) -> ConfigIssue {
        for (path, relative) in &self.entries {
            let Some(rest) = issue.path.strip_prefix(path.as_str()) else {
                continue;
            };
            if !(rest.is_empty() || rest.starts_with('.') || rest.starts_with('[')) {
                continue;
            }
            let rest = rest.strip_prefix('.').unwrap_or(rest);
            let message = if rest.is_empty() {
                issue.message
            } else {
                format!("{rest}: {}", issue.message)
            };
            return ConfigIssue::new(format!("etcd:{}/{relative}", self.prefix), message);
        }
        issue
    }
}

/// Parses one object's document: JSON, else TOML (a table).
pub fn parse_document(raw: &[u8]) -> Result<Value, String> {
    let text = std::str::from_utf8(raw).map_err(|_| "not UTF-8 text".to_owned())?;
    let json_error = match serde_json::from_str::<Value>(text) {
        Ok(value) => return Ok(value),
        Err(error) => error,
    };
    if text.trim_start().starts_with('{') {
        return Err(format!("invalid JSON: {json_error}"));
    }
    config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml))
        .build()
        .and_then(|c| c.try_deserialize::<Value>())
        .map_err(|e| format!("neither JSON ({json_error}) nor TOML ({e})"))
}

/// Splits a relative key into (section, name), or says why it is not an object key.
fn split_key(relative: &str) -> Result<(&str, &str), String> {
    let expected = "expected <section>/<name> with section routes, upstreams, consumers, auth or route_defaults";
    let Some((section, name)) = relative.split_once('/') else {
        return Err(if relative.is_empty() {
            format!("a value at the prefix itself; {expected}")
        } else {
            format!("not a config object; {expected}")
        });
    };
    if !OBJECT_SECTIONS.contains(&section) {
        let local = [
            "registries",
            "server",
            "admin",
            "log",
            "state",
            "config_source",
        ];
        return Err(if local.contains(&section) {
            format!("{section} are not read from etcd: registries, listeners and other local settings come from each gateway's file")
        } else {
            format!("unknown section {section:?}; {expected}")
        });
    }
    check_name(name)?;
    Ok((section, name))
}

/// An object name: one non-empty key segment without whitespace.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the object name (the last key segment) is empty".into());
    }
    if name.contains('/') {
        return Err(format!(
            "{name:?}: an object name is one key segment, without '/'"
        ));
    }
    if name.chars().any(char::is_whitespace) {
        return Err(format!("{name:?}: an object name has no whitespace"));
    }
    Ok(())
}

/// Merges a snapshot's objects over the file's config value. Objects that do not parse,
/// and keys that name no object, are left out and reported (with their etcd keys), so
/// that the validation of the rest can report everything else at once: any issue refuses
/// the snapshot.
pub fn merge(file: &Value, snapshot: &Snapshot) -> (Value, Origins, Vec<ConfigIssue>) {
    let mut merged = file.clone();
    let mut issues = Vec::new();
    let mut origins = Origins {
        prefix: snapshot.prefix.clone(),
        entries: Vec::new(),
    };
    let Some(root) = merged.as_object_mut() else {
        let issue = ConfigIssue::new("", "the config file is not a table");
        return (file.clone(), origins, vec![issue]);
    };
    let mut routes = Vec::new();
    for (relative, raw) in &snapshot.objects {
        let at =
            |message: String| ConfigIssue::new(format!("etcd:{}", snapshot.key(relative)), message);
        let (section, name) = match split_key(relative) {
            Ok(split) => split,
            Err(message) => {
                issues.push(at(message));
                continue;
            }
        };
        let mut document = match parse_document(raw) {
            Ok(document) => document,
            Err(message) => {
                issues.push(at(message));
                continue;
            }
        };
        if section == "routes" {
            let Some(table) = document.as_object_mut() else {
                issues.push(at("a route must be a table".into()));
                continue;
            };
            match table.get("name") {
                None => {
                    table.insert("name".into(), Value::String(name.to_owned()));
                }
                Some(Value::String(given)) if given == name => {}
                Some(other) => {
                    issues.push(at(format!(
                        "name: {other} differs from the key's name {name:?} (leave it out or make it match)"
                    )));
                    continue;
                }
            }
            routes.push((relative.clone(), name.to_owned(), document));
            continue;
        }
        let entry = root
            .entry(section)
            .or_insert_with(|| Value::Object(Map::new()));
        match entry.as_object_mut() {
            Some(table) => {
                table.insert(name.to_owned(), document);
                origins
                    .entries
                    .push((format!("{section}.{name}"), relative.clone()));
            }
            None => issues.push(ConfigIssue::new(
                section,
                format!("must be a table to take {}", snapshot.key(relative)),
            )),
        }
    }
    if !routes.is_empty() {
        let list = root
            .entry("routes")
            .or_insert_with(|| Value::Array(Vec::new()));
        match list.as_array_mut() {
            Some(list) => {
                for (relative, name, document) in routes {
                    let same_name = list
                        .iter()
                        .position(|r| r.get("name").and_then(Value::as_str) == Some(name.as_str()));
                    let index = match same_name {
                        Some(i) => {
                            list[i] = document;
                            i
                        }
                        None => {
                            list.push(document);
                            list.len() - 1
                        }
                    };
                    origins.entries.push((format!("routes[{index}]"), relative));
                }
            }
            None => issues.push(ConfigIssue::new("routes", "must be an array of tables")),
        }
    }
    (merged, origins, issues)
}

/// The objects of a config file, keyed as they are stored under the prefix
/// (`routes/web`, `upstreams/web`, ...). Unnamed routes get the planner's default name
/// `route-<index>`.
pub fn objects_of(file: &Value) -> Result<BTreeMap<String, Value>, Vec<ConfigIssue>> {
    let mut objects = BTreeMap::new();
    let mut issues = Vec::new();
    for section in OBJECT_SECTIONS {
        let Some(value) = file.get(section) else {
            continue;
        };
        if section == "routes" {
            let Some(list) = value.as_array() else {
                issues.push(ConfigIssue::new("routes", "must be an array of tables"));
                continue;
            };
            for (i, route) in list.iter().enumerate() {
                let name = match route.get("name") {
                    None => format!("route-{i}"),
                    Some(Value::String(name)) => name.clone(),
                    Some(_) => {
                        issues.push(ConfigIssue::new(
                            format!("routes[{i}].name"),
                            "must be a string",
                        ));
                        continue;
                    }
                };
                if let Err(message) = check_name(&name) {
                    issues.push(ConfigIssue::new(format!("routes[{i}].name"), message));
                    continue;
                }
                if objects
                    .insert(format!("routes/{name}"), route.clone())
                    .is_some()
                {
                    issues.push(ConfigIssue::new(
                        format!("routes[{i}].name"),
                        format!("{name:?} names two routes"),
                    ));
                }
            }
            continue;
        }
        let Some(table) = value.as_object() else {
            issues.push(ConfigIssue::new(section, "must be a table"));
            continue;
        };
        for (name, object) in table {
            if let Err(message) = check_name(name) {
                issues.push(ConfigIssue::new(format!("{section}.{name}"), message));
                continue;
            }
            objects.insert(format!("{section}/{name}"), object.clone());
        }
    }
    if issues.is_empty() {
        Ok(objects)
    } else {
        Err(issues)
    }
}
#[cfg(test)]
mod tests {
    use super::super::settings::DEFAULT_PREFIX;
    use super::*;
    use serde_json::json;
    fn snapshot(objects: &[(&str, &str)]) -> Snapshot {
        Snapshot {
            prefix: DEFAULT_PREFIX.into(),
            revision: 7,
            objects: objects
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
                .collect(),
        }
    }

    /// Merges `objects` over `file` and compares with the expected merged value, or the
    /// expected issue strings.
    fn check(file: Value, objects: &[(&str, &str)], expected: Result<Value, &[&str]>) {
        let (value, _, issues) = merge(&file, &snapshot(objects));
        let issues: Vec<String> = issues.iter().map(ToString::to_string).collect();
        let got = if issues.is_empty() {
            Ok(value)
        } else {
            Err(issues)
        };
        match (got, expected) {
            (Ok(value), Ok(want)) => assert_eq!(value, want, "{objects:?}"),
            (Err(issues), Err(want)) => {
                assert_eq!(issues.len(), want.len(), "{issues:?}");
                for (issue, want) in issues.iter().zip(want) {
                    assert!(issue.contains(want), "{issue:?} lacks {want:?}");
                }
            }
            (got, want) => panic!("{objects:?}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn merges_objects_over_the_file() {
        let file = json!({"registries": {"r": {"type": "static"}},
            "upstreams": {"a": {"balancer": "random"}},
            "routes": [{"name": "one", "upstream": "a"}, {"name": "two", "upstream": "a"}]});
        // Nothing in etcd: the file as it is.
        check(file.clone(), &[], Ok(file.clone()));
        // A new upstream and route (JSON and TOML), a route replacing the file's by name.
        check(
            file.clone(),
            &[
                ("upstreams/b", "balancer = \"ewma\""),
                ("routes/two", r#"{"upstream": "b", "path_prefix": "/two"}"#),
                ("routes/zz", r#"{"name": "zz", "upstream": "b"}"#),
                ("consumers/alice", r#"{"keys": ["k"]}"#),
                ("route_defaults/retries", "2"),
            ],
            Ok(json!({"registries": {"r": {"type": "static"}},
                "upstreams": {"a": {"balancer": "random"}, "b": {"balancer": "ewma"}},
                "consumers": {"alice": {"keys": ["k"]}},
                "route_defaults": {"retries": 2},
                "routes": [{"name": "one", "upstream": "a"},
                           {"name": "two", "upstream": "b", "path_prefix": "/two"},
                           {"name": "zz", "upstream": "b"}]})),
        );
        // Every bad object is reported, with its key.
        check(
            file,
            &[
                ("registries/r", "{}"),
                ("routes/x", "{not json"),
                ("routes/y", r#"{"name": "other", "upstream": "a"}"#),
                ("routes/z", "[1]"),
                ("stray", "1"),
                ("upstreams/a b", "{}"),
                ("widgets/w", "{}"),
            ],
            Err(&[
                "etcd:/switchyard/config/registries/r: registries are not read from etcd",
                "etcd:/switchyard/config/routes/x: invalid JSON",
                "etcd:/switchyard/config/routes/y: name: \"other\" differs",
                "etcd:/switchyard/config/routes/z: a route must be a table",
                "etcd:/switchyard/config/stray: not a config object",
                "etcd:/switchyard/config/upstreams/a b: \"a b\": an object name has no whitespace",
                "etcd:/switchyard/config/widgets/w: unknown section \"widgets\"",
            ]),
        );
    }

    #[test]
    fn issues_name_the_etcd_key() {
        let file = json!({"routes": [{"name": "one", "upstream": "a"}]});
        let (_, origins, issues) = merge(
            &file,
            &snapshot(&[
                ("routes/web", "{}"),
                ("upstreams/web", "{}"),
                ("consumers/al", "{}"),
            ]),
        );
        assert!(issues.is_empty(), "{issues:?}");
        let cases = [
            (
                "routes[1].upstream",
                "etcd:/switchyard/config/routes/web: upstream: m",
            ),
            ("routes[1]", "etcd:/switchyard/config/routes/web: m"),
            ("routes[0].upstream", "routes[0].upstream: m"),
            ("routes[10]", "routes[10]: m"),
            (
                "upstreams.web.sources[0].registry",
                "etcd:/switchyard/config/upstreams/web: sources[0].registry: m",
            ),
            ("upstreams.webx", "upstreams.webx: m"),
            (
                "consumers.al.keys[0]",
                "etcd:/switchyard/config/consumers/al: keys[0]: m",
            ),
        ];
        for (path, want) in cases {
            let got = origins.translate(vec![ConfigIssue::new(path, "m")]);
            assert_eq!(got[0].to_string(), want, "{path}");
        }
    }

    #[test]
    fn documents() {
        let check =
            |raw: &str, want: Result<Value, &str>| match (parse_document(raw.as_bytes()), want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{raw}"),
                (Err(got), Err(want)) => assert!(got.contains(want), "{raw}: {got}"),
                (got, want) => panic!("{raw}: got {got:?}, want {want:?}"),
            };
        check(r#"{"a": 1}"#, Ok(json!({"a": 1})));
        check(
            "a = 1\n[b]\nc = \"x\"",
            Ok(json!({"a": 1, "b": {"c": "x"}})),
        );
        check("[\"key\"]", Ok(json!(["key"])));
        check("{\"a\": ", Err("invalid JSON"));
        check(
            "[health_check]\npath = \"/h\"",
            Ok(json!({"health_check": {"path": "/h"}})),
        );
        check("a = = 1", Err("neither JSON"));
    }
}
