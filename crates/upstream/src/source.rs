//! One source's last good set and its status, as the upstream actor keeps them.

use std::borrow::Borrow;
use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use switchyard_registry::{Endpoint, Update};

/// A source's current endpoints, by address. Applying updates here is the only way the
/// set changes; errors never touch it (the set goes stale instead).
///
/// Each endpoint is kept in an `Arc` that the snapshots share, so an endpoint is stored
/// once however many snapshots hold it; the set itself is a hash set of those pointers
/// keyed by address (9–18 bytes an entry).
#[derive(Clone, Debug, Default)]
pub(crate) struct SourceSet {
    endpoints: HashSet<ByAddress>,
}

/// An endpoint hashed and compared by its address only.
#[derive(Clone, Debug)]
struct ByAddress(Arc<Endpoint>);

impl PartialEq for ByAddress {
    fn eq(&self, other: &Self) -> bool {
        self.0.address == other.0.address
    }
}

impl Eq for ByAddress {}

impl Hash for ByAddress {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.address.hash(state);
    }
}

impl Borrow<SocketAddr> for ByAddress {
    fn borrow(&self) -> &SocketAddr {
        &self.0.address
    }
}

/// One address whose endpoint changed in a set, with the endpoint it had before (`None`:
/// it was not in the set). What it has now is in the set.
pub(crate) type Change = (SocketAddr, Option<Arc<Endpoint>>);

impl PartialEq for SourceSet {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len()
            && self
                .endpoints
                .iter()
                .all(|e| other.get(&e.0.address).is_some_and(|o| **o == *e.0))
    }
}

impl SourceSet {
    /// Number of endpoints.
    pub(crate) fn len(&self) -> usize {
        self.endpoints.len()
    }

    /// The endpoint at `address`.
    pub(crate) fn get(&self, address: &SocketAddr) -> Option<&Arc<Endpoint>> {
        self.endpoints.get(address).map(|e| &e.0)
    }

    /// Every endpoint, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Arc<Endpoint>> {
        self.endpoints.iter().map(|e| &e.0)
    }

    /// Applies one update; returns what changed (nothing: the set did not change), each
    /// address once.
    pub(crate) fn apply(&mut self, update: Update) -> Vec<Change> {
        match update {
            Update::Reset(endpoints) => self.replace(endpoints),
            Update::Add(endpoints) => {
                let mut changes = Vec::new();
                for endpoint in endpoints {
                    if self
                        .get(&endpoint.address)
                        .is_some_and(|e| **e == *endpoint)
                    {
                        continue;
                    }
                    let address = endpoint.address;
                    let old = self.endpoints.replace(ByAddress(endpoint));
                    changes.push((address, old.map(|e| e.0)));
                }
                if changes.len() > 1 {
                    // An address added twice in one update: what it had before is the
                    // first change's.
                    changes.sort_by_key(|(address, _)| *address);
                    changes.dedup_by_key(|(address, _)| *address);
                }
                changes
            }
            Update::Remove(addresses) => addresses
                .into_iter()
                .filter_map(|address| Some((address, Some(self.endpoints.take(&address)?.0))))
                .collect(),
            Update::DoesNotExist => self
                .endpoints
                .drain()
                .map(|e| (e.0.address, Some(e.0)))
                .collect(),
        }
    }

    /// Replaces the whole set (a later duplicate address wins); returns what changed.
    /// Endpoints equal to the ones already held keep their `Arc`, so snapshots keep
    /// sharing them.
    pub(crate) fn replace(&mut self, endpoints: Vec<Arc<Endpoint>>) -> Vec<Change> {
        let mut next = HashSet::with_capacity(endpoints.len());
        for endpoint in endpoints {
            let kept = match self.endpoints.get(&endpoint.address) {
                Some(old) if *old.0 == *endpoint => old.clone(),
                _ => ByAddress(endpoint),
            };
            next.replace(kept);
        }
        let mut changes: Vec<Change> = next
            .iter()
            .filter_map(|e| {
                let old = self.get(&e.0.address);
                match old {
                    Some(old) if Arc::ptr_eq(old, &e.0) => None,
                    _ => Some((e.0.address, old.cloned())),
                }
            })
            .collect();
        changes.extend(
            self.endpoints
                .iter()
                .filter(|e| !next.contains(&e.0.address))
                .map(|e| (e.0.address, Some(e.0.clone()))),
        );
        self.endpoints = next;
        changes
    }

    /// How many endpoints the set would hold after `update`, without applying it.
    pub(crate) fn len_after(&self, update: &Update) -> usize {
        match update {
            Update::Reset(endpoints) => endpoints
                .iter()
                .map(|e| e.address)
                .collect::<HashSet<_>>()
                .len(),
            Update::Add(endpoints) => {
                let new: HashSet<SocketAddr> = endpoints
                    .iter()
                    .map(|e| e.address)
                    .filter(|a| !self.endpoints.contains(a))
                    .collect();
                self.len() + new.len()
            }
            Update::Remove(addresses) => {
                let gone: HashSet<&SocketAddr> = addresses
                    .iter()
                    .filter(|a| self.endpoints.contains(*a))
                    .collect();
                self.len() - gone.len()
            }
            Update::DoesNotExist => 0,
        }
    }
}

/// What the admin API and readiness know about one source.
#[derive(Clone, Debug)]
pub struct SourceStatus {
    /// The registry's name in config.
    pub registry: String,
    /// The registry's `type`.
    pub registry_kind: &'static str,
    /// The service, as the source names it.
    pub service: String,
    /// Whether the first complete answer has arrived.
    pub synced: bool,
    /// Whether the set was loaded from the state directory (and no answer came yet).
    pub restored: bool,
    /// Whether a shrunken answer is being held back by the shrink guard.
    pub guarded: bool,
    /// Whether the registry is failing now, so the set is the last good one.
    pub stale: bool,
    /// Endpoints in the set now.
    pub endpoints: usize,
    /// When the set last changed or was confirmed.
    pub last_update: Option<SystemTime>,
    /// The last error, while the source is stale.
    pub last_error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(port: u16, weight: u32) -> Endpoint {
        Endpoint::new(SocketAddr::from(([127, 0, 0, 1], port))).with_weight(weight)
    }

    fn ports(set: &SourceSet) -> Vec<(u16, u32)> {
        let mut out: Vec<(u16, u32)> = set.iter().map(|e| (e.address.port(), e.weight)).collect();
        out.sort_unstable();
        out
    }

    fn changed(changes: Vec<Change>) -> Vec<(u16, Option<u32>)> {
        let mut out: Vec<(u16, Option<u32>)> = changes
            .into_iter()
            .map(|(a, old)| (a.port(), old.map(|e| e.weight)))
            .collect();
        out.sort_unstable();
        out
    }

    #[test]
    fn applies_each_update_kind() {
        let mut set = SourceSet::default();
        let reset = Update::reset(vec![ep(1, 1), ep(2, 1)]);
        assert_eq!(set.len_after(&reset), 2);
        assert_eq!(changed(set.apply(reset)), vec![(1, None), (2, None)]);
        let kept = set.get(&ep(1, 1).address).unwrap().clone();
        assert!(
            set.apply(Update::reset(vec![ep(2, 1), ep(1, 1)]))
                .is_empty(),
            "same set, other order"
        );
        assert!(
            Arc::ptr_eq(&kept, set.get(&ep(1, 1).address).unwrap()),
            "an unchanged endpoint keeps its allocation"
        );
        let add = Update::add(vec![ep(2, 5), ep(3, 1), ep(3, 2)]);
        assert_eq!(set.len_after(&add), 3);
        assert_eq!(changed(set.apply(add)), vec![(2, Some(1)), (3, None)]);
        assert_eq!(ports(&set), vec![(1, 1), (2, 5), (3, 2)]);
        assert!(
            set.apply(Update::add(vec![ep(3, 2)])).is_empty(),
            "no-op add"
        );
        let remove = Update::Remove(vec![ep(1, 1).address, ep(1, 1).address, ep(9, 1).address]);
        assert_eq!(set.len_after(&remove), 2);
        assert_eq!(changed(set.apply(remove)), vec![(1, Some(1))]);
        assert!(set.apply(Update::Remove(vec![ep(9, 1).address])).is_empty());
        assert_eq!(ports(&set), vec![(2, 5), (3, 2)]);
        assert_eq!(
            changed(set.apply(Update::reset(vec![ep(3, 2), ep(4, 1), ep(4, 7)]))),
            vec![(2, Some(5)), (4, None)]
        );
        assert_eq!(ports(&set), vec![(3, 2), (4, 7)]);
        assert_eq!(set.len_after(&Update::DoesNotExist), 0);
        assert_eq!(
            changed(set.apply(Update::DoesNotExist)),
            vec![(3, Some(2)), (4, Some(7))]
        );
        assert_eq!(set.len(), 0);
        assert!(set.apply(Update::reset(vec![])).is_empty());
    }

    #[test]
    fn equality_is_by_content() {
        let mut a = SourceSet::default();
        let mut b = SourceSet::default();
        a.apply(Update::reset(vec![ep(1, 1), ep(2, 1)]));
        b.apply(Update::reset(vec![ep(2, 1), ep(1, 1)]));
        assert_eq!(a, b);
        b.apply(Update::add(vec![ep(2, 3)]));
        assert_ne!(a, b);
    }
}
