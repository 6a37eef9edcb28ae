//! A Nacos server double for machines where no Nacos can be installed.
//!
//! It speaks the naming part of Nacos's Open API with the paths, parameters, bodies and
//! codes of real Nacos (nacos.io "Open API" for 2.x, whose `{"code","message","data"}`
//! envelope and error codes it uses, and for 1.x; `InstanceControllerV2`,
//! `InstanceController` and `UserController` in alibaba/nacos), so a test that drives it only
//! through that API would run unchanged against `startup.sh -m standalone`:
//!
//! - `POST|PUT|DELETE /nacos/v2/ns/instance` and `/nacos/v1/ns/instance` (register, update,
//!   deregister; parameters in the query or a form body: `serviceName` (v1 also
//!   `GROUP@@name`), `groupName`, `namespaceId`, `ip`, `port`, `clusterName`, `weight`,
//!   `healthy`, `enabled`, `ephemeral`, `metadata` as a JSON string);
//! - `PUT /nacos/v2/ns/health/instance` and `/nacos/v1/ns/health/instance` (`healthy`):
//!   persistent instances only, as in Nacos;
//! - `GET /nacos/v2/ns/instance/list` (enveloped) and `/nacos/v1/ns/instance/list` (bare)
//!   with `namespaceId` (default `public`), `groupName` (default `DEFAULT_GROUP`),
//!   `clusterName`/`clusters` (comma-separated) and `healthyOnly`; an unknown service is an
//!   empty `hosts` list;
//! - `POST /nacos/v1/auth/login` (and `/nacos/v1/auth/users/login`, which the Java
//!   client's `SecurityProxy` uses) with `username`, `password`, answering `{"accessToken",
//!   "tokenTtl","globalAdmin"}`; with auth on, naming requests need `accessToken=` and get
//!   403 `token invalid!` or `token expired!` otherwise.
//!
//! Not modelled: client heartbeats and the 15 s / 30 s unhealthy and delete timeouts of
//! ephemeral instances (instances stay until deregistered), the gRPC port, config APIs.
//! Knobs for tests: [`NacosDouble::stop`] / [`NacosDouble::resume`], [`NacosDouble::set_v1_only`]
//! (the v2 paths answer 404, as Nacos before 2.2), [`NacosDouble::set_failing`] (500s),
//! [`NacosDouble::inject_raw_host`] and per-path request counters.

pub mod server;

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::{json, Value};

use server::{query_pairs, respond, Server};

/// How to start a double.
#[derive(Clone, Debug)]
pub struct Options {
    /// Where to listen. Default `127.0.0.1:0`.
    pub listen: SocketAddr,
    /// `(username, password)`: auth on. Default off.
    pub user: Option<(String, String)>,
    /// `tokenTtl` of issued tokens. Default 18000 s (Nacos's default).
    pub token_ttl: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            user: None,
            token_ttl: Duration::from_secs(18_000),
        }
    }
}

/// (namespace, group, service).
type ServiceKey = (String, String, String);

#[derive(Default)]
struct State {
    /// Instances by service, then by `ip#port#cluster`.
    services: BTreeMap<ServiceKey, BTreeMap<String, Value>>,
    /// Issued tokens and their expiry.
    tokens: BTreeMap<String, Instant>,
}

struct Inner {
    state: Mutex<State>,
    options: Options,
    v1_only: AtomicBool,
    failing: AtomicBool,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running Nacos double. Dropping it stops it.
pub struct NacosDouble {
    inner: Arc<Inner>,
    server: Server,
}

impl NacosDouble {
    /// Starts a double.
    pub fn start(options: Options) -> io::Result<NacosDouble> {
        let listen = options.listen;
        let inner = Arc::new(Inner {
            state: Mutex::default(),
            options,
            v1_only: AtomicBool::new(false),
            failing: AtomicBool::new(false),
        });
        let handler = inner.clone();
        let server = Server::start(
            "nacos-double",
            listen,
            Arc::new(move |request| Box::pin(handle(handler.clone(), request))),
        )?;
        Ok(NacosDouble { inner, server })
    }

    /// `http://127.0.0.1:PORT`, what `servers` takes.
    pub fn address(&self) -> String {
        format!("http://{}", self.server.socket_addr())
    }

    /// The server dies (listener closed, connections dropped); state kept.
    pub fn stop(&self) {
        self.server.stop();
    }

    /// Back on the same port.
    pub fn resume(&self) -> io::Result<()> {
        self.server.resume()
    }

    /// Knob: the v2 Open API answers 404, as on Nacos before 2.2.
    pub fn set_v1_only(&self, on: bool) {
        self.inner.v1_only.store(on, Ordering::Relaxed);
    }

    /// Knob: every request answers 500.
    pub fn set_failing(&self, on: bool) {
        self.inner.failing.store(on, Ordering::Relaxed);
    }

    /// Adds a host to `DEFAULT_GROUP@@service` in `public` exactly as given.
    pub fn inject_raw_host(&self, service: &str, host: Value) {
        let key = (
            "public".to_owned(),
            "DEFAULT_GROUP".to_owned(),
            service.to_owned(),
        );
        let mut state = self.inner.lock();
        let n = state.services.get(&key).map_or(0, BTreeMap::len);
        state
            .services
            .entry(key)
            .or_default()
            .insert(format!("raw-{n}"), host);
    }

    /// Requests received for `path`.
    pub fn requests(&self, path: &str) -> u64 {
        self.server.requests(path)
    }
}

fn envelope(data: Value) -> Response<Full<Bytes>> {
    let body = json!({"code": 0, "message": "success", "data": data});
    respond(200, "application/json", body.to_string(), &[])
}

fn error(status: u16, v2: bool, code: i64, message: &str, data: &str) -> Response<Full<Bytes>> {
    if v2 {
        let body = json!({"code": code, "message": message, "data": data});
        respond(status, "application/json", body.to_string(), &[])
    } else {
        respond(status, "text/plain", format!("caused: {data};"), &[])
    }
}

async fn handle(inner: Arc<Inner>, request: Request<Incoming>) -> Response<Full<Bytes>> {
    if inner.failing.load(Ordering::Relaxed) {
        return respond(
            500,
            "text/plain",
            "server is DOWN now, please try again later!",
            &[],
        );
    }
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let mut params = query_pairs(request.uri().query());
    let body = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    params.extend(query_pairs(Some(&String::from_utf8_lossy(&body))));
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };

    // The Java client's `SecurityProxy` posts to `/v1/auth/users/login`; the docs name
    // `/v1/auth/login`: the server answers both.
    if matches!(
        path.as_str(),
        "/nacos/v1/auth/login" | "/nacos/v1/auth/users/login"
    ) && method == Method::POST
    {
        let (Some(user), Some(password)) = (param("username"), param("password")) else {
            return respond(400, "text/plain", "username and password required", &[]);
        };
        if inner.options.user.as_ref() != Some(&(user, password)) {
            return respond(403, "text/plain", "unknown user!", &[]);
        }
        let token = format!("token-{:016x}", fastrand::u64(..));
        let ttl = inner.options.token_ttl;
        inner
            .lock()
            .tokens
            .insert(token.clone(), Instant::now() + ttl);
        let body = json!({"accessToken": token, "tokenTtl": ttl.as_secs(), "globalAdmin": true});
        return respond(200, "application/json", body.to_string(), &[]);
    }
    let v2 = path.starts_with("/nacos/v2/");
    if v2 && inner.v1_only.load(Ordering::Relaxed) {
        return respond(
            404,
            "application/json",
            r#"{"timestamp":"","status":404,"error":"Not Found","path":""}"#,
            &[],
        );
    }
    if inner.options.user.is_some() {
        let expiry = param("accessToken").and_then(|t| inner.lock().tokens.get(&t).copied());
        match expiry {
            None => return respond(403, "text/plain", "token invalid!", &[]),
            Some(at) if at <= Instant::now() => {
                return respond(403, "text/plain", "token expired!", &[])
            }
            Some(_) => {}
        }
    }
    let namespace = param("namespaceId")
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "public".into());
    let mut group = param("groupName")
        .filter(|g| !g.is_empty())
        .unwrap_or_else(|| "DEFAULT_GROUP".into());
    let Some(mut service) = param("serviceName").filter(|s| !s.is_empty()) else {
        return error(
            400,
            v2,
            10000,
            "parameter missing",
            "Required parameter 'serviceName' type String is not present",
        );
    };
    if let Some((g, s)) = service.clone().split_once("@@") {
        group = g.to_owned();
        service = s.to_owned();
    }
    let key = (namespace, group.clone(), service.clone());
    let tail = path
        .trim_start_matches("/nacos/v2")
        .trim_start_matches("/nacos/v1");
    let ok = |v2: bool| {
        if v2 {
            envelope(json!("ok"))
        } else {
            respond(200, "text/plain", "ok", &[])
        }
    };
    match (&method, tail) {
        (&Method::GET, "/ns/instance/list") => {
            let healthy_only = param("healthyOnly").is_some_and(|v| v == "true");
            let clusters: Vec<String> = param(if v2 { "clusterName" } else { "clusters" })
                .unwrap_or_default()
                .split(',')
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
                .collect();
            let hosts: Vec<Value> = inner
                .lock()
                .services
                .get(&key)
                .into_iter()
                .flat_map(BTreeMap::values)
                .filter(|h| {
                    clusters.is_empty() || clusters.iter().any(|c| h["clusterName"] == c.as_str())
                })
                .filter(|h| !healthy_only || h["healthy"] != false)
                .cloned()
                .collect();
            let data = json!({"name": format!("{group}@@{service}"), "groupName": group,
                "clusters": clusters.join(","), "cacheMillis": 10000, "hosts": hosts,
                "lastRefTime": 0, "checksum": "", "allIPs": false, "reachProtectionThreshold": false, "valid": true});
            if v2 {
                envelope(data)
            } else {
                respond(200, "application/json", data.to_string(), &[])
            }
        }
        (&Method::POST | &Method::PUT | &Method::DELETE, "/ns/instance") => {
            let (Some(ip), Some(port)) = (
                param("ip"),
                param("port").and_then(|p| p.parse::<u16>().ok()),
            ) else {
                return error(
                    400,
                    v2,
                    10000,
                    "parameter missing",
                    "ip and port are required",
                );
            };
            let cluster = param("clusterName").unwrap_or_else(|| "DEFAULT".into());
            let id = format!("{ip}#{port}#{cluster}#{group}@@{service}");
            let mut state = inner.lock();
            if method == Method::DELETE {
                if let Some(instances) = state.services.get_mut(&key) {
                    instances.remove(&id);
                }
                return ok(v2);
            }
            let existing = state.services.get(&key).and_then(|i| i.get(&id)).cloned();
            if method == Method::PUT && existing.is_none() {
                return error(
                    400,
                    v2,
                    21003,
                    "instance not found",
                    &format!("instance not exist: {ip}:{port}"),
                );
            }
            let mut host = existing.unwrap_or_else(|| json!({"instanceId": id, "ip": ip, "port": port,
                "weight": 1.0, "healthy": true, "enabled": true, "ephemeral": true, "clusterName": cluster,
                "serviceName": format!("{group}@@{service}"), "metadata": {},
                "instanceHeartBeatInterval": 5000, "instanceIdGenerator": "simple",
                "instanceHeartBeatTimeOut": 15000, "ipDeleteTimeout": 30000}));
            if let Some(weight) = param("weight") {
                match weight.parse::<f64>() {
                    Ok(w) if (0.0..=10000.0).contains(&w) => host["weight"] = json!(w),
                    _ => {
                        return error(
                            400,
                            v2,
                            21001,
                            "weight error",
                            "instance format invalid: The weights range from 0.0 to 10000.0",
                        )
                    }
                }
            }
            for flag in ["healthy", "enabled", "ephemeral"] {
                if let Some(v) = param(flag) {
                    host[flag] = json!(v == "true");
                }
            }
            if let Some(metadata) = param("metadata") {
                match serde_json::from_str::<BTreeMap<String, String>>(&metadata) {
                    Ok(m) => host["metadata"] = json!(m),
                    Err(_) => {
                        return error(
                            400,
                            v2,
                            21002,
                            "instance metadata error",
                            "metadata is not a JSON map of strings",
                        )
                    }
                }
            }
            state.services.entry(key).or_default().insert(id, host);
            ok(v2)
        }
        (&Method::PUT, "/ns/health/instance") => {
            let (Some(ip), Some(port)) = (param("ip"), param("port")) else {
                return error(
                    400,
                    v2,
                    10000,
                    "parameter missing",
                    "ip and port are required",
                );
            };
            let cluster = param("clusterName").unwrap_or_else(|| "DEFAULT".into());
            let id = format!("{ip}#{port}#{cluster}#{group}@@{service}");
            let healthy = param("healthy").is_some_and(|v| v == "true");
            let mut state = inner.lock();
            let Some(host) = state.services.get_mut(&key).and_then(|i| i.get_mut(&id)) else {
                return error(
                    400,
                    v2,
                    21003,
                    "instance not found",
                    &format!("instance not exist: {ip}:{port}"),
                );
            };
            if host["ephemeral"] != false {
                return error(
                    400,
                    v2,
                    21004,
                    "instance error",
                    "health of an ephemeral instance is set by its heartbeats",
                );
            }
            host["healthy"] = json!(healthy);
            ok(v2)
        }
        _ => respond(
            404,
            "application/json",
            r#"{"status":404,"error":"Not Found"}"#,
            &[],
        ),
    }
}
