//! `GET /api/history?window=15m`: the per-second samples behind the dashboard's charts and
//! the event timeline.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The history over a window.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, ToSchema)]
pub struct HistoryDocument {
    /// Seconds between samples (1).
    pub interval_seconds: u64,
    /// One point per sample, oldest first; each covers the time since the previous sample.
    pub samples: Vec<HistoryPoint>,
    /// Registry state and upstream tier changes, oldest first (the last 200).
    pub events: Vec<Event>,
}

/// One sample of the history.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, ToSchema)]
pub struct HistoryPoint {
    /// When it was taken, seconds since the Unix epoch.
    pub at: f64,
    /// Each route's figures since the previous sample, by route name.
    pub routes: BTreeMap<String, RoutePoint>,
    /// Each upstream's endpoints, by upstream name.
    pub upstreams: BTreeMap<String, UpstreamPoint>,
    /// Each registry's state and updates since the previous sample, by registry name.
    #[serde(default)]
    pub registries: BTreeMap<String, RegistryPoint>,
}

/// A route's figures between two samples.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, ToSchema)]
pub struct RoutePoint {
    /// Requests answered per second.
    pub rps: f64,
    /// 99th percentile time to the response head, ms (`null` without requests).
    pub p99_ms: Option<f64>,
    /// Share of 5xx answers, 0..1 (`null` without requests).
    pub error_ratio: Option<f64>,
}

/// An upstream at one sample.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, ToSchema)]
pub struct UpstreamPoint {
    /// Healthy endpoints.
    pub healthy: u64,
    /// All endpoints.
    pub endpoints: u64,
    /// The serving tier, `source.endpoint` priority (`null`: none).
    pub tier: Option<String>,
}

/// A registry at one sample.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, ToSchema)]
pub struct RegistryPoint {
    /// `syncing`, `ok`, `degraded` or `down`.
    pub state: String,
    /// Updates received from it since the previous sample.
    pub updates: u64,
}

/// Something that changed between two samples.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct Event {
    /// Seconds since the Unix epoch (the sample that saw it).
    pub at: f64,
    /// `registry` or `upstream`.
    pub kind: String,
    /// The registry's or upstream's name.
    pub name: String,
    /// The state (registry) or serving tier (upstream) before; `null` when new or none.
    pub from: Option<String>,
    /// The state or serving tier after; `null` for an upstream with no serving tier.
    pub to: Option<String>,
}
