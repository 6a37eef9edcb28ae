//! The HTTP side of the double: routing, bearer-token auth, list, watch, get, create,
//! replace, merge-patch and delete, each answering as the Kubernetes API server does.
//!
//! Watch responses are `200` streams of newline-delimited `{"type","object"}` events
//! (`ADDED`, `MODIFIED`, `DELETED`, `BOOKMARK`, `ERROR`); a resourceVersion older than the
//! history gives one `ERROR` event carrying a `Status` with code 410 and reason `Expired`,
//! then the end of the stream (api-concepts, "Efficient detection of changes").

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use crate::selector::{labels_of, FieldSelector, LabelSelector};
use crate::store::{name_of, ApiError, Event, Kind, Store};
use crate::RequestRecord;

/// Response bodies: whole JSON documents or watch streams.
pub type Body = BoxBody<Bytes, std::io::Error>;

/// State shared by every connection, kept across stop/start.
pub struct Shared {
    pub(crate) store: Mutex<Store>,
    /// The current resourceVersion, bumped on every write so that watches wake up.
    pub(crate) changed: watch::Sender<u64>,
    /// Bumped by `drop_watches`: every open watch response is aborted.
    pub(crate) drops: watch::Sender<u64>,
    /// While true, open watches deliver nothing (a stalled watch).
    pub(crate) paused: watch::Sender<bool>,
    pub(crate) requests: Mutex<Vec<RequestRecord>>,
    pub(crate) token: Option<String>,
    pub(crate) bookmark_interval: Duration,
    pub(crate) max_watch_timeout: Option<Duration>,
}

impl Shared {
    pub(crate) fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn notify(&self) {
        let rv = self.store().resource_version();
        self.changed.send_replace(rv);
    }
}

/// Serves one request.
pub async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    if let Some(op) = path.strip_prefix("/_double/") {
        return Ok(knob(&shared, op));
    }
    let route = Route::parse(&path);
    let verb = route.as_ref().map(|r| r.verb(&method, &query));
    let response = if authorized(&shared, &req) {
        match route {
            Some(route) => serve(&shared, route, req, &query).await,
            None => discovery(&path),
        }
    } else {
        error_response(&ApiError::new(401, "Unauthorized", "Unauthorized"))
    };
    shared
        .requests
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(RequestRecord {
            method: method.to_string(),
            path,
            query,
            verb: verb.unwrap_or_default().to_owned(),
            status: response.status().as_u16(),
        });
    Ok(response)
}

fn authorized(shared: &Shared, req: &Request<Incoming>) -> bool {
    let Some(token) = &shared.token else {
        return true;
    };
    req.headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|given| given.trim() == token)
}

/// Test knobs for the standalone binary: `POST /_double/{expire,drop-watches,pause,resume}`
/// and `GET /_double/requests`.
fn knob(shared: &Shared, op: &str) -> Response<Body> {
    match op {
        "expire" => {
            shared.store().expire();
            shared.notify();
        }
        "drop-watches" => {
            shared.drops.send_modify(|n| *n += 1);
        }
        "pause" => {
            shared.paused.send_replace(true);
        }
        "resume" => {
            shared.paused.send_replace(false);
        }
        "requests" => {
            let requests = shared
                .requests
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            let list: Vec<Value> = requests
                .iter()
                .map(|r| json!({"method": r.method, "path": r.path, "query": r.query, "verb": r.verb, "status": r.status}))
                .collect();
            return json_response(StatusCode::OK, &Value::Array(list));
        }
        _ => return error_response(&ApiError::new(404, "NotFound", format!("no knob {op:?}"))),
    }
    json_response(StatusCode::OK, &json!({"ok": true}))
}

// === routing ===

/// A resource URL: a collection (all namespaces or one) or one named object.
#[derive(Debug)]
struct Route {
    kind: Kind,
    namespace: Option<String>,
    name: Option<String>,
}

impl Route {
    fn parse(path: &str) -> Option<Route> {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (group_kind, rest) = match segments.as_slice() {
            ["api", "v1", rest @ ..] => (Kind::Service, rest),
            ["apis", "discovery.k8s.io", "v1", rest @ ..] => (Kind::EndpointSlice, rest),
            _ => return None,
        };
        let (namespace, plural, name) = match rest {
            [plural] => (None, *plural, None),
            ["namespaces", ns, plural] => (Some(*ns), *plural, None),
            ["namespaces", ns, plural, name] => (Some(*ns), *plural, Some(*name)),
            _ => return None,
        };
        if plural != group_kind.plural() {
            return None;
        }
        Some(Route {
            kind: group_kind,
            namespace: namespace.map(str::to_owned),
            name: name.map(str::to_owned),
        })
    }

    /// The RBAC verb of a request on this route.
    fn verb(&self, method: &Method, query: &str) -> &'static str {
        let watch = parse_query(query)
            .get("watch")
            .is_some_and(|w| w == "true" || w == "1");
        match (method.as_str(), self.name.is_some()) {
            ("GET", false) if watch => "watch",
            ("GET", false) => "list",
            ("GET", true) => "get",
            ("POST", _) => "create",
            ("PUT", _) => "update",
            ("PATCH", _) => "patch",
            ("DELETE", false) => "deletecollection",
            ("DELETE", true) => "delete",
            _ => "",
        }
    }
}

/// `/version`, `/healthz`, and the discovery documents kubectl reads.
fn discovery(path: &str) -> Response<Body> {
    let body = match path.trim_end_matches('/') {
        "/healthz" | "/livez" | "/readyz" => {
            return Response::new(full(Bytes::from_static(b"ok")));
        }
        "/version" => {
            json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-switchyard-double", "platform": "linux/amd64"})
        }
        "/api" => {
            json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})
        }
        "/apis" => json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [{
            "name": "discovery.k8s.io",
            "versions": [{"groupVersion": "discovery.k8s.io/v1", "version": "v1"}],
            "preferredVersion": {"groupVersion": "discovery.k8s.io/v1", "version": "v1"}}]}),
        "/api/v1" => resource_list(Kind::Service),
        "/apis/discovery.k8s.io/v1" => resource_list(Kind::EndpointSlice),
        _ => {
            return error_response(&ApiError::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ))
        }
    };
    json_response(StatusCode::OK, &body)
}

fn resource_list(kind: Kind) -> Value {
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": kind.api_version(),
        "resources": [{"name": kind.plural(), "singularName": kind.name().to_lowercase(),
            "namespaced": true, "kind": kind.name(),
            "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]}]})
}

async fn serve(
    shared: &Arc<Shared>,
    route: Route,
    req: Request<Incoming>,
    query: &str,
) -> Response<Body> {
    let params = parse_query(query);
    let is_post = req.method() == Method::POST;
    let result = match (req.method().clone(), &route.namespace, &route.name) {
        (Method::GET, _, None) => {
            if params.get("watch").is_some_and(|w| w == "true" || w == "1") {
                return watch(shared, &route, &params);
            }
            list(shared, &route, &params)
        }
        (Method::GET, Some(ns), Some(name)) => shared.store().get(route.kind, ns, name),
        (Method::POST, Some(ns), None) => match read_object(route.kind, req).await {
            Ok(object) => create(shared, route.kind, ns, object),
            Err(err) => Err(err),
        },
        (Method::PUT, Some(ns), Some(name)) => match read_object(route.kind, req).await {
            Ok(object) => replace(shared, route.kind, ns, name, object),
            Err(err) => Err(err),
        },
        (Method::PATCH, Some(ns), Some(name)) => patch(shared, route.kind, ns, name, req).await,
        (Method::DELETE, Some(ns), Some(name)) => {
            let result = shared.store().delete(route.kind, ns, name);
            shared.notify();
            result
        }
        _ => Err(ApiError::new(
            405,
            "MethodNotAllowed",
            format!("{} is not supported on {}", req.method(), req.uri().path()),
        )),
    };
    match result {
        Ok(object) if is_post => json_response(StatusCode::CREATED, &object),
        Ok(object) => json_response(StatusCode::OK, &object),
        Err(err) => error_response(&err),
    }
}

// === reads ===

fn selectors(params: &HashMap<String, String>) -> Result<(LabelSelector, FieldSelector), ApiError> {
    let labels = LabelSelector::parse(params.get("labelSelector").map_or("", String::as_str))
        .map_err(|e| {
            ApiError::new(
                400,
                "BadRequest",
                format!("unable to parse requirement: {e}"),
            )
        })?;
    let fields = FieldSelector::parse(params.get("fieldSelector").map_or("", String::as_str))
        .map_err(|e| ApiError::new(400, "BadRequest", e))?;
    Ok((labels, fields))
}

fn parse_rv(text: &str) -> Result<u64, ApiError> {
    text.parse().map_err(|_| {
        ApiError::new(
            400,
            "BadRequest",
            format!("invalid resource version {text:?}"),
        )
    })
}

fn list(
    shared: &Shared,
    route: &Route,
    params: &HashMap<String, String>,
) -> Result<Value, ApiError> {
    let (labels, fields) = selectors(params)?;
    let rv = params.get("resourceVersion").filter(|v| !v.is_empty());
    let version_match = params.get("resourceVersionMatch").filter(|v| !v.is_empty());
    let limit = match params.get("limit").filter(|v| !v.is_empty()) {
        Some(l) => l
            .parse::<usize>()
            .map_err(|_| ApiError::new(400, "BadRequest", format!("invalid limit {l:?}")))?,
        None => 0,
    };
    let store = shared.store();
    let (at, after) = if let Some(token) = params.get("continue").filter(|v| !v.is_empty()) {
        let (at, after) = decode_continue(token)?;
        if at < store.oldest() {
            return Err(ApiError::new(
                410,
                "Expired",
                "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
            ));
        }
        (Some(at), Some(after))
    } else {
        match (rv.map(String::as_str), version_match.map(String::as_str)) {
            (None, Some(_)) => {
                return Err(ApiError::new(
                    422,
                    "Invalid",
                    "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided",
                ))
            }
            (None | Some("0"), None | Some("NotOlderThan")) => (None, None),
            (Some(rv), Some("Exact")) => (Some(parse_rv(rv)?), None),
            (Some(rv), None | Some("NotOlderThan")) => {
                let rv = parse_rv(rv)?;
                if rv > store.resource_version() {
                    return Err(too_large(rv));
                }
                (None, None)
            }
            (_, Some(other)) => {
                return Err(ApiError::new(
                    422,
                    "Invalid",
                    format!("resourceVersionMatch: Unsupported value: {other:?}: supported values: \"Exact\", \"NotOlderThan\""),
                ))
            }
        }
    };
    if at.is_some_and(|at| at > store.resource_version()) {
        return Err(too_large(at.unwrap_or_default()));
    }
    let (list_rv, objects) = store.list(route.kind, route.namespace.as_deref(), at)?;
    drop(store);
    let mut items: Vec<Value> = objects
        .into_iter()
        .filter(|o| labels.matches(&labels_of(o)) && fields.matches(o))
        .filter(|o| after.as_ref().is_none_or(|after| &object_key(o) > after))
        .collect();
    let mut metadata = json!({"resourceVersion": list_rv.to_string()});
    if limit > 0 && items.len() > limit {
        let remaining = items.len() - limit;
        items.truncate(limit);
        let last = items.last().map(object_key).unwrap_or_default();
        metadata["continue"] = json!(encode_continue(list_rv, &last));
        metadata["remainingItemCount"] = json!(remaining);
    }
    Ok(json!({
        "kind": format!("{}List", route.kind.name()),
        "apiVersion": route.kind.api_version(),
        "metadata": metadata,
        "items": items,
    }))
}

fn too_large(rv: u64) -> ApiError {
    ApiError::new(
        504,
        "Timeout",
        format!("Too large resource version: {rv}, current: (the double does not wait)"),
    )
}

fn object_key(object: &Value) -> String {
    format!(
        "{}/{}",
        object["metadata"]["namespace"].as_str().unwrap_or(""),
        object["metadata"]["name"].as_str().unwrap_or("")
    )
}

fn encode_continue(rv: u64, last: &str) -> String {
    let raw = format!("{rv}:{last}");
    raw.bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode_continue(token: &str) -> Result<(u64, String), ApiError> {
    let bad = || {
        ApiError::new(
            400,
            "BadRequest",
            "continue key is not valid: incorrect encoded start resourceVersion",
        )
    };
    let bytes: Option<Vec<u8>> = (0..token.len())
        .step_by(2)
        .map(|i| {
            token
                .get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect();
    let raw = String::from_utf8(bytes.ok_or_else(bad)?).map_err(|_| bad())?;
    let (rv, last) = raw.split_once(':').ok_or_else(bad)?;
    Ok((rv.parse().map_err(|_| bad())?, last.to_owned()))
}

// === watch ===

/// What one watch selects and how it renders events.
struct WatchSpec {
    kind: Kind,
    namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
    bookmarks: bool,
}

impl WatchSpec {
    fn selects(&self, object: &Value) -> bool {
        let in_namespace = match &self.namespace {
            None => true,
            Some(ns) => object["metadata"]["namespace"].as_str() == Some(ns),
        };
        in_namespace && self.labels.matches(&labels_of(object)) && self.fields.matches(object)
    }

    /// The watch event for a stored change, as the watch cache's filter renders it: an
    /// object entering the selection is `ADDED`, leaving it is `DELETED`.
    fn render(&self, event: &Event) -> Option<Value> {
        if event.kind != self.kind {
            return None;
        }
        let before = event.prev.as_ref().is_some_and(|p| self.selects(p));
        let after = !event.deleted && self.selects(&event.object);
        let kind = match (before, after) {
            (false, true) => "ADDED",
            (true, true) => "MODIFIED",
            (true, false) => "DELETED",
            (false, false) => return None,
        };
        let object = if kind == "DELETED" && !event.deleted {
            let mut old = event.prev.clone().unwrap_or_default();
            old["metadata"]["resourceVersion"] = json!(event.rv.to_string());
            old
        } else {
            event.object.clone()
        };
        Some(json!({"type": kind, "object": object}))
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Value {
        let mut metadata = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        json!({"type": "BOOKMARK", "object": {
            "kind": self.kind.name(), "apiVersion": self.kind.api_version(), "metadata": metadata}})
    }
}

type Frames = mpsc::Sender<Result<Frame<Bytes>, std::io::Error>>;

fn watch(shared: &Arc<Shared>, route: &Route, params: &HashMap<String, String>) -> Response<Body> {
    let (labels, fields) = match selectors(params) {
        Ok(s) => s,
        Err(err) => return error_response(&err),
    };
    let flag = |name: &str| params.get(name).is_some_and(|v| v == "true" || v == "1");
    let spec = WatchSpec {
        kind: route.kind,
        namespace: route.namespace.clone(),
        labels,
        fields,
        bookmarks: flag("allowWatchBookmarks"),
    };
    let send_initial = flag("sendInitialEvents");
    let version_match = params.get("resourceVersionMatch").filter(|v| !v.is_empty());
    let rv = params
        .get("resourceVersion")
        .filter(|v| !v.is_empty() && *v != "0");
    if send_initial {
        if version_match.map(String::as_str) != Some("NotOlderThan") {
            return error_response(&ApiError::new(422, "Invalid", "resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan"));
        }
        if !spec.bookmarks {
            return error_response(&ApiError::new(422, "Invalid", "allowWatchBookmarks: Forbidden: sendInitialEvents requires allowWatchBookmarks=true"));
        }
    } else if version_match.is_some() {
        return error_response(&ApiError::new(422, "Invalid", "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided"));
    }
    let timeout = params
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .filter(|t| *t > 0)
        .map_or_else(
            || Duration::from_secs(1800 + fastrand::u64(0..1800)),
            Duration::from_secs,
        );
    let timeout = shared
        .max_watch_timeout
        .map_or(timeout, |max| timeout.min(max));

    // Start: replay the current state (no resourceVersion, "0", or sendInitialEvents), or
    // resume after the given version.
    let mut initial = Vec::new();
    let cursor = {
        let store = shared.store();
        match rv {
            Some(rv) if !send_initial => match parse_rv(rv) {
                Ok(rv) => rv,
                Err(err) => return error_response(&err),
            },
            _ => {
                let (now, objects) = match store.list(spec.kind, spec.namespace.as_deref(), None) {
                    Ok(list) => list,
                    Err(err) => return error_response(&err),
                };
                for object in objects.into_iter().filter(|o| spec.selects(o)) {
                    initial.push(json!({"type": "ADDED", "object": object}));
                }
                if send_initial {
                    initial.push(spec.bookmark(now, true));
                }
                now
            }
        }
    };
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(run_watch(
        shared.clone(),
        spec,
        initial,
        cursor,
        timeout,
        tx,
    ));
    let body = StreamBody::new(ReceiverStream::new(rx)).boxed();
    let mut response = Response::new(body);
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

async fn send(tx: &Frames, event: &Value) -> bool {
    let mut line = serde_json::to_vec(event).unwrap_or_default();
    line.push(b'\n');
    tx.send(Ok(Frame::data(Bytes::from(line)))).await.is_ok()
}

async fn run_watch(
    shared: Arc<Shared>,
    spec: WatchSpec,
    initial: Vec<Value>,
    mut cursor: u64,
    timeout: Duration,
    tx: Frames,
) {
    let mut changed = shared.changed.subscribe();
    let mut drops = shared.drops.subscribe();
    drops.borrow_and_update();
    let mut paused = shared.paused.subscribe();
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut ticks = tokio::time::interval(shared.bookmark_interval);
    ticks.tick().await;
    let mut bookmark_due = false;
    let mut bookmarked = cursor;
    for event in &initial {
        if !send(&tx, event).await {
            return;
        }
    }
    loop {
        let is_paused = *paused.borrow_and_update();
        changed.borrow_and_update();
        let pending = {
            let store = shared.store();
            store
                .events_after(cursor)
                .map(|events| (events, store.resource_version()))
        };
        match pending {
            Err(err) => {
                // Too old: one ERROR event with the 410 Status, then the end of the stream.
                let _ = send(&tx, &json!({"type": "ERROR", "object": err.status()})).await;
                return;
            }
            Ok((events, now)) if !is_paused => {
                for event in &events {
                    if let Some(rendered) = spec.render(event) {
                        if !send(&tx, &rendered).await {
                            return;
                        }
                    }
                }
                cursor = now;
                if bookmark_due && spec.bookmarks && cursor > bookmarked {
                    if !send(&tx, &spec.bookmark(cursor, false)).await {
                        return;
                    }
                    bookmarked = cursor;
                }
                bookmark_due = false;
            }
            Ok(_) => {}
        }
        tokio::select! {
            _ = changed.changed() => {}
            _ = paused.changed() => {}
            _ = ticks.tick() => bookmark_due = true,
            _ = drops.changed() => {
                let _ = tx.send(Err(std::io::Error::other("watch dropped by the double"))).await;
                return;
            }
            () = &mut deadline => return,
            () = tx.closed() => return,
        }
    }
}

// === writes ===

/// Decodes a request body into the k8s-openapi type of `kind` and back, so that stored
/// objects have exactly the shape k8s-openapi gives them.
async fn read_object(kind: Kind, req: Request<Incoming>) -> Result<Value, ApiError> {
    let bytes = req
        .into_body()
        .collect()
        .await
        .map_err(|e| ApiError::new(400, "BadRequest", format!("reading body: {e}")))?
        .to_bytes();
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::new(400, "BadRequest", format!("decoding body: {e}")))?;
    normalize(kind, value)
}

fn normalize(kind: Kind, value: Value) -> Result<Value, ApiError> {
    let bad = |e: serde_json::Error| {
        ApiError::new(400, "BadRequest", format!("decoding {}: {e}", kind.name()))
    };
    let normalized = match kind {
        Kind::EndpointSlice => {
            let slice: EndpointSlice = serde_json::from_value(value).map_err(bad)?;
            if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6" | "FQDN") {
                return Err(ApiError::new(
                    422,
                    "Invalid",
                    format!(
                        "EndpointSlice.discovery.k8s.io is invalid: addressType: Unsupported value: {:?}: supported values: \"FQDN\", \"IPv4\", \"IPv6\"",
                        slice.address_type
                    ),
                ));
            }
            serde_json::to_value(&slice)
        }
        Kind::Service => {
            let service: Service = serde_json::from_value(value).map_err(bad)?;
            serde_json::to_value(&service)
        }
    };
    normalized.map_err(|e| ApiError::new(500, "InternalError", e.to_string()))
}

fn check_namespace(object: &Value, namespace: &str) -> Result<(), ApiError> {
    match object["metadata"]["namespace"].as_str() {
        Some(ns) if !ns.is_empty() && ns != namespace => Err(ApiError::new(
            400,
            "BadRequest",
            "the namespace of the provided object does not match the namespace sent on the request",
        )),
        _ => Ok(()),
    }
}

fn create(
    shared: &Shared,
    kind: Kind,
    namespace: &str,
    mut object: Value,
) -> Result<Value, ApiError> {
    check_namespace(&object, namespace)?;
    if name_of(&object).is_empty() {
        match object["metadata"]["generateName"].as_str() {
            Some(prefix) if !prefix.is_empty() => {
                let suffix: String = (0..5).map(|_| fastrand::lowercase()).collect();
                object["metadata"]["name"] = json!(format!("{prefix}{suffix}"));
            }
            _ => {
                return Err(ApiError::new(
                    422,
                    "Invalid",
                    format!("{} is invalid: metadata.name: Required value: name or generateName is required", kind.name()),
                ))
            }
        }
    }
    let result = shared.store().create(kind, namespace, object);
    shared.notify();
    result
}

fn replace(
    shared: &Shared,
    kind: Kind,
    namespace: &str,
    name: &str,
    object: Value,
) -> Result<Value, ApiError> {
    check_namespace(&object, namespace)?;
    if name_of(&object) != name {
        return Err(ApiError::new(
            400,
            "BadRequest",
            format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                name_of(&object)
            ),
        ));
    }
    let result = shared.store().replace(kind, namespace, object);
    shared.notify();
    result
}

/// `PATCH` with `application/merge-patch+json` (RFC 7386).
async fn patch(
    shared: &Shared,
    kind: Kind,
    namespace: &str,
    name: &str,
    req: Request<Incoming>,
) -> Result<Value, ApiError> {
    let content_type = req
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    if !content_type.starts_with("application/merge-patch+json") {
        return Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            format!("the double supports only application/merge-patch+json, not {content_type:?}"),
        ));
    }
    let bytes = req
        .into_body()
        .collect()
        .await
        .map_err(|e| ApiError::new(400, "BadRequest", format!("reading body: {e}")))?
        .to_bytes();
    let patch: Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::new(400, "BadRequest", format!("decoding patch: {e}")))?;
    let mut object = shared.store().get(kind, namespace, name)?;
    if patch["metadata"]["resourceVersion"].is_null() {
        if let Some(meta) = object["metadata"].as_object_mut() {
            meta.remove("resourceVersion");
        }
    }
    merge_patch(&mut object, &patch);
    let object = normalize(kind, object)?;
    replace(shared, kind, namespace, name, object)
}

fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(fields) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let map = target.as_object_mut().expect("made an object above");
    for (key, value) in fields {
        if value.is_null() {
            map.remove(key);
        } else {
            merge_patch(map.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

// === responses ===

fn full(bytes: Bytes) -> Body {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    let mut response = Response::new(full(Bytes::from(
        serde_json::to_vec(value).unwrap_or_default(),
    )));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

fn error_response(err: &ApiError) -> Response<Body> {
    let status = StatusCode::from_u16(err.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(status, &err.status())
}

/// Decodes `application/x-www-form-urlencoded` query pairs.
pub(crate) fn parse_query(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_decode() {
        let q = parse_query(
            "&watch=true&labelSelector=kubernetes.io%2Fservice-name+in+%28a%2Cb%29&x=%zz",
        );
        assert_eq!(q["watch"], "true");
        assert_eq!(q["labelSelector"], "kubernetes.io/service-name in (a,b)");
        assert_eq!(q["x"], "%zz");
        assert_eq!(percent_decode("%2"), "%2");
    }

    #[test]
    fn continue_tokens_round_trip() {
        let token = encode_continue(42, "ns/web-1");
        assert_eq!(
            decode_continue(&token).unwrap(),
            (42, "ns/web-1".to_owned())
        );
        assert_eq!(decode_continue("zz").unwrap_err().code, 400);
    }

    #[test]
    fn routes() {
        let r =
            Route::parse("/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices/web-1").unwrap();
        assert_eq!(
            (r.kind, r.namespace.as_deref(), r.name.as_deref()),
            (Kind::EndpointSlice, Some("shop"), Some("web-1"))
        );
        assert_eq!(r.verb(&Method::PUT, ""), "update");
        let r = Route::parse("/apis/discovery.k8s.io/v1/endpointslices").unwrap();
        assert_eq!(r.verb(&Method::GET, "watch=1"), "watch");
        assert_eq!(r.verb(&Method::GET, "limit=500"), "list");
        assert!(Route::parse("/api/v1/namespaces/shop/services").is_some());
        assert!(Route::parse("/api/v1/namespaces/shop/pods").is_none());
    }

    #[test]
    fn merge_patches() {
        let mut target = json!({"a": {"b": 1, "c": 2}, "d": [1]});
        merge_patch(&mut target, &json!({"a": {"b": null, "e": 3}, "d": [2]}));
        assert_eq!(target, json!({"a": {"c": 2, "e": 3}, "d": [2]}));
    }
}
