//! `[config_source]`: where the fleet config lives (etcd endpoints, credentials, TLS, key
//! prefix) and how long start-up waits for it. Decoding only; nothing here connects.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use switchyard_etcd::ConnectSettings;
use switchyard_registry::{decode_settings, ConfigIssue, RegistryContext};

use super::merge::Snapshot;

/// The default key prefix of the fleet config.
pub const DEFAULT_PREFIX: &str = "/switchyard/config";

/// The default time the gateway waits at start-up for the first read of the prefix.
pub const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// `[config_source]`, decoded.
#[derive(Clone, Debug, PartialEq)]
pub struct ConfigSource {
    /// How to reach etcd (`endpoints`, `username`/`password`, `ca`/`cert`/`key` relative to
    /// the config file, `dial_timeout` default 5 s).
    pub connect: ConnectSettings,
    /// Key prefix without a trailing `/`. Default [`DEFAULT_PREFIX`].
    pub prefix: String,
    /// How long start-up waits for the first read. Default [`DEFAULT_STARTUP_TIMEOUT`].
    pub startup_timeout: Duration,
    /// The etcd objects this generation was built with (set by the loader, not by the
    /// file): `None` for a generation of the file alone.
    pub snapshot: Option<Arc<Snapshot>>,
}

/// A lone duration such as `"5s"`.
#[derive(serde::Deserialize)]
struct HumanDuration(#[serde(with = "humantime_serde")] Duration);

/// Decodes the `[config_source]` table; issue paths are relative to it.
///
/// Relative TLS file paths are resolved against the config file's directory when
/// connecting (an unreadable one is then a connection error); absolute ones are checked here.
pub fn decode(value: &Value) -> Result<ConfigSource, Vec<ConfigIssue>> {
    let Some(table) = value.as_object() else {
        return Err(vec![ConfigIssue::new("", "must be a table")]);
    };
    let mut table = table.clone();
    let mut issues = Vec::new();
    match table.remove("type") {
        Some(Value::String(kind)) if kind == "etcd" => {}
        Some(Value::String(kind)) => issues.push(ConfigIssue::new(
            "type",
            format!("unknown config source type {kind:?} (known: etcd)"),
        )),
        Some(_) => issues.push(ConfigIssue::new("type", "must be a string (etcd)")),
        None => issues.push(ConfigIssue::new("type", "missing (etcd)")),
    }
    let startup_timeout = match table.remove("startup_timeout") {
        None => DEFAULT_STARTUP_TIMEOUT,
        Some(value) => match decode_settings::<HumanDuration>(&value) {
            Ok(HumanDuration(d)) => d,
            Err(issue) => {
                issues.push(issue.under("startup_timeout"));
                DEFAULT_STARTUP_TIMEOUT
            }
        },
    };
    table
        .entry("prefix")
        .or_insert_with(|| Value::String(DEFAULT_PREFIX.to_owned()));
    // TLS paths are checked below, relative ones at connect time.
    let mut paths = BTreeMap::new();
    for key in ["ca", "cert", "key"] {
        if let Some(value) = table.remove(key) {
            match value {
                Value::String(path) => {
                    paths.insert(key, PathBuf::from(path));
                }
                _ => issues.push(ConfigIssue::new(key, "must be a string (a PEM file path)")),
            }
        }
    }
    let ctx = RegistryContext::new("config_source");
    match switchyard_etcd::Settings::decode(&ctx, &Value::Object(table)) {
        Ok(settings) => {
            let mut connect = settings.connect;
            connect.ca = paths.remove("ca");
            connect.cert = paths.remove("cert");
            connect.key = paths.remove("key");
            // The first decode found the rest sound: what remains is about TLS.
            issues.extend(connect.check().into_iter().filter(|issue| {
                let relative = |p: &Option<PathBuf>| p.as_ref().is_some_and(|p| p.is_relative());
                !(issue.message.starts_with("no such file")
                    && match issue.path.as_str() {
                        "ca" => relative(&connect.ca),
                        "cert" => relative(&connect.cert),
                        "key" => relative(&connect.key),
                        _ => false,
                    })
            }));
            if issues.is_empty() {
                return Ok(ConfigSource {
                    connect,
                    prefix: settings.prefix,
                    startup_timeout,
                    snapshot: None,
                });
            }
        }
        Err(more) => issues.extend(more),
    }
    Err(issues)
}
#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    #[test]
    fn decodes_the_section() {
        let ok = |value: Value, prefix: &str| {
            let source = decode(&value).unwrap_or_else(|e| panic!("{value}: {e:?}"));
            assert_eq!(source.prefix, prefix, "{value}");
        };
        let bad = |value: Value, want: &[&str]| {
            let issues: Vec<String> = decode(&value)
                .unwrap_err()
                .iter()
                .map(ToString::to_string)
                .collect();
            assert_eq!(issues.len(), want.len(), "{value}: {issues:?}");
            for (issue, want) in issues.iter().zip(want) {
                assert!(issue.contains(want), "{issue:?} lacks {want:?}");
            }
        };
        ok(
            json!({"type": "etcd", "endpoints": ["http://127.0.0.1:2379"]}),
            DEFAULT_PREFIX,
        );
        ok(
            json!({"type": "etcd", "endpoints": ["http://a:1"], "prefix": "/fleet/a/", "startup_timeout": "2s"}),
            "/fleet/a",
        );
        // A relative TLS path is resolved against the config file when connecting.
        ok(
            json!({"type": "etcd", "endpoints": ["https://a:1"], "ca": "certs/ca.pem"}),
            DEFAULT_PREFIX,
        );
        bad(json!({"endpoints": ["http://a:1"]}), &["type: missing"]);
        bad(
            json!({"type": "consul", "endpoints": ["http://a:1"]}),
            &["type: unknown config source type \"consul\""],
        );
        bad(json!({"type": "etcd"}), &["endpoints: missing"]);
        bad(
            json!({"type": "etcd", "endpoints": ["http://a:1"], "prefix": "x", "startup_timeout": "soon"}),
            &["startup_timeout: ", "prefix: must start with '/'"],
        );
        bad(
            json!({"type": "etcd", "endpoints": ["http://a:1"], "colour": 1}),
            &["colour: unknown key"],
        );
        bad(
            json!({"type": "etcd", "endpoints": ["http://a:1"], "ca": "/nonexistent/ca.pem"}),
            &["endpoints[0]: TLS settings", "ca: no such file"],
        );
        bad(json!("etcd"), &["must be a table"]);
    }
}
