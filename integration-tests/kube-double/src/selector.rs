//! Label and field selectors as the Kubernetes API server parses them.
//!
//! Label selectors (`labelSelector=`) follow the grammar of
//! `k8s.io/apimachinery/pkg/labels`: comma-separated requirements, each one of `key`,
//! `!key`, `key=value`, `key==value`, `key!=value`, `key in (a,b)` or `key notin (a,b)`.
//! Field selectors (`fieldSelector=`) support `metadata.name` and `metadata.namespace`
//! with `=`, `==` and `!=`, which is what list/watch clients send for these kinds.

use std::collections::BTreeMap;

use serde_json::Value;

/// A parsed label selector: every requirement must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Requirement {
    Exists(String),
    NotExists(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

impl LabelSelector {
    /// Parses a selector; the empty string selects everything.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut requirements = Vec::new();
        for part in split_top_level(text) {
            let part = part.trim();
            if part.is_empty() {
                if text.trim().is_empty() {
                    continue;
                }
                return Err(format!("empty requirement in label selector {text:?}"));
            }
            requirements.push(parse_requirement(part)?);
        }
        Ok(LabelSelector { requirements })
    }

    /// Whether the labels satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|req| match req {
            Requirement::Exists(key) => labels.contains_key(key),
            Requirement::NotExists(key) => !labels.contains_key(key),
            Requirement::In(key, values) => labels.get(key).is_some_and(|v| values.contains(v)),
            // A missing key satisfies `!=` and `notin`, as in apimachinery.
            Requirement::NotIn(key, values) => !labels.get(key).is_some_and(|v| values.contains(v)),
        })
    }
}

/// Splits on commas that are not inside parentheses.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn parse_requirement(part: &str) -> Result<Requirement, String> {
    if let Some(key) = part.strip_prefix('!') {
        return Ok(Requirement::NotExists(valid_key(key.trim())?));
    }
    if let Some((key, value)) = part.split_once("!=") {
        return Ok(Requirement::NotIn(
            valid_key(key.trim())?,
            vec![valid_value(value.trim())?],
        ));
    }
    if let Some((key, value)) = part.split_once("==").or_else(|| part.split_once('=')) {
        return Ok(Requirement::In(
            valid_key(key.trim())?,
            vec![valid_value(value.trim())?],
        ));
    }
    if part.contains('<') || part.contains('>') {
        return Err(format!(
            "unsupported operator in label selector requirement {part:?}"
        ));
    }
    let words: Vec<&str> = part.splitn(2, char::is_whitespace).collect();
    if words.len() == 2 {
        let key = valid_key(words[0])?;
        let rest = words[1].trim_start();
        let (op, list) = if let Some(list) = rest.strip_prefix("notin") {
            ("notin", list)
        } else if let Some(list) = rest.strip_prefix("in") {
            ("in", list)
        } else {
            return Err(format!(
                "unknown operator in label selector requirement {part:?}"
            ));
        };
        let list = list.trim();
        let inner = list
            .strip_prefix('(')
            .and_then(|l| l.strip_suffix(')'))
            .ok_or_else(|| format!("expected a parenthesised list in {part:?}"))?;
        let values = inner
            .split(',')
            .map(|v| valid_value(v.trim()))
            .collect::<Result<Vec<_>, _>>()?;
        if values.is_empty() || inner.trim().is_empty() {
            return Err(format!("empty value list in {part:?}"));
        }
        return Ok(if op == "in" {
            Requirement::In(key, values)
        } else {
            Requirement::NotIn(key, values)
        });
    }
    Ok(Requirement::Exists(valid_key(part)?))
}

/// A label key: an optional DNS-subdomain prefix and `/`, then a name of at most 63
/// characters of alphanumerics, `-`, `_` and `.`, starting and ending alphanumeric.
fn valid_key(key: &str) -> Result<String, String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    let prefix_ok = match prefix {
        None => true,
        Some(p) => {
            !p.is_empty()
                && p.len() <= 253
                && p.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.'))
        }
    };
    if name_ok && prefix_ok {
        Ok(key.to_owned())
    } else {
        Err(format!("invalid label key {key:?}"))
    }
}

/// A label value: empty, or at most 63 characters of alphanumerics, `-`, `_` and `.`.
fn valid_value(value: &str) -> Result<String, String> {
    let ok = value.is_empty()
        || (value.len() <= 63
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && value.starts_with(|c: char| c.is_ascii_alphanumeric())
            && value.ends_with(|c: char| c.is_ascii_alphanumeric()));
    if ok {
        Ok(value.to_owned())
    } else {
        Err(format!("invalid label value {value:?}"))
    }
}

/// A parsed field selector over `metadata.name` and `metadata.namespace`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector {
    terms: Vec<(String, bool, String)>,
}

impl FieldSelector {
    /// Parses a selector; the empty string selects everything.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut terms = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, equal, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                (f, true, v)
            } else {
                return Err(format!("invalid field selector term {part:?}"));
            };
            let field = field.trim();
            if field != "metadata.name" && field != "metadata.namespace" {
                return Err(format!(
                    "field label not supported: {field} (only metadata.name and metadata.namespace)"
                ));
            }
            terms.push((field.to_owned(), equal, value.trim().to_owned()));
        }
        Ok(FieldSelector { terms })
    }

    /// Whether the object's fields satisfy every term.
    pub fn matches(&self, object: &Value) -> bool {
        self.terms.iter().all(|(field, equal, value)| {
            let key = field.trim_start_matches("metadata.");
            let actual = object["metadata"][key].as_str().unwrap_or("");
            (actual == value) == *equal
        })
    }
}

/// The labels of a stored object.
pub fn labels_of(object: &Value) -> BTreeMap<String, String> {
    object["metadata"]["labels"]
        .as_object()
        .map(|map| {
            map.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn check(selector: &str, pairs: &[(&str, &str)], expected: bool) {
        let parsed = LabelSelector::parse(selector).unwrap();
        assert_eq!(
            parsed.matches(&labels(pairs)),
            expected,
            "{selector:?} on {pairs:?}"
        );
    }

    #[test]
    fn label_selectors_match_like_apimachinery() {
        let svc = "kubernetes.io/service-name";
        check("", &[], true);
        check("kubernetes.io/service-name=web", &[(svc, "web")], true);
        check("kubernetes.io/service-name==web", &[(svc, "api")], false);
        check("kubernetes.io/service-name!=web", &[], true);
        check("kubernetes.io/service-name!=web", &[(svc, "web")], false);
        check("kubernetes.io/service-name", &[(svc, "x")], true);
        check("kubernetes.io/service-name", &[], false);
        check("!kubernetes.io/service-name", &[], true);
        check(
            "kubernetes.io/service-name in (web, api)",
            &[(svc, "api")],
            true,
        );
        check(
            "kubernetes.io/service-name in (web,api)",
            &[(svc, "db")],
            false,
        );
        check(
            "kubernetes.io/service-name notin (web,api)",
            &[(svc, "db")],
            true,
        );
        check("kubernetes.io/service-name notin (web,api)", &[], true);
        check("a=1,b in (x,y)", &[("a", "1"), ("b", "y")], true);
        check("a=1,b in (x,y)", &[("a", "1"), ("b", "z")], false);
    }

    #[test]
    fn bad_label_selectors_are_refused() {
        for bad in [
            "a in x",
            "a in ()",
            "=x",
            "a=b=c",
            "a>1",
            "a,,b",
            "Bad Key=1",
        ] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn field_selectors() {
        let object = serde_json::json!({"metadata": {"name": "a", "namespace": "ns"}});
        let check = |text: &str, expected: bool| {
            assert_eq!(
                FieldSelector::parse(text).unwrap().matches(&object),
                expected,
                "{text}"
            );
        };
        check("", true);
        check("metadata.name=a", true);
        check("metadata.name==b", false);
        check("metadata.name!=b,metadata.namespace=ns", true);
        assert!(FieldSelector::parse("spec.x=1").is_err());
    }
}
