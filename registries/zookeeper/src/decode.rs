//! The two data layouts: a Curator x-discovery instance (JSON in the node's data) and a Dubbo
//! provider (a URL-encoded `dubbo://` URL as the node's name).
//!
//! **Curator** (`org.apache.curator.x.discovery.ServiceInstance`, serialized by its
//! `JsonInstanceSerializer`) at `<root>/<service>/<id>`:
//! `{"name","id","address","port","sslPort","payload","registrationTimeUTC","serviceType",
//! "uriSpec","enabled"}`. The endpoint is `address:port` (`sslPort` when `port` is null, with
//! metadata `tls = "true"`); `enabled: false` (Curator 4+) leaves the instance out. The
//! payload is free-form: when it is an object, its string and number fields and those of its
//! `metadata` object (Spring Cloud Zookeeper's `ZookeeperInstance`) become metadata, `weight`
//! there is the weight (default 1) and `zone` the zone.
//!
//! **Dubbo** (`org.apache.dubbo.registry.zookeeper.ZookeeperRegistry`) at
//! `<root>/<interface>/providers/<URL.encode(url)>`, e.g.
//! `dubbo://10.0.0.5:20880/org.demo.Greeter?application=demo&weight=100&enabled=true`. The
//! endpoint is the URL's host and port; `weight` is the weight (Dubbo's default 100);
//! `enabled=false` or `disabled=true` leaves the provider out; the scheme becomes metadata
//! `protocol`, every other parameter metadata of its own name.
//!
//! Hosts may be names: they are resolved when the entry is read (see `crate::watch`). These
//! functions never touch the network, so they are fuzzed as they are.

use std::net::IpAddr;

use percent_encoding::percent_decode_str;
use serde::Deserialize;
use switchyard_registry::Metadata;

/// Dubbo's default provider weight (`org.apache.dubbo.common.constants.CommonConstants.DEFAULT_WEIGHT`).
pub const DUBBO_DEFAULT_WEIGHT: u32 = 100;

/// One instance as the registry describes it, before its host is resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    /// An IP literal (brackets removed) or a host name.
    pub host: String,
    /// Never 0.
    pub port: u16,
    /// The balancer weight.
    pub weight: u32,
    /// The zone, when the entry names one.
    pub zone: Option<String>,
    /// Everything else worth showing.
    pub metadata: Metadata,
}

impl Instance {
    /// The host as an IP address, when it is a literal.
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }
}

/// What one node decodes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A serving instance.
    Instance(Instance),
    /// A well-formed instance that says it is not serving (`enabled: false`).
    Disabled,
    /// Not an instance: skipped and counted, with the reason.
    Malformed(String),
}

/// Curator's `ServiceInstance` as JSON. Unknown fields are ignored (Curator adds some).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CuratorInstance {
    #[serde(default)]
    address: Option<String>,
    #[serde(default)]
    port: Option<u32>,
    #[serde(default)]
    ssl_port: Option<u32>,
    #[serde(default)]
    payload: Option<serde_json::Value>,
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    service_type: Option<String>,
}

/// Decodes the data of a Curator instance node.
pub fn decode_curator(data: &[u8]) -> Decoded {
    let instance: CuratorInstance = match serde_json::from_slice(data) {
        Ok(instance) => instance,
        Err(error) => return Decoded::Malformed(format!("not a Curator ServiceInstance: {error}")),
    };
    if instance.enabled == Some(false) {
        return Decoded::Disabled;
    }
    let Some(host) = instance.address.filter(|a| !a.trim().is_empty()) else {
        return Decoded::Malformed("no address".into());
    };
    let mut metadata = Metadata::new();
    let port = match (instance.port, instance.ssl_port) {
        (Some(port), _) => port,
        (None, Some(port)) => {
            metadata.insert("tls".into(), "true".into());
            port
        }
        (None, None) => return Decoded::Malformed(format!("{host}: no port nor sslPort")),
    };
    let port = match u16::try_from(port) {
        Ok(port) if port != 0 => port,
        _ => return Decoded::Malformed(format!("{host}: port {port} is not 1-65535")),
    };
    if let Some(id) = instance.id {
        metadata.insert("id".into(), id);
    }
    if let Some(kind) = instance.service_type {
        metadata.insert("serviceType".into(), kind);
    }
    if let Some(serde_json::Value::Object(payload)) = &instance.payload {
        copy_scalars(payload, &mut metadata);
        if let Some(serde_json::Value::Object(inner)) = payload.get("metadata") {
            copy_scalars(inner, &mut metadata);
        }
    }
    let weight = match metadata.get("weight") {
        None => 1,
        Some(text) => match text.parse() {
            Ok(weight) => weight,
            Err(_) => {
                return Decoded::Malformed(format!("{host}: weight {text:?} is not a number"))
            }
        },
    };
    let zone = metadata.get("zone").cloned();
    let Some(host) = valid_host(&host) else {
        return Decoded::Malformed(format!(
            "address {host:?} is neither an IP address nor a host name"
        ));
    };
    Decoded::Instance(Instance {
        host: host.to_owned(),
        port,
        weight,
        zone,
        metadata,
    })
}

/// Decodes the name of a Dubbo provider node (the URL-encoded provider URL).
pub fn decode_dubbo(node_name: &str) -> Decoded {
    // Java's URLEncoder: a space is '+', everything else reserved is %XX.
    let plus_as_space = node_name.replace('+', " ");
    let Ok(text) = percent_decode_str(&plus_as_space).decode_utf8() else {
        return Decoded::Malformed(format!("{node_name:?}: not UTF-8 once decoded"));
    };
    let url = match url::Url::parse(&text) {
        Ok(url) => url,
        Err(error) => return Decoded::Malformed(format!("{text:?}: not a provider URL: {error}")),
    };
    let Some(host) = url.host_str().filter(|h| !h.is_empty()) else {
        return Decoded::Malformed(format!("{text:?}: no host"));
    };
    let port = match url.port() {
        Some(port) if port != 0 => port,
        _ => return Decoded::Malformed(format!("{text:?}: no port")),
    };
    let mut metadata = Metadata::new();
    metadata.insert("protocol".into(), url.scheme().to_owned());
    let interface = url.path().trim_start_matches('/');
    if !interface.is_empty() {
        metadata.insert("interface".into(), interface.to_owned());
    }
    for (key, value) in url.query_pairs() {
        metadata.insert(key.into_owned(), value.into_owned());
    }
    if metadata.get("enabled").map(String::as_str) == Some("false")
        || metadata.get("disabled").map(String::as_str) == Some("true")
    {
        return Decoded::Disabled;
    }
    let weight = match metadata.get("weight") {
        None => DUBBO_DEFAULT_WEIGHT,
        Some(text) => match text.parse() {
            Ok(weight) => weight,
            Err(_) => {
                return Decoded::Malformed(format!(
                    "{host}:{port}: weight {text:?} is not a number"
                ))
            }
        },
    };
    let zone = metadata.get("zone").cloned();
    let Some(host) = valid_host(host) else {
        return Decoded::Malformed(format!(
            "{text:?}: host {host:?} is neither an IP address nor a host name"
        ));
    };
    Decoded::Instance(Instance {
        host: host.to_owned(),
        port,
        weight,
        zone,
        metadata,
    })
}

/// The host without IPv6 brackets, when it is an IP address or a DNS name (letters,
/// digits, `-`, `_` and `.`, at most 253 bytes).
fn valid_host(host: &str) -> Option<&str> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if bare.parse::<IpAddr>().is_ok() {
        return Some(bare);
    }
    let name = !host.is_empty()
        && host.len() <= 253
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    name.then_some(host)
}

/// Copies string, number and boolean fields as text.
fn copy_scalars(object: &serde_json::Map<String, serde_json::Value>, metadata: &mut Metadata) {
    for (key, value) in object {
        let text = match value {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Bool(b) => b.to_string(),
            _ => continue,
        };
        metadata.insert(key.clone(), text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `host:port/weight` of an instance, `disabled`, or `malformed`.
    fn summary(decoded: &Decoded) -> String {
        match decoded {
            Decoded::Instance(i) => format!("{}:{}/{}", i.host, i.port, i.weight),
            Decoded::Disabled => "disabled".into(),
            Decoded::Malformed(_) => "malformed".into(),
        }
    }

    fn check_curator(data: &str, expected: &str) {
        assert_eq!(
            summary(&decode_curator(data.as_bytes())),
            expected,
            "{data}"
        );
    }

    fn check_dubbo(name: &str, expected: &str) {
        assert_eq!(summary(&decode_dubbo(name)), expected, "{name}");
    }

    #[test]
    fn curator_instances() {
        // As Curator 5 writes it (JsonInstanceSerializer).
        check_curator(
            r#"{"name":"orders","id":"b1c2","address":"10.0.0.5","port":8080,"sslPort":null,
                "payload":null,"registrationTimeUTC":1700000000000,"serviceType":"DYNAMIC",
                "uriSpec":{"parts":[{"value":"scheme","variable":true}]},"enabled":true}"#,
            "10.0.0.5:8080/1",
        );
        check_curator(r#"{"address":"::1","port":1}"#, "::1:1/1");
        check_curator(r#"{"address":"[::1]","sslPort":8443}"#, "::1:8443/1");
        check_curator(r#"{"address":"a.example","port":80}"#, "a.example:80/1");
        check_curator(r#"{"address":"[::1]F","port":80}"#, "malformed");
        check_curator(r#"{"address":"a b","port":80}"#, "malformed");
        check_curator(r#"{"address":"[a.example]","port":80}"#, "malformed");
        check_curator(
            r#"{"address":"10.0.0.5","port":80,"payload":{"weight":5}}"#,
            "10.0.0.5:80/5",
        );
        check_curator(
            r#"{"address":"10.0.0.5","port":80,"payload":{"@class":"x","metadata":{"weight":"7","zone":"z1"}}}"#,
            "10.0.0.5:80/7",
        );
        check_curator(
            r#"{"address":"10.0.0.5","port":80,"enabled":false}"#,
            "disabled",
        );
        check_curator(r#"{"address":"10.0.0.5"}"#, "malformed");
        check_curator(r#"{"address":"10.0.0.5","port":0}"#, "malformed");
        check_curator(r#"{"address":"10.0.0.5","port":70000}"#, "malformed");
        check_curator(r#"{"address":"","port":80}"#, "malformed");
        check_curator(r#"{"port":80}"#, "malformed");
        check_curator(
            r#"{"address":"10.0.0.5","port":80,"payload":{"weight":"heavy"}}"#,
            "malformed",
        );
        check_curator("not json", "malformed");
        check_curator("", "malformed");
        check_curator("[1]", "malformed");
    }

    #[test]
    fn curator_metadata() {
        let Decoded::Instance(i) = decode_curator(
            br#"{"id":"x1","address":"10.0.0.5","port":80,"serviceType":"DYNAMIC",
                 "payload":{"metadata":{"zone":"z1","version":"2"},"list":[1]}}"#,
        ) else {
            panic!()
        };
        assert_eq!(i.zone.as_deref(), Some("z1"));
        assert_eq!(i.metadata["version"], "2");
        assert_eq!(i.metadata["id"], "x1");
        assert!(!i.metadata.contains_key("list"));
    }

    #[test]
    fn dubbo_providers() {
        // As Dubbo writes it: URL.encode of the full URL.
        check_dubbo(
            "dubbo%3A%2F%2F10.0.0.5%3A20880%2Forg.demo.Greeter%3Fanyhost%3Dtrue%26application%3Ddemo%26side%3Dprovider",
            "10.0.0.5:20880/100",
        );
        check_dubbo(
            "tri%3A%2F%2F10.0.0.6%3A50051%2Forg.demo.Greeter%3Fweight%3D20",
            "10.0.0.6:50051/20",
        );
        check_dubbo(
            "dubbo%3A%2F%2F%5B%3A%3A1%5D%3A20880%2Fx%3Fweight%3D3",
            "::1:20880/3",
        );
        check_dubbo("dubbo://10.0.0.5:20880/x?enabled=false", "disabled");
        check_dubbo("dubbo://10.0.0.5:20880/x?disabled=true", "disabled");
        check_dubbo("dubbo://10.0.0.5:20880/x?weight=abc", "malformed");
        check_dubbo("dubbo://10.0.0.5/x", "malformed");
        check_dubbo("dubbo://10.0.0.5:0/x", "malformed");
        check_dubbo("10.0.0.5:20880", "malformed");
        check_dubbo("%FF%FE", "malformed");
        check_dubbo("", "malformed");
    }

    #[test]
    fn dubbo_metadata() {
        let Decoded::Instance(i) = decode_dubbo(
            "dubbo%3A%2F%2F10.0.0.5%3A20880%2Forg.demo.Greeter%3Fversion%3D1.0%26zone%3Dz2%26note%3Da+b",
        ) else {
            panic!()
        };
        assert_eq!(i.metadata["protocol"], "dubbo");
        assert_eq!(i.metadata["interface"], "org.demo.Greeter");
        assert_eq!(i.metadata["version"], "1.0");
        assert_eq!(i.metadata["note"], "a b");
        assert_eq!(i.zone.as_deref(), Some("z2"));
    }
}
