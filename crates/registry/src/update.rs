//! The stream of changes a registry pushes for one watched service.

use std::net::SocketAddr;
use std::sync::Arc;

use futures::stream::BoxStream;

use crate::{Endpoint, RegistryError};

/// A change to the set of endpoints of one watched service.
///
/// Modelled on linkerd2-proxy's `resolve::Update`. A consumer applies updates in order:
/// `Reset` replaces the whole set, `Add` inserts or replaces endpoints by address,
/// `Remove` deletes by address, and `DoesNotExist` empties the set.
///
/// Endpoints travel as `Arc`s: a backend that keeps its current set (etcd, Kubernetes)
/// hands over the same allocation that the upstream cache then stores and serves from, so
/// an instance is held once in memory, not once per layer (at 100,000 endpoints each copy
/// cost ~11 MiB).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Update {
    /// The complete current set: replaces everything known before. An empty `Reset` is an
    /// authoritative "zero instances" and empties the set.
    Reset(Vec<Arc<Endpoint>>),
    /// Endpoints added, or changed in place (same address, new weight or metadata).
    Add(Vec<Arc<Endpoint>>),
    /// Endpoints gone, by address.
    Remove(Vec<SocketAddr>),
    /// The registry says authoritatively that the service does not exist (DNS NXDOMAIN,
    /// no EndpointSlice): the set is empty.
    DoesNotExist,
}

impl Update {
    /// A `Reset` of endpoints not shared with anything yet (each goes into its own `Arc`).
    pub fn reset(endpoints: impl IntoIterator<Item = Endpoint>) -> Update {
        Update::Reset(endpoints.into_iter().map(Arc::new).collect())
    }

    /// An `Add` of endpoints not shared with anything yet.
    pub fn add(endpoints: impl IntoIterator<Item = Endpoint>) -> Update {
        Update::Add(endpoints.into_iter().map(Arc::new).collect())
    }

    /// The updates for a change computed as `added` (new or changed) and `removed`: `Add`
    /// before `Remove`, so the set never dips while an instance moves; an empty side sends
    /// nothing.
    pub fn changes(added: Vec<Arc<Endpoint>>, removed: Vec<SocketAddr>) -> Vec<Update> {
        let mut updates = Vec::new();
        if !added.is_empty() {
            updates.push(Update::Add(added));
        }
        if !removed.is_empty() {
            updates.push(Update::Remove(removed));
        }
        updates
    }
}

/// The updates that take a consumer from set `old` to set `new`, both sorted by address
/// with each address once: `Add` (new or changed endpoints, `new`'s own allocations) before
/// `Remove`, so the set never dips while an instance moves; nothing when they are equal.
/// A merge walk: O(old + new), no map built.
pub fn diff_sorted(old: &[Arc<Endpoint>], new: &[Arc<Endpoint>]) -> Vec<Update> {
    let mut added = Vec::new();
    let mut removed = Vec::new();
    let (mut old, mut new) = (old.iter().peekable(), new.iter().peekable());
    loop {
        match (old.peek(), new.peek()) {
            (Some(o), Some(n)) if o.address == n.address => {
                if o != n {
                    added.push(Arc::clone(n));
                }
                old.next();
                new.next();
            }
            (Some(o), Some(n)) if o.address < n.address => {
                removed.push(o.address);
                old.next();
            }
            (Some(o), None) => {
                removed.push(o.address);
                old.next();
            }
            (_, Some(n)) => {
                added.push(Arc::clone(n));
                new.next();
            }
            (None, None) => break,
        }
    }
    Update::changes(added, removed)
}

/// The stream [`crate::Registry::watch`] returns.
///
/// An `Err` item means the stream is broken; the consumer stops reading it and watches
/// again after a backoff (see [`crate::recover`]).
pub type UpdateStream = BoxStream<'static, Result<Update, RegistryError>>;

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[(&str, u32)]) -> Vec<Arc<Endpoint>> {
        let mut set: Vec<Arc<Endpoint>> = items
            .iter()
            .map(|(address, weight)| {
                Arc::new(Endpoint::new(address.parse().unwrap()).with_weight(*weight))
            })
            .collect();
        set.sort_by_key(|e| e.address);
        set
    }

    /// Diffs `old` into `new` and compares with updates written as `+addr/weight` and `-addr`.
    fn check(old: &[(&str, u32)], new: &[(&str, u32)], expected: &[&str]) {
        let updates = diff_sorted(&set(old), &set(new));
        let mut seen = Vec::new();
        for update in updates {
            match update {
                Update::Add(endpoints) => {
                    seen.extend(
                        endpoints
                            .iter()
                            .map(|e| format!("+{}/{}", e.address, e.weight)),
                    );
                }
                Update::Remove(addresses) => seen.extend(addresses.iter().map(|a| format!("-{a}"))),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(seen, expected, "{old:?} -> {new:?}");
    }

    #[test]
    fn diffs() {
        check(&[], &[], &[]);
        check(&[("10.0.0.1:80", 1)], &[("10.0.0.1:80", 1)], &[]);
        check(&[], &[("10.0.0.1:80", 1)], &["+10.0.0.1:80/1"]);
        check(&[("10.0.0.1:80", 1)], &[], &["-10.0.0.1:80"]);
        check(
            &[("10.0.0.1:80", 1)],
            &[("10.0.0.1:80", 5)],
            &["+10.0.0.1:80/5"],
        );
        check(
            &[("10.0.0.1:80", 1), ("10.0.0.2:80", 1)],
            &[("10.0.0.2:80", 1), ("10.0.0.3:80", 2)],
            &["+10.0.0.3:80/2", "-10.0.0.1:80"],
        );
        check(
            &[("10.0.0.1:80", 1), ("10.0.0.3:80", 1), ("10.0.0.5:80", 1)],
            &[
                ("10.0.0.0:80", 1),
                ("10.0.0.3:80", 4),
                ("10.0.0.4:80", 1),
                ("10.0.0.9:80", 1),
            ],
            &[
                "+10.0.0.0:80/1",
                "+10.0.0.3:80/4",
                "+10.0.0.4:80/1",
                "+10.0.0.9:80/1",
                "-10.0.0.1:80",
                "-10.0.0.5:80",
            ],
        );
    }
}
