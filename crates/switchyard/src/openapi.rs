//! `GET /api/openapi.json`: the admin API as an OpenAPI document, generated with `utoipa`
//! from the response types the handlers serialize (`history::RouteWindow`,
//! `history::Event`, [`RouteEntry`]) and from the path descriptions below. The functions
//! here are never called: they carry the `#[utoipa::path]` of each admin path, whose
//! handlers live in `admin.rs`.
//!
//! The integration test `admin_history` checks the document against what the gateway
//! answers, so that a field cannot drift between them.

#![allow(dead_code)]

use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

use crate::history::{Event, RouteWindow};

/// One entry of `GET /api/routes`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct RouteEntry {
    /// The route's name.
    pub name: String,
    /// The `host` it matches (`null`: any).
    pub host: Option<String>,
    /// The exact `path` it matches (only routes with `path` have the field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The `path_prefix` it matches (only routes with `path_prefix` have the field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// The methods it matches (empty: any).
    pub methods: Vec<String>,
    /// The names of the headers it matches.
    pub headers: Vec<String>,
    /// Its upstream.
    pub upstream: String,
    /// Whether the matched prefix is removed before forwarding.
    pub strip_prefix: bool,
    /// Time allowed for the upstream's response headers, ms.
    pub timeout_ms: u64,
    /// Extra attempts for idempotent requests.
    pub retries: u32,
    /// Figures over the window asked for (`?window=`, default 60 s).
    #[serde(flatten)]
    pub figures: RouteWindow,
}

/// `GET /api/history`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct HistoryDocument {
    /// Seconds between samples.
    pub interval_seconds: u64,
    /// `{"at", "routes": {NAME: {"rps", "p99_ms", "error_ratio"}}, "upstreams": {NAME:
    /// {"healthy", "endpoints", "tier"}}}` per sample, oldest first.
    #[schema(value_type = Vec<Object>)]
    pub samples: Vec<serde_json::Value>,
    /// Registry state and upstream tier changes, oldest first.
    pub events: Vec<Event>,
}

#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "`ok`")))]
fn healthz() {}

#[utoipa::path(get, path = "/readyz", responses(
    (status = 200, description = "Every source finished its first sync"),
    (status = 503, description = "JSON naming what is pending"),
))]
fn readyz() {}

#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text exposition")))]
fn metrics() {}

#[utoipa::path(get, path = "/api/upstreams", responses((status = 200, description = "Every upstream with its endpoints, their source, tier and health")))]
fn upstreams() {}

#[utoipa::path(get, path = "/api/upstreams/{name}", params(("name" = String, Path, description = "The upstream")), responses(
    (status = 200, description = "One upstream"),
    (status = 404, description = "No such upstream"),
))]
fn upstream() {}

#[utoipa::path(get, path = "/api/registries", responses((status = 200, description = "Every registry: type, state, services, last update and error")))]
fn registries() {}

#[utoipa::path(get, path = "/api/routes",
    params(("window" = Option<String>, Query, description = "Duration of the figures, 1s to 15m (default 60s)")),
    responses(
        (status = 200, description = "Every route, with its figures over the window", body = Vec<RouteEntry>),
        (status = 400, description = "A window that is not a duration"),
    ))]
fn routes() {}

#[utoipa::path(get, path = "/api/history",
    params(("window" = Option<String>, Query, description = "How far back, 1s to 15m (default 60s)")),
    responses((status = 200, description = "Per-second samples and the event timeline", body = HistoryDocument)))]
fn history() {}

#[utoipa::path(get, path = "/api/stats",
    params(("window" = Option<String>, Query, description = "Usage window, 10s to 1h (default 5m)")),
    responses((status = 200, description = "Usage per route and consumer (routes with analytics)")))]
fn stats() {}

#[utoipa::path(get, path = "/api/config_source", responses((status = 200, description = "The fleet config source's state")))]
fn config_source() {}

#[utoipa::path(post, path = "/api/reload", responses(
    (status = 200, description = "Reloaded"),
    (status = 422, description = "Refused: the errors, the running config stays"),
))]
fn reload() {}

#[utoipa::path(post, path = "/api/cache/purge", responses((status = 200, description = "Cached responses purged")))]
fn cache_purge() {}

#[utoipa::path(get, path = "/api/openapi.json", responses((status = 200, description = "This document")))]
fn openapi() {}

/// The admin API's OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Switchyard admin API",
        description = "The admin listener: health, metrics, the JSON API. With `admin.token` set, `/api/*` needs `Authorization: Bearer TOKEN`."
    ),
    paths(
        healthz,
        readyz,
        metrics,
        upstreams,
        upstream,
        registries,
        routes,
        history,
        stats,
        config_source,
        reload,
        cache_purge,
        openapi
    ),
    components(schemas(RouteEntry, RouteWindow, HistoryDocument, Event))
)]
pub struct AdminApi;

/// The document as JSON.
pub fn document() -> serde_json::Value {
    serde_json::to_value(AdminApi::openapi()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_every_admin_path_and_the_typed_schemas() {
        let doc = document();
        for path in [
            "/healthz",
            "/api/routes",
            "/api/history",
            "/api/openapi.json",
        ] {
            assert!(doc["paths"][path].is_object(), "{path} missing");
        }
        let figures = &doc["components"]["schemas"]["RouteWindow"]["properties"];
        for field in [
            "requests_per_second",
            "p50_ms",
            "p90_ms",
            "p99_ms",
            "error_ratio",
        ] {
            assert!(figures[field].is_object(), "{field} missing: {figures}");
        }
    }
}
