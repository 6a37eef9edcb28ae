//! The `[registries.NAME]` table of a `type = "nacos"` registry: decoding, with every
//! problem reported under its key.

use std::time::Duration;

use reqwest::Url;
use serde::Deserialize;
use switchyard_registry::{decode_settings_naming_all, ConfigIssue};

/// The server used when `servers` is absent (Nacos's default port).
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8848";
/// The namespace used when `namespace` is absent (Nacos's default namespace).
pub const DEFAULT_NAMESPACE: &str = "public";
/// The group of a source `service` without `GROUP@@`.
pub const DEFAULT_GROUP: &str = "DEFAULT_GROUP";
/// The refresh period when `fetch_interval` is absent: 5 s. Nacos clients beat every 5 s
/// and the server marks an instance unhealthy after 15 s without a beat and deletes it
/// after 30 s; polling at the beat period bounds the gateway's lag by one beat on top of
/// the server's own, where APISIX's 30 s adds up to a whole deletion timeout. One small
/// GET per service per 5 s is cheap for the server.
pub const DEFAULT_FETCH_INTERVAL: Duration = Duration::from_secs(5);
/// The shortest `fetch_interval` accepted.
pub const MIN_FETCH_INTERVAL: Duration = Duration::from_millis(100);

/// The settings as written; every key optional so each can be decoded alone.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Settings {
    /// Server URLs, tried in turn. Default `["http://127.0.0.1:8848"]`.
    #[serde(default)]
    servers: Option<Vec<String>>,
    /// Namespace ID. Default `public`.
    #[serde(default)]
    namespace: Option<String>,
    /// Login user (with `password`). Default: no login.
    #[serde(default)]
    username: Option<String>,
    /// Login password (with `username`). Default: none.
    #[serde(default)]
    password: Option<String>,
    /// Refresh period. Default 5s.
    #[schemars(with = "Option<String>")]
    #[serde(default, with = "humantime_serde")]
    fetch_interval: Option<Duration>,
    /// Clusters to read (all when empty). Default: all.
    #[serde(default)]
    clusters: Option<Vec<String>>,
}

/// A validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Server base URLs, each ending in the context path (`/nacos/`).
    pub servers: Vec<Url>,
    /// Namespace ID.
    pub namespace: String,
    /// Username and password, when login is on.
    pub credentials: Option<(String, String)>,
    /// Refresh period.
    pub fetch_interval: Duration,
    /// Clusters, empty for all.
    pub clusters: Vec<String>,
}

/// Decodes and checks a settings table, reporting every problem found.
pub fn decode(value: &serde_json::Value) -> Result<Config, Vec<ConfigIssue>> {
    let settings: Settings = decode_settings_naming_all(value)?;
    let mut issues = Vec::new();
    let texts = settings
        .servers
        .unwrap_or_else(|| vec![DEFAULT_SERVER.to_owned()]);
    if texts.is_empty() {
        issues.push(ConfigIssue::new("servers", "must list at least one server"));
    }
    let mut servers = Vec::new();
    for (i, text) in texts.iter().enumerate() {
        match parse_server(text) {
            Ok(url) => servers.push(url),
            Err(message) => issues.push(ConfigIssue::new(format!("servers[{i}]"), message)),
        }
    }
    let namespace = settings
        .namespace
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
    if namespace.trim().is_empty() {
        issues.push(ConfigIssue::new("namespace", "must not be empty"));
    }
    let credentials = match (settings.username, settings.password) {
        (Some(user), Some(password)) if !user.is_empty() => Some((user, password)),
        (Some(_), Some(_)) => {
            issues.push(ConfigIssue::new("username", "must not be empty"));
            None
        }
        (Some(_), None) => {
            issues.push(ConfigIssue::new("password", "is needed with username"));
            None
        }
        (None, Some(_)) => {
            issues.push(ConfigIssue::new("username", "is needed with password"));
            None
        }
        (None, None) => None,
    };
    let fetch_interval = settings.fetch_interval.unwrap_or(DEFAULT_FETCH_INTERVAL);
    if fetch_interval < MIN_FETCH_INTERVAL {
        issues.push(ConfigIssue::new(
            "fetch_interval",
            format!(
                "must be at least 100ms, not {}",
                humantime::format_duration(fetch_interval)
            ),
        ));
    }
    let clusters = settings.clusters.unwrap_or_default();
    for (i, cluster) in clusters.iter().enumerate() {
        if cluster.trim().is_empty() || cluster.contains(',') {
            issues.push(ConfigIssue::new(
                format!("clusters[{i}]"),
                "must be a cluster name (not empty, no ',')",
            ));
        }
    }
    if issues.is_empty() {
        Ok(Config {
            servers,
            namespace,
            credentials,
            fetch_interval,
            clusters,
        })
    } else {
        Err(issues)
    }
}

/// Parses a server URL: http or https with a host; a bare `http://host:port` gets Nacos's
/// default context path `/nacos/`, any other path is the context path as given.
pub fn parse_server(text: &str) -> Result<Url, String> {
    let mut url = Url::parse(text)
        .map_err(|e| format!("{text:?} is not a URL ({e}); write it as http://HOST:8848"))?;
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
        return Err(format!(
            "{text:?} must not carry credentials; use username and password"
        ));
    }
    let path = match url.path() {
        "" | "/" => "/nacos/".to_owned(),
        p if p.ends_with('/') => p.to_owned(),
        p => format!("{p}/"),
    };
    url.set_path(&path);
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use switchyard_registry::testkit::assert_issues;

    fn check(settings: serde_json::Value, expected: &[&str]) {
        assert_issues(&settings, decode(&settings), expected);
    }

    #[test]
    fn settings() {
        check(json!({}), &[]);
        check(
            json!({"servers": ["http://a:8848", "https://b:8848/ctx"], "namespace": "dev",
                   "username": "nacos", "password": "p", "fetch_interval": "2s", "clusters": ["A"]}),
            &[],
        );
        check(json!({"server": []}), &["server: unknown field"]);
        check(json!({"servers": []}), &["servers: must list"]);
        check(
            json!({"servers": ["http://a", "a:8848"], "fetch_interval": "1ms"}),
            &["servers[1]:", "fetch_interval: must be at least"],
        );
        check(json!({"username": "u"}), &["password: is needed"]);
        check(json!({"password": "p"}), &["username: is needed"]);
        check(
            json!({"clusters": ["a,b"], "namespace": ""}),
            &["namespace:", "clusters[0]:"],
        );
        check(
            json!({"fetch_interval": 5}),
            &["fetch_interval: invalid type"],
        );
        let config = decode(&json!({})).unwrap();
        assert_eq!(config.servers[0].as_str(), "http://127.0.0.1:8848/nacos/");
        assert_eq!(config.namespace, "public");
        assert_eq!(config.fetch_interval, DEFAULT_FETCH_INTERVAL);
    }
}
