//! Load balancers: each builds a [`Selector`] for an upstream snapshot's serving set.
//!
//! | config name       | algorithm                                                        |
//! |-------------------|------------------------------------------------------------------|
//! | `round_robin`     | a counter; with unequal weights nginx's smooth weighted round robin precomputed for small tables, a golden-ratio stride over the cumulative weights for large ones |
//! | `least_request`   | power of two choices over in-flight requests divided by weight (Mitzenmacher, "The Power of Two Choices in Randomized Load Balancing", 2001) |
//! | `ewma`            | power of two choices over latency EWMA × (in-flight + 1) (Finagle/linkerd "peak EWMA") |
//! | `random`          | weighted random                                                  |
//! | `consistent_hash` | a hash ring with weight-proportional virtual nodes (Karger et al., 1997) |
//!
//! With `zone_aware = true`, [`ZoneAwareFactory`] wraps the upstream's balancer: picks
//! prefer the gateway's zone, spilling over by Envoy's zone-aware routing rules.
//!
//! Every selector is built once per snapshot (or derived from the previous snapshot's in
//! O(changes), see [`switchyard_upstream::Selector::update`]) and picks without a lock.
//! Weighted picks walk the serving list's cumulative-weight index
//! ([`switchyard_upstream::EndpointList::find_weight`]), so no per-snapshot table is built.

pub mod consistent_hash;
mod least_request;
mod random;
mod round_robin;
pub mod zone_aware;

use std::sync::Arc;

use switchyard_upstream::{EndpointList, Selector, SelectorFactory};

pub use consistent_hash::HashRing;
pub use least_request::{Ewma, LeastRequest};
pub use random::WeightedRandom;
pub use round_robin::RoundRobin;
pub use zone_aware::ZoneAwareFactory;

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
    fn build(&self, serving: &EndpointList) -> Box<dyn Selector> {
        match self.0 {
            BalancerKind::RoundRobin => Box::new(RoundRobin::new(serving)),
            BalancerKind::LeastRequest => Box::new(LeastRequest),
            BalancerKind::Ewma => Box::new(Ewma),
            BalancerKind::Random => Box::new(WeightedRandom),
            BalancerKind::ConsistentHash => Box::new(HashRing::new(serving)),
        }
    }
}

/// Greatest common divisor.
pub(crate) fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use std::collections::HashMap;
    use std::sync::Arc;

    use switchyard_registry::Endpoint;
    use switchyard_upstream::{EndpointList, PickContext, Selector, ServingEndpoint, SourceRef};

    /// Serving endpoints on 127.0.0.1 ports 1.. with the given weights.
    pub fn endpoints(weights: &[u32]) -> EndpointList {
        EndpointList::new(
            weights
                .iter()
                .enumerate()
                .map(|(i, &w)| endpoint(i, w))
                .collect(),
        )
    }

    /// Endpoint `i` (127.0.0.1, port i + 1) of weight `weight`.
    pub fn endpoint(i: usize, weight: u32) -> Arc<ServingEndpoint> {
        let source = Arc::new(SourceRef {
            registry: "test".into(),
            service: "svc".into(),
        });
        let address = ([127, 0, 0, 1], i as u16 + 1).into();
        Arc::new(ServingEndpoint::new(
            Endpoint::new(address).with_weight(weight),
            source,
        ))
    }

    /// The index (port - 1) of an endpoint made by [`endpoints`].
    pub fn index(e: &ServingEndpoint) -> usize {
        usize::from(e.address().port()) - 1
    }

    /// How many of `n` picks went to each index.
    pub fn distribution(
        selector: &dyn Selector,
        serving: &EndpointList,
        n: usize,
        hash: impl Fn(usize) -> u64,
    ) -> HashMap<usize, usize> {
        let mut counts = HashMap::new();
        for i in 0..n {
            let ctx = PickContext {
                hash: hash(i),
                attempt: 0,
            };
            *counts
                .entry(index(selector.pick(serving, &ctx).unwrap()))
                .or_default() += 1;
        }
        counts
    }
}
