//! The `[registries.NAME]` table of a `type = "consul"` registry: decoding, with every
//! problem reported under its key, and the checks that need no network (URL shape, CA and
//! token files readable, `wait` within Consul's 10-minute cap).

use std::path::PathBuf;
use std::time::Duration;

use reqwest::Url;
use serde::Deserialize;
use switchyard_registry::{decode_settings_naming_all, ConfigIssue, RegistryContext};

/// The agent address used when `address` is absent (Consul's own default).
pub const DEFAULT_ADDRESS: &str = "http://127.0.0.1:8500";
/// The blocking-query wait used when `wait` is absent (Consul's own default).
pub const DEFAULT_WAIT: Duration = Duration::from_secs(300);
/// The longest wait Consul honours.
pub const MAX_WAIT: Duration = Duration::from_secs(600);

/// The settings as written. Every field is optional so that each key can be decoded alone,
/// which lets [`decode`] name every bad key rather than the first.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Settings {
    /// Agent URL, `http://` or `https://`. Default `http://127.0.0.1:8500`.
    #[serde(default)]
    address: Option<String>,
    /// PEM file of the CA that signed the agent's certificate (https only).
    #[serde(default)]
    ca: Option<String>,
    /// ACL token, sent as `X-Consul-Token`.
    #[serde(default)]
    token: Option<String>,
    /// File holding the ACL token (re-read on every reconnect).
    #[serde(default)]
    token_file: Option<String>,
    /// Datacenter (`?dc=`). Default: the agent's.
    #[serde(default)]
    datacenter: Option<String>,
    /// Enterprise namespace (`?ns=`).
    #[serde(default)]
    namespace: Option<String>,
    /// Enterprise admin partition (`?partition=`).
    #[serde(default)]
    partition: Option<String>,
    /// Blocking-query wait. Default 5m, at most 10m.
    #[schemars(with = "Option<String>")]
    #[serde(default, with = "humantime_serde")]
    wait: Option<Duration>,
    /// Only instances whose checks all pass. Default true.
    #[serde(default)]
    only_passing: Option<bool>,
    /// Stale reads (`?stale`): any server answers, not only the leader. Default true, as
    /// consul-template (`DefaultMaxStale`: "enables stale queries by default for performance
    /// reasons") and go-micro's consul registry (`AllowStale: true`) do.
    #[serde(default)]
    allow_stale: Option<bool>,
    /// Consistent reads (`?consistent`): the leader confirms its leadership first. Default
    /// false; true implies `allow_stale = false`.
    #[serde(default)]
    consistent: Option<bool>,
    /// A Consul filter expression for every source of this registry (`?filter=`).
    #[serde(default)]
    filter: Option<String>,
}

/// Where the ACL token comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenSource {
    /// No token: the agent's default (anonymous) token applies.
    None,
    /// `token = "..."`.
    Inline(String),
    /// `token_file = "..."`, resolved against the config's directory.
    File(PathBuf),
}

impl TokenSource {
    /// The token to send now; a token file is read each time, so a rotated token is
    /// picked up on the next reconnect.
    pub fn read(&self) -> Result<Option<String>, String> {
        match self {
            TokenSource::None => Ok(None),
            TokenSource::Inline(token) => Ok(Some(token.clone())),
            TokenSource::File(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read token_file {}: {e}", path.display()))?;
                let token = text.trim();
                if token.is_empty() {
                    return Err(format!("token_file {} is empty", path.display()));
                }
                Ok(Some(token.to_owned()))
            }
        }
    }
}

/// A validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// The agent's base URL, ending in `/`.
    pub address: Url,
    /// PEM bytes of the extra CA, when `ca` is set.
    pub ca_pem: Option<Vec<u8>>,
    /// The ACL token's source.
    pub token: TokenSource,
    /// `?dc=` unless a source overrides it.
    pub datacenter: Option<String>,
    /// `?ns=`.
    pub namespace: Option<String>,
    /// `?partition=`.
    pub partition: Option<String>,
    /// Blocking-query wait.
    pub wait: Duration,
    /// Serve passing instances only (else warning ones too, at `Weights.Warning`).
    pub only_passing: bool,
    /// The consistency mode sent with every read.
    pub consistency: Consistency,
    /// The registry's filter expression, if any.
    pub filter: Option<String>,
}

/// Which server may answer a read (Consul's "Consistency Modes", api-docs/features/consistency).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consistency {
    /// `?stale`: any server; the default here.
    Stale,
    /// No parameter: Consul's `default` mode, the leader answers.
    Default,
    /// `?consistent`: the leader, after confirming it still is one.
    Consistent,
}

/// Decodes and checks a settings table, reporting every problem found.
pub fn decode(
    ctx: &RegistryContext,
    value: &serde_json::Value,
) -> Result<Config, Vec<ConfigIssue>> {
    let settings: Settings = decode_settings_naming_all(value)?;
    let mut issues = Vec::new();

    let address_text = settings.address.as_deref().unwrap_or(DEFAULT_ADDRESS);
    let address = match parse_address(address_text) {
        Ok(url) => Some(url),
        Err(message) => {
            issues.push(ConfigIssue::new("address", message));
            None
        }
    };

    let mut ca_pem = None;
    if let Some(ca) = &settings.ca {
        if address.as_ref().is_some_and(|url| url.scheme() != "https") {
            issues.push(ConfigIssue::new(
                "ca",
                "is only used with an https:// address",
            ));
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

    let token = match (&settings.token, &settings.token_file) {
        (Some(_), Some(_)) => {
            issues.push(ConfigIssue::new(
                "token_file",
                "set either token or token_file, not both",
            ));
            TokenSource::None
        }
        (Some(token), None) => {
            if token.trim().is_empty() {
                issues.push(ConfigIssue::new("token", "must not be empty"));
            }
            TokenSource::Inline(token.trim().to_owned())
        }
        (None, Some(file)) => {
            let source = TokenSource::File(ctx.resolve_path(file));
            if let Err(message) = source.read() {
                issues.push(ConfigIssue::new("token_file", message));
            }
            source
        }
        (None, None) => TokenSource::None,
    };

    for (key, value) in [
        ("datacenter", &settings.datacenter),
        ("namespace", &settings.namespace),
        ("partition", &settings.partition),
    ] {
        if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
            issues.push(ConfigIssue::new(key, "must not be empty"));
        }
    }

    let wait = settings.wait.unwrap_or(DEFAULT_WAIT);
    if wait.is_zero() || wait > MAX_WAIT {
        issues.push(ConfigIssue::new(
            "wait",
            format!(
                "must be more than 0 and at most 10m (Consul caps blocking queries at 10 minutes), not {}",
                humantime::format_duration(wait)
            ),
        ));
    }

    let consistency = match (settings.allow_stale, settings.consistent) {
        (Some(true), Some(true)) => {
            // Consul itself refuses both: "Cannot specify ?stale with ?consistent,
            // conflicting semantics" (agent/http.go parseConsistency).
            issues.push(ConfigIssue::new(
                "consistent",
                "set either allow_stale = true or consistent = true, not both (Consul refuses ?stale with ?consistent)",
            ));
            Consistency::Stale
        }
        (_, Some(true)) => Consistency::Consistent,
        (Some(false), _) => Consistency::Default,
        _ => Consistency::Stale,
    };
    if settings
        .filter
        .as_deref()
        .is_some_and(|f| f.trim().is_empty())
    {
        issues.push(ConfigIssue::new("filter", "must not be empty"));
    }

    match address {
        Some(address) if issues.is_empty() => Ok(Config {
            address,
            ca_pem,
            token,
            datacenter: settings.datacenter,
            namespace: settings.namespace,
            partition: settings.partition,
            wait,
            only_passing: settings.only_passing.unwrap_or(true),
            consistency,
            filter: settings.filter,
        }),
        _ => Err(issues),
    }
}

/// Parses the agent URL: http or https, a host, no query or fragment; a path prefix is
/// kept (an agent behind a reverse proxy at `/consul/`).
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
        return Err(format!(
            "{text:?} must not carry credentials; use token or token_file"
        ));
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

    /// Decodes `settings` and compares the issues (as `path: message` prefixes) or, when
    /// `expected` is empty, expects success.
    fn check(settings: serde_json::Value, expected: &[&str]) {
        let ctx = RegistryContext::new("consul");
        assert_issues(&settings, decode(&ctx, &settings), expected);
    }

    #[test]
    fn settings() {
        check(json!({}), &[]);
        check(
            json!({"address": "https://consul.example:8501/", "token": "t", "datacenter": "dc2",
                   "namespace": "ns", "partition": "p", "wait": "30s", "only_passing": false}),
            &[],
        );
        check(
            json!({"adress": "http://x"}),
            &["adress: unknown field `adress`"],
        );
        check(
            json!({"adress": "x", "wait": 5, "only_passing": "no"}),
            &[
                "adress: unknown field",
                "only_passing: invalid type",
                "wait: invalid type",
            ],
        );
        check(
            json!({"address": "localhost:8500"}),
            &["address: \"localhost:8500\" must start with http"],
        );
        check(
            json!({"address": "127.0.0.1:8500"}),
            &["address: \"127.0.0.1:8500\" is not a URL"],
        );
        check(json!({"address": "unix:///tmp/consul.sock"}), &["address:"]);
        check(json!({"address": "http://x?y=1"}), &["address:"]);
        check(
            json!({"wait": "11m"}),
            &["wait: must be more than 0 and at most 10m"],
        );
        check(json!({"wait": "0s"}), &["wait:"]);
        check(
            json!({"token": "a", "token_file": "b"}),
            &["token_file: set either"],
        );
        check(json!({"token": " "}), &["token: must not be empty"]);
        check(json!({"allow_stale": false, "consistent": true}), &[]);
        check(
            json!({"allow_stale": true, "consistent": true}),
            &["consistent: set either"],
        );
        check(json!({"filter": " "}), &["filter: must not be empty"]);
        check(
            json!({"allow_stale": "yes"}),
            &["allow_stale: invalid type"],
        );
        check(
            json!({"token_file": "/nonexistent/token"}),
            &["token_file: cannot read"],
        );
        check(
            json!({"address": "http://x", "ca": "/nonexistent/ca.pem", "datacenter": ""}),
            &[
                "ca: is only used with an https",
                "ca: cannot read",
                "datacenter: must not be empty",
            ],
        );
    }

    #[test]
    fn consistency_modes() {
        let mode = |settings| {
            decode(&RegistryContext::new("consul"), &settings)
                .unwrap()
                .consistency
        };
        assert_eq!(mode(json!({})), Consistency::Stale);
        assert_eq!(mode(json!({"allow_stale": false})), Consistency::Default);
        assert_eq!(mode(json!({"consistent": true})), Consistency::Consistent);
        assert_eq!(
            mode(json!({"allow_stale": false, "consistent": true})),
            Consistency::Consistent
        );
    }

    #[test]
    fn token_file_is_read_and_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "secret\n").unwrap();
        let mut ctx = RegistryContext::new("consul");
        ctx.base_dir = dir.path().to_owned();
        let config = decode(&ctx, &json!({"token_file": "token"})).unwrap();
        assert_eq!(config.token.read().unwrap().as_deref(), Some("secret"));
        std::fs::write(dir.path().join("token"), "  \n").unwrap();
        assert!(config.token.read().unwrap_err().contains("is empty"));
    }

    #[test]
    fn addresses_keep_a_path_prefix() {
        assert_eq!(parse_address("http://h:1").unwrap().as_str(), "http://h:1/");
        assert_eq!(
            parse_address("http://h/consul").unwrap().as_str(),
            "http://h/consul/"
        );
    }
}
