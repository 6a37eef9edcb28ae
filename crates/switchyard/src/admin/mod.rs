//! The admin listener: health, readiness, metrics, the JSON API and the dashboard
//! (docs/admin-api.md). It runs on its own port; the data plane never serves these paths.
//!
//! An `axum` [`Router`] with one handler per endpoint (`handlers.rs`); each JSON answer is
//! one of the types of [`crate::api`], built by `documents.rs`, and each handler carries the
//! `#[utoipa::path]` that the OpenAPI document (`openapi.rs`) is generated from. With
//! `admin.token` set, the [`require_token`] layer guards `/` and `/api/*`. A wrong method answers 405 and an
//! unknown path 404, both with an [`ErrorBody`].

mod documents;
mod handlers;
pub mod openapi;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use http::{header, StatusCode};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use serde::Serialize;
use tokio::net::TcpListener;

use crate::api::ErrorBody;
use crate::app::App;

pub use documents::{history_over, registry_list, routes_over, upstream_list, upstream_named};
use handlers::{
    cache_purge, config_source, dashboard, healthz, history, metrics, openapi, readyz, registries,
    reload, routes, stats, upstream, upstreams,
};

/// The state every handler gets.
type Shared = State<Arc<App>>;

/// Serves the admin API on `listener` until the process ends.
pub async fn serve(listener: TcpListener, app: Arc<App>) {
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let router = router(app);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let service = TowerToHyperService::new(router.clone());
        let builder = builder.clone();
        tokio::spawn(async move {
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The admin API: every endpoint, behind the token check.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/", get(dashboard))
        .route("/api/upstreams", get(upstreams))
        .route("/api/upstreams/{name}", get(upstream))
        .route("/api/registries", get(registries))
        .route("/api/routes", get(routes))
        .route("/api/history", get(history))
        .route("/api/config_source", get(config_source))
        .route("/api/stats", get(stats))
        .route("/api/cache/purge", post(cache_purge))
        .route("/api/reload", post(reload))
        .route("/api/openapi.json", get(openapi))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(app.clone(), require_token))
        .with_state(app)
}

/// With `admin.token` set, `/` and `/api/*` need `Authorization: Bearer TOKEN` (compared
/// in constant time). The dashboard page (only) also takes `?token=`, so that a browser
/// can open it; without a valid one it answers a login form. The API answers 401 with
/// `WWW-Authenticate: Bearer`.
async fn require_token(State(app): Shared, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if path != "/" && !path.starts_with("/api/") {
        return next.run(request).await;
    }
    let Some(token) = app.with_current(|c| c.config.admin.token.clone()) else {
        return next.run(request).await;
    };
    let mut given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .to_owned();
    let page = path == "/";
    if page && given.is_empty() {
        given = crate::dashboard::query_token(request.uri().query()).unwrap_or_default();
    }
    if constant_time_eq(given.as_bytes(), token.as_bytes()) {
        return next.run(request).await;
    }
    if page {
        return body(crate::dashboard::login_page(!given.is_empty()));
    }
    let mut response = error(StatusCode::UNAUTHORIZED, "admin token required");
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        http::HeaderValue::from_static("Bearer"),
    );
    response
}

/// Compares without leaking, through timing, how much of a secret matched.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether an admin listener address is reachable only from this host.
pub fn is_loopback(address: SocketAddr) -> bool {
    address.ip().is_loopback()
}

// === answers ===

pub(crate) fn body(response: http::Response<Full<Bytes>>) -> Response {
    response.map(Body::new)
}

pub(crate) fn text(status: StatusCode, text: &'static str) -> Response {
    let mut response = Response::new(Body::from(text));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// `value` as an `application/json` answer.
pub(crate) fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(bytes) => {
            let mut response = Response::new(Body::from(bytes));
            *response.status_mut() = status;
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("encoding: {e}")),
    }
}

pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    json(status, &ErrorBody::new(message))
}

/// A JSON document written by another crate, answered only if it has the shape of `T`.
pub(crate) fn checked<T: Serialize + serde::de::DeserializeOwned>(
    status: StatusCode,
    value: serde_json::Value,
) -> Response {
    if !status.is_success() {
        return match serde_json::from_value::<ErrorBody>(value) {
            Ok(body) => json(status, &body),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        };
    }
    match serde_json::from_value::<T>(value) {
        Ok(typed) => json(status, &typed),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{}: {e}", std::any::type_name::<T>()),
        ),
    }
}

pub(crate) async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "not found")
}

pub(crate) async fn method_not_allowed() -> Response {
    error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
}

/// The `window` of a query (`?window=60s`, humantime), default 60 s, 1 s to 15 min.
pub(crate) fn window(query: Option<&str>) -> Result<Duration, String> {
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

    #[test]
    fn windows() {
        assert_eq!(window(None), Ok(Duration::from_secs(60)));
        assert_eq!(window(Some("window=15m")), Ok(Duration::from_secs(900)));
        assert_eq!(window(Some("a=b&window=1h")), Ok(Duration::from_secs(900)));
        assert_eq!(window(Some("window=0s")), Ok(Duration::from_secs(1)));
        assert!(window(Some("window=soon")).unwrap_err().contains("window"));
    }
}
