//! The `[registries.NAME]` table of a `type = "eureka"` registry: decoding, with every
//! problem reported under its key.

use std::time::Duration;

use reqwest::Url;
use serde::Deserialize;
use switchyard_registry::{decode_settings_naming_all, ConfigIssue};

/// The server used when `servers` is absent (Eureka's default `defaultZone`).
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8761/eureka";
/// The refresh period when `fetch_interval` is absent: 30 s, Eureka clients'
/// `registryFetchIntervalSeconds`. The server's read cache refreshes every 30 s too
/// (`responseCacheUpdateIntervalMs`), so a shorter period mostly re-reads the same answer.
pub const DEFAULT_FETCH_INTERVAL: Duration = Duration::from_secs(30);
/// The shortest `fetch_interval` accepted.
pub const MIN_FETCH_INTERVAL: Duration = Duration::from_millis(100);

/// The settings as written; every key optional so each can be decoded alone.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Settings {
    /// Server URLs up to `/eureka`, tried in turn; `http://user:pass@host/eureka` for basic
    /// auth. Default `["http://127.0.0.1:8761/eureka"]`.
    #[serde(default)]
    servers: Option<Vec<String>>,
    /// Refresh period. Default 30s.
    #[schemars(with = "Option<String>")]
    #[serde(default, with = "humantime_serde")]
    fetch_interval: Option<Duration>,
    /// `ip` (use `ipAddr`) or `hostname` (use `hostName`). Default `ip`.
    #[serde(default)]
    prefer: Option<Prefer>,
}

/// Which address of an instance to connect to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Prefer {
    /// `ipAddr`.
    Ip,
    /// `hostName`, resolved.
    Hostname,
}

/// One server: its URL without credentials, and the basic-auth credentials it had.
#[derive(Clone, Debug)]
pub struct Server {
    /// Base URL ending in `/` (`http://host:8761/eureka/`).
    pub url: Url,
    /// `user`, `password` from the URL, percent-decoded.
    pub basic_auth: Option<(String, String)>,
}

/// A validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// The servers.
    pub servers: Vec<Server>,
    /// Refresh period.
    pub fetch_interval: Duration,
    /// Address preference.
    pub prefer: Prefer,
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
            Ok(server) => servers.push(server),
            Err(message) => issues.push(ConfigIssue::new(format!("servers[{i}]"), message)),
        }
    }
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
    if issues.is_empty() {
        Ok(Config {
            servers,
            fetch_interval,
            prefer: settings.prefer.unwrap_or(Prefer::Ip),
        })
    } else {
        Err(issues)
    }
}

/// Parses a server URL (`http://[user:pass@]host:port/eureka`), taking the credentials out.
pub fn parse_server(text: &str) -> Result<Server, String> {
    let mut url = Url::parse(text)
        .map_err(|e| format!("{text:?} is not a URL ({e}); write it as http://HOST:8761/eureka"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{text:?} must start with http:// or https://"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{text:?} has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("{text:?} must not have a query or fragment"));
    }
    let basic_auth = if url.username().is_empty() && url.password().is_none() {
        None
    } else {
        Some((
            percent_decode(url.username()),
            percent_decode(url.password().unwrap_or("")),
        ))
    };
    let _ = url.set_username("");
    let _ = url.set_password(None);
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(Server { url, basic_auth })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((hi * 16 + lo) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
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
            json!({"servers": ["http://a:8761/eureka", "https://u:p%40ss@b/eureka/"], "fetch_interval": "10s", "prefer": "hostname"}),
            &[],
        );
        check(json!({"prefer": "dns"}), &["prefer: unknown variant"]);
        check(json!({"servers": []}), &["servers: must list"]);
        check(
            json!({"servers": ["a:1"], "fetch_interval": "0s"}),
            &["servers[0]:", "fetch_interval:"],
        );
        check(
            json!({"fetch": "1s", "prefer": 1}),
            &["fetch: unknown field", "prefer: invalid type"],
        );
    }

    #[test]
    fn credentials_come_out_of_the_url() {
        let server = parse_server("http://user:p%40ss@h:8761/eureka").unwrap();
        assert_eq!(server.url.as_str(), "http://h:8761/eureka/");
        assert_eq!(server.basic_auth, Some(("user".into(), "p@ss".into())));
        assert!(parse_server("http://h/eureka/")
            .unwrap()
            .basic_auth
            .is_none());
    }
}
