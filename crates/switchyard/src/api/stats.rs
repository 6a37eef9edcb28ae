//! `GET /api/stats?window=5m`: usage per route and consumer (routes with analytics),
//! written by `switchyard-policy` and checked against these types before it is answered.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Usage over a window.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, ToSchema)]
pub struct Stats {
    /// The window, as a duration (`5m`).
    pub window: String,
    /// The window, s (10 s to 1 h, default 5 min).
    pub window_seconds: u64,
    /// The resolution, s.
    pub slot_seconds: u64,
    /// Per route with requests in the window.
    pub routes: Vec<RouteUsage>,
    /// Per consumer over all routes.
    pub consumers: Vec<ConsumerUsage>,
}

/// A route's usage.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, ToSchema)]
pub struct RouteUsage {
    /// The route.
    pub route: String,
    /// Its usage.
    #[serde(flatten)]
    pub usage: Usage,
    /// Its usage per consumer.
    pub consumers: Vec<ConsumerUsage>,
}

/// A consumer's usage.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, ToSchema)]
pub struct ConsumerUsage {
    /// The consumer.
    pub consumer: String,
    /// Its usage.
    #[serde(flatten)]
    pub usage: Usage,
}

/// Counts over the window.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, ToSchema)]
pub struct Usage {
    /// Requests answered.
    pub requests: u64,
    /// Requests per second over the window.
    pub requests_per_second: f64,
    /// Answers per status class (`1xx` .. `5xx`).
    pub status: BTreeMap<String, u64>,
    /// Request body bytes.
    pub bytes_in: u64,
    /// Response body bytes.
    pub bytes_out: u64,
    /// Latency percentiles, ms.
    pub latency_ms: Latency,
}

/// Latency percentiles, ms (`null` without requests).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, ToSchema)]
pub struct Latency {
    /// Median.
    pub p50: Option<f64>,
    /// 95th percentile.
    pub p95: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
}
