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
///
/// The zone and the labels, which most endpoints lack and the request path never reads, sit
/// behind one optional box ([`Endpoint::zone`], [`Endpoint::metadata`]): 56 bytes an
/// endpoint instead of 96, which at 100,000 endpoints is 4 MiB. Serialized as before (flat
/// `zone` and `metadata` fields).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(from = "EndpointFields", into = "EndpointFields")]
pub struct Endpoint {
    /// Where to connect.
    pub address: SocketAddr,
    /// Relative share of traffic within its tier. Default 1. Weight 0 is legal (DNS SRV)
    /// and means "only a very small share when others exist" (RFC 2782).
    pub weight: u32,
    /// Priority within its source: lower is preferred (DNS SRV priority, etcd `priority`).
    /// Default 0. The source's own `priority` in config ranks above this one.
    pub priority: u32,
    /// Health as the registry reports it. Registries that only report healthy instances
    /// (Consul `?passing`, ready EndpointSlice endpoints) always say `true`.
    pub healthy: bool,
    /// Zone and labels; `None` when there are neither.
    extra: Option<Box<Extra>>,
}

/// What few endpoints have.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Extra {
    zone: Option<String>,
    metadata: Metadata,
}

/// No labels.
static NO_METADATA: Metadata = Metadata::new();

/// Metadata key of Kubernetes topology hints: the zones of an EndpointSlice endpoint's
/// `hints.forZones`, comma-separated. Zone-aware routing reads it.
pub const META_HINTS_FOR_ZONES: &str = "hints.for_zones";

/// An [`Endpoint`] as serialized.
#[derive(serde::Serialize, serde::Deserialize)]
struct EndpointFields {
    address: SocketAddr,
    weight: u32,
    priority: u32,
    #[serde(default)]
    zone: Option<String>,
    #[serde(default)]
    metadata: Metadata,
    healthy: bool,
}

impl From<EndpointFields> for Endpoint {
    fn from(fields: EndpointFields) -> Self {
        let mut endpoint = Endpoint::new(fields.address)
            .with_weight(fields.weight)
            .with_priority(fields.priority);
        endpoint.healthy = fields.healthy;
        endpoint.set_zone(fields.zone);
        endpoint.set_metadata(fields.metadata);
        endpoint
    }
}

impl From<Endpoint> for EndpointFields {
    fn from(endpoint: Endpoint) -> Self {
        let extra = endpoint.extra.map(|extra| *extra).unwrap_or_default();
        EndpointFields {
            address: endpoint.address,
            weight: endpoint.weight,
            priority: endpoint.priority,
            zone: extra.zone,
            metadata: extra.metadata,
            healthy: endpoint.healthy,
        }
    }
}

impl Endpoint {
    /// A healthy endpoint with weight 1, priority 0, no zone and no metadata.
    pub fn new(address: SocketAddr) -> Self {
        Endpoint {
            address,
            weight: 1,
            priority: 0,
            healthy: true,
            extra: None,
        }
    }

    /// Locality, when the registry knows it (Kubernetes zone, etcd `metadata.zone`).
    pub fn zone(&self) -> Option<&str> {
        self.extra.as_ref()?.zone.as_deref()
    }

    /// Labels kept for the admin API (empty when there are none).
    pub fn metadata(&self) -> &Metadata {
        self.extra
            .as_ref()
            .map_or(&NO_METADATA, |extra| &extra.metadata)
    }

    /// The labels, to change them.
    pub fn metadata_mut(&mut self) -> &mut Metadata {
        &mut self.extra.get_or_insert_with(Box::default).metadata
    }

    /// Sets or clears the zone.
    pub fn set_zone(&mut self, zone: Option<String>) {
        match zone {
            Some(zone) => self.extra.get_or_insert_with(Box::default).zone = Some(zone),
            None => {
                if let Some(extra) = &mut self.extra {
                    extra.zone = None;
                }
                self.drop_empty_extra();
            }
        }
    }

    /// Replaces the labels.
    pub fn set_metadata(&mut self, metadata: Metadata) {
        if metadata.is_empty() && self.extra.is_none() {
            return;
        }
        self.extra.get_or_insert_with(Box::default).metadata = metadata;
        self.drop_empty_extra();
    }

    fn drop_empty_extra(&mut self) {
        if self
            .extra
            .as_ref()
            .is_some_and(|extra| extra.zone.is_none() && extra.metadata.is_empty())
        {
            self.extra = None;
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
        self.set_zone(Some(zone.into()));
        self
    }

    /// Sets the labels.
    #[must_use]
    pub fn with_metadata(mut self, metadata: Metadata) -> Self {
        self.set_metadata(metadata);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zone_and_labels_live_in_one_optional_box() {
        assert_eq!(std::mem::size_of::<Endpoint>(), 56);
        let mut e = Endpoint::new("10.0.0.1:80".parse().unwrap());
        assert_eq!((e.zone(), e.metadata().len()), (None, 0));
        assert!(e.extra.is_none());
        e.set_metadata(Metadata::new());
        assert!(e.extra.is_none(), "no box for empty labels");
        e.set_zone(Some("z1".into()));
        e.metadata_mut().insert("team".into(), "x".into());
        assert_eq!(e.zone(), Some("z1"));
        assert_eq!(e.metadata()["team"], "x");
        e.set_zone(None);
        assert!(e.extra.is_some(), "labels remain");
        e.set_metadata(Metadata::new());
        assert!(e.extra.is_none(), "neither zone nor labels: the box goes");
    }

    #[test]
    fn serialized_as_flat_fields_as_before() {
        let e = Endpoint::new("10.0.0.1:80".parse().unwrap())
            .with_weight(3)
            .with_zone("z1")
            .with_metadata(Metadata::from([("team".into(), "x".into())]));
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "address": "10.0.0.1:80", "weight": 3, "priority": 0, "zone": "z1",
                "metadata": {"team": "x"}, "healthy": true
            })
        );
        assert_eq!(serde_json::from_value::<Endpoint>(json).unwrap(), e);
        // Zone and metadata may be absent.
        let bare: Endpoint = serde_json::from_value(serde_json::json!({
            "address": "10.0.0.2:80", "weight": 1, "priority": 0, "healthy": false
        }))
        .unwrap();
        assert_eq!(
            (bare.zone(), bare.metadata().len(), bare.healthy),
            (None, 0, false)
        );
        assert!(bare.extra.is_none());
    }
}
