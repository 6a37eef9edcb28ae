//! Zone-aware routing: a selector that prefers the endpoints in the gateway's own zone and
//! spills over to the other zones only as much as their health requires, wrapped around any
//! balancer.
//!
//! The rules are Envoy's ("Zone aware routing", intro/arch_overview/upstream/load_balancing),
//! with the gateway fleet taken as spread evenly over the zones the upstream has healthy
//! endpoints in (Envoy reads the originating cluster's own spread; a gateway has none):
//!
//! - preconditions: no panic (every serving endpoint healthy) and at least
//!   [`MIN_CLUSTER_SIZE`] serving endpoints (Envoy's `upstream.zone_routing.min_cluster_size`,
//!   default 6); otherwise the inner balancer picks from the whole serving set;
//! - the upstream's local percentage is the local zone's share of the healthy (serving)
//!   endpoints; the originating percentage is `1 / zones`. When the local percentage is at
//!   least the originating one, every request stays local; when it is below, the local zone
//!   gets `local / originating` of the requests and the rest spill over to the other zones
//!   ("residual" routing), so no local endpoint takes more than its fair share;
//! - Kubernetes topology hints take precedence, as kube-proxy applies them: when every
//!   serving endpoint carries `hints.forZones` (metadata [`HINTS_KEY`]) and some name the
//!   gateway's zone, those endpoints are the local set and take every request; otherwise
//!   hints are ignored (kube-proxy's `CategorizeEndpoints`).
//!
//! Everything is decided when the snapshot is built: the local and remote lists and their
//! inner selectors are built then, and a pick is one relaxed atomic add and a comparison on
//! top of the inner balancer's pick (no lock, no allocation).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use switchyard_upstream::{EndpointList, PickContext, Selector, SelectorFactory, ServingEndpoint};

/// Envoy's `upstream.zone_routing.min_cluster_size` default: fewer serving endpoints than
/// this and zone-aware routing is not attempted.
pub const MIN_CLUSTER_SIZE: usize = 6;

/// The endpoint metadata key holding Kubernetes topology hints: the zone names of
/// `hints.forZones`, comma-separated (set by the kubernetes registry).
pub const HINTS_KEY: &str = switchyard_registry::META_HINTS_FOR_ZONES;

/// Requests are routed locally `share` parts in this many.
const SCALE: u64 = 10_000;

/// Wraps `inner` so that picks prefer the endpoints of `zone`.
pub struct ZoneAwareFactory {
    zone: Arc<str>,
    inner: Arc<dyn SelectorFactory>,
}

impl ZoneAwareFactory {
    /// Prefers `zone` (the gateway's `[server] zone`), picking with `inner` within a zone.
    pub fn new(zone: &str, inner: Arc<dyn SelectorFactory>) -> Self {
        ZoneAwareFactory {
            zone: zone.into(),
            inner,
        }
    }
}

impl SelectorFactory for ZoneAwareFactory {
    fn build(&self, serving: &EndpointList) -> Box<dyn Selector> {
        let plan = plan(&self.zone, serving);
        match plan {
            Plan::Whole => Box::new(Whole(self.inner.build(serving))),
            Plan::Split {
                local,
                remote,
                share,
            } => {
                let local = EndpointList::new(local);
                let remote = EndpointList::new(remote);
                Box::new(ZoneAware {
                    local_selector: self.inner.build(&local),
                    remote_selector: self.inner.build(&remote),
                    local,
                    remote,
                    share,
                    counter: AtomicU64::new(0),
                })
            }
        }
    }
}

/// How a serving set is routed.
#[derive(Debug)]
enum Plan {
    /// No zone-aware routing: the inner balancer over the whole set.
    Whole,
    /// `share` in [`SCALE`] of the requests to `local`, the rest to `remote`.
    Split {
        local: Vec<Arc<ServingEndpoint>>,
        remote: Vec<Arc<ServingEndpoint>>,
        share: u64,
    },
}

/// Whether `endpoint` is in `zone` for zone-aware routing (its registry's zone).
pub fn is_local(endpoint: &ServingEndpoint, zone: &str) -> bool {
    endpoint.endpoint.zone() == Some(zone)
}

fn hinted_for(endpoint: &ServingEndpoint, zone: &str) -> Option<bool> {
    let hints = endpoint.endpoint.metadata().get(HINTS_KEY)?;
    Some(hints.split(',').any(|z| z.trim() == zone))
}

fn plan(zone: &str, serving: &EndpointList) -> Plan {
    if serving.iter().any(|e| !e.healthy) {
        // Panic mode serves unhealthy endpoints: Envoy does no zone routing then.
        return Plan::Whole;
    }
    // Topology hints, when every endpoint has them and some are for this zone.
    let hints: Option<Vec<bool>> = serving.iter().map(|e| hinted_for(e, zone)).collect();
    if let Some(hints) = hints {
        if !serving.is_empty() && hints.iter().any(|h| *h) {
            let (local, remote) = split(serving, |i, _| hints[i]);
            return Plan::Split {
                local,
                remote,
                share: SCALE,
            };
        }
    }
    if serving.len() < MIN_CLUSTER_SIZE {
        return Plan::Whole;
    }
    let (local, remote) = split(serving, |_, e| is_local(e, zone));
    if local.is_empty() {
        return Plan::Whole;
    }
    let mut zones: Vec<Option<&str>> = serving.iter().map(|e| e.endpoint.zone()).collect();
    zones.sort_unstable();
    zones.dedup();
    // local / total against 1 / zones: local * zones against total.
    let local_weighted = local.len() as u64 * zones.len() as u64;
    let total = serving.len() as u64;
    let share = if local_weighted >= total {
        SCALE
    } else {
        local_weighted * SCALE / total
    };
    Plan::Split {
        local,
        remote,
        share,
    }
}

type Split = (Vec<Arc<ServingEndpoint>>, Vec<Arc<ServingEndpoint>>);

fn split(serving: &EndpointList, local: impl Fn(usize, &ServingEndpoint) -> bool) -> Split {
    let mut out: Split = (Vec::new(), Vec::new());
    for (i, endpoint) in serving.iter().enumerate() {
        if local(i, endpoint) {
            out.0.push(endpoint.clone());
        } else {
            out.1.push(endpoint.clone());
        }
    }
    out
}

/// No zone routing for this snapshot.
struct Whole(Box<dyn Selector>);

impl Selector for Whole {
    fn pick<'a>(
        &'a self,
        serving: &'a EndpointList,
        ctx: &PickContext,
    ) -> Option<&'a Arc<ServingEndpoint>> {
        self.0.pick(serving, ctx)
    }
}

/// Local first, the residual share to the other zones.
struct ZoneAware {
    local: EndpointList,
    remote: EndpointList,
    local_selector: Box<dyn Selector>,
    remote_selector: Box<dyn Selector>,
    share: u64,
    counter: AtomicU64,
}

impl Selector for ZoneAware {
    fn pick<'a>(
        &'a self,
        _serving: &'a EndpointList,
        ctx: &PickContext,
    ) -> Option<&'a Arc<ServingEndpoint>> {
        // An even spread (Bresenham): request n goes local when floor((n+1)·share/SCALE)
        // steps past floor(n·share/SCALE), so any N requests send floor(N·share/SCALE)
        // local, the spill-over never in bursts.
        let local = self.share >= SCALE || self.remote.is_empty() || {
            let n = u128::from(self.counter.fetch_add(1, Ordering::Relaxed));
            let (share, scale) = (u128::from(self.share), u128::from(SCALE));
            (n + 1) * share / scale > n * share / scale
        };
        if local {
            self.local_selector.pick(&self.local, ctx)
        } else {
            self.remote_selector.pick(&self.remote, ctx)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_registry::Endpoint;
    use switchyard_upstream::SourceRef;

    use crate::balance::BalancerKind;

    /// Endpoint `port` in `zone`, healthy.
    fn endpoint(port: u16, zone: &str, hints: Option<&str>) -> Arc<ServingEndpoint> {
        let source = Arc::new(SourceRef {
            registry: "r".into(),
            service: "s".into(),
        });
        let mut e = Endpoint::new(([127, 0, 0, 1], port).into()).with_zone(zone);
        if let Some(hints) = hints {
            e.metadata_mut().insert(HINTS_KEY.into(), hints.into());
        }
        Arc::new(ServingEndpoint::new(e, source))
    }

    fn share_of_local(serving: &EndpointList, n: usize) -> f64 {
        let factory = ZoneAwareFactory::new("a", BalancerKind::RoundRobin.factory());
        let selector = factory.build(serving);
        let local = (0..n)
            .filter(|_| {
                let e = selector.pick(serving, &PickContext::default()).unwrap();
                is_local(e, "a")
            })
            .count();
        local as f64 / n as f64
    }

    fn list(zones: &[&str]) -> EndpointList {
        EndpointList::new(
            zones
                .iter()
                .enumerate()
                .map(|(i, z)| endpoint(i as u16 + 1, z, None))
                .collect(),
        )
    }

    #[test]
    fn all_local_when_the_local_zone_has_its_share() {
        assert_eq!(
            share_of_local(&list(&["a", "a", "a", "b", "b", "b"]), 1000),
            1.0
        );
        // More local endpoints than the even share: still all local.
        assert_eq!(
            share_of_local(&list(&["a", "a", "a", "a", "b", "b"]), 1000),
            1.0
        );
    }

    #[test]
    fn residual_spills_over_in_proportion() {
        // Local 2 of 7 against 1/2: 4/7 of the requests local.
        let share = share_of_local(&list(&["a", "a", "b", "b", "b", "b", "b"]), 7000);
        assert!((share - 4.0 / 7.0).abs() < 0.01, "{share}");
        // Three zones, local 1 of 6 against 1/3: half local.
        let share = share_of_local(&list(&["a", "b", "b", "c", "c", "c"]), 6000);
        assert!((share - 0.5).abs() < 0.01, "{share}");
    }

    #[test]
    fn no_zone_routing_below_min_cluster_size_or_without_local_endpoints() {
        let small = list(&["a", "a", "b", "b", "b"]);
        assert!(
            matches!(plan("a", &small), Plan::Whole),
            "fewer than {MIN_CLUSTER_SIZE}"
        );
        assert!(matches!(plan("a", &list(&["b"; 6])), Plan::Whole));
    }

    #[test]
    fn topology_hints_pick_the_local_set() {
        let serving = EndpointList::new(vec![
            endpoint(1, "a", Some("a")),
            endpoint(2, "b", Some("a")),
            endpoint(3, "b", Some("b")),
        ]);
        // Small, but hinted: kube-proxy applies hints whatever the size.
        let Plan::Split { local, share, .. } = plan("a", &serving) else {
            panic!("hints ignored")
        };
        assert_eq!(share, SCALE);
        let ports: Vec<u16> = local.iter().map(|e| e.address().port()).collect();
        assert_eq!(ports, [1, 2]);
        // Not every endpoint hinted: hints ignored.
        let partly = EndpointList::new(vec![endpoint(1, "a", Some("a")), endpoint(2, "b", None)]);
        assert!(matches!(plan("a", &partly), Plan::Whole));
    }
}
