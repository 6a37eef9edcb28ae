//! Load balancers: each builds a [`Selector`] for an upstream snapshot's serving set.
//!
//! | config name       | algorithm                                                        |
//! |-------------------|------------------------------------------------------------------|
//! | `round_robin`     | nginx's smooth weighted round robin, one cycle precomputed per snapshot and read with one atomic counter (EDF with mid-slot deadlines for very large tables) |
//! | `least_request`   | power of two choices over in-flight requests divided by weight (Mitzenmacher, "The Power of Two Choices in Randomized Load Balancing", 2001) |
//! | `ewma`            | power of two choices over latency EWMA × (in-flight + 1) (Finagle/linkerd "peak EWMA") |
//! | `random`          | weighted random                                                  |
//! | `consistent_hash` | a hash ring with weight-proportional virtual nodes (Karger et al., 1997) |
//!
//! Every selector is built once per snapshot and picks without a lock.

pub mod consistent_hash;
mod least_request;
mod random;
mod round_robin;

use std::sync::Arc;

use switchyard_upstream::{Selector, SelectorFactory, ServingEndpoint};

pub use consistent_hash::HashRing;
pub use least_request::{Ewma, LeastRequest};
pub use random::WeightedRandom;
pub use round_robin::RoundRobin;

/// The balancers config can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BalancerKind {
    /// `round_robin` (the default).
    RoundRobin,
    /// `least_request`.
    LeastRequest,
    /// `ewma`.
    Ewma,
    /// `random`.
    Random,
    /// `consistent_hash`.
    ConsistentHash,
}

impl BalancerKind {
    /// Every kind, for error messages.
    pub const ALL: [BalancerKind; 5] = [
        BalancerKind::RoundRobin,
        BalancerKind::LeastRequest,
        BalancerKind::Ewma,
        BalancerKind::Random,
        BalancerKind::ConsistentHash,
    ];

    /// The config name.
    pub fn as_str(self) -> &'static str {
        match self {
            BalancerKind::RoundRobin => "round_robin",
            BalancerKind::LeastRequest => "least_request",
            BalancerKind::Ewma => "ewma",
            BalancerKind::Random => "random",
            BalancerKind::ConsistentHash => "consistent_hash",
        }
    }

    /// Parses a config name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// A shared factory for this kind. The same `Arc` is returned every time, so a reload
    /// that keeps an upstream's balancer keeps its snapshots.
    pub fn factory(self) -> Arc<dyn SelectorFactory> {
        use std::sync::OnceLock;
        static FACTORIES: OnceLock<[Arc<dyn SelectorFactory>; 5]> = OnceLock::new();
        let all = FACTORIES.get_or_init(|| {
            [
                Arc::new(Factory(BalancerKind::RoundRobin)),
                Arc::new(Factory(BalancerKind::LeastRequest)),
                Arc::new(Factory(BalancerKind::Ewma)),
                Arc::new(Factory(BalancerKind::Random)),
                Arc::new(Factory(BalancerKind::ConsistentHash)),
            ]
        });
        all[self as usize].clone()
    }
}

struct Factory(BalancerKind);

impl SelectorFactory for Factory {
    fn build(&self, serving: &[Arc<ServingEndpoint>]) -> Box<dyn Selector> {
        let weights: Vec<u32> = serving.iter().map(|e| e.weight).collect();
        match self.0 {
            BalancerKind::RoundRobin => Box::new(RoundRobin::new(&weights)),
            BalancerKind::LeastRequest => Box::new(LeastRequest),
            BalancerKind::Ewma => Box::new(Ewma),
            BalancerKind::Random => Box::new(WeightedRandom::new(&weights)),
            BalancerKind::ConsistentHash => {
                let keys: Vec<String> = serving.iter().map(|e| e.address().to_string()).collect();
                Box::new(HashRing::new(&keys, &weights))
            }
        }
    }
}

/// RFC 2782 weight 0 ("very small chance"): counted as this fraction of weight 1 when
/// other endpoints have weight. Balancers scale weights so that 0 still maps to a share.
pub(crate) fn effective_weight(weight: u32) -> u64 {
    if weight == 0 {
        1
    } else {
        u64::from(weight) * ZERO_WEIGHT_DIVISOR
    }
}

/// Weight 1 is worth this many weight-0 endpoints.
pub(crate) const ZERO_WEIGHT_DIVISOR: u64 = 100;

#[cfg(test)]
pub(crate) mod testing {
    use std::collections::HashMap;
    use std::sync::Arc;
    use std::time::Instant;

    use switchyard_registry::Endpoint;
    use switchyard_upstream::{EndpointStats, ServingEndpoint, SourceRef, Tier};

    /// Serving endpoints on 127.0.0.1 ports 1.. with the given weights.
    pub fn endpoints(weights: &[u32]) -> Vec<Arc<ServingEndpoint>> {
        let source = Arc::new(SourceRef {
            registry: "test".into(),
            service: "svc".into(),
        });
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                Arc::new(ServingEndpoint {
                    endpoint: Endpoint::new(([127, 0, 0, 1], i as u16 + 1).into()).with_weight(w),
                    source: source.clone(),
                    tier: Tier::default(),
                    weight: w,
                    stale: false,
                    healthy: true,
                    stats: Arc::new(EndpointStats::new(Instant::now())),
                    authority: format!("127.0.0.1:{}", i + 1).into(),
                })
            })
            .collect()
    }

    /// How many of `n` picks went to each index.
    pub fn distribution(
        selector: &dyn switchyard_upstream::Selector,
        serving: &[Arc<ServingEndpoint>],
        n: usize,
        hash: impl Fn(usize) -> u64,
    ) -> HashMap<usize, usize> {
        let mut counts = HashMap::new();
        for i in 0..n {
            let ctx = switchyard_upstream::PickContext {
                hash: hash(i),
                attempt: 0,
            };
            *counts
                .entry(selector.pick(serving, &ctx).unwrap())
                .or_default() += 1;
        }
        counts
    }
}
