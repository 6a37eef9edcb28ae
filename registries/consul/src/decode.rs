//! Turning `/v1/health/service/<name>` entries into endpoints.
//!
//! Each entry is `{"Node":{"Node","Address",..},"Service":{"ID","Service","Tags","Address",
//! "Port","Meta","Weights":{"Passing","Warning"}},"Checks":[{"Status",..}]}`. The address is
//! `Service.Address`, or `Node.Address` when that is empty; the port `Service.Port`; the
//! weight `Weights.Passing` (or `Weights.Warning` for an instance in `warning` when warning
//! instances are served). An instance is as healthy as its worst check, node checks
//! included (Consul's aggregated status). Entries are decoded one by one: a malformed one is
//! reported and skipped, never failing its neighbours.

use std::collections::BTreeMap;

use serde::Deserialize;
use switchyard_registry::Metadata;

/// Metadata key: the Consul node the instance is registered on.
pub const META_NODE: &str = "consul.node";
/// Metadata key: the instance's service ID.
pub const META_SERVICE_ID: &str = "consul.service_id";
/// Metadata key: the instance's tags, comma-separated in Consul's order (absent when none).
pub const META_TAGS: &str = "consul.tags";
/// Metadata key: the aggregated check status, `passing` or `warning`.
pub const META_HEALTH: &str = "consul.health";
/// The node meta key read as the zone when the service has no `Locality`.
pub const NODE_META_ZONE: &str = "zone";

#[derive(Debug, Deserialize)]
struct Entry {
    #[serde(rename = "Node")]
    node: Option<NodeInfo>,
    #[serde(rename = "Service")]
    service: Option<ServiceInfo>,
    #[serde(rename = "Checks", default)]
    checks: Option<Vec<CheckInfo>>,
}

#[derive(Debug, Deserialize)]
struct NodeInfo {
    #[serde(rename = "Node", default)]
    name: Option<String>,
    #[serde(rename = "Address", default)]
    address: Option<String>,
    #[serde(rename = "Meta", default)]
    meta: Option<BTreeMap<String, String>>,
}

/// `Service.Locality` (Consul 1.17+: `{"Region", "Zone"}`).
#[derive(Debug, Deserialize)]
struct LocalityInfo {
    #[serde(rename = "Zone", default)]
    zone: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ServiceInfo {
    #[serde(rename = "ID", default)]
    id: Option<String>,
    #[serde(rename = "Tags", default)]
    tags: Option<Vec<String>>,
    #[serde(rename = "Address", default)]
    address: Option<String>,
    #[serde(rename = "Port", default)]
    port: Option<i64>,
    #[serde(rename = "Meta", default)]
    meta: Option<BTreeMap<String, String>>,
    #[serde(rename = "Weights", default)]
    weights: Option<WeightsInfo>,
    #[serde(rename = "Locality", default)]
    locality: Option<LocalityInfo>,
}

#[derive(Debug, Deserialize)]
struct WeightsInfo {
    #[serde(rename = "Passing", default)]
    passing: Option<i64>,
    #[serde(rename = "Warning", default)]
    warning: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct CheckInfo {
    #[serde(rename = "Status", default)]
    status: Option<String>,
}

/// An instance's aggregated health.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Health {
    /// Every check passes.
    Passing,
    /// Some check warns, none is critical.
    Warning,
    /// Some check is critical (or in maintenance, or an unknown status).
    Critical,
}

impl Health {
    fn as_str(self) -> &'static str {
        match self {
            Health::Passing => "passing",
            Health::Warning => "warning",
            Health::Critical => "critical",
        }
    }
}

/// A decoded instance whose host still needs resolving.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// `Service.Address` or `Node.Address`: an IP literal or a hostname.
    pub host: String,
    /// `Service.Port`.
    pub port: u16,
    /// `Weights.Passing`, or `Weights.Warning` for a warning instance.
    pub weight: u32,
    /// `Service.Meta` plus the `consul.*` keys.
    pub metadata: Metadata,
    /// A stable name for log lines and malformed-entry bookkeeping (`node/service-id`).
    pub key: String,
    /// `Service.Locality.Zone`, else the node meta key `zone`.
    pub zone: Option<String>,
}

/// What became of one entry.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// An instance to serve.
    Serve(Candidate),
    /// A well-formed instance that is not served (unhealthy, or missing a wanted tag).
    Skip,
    /// A malformed entry: its key (when known) and why.
    Malformed(String, String),
}

/// Decodes one entry. `tags` must all be present; `only_passing` serves passing instances
/// only, else warning ones too.
pub fn decode_entry(value: &serde_json::Value, tags: &[String], only_passing: bool) -> Decoded {
    let entry: Entry = match serde_json::from_value(value.clone()) {
        Ok(entry) => entry,
        Err(err) => return Decoded::Malformed(guess_key(value), err.to_string()),
    };
    let node = entry.node.unwrap_or(NodeInfo {
        name: None,
        address: None,
        meta: None,
    });
    // The zone: `Service.Locality.Zone`, else the node's `zone` meta key (the usual way to
    // label a node's zone before Locality existed).
    let zone = entry
        .service
        .as_ref()
        .and_then(|s| s.locality.as_ref())
        .and_then(|l| l.zone.clone())
        .or_else(|| {
            node.meta
                .as_ref()
                .and_then(|m| m.get(NODE_META_ZONE).cloned())
        })
        .filter(|z| !z.is_empty());
    let Some(service) = entry.service else {
        return Decoded::Malformed(guess_key(value), "entry has no Service".into());
    };
    let node_name = node.name.unwrap_or_default();
    let service_id = service.id.clone().unwrap_or_default();
    let key = format!("{node_name}/{service_id}");
    let malformed = |why: String| Decoded::Malformed(key.clone(), why);

    let service_tags = service.tags.unwrap_or_default();
    // Consul matches tags case-insensitively: its state store's `serviceTagFilter`
    // (agent/consul/state/catalog.go) compares `strings.ToLower` of both sides, so `?tag=V2`
    // returns an instance tagged `v2`. Re-filtering here must agree, or instances Consul
    // returned would be dropped.
    if !tags.iter().all(|want| has_tag(&service_tags, want)) {
        return Decoded::Skip;
    }
    let health = entry
        .checks
        .unwrap_or_default()
        .iter()
        .map(|check| match check.status.as_deref() {
            Some("passing") => Health::Passing,
            Some("warning") => Health::Warning,
            _ => Health::Critical,
        })
        .max()
        .unwrap_or(Health::Passing);
    let served = match health {
        Health::Passing => true,
        Health::Warning => !only_passing,
        Health::Critical => false,
    };
    if !served {
        return Decoded::Skip;
    }

    let host = service
        .address
        .filter(|a| !a.trim().is_empty())
        .or(node.address.filter(|a| !a.trim().is_empty()));
    let Some(host) = host else {
        return malformed("neither Service.Address nor Node.Address is set".into());
    };
    let port = match service.port {
        None | Some(0) => return malformed("Service.Port is not set".into()),
        Some(port) => match u16::try_from(port) {
            Ok(port) => port,
            Err(_) => return malformed(format!("Service.Port {port} is out of range")),
        },
    };
    let (passing, warning) = match service.weights {
        None => (1, 1),
        Some(w) => (w.passing.unwrap_or(1), w.warning.unwrap_or(1)),
    };
    let raw_weight = if health == Health::Warning {
        warning
    } else {
        passing
    };
    let Ok(weight) = u32::try_from(raw_weight) else {
        return malformed(format!("weight {raw_weight} is out of range"));
    };

    let mut metadata: Metadata = service.meta.unwrap_or_default();
    metadata.insert(META_NODE.into(), node_name);
    metadata.insert(META_SERVICE_ID.into(), service_id);
    if !service_tags.is_empty() {
        metadata.insert(META_TAGS.into(), service_tags.join(","));
    }
    metadata.insert(META_HEALTH.into(), health.as_str().into());
    Decoded::Serve(Candidate {
        host: host
            .trim()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        port,
        weight,
        metadata,
        key,
        zone,
    })
}

/// Whether `tags` holds `want`, compared as Consul does (`strings.ToLower` of both).
pub fn has_tag(tags: &[String], want: &str) -> bool {
    let want = want.to_lowercase();
    tags.iter().any(|tag| tag.to_lowercase() == want)
}

/// `Node.Node/Service.ID` read leniently from an entry that did not decode.
fn guess_key(value: &serde_json::Value) -> String {
    let node = value
        .pointer("/Node/Node")
        .and_then(|v| v.as_str())
        .unwrap_or("?");
    let id = value
        .pointer("/Service/ID")
        .and_then(|v| v.as_str())
        .unwrap_or("?");
    format!("{node}/{id}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn entry(service: Value, statuses: &[&str]) -> Value {
        let checks: Vec<Value> = statuses.iter().map(|s| json!({"Status": s})).collect();
        json!({"Node": {"Node": "n1", "Address": "10.0.0.1"}, "Service": service, "Checks": checks})
    }

    /// Decodes and compares a summary: `serve HOST:PORT wWEIGHT HEALTH`, `skip`, or
    /// `malformed: <reason prefix>`.
    fn check(value: Value, tags: &[&str], only_passing: bool, expected: &str) {
        let tags: Vec<String> = tags.iter().map(|t| (*t).to_owned()).collect();
        let got = match decode_entry(&value, &tags, only_passing) {
            Decoded::Serve(c) => format!(
                "serve {}:{} w{} {}",
                c.host, c.port, c.weight, c.metadata[META_HEALTH]
            ),
            Decoded::Skip => "skip".into(),
            Decoded::Malformed(_, why) => format!("malformed: {why}"),
        };
        assert!(
            got.starts_with(expected),
            "{value}: got {got:?}, expected {expected:?}"
        );
    }

    #[test]
    fn entries() {
        let svc = |extra: Value| {
            let mut base = json!({"ID": "web-1", "Service": "web", "Port": 8080, "Address": "10.0.0.5",
                                  "Tags": ["v1", "eu"], "Weights": {"Passing": 10, "Warning": 2}});
            for (k, v) in extra.as_object().unwrap() {
                base[k] = v.clone();
            }
            base
        };
        let ok = &["passing"][..];
        check(
            entry(svc(json!({})), ok),
            &[],
            true,
            "serve 10.0.0.5:8080 w10 passing",
        );
        // Tags match as Consul's serviceTagFilter matches them: case-insensitively.
        check(
            entry(svc(json!({"Tags": ["V1", "EU"]})), ok),
            &["v1", "Eu"],
            true,
            "serve 10.0.0.5:8080 w10 passing",
        );
        check(
            entry(svc(json!({"Address": ""})), ok),
            &[],
            true,
            "serve 10.0.0.1:8080",
        );
        check(
            entry(svc(json!({"Address": null})), ok),
            &[],
            true,
            "serve 10.0.0.1:8080",
        );
        check(
            entry(svc(json!({"Address": "::1"})), ok),
            &[],
            true,
            "serve ::1:8080",
        );
        check(
            entry(svc(json!({"Address": "[::1]"})), ok),
            &[],
            true,
            "serve ::1:8080",
        );
        check(
            entry(svc(json!({})), &[]),
            &[],
            true,
            "serve 10.0.0.5:8080 w10 passing",
        );
        check(
            entry(svc(json!({})), &["passing", "warning"]),
            &[],
            true,
            "skip",
        );
        check(
            entry(svc(json!({})), &["passing", "warning"]),
            &[],
            false,
            "serve 10.0.0.5:8080 w2 warning",
        );
        check(
            entry(svc(json!({})), &["warning", "critical"]),
            &[],
            false,
            "skip",
        );
        check(entry(svc(json!({})), &["maintenance"]), &[], false, "skip");
        check(entry(svc(json!({})), ok), &["v1"], true, "serve");
        check(entry(svc(json!({})), ok), &["v1", "eu"], true, "serve");
        check(entry(svc(json!({})), ok), &["v1", "us"], true, "skip");
        check(entry(svc(json!({"Tags": null})), ok), &["v1"], true, "skip");
        check(
            entry(svc(json!({"Weights": null})), ok),
            &[],
            true,
            "serve 10.0.0.5:8080 w1",
        );
        check(
            entry(svc(json!({"Port": 0})), ok),
            &[],
            true,
            "malformed: Service.Port is not set",
        );
        check(
            entry(svc(json!({"Port": 70000})), ok),
            &[],
            true,
            "malformed: Service.Port 70000",
        );
        check(
            entry(svc(json!({"Port": "80"})), ok),
            &[],
            true,
            "malformed: invalid type",
        );
        check(
            entry(svc(json!({"Weights": {"Passing": -1}})), ok),
            &[],
            true,
            "malformed: weight -1",
        );
        check(
            entry(svc(json!({"Meta": {"a": 1}})), ok),
            &[],
            true,
            "malformed: invalid type",
        );
        check(
            json!({"Node": {"Node": "n", "Address": ""}, "Service": svc(json!({"Address": ""})), "Checks": null}),
            &[],
            true,
            "malformed: neither",
        );
        check(
            json!({"Node": {"Node": "n"}}),
            &[],
            true,
            "malformed: entry has no Service",
        );
        check(json!("nope"), &[], true, "malformed: invalid type");
    }

    #[test]
    fn metadata_keeps_meta_and_tags() {
        let value = entry(
            json!({"ID": "web-1", "Port": 1, "Address": "10.0.0.5", "Tags": ["v1", "eu"], "Meta": {"version": "3"}}),
            &["passing"],
        );
        let Decoded::Serve(c) = decode_entry(&value, &[], true) else {
            panic!("not served")
        };
        assert_eq!(c.metadata["version"], "3");
        assert_eq!(c.metadata[META_TAGS], "v1,eu");
        assert_eq!(c.metadata[META_NODE], "n1");
        assert_eq!(c.metadata[META_SERVICE_ID], "web-1");
        assert_eq!(c.key, "n1/web-1");
    }
}
