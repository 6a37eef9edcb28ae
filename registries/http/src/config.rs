//! The `[registries.NAME]` table of a `type = "http"` registry: decoding with every problem
//! reported under its key, and the checks that need no network (URL shape, CA and secret
//! files readable, a sane `refresh_interval`).
//!
//! The keys follow Prometheus's `http_sd_config` where it has one (`url`,
//! `refresh_interval`, `basic_auth`, `bearer_token`, `bearer_token_file`); the CA is `ca`,
//! as on the other registries of Switchyard.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::Url;
use serde::Deserialize;
use switchyard_registry::{decode_settings_naming_all, ConfigIssue, RegistryContext};

/// How often the list is fetched when `refresh_interval` is absent: Prometheus's default
/// for `http_sd_config` (1 minute).
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(60);
/// The shortest `refresh_interval` accepted: anything faster hammers the inventory server.
pub const MIN_REFRESH_INTERVAL: Duration = Duration::from_millis(100);

/// The settings as written. Every field is optional so that each key can be decoded alone,
/// which lets [`decode`] name every bad key rather than the first.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Settings {
    /// The inventory URL, `http://` or `https://`, answering Prometheus `http_sd` JSON.
    /// Required.
    #[serde(default)]
    url: Option<String>,
    /// How often to fetch the list, at least 100 ms. Default 60 s (Prometheus's).
    #[schemars(with = "Option<String>")]
    #[serde(default, with = "humantime_serde")]
    refresh_interval: Option<Duration>,
    /// HTTP basic authentication; not with `bearer_token`/`bearer_token_file`. Default: none.
    #[serde(default)]
    basic_auth: Option<BasicAuthSettings>,
    /// A bearer token, sent as `Authorization: Bearer <token>`. Default: none.
    #[serde(default)]
    bearer_token: Option<String>,
    /// A file holding the bearer token, relative to the config file, read again before
    /// every fetch. Default: none.
    #[serde(default)]
    bearer_token_file: Option<String>,
    /// PEM file of the CA that signed the server's certificate (https only), relative to the
    /// config file. Default: the system roots.
    #[serde(default)]
    ca: Option<String>,
}

/// `basic_auth = { username = "...", password = "..." }` (or `password_file`).
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct BasicAuthSettings {
    /// The user name. Required.
    username: String,
    /// The password. Default: none (an empty password).
    #[serde(default)]
    password: Option<String>,
    /// A file holding the password, relative to the config file, read again before every
    /// fetch; not with `password`. Default: none.
    #[serde(default)]
    password_file: Option<String>,
}

/// A secret written inline or kept in a file that is read again before each fetch, so a
/// rotated secret is picked up without a reload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Secret {
    /// Written in the config.
    Inline(String),
    /// A file, resolved against the config's directory; surrounding whitespace is trimmed.
    File(PathBuf),
}

impl Secret {
    /// The secret now.
    pub fn read(&self) -> Result<String, String> {
        match self {
            Secret::Inline(text) => Ok(text.clone()),
            Secret::File(path) => std::fs::read_to_string(path)
                .map(|text| text.trim().to_owned())
                .map_err(|e| format!("cannot read {}: {e}", path.display())),
        }
    }
}

/// How requests authenticate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Auth {
    /// No `Authorization` header.
    None,
    /// `Authorization: Basic ...`.
    Basic {
        /// The user name.
        username: String,
        /// The password (may be empty).
        password: Option<Secret>,
    },
    /// `Authorization: Bearer ...`.
    Bearer(Secret),
}

/// A validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// The inventory URL.
    pub url: Url,
    /// How often the list is fetched.
    pub refresh_interval: Duration,
    /// How requests authenticate.
    pub auth: Auth,
    /// PEM bytes of the extra CA, when `ca` is set.
    pub ca_pem: Option<Vec<u8>>,
}

/// Decodes and checks a settings table, reporting every problem found.
pub fn decode(
    ctx: &RegistryContext,
    value: &serde_json::Value,
) -> Result<Config, Vec<ConfigIssue>> {
    let settings: Settings = decode_settings_naming_all(value)?;
    let mut issues = Vec::new();

    let url = match settings.url.as_deref() {
        None => {
            issues.push(ConfigIssue::new(
                "url",
                "is required: the inventory URL answering Prometheus http_sd JSON",
            ));
            None
        }
        Some(text) => match parse_url(text) {
            Ok(url) => Some(url),
            Err(message) => {
                issues.push(ConfigIssue::new("url", message));
                None
            }
        },
    };

    let refresh_interval = settings
        .refresh_interval
        .unwrap_or(DEFAULT_REFRESH_INTERVAL);
    if refresh_interval < MIN_REFRESH_INTERVAL {
        issues.push(ConfigIssue::new(
            "refresh_interval",
            format!(
                "must be at least 100ms, not {}",
                humantime::format_duration(refresh_interval)
            ),
        ));
    }

    let auth = decode_auth(ctx, &settings, &mut issues);

    let mut ca_pem = None;
    if let Some(ca) = &settings.ca {
        if url.as_ref().is_some_and(|url| url.scheme() != "https") {
            issues.push(ConfigIssue::new("ca", "is only used with an https:// url"));
        }
        let path = ctx.resolve_path(ca);
        match std::fs::read(&path) {
            Err(err) => issues.push(ConfigIssue::new(
                "ca",
                format!("cannot read {}: {err}", path.display()),
            )),
            Ok(pem) => match reqwest::Certificate::from_pem_bundle(&pem) {
                Ok(certs) if !certs.is_empty() => ca_pem = Some(pem),
                Ok(_) => issues.push(ConfigIssue::new(
                    "ca",
                    format!("{} holds no PEM certificate", path.display()),
                )),
                Err(err) => issues.push(ConfigIssue::new(
                    "ca",
                    format!("{} is not a PEM certificate bundle: {err}", path.display()),
                )),
            },
        }
    }

    match url {
        Some(url) if issues.is_empty() => Ok(Config {
            url,
            refresh_interval,
            auth,
            ca_pem,
        }),
        _ => Err(issues),
    }
}

/// The authentication keys: at most one of `basic_auth`, `bearer_token`, `bearer_token_file`.
fn decode_auth(ctx: &RegistryContext, settings: &Settings, issues: &mut Vec<ConfigIssue>) -> Auth {
    let set = [
        settings.basic_auth.is_some(),
        settings.bearer_token.is_some(),
        settings.bearer_token_file.is_some(),
    ];
    if set.iter().filter(|s| **s).count() > 1 {
        let key = if settings.bearer_token_file.is_some() {
            "bearer_token_file"
        } else {
            "bearer_token"
        };
        issues.push(ConfigIssue::new(
            key,
            "set only one of basic_auth, bearer_token and bearer_token_file",
        ));
        return Auth::None;
    }
    if let Some(basic) = &settings.basic_auth {
        if basic.username.is_empty() {
            issues.push(ConfigIssue::new("basic_auth.username", "must not be empty"));
        }
        let password = match (&basic.password, &basic.password_file) {
            (Some(_), Some(_)) => {
                issues.push(ConfigIssue::new(
                    "basic_auth.password_file",
                    "set either password or password_file, not both",
                ));
                None
            }
            (Some(password), None) => Some(Secret::Inline(password.clone())),
            (None, Some(file)) => {
                let secret = Secret::File(ctx.resolve_path(file));
                if let Err(message) = secret.read() {
                    issues.push(ConfigIssue::new("basic_auth.password_file", message));
                }
                Some(secret)
            }
            (None, None) => None,
        };
        return Auth::Basic {
            username: basic.username.clone(),
            password,
        };
    }
    if let Some(token) = &settings.bearer_token {
        if token.trim().is_empty() {
            issues.push(ConfigIssue::new("bearer_token", "must not be empty"));
        }
        return Auth::Bearer(Secret::Inline(token.trim().to_owned()));
    }
    if let Some(file) = &settings.bearer_token_file {
        let secret = Secret::File(ctx.resolve_path(file));
        match secret.read() {
            Err(message) => issues.push(ConfigIssue::new("bearer_token_file", message)),
            Ok(token) if token.is_empty() => {
                issues.push(ConfigIssue::new("bearer_token_file", "the file is empty"));
            }
            Ok(_) => {}
        }
        return Auth::Bearer(secret);
    }
    Auth::None
}

/// Parses the inventory URL: http or https, a host, no credentials (use `basic_auth`).
pub fn parse_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text)
        .map_err(|e| format!("{text:?} is not a URL ({e}); write it as http://HOST:PORT/PATH"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{text:?} must start with http:// or https://"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{text:?} has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "{text:?} must not carry credentials; use basic_auth or bearer_token"
        ));
    }
    if url.fragment().is_some() {
        return Err(format!("{text:?} must not have a fragment"));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use switchyard_registry::testkit::assert_issues;

    /// Decodes `settings` and compares the issues (as `path: message` prefixes) or, when
    /// `expected` is empty, expects success.
    fn check(settings: serde_json::Value, expected: &[&str]) {
        let ctx = RegistryContext::new("http");
        assert_issues(&settings, decode(&ctx, &settings), expected);
    }

    #[test]
    fn settings() {
        check(json!({"url": "http://127.0.0.1:9000/targets"}), &[]);
        check(
            json!({"url": "https://inv.example/sd?job=web", "refresh_interval": "5s",
                   "basic_auth": {"username": "u", "password": "p"}}),
            &[],
        );
        check(json!({"url": "http://x/", "bearer_token": "t"}), &[]);
        check(json!({}), &["url: is required"]);
        check(
            json!({"url": "http://x", "refresh": "1s"}),
            &["refresh: unknown field"],
        );
        check(
            json!({"url": 3, "refresh_interval": 5, "basic_auth": {"user": "u"}}),
            &[
                "basic_auth.user: unknown field",
                "refresh_interval: invalid type",
                "url: invalid type",
            ],
        );
        check(
            json!({"url": "ftp://x"}),
            &["url: \"ftp://x\" must start with http"],
        );
        check(json!({"url": "127.0.0.1:9000"}), &["url:"]);
        check(
            json!({"url": "http://u:p@x/"}),
            &["url: \"http://u:p@x/\" must not carry credentials"],
        );
        check(
            json!({"url": "http://x", "refresh_interval": "10ms"}),
            &["refresh_interval: must be at least 100ms"],
        );
        check(
            json!({"url": "http://x", "bearer_token": "t", "basic_auth": {"username": "u"}}),
            &["bearer_token: set only one"],
        );
        check(
            json!({"url": "http://x", "bearer_token": " "}),
            &["bearer_token: must not be empty"],
        );
        check(
            json!({"url": "http://x", "bearer_token_file": "/nonexistent/t"}),
            &["bearer_token_file: cannot read"],
        );
        check(
            json!({"url": "http://x", "basic_auth": {"username": "", "password": "a", "password_file": "b"}}),
            &[
                "basic_auth.username: must not be empty",
                "basic_auth.password_file: set either",
            ],
        );
        check(
            json!({"url": "http://x", "ca": "/nonexistent/ca.pem"}),
            &["ca: is only used with an https", "ca: cannot read"],
        );
    }

    #[test]
    fn secret_files_are_read_again_and_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "one\n").unwrap();
        let mut ctx = RegistryContext::new("http");
        ctx.base_dir = dir.path().to_owned();
        let config = decode(
            &ctx,
            &json!({"url": "http://x", "bearer_token_file": "token"}),
        )
        .unwrap();
        let Auth::Bearer(secret) = &config.auth else {
            panic!("{:?}", config.auth)
        };
        assert_eq!(secret.read().unwrap(), "one");
        std::fs::write(dir.path().join("token"), "two").unwrap();
        assert_eq!(secret.read().unwrap(), "two");
        assert_eq!(config.refresh_interval, DEFAULT_REFRESH_INTERVAL);
    }
}
