//! `GET /api/routes?window=60s`: every route with its figures over a window, computed by
//! the server from its history (`history.rs`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One entry of `GET /api/routes`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, ToSchema)]
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

/// A route's figures over a window.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct RouteWindow {
    /// The window the figures cover, s (shorter than asked while the process is younger).
    pub window_seconds: f64,
    /// Requests answered per second.
    pub requests_per_second: f64,
    /// Median time to the response head, ms (`null` without requests).
    pub p50_ms: Option<f64>,
    /// 90th percentile, ms.
    pub p90_ms: Option<f64>,
    /// 99th percentile, ms.
    pub p99_ms: Option<f64>,
    /// Share of 5xx answers, 0..1 (`null` without requests).
    pub error_ratio: Option<f64>,
}
