//! The `[registries.NAME]` table of a `type = "dns"` registry, decoded key by key so that
//! every problem is reported at once, each naming its key.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use switchyard_registry::{decode_settings, field_names, ConfigIssue};

/// Default for `min_ttl`: never refresh more often than once a second.
pub const DEFAULT_MIN_TTL: Duration = Duration::from_secs(1);
/// Default for `max_ttl`: refresh at least every five minutes, whatever the TTL says.
pub const DEFAULT_MAX_TTL: Duration = Duration::from_secs(300);
/// Default for `timeout`: how long one attempt waits for an answer.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default for `attempts`: tries of one query before the refresh fails.
pub const DEFAULT_ATTEMPTS: u32 = 2;

/// The keys a `dns` registry table accepts, besides `type`.
/// `[registries.NAME]` with `type = "dns"`, as written: the keys and their types, for the
/// schema (`switchyard config schema`) and the list of known keys. [`DnsSettings::decode`]
/// reads each key on its own, so that every bad one is reported.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // read for its keys and schema only
pub(crate) struct SettingsTable {
    /// Nameservers as `host:port` (port default 53). Default: the system resolver
    /// (`/etc/resolv.conf`).
    nameservers: Option<Vec<String>>,
    /// The shortest refresh interval, whatever the TTL. Default 1 s.
    min_ttl: Option<String>,
    /// The longest refresh interval, whatever the TTL. Default 300 s.
    max_ttl: Option<String>,
    /// Time allowed for one query. Default 2 s.
    timeout: Option<String>,
    /// Tries per query (per nameserver). Default 2.
    attempts: Option<u32>,
    /// `udp` (default; falls back to TCP on truncation) or `tcp`.
    protocol: Option<Protocol>,
    /// Which address records are asked for: `any`, `ipv4`, `ipv6`, `prefer_ipv4` (default) or
    /// `prefer_ipv6`.
    address_family: Option<AddressFamily>,
}

/// The keys of [`SettingsTable`], for the "unknown key" message.
fn keys() -> &'static [&'static str] {
    field_names::<SettingsTable>()
}

/// Which address records (A, AAAA) a host is resolved with: Envoy's `dns_lookup_family`
/// (`V4_ONLY`, `V6_ONLY`, `V4_PREFERRED`, `AUTO`, `ALL`) under Switchyard's names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AddressFamily {
    /// A and AAAA, every address of both (Envoy `ALL`).
    Any,
    /// A only (Envoy `V4_ONLY`).
    Ipv4,
    /// AAAA only (Envoy `V6_ONLY`).
    Ipv6,
    /// The A addresses; the AAAA ones only when there is no A record (Envoy `V4_PREFERRED`).
    /// The default: it keeps an IPv4-only host working, and a name with only AAAA records
    /// still resolves.
    #[default]
    PreferIpv4,
    /// The AAAA addresses; the A ones only when there is no AAAA record (Envoy `AUTO`).
    PreferIpv6,
}

impl AddressFamily {
    /// Whether A records are asked for.
    pub fn asks_a(self) -> bool {
        self != AddressFamily::Ipv6
    }

    /// Whether AAAA records are asked for.
    pub fn asks_aaaa(self) -> bool {
        self != AddressFamily::Ipv4
    }
}

/// The transport used to talk to the nameservers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// UDP, falling back to TCP for truncated answers. The default.
    #[default]
    Udp,
    /// TCP only.
    Tcp,
}

/// One configured nameserver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Nameserver {
    /// An IP address and port.
    Addr(SocketAddr),
    /// A host name and port, resolved with the system resolver when the first watch starts.
    Host(String, u16),
}

impl std::fmt::Display for Nameserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Nameserver::Addr(addr) => write!(f, "{addr}"),
            Nameserver::Host(host, port) => write!(f, "{host}:{port}"),
        }
    }
}

/// The decoded settings of a `dns` registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsSettings {
    /// The servers to ask; `None` means the system resolver's (`/etc/resolv.conf`).
    pub nameservers: Option<Vec<Nameserver>>,
    /// Shortest refresh interval. Default 1 s.
    pub min_ttl: Duration,
    /// Longest refresh interval. Default 300 s.
    pub max_ttl: Duration,
    /// How long one attempt waits. Default 2 s.
    pub timeout: Duration,
    /// Tries per query (1 = no retry). Default 2.
    pub attempts: u32,
    /// Transport. Default UDP.
    pub protocol: Protocol,
    /// Address records used. Default `prefer_ipv4`.
    pub address_family: AddressFamily,
}

impl Default for DnsSettings {
    fn default() -> Self {
        DnsSettings {
            nameservers: None,
            min_ttl: DEFAULT_MIN_TTL,
            max_ttl: DEFAULT_MAX_TTL,
            timeout: DEFAULT_TIMEOUT,
            attempts: DEFAULT_ATTEMPTS,
            protocol: Protocol::Udp,
            address_family: AddressFamily::PreferIpv4,
        }
    }
}

/// A duration in config: `"1s"`, `"500ms"`, `"5m"` (humantime).
#[derive(Deserialize)]
#[serde(transparent)]
struct HumanDuration(#[serde(with = "humantime_serde")] Duration);

impl DnsSettings {
    /// Decodes a settings table (without its `type` key), reporting every problem.
    pub fn decode(table: &serde_json::Value) -> Result<Self, Vec<ConfigIssue>> {
        let mut issues = Vec::new();
        let mut settings = DnsSettings::default();
        let Some(map) = table.as_object() else {
            return Err(vec![ConfigIssue::new("", "expected a table")]);
        };
        let known = keys();
        for key in map.keys() {
            if !known.contains(&key.as_str()) {
                issues.push(ConfigIssue::new(
                    key.clone(),
                    format!(
                        "unknown field `{key}`, expected one of {}",
                        known.join(", ")
                    ),
                ));
            }
        }

        if let Some(list) = field::<Vec<String>>(map, "nameservers", &mut issues) {
            if list.is_empty() {
                issues.push(ConfigIssue::new(
                    "nameservers",
                    "empty list: give at least one host:port, or leave the key out to use the system resolver",
                ));
            }
            let mut parsed = Vec::new();
            for (i, text) in list.iter().enumerate() {
                match parse_nameserver(text) {
                    Ok(ns) => parsed.push(ns),
                    Err(message) => {
                        issues.push(ConfigIssue::new(format!("nameservers[{i}]"), message))
                    }
                }
            }
            settings.nameservers = Some(parsed);
        }
        let duration = |key: &str, target: &mut Duration, issues: &mut Vec<ConfigIssue>| {
            if let Some(HumanDuration(value)) = field(map, key, issues) {
                *target = value;
            }
        };
        duration("min_ttl", &mut settings.min_ttl, &mut issues);
        duration("max_ttl", &mut settings.max_ttl, &mut issues);
        duration("timeout", &mut settings.timeout, &mut issues);
        if let Some(attempts) = field::<u32>(map, "attempts", &mut issues) {
            settings.attempts = attempts;
        }
        if let Some(protocol) = field::<Protocol>(map, "protocol", &mut issues) {
            settings.protocol = protocol;
        }
        if let Some(family) = field::<AddressFamily>(map, "address_family", &mut issues) {
            settings.address_family = family;
        }

        if settings.min_ttl > settings.max_ttl {
            issues.push(ConfigIssue::new(
                "min_ttl",
                format!(
                    "min_ttl ({}) is larger than max_ttl ({})",
                    humantime::format_duration(settings.min_ttl),
                    humantime::format_duration(settings.max_ttl)
                ),
            ));
        }
        if settings.max_ttl.is_zero() {
            issues.push(ConfigIssue::new("max_ttl", "must be greater than zero"));
        }
        if settings.timeout.is_zero() {
            issues.push(ConfigIssue::new("timeout", "must be greater than zero"));
        }
        if settings.attempts == 0 {
            issues.push(ConfigIssue::new("attempts", "must be at least 1"));
        }

        if issues.is_empty() {
            Ok(settings)
        } else {
            Err(issues)
        }
    }
}

/// Decodes `map[key]` if present, pushing an issue (path relative to the table) if it is bad.
fn field<T: DeserializeOwned>(
    map: &serde_json::Map<String, serde_json::Value>,
    key: &str,
    issues: &mut Vec<ConfigIssue>,
) -> Option<T> {
    let value = map.get(key)?;
    match decode_settings::<T>(value) {
        Ok(value) => Some(value),
        Err(issue) => {
            issues.push(issue.under(key));
            None
        }
    }
}

/// Parses `IP`, `IP:port`, `[IPv6]:port`, `host` or `host:port`; the port defaults to 53.
pub fn parse_nameserver(text: &str) -> Result<Nameserver, String> {
    let text = text.trim();
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(Nameserver::Addr(addr));
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(Nameserver::Addr(SocketAddr::new(ip, 53)));
    }
    let (host, port) = match text.rsplit_once(':') {
        Some((host, port)) => {
            let port = port
                .parse::<u16>()
                .ok()
                .filter(|port| *port != 0)
                .ok_or_else(|| format!("bad port in {text:?}: expected host:port"))?;
            (host, port)
        }
        None => (text, 53),
    };
    if !is_host_name(host) {
        return Err(format!(
            "{text:?} is not a nameserver: expected IP, IP:port, [IPv6]:port or host:port"
        ));
    }
    Ok(Nameserver::Host(host.to_owned(), port))
}

/// Whether `host` looks like a DNS host name (letters, digits, `-`, `_`, dots; labels of
/// 1 to 63 characters; optional trailing dot).
pub(crate) fn is_host_name(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Decodes `input` and compares the outcome, printing issues as `path: message`.
    fn check(input: serde_json::Value, expected: Result<DnsSettings, &[&str]>) {
        let got = DnsSettings::decode(&input)
            .map_err(|issues| issues.iter().map(ToString::to_string).collect::<Vec<_>>());
        match (got, expected) {
            (Ok(got), Ok(expected)) => assert_eq!(got, expected, "{input}"),
            (Err(got), Err(expected)) => {
                assert_eq!(got.len(), expected.len(), "{input}: {got:#?}");
                for (got, expected) in got.iter().zip(expected) {
                    assert!(
                        got.starts_with(expected),
                        "{input}: {got:?} !~ {expected:?}"
                    );
                }
            }
            (got, expected) => panic!("{input}: got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn decodes_defaults_and_values() {
        check(json!({}), Ok(DnsSettings::default()));
        check(
            json!({"nameservers": ["127.0.0.1:5353", "::1", "[::1]:53", "ns1.example.test:5300", "dns"],
                   "min_ttl": "500ms", "max_ttl": "1m", "timeout": "1s", "attempts": 3, "protocol": "tcp",
                   "address_family": "any"}),
            Ok(DnsSettings {
                nameservers: Some(vec![
                    Nameserver::Addr("127.0.0.1:5353".parse().unwrap()),
                    Nameserver::Addr("[::1]:53".parse().unwrap()),
                    Nameserver::Addr("[::1]:53".parse().unwrap()),
                    Nameserver::Host("ns1.example.test".into(), 5300),
                    Nameserver::Host("dns".into(), 53),
                ]),
                min_ttl: Duration::from_millis(500),
                max_ttl: Duration::from_secs(60),
                timeout: Duration::from_secs(1),
                attempts: 3,
                protocol: Protocol::Tcp,
                address_family: AddressFamily::Any,
            }),
        );
        for (text, family) in [
            ("ipv4", AddressFamily::Ipv4),
            ("ipv6", AddressFamily::Ipv6),
            ("prefer_ipv4", AddressFamily::PreferIpv4),
            ("prefer_ipv6", AddressFamily::PreferIpv6),
        ] {
            check(
                json!({"address_family": text}),
                Ok(DnsSettings {
                    address_family: family,
                    ..DnsSettings::default()
                }),
            );
        }
    }

    #[test]
    fn reports_every_bad_key() {
        check(
            json!({"nameserver": ["x"]}),
            Err(&["nameserver: unknown field `nameserver`"]),
        );
        check(
            json!({"nameservers": ["127.0.0.1:99999", "bad host!", 7], "protocol": "quic",
                   "address_family": "ipv5"}),
            Err(&[
                "nameservers[2]: invalid type",
                "protocol: unknown variant `quic`",
                "address_family: unknown variant `ipv5`",
            ]),
        );
        check(
            json!({"nameservers": ["127.0.0.1:99999", "bad host!"], "min_ttl": "soon", "attempts": 0}),
            Err(&[
                "nameservers[0]: bad port",
                "nameservers[1]: \"bad host!\" is not a nameserver",
                "min_ttl: ",
                "attempts: must be at least 1",
            ]),
        );
        check(
            json!({"min_ttl": "10m", "max_ttl": "1m", "timeout": "0s"}),
            Err(&[
                "min_ttl: min_ttl (10m) is larger than max_ttl (1m)",
                "timeout: must be greater",
            ]),
        );
        check(
            json!({"nameservers": []}),
            Err(&["nameservers: empty list"]),
        );
        check(json!([]), Err(&["expected a table"]));
    }
}
