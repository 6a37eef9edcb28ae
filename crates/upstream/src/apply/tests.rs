//! Tests of [`UpstreamState`]: the tier rules, and the incremental snapshots against a
//! from-scratch reference build over random update sequences.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::*;
use crate::{OutlierSpec, PickContext, Selector};

/// A selector that checks the change lists it is given: it follows the serving set by
/// pointer through [`Selector::update`] and asserts that the result is the new serving
/// set (what the consistent-hash ring relies on).
struct Tracking {
    members: BTreeSet<usize>,
}

fn ptr(e: &Arc<ServingEndpoint>) -> usize {
    Arc::as_ptr(e) as usize
}

impl Selector for Tracking {
    fn pick<'a>(
        &'a self,
        serving: &'a EndpointList,
        _: &PickContext,
    ) -> Option<&'a Arc<ServingEndpoint>> {
        serving.first()
    }

    fn update(&self, serving: &EndpointList, changes: &Changes<'_>) -> Option<Box<dyn Selector>> {
        let mut members = self.members.clone();
        for e in changes.removed {
            assert!(
                members.remove(&ptr(e)),
                "removed {} was not serving",
                e.address()
            );
        }
        for e in changes.added {
            assert!(members.insert(ptr(e)), "added {} twice", e.address());
        }
        let actual: BTreeSet<usize> = serving.iter().map(ptr).collect();
        assert_eq!(members, actual, "the selector's changes do not add up");
        Some(Box::new(Tracking { members }))
    }
}

struct TrackingFactory;

impl SelectorFactory for TrackingFactory {
    fn build(&self, serving: &EndpointList) -> Box<dyn Selector> {
        Box::new(Tracking {
            members: serving.iter().map(ptr).collect(),
        })
    }
}

/// An upstream with sources of these (priority, weight).
fn upstream(sources: &[(u32, Option<u32>)], panic_mode: PanicMode) -> UpstreamState {
    let sources = sources
        .iter()
        .enumerate()
        .map(|(i, &(priority, weight))| {
            let source = Arc::new(SourceRef {
                registry: format!("r{i}"),
                service: "svc".into(),
            });
            (source, priority, weight)
        })
        .collect();
    UpstreamState::from_parts(sources, Arc::new(TrackingFactory), panic_mode)
}

fn ep(port: u16) -> Endpoint {
    Endpoint::new(SocketAddr::from(([127, 0, 0, 1], port)))
}

fn eps(endpoints: &[(u16, u32)]) -> Vec<Endpoint> {
    endpoints
        .iter()
        .map(|&(port, w)| ep(port).with_weight(w))
        .collect()
}

/// (port, weight) of the serving set.
fn serving(snapshot: &Snapshot) -> Vec<(u16, u32)> {
    snapshot
        .serving
        .iter()
        .map(|e| (e.address().port(), e.weight))
        .collect()
}

#[test]
fn lowest_tier_with_a_healthy_endpoint_serves() {
    let mut state = upstream(&[(1, None), (0, None)], PanicMode::ServeAll);
    state.apply(0, Update::reset(eps(&[(3, 1)])));
    let snap = state.apply(1, Update::reset(eps(&[(1, 1), (2, 2)])));
    assert_eq!(serving(&snap), vec![(1, 1), (2, 2)]);
    assert!(!snap.panic);
    assert_eq!(snap.endpoints.len(), 3);
    // Tier 0 empty: tier 1 serves.
    let snap = state.apply(1, Update::DoesNotExist);
    assert_eq!(serving(&snap), vec![(3, 1)]);
    assert_eq!(
        snap.serving_tier,
        Some(Tier {
            source: 1,
            endpoint: 0
        })
    );
}

#[test]
fn unhealthy_tier_fails_over_and_all_unhealthy_panics() {
    let mut state = upstream(&[(0, None), (1, None)], PanicMode::ServeAll);
    let mut sick = ep(1);
    sick.healthy = false;
    state.apply(0, Update::reset(vec![sick]));
    let snap = state.apply(1, Update::reset(eps(&[(2, 1)])));
    assert_eq!(serving(&snap), vec![(2, 1)]);
    assert!(!snap.panic);
    let mut sick2 = ep(2);
    sick2.healthy = false;
    let snap = state.apply(1, Update::add(vec![sick2]));
    assert!(snap.panic);
    assert_eq!(
        serving(&snap),
        vec![(1, 1)],
        "panic serves the lowest tier in full"
    );
    let mut sick3 = ep(3);
    sick3.healthy = false;
    let snap = state.apply(0, Update::add(vec![sick3]));
    assert_eq!(serving(&snap), vec![(1, 1), (3, 1)]);
}

#[test]
fn reject_panic_mode_serves_nothing_when_all_are_unhealthy() {
    let mut state = upstream(&[(0, None)], PanicMode::Reject);
    let mut e = ep(1);
    e.healthy = false;
    let snap = state.apply(0, Update::reset(vec![e]));
    assert!(snap.panic);
    assert!(snap.serving.is_empty());
    assert_eq!(snap.endpoints.len(), 1);
    assert!(snap.pick(&PickContext::default()).is_none());
}

#[test]
fn endpoint_priority_ranks_within_a_source() {
    let mut state = upstream(&[(0, None)], PanicMode::ServeAll);
    let mut a = ep(1);
    a.priority = 10;
    let mut b = ep(2);
    b.priority = 20;
    let snap = state.apply(0, Update::reset(vec![b, a]));
    assert_eq!(serving(&snap), vec![(1, 1)]);
}

#[test]
fn same_address_from_two_sources_counts_once_at_its_best_tier() {
    let mut state = upstream(&[(1, None), (0, None)], PanicMode::ServeAll);
    state.apply(0, Update::reset(eps(&[(1, 1), (2, 1)])));
    let snap = state.apply(1, Update::reset(eps(&[(2, 5), (3, 1)])));
    let all: Vec<(u16, u32, &str)> = snap
        .endpoints
        .iter()
        .map(|e| (e.address().port(), e.weight, e.source.registry.as_str()))
        .collect();
    assert_eq!(all, vec![(2, 5, "r1"), (3, 1, "r1"), (1, 1, "r0")]);
    // The better source drops it: the other source's entry takes over, same counters.
    let stats = snap.endpoints.iter().next().unwrap().stats.clone();
    let snap = state.apply(1, Update::Remove(vec![ep(2).address]));
    let two = snap
        .endpoints
        .iter()
        .find(|e| e.address().port() == 2)
        .unwrap();
    assert_eq!((two.weight, two.source.registry.as_str()), (1, "r0"));
    assert!(Arc::ptr_eq(&two.stats, &stats));
}

#[test]
fn source_weights_split_a_tier_regardless_of_instance_counts() {
    let mut state = upstream(&[(0, Some(9)), (0, Some(1))], PanicMode::ServeAll);
    state.apply(0, Update::reset(eps(&[(1, 1), (2, 1), (3, 1)])));
    let snap = state.apply(1, Update::reset(eps(&[(4, 1)])));
    let weights = serving(&snap);
    let total: u32 = weights.iter().map(|(_, w)| w).sum();
    let k8s: u32 = weights
        .iter()
        .filter(|(p, _)| *p == 4)
        .map(|(_, w)| w)
        .sum();
    assert_eq!(k8s * 10, total, "{weights:?}");
    // A fifth endpoint in the first source: its share stays 9/10.
    let snap = state.apply(0, Update::add(eps(&[(5, 1)])));
    let weights = serving(&snap);
    let total: u32 = weights.iter().map(|(_, w)| w).sum();
    let k8s: u32 = weights
        .iter()
        .filter(|(p, _)| *p == 4)
        .map(|(_, w)| w)
        .sum();
    assert_eq!(k8s * 10, total, "{weights:?}");
}

#[test]
fn ejected_endpoints_leave_the_serving_set_until_the_ejection_ends() {
    let mut state = upstream(&[(0, None)], PanicMode::ServeAll);
    let snap = state.apply(0, Update::reset(eps(&[(1, 1), (2, 1)])));
    assert_eq!(state.next_ejection_expiry(), None);
    let outlier = OutlierSpec {
        consecutive_failures: 1,
        base_ejection: Duration::from_millis(50),
        count_5xx: false,
    };
    let one = snap
        .serving
        .iter()
        .find(|e| e.address().port() == 1)
        .unwrap();
    assert!(one.stats.record_failure(&outlier));
    let snap = state.refresh_health();
    assert_eq!(serving(&snap), vec![(2, 1)]);
    assert!(!snap.panic);
    let expiry = state.next_ejection_expiry().expect("a deadline");
    // Early: nothing is due yet.
    let same = state.expire_ejections();
    if Instant::now() < expiry {
        assert!(Arc::ptr_eq(&same, &snap));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < expiry {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(5));
    }
    let snap = state.expire_ejections();
    assert_eq!(serving(&snap), vec![(1, 1), (2, 1)]);
    assert_eq!(state.next_ejection_expiry(), None);
}

#[test]
fn an_ejection_renewed_before_its_expiry_was_seen_is_still_scheduled() {
    let mut state = upstream(&[(0, None)], PanicMode::ServeAll);
    let snap = state.apply(0, Update::reset(eps(&[(1, 1), (2, 1)])));
    let one = snap.serving.get(0).unwrap().clone();
    let short = OutlierSpec {
        consecutive_failures: 1,
        base_ejection: Duration::from_millis(20),
        count_5xx: false,
    };
    assert!(one.stats.record_failure(&short));
    state.refresh_health();
    let first = state.next_ejection_expiry().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while one.stats.is_ejected() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(5));
    }
    // Ejected again (for longer) before the actor handled the first expiry.
    let long = OutlierSpec {
        base_ejection: Duration::from_secs(3600),
        ..short
    };
    assert!(one.stats.record_failure(&long));
    let snap = state.refresh_health();
    assert_eq!(serving(&snap), vec![(2, 1)]);
    let snap = state.expire_ejections();
    assert_eq!(serving(&snap), vec![(2, 1)], "still ejected");
    let next = state
        .next_ejection_expiry()
        .expect("the renewed ejection is queued");
    assert!(
        next > first + Duration::from_secs(3000),
        "{next:?} {first:?}"
    );
}

#[test]
fn active_health_flips_by_address() {
    let mut state = upstream(&[(0, None)], PanicMode::ServeAll);
    let snap = state.apply(0, Update::reset(eps(&[(1, 1), (2, 1), (3, 1)])));
    let two = snap.serving.get(1).unwrap().clone();
    two.stats.set_active_healthy(false);
    let snap = state.refresh(&[two.address(), two.address()]);
    assert_eq!(serving(&snap), vec![(1, 1), (3, 1)]);
    let ports: Vec<u16> = snap.endpoints.iter().map(|e| e.address().port()).collect();
    assert_eq!(
        ports,
        vec![1, 3, 2],
        "healthy before unhealthy within a tier"
    );
    assert!(!snap.is_serving(snap.endpoints.get(2).unwrap()));
    two.stats.set_active_healthy(true);
    let snap = state.refresh(&[two.address()]);
    assert_eq!(serving(&snap), vec![(1, 1), (2, 1), (3, 1)]);
}

#[test]
fn one_change_shares_everything_else_with_the_previous_snapshot() {
    let mut state = upstream(&[(0, None)], PanicMode::ServeAll);
    let all: Vec<Endpoint> = (1..=2000).map(|p| ep(p).with_weight(1)).collect();
    let before = state.apply(0, Update::reset(all));
    let after = state.apply(0, Update::add(vec![ep(1000).with_weight(7)]));
    assert_eq!(after.version, before.version + 1);
    let shared = before
        .endpoints
        .iter()
        .zip(after.endpoints.iter())
        .filter(|(a, b)| Arc::ptr_eq(a, b))
        .count();
    assert_eq!(shared, 1999);
    let old = before.endpoints.get(999).unwrap();
    let new = after.endpoints.get(999).unwrap();
    assert_eq!((old.weight, new.weight), (1, 7));
    assert!(
        Arc::ptr_eq(&old.stats, &new.stats),
        "counters survive a change"
    );
    assert_eq!(after.serving.total_weight(), 1999 * 100 + 700);
    // No-op updates publish nothing.
    let same = state.apply(0, Update::add(vec![ep(1000).with_weight(7)]));
    assert!(Arc::ptr_eq(&same, &after));
}

#[test]
fn stale_sources_mark_their_endpoints() {
    let mut state = upstream(&[(0, None), (0, None)], PanicMode::ServeAll);
    state.apply(0, Update::reset(eps(&[(1, 1)])));
    state.apply(1, Update::reset(eps(&[(2, 1)])));
    let snap = state.set_stale(1, true);
    let stale: Vec<(u16, bool)> = snap
        .endpoints
        .iter()
        .map(|e| (e.address().port(), e.stale))
        .collect();
    assert_eq!(stale, vec![(1, false), (2, true)]);
    assert!(Arc::ptr_eq(&state.set_stale(1, true), &snap), "no change");
    let snap = state.set_stale(1, false);
    assert!(snap.endpoints.iter().all(|e| !e.stale));
}

// === The incremental path against a from-scratch build ===

/// One endpoint of a snapshot, compared by value.
#[derive(Debug, PartialEq)]
struct Row {
    address: SocketAddr,
    tier: Tier,
    weight: u32,
    healthy: bool,
    stale: bool,
    source: usize,
    endpoint: Endpoint,
}

fn rows<'a>(list: impl Iterator<Item = &'a Arc<ServingEndpoint>>) -> Vec<Row> {
    list.map(|e| Row {
        address: e.address(),
        tier: e.tier,
        weight: e.weight,
        healthy: e.healthy,
        stale: e.stale,
        source: e.source_index as usize,
        endpoint: (*e.endpoint).clone(),
    })
    .collect()
}

/// What a snapshot of `state` must hold, computed from scratch from the source sets (the
/// algorithm of the original full rebuild), with each address's live counters.
fn reference(state: &UpstreamState) -> (Vec<Row>, Vec<Row>, Option<Tier>, bool) {
    let stats: HashMap<SocketAddr, Arc<EndpointStats>> = state
        .snapshot
        .endpoints
        .iter()
        .map(|e| (e.address(), e.stats.clone()))
        .collect();
    let mut ranked: Vec<(Tier, usize, Arc<Endpoint>)> = Vec::new();
    for (index, s) in state.sources.iter().enumerate() {
        for e in s.set.iter() {
            let tier = Tier {
                source: s.priority,
                endpoint: e.priority,
            };
            ranked.push((tier, index, e.clone()));
        }
    }
    ranked.sort_by_key(|(tier, index, e)| (*tier, *index, e.address));
    let mut seen = HashSet::new();
    let mut endpoints: Vec<Row> = Vec::new();
    for (tier, index, e) in ranked {
        if !seen.insert(e.address) {
            continue;
        }
        let live = stats
            .get(&e.address)
            .is_none_or(|s| s.active_healthy() && !s.is_ejected());
        endpoints.push(Row {
            address: e.address,
            tier,
            weight: e.weight,
            healthy: e.healthy && live,
            stale: state.sources[index].stale,
            source: index,
            endpoint: (*e).clone(),
        });
    }
    let (serving_tier, panic) = match endpoints.iter().find(|e| e.healthy) {
        Some(e) => (Some(e.tier), false),
        None => (endpoints.first().map(|e| e.tier), !endpoints.is_empty()),
    };
    let rejecting = panic && state.panic_mode == PanicMode::Reject;
    let in_serving = |e: &Row| !rejecting && Some(e.tier) == serving_tier && (panic || e.healthy);
    if endpoints
        .iter()
        .any(|e| in_serving(e) && state.sources[e.source].weight.is_some())
    {
        let mut per_source: HashMap<usize, u64> = HashMap::new();
        for e in endpoints.iter().filter(|e| in_serving(e)) {
            *per_source.entry(e.source).or_default() += u64::from(e.weight.max(1));
        }
        for e in endpoints.iter_mut() {
            if in_serving(e) {
                let share = u64::from(state.sources[e.source].weight.unwrap_or(1));
                let w = share * SOURCE_WEIGHT_SCALE * u64::from(e.weight.max(1))
                    / per_source[&e.source];
                e.weight = w.clamp(1, u64::from(u32::MAX)) as u32;
            }
        }
    }
    endpoints.sort_by_key(|e| (e.tier, !e.healthy, e.source, e.address));
    let serving = endpoints
        .iter()
        .filter(|e| in_serving(e))
        .map(|e| Row {
            endpoint: e.endpoint.clone(),
            ..*e
        })
        .collect();
    (endpoints, serving, serving_tier, panic)
}

impl Clone for Row {
    fn clone(&self) -> Self {
        Row {
            endpoint: self.endpoint.clone(),
            ..*self
        }
    }
}

fn check(state: &UpstreamState, what: &str) {
    let snap = state.snapshot();
    let (endpoints, serving, tier, panic) = reference(state);
    assert_eq!(
        rows(snap.endpoints.iter()),
        endpoints,
        "endpoints after {what}"
    );
    assert_eq!(rows(snap.serving.iter()), serving, "serving after {what}");
    assert_eq!(
        (snap.serving_tier, snap.panic),
        (tier, panic),
        "tier after {what}"
    );
    let weight: u64 = snap.serving.iter().map(|e| e.effective_weight()).sum();
    assert_eq!(snap.serving.total_weight(), weight, "weights after {what}");
    for e in snap.endpoints.iter() {
        let listed = snap.serving.iter().any(|s| Arc::ptr_eq(s, e));
        assert_eq!(snap.is_serving(e), listed, "is_serving after {what}");
    }
    let mut counted: BTreeMap<Tier, TierCount> = BTreeMap::new();
    for e in snap.endpoints.iter() {
        let c = counted.entry(e.tier).or_default();
        c.all += 1;
        c.healthy += usize::from(e.healthy);
    }
    let tiers: BTreeMap<Tier, TierCount> = state.tiers.0.iter().copied().collect();
    assert_eq!(counted, tiers, "tier counts after {what}");
}

fn random_endpoint(rng: &mut fastrand::Rng, pool: u16) -> Endpoint {
    let mut e = ep(rng.u16(1..=pool))
        .with_weight(rng.u32(0..4))
        .with_priority(rng.u32(0..2));
    e.healthy = rng.u8(0..10) != 0;
    if rng.bool() {
        e.metadata_mut()
            .insert("zone".into(), format!("z{}", rng.u8(0..2)));
    }
    e
}

/// Random updates, health flips and stale flips; after each, the incremental snapshot
/// equals the reference build, and every selector update adds up.
fn random_sequence(seed: u64, pool: u16, steps: usize) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let sources: Vec<(u32, Option<u32>)> = (0..rng.usize(1..=3))
        .map(|_| {
            let weight = (rng.u8(0..4) == 0).then(|| rng.u32(1..4));
            (rng.u32(0..2), weight)
        })
        .collect();
    let mode = if rng.bool() {
        PanicMode::ServeAll
    } else {
        PanicMode::Reject
    };
    let mut state = upstream(&sources, mode);
    // Long ejections: they must not end while the test compares.
    let outlier = OutlierSpec {
        consecutive_failures: 1,
        base_ejection: Duration::from_secs(3600),
        count_5xx: false,
    };
    let mut version = 0;
    for step in 0..steps {
        let source = rng.usize(..sources.len());
        let what = match rng.u8(0..12) {
            0 | 1 => {
                let add: Vec<Endpoint> = (0..rng.usize(1..4))
                    .map(|_| random_endpoint(&mut rng, pool))
                    .collect();
                state.apply(source, Update::add(add));
                "add"
            }
            2 | 3 => {
                let remove = (0..rng.usize(1..4))
                    .map(|_| ep(rng.u16(1..=pool)).address)
                    .collect();
                state.apply(source, Update::Remove(remove));
                "remove"
            }
            4 => {
                let size = rng.usize(..=usize::from(pool));
                let reset: Vec<Endpoint> =
                    (0..size).map(|_| random_endpoint(&mut rng, pool)).collect();
                state.apply(source, Update::reset(reset));
                "reset"
            }
            5 => {
                // A weight change of an endpoint the source has.
                let current: Vec<Arc<Endpoint>> = state.source_endpoints(source);
                if current.is_empty() {
                    continue;
                }
                let e = &current[rng.usize(..current.len())];
                let changed = (**e).clone().with_weight(e.weight + 1);
                state.apply(source, Update::add(vec![changed]));
                "weight change"
            }
            6 => {
                if rng.u8(0..4) == 0 {
                    state.apply(source, Update::DoesNotExist);
                    "does not exist"
                } else {
                    let mut set = state.source_set(source).clone();
                    set.apply(Update::add(vec![random_endpoint(&mut rng, pool)]));
                    set.apply(Update::Remove(vec![ep(rng.u16(1..=pool)).address]));
                    state.replace_set(source, &set);
                    "replace set"
                }
            }
            7 => {
                state.set_stale(source, rng.bool());
                "stale flip"
            }
            8 | 9 => {
                let snap = state.snapshot().clone();
                if snap.endpoints.is_empty() {
                    continue;
                }
                let e = snap
                    .endpoints
                    .get(rng.usize(..snap.endpoints.len()))
                    .unwrap();
                e.stats.set_active_healthy(!e.stats.active_healthy());
                if rng.bool() {
                    state.refresh(&[e.address()]);
                    "active flip (by address)"
                } else {
                    state.refresh_health();
                    "active flip (scan)"
                }
            }
            10 => {
                let snap = state.snapshot().clone();
                if snap.endpoints.is_empty() {
                    continue;
                }
                let e = snap
                    .endpoints
                    .get(rng.usize(..snap.endpoints.len()))
                    .unwrap();
                e.stats.record_failure(&outlier);
                state.refresh_health();
                "ejection"
            }
            _ => {
                // Many health flips at once (a bulk rebuild when they are many).
                let snap = state.snapshot().clone();
                for e in snap.endpoints.iter() {
                    if rng.u8(0..3) == 0 {
                        e.stats.set_active_healthy(!e.stats.active_healthy());
                    }
                }
                state.refresh_health();
                "many flips"
            }
        };
        let snap = state.snapshot();
        assert!(snap.version >= version, "versions only grow");
        version = snap.version;
        check(&state, &format!("step {step} ({what}), seed {seed}"));
    }
}

#[test]
fn incremental_snapshots_equal_full_builds_small() {
    for seed in 0..40 {
        random_sequence(seed, 12, 300);
    }
}

#[test]
fn incremental_snapshots_equal_full_builds_large() {
    // Large enough for leaf splits and merges and for bulk rebuilds.
    for seed in 100..106 {
        random_sequence(seed, 1500, 150);
    }
}
