//! Turning `/v1/service/<name>` entries into endpoints.
//!
//! Each entry is a Nomad `ServiceRegistration` (nomad `nomad/structs/services.go`, the
//! api-docs "Read Service" sample): `{"ID","ServiceName","Namespace","NodeID","Datacenter",
//! "JobID","AllocID","Tags","Address","Port","CreateIndex","ModifyIndex"}`. The address is
//! `Address` (an IP, or a host name when the job set one), the port `Port`. Nomad keeps no
//! weight and no health in a registration (hashicorp/nomad#15603): an instance is listed
//! while its allocation runs and removed by the Nomad client when it stops or fails, so
//! every listed instance serves at weight 1. Entries are decoded one by one: a malformed one
//! is reported and skipped, never failing its neighbours.

use serde::Deserialize;
use switchyard_registry::Metadata;

/// Metadata key: the registration's `ID`.
pub const META_ID: &str = "nomad.id";
/// Metadata key: the allocation that registered the instance.
pub const META_ALLOC: &str = "nomad.alloc_id";
/// Metadata key: the job of that allocation.
pub const META_JOB: &str = "nomad.job_id";
/// Metadata key: the client node.
pub const META_NODE: &str = "nomad.node_id";
/// Metadata key: the datacenter.
pub const META_DATACENTER: &str = "nomad.datacenter";
/// Metadata key: the tags, comma-separated in Nomad's order (absent when none).
pub const META_TAGS: &str = "nomad.tags";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Registration {
    #[serde(rename = "ID", default)]
    id: Option<String>,
    #[serde(default)]
    address: Option<String>,
    #[serde(default)]
    port: Option<i64>,
    #[serde(default)]
    tags: Option<Vec<String>>,
    #[serde(rename = "AllocID", default)]
    alloc_id: Option<String>,
    #[serde(rename = "JobID", default)]
    job_id: Option<String>,
    #[serde(rename = "NodeID", default)]
    node_id: Option<String>,
    #[serde(default)]
    datacenter: Option<String>,
}

/// A decoded instance whose host still needs resolving.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// `Address`: an IP literal or a host name.
    pub host: String,
    /// `Port`.
    pub port: u16,
    /// The `nomad.*` keys.
    pub metadata: Metadata,
    /// The registration `ID`, for log lines and malformed-entry bookkeeping.
    pub key: String,
}

/// What became of one entry.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// An instance to serve.
    Serve(Candidate),
    /// A well-formed instance that lacks a wanted tag.
    Skip,
    /// A malformed entry: its key (when known) and why.
    Malformed(String, String),
}

/// Decodes one entry; `tags` must all be on it (as Consul's repeated `tag`).
pub fn decode_entry(value: &serde_json::Value, tags: &[String]) -> Decoded {
    let entry = match Registration::deserialize(value) {
        Ok(entry) => entry,
        Err(err) => return Decoded::Malformed(guess_key(value), err.to_string()),
    };
    let key = entry.id.clone().unwrap_or_else(|| "?".into());
    let malformed = |why: String| Decoded::Malformed(key.clone(), why);
    let entry_tags = entry.tags.unwrap_or_default();
    if !tags.iter().all(|want| entry_tags.contains(want)) {
        return Decoded::Skip;
    }
    let Some(host) = entry.address.filter(|a| !a.trim().is_empty()) else {
        return malformed("Address is not set".into());
    };
    let port = match entry.port {
        None | Some(0) => return malformed("Port is not set".into()),
        Some(port) => match u16::try_from(port) {
            Ok(port) => port,
            Err(_) => return malformed(format!("Port {port} is out of range")),
        },
    };
    let mut metadata = Metadata::new();
    for (k, v) in [
        (META_ID, entry.id),
        (META_ALLOC, entry.alloc_id),
        (META_JOB, entry.job_id),
        (META_NODE, entry.node_id),
        (META_DATACENTER, entry.datacenter),
    ] {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            metadata.insert(k.into(), v);
        }
    }
    if !entry_tags.is_empty() {
        metadata.insert(META_TAGS.into(), entry_tags.join(","));
    }
    Decoded::Serve(Candidate {
        host: host
            .trim()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        port,
        metadata,
        key,
    })
}

/// `ID` read leniently from an entry that did not decode.
fn guess_key(value: &serde_json::Value) -> String {
    value
        .get("ID")
        .and_then(|v| v.as_str())
        .unwrap_or("?")
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// The api-docs sample entry with `extra` fields over it.
    fn entry(extra: Value) -> Value {
        let mut base = json!({"Address": "127.0.0.1", "AllocID": "177160af-26f6-619f-9c9f-5e46d1104395",
            "CreateIndex": 14, "Datacenter": "dc1", "ID": "_nomad-task-177160af-redis-example-cache-redis",
            "JobID": "example", "ModifyIndex": 24, "Namespace": "default",
            "NodeID": "dbe7b1e8-d1f6-4d59-9ed5-0d5b6c6b0f68", "Port": 27380,
            "ServiceName": "example-cache-redis", "Tags": ["db", "cache"]});
        for (k, v) in extra.as_object().unwrap() {
            base[k] = v.clone();
        }
        base
    }

    /// `serve HOST:PORT`, `skip`, or `malformed: <reason prefix>`.
    fn check(value: Value, tags: &[&str], expected: &str) {
        let tags: Vec<String> = tags.iter().map(|t| (*t).to_owned()).collect();
        let got = match decode_entry(&value, &tags) {
            Decoded::Serve(c) => format!("serve {}:{}", c.host, c.port),
            Decoded::Skip => "skip".into(),
            Decoded::Malformed(_, why) => format!("malformed: {why}"),
        };
        assert!(
            got.starts_with(expected),
            "{value}: {got:?} !~ {expected:?}"
        );
    }

    #[test]
    fn entries() {
        check(entry(json!({})), &[], "serve 127.0.0.1:27380");
        check(entry(json!({})), &["db"], "serve");
        check(entry(json!({})), &["db", "cache"], "serve");
        check(entry(json!({})), &["db", "web"], "skip");
        check(entry(json!({"Tags": null})), &["db"], "skip");
        check(entry(json!({"Address": "::1"})), &[], "serve ::1:27380");
        check(entry(json!({"Address": "[::1]"})), &[], "serve ::1:27380");
        check(
            entry(json!({"Address": ""})),
            &[],
            "malformed: Address is not set",
        );
        check(entry(json!({"Port": 0})), &[], "malformed: Port is not set");
        check(entry(json!({"Port": 70000})), &[], "malformed: Port 70000");
        check(entry(json!({"Port": "80"})), &[], "malformed: invalid type");
        check(entry(json!({"Tags": [1]})), &[], "malformed: invalid type");
        check(json!("x"), &[], "malformed: invalid type");
    }

    #[test]
    fn metadata_keeps_the_registration() {
        let Decoded::Serve(c) = decode_entry(&entry(json!({})), &[]) else {
            panic!("not served")
        };
        assert_eq!(c.metadata[META_JOB], "example");
        assert_eq!(c.metadata[META_TAGS], "db,cache");
        assert_eq!(c.metadata[META_DATACENTER], "dc1");
        assert_eq!(c.key, "_nomad-task-177160af-redis-example-cache-redis");
    }
}
