//! What the cache is asked to maintain: upstreams, their sources and health settings.

use std::sync::Arc;
use std::time::Duration;

use switchyard_registry::{Registry, RegistryMetrics, ServiceQuery};

use crate::SelectorFactory;

/// One upstream as config describes it, with its registries already built.
#[derive(Clone)]
pub struct UpstreamSpec {
    /// The upstream's name (`orders` in `[upstreams.orders]`).
    pub name: String,
    /// The balancer's name, shown by the admin API (`round_robin`, ...).
    pub balancer: String,
    /// Builds the selector that picks endpoints from each snapshot.
    pub selector: Arc<dyn SelectorFactory>,
    /// Where the endpoints come from.
    pub sources: Vec<SourceSpec>,
    /// Passive health (outlier ejection).
    pub outlier: OutlierSpec,
}

/// One `[[upstreams.NAME.sources]]` entry.
#[derive(Clone)]
pub struct SourceSpec {
    /// The registry's name in config.
    pub registry_name: String,
    /// The registry's `type`.
    pub registry_kind: &'static str,
    /// The built registry, shared by every source that names it.
    pub registry: Arc<dyn Registry>,
    /// The registry's counters.
    pub metrics: Arc<RegistryMetrics>,
    /// What to watch.
    pub query: ServiceQuery,
    /// Lower is preferred. Default 0.
    pub priority: u32,
    /// This source's share of its tier, when any source of the tier sets one. `None`
    /// counts as 1 in a tier where another source has a weight.
    pub weight: Option<u32>,
}

/// Passive health: eject an endpoint after consecutive failures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutlierSpec {
    /// Failures in a row that eject an endpoint. Default 5; 0 disables ejection.
    pub consecutive_failures: u32,
    /// How long the first ejection lasts; each further ejection in a row adds as much
    /// again, up to 10 times. Default 30 s.
    pub base_ejection: Duration,
    /// Whether a 5xx answer counts as a failure (connect errors and timeouts always do).
    /// Default false.
    pub count_5xx: bool,
}

impl Default for OutlierSpec {
    fn default() -> Self {
        OutlierSpec {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(30),
            count_5xx: false,
        }
    }
}
