//! Turning a Nacos instance list into endpoints.
//!
//! `GET /nacos/v2/ns/instance/list` answers `{"code":0,"message":"success","data":{"name",
//! "groupName","clusters","cacheMillis","hosts":[...]}}`; the v1 path answers the `data`
//! object itself (nacos.io "Open API" for 2.x and 1.x). Each host is `{"instanceId","ip",
//! "port","weight","healthy","enabled","ephemeral","clusterName","serviceName","metadata"}`.
//!
//! As the Nacos client's `selectInstances` does, only instances that are `healthy`,
//! `enabled` and of weight > 0 serve. Nacos weights are floats (default 1.0): the endpoint
//! weight is the Nacos weight × 100, rounded, at least 1, so 1.0 : 0.5 keeps its ratio.
//! `metadata` is kept; `metadata.zone` is also the endpoint's zone (and `metadata.protocol`
//! the upstream protocol hint). Hosts are decoded one by one: a malformed one is reported
//! and skipped, never failing its neighbours.

use serde::Deserialize;
use switchyard_registry::Metadata;

/// Metadata key: the instance ID.
pub const META_INSTANCE: &str = "nacos.instance_id";
/// Metadata key: the instance's cluster.
pub const META_CLUSTER: &str = "nacos.cluster";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Host {
    #[serde(default)]
    instance_id: Option<String>,
    ip: Option<String>,
    port: Option<i64>,
    #[serde(default)]
    weight: Option<f64>,
    #[serde(default)]
    healthy: Option<bool>,
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    cluster_name: Option<String>,
    #[serde(default)]
    metadata: Option<Metadata>,
}

/// A decoded instance whose host still needs resolving.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    /// `ip`: an IP literal, or a host name.
    pub host: String,
    /// `port`.
    pub port: u16,
    /// `weight` × 100.
    pub weight: u32,
    /// `metadata.zone`.
    pub zone: Option<String>,
    /// `metadata` plus the `nacos.*` keys.
    pub metadata: Metadata,
    /// `ip:port` for messages and bookkeeping.
    pub key: String,
}

/// What became of one host.
#[derive(Debug, PartialEq)]
pub enum Decoded {
    /// An instance to serve.
    Serve(Candidate),
    /// Unhealthy, disabled or of weight 0.
    Skip,
    /// Malformed: its key and why.
    Malformed(String, String),
}

/// The hosts of a v2 (`{"code","data"}`) or v1 (the data itself) answer.
pub fn hosts(answer: &serde_json::Value) -> Result<&[serde_json::Value], String> {
    let data = match answer.get("code") {
        Some(code) if code.as_i64() == Some(0) => &answer["data"],
        // 20004 resource not found, 21008 service not exist: no instance, authoritatively.
        Some(code) if matches!(code.as_i64(), Some(20004 | 21008)) => return Ok(&[]),
        Some(code) => {
            return Err(format!(
                "code {code}: {} {}",
                answer["message"].as_str().unwrap_or(""),
                answer["data"]
            ))
        }
        None => answer,
    };
    match data.get("hosts") {
        Some(serde_json::Value::Array(hosts)) => Ok(hosts),
        Some(serde_json::Value::Null) | None if data.is_object() => Ok(&[]),
        _ => Err("the answer has no hosts list".into()),
    }
}

/// Decodes one host.
pub fn decode_host(value: &serde_json::Value) -> Decoded {
    let host = match Host::deserialize(value) {
        Ok(host) => host,
        Err(err) => return Decoded::Malformed(guess_key(value), err.to_string()),
    };
    let key = format!(
        "{}:{}",
        host.ip.as_deref().unwrap_or("?"),
        host.port.map_or("?".into(), |p| p.to_string())
    );
    let malformed = |why: String| Decoded::Malformed(key.clone(), why);
    if !host.healthy.unwrap_or(true) || !host.enabled.unwrap_or(true) {
        return Decoded::Skip;
    }
    let weight = host.weight.unwrap_or(1.0);
    if !weight.is_finite() || weight < 0.0 {
        return malformed(format!("weight {weight} is not a weight"));
    }
    if weight == 0.0 {
        return Decoded::Skip;
    }
    let Some(ip) = host.ip.filter(|ip| !ip.trim().is_empty()) else {
        return malformed("ip is not set".into());
    };
    let port = match host.port {
        None | Some(0) => return malformed("port is not set".into()),
        Some(port) => match u16::try_from(port) {
            Ok(port) => port,
            Err(_) => return malformed(format!("port {port} is out of range")),
        },
    };
    let scaled = (weight * 100.0).round().clamp(1.0, f64::from(u32::MAX));
    let mut metadata = host.metadata.unwrap_or_default();
    let zone = metadata.get("zone").filter(|z| !z.is_empty()).cloned();
    if let Some(id) = host.instance_id.filter(|id| !id.is_empty()) {
        metadata.insert(META_INSTANCE.into(), id);
    }
    if let Some(cluster) = host.cluster_name.filter(|c| !c.is_empty()) {
        metadata.insert(META_CLUSTER.into(), cluster);
    }
    Decoded::Serve(Candidate {
        host: ip
            .trim()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        port,
        weight: scaled as u32,
        zone,
        metadata,
        key,
    })
}

fn guess_key(value: &serde_json::Value) -> String {
    format!(
        "{}:{}",
        value.get("ip").and_then(|v| v.as_str()).unwrap_or("?"),
        value.get("port").map_or("?".into(), ToString::to_string)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// The nacos.io sample host with `extra` over it.
    fn host(extra: Value) -> Value {
        let mut base = json!({"instanceId": "10.10.10.10#8888#DEFAULT#DEFAULT_GROUP@@nacos.test.1",
            "ip": "10.10.10.10", "port": 8888, "weight": 1.0, "healthy": true, "enabled": true,
            "ephemeral": true, "clusterName": "DEFAULT", "serviceName": "DEFAULT_GROUP@@nacos.test.1",
            "metadata": {}, "instanceHeartBeatInterval": 5000, "instanceIdGenerator": "simple",
            "instanceHeartBeatTimeOut": 15000, "ipDeleteTimeout": 30000});
        for (k, v) in extra.as_object().unwrap() {
            base[k] = v.clone();
        }
        base
    }

    fn check(value: Value, expected: &str) {
        let got = match decode_host(&value) {
            Decoded::Serve(c) => format!("serve {}:{} w{} z{:?}", c.host, c.port, c.weight, c.zone),
            Decoded::Skip => "skip".into(),
            Decoded::Malformed(_, why) => format!("malformed: {why}"),
        };
        assert!(
            got.starts_with(expected),
            "{value}: {got:?} !~ {expected:?}"
        );
    }

    #[test]
    fn hosts_decode() {
        check(host(json!({})), "serve 10.10.10.10:8888 w100 zNone");
        check(host(json!({"weight": 0.5})), "serve 10.10.10.10:8888 w50");
        check(host(json!({"weight": 2})), "serve 10.10.10.10:8888 w200");
        check(host(json!({"weight": 0.001})), "serve 10.10.10.10:8888 w1");
        check(host(json!({"weight": 0.0})), "skip");
        check(host(json!({"healthy": false})), "skip");
        check(host(json!({"enabled": false})), "skip");
        check(
            host(json!({"metadata": {"zone": "a", "protocol": "h2c"}})),
            "serve 10.10.10.10:8888 w100 zSome(\"a\")",
        );
        check(host(json!({"weight": -1.0})), "malformed: weight -1");
        check(host(json!({"port": 0})), "malformed: port is not set");
        check(host(json!({"port": 65536})), "malformed: port 65536");
        check(host(json!({"port": "80"})), "malformed: invalid type");
        check(host(json!({"ip": ""})), "malformed: ip is not set");
        check(
            host(json!({"metadata": {"a": 1}})),
            "malformed: invalid type",
        );
        check(json!(3), "malformed:");
    }

    #[test]
    fn answers() {
        let v2 = json!({"code": 0, "message": "success", "data": {"name": "DEFAULT_GROUP@@x", "hosts": [host(json!({}))]}});
        assert_eq!(hosts(&v2).unwrap().len(), 1);
        let v1 = json!({"name": "DEFAULT_GROUP@@x", "hosts": []});
        assert_eq!(hosts(&v1).unwrap().len(), 0);
        let gone = json!({"code": 21008, "message": "service not exist", "data": null});
        assert_eq!(hosts(&gone).unwrap().len(), 0);
        let error = json!({"code": 10001, "message": "access denied", "data": null});
        assert!(hosts(&error).unwrap_err().contains("10001"));
        assert!(hosts(&json!([1])).is_err());
    }
}
