//! Decoding Prometheus `file_sd` JSON into services and endpoints.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::Deserialize;
use switchyard_registry::{Endpoint, Metadata, RegistryContext};

/// The endpoints of each service of a parsed file.
pub type Services = BTreeMap<String, Vec<Endpoint>>;

#[derive(Debug, Deserialize)]
struct Group {
    #[serde(default)]
    targets: Vec<serde_json::Value>,
    #[serde(default)]
    labels: BTreeMap<String, serde_json::Value>,
}

/// Parses a whole file. A file that is not a JSON array of groups is an error (the last
/// good set stays); a bad group or target inside it is skipped and counted.
pub fn parse_file_sd(text: &str, ctx: &RegistryContext) -> Result<Services, String> {
    let groups: Vec<serde_json::Value> =
        serde_json::from_str(text).map_err(|e| format!("not a file_sd JSON array: {e}"))?;
    let mut services = Services::new();
    for (g, group) in groups.into_iter().enumerate() {
        let group: Group = match serde_json::from_value(group) {
            Ok(group) => group,
            Err(error) => {
                ctx.metrics
                    .malformed(&ctx.name, format!("group {g}: {error}"));
                continue;
            }
        };
        let label = |name: &str| group.labels.get(name).and_then(label_text);
        let Some(service) = label("__service__") else {
            ctx.metrics
                .malformed(&ctx.name, format!("group {g}: no __service__ label"));
            continue;
        };
        let number = |name: &str, default: u32| -> Result<u32, String> {
            match label(name) {
                None => Ok(default),
                Some(text) => text
                    .parse()
                    .map_err(|_| format!("group {g}: {name} {text:?} is not a number")),
            }
        };
        let (weight, priority) = match (number("__weight__", 1), number("__priority__", 0)) {
            (Ok(w), Ok(p)) => (w, p),
            (Err(e), _) | (_, Err(e)) => {
                ctx.metrics.malformed(&ctx.name, e);
                continue;
            }
        };
        let zone = label("__zone__").or_else(|| label("zone"));
        let mut metadata: Metadata = group
            .labels
            .iter()
            .filter(|(k, _)| !k.starts_with("__"))
            .filter_map(|(k, v)| Some((k.clone(), label_text(v)?)))
            .collect();
        // `__protocol__` (h2c, grpc, ...) is the `protocol` label `protocol = "auto"` reads.
        if let Some(protocol) = label("__protocol__") {
            metadata.insert("protocol".into(), protocol);
        }
        let endpoints = services.entry(service.clone()).or_default();
        for target in &group.targets {
            // Port 0 is nobody's listening port: such a target is malformed.
            let address = target
                .as_str()
                .and_then(|t| t.parse::<SocketAddr>().ok())
                .filter(|a| a.port() != 0);
            match address {
                Some(address) => {
                    let mut endpoint = Endpoint::new(address)
                        .with_weight(weight)
                        .with_priority(priority)
                        .with_metadata(metadata.clone());
                    endpoint.set_zone(zone.clone());
                    endpoints.push(endpoint);
                }
                None => ctx.metrics.malformed(
                    &ctx.name,
                    format!("service {service}: target {target} is not ip:port"),
                ),
            }
        }
    }
    Ok(services)
}

fn label_text(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Per service: (port, weight, priority) of each endpoint.
    type Summary = Vec<(String, Vec<(u16, u32, u32)>)>;
    /// The expected endpoints of one service.
    type Expected<'a> = (&'a str, &'a [(u16, u32, u32)]);

    /// Parses `text` and compares, per service, (port, weight, priority) and the error count.
    fn check(text: &str, expected: &[Expected<'_>], errors: u64) {
        let ctx = RegistryContext::new("files");
        let services = parse_file_sd(text, &ctx).expect("parses");
        let got: Summary = services
            .iter()
            .map(|(s, eps)| {
                (
                    s.clone(),
                    eps.iter()
                        .map(|e| (e.address.port(), e.weight, e.priority))
                        .collect(),
                )
            })
            .collect();
        let want: Summary = expected
            .iter()
            .map(|(s, eps)| ((*s).to_owned(), eps.to_vec()))
            .collect();
        assert_eq!(got, want, "{text}");
        assert_eq!(ctx.metrics.errors(), errors, "{text}");
    }

    #[test]
    fn protocol_label_becomes_the_protocol_metadata() {
        let ctx = RegistryContext::new("files");
        let services = parse_file_sd(
            r#"[{"targets":["127.0.0.1:1"],"labels":{"__service__":"a","__protocol__":"h2c","team":"x"}},
                {"targets":["127.0.0.1:2"],"labels":{"__service__":"b"}}]"#,
            &ctx,
        )
        .expect("parses");
        let a = &services["a"][0];
        assert_eq!(
            a.metadata().get("protocol").map(String::as_str),
            Some("h2c")
        );
        assert_eq!(a.metadata().get("team").map(String::as_str), Some("x"));
        assert!(services["b"][0].metadata().get("protocol").is_none());
    }

    #[test]
    fn groups_labels_and_bad_entries() {
        check(r#"[]"#, &[], 0);
        check(
            r#"[{"targets":["127.0.0.1:1","127.0.0.1:2"],"labels":{"__service__":"a","__weight__":"3"}}]"#,
            &[("a", &[(1, 3, 0), (2, 3, 0)])],
            0,
        );
        check(
            r#"[{"targets":["127.0.0.1:1"],"labels":{"__service__":"a"}},
                {"targets":["127.0.0.1:2"],"labels":{"__service__":"a","__priority__":1}},
                {"targets":["127.0.0.1:3"],"labels":{"__service__":"b"}}]"#,
            &[("a", &[(1, 1, 0), (2, 1, 1)]), ("b", &[(3, 1, 0)])],
            0,
        );
        // A bad target, a group without a service, a bad weight, a group that is not an object:
        // each skipped and counted; the good ones stay.
        check(
            r#"[{"targets":["127.0.0.1:0"],"labels":{"__service__":"a"}}]"#,
            &[("a", &[])],
            1,
        );
        check(
            r#"[{"targets":["127.0.0.1:1","nope",7],"labels":{"__service__":"a"}},
                {"targets":["127.0.0.1:2"]},
                {"targets":["127.0.0.1:3"],"labels":{"__service__":"a","__weight__":"x"}},
                "junk"]"#,
            &[("a", &[(1, 1, 0)])],
            5,
        );
    }

    #[test]
    fn zone_and_metadata() {
        let ctx = RegistryContext::new("files");
        let services = parse_file_sd(
            r#"[{"targets":["127.0.0.1:1"],"labels":{"__service__":"a","zone":"z1","team":"x"}}]"#,
            &ctx,
        )
        .unwrap();
        let e = &services["a"][0];
        assert_eq!(e.zone(), Some("z1"));
        assert_eq!(e.metadata().get("team").map(String::as_str), Some("x"));
    }

    #[test]
    fn not_an_array_is_an_error() {
        let ctx = RegistryContext::new("files");
        assert!(parse_file_sd("{", &ctx).is_err());
        assert!(parse_file_sd(r#"{"targets":[]}"#, &ctx).is_err());
    }
}
