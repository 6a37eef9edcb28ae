//! The admin listener: health, readiness, metrics, the JSON API and the dashboard
//! (docs/admin-api.md). It runs on its own port; the data plane never serves these paths.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use switchyard_proxy::access_log::rfc3339;
use switchyard_proxy::router::PathMatch;
use tokio::net::TcpListener;

use crate::app::App;

type AdminResponse = Response<Full<Bytes>>;

/// Serves the admin API on `listener` until the process ends.
pub async fn serve(listener: TcpListener, app: Arc<App>) {
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let app = app.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let app = app.clone();
                async move { Ok::<_, Infallible>(handle(&app, request).await) }
            });
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(app: &App, request: Request<Incoming>) -> AdminResponse {
    let path = request.uri().path().to_owned();
    let needs_token = path == "/" || path.starts_with("/api/");
    if needs_token {
        let token = app.with_current(|c| c.config.admin.token.clone());
        if let Some(token) = token {
            let mut given = request
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("")
                .to_owned();
            // The dashboard page (only) also takes `?token=`, so a browser can open it;
            // without a valid one it answers a login form.
            if path == "/" && given.is_empty() {
                given = crate::dashboard::query_token(request.uri().query()).unwrap_or_default();
            }
            if !constant_time_eq(given.as_bytes(), token.as_bytes()) {
                if path == "/" {
                    return crate::dashboard::login_page(!given.is_empty());
                }
                let mut response = json_response(
                    StatusCode::UNAUTHORIZED,
                    &json!({"error": "admin token required"}),
                );
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    http::HeaderValue::from_static("Bearer"),
                );
                return response;
            }
        }
    }
    match (request.method(), path.as_str()) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") => readyz(app),
        (&Method::GET, "/metrics") => crate::metrics_page::response(app, request.headers()),
        (&Method::GET, "/api/upstreams") => json_response(StatusCode::OK, &upstreams(app)),
        (&Method::GET, "/api/registries") => json_response(StatusCode::OK, &registries(app)),
        (&Method::GET, "/api/routes") => match window(request.uri().query()) {
            Ok(window) => json_response(StatusCode::OK, &routes_over(app, window)),
            Err(error) => json_response(StatusCode::BAD_REQUEST, &json!({ "error": error })),
        },
        (&Method::GET, "/api/openapi.json") => {
            json_response(StatusCode::OK, &crate::openapi::document())
        }
        (&Method::GET, "/api/history") => match window(request.uri().query()) {
            Ok(window) => json_response(StatusCode::OK, &history(app, window)),
            Err(error) => json_response(StatusCode::BAD_REQUEST, &json!({ "error": error })),
        },
        (&Method::GET, "/api/config_source") => {
            json_response(StatusCode::OK, &app.config_source.to_json())
        }
        (&Method::GET, "/api/stats") => {
            let (status, body) = crate::policy::stats(app.hub(), request.uri().query());
            json_response(status, &body)
        }
        (&Method::POST, "/api/cache/purge") => {
            let (status, body) = crate::policy::purge(app.hub(), request.uri().query());
            json_response(status, &body)
        }
        (&Method::POST, "/api/reload") => match app.reload().await {
            Ok(()) => json_response(StatusCode::OK, &json!({"status": "reloaded"})),
            Err(issues) => json_response(
                StatusCode::UNPROCESSABLE_ENTITY,
                &json!({"status": "refused", "errors": issues.iter().map(ToString::to_string).collect::<Vec<_>>()}),
            ),
        },
        (&Method::GET, "/") => crate::dashboard::page(),
        (&Method::GET, p) if p.starts_with("/api/upstreams/") => {
            match upstream(app, &p["/api/upstreams/".len()..]) {
                Some(body) => json_response(StatusCode::OK, &body),
                None => json_response(StatusCode::NOT_FOUND, &json!({"error": "no such upstream"})),
            }
        }
        (
            _,
            "/healthz" | "/readyz" | "/metrics" | "/api/upstreams" | "/api/registries"
            | "/api/routes" | "/api/history" | "/api/openapi.json" | "/api/config_source"
            | "/api/reload" | "/api/stats" | "/api/cache/purge" | "/",
        ) => json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({"error": "method not allowed"}),
        ),
        (_, p) if p.starts_with("/api/upstreams/") => json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({"error": "method not allowed"}),
        ),
        _ => json_response(StatusCode::NOT_FOUND, &json!({"error": "not found"})),
    }
}

/// Compares without leaking, through timing, how much of a secret matched.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn text(status: StatusCode, body: &'static str) -> AdminResponse {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn json_response(status: StatusCode, value: &Value) -> AdminResponse {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

fn readyz(app: &App) -> AdminResponse {
    let table = app.proxy.table();
    let pending = table.cache().pending();
    let grace = app.with_current(|c| c.config.server.startup_grace);
    if pending.is_empty() {
        text(StatusCode::OK, "ready\n")
    } else if app.started.elapsed() >= grace {
        json_response(
            StatusCode::OK,
            &json!({"status": "ready", "startup_grace_expired": true, "pending": pending}),
        )
    } else {
        json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"status": "starting", "pending": pending}),
        )
    }
}

/// `GET /api/upstreams`: every upstream, as [`upstream_json`] describes it.
pub fn upstreams(app: &App) -> Value {
    let table = app.proxy.table();
    let zone = app.with_current(|c| c.config.server.zone.clone());
    Value::Array(
        table
            .cache()
            .iter()
            .map(|u| upstream_json(u, &table, zone.as_deref()))
            .collect(),
    )
}

/// `GET /api/upstreams/<name>`: one upstream, or `None` when no upstream has that name.
/// At scale (100,000 endpoints) the whole list is megabytes; this answers in proportion to
/// the one upstream asked about.
pub fn upstream(app: &App, name: &str) -> Option<Value> {
    let table = app.proxy.table();
    let zone = app.with_current(|c| c.config.server.zone.clone());
    table
        .cache()
        .get(name)
        .map(|u| upstream_json(u, &table, zone.as_deref()))
}

/// One upstream: its endpoints with their state, and its sources' sync status. `local`
/// says whether an endpoint is in the gateway's `[server] zone` (null without one).
fn upstream_json(
    upstream: &switchyard_upstream::Upstream,
    table: &switchyard_proxy::Table,
    zone: Option<&str>,
) -> Value {
    let snapshot = upstream.snapshot();
    let endpoints: Vec<Value> = snapshot
        .endpoints
        .iter()
        .map(|e| {
            json!({
                "address": e.address().to_string(),
                "weight": e.endpoint.weight,
                "effective_weight": e.weight,
                "priority": e.tier.source,
                "endpoint_priority": e.tier.endpoint,
                "healthy": e.healthy,
                "serving": snapshot.is_serving(e),
                "stale": e.stale,
                "source": {"registry": e.source.registry, "service": e.source.service},
                "zone": e.endpoint.zone(),
                "local": zone.map(|zone| switchyard_proxy::balance::zone_aware::is_local(e, zone)),
                "metadata": e.endpoint.metadata(),
                "protocol": table.endpoint_protocol(upstream.name(), e.endpoint.metadata()),
                "health": {
                    "registry": e.endpoint.healthy,
                    "active": e.stats.active_healthy(),
                    "ejected": e.stats.is_ejected(),
                },
                "in_flight": e.stats.in_flight(),
            })
        })
        .collect();
    json!({
        "name": upstream.name(),
        "balancer": upstream.balancer(),
        "serving_tier": snapshot.serving_tier.map(|t| json!({"priority": t.source, "endpoint_priority": t.endpoint})),
        "panic": snapshot.panic,
        "endpoints": endpoints,
        "sources": upstream.sources().iter().map(|s| json!({
            "registry": s.registry,
            "type": s.registry_kind,
            "service": s.service,
            "synced": s.synced,
            "restored": s.restored,
            "guarded": s.guarded,
            "stale": s.stale,
            "endpoints": s.endpoints,
            "last_update": s.last_update.map(rfc3339),
            "last_error": s.last_error,
        })).collect::<Vec<_>>(),
    })
}

/// `GET /api/registries`.
pub fn registries(app: &App) -> Value {
    let table = app.proxy.table();
    let list: Vec<Value> = app.with_current(|current| {
        current
            .registries
            .iter()
            .map(|(name, built)| {
                let status = table.cache().registry_status(name, built.kind);
                json!({
                    "name": name,
                    "type": built.kind,
                    "state": status.state.as_str(),
                    "services": status.services,
                    "endpoints": status.endpoints,
                    "last_update": status.last_update.map(rfc3339),
                    "last_error": status.last_error,
                    "updates": built.metrics.updates(),
                    "errors": built.metrics.errors(),
                })
            })
            .collect()
    });
    Value::Array(list)
}

/// The `window` of a query (`?window=60s`, humantime), default 60 s, 1 s to 15 min.
fn window(query: Option<&str>) -> Result<Duration, String> {
    let given = query
        .unwrap_or("")
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == "window")
        .map(|(_, value)| value);
    match given {
        None => Ok(Duration::from_secs(60)),
        Some(text) => humantime::parse_duration(text)
            .map(|w| w.clamp(Duration::from_secs(1), Duration::from_secs(900)))
            .map_err(|e| format!("window: {e} (e.g. window=60s, at most 15m)")),
    }
}

/// `GET /api/routes?window=60s`: every route, with its requests per second, p50/p90/p99
/// (ms) and 5xx ratio over the window, computed from the history and the live counters.
/// Written through [`RouteEntry`](crate::openapi::RouteEntry), the type `switchyard status`
/// reads it with and the OpenAPI document describes.
pub fn routes_over(app: &App, window: Duration) -> Value {
    let table = app.proxy.table();
    let now = crate::history::unix_now();
    let list: Vec<crate::openapi::RouteEntry> = table
        .route_metrics()
        .map(|(r, metrics)| {
            let (path, path_prefix) = match &r.matcher.path {
                PathMatch::Exact(p) => (Some(p.clone()), None),
                PathMatch::Prefix(p) => (None, Some(p.clone())),
            };
            crate::openapi::RouteEntry {
                name: r.name.to_string(),
                host: r.matcher.host.clone(),
                path,
                path_prefix,
                methods: r
                    .matcher
                    .methods
                    .iter()
                    .map(|m| m.as_str().to_owned())
                    .collect(),
                headers: r
                    .matcher
                    .headers
                    .iter()
                    .map(|(n, _)| n.as_str().to_owned())
                    .collect(),
                upstream: r.upstream.to_string(),
                strip_prefix: r.strip_prefix,
                timeout_ms: r.timeout.as_millis() as u64,
                retries: r.retries,
                figures: app
                    .history
                    .route_window(&r.name, &metrics.sample(), now, window),
            }
        })
        .collect();
    serde_json::to_value(list).unwrap_or_default()
}

/// `GET /api/history?window=15m`: per sample (one a second) each route's requests per
/// second, p99 (ms) and 5xx ratio since the previous sample, each upstream's healthy
/// endpoints; and the event timeline (registry states, upstream tiers).
pub fn history(app: &App, window: Duration) -> Value {
    let samples = app
        .history
        .samples_since(crate::history::unix_now() - window.as_secs_f64());
    let points: Vec<Value> = samples
        .windows(2)
        .map(|pair| {
            let (before, after) = (&pair[0], &pair[1]);
            let seconds = after.at - before.at;
            let routes: serde_json::Map<String, Value> = after
                .routes
                .iter()
                .map(|(name, now)| {
                    let then = before
                        .routes
                        .iter()
                        .find(|(n, _)| n == name)
                        .map(|(_, s)| *s)
                        .unwrap_or_default();
                    let f = crate::history::figures(&then, now, seconds);
                    (
                        name.to_string(),
                        json!({"rps": f.requests_per_second, "p99_ms": f.p99_ms, "error_ratio": f.error_ratio}),
                    )
                })
                .collect();
            let upstreams: serde_json::Map<String, Value> = after
                .upstreams
                .iter()
                .map(|(name, healthy, total, tier)| {
                    (name.clone(), json!({"healthy": healthy, "endpoints": total, "tier": tier}))
                })
                .collect();
            json!({"at": after.at, "routes": routes, "upstreams": upstreams})
        })
        .collect();
    json!({
        "interval_seconds": crate::history::INTERVAL.as_secs(),
        "samples": points,
        "events": app.history.events(),
    })
}

/// Whether an admin listener address is reachable only from this host.
pub fn is_loopback(address: SocketAddr) -> bool {
    address.ip().is_loopback()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_compare() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
