//! The stream of changes a registry pushes for one watched service.

use std::borrow::Borrow;
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

/// What changed between two endpoint sets: the endpoints of the new set that are new or
/// changed (same address, other weight, priority or metadata), and the addresses gone.
#[derive(Debug, PartialEq, Eq)]
pub struct SetDiff<'a, N> {
    /// New or changed endpoints, borrowed from the new set, in address order.
    pub added: Vec<&'a N>,
    /// Addresses of the old set missing from the new one, in address order.
    pub removed: Vec<SocketAddr>,
}

impl<N> SetDiff<'_, N> {
    /// Whether the two sets are equal.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }
}

/// Compares two endpoint sets, each in address order with each address once (a sorted
/// `Vec`, or the values of a `BTreeMap` keyed by address). A merge walk: O(old + new), no
/// map built. The one set comparison every backend uses; what it sends for the difference is
/// the backend's choice ([`diff_sorted`], [`Update::changes`]).
pub fn set_diff<'a, 'b, O, N>(
    old: impl IntoIterator<Item = &'b O>,
    new: impl IntoIterator<Item = &'a N>,
) -> SetDiff<'a, N>
where
    O: Borrow<Endpoint> + 'b,
    N: Borrow<Endpoint> + 'a,
{
    let mut diff = SetDiff {
        added: Vec::new(),
        removed: Vec::new(),
    };
    let mut old = old.into_iter().map(|o| o.borrow()).peekable();
    let mut new = new
        .into_iter()
        .map(|n| (Borrow::<Endpoint>::borrow(n), n))
        .peekable();
    loop {
        match (old.peek(), new.peek()) {
            (Some(o), Some((n, _))) if o.address == n.address => {
                let (n, item) = new.next().expect("peeked");
                if *o != n {
                    diff.added.push(item);
                }
                old.next();
            }
            (Some(o), Some((n, _))) if o.address < n.address => {
                diff.removed.push(o.address);
                old.next();
            }
            (Some(o), None) => {
                diff.removed.push(o.address);
                old.next();
            }
            (_, Some(_)) => {
                let (_, item) = new.next().expect("peeked");
                diff.added.push(item);
            }
            (None, None) => break,
        }
    }
    diff
}

/// The updates that take a consumer from set `old` to set `new`, both sorted by address
/// with each address once: `Add` (new or changed endpoints, `new`'s own allocations) before
/// `Remove`, so the set never dips while an instance moves; nothing when they are equal.
pub fn diff_sorted(old: &[Arc<Endpoint>], new: &[Arc<Endpoint>]) -> Vec<Update> {
    let diff = set_diff(old, new);
    Update::changes(diff.added.into_iter().cloned().collect(), diff.removed)
}

/// The updates that publish a poller's whole new answer `set` (sorted by address, each
/// address once) after `known`, the set published before (`None` before the first answer):
/// the first answer is a `Reset`, an answer that empties the set an authoritative empty
/// `Reset`, any other the difference ([`diff_sorted`]).
pub fn answer_updates(known: Option<&[Arc<Endpoint>]>, set: &[Arc<Endpoint>]) -> Vec<Update> {
    match known {
        None => vec![Update::Reset(set.to_vec())],
        Some(known) if set.is_empty() && !known.is_empty() => vec![Update::Reset(Vec::new())],
        Some(known) => diff_sorted(known, set),
    }
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

    #[test]
    fn set_diff_takes_maps_and_owned_endpoints() {
        use std::collections::BTreeMap;
        let map = |items: &[(&str, u32)]| -> BTreeMap<SocketAddr, Endpoint> {
            items
                .iter()
                .map(|(a, w)| {
                    let address: SocketAddr = a.parse().unwrap();
                    (address, Endpoint::new(address).with_weight(*w))
                })
                .collect()
        };
        let old = map(&[("10.0.0.1:80", 1), ("10.0.0.2:80", 1), ("10.0.0.4:80", 1)]);
        let new = map(&[("10.0.0.2:80", 7), ("10.0.0.3:80", 1), ("10.0.0.4:80", 1)]);
        let diff = set_diff(old.values(), new.values());
        let added: Vec<String> = diff
            .added
            .iter()
            .map(|e| format!("{}/{}", e.address, e.weight))
            .collect();
        assert_eq!(added, ["10.0.0.2:80/7", "10.0.0.3:80/1"]);
        assert_eq!(diff.removed, ["10.0.0.1:80".parse::<SocketAddr>().unwrap()]);
        assert!(!diff.is_empty());
        // Owned on one side, shared on the other: compared by value.
        let shared: Vec<Arc<Endpoint>> = new.values().cloned().map(Arc::new).collect();
        assert!(set_diff(new.values(), &shared).is_empty());
    }

    #[test]
    fn answers_publish_a_reset_first_then_differences() {
        let one = set(&[("10.0.0.1:80", 1)]);
        let two = set(&[("10.0.0.1:80", 1), ("10.0.0.2:80", 1)]);
        assert_eq!(answer_updates(None, &one), [Update::Reset(one.clone())]);
        assert_eq!(answer_updates(None, &[]), [Update::Reset(Vec::new())]);
        assert_eq!(
            answer_updates(Some(&one), &two),
            [Update::Add(vec![two[1].clone()])]
        );
        assert_eq!(answer_updates(Some(&two), &two), []);
        // Emptied: an authoritative empty reset, not a removal of each.
        assert_eq!(answer_updates(Some(&two), &[]), [Update::Reset(Vec::new())]);
        assert_eq!(answer_updates(Some(&[]), &[]), []);
    }
}
