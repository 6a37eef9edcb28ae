//! The `[registries.NAME]` table of `type = "etcd"`, decoded and checked, and the
//! connection settings it shares with `switchyard register`.
//!
//! Every problem is reported at once, each naming its key relative to the table
//! (`endpoints[1]`, `dial_timeout`), as the rest of the config does.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use switchyard_registry::{decode_settings, field_names, ConfigIssue, RegistryContext};

/// The default key prefix: instances live at `<prefix>/<service>/<instance-id>`.
pub const DEFAULT_PREFIX: &str = "/switchyard/services";

/// The default time allowed to open a connection to an etcd endpoint.
pub const DEFAULT_DIAL_TIMEOUT: Duration = Duration::from_secs(5);

/// The settings table as written by the user.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSettings {
    /// Client URLs (`http://127.0.0.1:2379`, `https://etcd-0:2379`, or `host:port`); several
    /// fail over. Required, at least one.
    endpoints: Vec<String>,
    /// Key prefix, without a trailing `/`. Default `/switchyard/services`.
    #[serde(default)]
    prefix: Option<String>,
    /// User name for etcd authentication. Default: none.
    #[serde(default)]
    username: Option<String>,
    /// Password for `username`; required with it.
    #[serde(default)]
    password: Option<String>,
    /// PEM file of the CA of the servers' certificates (relative to the config file).
    /// Default: the system roots for `https://` endpoints.
    #[serde(default)]
    ca: Option<String>,
    /// PEM client certificate for mutual TLS; needs `key`. Default: none.
    #[serde(default)]
    cert: Option<String>,
    /// PEM private key of `cert`. Default: none.
    #[serde(default)]
    key: Option<String>,
    /// Time allowed to open a connection to one endpoint. Default 5 s.
    #[schemars(with = "Option<String>")]
    #[serde(default, with = "humantime_serde")]
    dial_timeout: Option<Duration>,
}

/// How to reach and authenticate to an etcd cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectSettings {
    /// Client URLs (`http://127.0.0.1:2379`, `https://etcd-0:2379`, or `host:port`). Requests
    /// are balanced over them and fail over when one is down. Required, at least one.
    pub endpoints: Vec<String>,
    /// User name for etcd authentication. Default: none (no authentication).
    pub username: Option<String>,
    /// Password for `username`. Required when `username` is set.
    pub password: Option<String>,
    /// PEM file of the CA that signed the servers' certificates. Default: the system roots
    /// (for `https://` endpoints).
    pub ca: Option<PathBuf>,
    /// PEM client certificate for mutual TLS; needs `key`. Default: none.
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`. Default: none.
    pub key: Option<PathBuf>,
    /// Time allowed to open a connection to an endpoint. Default 5 s.
    pub dial_timeout: Duration,
}

impl ConnectSettings {
    /// Settings for plain-HTTP endpoints with no authentication and the default timeout.
    pub fn new(endpoints: Vec<String>) -> Self {
        ConnectSettings {
            endpoints,
            username: None,
            password: None,
            ca: None,
            cert: None,
            key: None,
            dial_timeout: DEFAULT_DIAL_TIMEOUT,
        }
    }

    /// Whether any TLS setting is present.
    pub fn uses_tls(&self) -> bool {
        self.ca.is_some() || self.cert.is_some() || self.key.is_some()
    }

    /// Checks the settings without touching the network: endpoint syntax, pairs that go
    /// together (username/password, cert/key), TLS files that exist, a TLS config with
    /// `http://` endpoints.
    pub fn check(&self) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        if self.endpoints.is_empty() {
            issues.push(ConfigIssue::new(
                "endpoints",
                "at least one endpoint is needed, e.g. \"http://127.0.0.1:2379\"",
            ));
        }
        for (i, endpoint) in self.endpoints.iter().enumerate() {
            if let Err(message) = check_endpoint(endpoint) {
                issues.push(ConfigIssue::new(format!("endpoints[{i}]"), message));
            } else if self.uses_tls() && endpoint.starts_with("http://") {
                issues.push(ConfigIssue::new(
                    format!("endpoints[{i}]"),
                    "TLS settings (ca/cert/key) need https:// endpoints",
                ));
            }
        }
        match (&self.username, &self.password) {
            (Some(_), None) => {
                issues.push(ConfigIssue::new("password", "username needs a password"))
            }
            (None, Some(_)) => {
                issues.push(ConfigIssue::new("username", "password needs a username"))
            }
            _ => {}
        }
        match (&self.cert, &self.key) {
            (Some(_), None) => issues.push(ConfigIssue::new("key", "cert needs a key")),
            (None, Some(_)) => issues.push(ConfigIssue::new("cert", "key needs a cert")),
            _ => {}
        }
        for (name, path) in [("ca", &self.ca), ("cert", &self.cert), ("key", &self.key)] {
            if let Some(path) = path {
                if !path.is_file() {
                    issues.push(ConfigIssue::new(
                        name,
                        format!("no such file: {}", path.display()),
                    ));
                }
            }
        }
        if self.dial_timeout.is_zero() {
            issues.push(ConfigIssue::new("dial_timeout", "must be more than 0"));
        }
        issues
    }
}

/// The decoded settings of one etcd registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// How to connect.
    pub connect: ConnectSettings,
    /// Key prefix without a trailing `/`. Default [`DEFAULT_PREFIX`].
    pub prefix: String,
}

impl Settings {
    /// Decodes and checks a settings table, reporting every problem found.
    pub fn decode(
        ctx: &RegistryContext,
        value: &serde_json::Value,
    ) -> Result<Self, Vec<ConfigIssue>> {
        let raw = match decode_settings::<RawSettings>(value) {
            Ok(raw) => raw,
            Err(first) => {
                let mut issues = per_key_issues(value);
                if issues.is_empty() {
                    issues.push(first);
                }
                return Err(issues);
            }
        };
        let mut issues = Vec::new();
        let prefix = match normalize_prefix(raw.prefix.as_deref().unwrap_or(DEFAULT_PREFIX)) {
            Ok(prefix) => prefix,
            Err(message) => {
                issues.push(ConfigIssue::new("prefix", message));
                String::new()
            }
        };
        let connect = ConnectSettings {
            endpoints: raw.endpoints,
            username: raw.username,
            password: raw.password,
            ca: raw.ca.map(|p| ctx.resolve_path(&p)),
            cert: raw.cert.map(|p| ctx.resolve_path(&p)),
            key: raw.key.map(|p| ctx.resolve_path(&p)),
            dial_timeout: raw.dial_timeout.unwrap_or(DEFAULT_DIAL_TIMEOUT),
        };
        issues.extend(connect.check());
        if issues.is_empty() {
            Ok(Settings { connect, prefix })
        } else {
            Err(issues)
        }
    }
}

/// Checks a prefix and removes its trailing slashes: `/a/b/` becomes `/a/b`.
pub fn normalize_prefix(prefix: &str) -> Result<String, String> {
    if !prefix.starts_with('/') {
        return Err(format!("must start with '/', e.g. \"{DEFAULT_PREFIX}\""));
    }
    let trimmed = prefix.trim_end_matches('/');
    if trimmed.is_empty() {
        return Err("must name a directory below '/', e.g. \"/switchyard/services\"".into());
    }
    if trimmed.contains("//") {
        return Err("must not contain an empty segment (\"//\")".into());
    }
    Ok(trimmed.to_owned())
}

/// `http://host:port`, `https://host:port` or `host:port`, with an explicit port.
fn check_endpoint(endpoint: &str) -> Result<(), String> {
    let rest = if let Some(rest) = endpoint.strip_prefix("http://") {
        rest
    } else if let Some(rest) = endpoint.strip_prefix("https://") {
        rest
    } else if endpoint.contains("://") {
        return Err(format!(
            "{endpoint:?}: the scheme must be http:// or https://"
        ));
    } else {
        endpoint
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains('/') {
        return Err(format!("{endpoint:?}: an endpoint has no path"));
    }
    let port = authority
        .rsplit_once(':')
        .filter(|(host, _)| !host.is_empty() && !host.ends_with(':'))
        .and_then(|(_, port)| port.parse::<u16>().ok())
        .filter(|port| *port != 0);
    if port.is_none() {
        return Err(format!(
            "{endpoint:?}: expected a URL with host and port, e.g. \"http://127.0.0.1:2379\""
        ));
    }
    Ok(())
}

/// When serde stops at the first bad key, decode key by key to report all of them.
fn per_key_issues(value: &serde_json::Value) -> Vec<ConfigIssue> {
    let Some(table) = value.as_object() else {
        return vec![ConfigIssue::new("", "expected a table")];
    };
    let mut issues = Vec::new();
    if !table.contains_key("endpoints") {
        issues.push(ConfigIssue::new(
            "endpoints",
            "missing (e.g. [\"http://127.0.0.1:2379\"])",
        ));
    }
    for (key, value) in table {
        let result = match key.as_str() {
            "endpoints" => decode_settings::<Vec<String>>(value).map(drop),
            "prefix" | "username" | "password" | "ca" | "cert" | "key" => {
                decode_settings::<String>(value).map(drop)
            }
            "dial_timeout" => decode_settings::<HumanDuration>(value).map(drop),
            _ => Err(ConfigIssue::new(
                "",
                format!(
                    "unknown key (known: {})",
                    field_names::<RawSettings>().join(", ")
                ),
            )),
        };
        if let Err(issue) = result {
            issues.push(issue.under(key));
        }
    }
    issues
}

/// A lone duration such as `"5s"`, for decoding one key by itself.
#[derive(Deserialize)]
struct HumanDuration(
    #[serde(with = "humantime_serde")]
    #[allow(dead_code)]
    Duration,
);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Decodes `input` and compares the outcome: `Ok(prefix)` or the list of issue strings.
    fn check(input: serde_json::Value, expected: Result<&str, &[&str]>) {
        let ctx = RegistryContext::new("etcd");
        let got = Settings::decode(&ctx, &input)
            .map(|s| s.prefix)
            .map_err(|issues| issues.iter().map(ToString::to_string).collect::<Vec<_>>());
        match (got, expected) {
            (Ok(prefix), Ok(want)) => assert_eq!(prefix, want, "{input}"),
            (Err(issues), Err(want)) => {
                assert_eq!(issues.len(), want.len(), "{input}: {issues:?}");
                for (issue, want) in issues.iter().zip(want) {
                    assert!(issue.contains(want), "{input}: {issue:?} lacks {want:?}");
                }
            }
            (got, want) => panic!("{input}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn settings() {
        check(
            json!({"endpoints": ["http://127.0.0.1:2379"]}),
            Ok(DEFAULT_PREFIX),
        );
        check(
            json!({"endpoints": ["127.0.0.1:2379"], "prefix": "/a/b/"}),
            Ok("/a/b"),
        );
        check(
            json!({"endpoints": ["http://a:1", "http://b:2"], "username": "u", "password": "p",
                   "dial_timeout": "2s"}),
            Ok(DEFAULT_PREFIX),
        );
        check(json!({}), Err(&["endpoints: missing"]));
        check(json!({"endpoints": []}), Err(&["endpoints: at least one"]));
        check(
            json!({"endpoints": ["http://a:1"], "prefx": "/x"}),
            Err(&["prefx: unknown key (known: endpoints, prefix"]),
        );
        // Every bad key is named, not only the first one serde meets.
        check(
            json!({"endpoints": ["http://a:1", 7], "dial_timeout": "soon", "colour": 1}),
            Err(&[
                "colour: unknown key",
                "dial_timeout: ",
                "endpoints[1]: invalid type",
            ]),
        );
        check(
            json!({"endpoints": ["ftp://a:1", "http://a", "http://a:1/v3", "a:99999"]}),
            Err(&[
                "endpoints[0]: \"ftp://a:1\": the scheme",
                "endpoints[1]: \"http://a\": expected a URL with host and port",
                "endpoints[2]: \"http://a:1/v3\": an endpoint has no path",
                "endpoints[3]: \"a:99999\": expected",
            ]),
        );
        check(
            json!({"endpoints": ["http://a:1"], "prefix": "services", "username": "u"}),
            Err(&[
                "prefix: must start with '/'",
                "password: username needs a password",
            ]),
        );
        check(
            json!({"endpoints": ["http://a:1"], "prefix": "//"}),
            Err(&["prefix: must name"]),
        );
        check(
            json!({"endpoints": ["http://a:1"], "ca": "/nonexistent/ca.pem", "key": "/nonexistent/k"}),
            Err(&[
                "endpoints[0]: TLS settings (ca/cert/key) need https://",
                "cert: key needs a cert",
                "ca: no such file: /nonexistent/ca.pem",
                "key: no such file",
            ]),
        );
        check(
            json!({"endpoints": ["http://a:1"], "dial_timeout": "0s"}),
            Err(&["dial_timeout: must be more"]),
        );
        check(json!("http://a:1"), Err(&["expected a table"]));
    }
}
