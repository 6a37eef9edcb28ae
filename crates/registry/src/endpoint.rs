//! One instance of a service as a registry reports it.

use std::collections::BTreeMap;
use std::net::SocketAddr;

/// Free-form labels a registry attaches to an endpoint (Consul `Service.Meta` and tags,
/// etcd `metadata`, file_sd labels). Ordered so that snapshots compare and print stably.
pub type Metadata = BTreeMap<String, String>;

/// One instance of a service.
///
/// Two endpoints of the same source are the same instance when their `address` is equal:
/// updates add, replace and remove endpoints by address.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Endpoint {
    /// Where to connect.
    pub address: SocketAddr,
    /// Relative share of traffic within its tier. Default 1. Weight 0 is legal (DNS SRV)
    /// and means "only a very small share when others exist" (RFC 2782).
    pub weight: u32,
    /// Priority within its source: lower is preferred (DNS SRV priority, etcd `priority`).
    /// Default 0. The source's own `priority` in config ranks above this one.
    pub priority: u32,
    /// Locality, when the registry knows it (Kubernetes zone, etcd `metadata.zone`).
    #[serde(default)]
    pub zone: Option<String>,
    /// Labels kept for the admin API.
    #[serde(default)]
    pub metadata: Metadata,
    /// Health as the registry reports it. Registries that only report healthy instances
    /// (Consul `?passing`, ready EndpointSlice endpoints) always say `true`.
    pub healthy: bool,
}

impl Endpoint {
    /// A healthy endpoint with weight 1, priority 0, no zone and no metadata.
    pub fn new(address: SocketAddr) -> Self {
        Endpoint {
            address,
            weight: 1,
            priority: 0,
            zone: None,
            metadata: Metadata::new(),
            healthy: true,
        }
    }

    /// Sets the weight.
    #[must_use]
    pub fn with_weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// Sets the priority within the source.
    #[must_use]
    pub fn with_priority(mut self, priority: u32) -> Self {
        self.priority = priority;
        self
    }

    /// Sets the zone.
    #[must_use]
    pub fn with_zone(mut self, zone: impl Into<String>) -> Self {
        self.zone = Some(zone.into());
        self
    }
}
