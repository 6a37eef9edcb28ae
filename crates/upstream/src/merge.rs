//! Building an upstream's immutable [`Snapshot`] from its sources' sets: tiers, dedup,
//! health overlay, source weights, panic mode, and the prebuilt selector.
//!
//! This is a pure function of its inputs, so every rule here is unit-tested without a
//! registry or a runtime.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use switchyard_registry::Endpoint;

use crate::source::SourceSet;
use crate::{EndpointStats, PanicMode, PickContext, Selector, SelectorFactory};

/// Identifies where an endpoint came from, for the admin API and the access log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceRef {
    /// The registry's name in config.
    pub registry: String,
    /// The service, as the source names it.
    pub service: String,
}

/// A priority tier: sources rank first, then endpoints within a source. Lower serves first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tier {
    /// The source's `priority` from config.
    pub source: u32,
    /// The endpoint's own priority from its registry (DNS SRV priority, etcd `priority`).
    pub endpoint: u32,
}

/// One endpoint of an upstream, as a snapshot holds it.
#[derive(Debug)]
pub struct ServingEndpoint {
    /// The endpoint as its registry reported it.
    pub endpoint: Endpoint,
    /// Where it came from.
    pub source: Arc<SourceRef>,
    /// Its tier.
    pub tier: Tier,
    /// Its weight for balancing: the endpoint's own weight, or its share of its source's
    /// weight when the tier splits traffic by source.
    pub weight: u32,
    /// Whether its source is failing, so this is a last known good endpoint.
    pub stale: bool,
    /// Registry health, active checks and passive ejection combined, when the snapshot was
    /// built.
    pub healthy: bool,
    /// Live counters (in-flight, latency, ejection), shared across snapshots.
    pub stats: Arc<EndpointStats>,
    /// The address as text (`10.0.0.5:8080`, `[::1]:80`), made once per snapshot so the
    /// request path can build URIs without formatting.
    pub authority: bytes::Bytes,
}

impl ServingEndpoint {
    /// The address to connect to.
    pub fn address(&self) -> SocketAddr {
        self.endpoint.address
    }
}

/// An immutable view of one upstream, swapped in atomically whenever anything changes.
pub struct Snapshot {
    /// Every known endpoint, deduplicated by address, ordered by tier then source.
    pub endpoints: Vec<Arc<ServingEndpoint>>,
    /// The endpoints that take traffic now (a subset of `endpoints`).
    pub serving: Vec<Arc<ServingEndpoint>>,
    /// The tier that serves, if any endpoint exists.
    pub serving_tier: Option<Tier>,
    /// True when no endpoint is healthy and the lowest tier serves in full anyway.
    pub panic: bool,
    /// Picks from `serving`; built once for this snapshot.
    pub selector: Box<dyn Selector>,
    /// Increases with every snapshot of this upstream.
    pub version: u64,
}

impl Snapshot {
    /// An empty snapshot: nothing serves.
    pub fn empty(factory: &dyn SelectorFactory) -> Self {
        Snapshot {
            endpoints: Vec::new(),
            serving: Vec::new(),
            serving_tier: None,
            panic: false,
            selector: factory.build(&[]),
            version: 0,
        }
    }

    /// Picks an endpoint for a request.
    pub fn pick(&self, ctx: &PickContext) -> Option<&Arc<ServingEndpoint>> {
        self.selector
            .pick(&self.serving, ctx)
            .and_then(|i| self.serving.get(i))
    }
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("endpoints", &self.endpoints.len())
            .field("serving", &self.serving.len())
            .field("serving_tier", &self.serving_tier)
            .field("panic", &self.panic)
            .field("version", &self.version)
            .finish()
    }
}

/// One source's contribution to a snapshot build.
pub(crate) struct SourceInput<'a> {
    pub(crate) source: &'a Arc<SourceRef>,
    pub(crate) priority: u32,
    pub(crate) weight: Option<u32>,
    pub(crate) set: &'a SourceSet,
    pub(crate) stale: bool,
}

/// Builds a snapshot. `stats` keeps each address's counters across builds: entries are
/// created for new addresses and dropped for addresses no source has any more.
pub(crate) fn build(
    sources: &[SourceInput<'_>],
    stats: &mut HashMap<SocketAddr, Arc<EndpointStats>>,
    epoch: Instant,
    factory: &dyn SelectorFactory,
    panic_mode: PanicMode,
    version: u64,
) -> Snapshot {
    // Every endpoint with its tier, lowest tier first; ties keep source order.
    let mut ranked: Vec<(Tier, usize, &Endpoint)> = Vec::new();
    for (index, input) in sources.iter().enumerate() {
        for endpoint in input.set.endpoints.values() {
            let tier = Tier {
                source: input.priority,
                endpoint: endpoint.priority,
            };
            ranked.push((tier, index, endpoint));
        }
    }
    ranked.sort_by_key(|(tier, index, _)| (*tier, *index));

    let mut seen = HashSet::with_capacity(ranked.len());
    let mut endpoints = Vec::with_capacity(ranked.len());
    for (tier, index, endpoint) in ranked {
        if !seen.insert(endpoint.address) {
            continue; // The same address from two sources counts once, at its best tier.
        }
        let input = &sources[index];
        let stats = stats
            .entry(endpoint.address)
            .or_insert_with(|| Arc::new(EndpointStats::new(epoch)))
            .clone();
        stats.expire_ejection();
        let healthy = endpoint.healthy && stats.active_healthy() && !stats.is_ejected();
        endpoints.push((
            index,
            ServingEndpoint {
                endpoint: endpoint.clone(),
                source: input.source.clone(),
                tier,
                weight: endpoint.weight,
                stale: input.stale,
                healthy,
                stats,
                authority: bytes::Bytes::from(endpoint.address.to_string()),
            },
        ));
    }
    stats.retain(|address, _| seen.contains(address));

    // The serving tier: the lowest with a healthy endpoint; else panic on the lowest.
    let healthy_tier = endpoints
        .iter()
        .find(|(_, e)| e.healthy)
        .map(|(_, e)| e.tier);
    let (serving_tier, panic) = match healthy_tier {
        Some(tier) => (Some(tier), false),
        None => (
            endpoints.first().map(|(_, e)| e.tier),
            !endpoints.is_empty(),
        ),
    };
    let rejecting = panic && panic_mode == PanicMode::Reject;
    let in_serving =
        |e: &ServingEndpoint| !rejecting && Some(e.tier) == serving_tier && (panic || e.healthy);

    // Source weights split the serving tier's traffic between its sources.
    if endpoints
        .iter()
        .any(|(i, e)| in_serving(e) && sources[*i].weight.is_some())
    {
        let mut per_source: HashMap<usize, u64> = HashMap::new();
        for (index, e) in endpoints.iter().filter(|(_, e)| in_serving(e)) {
            *per_source.entry(*index).or_default() += u64::from(e.weight.max(1));
        }
        for (index, e) in endpoints.iter_mut() {
            if in_serving(e) {
                let share = u64::from(sources[*index].weight.unwrap_or(1));
                let total = per_source[index];
                let weight = share * SOURCE_WEIGHT_SCALE * u64::from(e.weight.max(1)) / total;
                e.weight = weight.clamp(1, u64::from(u32::MAX)) as u32;
            }
        }
    }

    let endpoints: Vec<Arc<ServingEndpoint>> =
        endpoints.into_iter().map(|(_, e)| Arc::new(e)).collect();
    let serving: Vec<_> = endpoints
        .iter()
        .filter(|e| in_serving(e))
        .cloned()
        .collect();
    Snapshot {
        selector: factory.build(&serving),
        endpoints,
        serving,
        serving_tier,
        panic,
        version,
    }
}

/// Resolution of source-weight splits: a source of weight 1 spreads this many weight
/// units over its endpoints.
const SOURCE_WEIGHT_SCALE: u64 = 1000;

#[cfg(test)]
mod tests {
    use super::*;

    /// Picks the first endpoint; enough to build snapshots.
    struct First;
    impl Selector for First {
        fn pick(&self, serving: &[Arc<ServingEndpoint>], _: &PickContext) -> Option<usize> {
            (!serving.is_empty()).then_some(0)
        }
    }
    impl SelectorFactory for First {
        fn build(&self, _: &[Arc<ServingEndpoint>]) -> Box<dyn Selector> {
            Box::new(First)
        }
    }

    struct Src {
        priority: u32,
        weight: Option<u32>,
        endpoints: Vec<Endpoint>,
    }

    fn src(priority: u32, endpoints: &[(u16, u32)]) -> Src {
        Src {
            priority,
            weight: None,
            endpoints: endpoints
                .iter()
                .map(|&(port, w)| ep(port).with_weight(w))
                .collect(),
        }
    }

    fn ep(port: u16) -> Endpoint {
        Endpoint::new(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    /// Builds a snapshot and returns (port, weight) of the serving set and the panic flag.
    fn check(
        sources: Vec<Src>,
        stats: &mut HashMap<SocketAddr, Arc<EndpointStats>>,
    ) -> (Vec<(u16, u32)>, bool) {
        let refs: Vec<Arc<SourceRef>> = (0..sources.len())
            .map(|i| {
                Arc::new(SourceRef {
                    registry: format!("r{i}"),
                    service: "svc".into(),
                })
            })
            .collect();
        let sets: Vec<SourceSet> = sources
            .iter()
            .map(|s| SourceSet {
                endpoints: s.endpoints.iter().map(|e| (e.address, e.clone())).collect(),
            })
            .collect();
        let inputs: Vec<SourceInput<'_>> = sources
            .iter()
            .enumerate()
            .map(|(i, s)| SourceInput {
                source: &refs[i],
                priority: s.priority,
                weight: s.weight,
                set: &sets[i],
                stale: false,
            })
            .collect();
        let snap = build(
            &inputs,
            stats,
            Instant::now(),
            &First,
            PanicMode::ServeAll,
            1,
        );
        (
            snap.serving
                .iter()
                .map(|e| (e.address().port(), e.weight))
                .collect(),
            snap.panic,
        )
    }

    #[test]
    fn lowest_tier_with_a_healthy_endpoint_serves() {
        let mut stats = HashMap::new();
        let (serving, panic) = check(
            vec![src(1, &[(3, 1)]), src(0, &[(1, 1), (2, 2)])],
            &mut stats,
        );
        assert_eq!(serving, vec![(1, 1), (2, 2)]);
        assert!(!panic);
        // Tier 0 empty: tier 1 serves.
        let (serving, _) = check(vec![src(1, &[(3, 1)]), src(0, &[])], &mut stats);
        assert_eq!(serving, vec![(3, 1)]);
    }

    #[test]
    fn unhealthy_tier_fails_over_and_all_unhealthy_panics() {
        let mut stats = HashMap::new();
        let mut sick = src(0, &[(1, 1)]);
        sick.endpoints[0].healthy = false;
        let (serving, panic) = check(vec![sick, src(1, &[(2, 1)])], &mut stats);
        assert_eq!(serving, vec![(2, 1)]);
        assert!(!panic);
        let mut sick = src(0, &[(1, 1), (2, 1)]);
        for e in &mut sick.endpoints {
            e.healthy = false;
        }
        let (serving, panic) = check(vec![sick], &mut stats);
        assert_eq!(serving, vec![(1, 1), (2, 1)]);
        assert!(panic);
    }

    #[test]
    fn reject_panic_mode_serves_nothing_when_all_are_unhealthy() {
        let refs = [Arc::new(SourceRef {
            registry: "r".into(),
            service: "s".into(),
        })];
        let mut e = ep(1);
        e.healthy = false;
        let set = SourceSet {
            endpoints: [(e.address, e)].into_iter().collect(),
        };
        let inputs = [SourceInput {
            source: &refs[0],
            priority: 0,
            weight: None,
            set: &set,
            stale: false,
        }];
        let snap = build(
            &inputs,
            &mut HashMap::new(),
            Instant::now(),
            &First,
            PanicMode::Reject,
            1,
        );
        assert!(snap.panic);
        assert!(snap.serving.is_empty());
        assert_eq!(snap.endpoints.len(), 1);
    }

    #[test]
    fn endpoint_priority_ranks_within_a_source() {
        let mut stats = HashMap::new();
        let mut s = src(0, &[(1, 1), (2, 1)]);
        s.endpoints[0].priority = 10;
        s.endpoints[1].priority = 20;
        let (serving, _) = check(vec![s], &mut stats);
        assert_eq!(serving, vec![(1, 1)]);
    }

    #[test]
    fn same_address_from_two_sources_counts_once() {
        let mut stats = HashMap::new();
        let (serving, _) = check(
            vec![src(0, &[(1, 1), (2, 1)]), src(0, &[(2, 1), (3, 1)])],
            &mut stats,
        );
        assert_eq!(serving, vec![(1, 1), (2, 1), (3, 1)]);
        assert_eq!(stats.len(), 3);
    }

    #[test]
    fn source_weights_split_a_tier_regardless_of_instance_counts() {
        let mut stats = HashMap::new();
        let mut consul = src(0, &[(1, 1), (2, 1), (3, 1)]);
        consul.weight = Some(9);
        let mut k8s = src(0, &[(4, 1)]);
        k8s.weight = Some(1);
        let (serving, _) = check(vec![consul, k8s], &mut stats);
        let total: u32 = serving.iter().map(|(_, w)| w).sum();
        let k8s_share: u32 = serving
            .iter()
            .filter(|(p, _)| *p == 4)
            .map(|(_, w)| w)
            .sum();
        assert_eq!(k8s_share * 10, total, "{serving:?}");
    }

    #[test]
    fn ejected_endpoints_leave_the_serving_set_and_stats_are_kept() {
        let mut stats = HashMap::new();
        check(vec![src(0, &[(1, 1), (2, 1)])], &mut stats);
        let outlier = crate::OutlierSpec {
            consecutive_failures: 1,
            ..Default::default()
        };
        assert!(stats[&ep(1).address].record_failure(&outlier));
        let (serving, panic) = check(vec![src(0, &[(1, 1), (2, 1)])], &mut stats);
        assert_eq!(serving, vec![(2, 1)]);
        assert!(!panic);
        // Counters of an address that left are dropped.
        check(vec![src(0, &[(2, 1)])], &mut stats);
        assert_eq!(stats.len(), 1);
    }
}
