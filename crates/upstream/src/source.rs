//! One source's last good set and its status, as the upstream actor keeps them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::SystemTime;

use switchyard_registry::{Endpoint, Update};

/// A source's current endpoints, by address. Applying updates here is the only way the
/// set changes; errors never touch it (the set goes stale instead).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct SourceSet {
    pub(crate) endpoints: BTreeMap<SocketAddr, Endpoint>,
}

impl SourceSet {
    /// Applies one update; returns whether the set changed.
    pub(crate) fn apply(&mut self, update: Update) -> bool {
        match update {
            Update::Reset(endpoints) => {
                let new: BTreeMap<_, _> = endpoints.into_iter().map(|e| (e.address, e)).collect();
                if new == self.endpoints {
                    return false;
                }
                self.endpoints = new;
                true
            }
            Update::Add(endpoints) => {
                let mut changed = false;
                for endpoint in endpoints {
                    if self.endpoints.get(&endpoint.address) != Some(&endpoint) {
                        self.endpoints.insert(endpoint.address, endpoint);
                        changed = true;
                    }
                }
                changed
            }
            Update::Remove(addresses) => {
                let mut changed = false;
                for address in addresses {
                    changed |= self.endpoints.remove(&address).is_some();
                }
                changed
            }
            Update::DoesNotExist => {
                let changed = !self.endpoints.is_empty();
                self.endpoints.clear();
                changed
            }
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
        set.endpoints
            .values()
            .map(|e| (e.address.port(), e.weight))
            .collect()
    }

    #[test]
    fn applies_each_update_kind() {
        let mut set = SourceSet::default();
        assert!(set.apply(Update::Reset(vec![ep(1, 1), ep(2, 1)])));
        assert!(
            !set.apply(Update::Reset(vec![ep(2, 1), ep(1, 1)])),
            "same set, other order"
        );
        assert!(set.apply(Update::Add(vec![ep(2, 5), ep(3, 1)])));
        assert_eq!(ports(&set), vec![(1, 1), (2, 5), (3, 1)]);
        assert!(!set.apply(Update::Add(vec![ep(3, 1)])), "no-op add");
        assert!(set.apply(Update::Remove(vec![ep(1, 1).address])));
        assert!(!set.apply(Update::Remove(vec![ep(9, 1).address])));
        assert_eq!(ports(&set), vec![(2, 5), (3, 1)]);
        assert!(set.apply(Update::DoesNotExist));
        assert!(set.endpoints.is_empty());
        assert!(!set.apply(Update::Reset(vec![])));
    }
}
