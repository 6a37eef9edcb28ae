//! Applying registry updates to an upstream: the incremental snapshot builder.
//!
//! [`UpstreamState`] owns an upstream's source sets and the endpoint list of its current
//! [`Snapshot`], and turns each change into the next snapshot by patching the previous one
//! instead of rebuilding it:
//!
//! - the list is a persistent [`Chunked`] sequence kept sorted by (tier, healthy first,
//!   source, address), so an added, removed or changed endpoint is one binary search and
//!   one leaf copy, and every unchanged `Arc<ServingEndpoint>` (with its counters) is
//!   shared with the previous snapshot;
//! - because healthy endpoints sort first within a tier, the serving set is a contiguous
//!   range of that list: no second copy;
//! - endpoints per tier are counted, so the serving tier and panic mode are found without
//!   a scan;
//! - the balancer's selector is derived from the previous one with the list of endpoints
//!   that entered and left the serving set ([`Selector::update`]), unless the serving tier
//!   changed;
//! - passive-health ejections are kept in a heap of deadlines, so nothing scans the
//!   counters to find the next expiry.
//!
//! Full rebuilds remain for what changes everything anyway, and they still share what did
//! not change: a `Reset` (or a health scan) that changes more than a sixteenth of the
//! endpoints, a source going stale or fresh, and upstreams whose sources have weights
//! (every serving endpoint's share depends on its source's total).
//!
//! A change's cost is O(√n) for an upstream of n endpoints (leaf size plus leaf count),
//! and nothing here depends on the number of other upstreams.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use switchyard_registry::{Endpoint, Update};

use crate::chunked::Chunked;
use crate::source::{Change, SourceSet};
use crate::{
    Changes, EndpointList, EndpointStats, PanicMode, SelectorFactory, ServingEndpoint, Snapshot,
    SourceRef, Tier, UpstreamSpec,
};

/// Changes touching at least this many endpoints, and more than 1/`BULK_FRACTION` of
/// them, rebuild the list in one sort instead of patching it.
const BULK_MIN: usize = 64;
const BULK_FRACTION: usize = 16;

/// Resolution of source-weight splits: a source of weight 1 spreads this many weight
/// units over its endpoints.
const SOURCE_WEIGHT_SCALE: u64 = 1000;

/// An upstream's sources and current snapshot, changed synchronously: what the upstream's
/// actor runs, public so that benchmarks and tests measure the same code.
pub struct UpstreamState {
    sources: Vec<SourceState>,
    factory: Arc<dyn SelectorFactory>,
    panic_mode: PanicMode,
    /// Every endpoint, sorted by [`ServingEndpoint::key`]; shared with the snapshot.
    all: Arc<Chunked<Arc<ServingEndpoint>>>,
    /// Endpoints per tier.
    tiers: TierCounts,
    snapshot: Arc<Snapshot>,
    /// Ejection deadlines, soonest first (stale entries are harmless: a due entry only
    /// re-evaluates its endpoint).
    ejections: BinaryHeap<Reverse<(Instant, SocketAddr)>>,
    /// The deadline in `ejections` of each ejected address, so that none is queued twice.
    scheduled: HashMap<SocketAddr, Instant>,
    /// Whether any source has a weight (tiers then split traffic by source).
    split: bool,
}

struct SourceState {
    source: Arc<SourceRef>,
    priority: u32,
    weight: Option<u32>,
    set: SourceSet,
    stale: bool,
    /// Times the set changed.
    changes: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct TierCount {
    all: usize,
    healthy: usize,
}

/// Endpoints per tier, by tier (a sorted vector: upstreams have a few tiers).
#[derive(Debug, Default)]
struct TierCounts(Vec<(Tier, TierCount)>);

impl TierCounts {
    fn add(&mut self, tier: Tier, healthy: bool) {
        let at = match self.0.binary_search_by_key(&tier, |(t, _)| *t) {
            Ok(at) => at,
            Err(at) => {
                self.0.insert(at, (tier, TierCount::default()));
                at
            }
        };
        let count = &mut self.0[at].1;
        count.all += 1;
        count.healthy += usize::from(healthy);
    }

    fn remove(&mut self, tier: Tier, healthy: bool) {
        let at = self
            .0
            .binary_search_by_key(&tier, |(t, _)| *t)
            .expect("counted");
        let count = &mut self.0[at].1;
        count.all -= 1;
        count.healthy -= usize::from(healthy);
        if count.all == 0 {
            self.0.remove(at);
        }
    }

    fn get(&self, tier: Tier) -> TierCount {
        self.0
            .binary_search_by_key(&tier, |(t, _)| *t)
            .map_or_else(|_| TierCount::default(), |at| self.0[at].1)
    }
}

/// The entry an address should have: the best-ranked source that has it.
struct Winner {
    tier: Tier,
    source: usize,
    endpoint: Arc<Endpoint>,
}

/// What one operation changed, for the selector.
#[derive(Default)]
struct Delta {
    removed: Vec<Arc<ServingEndpoint>>,
    added: Vec<Arc<ServingEndpoint>>,
    /// The list was rebuilt or many entries replaced: build the selector afresh.
    rebuild: bool,
    changed: bool,
}

/// Health of an entry now: registry, active check, passive ejection.
fn health(e: &ServingEndpoint) -> bool {
    e.stats.expire_ejection();
    e.endpoint.healthy && e.stats.active_healthy() && !e.stats.is_ejected()
}

impl UpstreamState {
    /// The state of a new upstream: every source empty, an empty snapshot (version 0).
    pub fn new(spec: &UpstreamSpec) -> Self {
        let sources = spec
            .sources
            .iter()
            .map(|s| {
                let source = Arc::new(SourceRef {
                    registry: s.registry_name.clone(),
                    service: s.query.service.clone(),
                });
                (source, s.priority, s.weight)
            })
            .collect();
        UpstreamState::from_parts(sources, spec.selector.clone(), spec.panic_mode)
    }

    /// The state of an upstream with these sources (reference, priority, weight).
    pub(crate) fn from_parts(
        sources: Vec<(Arc<SourceRef>, u32, Option<u32>)>,
        factory: Arc<dyn SelectorFactory>,
        panic_mode: PanicMode,
    ) -> Self {
        assert!(
            sources.len() <= usize::from(u16::MAX),
            "an upstream has at most 65535 sources"
        );
        let split = sources.iter().any(|(_, _, weight)| weight.is_some());
        UpstreamState {
            sources: sources
                .into_iter()
                .map(|(source, priority, weight)| SourceState {
                    source,
                    priority,
                    weight,
                    set: SourceSet::default(),
                    stale: false,
                    changes: 0,
                })
                .collect(),
            snapshot: Arc::new(Snapshot::empty(factory.as_ref())),
            factory,
            panic_mode,
            all: Arc::new(Chunked::new()),
            tiers: TierCounts::default(),
            ejections: BinaryHeap::new(),
            scheduled: HashMap::new(),
            split,
        }
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> &Arc<Snapshot> {
        &self.snapshot
    }

    /// Applies one update of source `source` (its index in the upstream's config) and
    /// returns the snapshot that results: a new one (next version) when anything in it
    /// changed, else the current one.
    pub fn apply(&mut self, source: usize, update: Update) -> Arc<Snapshot> {
        let changes = self.sources[source].set.apply(update);
        self.on_set_changed(source, changes)
    }

    /// Replaces source `source`'s whole set (a set released by the shrink guard).
    pub(crate) fn replace_set(&mut self, source: usize, set: &SourceSet) -> Arc<Snapshot> {
        let changes = self.sources[source]
            .set
            .replace(set.iter().cloned().collect());
        self.on_set_changed(source, changes)
    }

    /// Marks source `source` stale (its registry is failing) or fresh again.
    pub fn set_stale(&mut self, source: usize, stale: bool) -> Arc<Snapshot> {
        if std::mem::replace(&mut self.sources[source].stale, stale) == stale {
            return self.snapshot.clone();
        }
        let index = source as u16;
        let mut replaced = false;
        Arc::make_mut(&mut self.all).replace_all(|e| {
            (e.source_index == index).then(|| {
                replaced = true;
                Arc::new(ServingEndpoint {
                    stale,
                    ..ServingEndpoint::clone(e)
                })
            })
        });
        if !replaced {
            return self.snapshot.clone();
        }
        self.publish(Delta {
            rebuild: true,
            changed: true,
            ..Delta::default()
        })
    }

    /// Publishes the current state again as a new version, even when nothing changed.
    pub fn republish(&mut self) -> Arc<Snapshot> {
        self.publish(Delta::default())
    }

    /// Re-evaluates every endpoint's health (after an ejection or an active-check flip the
    /// caller cannot name): O(n) reads of the counters, then a patch per change.
    pub fn refresh_health(&mut self) -> Arc<Snapshot> {
        let mut flipped: Vec<Arc<ServingEndpoint>> = Vec::new();
        let mut ejected: Vec<(SocketAddr, Instant)> = Vec::new();
        for e in self.all.iter() {
            if health(e) != e.healthy {
                flipped.push(e.clone());
            }
            if let Some(until) = e.stats.ejected_until() {
                ejected.push((e.address(), until));
            }
        }
        for (address, until) in ejected {
            self.schedule(address, until);
        }
        if flipped.is_empty() {
            return self.snapshot.clone();
        }
        let mut delta = Delta::default();
        if flipped.len() >= BULK_MIN && flipped.len() * BULK_FRACTION > self.all.len() {
            self.rebuild_all(&mut delta);
        } else {
            for e in flipped {
                self.reevaluate(&e, &mut delta);
            }
        }
        self.publish(delta)
    }

    /// Re-evaluates the health of the endpoints at `addresses`.
    pub fn refresh(&mut self, addresses: &[SocketAddr]) -> Arc<Snapshot> {
        if addresses.len() >= BULK_MIN && addresses.len() * BULK_FRACTION > self.all.len() {
            return self.refresh_health();
        }
        let mut delta = Delta::default();
        let mut seen = HashSet::with_capacity(addresses.len());
        for &address in addresses {
            if !seen.insert(address) {
                continue;
            }
            let Some(winner) = self.winner(address) else {
                continue;
            };
            let Some(index) = self.find(winner.tier, winner.source, address) else {
                continue;
            };
            let e = self.all.get(index).expect("found").clone();
            if health(&e) != e.healthy {
                self.reevaluate(&e, &mut delta);
            } else if let Some(until) = e.stats.ejected_until() {
                self.schedule(address, until);
            }
        }
        if !delta.changed {
            return self.snapshot.clone();
        }
        self.publish(delta)
    }

    /// When the next passive-health ejection ends, if any endpoint is ejected.
    pub fn next_ejection_expiry(&self) -> Option<Instant> {
        self.ejections.peek().map(|Reverse((at, _))| *at)
    }

    /// Re-evaluates the endpoints whose ejection has ended by now.
    pub fn expire_ejections(&mut self) -> Arc<Snapshot> {
        let now = Instant::now();
        let mut due = Vec::new();
        while let Some(&Reverse((at, address))) = self.ejections.peek() {
            if at > now {
                break;
            }
            self.ejections.pop();
            if self.scheduled.get(&address) == Some(&at) {
                self.scheduled.remove(&address);
            }
            due.push(address);
        }
        self.refresh(&due)
    }

    /// Queues the end of `address`'s ejection, unless it is queued already.
    fn schedule(&mut self, address: SocketAddr, until: Instant) {
        if self.scheduled.insert(address, until) != Some(until) {
            self.ejections.push(Reverse((until, address)));
        }
    }

    /// Endpoints in source `source`'s set.
    pub fn source_len(&self, source: usize) -> usize {
        self.sources[source].set.len()
    }

    /// How many times source `source`'s set changed so far.
    pub(crate) fn set_changes(&self, source: usize) -> u64 {
        self.sources[source].changes
    }

    /// Source `source`'s set.
    pub(crate) fn source_set(&self, source: usize) -> &SourceSet {
        &self.sources[source].set
    }

    /// Source `source`'s endpoints (shared), for the state store.
    pub(crate) fn source_endpoints(&self, source: usize) -> Vec<Arc<Endpoint>> {
        self.sources[source].set.iter().cloned().collect()
    }

    fn on_set_changed(&mut self, source: usize, changes: Vec<Change>) -> Arc<Snapshot> {
        if changes.is_empty() {
            return self.snapshot.clone();
        }
        self.sources[source].changes += 1;
        let mut delta = Delta::default();
        if changes.len() >= BULK_MIN && changes.len() * BULK_FRACTION > self.all.len() {
            self.rebuild_all(&mut delta);
        } else {
            for (address, old) in changes {
                let before = self.winner_with(address, source, old.as_ref());
                let now = self.sources[source].set.get(&address);
                let after = self.winner_with(address, source, now);
                self.patch(address, before, after, &mut delta);
            }
        }
        if !delta.changed {
            return self.snapshot.clone();
        }
        self.publish(delta)
    }

    /// The best-ranked (tier, then config order) source holding `address`, counting
    /// `this` as source `source`'s entry.
    fn winner_with(
        &self,
        address: SocketAddr,
        source: usize,
        this: Option<&Arc<Endpoint>>,
    ) -> Option<Winner> {
        let mut best: Option<Winner> = None;
        for (index, s) in self.sources.iter().enumerate() {
            let entry = if index == source {
                this
            } else {
                s.set.get(&address)
            };
            let Some(endpoint) = entry else {
                continue;
            };
            let tier = Tier {
                source: s.priority,
                endpoint: endpoint.priority,
            };
            let better = match &best {
                Some(b) => (tier, index) < (b.tier, b.source),
                None => true,
            };
            if better {
                best = Some(Winner {
                    tier,
                    source: index,
                    endpoint: endpoint.clone(),
                });
            }
        }
        best
    }

    fn winner(&self, address: SocketAddr) -> Option<Winner> {
        self.winner_with(address, usize::MAX, None)
    }

    /// Moves `address`'s entry from what `before` made it to what `after` makes it.
    fn patch(
        &mut self,
        address: SocketAddr,
        before: Option<Winner>,
        after: Option<Winner>,
        delta: &mut Delta,
    ) {
        if let (Some(b), Some(a)) = (&before, &after) {
            if b.source == a.source && Arc::ptr_eq(&b.endpoint, &a.endpoint) {
                return; // A change in a source that this address's entry does not come from.
            }
        }
        let old = before.and_then(|b| self.take(b.tier, b.source, address, delta));
        if let Some(after) = after {
            let e = self.make(after, old.as_deref());
            self.put(e, delta);
        }
    }

    /// Replaces `e` (in the list) by an entry with its current health.
    fn reevaluate(&mut self, e: &Arc<ServingEndpoint>, delta: &mut Delta) {
        let source = e.source_index as usize;
        let Some(old) = self.take(e.tier, source, e.address(), delta) else {
            return;
        };
        let winner = Winner {
            tier: old.tier,
            source,
            endpoint: old.endpoint.clone(),
        };
        let new = self.make(winner, Some(&old));
        self.put(new, delta);
    }

    /// The index of the entry of `address` from `source` in `tier`, healthy or not.
    fn find(&self, tier: Tier, source: usize, address: SocketAddr) -> Option<usize> {
        for unhealthy in [false, true] {
            let key = (tier, unhealthy, source as u16, address);
            let index = self.all.partition_point(|e| e.key() < key);
            if self.all.get(index).is_some_and(|e| e.key() == key) {
                return Some(index);
            }
        }
        None
    }

    /// Removes the entry of `address` from `source` in `tier`; returns it.
    fn take(
        &mut self,
        tier: Tier,
        source: usize,
        address: SocketAddr,
        delta: &mut Delta,
    ) -> Option<Arc<ServingEndpoint>> {
        let index = self.find(tier, source, address);
        debug_assert!(index.is_some(), "no entry for {address} in {tier:?}");
        let e = Arc::make_mut(&mut self.all).remove(index?);
        self.tiers.remove(e.tier, e.healthy);
        // Every operation touches an address once, so what it removes comes from the
        // previous snapshot, never from itself.
        debug_assert!(!delta.added.iter().any(|a| Arc::ptr_eq(a, &e)));
        delta.removed.push(e.clone());
        delta.changed = true;
        Some(e)
    }

    /// Inserts `e` at its place.
    fn put(&mut self, e: Arc<ServingEndpoint>, delta: &mut Delta) {
        let key = e.key();
        let index = self.all.partition_point(|x| x.key() < key);
        self.tiers.add(e.tier, e.healthy);
        Arc::make_mut(&mut self.all).insert(index, e.clone());
        delta.added.push(e);
        delta.changed = true;
    }

    /// A new entry for `winner`, keeping the counters (and address text) of `previous`,
    /// the entry the address had, if any.
    fn make(&mut self, winner: Winner, previous: Option<&ServingEndpoint>) -> Arc<ServingEndpoint> {
        let address = winner.endpoint.address;
        let stats = previous.map_or_else(|| Arc::new(EndpointStats::new()), |p| p.stats.clone());
        stats.expire_ejection();
        let healthy = winner.endpoint.healthy && stats.active_healthy() && !stats.is_ejected();
        if let Some(until) = stats.ejected_until() {
            self.schedule(address, until);
        }
        let source = &self.sources[winner.source];
        Arc::new(ServingEndpoint {
            weight: winner.endpoint.weight,
            endpoint: winner.endpoint,
            source: source.source.clone(),
            tier: winner.tier,
            source_index: winner.source as u16,
            stale: source.stale,
            healthy,
            stats,
        })
    }

    /// Rebuilds the whole list from the sets, keeping every entry that did not change and
    /// every address's counters.
    fn rebuild_all(&mut self, delta: &mut Delta) {
        let mut old: Vec<Arc<ServingEndpoint>> = self.all.iter().cloned().collect();
        old.sort_unstable_by_key(|e| e.address());
        let mut winners: Vec<(SocketAddr, Tier, usize, Arc<Endpoint>)> = Vec::new();
        for (index, s) in self.sources.iter().enumerate() {
            winners.extend(s.set.iter().map(|e| {
                let tier = Tier {
                    source: s.priority,
                    endpoint: e.priority,
                };
                (e.address, tier, index, e.clone())
            }));
        }
        winners.sort_unstable_by_key(|w| (w.0, w.1, w.2));
        winners.dedup_by_key(|w| w.0);
        let mut list = Vec::with_capacity(winners.len());
        let mut next_old = 0;
        for (address, tier, source, endpoint) in winners {
            while old.get(next_old).is_some_and(|o| o.address() < address) {
                next_old += 1;
            }
            let previous = old.get(next_old).filter(|o| o.address() == address);
            let unchanged = previous.filter(|o| {
                o.source_index as usize == source
                    && Arc::ptr_eq(&o.endpoint, &endpoint)
                    && o.tier == tier
                    && o.stale == self.sources[source].stale
                    && o.healthy == health(o)
            });
            list.push(match unchanged {
                Some(o) => o.clone(),
                None => {
                    let winner = Winner {
                        tier,
                        source,
                        endpoint,
                    };
                    self.make(winner, previous.map(|p| &**p))
                }
            });
        }
        list.sort_unstable_by_key(|e| e.key());
        self.tiers = TierCounts::default();
        for e in &list {
            self.tiers.add(e.tier, e.healthy);
        }
        self.all = Arc::new(Chunked::from_vec(list));
        delta.rebuild = true;
        delta.changed = true;
    }

    /// Source-weight splits: the serving endpoints of a source with a weight share that
    /// weight (in proportion to their own); every other entry has its own weight. Returns
    /// whether any entry changed.
    fn split_weights(
        &mut self,
        serving: &dyn Fn(&ServingEndpoint) -> bool,
        start: usize,
        end: usize,
    ) -> bool {
        let any = self
            .all
            .range(start, end)
            .any(|e| self.sources[e.source_index as usize].weight.is_some());
        let mut totals: HashMap<u16, u64> = HashMap::new();
        if any {
            for e in self.all.range(start, end) {
                *totals.entry(e.source_index).or_default() += u64::from(e.endpoint.weight.max(1));
            }
        }
        let shares: Vec<u64> = self
            .sources
            .iter()
            .map(|s| u64::from(s.weight.unwrap_or(1)))
            .collect();
        let mut changed = false;
        Arc::make_mut(&mut self.all).replace_all(|e| {
            let weight = if any && serving(e) {
                let total = totals[&e.source_index];
                let share = shares[e.source_index as usize];
                let w = share * SOURCE_WEIGHT_SCALE * u64::from(e.endpoint.weight.max(1)) / total;
                w.clamp(1, u64::from(u32::MAX)) as u32
            } else {
                e.endpoint.weight
            };
            (weight != e.weight).then(|| {
                changed = true;
                Arc::new(ServingEndpoint {
                    weight,
                    ..ServingEndpoint::clone(e)
                })
            })
        });
        changed
    }

    /// Makes and stores the next snapshot.
    fn publish(&mut self, mut delta: Delta) -> Arc<Snapshot> {
        // The serving tier: the lowest with a healthy endpoint; else panic on the lowest.
        let healthy_tier = self
            .tiers
            .0
            .iter()
            .find(|(_, count)| count.healthy > 0)
            .map(|(tier, _)| *tier);
        let (serving_tier, panic) = match healthy_tier {
            Some(tier) => (Some(tier), false),
            None => (
                self.tiers.0.first().map(|(tier, _)| *tier),
                !self.tiers.0.is_empty(),
            ),
        };
        let rejecting = panic && self.panic_mode == PanicMode::Reject;
        let (start, end) = match serving_tier {
            Some(tier) if !rejecting => {
                let start = self
                    .all
                    .partition_point(|e| (e.tier, !e.healthy) < (tier, false));
                let count = self.tiers.get(tier);
                (start, start + if panic { count.all } else { count.healthy })
            }
            _ => (0, 0),
        };
        let in_serving = |e: &ServingEndpoint| {
            !rejecting && Some(e.tier) == serving_tier && (panic || e.healthy)
        };
        if self.split && self.split_weights(&in_serving, start, end) {
            delta.rebuild = true;
        }
        let serving = EndpointList::view(&self.all, start, end);
        let previous = &self.snapshot;
        let selector =
            if !delta.rebuild && previous.serving_tier == serving_tier && previous.panic == panic {
                let removed: Vec<_> = delta
                    .removed
                    .into_iter()
                    .filter(|e| previous.is_serving(e))
                    .collect();
                let added: Vec<_> = delta.added.into_iter().filter(|e| in_serving(e)).collect();
                let changes = Changes {
                    removed: &removed,
                    added: &added,
                };
                previous.selector.update(&serving, &changes)
            } else {
                None
            };
        let snapshot = Arc::new(Snapshot {
            selector: selector.unwrap_or_else(|| self.factory.build(&serving)),
            endpoints: EndpointList::view(&self.all, 0, self.all.len()),
            serving,
            serving_tier,
            panic,
            version: previous.version + 1,
        });
        self.snapshot = snapshot.clone();
        snapshot
    }
}

impl std::fmt::Debug for UpstreamState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamState")
            .field("sources", &self.sources.len())
            .field("snapshot", &self.snapshot)
            .finish()
    }
}

#[cfg(test)]
mod tests;
