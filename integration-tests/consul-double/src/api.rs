//! The HTTP side of one agent: routing, query strings, tokens, blocking queries and the
//! response headers real Consul sends.
//!
//! Blocking queries follow Consul's `blockingQuery`: with `index` absent or 0 the answer is
//! immediate; otherwise the request waits until the resource's index exceeds `index`, the
//! state is replaced (a rewind), or `wait` (default 5 min, at most 10 min, plus up to
//! wait/16 of random jitter) runs out, and then answers with the current data and index.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, VARY};
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::Value;

use crate::agent::{self, AclOptions, Caller, HttpError};
use crate::duration;
use crate::filter;
use crate::state::{Shared, CRITICAL, PASSING, WARNING};

const DEFAULT_WAIT: Duration = Duration::from_secs(300);
const MAX_WAIT: Duration = Duration::from_secs(600);

/// One request the double saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedRequest {
    /// `GET`, `PUT`, ...
    pub method: String,
    /// The path without the query, percent-decoded (`/v1/health/service/web`).
    pub path: String,
    /// The raw query string (`passing=1&index=12&wait=300s`), empty when absent.
    pub query: String,
    /// When it arrived.
    pub at: Instant,
}

impl RecordedRequest {
    /// The first value of a query parameter, percent-decoded; `Some("")` for a bare flag.
    pub fn param(&self, name: &str) -> Option<String> {
        parse_query(&self.query)
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }
}

/// Per-path counters and the request log.
#[derive(Debug, Default)]
pub struct Stats {
    inner: Mutex<StatsInner>,
}

#[derive(Debug, Default)]
struct StatsInner {
    counts: HashMap<String, u64>,
    log: Vec<RecordedRequest>,
}

const MAX_LOG: usize = 100_000;

impl Stats {
    fn record(&self, request: RecordedRequest) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        *inner.counts.entry(request.path.clone()).or_default() += 1;
        if inner.log.len() < MAX_LOG {
            inner.log.push(request);
        }
    }

    pub fn count(&self, path: &str) -> u64 {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.counts.get(path).copied().unwrap_or(0)
    }

    pub fn log(&self) -> Vec<RecordedRequest> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.log.clone()
    }

    pub fn clear(&self) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.counts.clear();
        inner.log.clear();
    }
}

/// One agent: its node in its datacenter, its ACL settings, its counters.
#[derive(Debug)]
pub struct Agent {
    pub shared: Arc<Shared>,
    pub datacenter: String,
    pub node: String,
    pub acl: Option<AclOptions>,
    pub stats: Stats,
    /// Knob: answer blocking queries at once, as a misbehaving server would.
    pub ignore_index: AtomicBool,
    /// Knob: leave `X-Consul-Index` out of answers, as a non-blocking proxy would.
    pub omit_index: AtomicBool,
}

type Body = Full<Bytes>;

/// Serves one request; never fails (errors are HTTP answers).
pub async fn handle(
    agent: Arc<Agent>,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let method = request.method().clone();
    let path = percent_decode(request.uri().path(), false);
    let query_text = request.uri().query().unwrap_or("").to_owned();
    agent.stats.record(RecordedRequest {
        method: method.to_string(),
        path: path.clone(),
        query: query_text.clone(),
        at: Instant::now(),
    });
    let query = parse_query(&query_text);
    let token = token_of(&request, &query);
    let body = match request.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let response = route(&agent, &method, &path, &query, token.as_deref(), &body).await;
    let mut response = response.unwrap_or_else(|err| text(err.status, &err.body));
    // Every answer says the ACL default policy: agent/http.go's `wrap` calls
    // `setACLDefaultPolicy(resp, s.agent.config.ACLResolverSettings.ACLDefaultPolicy)` before
    // any handler runs, errors included; `acl.default_policy` is "allow" unless configured.
    let policy = match agent.acl.as_ref().map(|acl| acl.default_policy) {
        Some(agent::DefaultPolicy::Deny) => "deny",
        Some(agent::DefaultPolicy::Allow) | None => "allow",
    };
    response.headers_mut().insert(
        HeaderName::from_static("x-consul-default-acl-policy"),
        HeaderValue::from_static(policy),
    );
    Ok(response)
}

async fn route(
    agent: &Arc<Agent>,
    method: &Method,
    path: &str,
    query: &[(String, String)],
    token: Option<&str>,
    body: &[u8],
) -> Result<Response<Body>, HttpError> {
    if path == "/v1/status/leader" {
        allow(method, &[Method::GET])?;
        return Ok(json_response(&Value::String("127.0.0.1:8300".into()), &[]));
    }
    let caller = agent::resolve(agent.acl.as_ref(), token)?;
    if let Some(service) = path.strip_prefix("/v1/health/service/") {
        allow(method, &[Method::GET])?;
        return health_service(agent, service, query, &caller).await;
    }
    if path == "/v1/catalog/services" {
        allow(method, &[Method::GET])?;
        return catalog_services(agent, query, &caller).await;
    }
    if path == "/v1/agent/services" {
        allow(method, &[Method::GET])?;
        return Ok(agent_services(agent, &caller));
    }
    if path == "/v1/agent/checks" {
        allow(method, &[Method::GET])?;
        return Ok(agent_checks(agent, &caller));
    }
    if path == "/v1/agent/self" {
        allow(method, &[Method::GET])?;
        return Ok(agent_self(agent));
    }
    if path == "/v1/agent/service/register" {
        allow(method, &[Method::PUT])?;
        let registration = agent::decode_registration(body)?;
        caller.require_write("service", &registration.service.name)?;
        let replace = bool_param(query, "replace-existing-checks")?.unwrap_or(false);
        agent.shared.write(|cluster| {
            if let Some(dc) = cluster.dc_mut(&agent.datacenter) {
                agent::apply_registration(dc, &agent.node, registration, replace);
            }
        });
        return Ok(text(StatusCode::OK, ""));
    }
    if let Some(id) = path.strip_prefix("/v1/agent/service/deregister/") {
        allow(method, &[Method::PUT])?;
        let name = service_name(agent, id)?;
        caller.require_write("service", &name)?;
        agent
            .shared
            .write(|cluster| match cluster.dc_mut(&agent.datacenter) {
                Some(dc) => agent::apply_deregistration(dc, &agent.node, id),
                None => Err(agent::unknown_service(id)),
            })?;
        return Ok(text(StatusCode::OK, ""));
    }
    if let Some(id) = path.strip_prefix("/v1/agent/service/maintenance/") {
        allow(method, &[Method::PUT])?;
        let enable = bool_param(query, "enable")?
            .ok_or_else(|| HttpError::bad_request("Missing value for enable"))?;
        let name = service_name(agent, id)?;
        caller.require_write("service", &name)?;
        let reason = param(query, "reason");
        agent
            .shared
            .write(|cluster| match cluster.dc_mut(&agent.datacenter) {
                Some(dc) => agent::apply_maintenance(dc, &agent.node, id, enable, reason),
                None => Err(agent::unknown_service(id)),
            })?;
        return Ok(text(StatusCode::OK, ""));
    }
    for (prefix, status) in [
        ("/v1/agent/check/pass/", PASSING),
        ("/v1/agent/check/warn/", WARNING),
        ("/v1/agent/check/fail/", CRITICAL),
    ] {
        if let Some(id) = path.strip_prefix(prefix) {
            allow(method, &[Method::PUT])?;
            return update_check(agent, &caller, id, status, param(query, "note"));
        }
    }
    if let Some(id) = path.strip_prefix("/v1/agent/check/update/") {
        allow(method, &[Method::PUT])?;
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| HttpError::bad_request(format!("Request decode failed: {e}")))?;
        let obj = value.as_object().cloned().unwrap_or_default();
        let status = agent::field(&obj, &["Status"])
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        if ![PASSING, WARNING, CRITICAL].contains(&status.as_str()) {
            return Err(HttpError::bad_request(format!(
                "Invalid check status: '{status}'"
            )));
        }
        let output = agent::field(&obj, &["Output"])
            .and_then(Value::as_str)
            .map(str::to_owned);
        return update_check(agent, &caller, id, &status, output);
    }
    Err(HttpError::new(
        StatusCode::NOT_FOUND,
        "404 page not found\n",
    ))
}

fn allow(method: &Method, allowed: &[Method]) -> Result<(), HttpError> {
    if allowed.contains(method) {
        Ok(())
    } else {
        Err(HttpError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method {method} not allowed"),
        ))
    }
}

fn service_name(agent: &Agent, id: &str) -> Result<String, HttpError> {
    let cluster = agent.shared.lock();
    cluster
        .dc(&agent.datacenter)
        .and_then(|dc| dc.nodes.get(&agent.node))
        .and_then(|node| node.services.get(id))
        .map(|s| s.name.clone())
        .ok_or_else(|| agent::unknown_service(id))
}

fn update_check(
    agent: &Agent,
    caller: &Caller,
    id: &str,
    status: &str,
    output: Option<String>,
) -> Result<Response<Body>, HttpError> {
    let (service_name, ttl) = {
        let cluster = agent.shared.lock();
        let check = cluster
            .dc(&agent.datacenter)
            .and_then(|dc| dc.nodes.get(&agent.node))
            .and_then(|node| node.checks.get(id))
            .ok_or_else(|| agent::unknown_check(id))?;
        (check.service_name.clone(), check.ttl)
    };
    if service_name.is_empty() {
        caller.require_write("node", &agent.node)?;
    } else {
        caller.require_write("service", &service_name)?;
    }
    if ttl.is_none() {
        return Err(HttpError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("CheckID \"{id}\" does not have associated TTL"),
        ));
    }
    agent.shared.write(|cluster| {
        if let Some(dc) = cluster.dc_mut(&agent.datacenter) {
            dc.set_check_status(&agent.node, id, status, Some(output.unwrap_or_default()));
        }
    });
    Ok(text(StatusCode::OK, ""))
}

// === Reads ===

/// What a blocking read computes each time it looks: its index, its body, and whether the
/// ACL filter removed something.
struct Read {
    index: u64,
    body: Value,
    filtered: bool,
}

struct Blocking {
    min_index: u64,
    deadline: Instant,
}

fn blocking_params(query: &[(String, String)]) -> Result<Blocking, HttpError> {
    let mut wait = DEFAULT_WAIT;
    if let Some(text) = param(query, "wait").filter(|w| !w.is_empty()) {
        wait = duration::parse(&text).map_err(|_| HttpError::bad_request("Invalid wait time"))?;
    }
    let min_index = match param(query, "index").filter(|i| !i.is_empty()) {
        None => 0,
        Some(text) => text
            .parse::<u64>()
            .map_err(|_| HttpError::bad_request("Invalid index"))?,
    };
    if wait > MAX_WAIT {
        wait = MAX_WAIT;
    } else if wait.is_zero() {
        wait = DEFAULT_WAIT;
    }
    let jitter = (wait / 16).mul_f64(fastrand::f64());
    Ok(Blocking {
        min_index,
        deadline: Instant::now() + wait + jitter,
    })
}

/// Runs `read` until its index passes `min_index`, the datacenter is rewound, or the wait
/// runs out.
async fn block(
    agent: &Agent,
    dc: &str,
    blocking: Blocking,
    read: impl Fn(&crate::state::Datacenter) -> Read,
) -> Result<Read, HttpError> {
    let mut changes = agent.shared.subscribe();
    let mut abandon_seen = None;
    loop {
        let (result, abandon) = {
            let cluster = agent.shared.lock();
            let Some(datacenter) = cluster.dc(dc) else {
                return Err(HttpError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "No path to datacenter",
                ));
            };
            (read(datacenter), datacenter.abandon)
        };
        let abandoned = abandon_seen.is_some_and(|seen| seen != abandon);
        abandon_seen = Some(abandon);
        if blocking.min_index == 0
            || agent.ignore_index.load(Ordering::Relaxed)
            || result.index > blocking.min_index
            || abandoned
            || Instant::now() >= blocking.deadline
        {
            return Ok(result);
        }
        let sleep = tokio::time::sleep_until(blocking.deadline.into());
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    return Ok(result);
                }
            }
            () = sleep => {}
        }
    }
}

fn datacenter_param(agent: &Agent, query: &[(String, String)]) -> String {
    param(query, "dc")
        .filter(|dc| !dc.is_empty())
        .unwrap_or_else(|| agent.datacenter.clone())
}

/// Consul Community Edition refuses the Enterprise parameters it does not support.
fn enterprise_params(query: &[(String, String)]) -> Result<(), HttpError> {
    if param(query, "ns").is_some_and(|ns| !ns.is_empty() && ns != "default") {
        return Err(HttpError::bad_request(
            "Invalid query parameter: \"ns\" - Namespaces are a Consul Enterprise feature",
        ));
    }
    if param(query, "partition").is_some_and(|p| !p.is_empty() && p != "default") {
        return Err(HttpError::bad_request(
            "Invalid query parameter: \"partition\" - Partitions are a Consul Enterprise feature",
        ));
    }
    Ok(())
}

/// `?stale` / `?consistent` (Consul reads a parameter's presence, any value), and the
/// `X-Consul-Effective-Consistency` an answer carries. Both at once is Consul's 400 from
/// agent/http.go `parseConsistency`: "Cannot specify ?stale with ?consistent, conflicting
/// semantics".
fn consistency_param(query: &[(String, String)]) -> Result<&'static str, HttpError> {
    let has = |name: &str| query.iter().any(|(k, _)| k == name);
    match (has("stale"), has("consistent")) {
        (true, true) => Err(HttpError::bad_request(
            "Cannot specify ?stale with ?consistent, conflicting semantics.",
        )),
        (true, false) => Ok("stale"),
        (false, true) => Ok("consistent"),
        (false, false) => Ok("leader"),
    }
}

async fn health_service(
    agent: &Arc<Agent>,
    service: &str,
    query: &[(String, String)],
    caller: &Caller,
) -> Result<Response<Body>, HttpError> {
    if service.is_empty() {
        return Err(HttpError::bad_request("Missing service name"));
    }
    let passing = bool_param(query, "passing")
        .map_err(|_| HttpError::bad_request("Invalid value for ?passing"))?
        .unwrap_or(false);
    let tags: Vec<String> = query
        .iter()
        .filter(|(k, _)| k == "tag")
        .map(|(_, v)| v.clone())
        .collect();
    enterprise_params(query)?;
    let dc = datacenter_param(agent, query);
    let blocking = blocking_params(query)?;
    let filter = match param(query, "filter").filter(|f| !f.is_empty()) {
        Some(text) => Some(filter::parse(&text).map_err(HttpError::bad_request)?),
        None => None,
    };
    let consistency = consistency_param(query)?;
    let can_read = caller.can_read();
    let token_given = caller.token_given;
    let read = block(agent, &dc, blocking, |datacenter| {
        let mut entries = datacenter.health_entries(service, &tags, passing);
        // The filter runs on the query's result, before ACL filtering is reported
        // (agent/consul/health_endpoint.go ServiceNodes: `filter.Execute(reply.Nodes)`).
        if let Some(filter) = &filter {
            entries.retain(|entry| filter::eval(filter, entry));
        }
        // Consul masks the "filtered by ACLs" flag for requests without a token:
        // `maskResultsFilteredByACLs` in agent/consul/rpc.go (`if token == "" {
        // meta.SetResultsFilteredByACLs(false) }`), so an anonymous caller cannot learn that
        // anything was hidden.
        let filtered = !can_read && !entries.is_empty() && token_given;
        let entries = if can_read { entries } else { Vec::new() };
        Read {
            index: datacenter.index_for_service(service),
            body: Value::Array(entries),
            filtered,
        }
    })
    .await?;
    let mut response = read_response(agent, &read);
    response.headers_mut().insert(
        HeaderName::from_static("x-consul-effective-consistency"),
        HeaderValue::from_static(consistency),
    );
    Ok(response)
}

async fn catalog_services(
    agent: &Arc<Agent>,
    query: &[(String, String)],
    caller: &Caller,
) -> Result<Response<Body>, HttpError> {
    enterprise_params(query)?;
    let dc = datacenter_param(agent, query);
    let blocking = blocking_params(query)?;
    let can_read = caller.can_read();
    let token_given = caller.token_given;
    let read = block(agent, &dc, blocking, |datacenter| {
        let services = datacenter.catalog_services();
        // Masked for token-less callers, as in health_service (maskResultsFilteredByACLs).
        let filtered = !can_read && !services.is_empty() && token_given;
        let body = if can_read {
            serde_json::to_value(services).unwrap_or(Value::Null)
        } else {
            Value::Object(serde_json::Map::new())
        };
        Read {
            index: datacenter.index_for_catalog(),
            body,
            filtered,
        }
    })
    .await?;
    Ok(read_response(agent, &read))
}

/// `GET /v1/agent/services`: this agent's services by ID (the built-in `consul` service of
/// servers is not an agent service).
fn agent_services(agent: &Agent, caller: &Caller) -> Response<Body> {
    let cluster = agent.shared.lock();
    let mut out = serde_json::Map::new();
    if let Some(node) = cluster
        .dc(&agent.datacenter)
        .and_then(|dc| dc.nodes.get(&agent.node))
        .filter(|_| caller.can_read())
    {
        for service in node.services.values().filter(|s| s.id != "consul") {
            out.insert(
                service.id.clone(),
                serde_json::json!({
                    "ID": service.id,
                    "Service": service.name,
                    "Tags": service.tags,
                    "Meta": service.meta,
                    "Port": service.port,
                    "Address": service.address,
                    "Weights": {"Passing": service.weights.0, "Warning": service.weights.1},
                    "EnableTagOverride": service.enable_tag_override,
                    "Datacenter": agent.datacenter,
                }),
            );
        }
    }
    json_response(&Value::Object(out), &[])
}

/// `GET /v1/agent/checks`: this agent's checks by ID.
fn agent_checks(agent: &Agent, caller: &Caller) -> Response<Body> {
    let cluster = agent.shared.lock();
    let mut out = serde_json::Map::new();
    if let Some(node) = cluster
        .dc(&agent.datacenter)
        .and_then(|dc| dc.nodes.get(&agent.node))
        .filter(|_| caller.can_read())
    {
        for check in node.checks.values() {
            out.insert(
                check.id.clone(),
                crate::state::check_json(&node.name, check),
            );
        }
    }
    json_response(&Value::Object(out), &[])
}

fn agent_self(agent: &Agent) -> Response<Body> {
    let cluster = agent.shared.lock();
    let node = cluster
        .dc(&agent.datacenter)
        .and_then(|dc| dc.nodes.get(&agent.node));
    let body = serde_json::json!({
        "Config": {
            "Datacenter": agent.datacenter,
            "NodeName": agent.node,
            "NodeID": node.map(|n| n.id.clone()).unwrap_or_default(),
            "Server": true,
            "Revision": "double",
            "Version": "1.20.0",
        },
        "Member": {
            "Name": agent.node,
            "Addr": node.map(|n| n.address.clone()).unwrap_or_default(),
            "Port": 8301,
            "Tags": {"dc": agent.datacenter, "role": "consul"},
            "Status": 1,
        },
    });
    json_response(&body, &[])
}

fn read_response(agent: &Agent, read: &Read) -> Response<Body> {
    let mut headers: Vec<(&'static str, String)> = vec![
        ("X-Consul-Knownleader", "true".into()),
        ("X-Consul-Lastcontact", "0".into()),
        ("X-Consul-Effective-Consistency", "leader".into()),
        ("X-Consul-Query-Backend", "blocking-query".into()),
    ];
    if !agent.omit_index.load(Ordering::Relaxed) {
        headers.push(("X-Consul-Index", read.index.to_string()));
    }
    if read.filtered {
        headers.push(("X-Consul-Results-Filtered-By-ACLs", "true".into()));
    }
    json_response(&read.body, &headers)
}

fn json_response(body: &Value, headers: &[(&'static str, String)]) -> Response<Body> {
    let mut bytes = serde_json::to_vec(body).unwrap_or_default();
    bytes.push(b'\n');
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
        .headers_mut()
        .insert(VARY, HeaderValue::from_static("Accept-Encoding"));
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

fn text(status: StatusCode, body: &str) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_owned())));
    *response.status_mut() = status;
    if !body.is_empty() {
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
    }
    response
}

// === Query strings and tokens ===

/// The token of a request, in Consul's order: `?token=`, `X-Consul-Token`, then
/// `Authorization: Bearer`.
fn token_of(request: &Request<Incoming>, query: &[(String, String)]) -> Option<String> {
    if let Some(token) = param(query, "token").filter(|t| !t.is_empty()) {
        return Some(token);
    }
    let headers = request.headers();
    if let Some(token) = headers
        .get("X-Consul-Token")
        .and_then(|v| v.to_str().ok())
        .filter(|t| !t.is_empty())
    {
        return Some(token.to_owned());
    }
    headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| rest.trim().to_owned())
        })
        .filter(|t| !t.is_empty())
}

fn param(query: &[(String, String)], name: &str) -> Option<String> {
    query
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
}

/// A boolean parameter as Go's `strconv.ParseBool` reads it; a bare `?flag` is true.
fn bool_param(query: &[(String, String)], name: &str) -> Result<Option<bool>, HttpError> {
    match param(query, name).as_deref() {
        None => Ok(None),
        Some("" | "1" | "t" | "T" | "true" | "TRUE" | "True") => Ok(Some(true)),
        Some("0" | "f" | "F" | "false" | "FALSE" | "False") => Ok(Some(false)),
        Some(_) => Err(HttpError::bad_request(format!("Invalid value for ?{name}"))),
    }
}

/// Splits and percent-decodes a query string (`+` is a space).
pub fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key, true), percent_decode(value, true))
        })
        .collect()
}

fn percent_decode(text: &str, plus_is_space: bool) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(byte) => {
                        out.push(byte);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries() {
        let q = parse_query("passing&tag=a&tag=b%20c&dc=dc2&note=x+y&bad=%zz");
        assert_eq!(param(&q, "passing").as_deref(), Some(""));
        assert_eq!(param(&q, "dc").as_deref(), Some("dc2"));
        assert_eq!(param(&q, "note").as_deref(), Some("x y"));
        assert_eq!(param(&q, "bad").as_deref(), Some("%zz"));
        let tags: Vec<_> = q
            .iter()
            .filter(|(k, _)| k == "tag")
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(tags, ["a", "b c"]);
        assert_eq!(bool_param(&q, "passing").unwrap(), Some(true));
        assert!(bool_param(&parse_query("passing=maybe"), "passing").is_err());
        assert_eq!(
            percent_decode("/v1/health/service/a%2Fb", false),
            "/v1/health/service/a/b"
        );
        assert_eq!(percent_decode("%4", false), "%4");
    }
}
