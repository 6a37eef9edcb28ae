//! Eureka's registry documents: the `/apps` and `/apps/delta` answers, applying a delta,
//! the `apps__hashcode` reconciliation, and one instance into an endpoint.
//!
//! An answer (Eureka REST operations page; `Applications`/`InstanceInfo` in Netflix
//! eureka-client, JSON through its Jackson codec) is `{"applications":{"versions__delta",
//! "apps__hashcode":"UP_2_","application":[{"name":"ORDERS","instance":[{...}]}]}}`, where
//! `application` and `instance` may also be a single object. An instance carries
//! `instanceId`, `hostName`, `app`, `ipAddr`, `status` (`UP`, `DOWN`, `STARTING`,
//! `OUT_OF_SERVICE`, `UNKNOWN`), `port` and `securePort` as `{"$": 8080, "@enabled": "true"}`,
//! `metadata` (a map; `@class` is a codec artefact) and, in a delta, `actionType`
//! (`ADDED`, `MODIFIED`, `DELETED`).
//!
//! The hash code is what `Applications.getReconcileHashCode` builds: the count of instances
//! per status, `STATUS_COUNT_` for each status in name order (`DOWN_1_UP_2_`).

use std::collections::BTreeMap;

use serde_json::Value;
use switchyard_registry::Metadata;

use crate::config::Prefer;

/// Metadata key: the instance ID.
pub const META_INSTANCE: &str = "eureka.instance_id";
/// Metadata key: set to `true` when the secure port is the one used.
pub const META_SECURE: &str = "eureka.secure";

/// The whole registry as a client holds it: app name (upper case) → instance ID → instance.
pub type Apps = BTreeMap<String, BTreeMap<String, Value>>;

/// `application` or `instance`: an array, a single object, or absent.
fn items(value: &Value) -> Vec<&Value> {
    match value {
        Value::Array(list) => list.iter().collect(),
        Value::Object(_) => vec![value],
        _ => Vec::new(),
    }
}

/// An instance's key in [`Apps`]: `instanceId`, else `hostName:port` (old clients).
fn instance_key(instance: &Value) -> Option<String> {
    if let Some(id) = instance["instanceId"].as_str().filter(|s| !s.is_empty()) {
        return Some(id.to_owned());
    }
    instance["hostName"].as_str().map(str::to_owned)
}

/// The `applications` object of an answer, with its hash code.
fn applications(answer: &Value) -> Result<&Value, String> {
    let apps = &answer["applications"];
    if apps.is_object() {
        Ok(apps)
    } else {
        Err("the answer has no \"applications\" object".into())
    }
}

/// Reads a full `/apps` answer. Instances without an ID are left out (counted by the caller
/// as malformed when their app is watched).
pub fn parse_apps(answer: &Value) -> Result<(Apps, Option<String>), String> {
    let apps = applications(answer)?;
    let mut out = Apps::new();
    for app in items(&apps["application"]) {
        let Some(name) = app["name"].as_str() else {
            continue;
        };
        let entry = out.entry(name.to_ascii_uppercase()).or_default();
        for instance in items(&app["instance"]) {
            if let Some(key) = instance_key(instance) {
                entry.insert(key, instance.clone());
            }
        }
    }
    Ok((out, apps["apps__hashcode"].as_str().map(str::to_owned)))
}

/// Applies a `/apps/delta` answer to `apps`; returns the hash code the server announced.
pub fn apply_delta(apps: &mut Apps, answer: &Value) -> Result<Option<String>, String> {
    let delta = applications(answer)?;
    for app in items(&delta["application"]) {
        let Some(name) = app["name"].as_str() else {
            continue;
        };
        let name = name.to_ascii_uppercase();
        for instance in items(&app["instance"]) {
            let Some(key) = instance_key(instance) else {
                continue;
            };
            match instance["actionType"].as_str() {
                Some("DELETED") => {
                    if let Some(app) = apps.get_mut(&name) {
                        app.remove(&key);
                        if app.is_empty() {
                            apps.remove(&name);
                        }
                    }
                }
                _ => {
                    apps.entry(name.clone())
                        .or_default()
                        .insert(key, instance.clone());
                }
            }
        }
    }
    Ok(delta["apps__hashcode"].as_str().map(str::to_owned))
}

/// The reconcile hash code of `apps`: `STATUS_COUNT_` per status, in name order.
pub fn hash_code(apps: &Apps) -> String {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for instance in apps.values().flat_map(BTreeMap::values) {
        let status = instance["status"].as_str().unwrap_or("UNKNOWN");
        *counts.entry(status.to_owned()).or_default() += 1;
    }
    counts
        .iter()
        .map(|(status, count)| format!("{status}_{count}_"))
        .collect()
}

/// A decoded instance whose host still needs resolving.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// `ipAddr` or `hostName`.
    pub host: String,
    /// `port`, or `securePort` when only that is enabled.
    pub port: u16,
    /// `metadata.weight` when it is a number, else 1.
    pub weight: u32,
    /// `metadata.zone`.
    pub zone: Option<String>,
    /// `metadata` (without `@class`) plus the `eureka.*` keys.
    pub metadata: Metadata,
    /// The instance ID, for messages.
    pub key: String,
}

/// What became of one instance.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// An instance to serve.
    Serve(Candidate),
    /// Not `UP`, or no port enabled.
    Skip,
    /// Malformed: its key and why.
    Malformed(String, String),
}

/// A port object `{"$": 8080, "@enabled": "true"}`: its number and whether it is enabled.
fn port(value: &Value) -> Result<Option<(i64, bool)>, String> {
    if value.is_null() {
        return Ok(None);
    }
    let number = match &value["$"] {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .ok_or_else(|| format!("port {value} has no number in \"$\""))?;
    let enabled = match &value["@enabled"] {
        Value::Bool(b) => *b,
        Value::String(s) => s.eq_ignore_ascii_case("true"),
        Value::Null => true,
        other => return Err(format!("port \"@enabled\" {other} is not a boolean")),
    };
    Ok(Some((number, enabled)))
}

/// Decodes one instance.
pub fn decode_instance(instance: &Value, prefer: Prefer) -> Decoded {
    let key = instance_key(instance).unwrap_or_else(|| "?".into());
    let malformed = |why: String| Decoded::Malformed(key.clone(), why);
    if !instance.is_object() {
        return malformed(format!("instance {instance} is not an object"));
    }
    match instance["status"].as_str() {
        Some("UP") => {}
        Some(_) => return Decoded::Skip,
        None => return malformed("status is not set".into()),
    }
    let (plain, secure) = match (port(&instance["port"]), port(&instance["securePort"])) {
        (Ok(plain), Ok(secure)) => (plain, secure),
        (Err(why), _) | (_, Err(why)) => return malformed(why),
    };
    // As Spring Cloud's EurekaServiceInstance: the secure port when it is enabled.
    let (number, is_secure) = match (plain, secure) {
        (_, Some((n, true))) => (n, true),
        (Some((n, true)), _) => (n, false),
        _ => return Decoded::Skip,
    };
    let port = match u16::try_from(number) {
        Ok(0) | Err(_) => return malformed(format!("port {number} is out of range")),
        Ok(port) => port,
    };
    let host_field = match prefer {
        Prefer::Ip => "ipAddr",
        Prefer::Hostname => "hostName",
    };
    let Some(host) = instance[host_field]
        .as_str()
        .filter(|h| !h.trim().is_empty())
    else {
        return malformed(format!("{host_field} is not set"));
    };
    let mut metadata = Metadata::new();
    match &instance["metadata"] {
        Value::Object(map) => {
            for (k, v) in map {
                match v {
                    _ if k == "@class" => {}
                    Value::String(s) => {
                        metadata.insert(k.clone(), s.clone());
                    }
                    other => return malformed(format!("metadata {k:?} is {other}, not a string")),
                }
            }
        }
        Value::Null => {}
        other => return malformed(format!("metadata {other} is not an object")),
    }
    let weight = metadata
        .get("weight")
        .and_then(|w| w.trim().parse::<u32>().ok())
        .unwrap_or(1);
    let zone = metadata.get("zone").filter(|z| !z.is_empty()).cloned();
    metadata.insert(META_INSTANCE.into(), key.clone());
    if is_secure {
        metadata.insert(META_SECURE.into(), "true".into());
    }
    Decoded::Serve(Candidate {
        host: host.trim().to_owned(),
        port,
        weight,
        zone,
        metadata,
        key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn instance(id: &str, status: &str, extra: Value) -> Value {
        let mut base = json!({"instanceId": id, "hostName": "localhost", "app": "ORDERS",
            "ipAddr": "127.0.0.1", "status": status, "overriddenStatus": "UNKNOWN",
            "port": {"$": 8080, "@enabled": "true"}, "securePort": {"$": 443, "@enabled": "false"},
            "countryId": 1, "dataCenterInfo": {"@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo", "name": "MyOwn"},
            "metadata": {"@class": "java.util.Collections$EmptyMap"}, "vipAddress": "orders"});
        for (k, v) in extra.as_object().unwrap() {
            base[k] = v.clone();
        }
        base
    }

    fn check(value: Value, prefer: Prefer, expected: &str) {
        let got = match decode_instance(&value, prefer) {
            Decoded::Serve(c) => format!("serve {}:{} w{}", c.host, c.port, c.weight),
            Decoded::Skip => "skip".into(),
            Decoded::Malformed(_, why) => format!("malformed: {why}"),
        };
        assert!(
            got.starts_with(expected),
            "{value}: {got:?} !~ {expected:?}"
        );
    }

    #[test]
    fn instances() {
        let ip = Prefer::Ip;
        check(
            instance("a", "UP", json!({})),
            ip,
            "serve 127.0.0.1:8080 w1",
        );
        check(
            instance("a", "UP", json!({})),
            Prefer::Hostname,
            "serve localhost:8080",
        );
        for status in ["DOWN", "STARTING", "OUT_OF_SERVICE", "UNKNOWN"] {
            check(instance("a", status, json!({})), ip, "skip");
        }
        check(
            instance("a", "UP", json!({"port": {"$": "9000", "@enabled": true}})),
            ip,
            "serve 127.0.0.1:9000",
        );
        check(
            instance(
                "a",
                "UP",
                json!({"securePort": {"$": 8443, "@enabled": "true"}}),
            ),
            ip,
            "serve 127.0.0.1:8443",
        );
        check(
            instance("a", "UP", json!({"port": {"$": 8080, "@enabled": "false"}})),
            ip,
            "skip",
        );
        check(
            instance(
                "a",
                "UP",
                json!({"metadata": {"weight": "5", "zone": "z1"}}),
            ),
            ip,
            "serve 127.0.0.1:8080 w5",
        );
        check(
            instance("a", "UP", json!({"port": {"$": 0}})),
            ip,
            "malformed: port 0",
        );
        check(
            instance("a", "UP", json!({"port": {"$": "x"}})),
            ip,
            "malformed: port",
        );
        check(
            instance("a", "UP", json!({"ipAddr": null})),
            ip,
            "malformed: ipAddr is not set",
        );
        check(
            instance("a", "UP", json!({"metadata": {"a": 1}})),
            ip,
            "malformed: metadata",
        );
        check(json!("x"), ip, "malformed:");
    }

    #[test]
    fn deltas_apply_and_hash_codes_reconcile() {
        let full = json!({"applications": {"versions__delta": "1", "apps__hashcode": "DOWN_1_UP_1_",
            "application": [{"name": "ORDERS", "instance": [instance("a", "UP", json!({})), instance("b", "DOWN", json!({}))]}]}});
        let (mut apps, hash) = parse_apps(&full).unwrap();
        assert_eq!(hash.as_deref(), Some("DOWN_1_UP_1_"));
        assert_eq!(hash_code(&apps), "DOWN_1_UP_1_");
        let delta = json!({"applications": {"versions__delta": "2", "apps__hashcode": "UP_2_",
            "application": {"name": "ORDERS", "instance": [
                {"instanceId": "b", "status": "UP", "actionType": "MODIFIED"},
                {"instanceId": "c", "status": "UP", "actionType": "ADDED"},
                {"instanceId": "a", "status": "UP", "actionType": "DELETED"}]}}});
        let announced = apply_delta(&mut apps, &delta).unwrap();
        assert_eq!(announced.as_deref(), Some("UP_2_"));
        assert_eq!(hash_code(&apps), "UP_2_");
        assert_eq!(apps["ORDERS"].keys().collect::<Vec<_>>(), ["b", "c"]);
        // A single instance as an object, an empty registry.
        let one = json!({"applications": {"application": {"name": "x", "instance": instance("i", "UP", json!({}))}}});
        assert_eq!(parse_apps(&one).unwrap().0["X"].len(), 1);
        let empty = json!({"applications": {"versions__delta": "1", "apps__hashcode": "", "application": []}});
        assert_eq!(hash_code(&parse_apps(&empty).unwrap().0), "");
        assert!(parse_apps(&json!([])).is_err());
    }
}
