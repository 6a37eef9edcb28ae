//! A Nomad agent double for machines where no Nomad can be installed.
//!
//! It speaks the part of Nomad's HTTP API that operators, Nomad clients and Switchyard use
//! for native service discovery, with the field names, casing, headers and status codes of
//! real Nomad (api-docs `/nomad/api-docs/services`, `/jobs`, `/allocations`, "Blocking
//! Queries"; `ServiceRegistration` in nomad `nomad/structs/services.go`), so a test that
//! drives it only through that API would run unchanged against `nomad agent -dev`:
//!
//! - `PUT|POST /v1/jobs` (and `POST /v1/job/<id>`) with `{"Job": {...}}` in Nomad's API JSON:
//!   every task group is placed at once, `Count` allocations (default 1) on the double's one
//!   node, and the group's and tasks' services with `Provider = "nomad"` are registered as a
//!   Nomad client does, port labels resolved from the group's `Networks[].ReservedPorts`
//!   (static) or `DynamicPorts` (picked from 20000-32000), the address being the service's
//!   `Address` or the node's. Re-registering a job replaces its allocations (a destructive
//!   update). Services with the default provider (`consul`) are not registered here;
//! - `DELETE /v1/job/<id>` (stop; `?purge=true` also forgets it) and
//!   `POST|PUT /v1/allocation/<id>/stop`: the allocations' registrations go, as the Nomad
//!   client deregisters a stopped or failed allocation's services. The double reschedules
//!   nothing (real Nomad would place a replacement allocation for a stopped one);
//! - `GET /v1/service/<name>` (`?namespace=`, default `default`) and `GET /v1/services`, both
//!   blocking: with `index` > 0 the request waits until the registrations' index passes it or
//!   `wait` (default 5m, at most 10m, plus up to wait/16 of random jitter) runs out; answers
//!   carry `X-Nomad-Index`, `X-Nomad-KnownLeader` and `X-Nomad-LastContact`. An unknown
//!   service is `[]` with 200;
//! - `DELETE /v1/service/<name>/<id>` deletes one registration;
//! - `GET /v1/status/leader`;
//! - ACL tokens from `X-Nomad-Token` or `Authorization: Bearer`: with ACLs on, an unknown
//!   token is 403 `ACL token not found` and no token is 403 `Permission denied`.
//!
//! Knobs real Nomad has no API for, for tests: [`NomadDouble::stop`] and
//! [`NomadDouble::resume`] (the agent dies and comes back on the same port, state kept),
//! [`NomadDouble::rewind_index`] (the index goes backwards, as after a snapshot restore; here
//! blocked queries answer at once with the lower index), [`NomadDouble::inject_registration`]
//! (a registration written as given, to show what a consumer does with a malformed one) and
//! [`NomadDouble::set_no_leader`] (every request answers `500 No cluster leader`) and
//! per-path request counters.

pub mod server;
mod state;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::{json, Value};

use server::{go_duration, query_pairs, respond, Server};
use state::Shared;

/// Nomad's default blocking wait.
const DEFAULT_WAIT: Duration = Duration::from_secs(300);
/// Nomad's cap on `wait`.
const MAX_WAIT: Duration = Duration::from_secs(600);

/// How to start a double.
#[derive(Clone, Debug)]
pub struct Options {
    /// Where to listen. Default `127.0.0.1:0` (a free port).
    pub listen: SocketAddr,
    /// The node's address, used by services without `Address`. Default `127.0.0.1`.
    pub node_address: String,
    /// ACL tokens accepted for everything; empty (the default) means ACLs are off.
    pub acl_tokens: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            node_address: "127.0.0.1".into(),
            acl_tokens: Vec::new(),
        }
    }
}

/// A running Nomad agent double. Dropping it stops it.
pub struct NomadDouble {
    shared: Arc<Shared>,
    server: Server,
}

impl NomadDouble {
    /// Starts a double and begins serving at once.
    pub fn start(options: Options) -> io::Result<NomadDouble> {
        let shared = Arc::new(Shared::new(options.node_address, options.acl_tokens));
        let handler_shared = shared.clone();
        let server = Server::start(
            "nomad-double",
            options.listen,
            Arc::new(move |request| Box::pin(handle(handler_shared.clone(), request))),
        )?;
        Ok(NomadDouble { shared, server })
    }

    /// `http://127.0.0.1:PORT`, what a client's `address` setting takes.
    pub fn address(&self) -> String {
        format!("http://{}", self.server.socket_addr())
    }

    /// The agent dies: the listener closes and open connections, blocked queries included,
    /// drop. State is kept.
    pub fn stop(&self) {
        self.server.stop();
    }

    /// Back on the same port with the state it had.
    pub fn resume(&self) -> io::Result<()> {
        self.server.resume()
    }

    /// The registrations' current index.
    pub fn index(&self) -> u64 {
        self.shared.lock().index
    }

    /// Makes the index go backwards to `to` (at least 1), as a snapshot restore does;
    /// blocked queries answer at once with it.
    pub fn rewind_index(&self, to: u64) {
        self.shared.write(|state| {
            state.index = to.max(1);
            state.epoch += 1;
        });
    }

    /// Adds a registration exactly as given (it must carry `ServiceName`; `Namespace`
    /// defaults to `default`), bypassing the jobs API: what another writer, or a corrupted
    /// store, would leave.
    pub fn inject_registration(&self, registration: Value) {
        self.shared.write(|state| state.inject(registration));
    }

    /// Knob: when on, every request is answered `500 No cluster leader`, as Nomad servers
    /// answer while they have lost their leader. Default off.
    pub fn set_no_leader(&self, on: bool) {
        self.shared
            .no_leader
            .store(on, std::sync::atomic::Ordering::Relaxed);
        // Blocked queries end (a leader loss fails the servers' blocking RPCs).
        self.shared.write(|state| state.epoch += 1);
    }

    /// How many requests the double received for `path` (no query string).
    pub fn requests(&self, path: &str) -> u64 {
        self.server.requests(path)
    }
}

// === HTTP ===

async fn handle(shared: Arc<Shared>, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let method = request.method().clone();
    let path = server::decode(request.uri().path());
    let params = query_pairs(request.uri().query());
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let token = request
        .headers()
        .get("X-Nomad-Token")
        .or_else(|| request.headers().get(http::header::AUTHORIZATION))
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim_start_matches("Bearer ").trim().to_owned());
    if shared.no_leader.load(std::sync::atomic::Ordering::Relaxed) {
        return respond(500, "text/plain", "No cluster leader", &[]);
    }
    if let Some(refused) = shared.refuse(token.as_deref()) {
        return respond(403, "text/plain", refused, &[]);
    }
    let body = match request.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => return respond(400, "text/plain", "cannot read body", &[]),
    };
    let namespace = param("namespace").unwrap_or_else(|| "default".into());
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (&method, segments.as_slice()) {
        (&Method::PUT | &Method::POST, ["v1", "jobs"]) | (&Method::POST, ["v1", "job", _]) => {
            let job: Value = match serde_json::from_slice(&body) {
                Ok(value) => value,
                Err(e) => {
                    return respond(
                        400,
                        "text/plain",
                        format!("Failed to decode request body: {e}"),
                        &[],
                    )
                }
            };
            let Some(job) = job.get("Job").filter(|j| j.is_object()) else {
                return respond(400, "text/plain", "Job must be specified", &[]);
            };
            match shared.write(|state| state.register_job(job, &namespace)) {
                Ok(index) => json_reply(
                    &json!({"EvalID": state::uuid(), "EvalCreateIndex": index, "JobModifyIndex": index,
                            "Warnings": "", "Index": index, "LastContact": 0, "KnownLeader": false}),
                    index,
                ),
                Err(message) => respond(400, "text/plain", message, &[]),
            }
        }
        (&Method::DELETE, ["v1", "job", id]) => {
            let purge = param("purge").is_some_and(|v| v == "true");
            match shared.write(|state| state.stop_job(&namespace, id, purge)) {
                Some(index) => json_reply(
                    &json!({"EvalID": state::uuid(), "EvalCreateIndex": index, "JobModifyIndex": index}),
                    index,
                ),
                None => respond(404, "text/plain", "job not found", &[]),
            }
        }
        (&Method::POST | &Method::PUT, ["v1", "allocation", id, "stop"]) => {
            match shared.write(|state| state.stop_alloc(id)) {
                Some(index) => json_reply(&json!({"EvalID": state::uuid(), "Index": index}), index),
                None => respond(404, "text/plain", "alloc not found", &[]),
            }
        }
        (&Method::GET, ["v1", "service", name]) => {
            let index = blocking(&shared, param("index"), param("wait")).await;
            if shared.no_leader.load(std::sync::atomic::Ordering::Relaxed) {
                return respond(500, "text/plain", "No cluster leader", &[]);
            }
            let list = shared.lock().service(&namespace, name);
            json_reply(&Value::Array(list), index)
        }
        (&Method::DELETE, ["v1", "service", name, id]) => {
            match shared.write(|state| state.delete_registration(&namespace, name, id)) {
                Some(index) => respond(
                    200,
                    "application/json",
                    "",
                    &[("X-Nomad-Index", index.to_string())],
                ),
                None => respond(404, "text/plain", "Service registration not found", &[]),
            }
        }
        (&Method::GET, ["v1", "services"]) => {
            let index = blocking(&shared, param("index"), param("wait")).await;
            let list = shared.lock().services(&namespace);
            json_reply(&list, index)
        }
        (&Method::GET, ["v1", "status", "leader"]) => {
            json_reply(&json!("127.0.0.1:4647"), shared.lock().index)
        }
        _ => respond(
            404,
            "text/plain",
            format!("Invalid URL path {path:?} for {method}"),
            &[],
        ),
    }
}

/// Waits as a blocking query does and returns the index to answer with.
async fn blocking(shared: &Shared, index: Option<String>, wait: Option<String>) -> u64 {
    let min: u64 = index.and_then(|i| i.parse().ok()).unwrap_or(0);
    let wait = wait
        .and_then(|w| go_duration(&w))
        .unwrap_or(DEFAULT_WAIT)
        .min(MAX_WAIT);
    let wait = wait + wait.mul_f64(fastrand::f64() / 16.0);
    let deadline = tokio::time::Instant::from_std(Instant::now() + wait);
    let mut changes = shared.subscribe();
    let epoch = shared.lock().epoch;
    loop {
        let (index, now) = {
            let state = shared.lock();
            (state.index, state.epoch)
        };
        if min == 0 || index > min || now != epoch {
            return index;
        }
        if tokio::time::timeout_at(deadline, changes.changed())
            .await
            .is_err()
        {
            return shared.lock().index;
        }
    }
}

fn json_reply(value: &Value, index: u64) -> Response<Full<Bytes>> {
    respond(
        200,
        "application/json",
        serde_json::to_vec(value).expect("JSON"),
        &[
            ("X-Nomad-Index", index.to_string()),
            ("X-Nomad-KnownLeader", "true".into()),
            ("X-Nomad-LastContact", "0".into()),
        ],
    )
}
