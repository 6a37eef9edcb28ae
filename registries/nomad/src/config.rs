//! The `[registries.NAME]` table of a `type = "nomad"` registry: decoding, with every
//! problem reported under its key, and the checks that need no network (URL shape, `wait`
//! within Nomad's 10-minute cap).

use std::time::Duration;

use reqwest::Url;
use serde::Deserialize;
use switchyard_registry::{decode_settings_naming_all, ConfigIssue};

/// The agent address used when `address` is absent (Nomad's own default, `NOMAD_ADDR`).
pub const DEFAULT_ADDRESS: &str = "http://127.0.0.1:4646";
/// The namespace used when `namespace` is absent (Nomad's own default).
pub const DEFAULT_NAMESPACE: &str = "default";
/// The blocking-query wait used when `wait` is absent (Nomad's own default, 5 minutes).
pub const DEFAULT_WAIT: Duration = Duration::from_secs(300);
/// The longest wait Nomad honours (api-docs "Blocking Queries": capped at 10 minutes).
pub const MAX_WAIT: Duration = Duration::from_secs(600);

/// The settings as written; every key optional so each can be decoded alone.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Settings {
    /// Agent URL, `http://` or `https://`. Default `http://127.0.0.1:4646`.
    #[serde(default)]
    address: Option<String>,
    /// ACL token, sent as `X-Nomad-Token`. Default: none (anonymous).
    #[serde(default)]
    token: Option<String>,
    /// Namespace (`?namespace=`). Default `default`.
    #[serde(default)]
    namespace: Option<String>,
    /// Region (`?region=`). Default: the agent's.
    #[serde(default)]
    region: Option<String>,
    /// Blocking-query wait. Default 5m, at most 10m.
    #[schemars(with = "Option<String>")]
    #[serde(default, with = "humantime_serde")]
    wait: Option<Duration>,
}

/// A validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// The agent's base URL, ending in `/`.
    pub address: Url,
    /// The ACL token, when set.
    pub token: Option<String>,
    /// The namespace read.
    pub namespace: String,
    /// The region, when set.
    pub region: Option<String>,
    /// Blocking-query wait.
    pub wait: Duration,
}

/// Decodes and checks a settings table, reporting every problem found.
pub fn decode(value: &serde_json::Value) -> Result<Config, Vec<ConfigIssue>> {
    let settings: Settings = decode_settings_naming_all(value)?;
    let mut issues = Vec::new();
    let address = match parse_address(settings.address.as_deref().unwrap_or(DEFAULT_ADDRESS)) {
        Ok(url) => Some(url),
        Err(message) => {
            issues.push(ConfigIssue::new("address", message));
            None
        }
    };
    for (key, value) in [
        ("token", &settings.token),
        ("namespace", &settings.namespace),
        ("region", &settings.region),
    ] {
        if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
            issues.push(ConfigIssue::new(key, "must not be empty"));
        }
    }
    if settings.namespace.as_deref() == Some("*") {
        issues.push(ConfigIssue::new(
            "namespace",
            "\"*\" (every namespace) is not supported: name one namespace",
        ));
    }
    let wait = settings.wait.unwrap_or(DEFAULT_WAIT);
    if wait.is_zero() || wait > MAX_WAIT {
        issues.push(ConfigIssue::new(
            "wait",
            format!(
                "must be more than 0 and at most 10m (Nomad caps blocking queries at 10 minutes), not {}",
                humantime::format_duration(wait)
            ),
        ));
    }
    match address {
        Some(address) if issues.is_empty() => Ok(Config {
            address,
            token: settings.token.map(|t| t.trim().to_owned()),
            namespace: settings
                .namespace
                .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned()),
            region: settings.region,
            wait,
        }),
        _ => Err(issues),
    }
}

/// Parses the agent URL: http or https, a host, no query, fragment or credentials; a path
/// prefix is kept.
pub fn parse_address(text: &str) -> Result<Url, String> {
    let mut url = Url::parse(text).map_err(|e| {
        format!("{text:?} is not a URL ({e}); write it as http://HOST:PORT or https://HOST:PORT")
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{text:?} must start with http:// or https://"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{text:?} has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("{text:?} must not have a query or fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("{text:?} must not carry credentials; use token"));
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use switchyard_registry::testkit::assert_issues;

    /// Decodes `settings`; `expected` lists issue prefixes (`path: message`), empty = ok.
    fn check(settings: serde_json::Value, expected: &[&str]) {
        assert_issues(&settings, decode(&settings), expected);
    }

    #[test]
    fn settings() {
        check(json!({}), &[]);
        check(
            json!({"address": "https://nomad:4646/", "token": "t", "namespace": "web", "region": "eu", "wait": "30s"}),
            &[],
        );
        check(json!({"adress": "x"}), &["adress: unknown field"]);
        check(
            json!({"adress": "x", "wait": 5}),
            &["adress: unknown field", "wait: invalid type"],
        );
        check(json!({"address": "localhost:4646"}), &["address:"]);
        check(json!({"address": "http://u:p@h:1"}), &["address:"]);
        check(json!({"wait": "11m"}), &["wait: must be more than 0"]);
        check(
            json!({"namespace": "", "token": " "}),
            &["token: must not be empty", "namespace: must not be empty"],
        );
        check(json!({"namespace": "*"}), &["namespace: \"*\""]);
        assert_eq!(decode(&json!({})).unwrap().namespace, "default");
    }
}
