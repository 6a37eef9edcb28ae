//! A Eureka server double for machines where no Eureka can be installed.
//!
//! It speaks the REST operations of Eureka 1.x (the "Eureka REST operations" page of
//! Netflix/eureka's wiki; `ApplicationsResource`, `InstanceResource` and
//! `ResponseCacheImpl` in eureka-core), JSON only, so a test that drives it only through
//! that API would run unchanged against a Spring Cloud Netflix Eureka server:
//!
//! - `POST /eureka/apps/<APP>` with `{"instance": {...}}` registers (204); `DELETE
//!   /eureka/apps/<APP>/<id>` cancels (200, 404 when unknown); `PUT /eureka/apps/<APP>/<id>`
//!   renews (200, 404);
//! - `PUT /eureka/apps/<APP>/<id>/status?value=OUT_OF_SERVICE` overrides the status and
//!   `DELETE .../status` removes the override (status back to `UP`, or `?value=`);
//!   `PUT /eureka/apps/<APP>/<id>/metadata?key=value` changes metadata;
//! - `GET /eureka/apps` (the full registry with `apps__hashcode`), `GET /eureka/apps/delta`
//!   (every change of the last `delta_retention`, default 180 s as
//!   `retentionTimeInMSInDeltaQueue`, each instance with its `actionType`, and the hash code
//!   of the full registry), `GET /eureka/apps/<APP>`;
//! - HTTP basic auth when [`Options::basic_auth`] is set (401 otherwise).
//!
//! App names are upper-cased, as Eureka does. Answers are computed fresh (as with
//! `shouldUseReadOnlyResponseCache = false`); lease expiry and eviction are not modelled.
//! Knobs for tests: [`EurekaDouble::stop`] / [`EurekaDouble::resume`],
//! [`EurekaDouble::set_delta_retention`] (to make a client miss deltas),
//! [`EurekaDouble::inject_raw_instance`] and per-path request counters.

pub mod server;

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
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
    /// `(user, password)` required by basic auth. Default: none.
    pub basic_auth: Option<(String, String)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            basic_auth: None,
        }
    }
}

struct State {
    apps: BTreeMap<String, BTreeMap<String, Value>>,
    /// Recent changes: when, app, the instance with its `actionType`.
    changes: Vec<(Instant, String, Value)>,
    retention: Duration,
    version: u64,
}

impl State {
    fn change(&mut self, app: &str, instance: &Value, action: &str) {
        let mut instance = instance.clone();
        instance["actionType"] = json!(action);
        self.changes
            .push((Instant::now(), app.to_owned(), instance));
        self.version += 1;
    }

    fn hash_code(&self) -> String {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for instance in self.apps.values().flat_map(BTreeMap::values) {
            let status = instance["status"].as_str().unwrap_or("UNKNOWN").to_owned();
            *counts.entry(status).or_default() += 1;
        }
        counts.iter().map(|(s, n)| format!("{s}_{n}_")).collect()
    }

    fn application(name: &str, instances: Vec<Value>) -> Value {
        json!({"name": name, "instance": instances})
    }

    fn full(&self) -> Value {
        let apps: Vec<Value> = self
            .apps
            .iter()
            .filter(|(_, i)| !i.is_empty())
            .map(|(name, i)| Self::application(name, i.values().cloned().collect()))
            .collect();
        json!({"applications": {"versions__delta": self.version.to_string(),
            "apps__hashcode": self.hash_code(), "application": apps}})
    }

    fn delta(&mut self) -> Value {
        let cutoff = Instant::now().checked_sub(self.retention);
        self.changes
            .retain(|(at, _, _)| cutoff.is_none_or(|c| *at >= c));
        let mut by_app: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
        for (_, app, instance) in &self.changes {
            by_app.entry(app).or_default().push(instance.clone());
        }
        let apps: Vec<Value> = by_app
            .into_iter()
            .map(|(name, i)| Self::application(name, i))
            .collect();
        json!({"applications": {"versions__delta": self.version.to_string(),
            "apps__hashcode": self.hash_code(), "application": apps}})
    }
}

struct Inner {
    state: Mutex<State>,
    basic_auth: Option<String>,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running Eureka double. Dropping it stops it.
pub struct EurekaDouble {
    inner: Arc<Inner>,
    server: Server,
}

impl EurekaDouble {
    /// Starts a double.
    pub fn start(options: Options) -> io::Result<EurekaDouble> {
        let basic_auth = options
            .basic_auth
            .map(|(u, p)| base64(format!("{u}:{p}").as_bytes()));
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                apps: BTreeMap::new(),
                changes: Vec::new(),
                retention: Duration::from_secs(180),
                version: 1,
            }),
            basic_auth,
        });
        let handler = inner.clone();
        let server = Server::start(
            "eureka-double",
            options.listen,
            Arc::new(move |request| Box::pin(handle(handler.clone(), request))),
        )?;
        Ok(EurekaDouble { inner, server })
    }

    /// `http://127.0.0.1:PORT/eureka`, what `servers` takes.
    pub fn address(&self) -> String {
        format!("http://{}/eureka", self.server.socket_addr())
    }

    /// The server dies (listener closed, connections dropped); state kept.
    pub fn stop(&self) {
        self.server.stop();
    }

    /// Back on the same port.
    pub fn resume(&self) -> io::Result<()> {
        self.server.resume()
    }

    /// Knob: how long changes stay in the delta (default 180 s); zero empties every delta,
    /// so a client's hash code disagrees after any change and it must fetch in full.
    pub fn set_delta_retention(&self, retention: Duration) {
        self.inner.lock().retention = retention;
    }

    /// Knob: adds an instance to `app` exactly as given (keyed `raw-N`), recorded as
    /// `ADDED` in the delta.
    pub fn inject_raw_instance(&self, app: &str, instance: Value) {
        let mut state = self.inner.lock();
        let app = app.to_ascii_uppercase();
        let n = state.apps.get(&app).map_or(0, BTreeMap::len);
        state.change(&app, &instance, "ADDED");
        state
            .apps
            .entry(app)
            .or_default()
            .insert(format!("raw-{n}"), instance);
    }

    /// Requests received for `path`.
    pub fn requests(&self, path: &str) -> u64 {
        self.server.requests(path)
    }
}

fn json_reply(value: &Value) -> Response<Full<Bytes>> {
    respond(200, "application/json", value.to_string(), &[])
}

async fn handle(inner: Arc<Inner>, request: Request<Incoming>) -> Response<Full<Bytes>> {
    if let Some(expected) = &inner.basic_auth {
        let given = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "));
        if given != Some(expected.as_str()) {
            return respond(
                401,
                "text/plain",
                "Unauthorized",
                &[("WWW-Authenticate", "Basic realm=\"Realm\"".into())],
            );
        }
    }
    let method = request.method().clone();
    let path = server::decode(request.uri().path());
    let params = query_pairs(request.uri().query());
    let body = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let mut state = inner.lock();
    match (&method, segments.as_slice()) {
        (&Method::GET, ["eureka", "apps"]) => json_reply(&state.full()),
        (&Method::GET, ["eureka", "apps", "delta"]) => json_reply(&state.delta()),
        (&Method::GET, ["eureka", "apps", app]) => {
            match state
                .apps
                .get(&app.to_ascii_uppercase())
                .filter(|i| !i.is_empty())
            {
                Some(instances) => json_reply(&json!({"application": State::application(
                    &app.to_ascii_uppercase(), instances.values().cloned().collect())})),
                None => respond(404, "text/plain", "", &[]),
            }
        }
        (&Method::POST, ["eureka", "apps", app]) => {
            let app = app.to_ascii_uppercase();
            let Ok(value) = serde_json::from_slice::<Value>(&body) else {
                return respond(400, "text/plain", "cannot parse the instance", &[]);
            };
            let mut instance = value["instance"].clone();
            let Some(id) = instance["instanceId"]
                .as_str()
                .or(instance["hostName"].as_str())
                .map(str::to_owned)
            else {
                return respond(400, "text/plain", "Missing instanceId", &[]);
            };
            if instance["status"].is_null() {
                instance["status"] = json!("UP");
            }
            instance["app"] = json!(app);
            instance["overriddenStatus"] = json!("UNKNOWN");
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis() as u64;
            instance["lastUpdatedTimestamp"] = json!(now.to_string());
            let action = if state.apps.get(&app).is_some_and(|i| i.contains_key(&id)) {
                "MODIFIED"
            } else {
                "ADDED"
            };
            state.change(&app, &instance, action);
            state.apps.entry(app).or_default().insert(id, instance);
            respond(204, "application/json", "", &[])
        }
        (&Method::PUT, ["eureka", "apps", app, id]) => {
            let found = state
                .apps
                .get(&app.to_ascii_uppercase())
                .is_some_and(|i| i.contains_key(*id));
            respond(if found { 200 } else { 404 }, "application/json", "", &[])
        }
        (&Method::DELETE, ["eureka", "apps", app, id]) => {
            let app = app.to_ascii_uppercase();
            match state.apps.get_mut(&app).and_then(|i| i.remove(*id)) {
                Some(instance) => {
                    state.change(&app, &instance, "DELETED");
                    respond(200, "application/json", "", &[])
                }
                None => respond(404, "application/json", "", &[]),
            }
        }
        (
            &Method::PUT | &Method::DELETE,
            ["eureka", "apps", app, id, what @ ("status" | "metadata")],
        ) => {
            let app = app.to_ascii_uppercase();
            let Some(instance) = state.apps.get_mut(&app).and_then(|i| i.get_mut(*id)) else {
                return respond(404, "application/json", "", &[]);
            };
            let value = params
                .iter()
                .find(|(k, _)| k == "value")
                .map(|(_, v)| v.clone());
            match (*what, &method) {
                ("status", &Method::PUT) => {
                    let Some(value) = value else {
                        return respond(400, "text/plain", "value is required", &[]);
                    };
                    instance["status"] = json!(value);
                    instance["overriddenStatus"] = json!(value);
                }
                ("status", _) => {
                    instance["status"] = json!(value.unwrap_or_else(|| "UP".into()));
                    instance["overriddenStatus"] = json!("UNKNOWN");
                }
                _ => {
                    if !instance["metadata"].is_object() {
                        instance["metadata"] = json!({});
                    }
                    for (k, v) in &params {
                        instance["metadata"][k] = json!(v);
                    }
                }
            }
            let instance = instance.clone();
            state.change(&app, &instance, "MODIFIED");
            respond(200, "application/json", "", &[])
        }
        _ => respond(404, "text/plain", "", &[]),
    }
}

/// Standard base64 (RFC 4648), for the expected `Authorization: Basic` value.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
