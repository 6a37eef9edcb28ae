//! The unified upstream cache.
//!
//! Each upstream names one or more *sources* (a registry and a service query). The cache
//! subscribes every source through the shared [`switchyard_registry::recover`] wrapper,
//! keeps each source's last good set (marked stale while its registry is failing), merges
//! the sets into priority tiers, overlays health (registry, active checks, passive
//! ejection), and publishes one immutable [`Snapshot`] per upstream, swapped atomically.
//!
//! The request path reads a snapshot with one atomic load ([`Upstream::snapshot`]) and
//! takes no lock. All mutation happens on one task per upstream (its *actor*), so there is
//! nothing to lock there either. The actor applies each change incrementally through
//! [`UpstreamState`]: consecutive snapshots share every endpoint that did not change, and
//! one change costs O(√n) at n endpoints rather than a rebuild.
//!
//! Tier rule: sources and endpoints are ranked by `(source priority, endpoint priority)`.
//! The lowest tier with at least one healthy endpoint serves; the next one serves only
//! when that tier has none. When no endpoint anywhere is healthy the cache enters *panic
//! mode* and serves every endpoint of the lowest non-empty tier (Envoy's panic threshold
//! at 100%): a wrong health signal must not take the whole upstream down.

mod apply;
mod cache;
pub mod chunked;
mod grpc_health;
mod health_check;
mod metrics;
mod selector;
mod snapshot;
mod source;
mod spec;
mod state;
mod stats;

pub use apply::UpstreamState;
pub use cache::{RegistryState, RegistryStatus, Upstream, UpstreamCache};
pub use chunked::{Chunked, Item};
pub use health_check::DEFAULT_EXPECTED as DEFAULT_HEALTHY_STATUSES;
pub use metrics::{applied_updates, encode_apply_metrics, APPLY_BUCKETS};
pub use selector::{Changes, PickContext, Selector, SelectorFactory};
pub use snapshot::{
    address_text, effective_weight, AddressText, EndpointList, ServingEndpoint, Snapshot,
    SourceRef, Tier, ZERO_WEIGHT_DIVISOR,
};
pub use source::SourceStatus;
pub use spec::{
    HealthCheckKind, HealthCheckSpec, OutlierSpec, PanicMode, ShrinkGuard, SourceSpec, UpstreamSpec,
};
pub use state::StateStore;
pub use stats::EndpointStats;
