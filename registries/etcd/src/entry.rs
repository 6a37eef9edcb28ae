//! The etcd data format: where a key sits under the prefix, and what its value says.
//!
//! A key `<prefix>/<service>/<instance-id>` holds one instance. Its value is either JSON with
//! the field names of the SkyDNS/CoreDNS etcd format,
//! `{"host":"10.0.0.5","port":8080,"weight":10,"priority":0,"metadata":{"zone":"a"}}`
//! (`weight` defaults to 1, `priority` to 0; other SkyDNS fields such as `ttl` are ignored),
//! or a plain `host:port` string (bare or JSON-quoted). `metadata.zone` becomes the
//! endpoint's zone. A host name is resolved when the entry is read.
//!
//! [`parse_value`] and [`parse_host_port`] are the decoder's public face (for fuzzing and
//! tools); everything else here is internal to the registry.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::Deserialize;
use switchyard_registry::{Endpoint, Metadata};

/// How long resolving one entry's host name may take before the entry counts as malformed.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Splits a key into `(service, instance-id)` when it lies under `key_prefix` (the prefix
/// with its trailing `/`). The instance id is empty for a key naming only a service
/// (`<prefix>/echo`), which the caller treats as malformed. Keys outside the prefix, with
/// an empty service segment or not UTF-8 give `None`.
pub(crate) fn split_key<'k>(key_prefix: &str, key: &'k [u8]) -> Option<(&'k str, &'k str)> {
    let key = std::str::from_utf8(key).ok()?;
    let rest = key.strip_prefix(key_prefix)?;
    let (service, instance) = rest.split_once('/').unwrap_or((rest, ""));
    if service.is_empty() {
        return None;
    }
    Some((service, instance))
}

/// One SkyDNS/CoreDNS-style record. Unknown fields are ignored, since SkyDNS records carry
/// more (`ttl`, `text`, `targetstrip`, ...).
#[derive(Deserialize)]
struct Record {
    host: String,
    port: u16,
    #[serde(default = "one")]
    weight: u32,
    #[serde(default)]
    priority: u32,
    #[serde(default)]
    metadata: BTreeMap<String, serde_json::Value>,
}

fn one() -> u32 {
    1
}

/// A decoded value whose host may still need resolving.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The host as written: an IP address or a name.
    pub host: String,
    /// The port, never 0.
    pub port: u16,
    /// Balancer weight. Default 1.
    pub weight: u32,
    /// Priority within the source. Default 0.
    pub priority: u32,
    /// Labels; `zone` also becomes the endpoint's zone.
    pub metadata: Metadata,
}

impl Entry {
    /// An entry with the defaults.
    fn plain(host: &str, port: u16) -> Self {
        Entry {
            host: host.to_owned(),
            port,
            weight: 1,
            priority: 0,
            metadata: Metadata::new(),
        }
    }

    /// The endpoint at `address`.
    fn endpoint(self, address: SocketAddr) -> Endpoint {
        let mut endpoint = Endpoint::new(address)
            .with_weight(self.weight)
            .with_priority(self.priority);
        endpoint.set_zone(self.metadata.get("zone").cloned());
        endpoint.set_metadata(self.metadata);
        endpoint
    }

    /// The address when the host is an IP literal.
    fn literal(&self) -> Option<SocketAddr> {
        self.host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, self.port))
    }

    /// Resolves the host (when it is a name) and builds the endpoint.
    pub(crate) async fn resolve(self) -> Result<Endpoint, String> {
        if let Some(address) = self.literal() {
            return Ok(self.endpoint(address));
        }
        let lookup = tokio::net::lookup_host((self.host.as_str(), self.port));
        let address = match tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
            Ok(Ok(mut addresses)) => addresses.next(),
            Ok(Err(err)) => return Err(format!("cannot resolve host {:?}: {err}", self.host)),
            Err(_) => return Err(format!("resolving host {:?} timed out", self.host)),
        };
        match address {
            Some(address) => Ok(self.endpoint(address)),
            None => Err(format!("host {:?} has no address", self.host)),
        }
    }
}

/// Decodes a value: a JSON record, a JSON string `"host:port"` or a bare `host:port`.
/// Never panics; an `Ok` entry has a non-empty host and a non-zero port.
pub fn parse_value(value: &[u8]) -> Result<Entry, String> {
    let text = std::str::from_utf8(value)
        .map_err(|_| "value is not UTF-8".to_owned())?
        .trim();
    if text.starts_with('{') {
        let record: Record =
            serde_json::from_str(text).map_err(|err| format!("bad JSON value: {err}"))?;
        if record.host.is_empty() {
            return Err("\"host\" is empty".into());
        }
        if record.port == 0 {
            return Err("\"port\" is 0".into());
        }
        let metadata = record
            .metadata
            .into_iter()
            .map(|(key, value)| match value {
                serde_json::Value::String(text) => (key, text),
                other => (key, other.to_string()),
            })
            .collect();
        let entry = Entry {
            metadata,
            weight: record.weight,
            priority: record.priority,
            ..Entry::plain(&record.host, record.port)
        };
        if entry.host.contains(':') && entry.literal().is_none() {
            return Err(format!(
                "\"host\" {:?} is not a host name or IP",
                entry.host
            ));
        }
        return Ok(entry);
    }
    let address = match serde_json::from_str::<String>(text) {
        Ok(quoted) => quoted,
        Err(_) if text.starts_with('"') => return Err("bad JSON string".into()),
        Err(_) => text.to_owned(),
    };
    parse_host_port(&address)
}

/// `10.0.0.5:8080`, `[::1]:8080` or `name:8080`. Never panics; port 0 is refused.
pub fn parse_host_port(address: &str) -> Result<Entry, String> {
    if let Ok(socket) = address.parse::<SocketAddr>() {
        if socket.port() == 0 {
            return Err(format!("{address:?}: port 0"));
        }
        return Ok(Entry::plain(&socket.ip().to_string(), socket.port()));
    }
    let bad = || format!("{address:?} is neither JSON nor host:port");
    let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(bad)?;
    if host.is_empty() || host.contains([':', '[', ']', ' ', '/']) {
        return Err(bad());
    }
    Ok(Entry::plain(host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses and resolves `value`; compares with the endpoint written as
    /// `"addr weight priority zone"` or with a fragment of the error.
    fn check(value: &str, expected: Result<&str, &str>) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let got = runtime.block_on(async {
            let entry = parse_value(value.as_bytes())?;
            entry.resolve().await
        });
        match (got, expected) {
            (Ok(endpoint), Ok(want)) => {
                let zone = endpoint.zone().unwrap_or("-").to_owned();
                let seen = format!(
                    "{} {} {} {zone}",
                    endpoint.address, endpoint.weight, endpoint.priority
                );
                assert_eq!(seen, want, "{value}");
            }
            (Err(err), Err(want)) => assert!(err.contains(want), "{value}: {err:?} lacks {want:?}"),
            (got, want) => panic!("{value}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn values() {
        check("10.0.0.5:8080", Ok("10.0.0.5:8080 1 0 -"));
        check(" 10.0.0.5:8080\n", Ok("10.0.0.5:8080 1 0 -"));
        check("\"10.0.0.5:8080\"", Ok("10.0.0.5:8080 1 0 -"));
        check("[::1]:80", Ok("[::1]:80 1 0 -"));
        check("localhost:81", Ok("127.0.0.1:81 1 0 -"));
        check(
            r#"{"host":"10.0.0.5","port":8080}"#,
            Ok("10.0.0.5:8080 1 0 -"),
        );
        check(
            r#"{"host":"10.0.0.5","port":8080,"weight":10,"priority":2,"metadata":{"zone":"a"}}"#,
            Ok("10.0.0.5:8080 10 2 a"),
        );
        check(r#"{"host":"::1","port":9,"weight":0}"#, Ok("[::1]:9 0 0 -"));
        check(
            r#"{"host":"10.0.0.5","port":1,"ttl":60,"text":"x"}"#,
            Ok("10.0.0.5:1 1 0 -"),
        );
        check("", Err("neither JSON nor host:port"));
        check("10.0.0.5", Err("neither JSON nor host:port"));
        check("10.0.0.5:0", Err("port 0"));
        check("10.0.0.5:http", Err("neither JSON"));
        check(":80", Err("neither JSON"));
        check("not json {", Err("neither JSON"));
        check(r#"{"host":"10.0.0.5"}"#, Err("missing field `port`"));
        check(r#"{"host":"10.0.0.5","port":"80"}"#, Err("bad JSON value"));
        check(r#"{"host":"10.0.0.5","port":70000}"#, Err("bad JSON value"));
        check(r#"{"host":"","port":80}"#, Err("\"host\" is empty"));
        check(
            r#"{"host":"a:b:c","port":80}"#,
            Err("not a host name or IP"),
        );
        check(r#"{"host":"10.0.0.5","port":0}"#, Err("\"port\" is 0"));
        check(r#"{"host":"10.0.0.5","port":80"#, Err("bad JSON value"));
        check("\"unterminated", Err("bad JSON string"));
        check(
            r#"{"host":"no-such-host.invalid","port":80}"#,
            Err("no-such-host.invalid"),
        );
    }

    #[test]
    fn keys() {
        let prefix = "/switchyard/services/";
        let cases: &[(&str, Option<(&str, &str)>)] = &[
            ("/switchyard/services/echo/i-1", Some(("echo", "i-1"))),
            ("/switchyard/services/echo/a/b", Some(("echo", "a/b"))),
            ("/switchyard/services/echo", Some(("echo", ""))),
            ("/switchyard/services/echo/", Some(("echo", ""))),
            ("/switchyard/services/", None),
            ("/switchyard/services//x", None),
            ("/switchyard/servicesX/echo/i-1", None),
            ("/other/echo/i-1", None),
        ];
        for (key, want) in cases {
            assert_eq!(split_key(prefix, key.as_bytes()), *want, "{key}");
        }
        assert_eq!(split_key(prefix, b"/switchyard/services/\xff/i"), None);
    }
}
