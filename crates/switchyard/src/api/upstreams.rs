//! `GET /api/upstreams` and `GET /api/upstreams/{name}`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One upstream: its endpoints with their state, and its sources' sync status.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, ToSchema)]
pub struct Upstream {
    /// Its name in config.
    pub name: String,
    /// Its load balancer (`round_robin`, `least_request`...).
    pub balancer: String,
    /// The tier requests go to now (`null`: none serving).
    pub serving_tier: Option<Tier>,
    /// Whether panic mode is on (too few healthy endpoints: all are used).
    pub panic: bool,
    /// Every endpoint, all tiers.
    pub endpoints: Vec<Endpoint>,
    /// Every source (registry + service) feeding it.
    pub sources: Vec<Source>,
}

/// A priority tier.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, ToSchema)]
pub struct Tier {
    /// The source's `priority` from config.
    pub priority: u32,
    /// The endpoint's own priority from its registry.
    pub endpoint_priority: u32,
}

/// One endpoint of an upstream.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, ToSchema)]
pub struct Endpoint {
    /// `ip:port`.
    pub address: String,
    /// Its weight from the registry.
    pub weight: u32,
    /// Its weight after slow start and zone weighting.
    pub effective_weight: u32,
    /// The source's `priority`.
    pub priority: u32,
    /// The endpoint's own priority.
    pub endpoint_priority: u32,
    /// Healthy, all inputs together.
    pub healthy: bool,
    /// Whether requests go to it now.
    pub serving: bool,
    /// Whether its registry is failing (the last good set is kept).
    pub stale: bool,
    /// Where it came from.
    pub source: EndpointSource,
    /// Its zone (`null`: none).
    pub zone: Option<String>,
    /// Whether it is in the gateway's `[server] zone` (`null` without one).
    pub local: Option<bool>,
    /// Its labels from the registry.
    pub metadata: BTreeMap<String, String>,
    /// What is spoken to it: `http1`, `h2c` or `h2`.
    pub protocol: String,
    /// Its three health inputs.
    pub health: EndpointHealth,
    /// Requests in flight to it now.
    pub in_flight: u32,
}

/// The registry and service an endpoint came from.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, ToSchema)]
pub struct EndpointSource {
    /// The registry's name.
    pub registry: String,
    /// The service, as the registry names it.
    pub service: String,
}

/// An endpoint's health inputs.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, ToSchema)]
pub struct EndpointHealth {
    /// What the registry says.
    pub registry: bool,
    /// Active health checks (true without them).
    pub active: bool,
    /// Whether outlier detection ejected it.
    pub ejected: bool,
}

/// One source of an upstream.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, ToSchema)]
pub struct Source {
    /// The registry's name.
    pub registry: String,
    /// The registry's `type`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The service, as the source names it.
    pub service: String,
    /// Whether the first complete answer has arrived.
    pub synced: bool,
    /// Whether the set was loaded from the state directory (and no answer came yet).
    pub restored: bool,
    /// Whether a shrunken answer is held back by the shrink guard.
    pub guarded: bool,
    /// Whether the registry is failing now, so the set is the last good one.
    pub stale: bool,
    /// Endpoints in the set now.
    pub endpoints: u64,
    /// When the set last changed or was confirmed (RFC 3339).
    pub last_update: Option<String>,
    /// The last error, while the source is stale.
    pub last_error: Option<String>,
}
