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
    /// Active health checks, if configured.
    pub health_check: Option<HealthCheckSpec>,
    /// What to do when nothing is healthy.
    pub panic_mode: PanicMode,
    /// Partial-answer guard, if configured.
    pub shrink_guard: Option<ShrinkGuard>,
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

/// What an upstream does when no endpoint is healthy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PanicMode {
    /// Serve every endpoint of the lowest tier anyway (Envoy's panic threshold): a wrong
    /// health signal must not take the whole upstream down. The default.
    #[default]
    ServeAll,
    /// Serve nothing: requests get 503.
    Reject,
}

/// Active health checking of an upstream's endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheckSpec {
    /// HTTP GET of a path, or a bare TCP connect.
    pub kind: HealthCheckKind,
    /// Time between two checks of one endpoint. Default 5 s.
    pub interval: Duration,
    /// Time allowed for one check. Default 1 s.
    pub timeout: Duration,
    /// Successes in a row that make an unhealthy endpoint healthy. Default 1.
    pub healthy_threshold: u32,
    /// Failures in a row that make a healthy endpoint unhealthy. Default 2.
    pub unhealthy_threshold: u32,
}

/// How an active check probes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HealthCheckKind {
    /// `GET path`; healthy when the status is in `expected` (inclusive ranges).
    Http {
        /// Path and query to request.
        path: String,
        /// `Host` header to send; default the endpoint's address.
        host: Option<String>,
        /// Healthy statuses, as inclusive ranges. Default 200–399.
        expected: Vec<(u16, u16)>,
    },
    /// A TCP connection that opens is healthy.
    Tcp,
    /// `grpc.health.v1.Health/Check` over h2c; healthy when the answer is SERVING.
    Grpc {
        /// The service to ask about; "" = the server as a whole. Default "".
        service: String,
    },
}

/// Guards against a registry's partial answer: a source whose set suddenly shrinks
/// below `min_ratio` of its previous size keeps the previous set for `grace`.
#[derive(Clone, Debug, PartialEq)]
pub struct ShrinkGuard {
    /// Smallest acceptable new size, as a fraction of the previous size (0 < r ≤ 1).
    pub min_ratio: f64,
    /// How long the previous set is kept before the smaller one applies anyway.
    pub grace: Duration,
}
