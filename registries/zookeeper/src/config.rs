//! The `[registries.NAME]` table of a `type = "zookeeper"` registry: decoding, with every
//! problem reported under its key, and the checks that need no network.

use std::time::Duration;

use serde::Deserialize;
use switchyard_registry::{decode_settings_naming_all, ConfigIssue};

/// The root used when `root` is absent (Curator's and Spring Cloud Zookeeper's usual base
/// path is `/services`; Dubbo's is `/dubbo`, set `root` for it).
pub const DEFAULT_ROOT: &str = "/services";
/// The session timeout asked for when `session_timeout` is absent. The server clamps it to
/// its `minSessionTimeout..maxSessionTimeout` (2..20 ticks, 4 s..40 s by default).
pub const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(30);
/// How long connecting to one server may take when `connect_timeout` is absent.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Which layout the nodes under `root` follow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Apache Curator x-discovery: `<root>/<service>/<id>`, JSON data. The default.
    #[default]
    Curator,
    /// Apache Dubbo: `<root>/<interface>/providers/<URL-encoded provider URL>`.
    Dubbo,
}

/// The settings as written. Every field is optional so that each key can be decoded alone,
/// which lets [`Config::decode`] name every bad key rather than the first.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Settings {
    /// `host:port` of each server (IPv6 in brackets, `[::1]:2181`); the client fails over
    /// between them. Required, at least one.
    #[serde(default)]
    servers: Option<Vec<String>>,
    /// The base path, absolute. Default `/services` (set `/dubbo` for Dubbo).
    #[serde(default)]
    root: Option<String>,
    /// Node layout: `curator` (Curator x-discovery JSON) or `dubbo` (provider URLs).
    /// Default `curator`.
    #[serde(default)]
    format: Option<Format>,
    /// Session timeout asked of the server, 1 s to 10 min; the server clamps it to its own
    /// bounds. Default 30 s.
    #[schemars(with = "Option<String>")]
    #[serde(default, with = "humantime_serde")]
    session_timeout: Option<Duration>,
    /// Time to connect to one server. Default 5 s.
    #[schemars(with = "Option<String>")]
    #[serde(default, with = "humantime_serde")]
    connect_timeout: Option<Duration>,
    /// Digest authentication user (`addauth digest user:password`), without `:`. Default: none.
    #[serde(default)]
    username: Option<String>,
    /// Digest authentication password; required with `username`. Default: none.
    #[serde(default)]
    password: Option<String>,
}

/// A validated configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The servers, `host:port` each.
    pub servers: Vec<String>,
    /// The base path, starting with `/`, without a trailing `/` (`""` for the tree's root).
    pub root: String,
    /// The layout.
    pub format: Format,
    /// Session timeout asked of the server.
    pub session_timeout: Duration,
    /// Time to connect to one server.
    pub connect_timeout: Duration,
    /// Digest credentials, `user:password`.
    pub digest: Option<String>,
}

impl Config {
    /// Decodes and checks a settings table, reporting every problem found.
    pub fn decode(value: &serde_json::Value) -> Result<Config, Vec<ConfigIssue>> {
        let settings: Settings = decode_settings_naming_all(value)?;
        let mut issues = Vec::new();
        let servers = settings.servers.unwrap_or_default();
        if servers.is_empty() {
            issues.push(ConfigIssue::new(
                "servers",
                "must list at least one server as \"host:port\"",
            ));
        }
        for (i, server) in servers.iter().enumerate() {
            if let Err(message) = check_server(server) {
                issues.push(ConfigIssue::new(format!("servers[{i}]"), message));
            }
        }
        let root = settings.root.unwrap_or_else(|| DEFAULT_ROOT.to_owned());
        if let Err(message) = check_root(&root) {
            issues.push(ConfigIssue::new("root", message));
        }
        let session_timeout = settings.session_timeout.unwrap_or(DEFAULT_SESSION_TIMEOUT);
        if session_timeout < Duration::from_secs(1) || session_timeout > Duration::from_secs(600) {
            issues.push(ConfigIssue::new(
                "session_timeout",
                format!(
                    "must be between 1s and 10m, not {}",
                    humantime::format_duration(session_timeout)
                ),
            ));
        }
        let connect_timeout = settings.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        if connect_timeout.is_zero() {
            issues.push(ConfigIssue::new("connect_timeout", "must be more than 0"));
        }
        let digest = match (settings.username, settings.password) {
            (None, None) => None,
            (Some(user), Some(password)) => {
                if user.is_empty() || user.contains(':') {
                    issues.push(ConfigIssue::new(
                        "username",
                        "must be non-empty and without ':' (digest auth is user:password)",
                    ));
                }
                Some(format!("{user}:{password}"))
            }
            (Some(_), None) => {
                issues.push(ConfigIssue::new("password", "is required with username"));
                None
            }
            (None, Some(_)) => {
                issues.push(ConfigIssue::new("username", "is required with password"));
                None
            }
        };
        if !issues.is_empty() {
            return Err(issues);
        }
        Ok(Config {
            servers,
            root: root.trim_end_matches('/').to_owned(),
            format: settings.format.unwrap_or_default(),
            session_timeout,
            connect_timeout,
            digest,
        })
    }

    /// The connect string the client takes: `host:port,host:port`.
    pub fn connect_string(&self) -> String {
        self.servers.join(",")
    }

    /// The node whose children are a service's instances: `<root>/<service>` (Curator) or
    /// `<root>/<service>/providers` (Dubbo).
    pub fn service_path(&self, service: &str) -> String {
        match self.format {
            Format::Curator => format!("{}/{service}", self.root),
            Format::Dubbo => format!("{}/{service}/providers", self.root),
        }
    }
}

/// `host:port`, where host is a name, an IPv4 address or a bracketed IPv6 address.
fn check_server(server: &str) -> Result<(), String> {
    let hint = "write it as host:port, e.g. \"127.0.0.1:2181\"";
    if server.contains('/') || server.contains(',') {
        return Err(format!(
            "{server:?}: one host:port, without a path (use `root`) or a comma (list servers separately)"
        ));
    }
    let Some((host, port)) = server.rsplit_once(':') else {
        return Err(format!("{server:?} has no port; {hint}"));
    };
    if host.is_empty() || host.chars().any(char::is_whitespace) {
        return Err(format!("{server:?} has no valid host; {hint}"));
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err(format!(
            "{server:?}: put an IPv6 address in brackets, [::1]:2181"
        ));
    }
    match port.parse::<u16>() {
        Ok(port) if port != 0 => Ok(()),
        _ => Err(format!("{server:?}: the port is not 1-65535; {hint}")),
    }
}

/// An absolute path without empty segments.
fn check_root(root: &str) -> Result<(), String> {
    if !root.starts_with('/') {
        return Err(format!("{root:?} must start with '/'"));
    }
    let trimmed = root.trim_end_matches('/');
    if trimmed.contains("//") || trimmed.split('/').any(|s| s == "." || s == "..") {
        return Err(format!("{root:?} is not a valid ZooKeeper path"));
    }
    Ok(())
}

/// Checks a source's `service`: one path segment (Curator service name or Dubbo interface).
pub fn check_service(service: &str) -> Result<(), String> {
    if service.is_empty() {
        return Err("must name the service (Curator) or interface (Dubbo) under root".into());
    }
    if service.contains('/') || service == "." || service == ".." {
        return Err(format!("{service:?}: one path segment, without '/'"));
    }
    if service.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{service:?}: contains whitespace"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use switchyard_registry::testkit::assert_issues;

    /// Decodes `settings`; compares the issues as `path: message` prefixes, or expects
    /// success when `expected` is empty.
    fn check(settings: serde_json::Value, expected: &[&str]) {
        assert_issues(&settings, Config::decode(&settings), expected);
    }

    #[test]
    fn settings() {
        check(json!({"servers": ["127.0.0.1:2181"]}), &[]);
        check(
            json!({"servers": ["zk1:2181", "[::1]:2181"], "root": "/dubbo/", "format": "dubbo",
                   "session_timeout": "10s", "connect_timeout": "1s",
                   "username": "u", "password": "p"}),
            &[],
        );
        check(json!({}), &["servers: must list"]);
        check(
            json!({"servers": ["127.0.0.1"], "root": "services"}),
            &[
                "servers[0]: \"127.0.0.1\" has no port",
                "root: \"services\" must start",
            ],
        );
        check(
            json!({"servers": ["a:1/chroot", "::1:2181", "a:0", "a,b:1"]}),
            &[
                "servers[0]:",
                "servers[1]: \"::1:2181\": put an IPv6",
                "servers[2]:",
                "servers[3]:",
            ],
        );
        check(
            json!({"servers": ["a:1"], "format": "eureka"}),
            &["format: unknown variant `eureka`"],
        );
        check(
            json!({"server": ["a:1"], "session_timeout": 5}),
            &["server: unknown field", "session_timeout: invalid type"],
        );
        check(
            json!({"servers": ["a:1"], "session_timeout": "100ms", "connect_timeout": "0s"}),
            &[
                "session_timeout: must be between",
                "connect_timeout: must be more",
            ],
        );
        check(
            json!({"servers": ["a:1"], "username": "u"}),
            &["password: is required"],
        );
        check(
            json!({"servers": ["a:1"], "username": "a:b", "password": "p"}),
            &["username: must be non-empty"],
        );
        check(json!({"servers": ["a:1"], "root": "/a//b"}), &["root:"]);
    }

    #[test]
    fn paths() {
        let mut config =
            Config::decode(&json!({"servers": ["a:1", "b:2"], "root": "/services/"})).unwrap();
        assert_eq!(config.connect_string(), "a:1,b:2");
        assert_eq!(config.service_path("orders"), "/services/orders");
        config.format = Format::Dubbo;
        config.root = "/dubbo".into();
        assert_eq!(
            config.service_path("org.demo.Greeter"),
            "/dubbo/org.demo.Greeter/providers"
        );
        let root = Config::decode(&json!({"servers": ["a:1"], "root": "/"})).unwrap();
        assert_eq!(root.service_path("x"), "/x");
    }

    #[test]
    fn services() {
        assert!(check_service("orders").is_ok());
        assert!(check_service("org.demo.Greeter").is_ok());
        for bad in ["", "a/b", "..", "a b"] {
            assert!(check_service(bad).is_err(), "{bad:?}");
        }
    }
}
