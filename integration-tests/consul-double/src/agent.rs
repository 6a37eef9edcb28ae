//! The agent endpoints' logic: decoding a service definition the way Consul's Go JSON
//! decoder does (field names match case-insensitively, a few snake_case aliases), its
//! validation messages, TTL checks and their ids, and ACL token resolution.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use http::StatusCode;
use serde_json::{Map, Value};

use crate::duration;
use crate::state::{Check, Datacenter, Service, CRITICAL, PASSING, WARNING};

/// An HTTP error answer: status and plain-text body, as Consul writes them.
#[derive(Debug)]
pub struct HttpError {
    pub status: StatusCode,
    pub body: String,
}

impl HttpError {
    pub fn new(status: StatusCode, body: impl Into<String>) -> Self {
        HttpError {
            status,
            body: body.into(),
        }
    }

    pub fn bad_request(body: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, body)
    }
}

// === ACL ===

/// What a token may do in the double: read everything, or read and write everything.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rights {
    /// `service:read`, `node:read` on everything.
    Read,
    /// `service:write`, `node:write` (and read) on everything.
    Write,
}

/// The anonymous token's policy when ACLs are on (`acl.default_policy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DefaultPolicy {
    /// Requests without a token may do everything.
    Allow,
    /// Requests without a token see reads filtered to nothing and writes refused.
    Deny,
}

/// ACLs as the double enforces them.
#[derive(Clone, Debug)]
pub struct AclOptions {
    /// The anonymous token's rights. Default `Deny`.
    pub default_policy: DefaultPolicy,
    /// Known secret IDs and their rights.
    pub tokens: Vec<(String, Rights)>,
}

impl Default for AclOptions {
    fn default() -> Self {
        AclOptions {
            default_policy: DefaultPolicy::Deny,
            tokens: Vec::new(),
        }
    }
}

impl AclOptions {
    /// ACLs on, default deny, with one token of each kind.
    pub fn deny_with(write_token: &str, read_token: &str) -> Self {
        AclOptions {
            default_policy: DefaultPolicy::Deny,
            tokens: vec![
                (write_token.to_owned(), Rights::Write),
                (read_token.to_owned(), Rights::Read),
            ],
        }
    }
}

/// The caller as the double resolved its token.
#[derive(Clone, Debug)]
pub struct Caller {
    pub accessor: String,
    /// `None`: no rights at all.
    pub rights: Option<Rights>,
    /// Whether the request carried a non-blank token (Consul masks some answers' headers
    /// for blank ones: `maskResultsFilteredByACLs`).
    pub token_given: bool,
}

const ANONYMOUS_ACCESSOR: &str = "00000000-0000-0000-0000-000000000002";

/// Resolves a token: `Err` is Consul's 403 `ACL not found` for a secret it does not know.
pub fn resolve(acl: Option<&AclOptions>, token: Option<&str>) -> Result<Caller, HttpError> {
    let Some(acl) = acl else {
        return Ok(Caller {
            accessor: ANONYMOUS_ACCESSOR.into(),
            rights: Some(Rights::Write),
            token_given: token.is_some_and(|t| !t.is_empty()),
        });
    };
    match token.filter(|t| !t.is_empty()) {
        None => Ok(Caller {
            accessor: ANONYMOUS_ACCESSOR.into(),
            rights: match acl.default_policy {
                DefaultPolicy::Allow => Some(Rights::Write),
                DefaultPolicy::Deny => None,
            },
            token_given: false,
        }),
        Some(secret) => acl
            .tokens
            .iter()
            .find(|(known, _)| known == secret)
            .map(|(known, rights)| Caller {
                accessor: accessor_for(known),
                rights: Some(*rights),
                token_given: true,
            })
            .ok_or_else(|| HttpError::new(StatusCode::FORBIDDEN, "ACL not found")),
    }
}

impl Caller {
    pub fn can_read(&self) -> bool {
        self.rights.is_some()
    }

    /// Consul's `Permission denied` answer unless the caller may write `what` on `name`.
    pub fn require_write(&self, what: &str, name: &str) -> Result<(), HttpError> {
        if self.rights == Some(Rights::Write) {
            return Ok(());
        }
        Err(HttpError::new(
            StatusCode::FORBIDDEN,
            format!(
                "Permission denied: token with AccessorID '{}' lacks permission '{what}:write' on \"{name}\"",
                self.accessor
            ),
        ))
    }
}

fn accessor_for(secret: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in secret.bytes() {
        h ^= u64::from(byte);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        h >> 32,
        (h >> 16) & 0xffff,
        h & 0xffff,
        (h >> 48) & 0xffff,
        h & 0xffff_ffff_ffff
    )
}

// === Service definitions ===

/// A decoded `PUT /v1/agent/service/register` body.
#[derive(Debug)]
pub struct Registration {
    pub service: Service,
    pub checks: Vec<CheckDefinition>,
}

/// One TTL check of a registration.
#[derive(Debug)]
pub struct CheckDefinition {
    pub id: String,
    pub name: String,
    pub status: Option<String>,
    pub notes: String,
    pub ttl: Duration,
}

/// Check kinds Consul knows that the double cannot run.
const UNSUPPORTED_CHECKS: &[&str] = &[
    "HTTP",
    "TCP",
    "UDP",
    "Args",
    "ScriptArgs",
    "GRPC",
    "H2PING",
    "DockerContainerID",
    "OSService",
    "AliasService",
    "AliasNode",
    "Shell",
];

/// Decodes and validates a service definition.
pub fn decode_registration(body: &[u8]) -> Result<Registration, HttpError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| HttpError::bad_request(format!("Request decode failed: {e}")))?;
    let Value::Object(obj) = value else {
        return Err(decode_error("ServiceDefinition", "object", &value));
    };
    let name = string(&obj, &["Name"], "ServiceDefinition.Name")?.unwrap_or_default();
    if name.is_empty() {
        return Err(HttpError::bad_request("Missing service name"));
    }
    let id = string(&obj, &["ID"], "ServiceDefinition.ID")?
        .filter(|id| !id.is_empty())
        .unwrap_or_else(|| name.clone());
    let tags = strings(&obj, &["Tags"], "ServiceDefinition.Tags")?;
    let address = string(&obj, &["Address"], "ServiceDefinition.Address")?.unwrap_or_default();
    let port = integer(&obj, &["Port"], "ServiceDefinition.Port")?.unwrap_or(0);
    if !(0..=65535).contains(&port) {
        return Err(HttpError::bad_request(format!(
            "Invalid Service Port: {port} (must be between 0 and 65535)"
        )));
    }
    let meta = string_map(&obj, &["Meta"], "ServiceDefinition.Meta")?;
    validate_meta(&meta)?;
    let enable_tag_override = boolean(
        &obj,
        &["EnableTagOverride", "enable_tag_override"],
        "ServiceDefinition.EnableTagOverride",
    )?
    .unwrap_or(false);
    // `Locality` (structs.Locality: `Region`, `Zone`, both strings), kept as registered.
    let locality = match field(&obj, &["Locality"]) {
        None | Some(Value::Null) => None,
        Some(Value::Object(l)) => {
            let region = string(l, &["Region"], "Locality.Region")?.unwrap_or_default();
            let zone = string(l, &["Zone"], "Locality.Zone")?.unwrap_or_default();
            Some(serde_json::json!({"Region": region, "Zone": zone}))
        }
        Some(other) => {
            return Err(decode_error(
                "ServiceDefinition.Locality",
                "Locality",
                other,
            ))
        }
    };
    let weights = match field(&obj, &["Weights"]) {
        None => (1, 1),
        Some(Value::Object(w)) => {
            let passing = integer(w, &["Passing"], "Weights.Passing")?.unwrap_or(0);
            let warning = integer(w, &["Warning"], "Weights.Warning")?.unwrap_or(0);
            let problem = if passing < 1 {
                Some("Passing must be greater than 0")
            } else if warning < 0 {
                Some("Warning must be greater or equal than 0")
            } else if passing > 65535 || warning > 65535 {
                Some("DNS Weight must be between 0 and 65535")
            } else {
                None
            };
            if let Some(problem) = problem {
                return Err(HttpError::bad_request(format!(
                    "Invalid Weights: {problem}"
                )));
            }
            (passing, warning)
        }
        Some(other) => return Err(decode_error("ServiceDefinition.Weights", "Weights", other)),
    };

    let mut raw_checks = Vec::new();
    if let Some(check) = field(&obj, &["Check"]) {
        raw_checks.push(check);
    }
    match field(&obj, &["Checks"]) {
        None => {}
        Some(Value::Array(checks)) => raw_checks.extend(checks.iter()),
        Some(other) => return Err(decode_error("ServiceDefinition.Checks", "[]", other)),
    }
    let many = raw_checks.len() > 1;
    let mut checks = Vec::new();
    for (i, raw) in raw_checks.into_iter().enumerate() {
        let default_id = if many {
            format!("service:{id}:{}", i + 1)
        } else {
            format!("service:{id}")
        };
        checks.push(decode_check(raw, default_id, &name)?);
    }

    Ok(Registration {
        service: Service {
            id,
            name,
            tags,
            address,
            port,
            meta,
            weights,
            enable_tag_override,
            locality,
            create_index: 0,
            modify_index: 0,
        },
        checks,
    })
}

fn decode_check(
    raw: &Value,
    default_id: String,
    service: &str,
) -> Result<CheckDefinition, HttpError> {
    let Value::Object(obj) = raw else {
        return Err(decode_error("ServiceDefinition.Check", "CheckType", raw));
    };
    for kind in UNSUPPORTED_CHECKS {
        if field(obj, &[kind]).is_some() {
            return Err(HttpError::bad_request(format!(
                "consul-double: only TTL checks are supported, not {kind} checks"
            )));
        }
    }
    let ttl = match string(obj, &["TTL"], "CheckType.TTL")? {
        None => Duration::ZERO,
        Some(text) => duration::parse(&text)
            .map_err(|e| HttpError::bad_request(format!("Request decode failed: {e}")))?,
    };
    if ttl.is_zero() {
        return Err(HttpError::bad_request(
            "Invalid check: TTL must be > 0 for TTL checks",
        ));
    }
    let status = string(obj, &["Status"], "CheckType.Status")?.filter(|s| !s.is_empty());
    if let Some(status) = &status {
        if ![PASSING, WARNING, CRITICAL].contains(&status.as_str()) {
            return Err(HttpError::bad_request(format!(
                "Invalid check status: \"{status}\""
            )));
        }
    }
    Ok(CheckDefinition {
        id: string(obj, &["CheckID", "ID", "check_id"], "CheckType.CheckID")?
            .filter(|s| !s.is_empty())
            .unwrap_or(default_id),
        name: string(obj, &["Name"], "CheckType.Name")?
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| format!("Service '{service}' check")),
        status,
        notes: string(obj, &["Notes"], "CheckType.Notes")?.unwrap_or_default(),
        ttl,
    })
}

fn validate_meta(meta: &BTreeMap<String, String>) -> Result<(), HttpError> {
    if meta.len() > 64 {
        return Err(HttpError::bad_request(
            "Invalid Service Meta: Node metadata cannot contain more than 64 key/value pairs",
        ));
    }
    for (key, value) in meta {
        let problem = if key.is_empty() {
            Some("Key cannot be blank".to_owned())
        } else if !key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            Some(format!("Key contains invalid characters: {key:?}"))
        } else if key.len() > 128 {
            Some(format!("Key is too long (limit: 128 characters): {key:?}"))
        } else if key.starts_with("consul-") {
            Some(format!("Key denotes a reserved prefix: {key:?}"))
        } else if value.len() > 512 {
            Some(format!(
                "Value is too long (limit: 512 characters): {key:?}"
            ))
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(HttpError::bad_request(format!(
                "Invalid Service Meta: {problem}"
            )));
        }
    }
    Ok(())
}

// === Applying writes ===

/// Registers (or replaces) a service on `node`, keeping the status of checks that already
/// existed (the agent restores them), and writes to the catalog only when something changed.
pub fn apply_registration(
    dc: &mut Datacenter,
    node: &str,
    registration: Registration,
    replace_existing_checks: bool,
) {
    let Registration {
        mut service,
        checks,
    } = registration;
    let Some(current) = dc.nodes.get(node) else {
        return;
    };
    let old = current.services.get(&service.id).cloned();
    let mut new_checks: BTreeMap<String, Check> = BTreeMap::new();
    for def in checks {
        let existing = current.checks.get(&def.id);
        let (status, output) = match existing {
            Some(existing) => (existing.status.clone(), existing.output.clone()),
            None => (def.status.unwrap_or_else(|| CRITICAL.into()), String::new()),
        };
        new_checks.insert(
            def.id.clone(),
            Check {
                id: def.id,
                name: def.name,
                status,
                notes: def.notes,
                output,
                service_id: service.id.clone(),
                service_name: service.name.clone(),
                service_tags: service.tags.clone(),
                ttl: Some(def.ttl),
                expires: existing
                    .and_then(|c| c.expires)
                    .or_else(|| Some(Instant::now() + def.ttl)),
                check_type: "ttl".into(),
                create_index: existing.map_or(0, |c| c.create_index),
                modify_index: existing.map_or(0, |c| c.modify_index),
            },
        );
    }
    // Checks of this service that the new definition does not name.
    let stale: Vec<String> = current
        .checks
        .values()
        .filter(|c| c.service_id == service.id && !new_checks.contains_key(&c.id))
        .map(|c| c.id.clone())
        .collect();

    let unchanged = old.as_ref().is_some_and(|old| same_service(old, &service))
        && (stale.is_empty() || !replace_existing_checks)
        && new_checks.values().all(|c| {
            current
                .checks
                .get(&c.id)
                .is_some_and(|e| e.name == c.name && e.notes == c.notes && e.ttl == c.ttl)
        });
    if unchanged {
        // The agent is in sync with the catalog: no write, no index change. TTL timers of
        // existing checks keep running.
        return;
    }

    let mut touched = vec![service.name.clone()];
    if let Some(old) = &old {
        if old.name != service.name {
            touched.push(old.name.clone());
        }
    }
    let refs: Vec<&str> = touched.iter().map(String::as_str).collect();
    let index = dc.bump(&refs, true);
    let Some(node) = dc.nodes.get_mut(node) else {
        return;
    };
    service.create_index = old.as_ref().map_or(index, |o| o.create_index);
    service.modify_index = index;
    if replace_existing_checks {
        for id in &stale {
            node.checks.remove(id);
        }
    }
    // Kept checks of the service follow its new name and tags.
    for check in node.checks.values_mut() {
        if check.service_id == service.id {
            check.service_name = service.name.clone();
            check.service_tags = service.tags.clone();
            check.modify_index = index;
        }
    }
    for (id, mut check) in new_checks {
        if check.create_index == 0 {
            check.create_index = index;
        }
        check.modify_index = index;
        node.checks.insert(id, check);
    }
    node.services.insert(service.id.clone(), service);
}

fn same_service(a: &Service, b: &Service) -> bool {
    a.name == b.name
        && a.tags == b.tags
        && a.address == b.address
        && a.port == b.port
        && a.meta == b.meta
        && a.weights == b.weights
        && a.enable_tag_override == b.enable_tag_override
}

/// Removes a service and its checks from `node`.
pub fn apply_deregistration(
    dc: &mut Datacenter,
    node: &str,
    service_id: &str,
) -> Result<(), HttpError> {
    let name = dc
        .nodes
        .get(node)
        .and_then(|n| n.services.get(service_id))
        .map(|s| s.name.clone())
        .ok_or_else(|| unknown_service(service_id))?;
    dc.bump(&[&name], true);
    if let Some(node) = dc.nodes.get_mut(node) {
        node.services.remove(service_id);
        node.checks.retain(|_, c| c.service_id != service_id);
    }
    Ok(())
}

/// Puts a service in or out of maintenance mode (a critical `_service_maintenance:<id>` check).
pub fn apply_maintenance(
    dc: &mut Datacenter,
    node: &str,
    service_id: &str,
    enable: bool,
    reason: Option<String>,
) -> Result<(), HttpError> {
    let service = dc
        .nodes
        .get(node)
        .and_then(|n| n.services.get(service_id))
        .cloned()
        .ok_or_else(|| unknown_service(service_id))?;
    let check_id = format!("_service_maintenance:{service_id}");
    let present = dc.nodes[node].checks.contains_key(&check_id);
    if enable == present {
        return Ok(());
    }
    let index = dc.bump(&[&service.name], false);
    let Some(node) = dc.nodes.get_mut(node) else {
        return Ok(());
    };
    if enable {
        node.checks.insert(
            check_id.clone(),
            Check {
                id: check_id,
                name: "Service Maintenance Mode".into(),
                status: CRITICAL.into(),
                notes: reason.filter(|r| !r.is_empty()).unwrap_or_else(|| {
                    "Maintenance mode is enabled for this service, but no reason was provided. This is a result of a user request.".into()
                }),
                output: String::new(),
                service_id: service.id.clone(),
                service_name: service.name.clone(),
                service_tags: service.tags.clone(),
                ttl: None,
                expires: None,
                check_type: "maintenance".into(),
                create_index: index,
                modify_index: index,
            },
        );
    } else {
        node.checks.remove(&check_id);
    }
    Ok(())
}

pub fn unknown_service(id: &str) -> HttpError {
    HttpError::new(
        StatusCode::NOT_FOUND,
        format!("Unknown service ID \"{id}\". Ensure that the service ID is passed, not the service name."),
    )
}

pub fn unknown_check(id: &str) -> HttpError {
    HttpError::new(
        StatusCode::NOT_FOUND,
        format!(
            "Unknown check ID \"{id}\". Ensure that the check ID is passed, not the check name."
        ),
    )
}

// === Go-style JSON field access ===

/// A field by name, matched case-insensitively as Go's encoding/json does; `null` is absent.
pub fn field<'a>(obj: &'a Map<String, Value>, names: &[&str]) -> Option<&'a Value> {
    for name in names {
        if let Some(value) = obj.get(*name) {
            return Some(value).filter(|v| !v.is_null());
        }
    }
    obj.iter()
        .find(|(key, _)| names.iter().any(|n| key.eq_ignore_ascii_case(n)))
        .map(|(_, v)| v)
        .filter(|v| !v.is_null())
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn decode_error(field: &str, go_type: &str, value: &Value) -> HttpError {
    HttpError::bad_request(format!(
        "Request decode failed: json: cannot unmarshal {} into Go struct field {field} of type {go_type}",
        kind_of(value)
    ))
}

fn string(obj: &Map<String, Value>, names: &[&str], go: &str) -> Result<Option<String>, HttpError> {
    match field(obj, names) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(decode_error(go, "string", other)),
    }
}

fn integer(obj: &Map<String, Value>, names: &[&str], go: &str) -> Result<Option<i64>, HttpError> {
    match field(obj, names) {
        None => Ok(None),
        Some(Value::Number(n)) if n.is_i64() => Ok(n.as_i64()),
        Some(other) => Err(decode_error(go, "int", other)),
    }
}

fn boolean(obj: &Map<String, Value>, names: &[&str], go: &str) -> Result<Option<bool>, HttpError> {
    match field(obj, names) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(decode_error(go, "bool", other)),
    }
}

fn strings(obj: &Map<String, Value>, names: &[&str], go: &str) -> Result<Vec<String>, HttpError> {
    match field(obj, names) {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => Ok(s.clone()),
                other => Err(decode_error(go, "string", other)),
            })
            .collect(),
        Some(other) => Err(decode_error(go, "[]string", other)),
    }
}

fn string_map(
    obj: &Map<String, Value>,
    names: &[&str],
    go: &str,
) -> Result<BTreeMap<String, String>, HttpError> {
    match field(obj, names) {
        None => Ok(BTreeMap::new()),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                other => Err(decode_error(go, "string", other)),
            })
            .collect(),
        Some(other) => Err(decode_error(go, "map[string]string", other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(body: &str, expected: Result<(&str, &str, Vec<&str>), &str>) {
        let got = decode_registration(body.as_bytes());
        match (got, expected) {
            (Ok(reg), Ok((id, name, check_ids))) => {
                assert_eq!(reg.service.id, id, "{body}");
                assert_eq!(reg.service.name, name, "{body}");
                let ids: Vec<&str> = reg.checks.iter().map(|c| c.id.as_str()).collect();
                assert_eq!(ids, check_ids, "{body}");
            }
            (Err(err), Err(message)) => {
                assert!(err.body.contains(message), "{body}: {}", err.body)
            }
            (got, expected) => panic!("{body}: got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn registrations() {
        check(r#"{"Name":"web"}"#, Ok(("web", "web", vec![])));
        check(
            r#"{"name":"web","id":"web-1"}"#,
            Ok(("web-1", "web", vec![])),
        );
        check(
            r#"{"Name":"web","ID":"w1","Check":{"TTL":"10s"}}"#,
            Ok(("w1", "web", vec!["service:w1"])),
        );
        check(
            r#"{"Name":"web","ID":"w1","Checks":[{"TTL":"10s"},{"TTL":"1m","CheckID":"mine"},{"TTL":"5s"}]}"#,
            Ok(("w1", "web", vec!["service:w1:1", "mine", "service:w1:3"])),
        );
        check(r#"{"ID":"x"}"#, Err("Missing service name"));
        check(
            r#"{"Name":"web","Port":"80"}"#,
            Err("cannot unmarshal string"),
        );
        check(
            r#"{"Name":"web","Weights":{"Passing":0,"Warning":1}}"#,
            Err("Invalid Weights: Passing must be greater than 0"),
        );
        check(
            r#"{"Name":"web","Check":{"HTTP":"http://x","Interval":"1s"}}"#,
            Err("only TTL checks"),
        );
        check(
            r#"{"Name":"web","Check":{"TTL":"0s"}}"#,
            Err("TTL must be > 0"),
        );
        check(
            r#"{"Name":"web","Meta":{"a.b":"x"}}"#,
            Err("Invalid Service Meta"),
        );
        check(r#"[1]"#, Err("Request decode failed"));
    }

    #[test]
    fn tokens() {
        let acl = AclOptions::deny_with("w", "r");
        assert_eq!(
            resolve(Some(&acl), Some("w")).unwrap().rights,
            Some(Rights::Write)
        );
        assert_eq!(
            resolve(Some(&acl), Some("r")).unwrap().rights,
            Some(Rights::Read)
        );
        assert_eq!(resolve(Some(&acl), None).unwrap().rights, None);
        let err = resolve(Some(&acl), Some("nope")).unwrap_err();
        assert_eq!(
            (err.status, err.body.as_str()),
            (StatusCode::FORBIDDEN, "ACL not found")
        );
        assert_eq!(
            resolve(None, Some("anything")).unwrap().rights,
            Some(Rights::Write)
        );
    }
}
