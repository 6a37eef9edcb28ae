//! Consistent hashing on a ring of virtual nodes (Karger et al., "Consistent Hashing and
//! Random Trees", STOC 1997; the ketama layout).
//!
//! Each endpoint gets virtual nodes in proportion to its weight (over the weights'
//! greatest common divisor), placed by hashing its address text and the node's number; a
//! request goes to the first node at or after its key's hash. When one of N endpoints
//! leaves, only the keys it owned (about 1/N) move. Retries walk to the next distinct
//! endpoint on the ring.
//!
//! The ring is a persistent [`Chunked`] sequence of (hash, endpoint) nodes: the next
//! snapshot's ring is this one with the changed endpoints' nodes removed and inserted
//! (O(nodes changed × (leaf size + log ring))), sharing every untouched chunk. A full
//! build hashes without allocating and sorts once.

use std::sync::Arc;

use switchyard_upstream::{
    Changes, Chunked, EndpointList, Item, PickContext, Selector, ServingEndpoint,
};

use super::gcd;

/// Virtual nodes per weight unit while the ring fits [`MAX_RING`].
const NODES_PER_WEIGHT: u64 = 160;
/// Fewest virtual nodes per weight unit, however large the upstream.
const MIN_NODES_PER_WEIGHT: u64 = 16;
/// Ring size above which large upstreams get fewer nodes per weight unit (down to
/// [`MIN_NODES_PER_WEIGHT`]), so that their rings stay cheap to build and hold (16 bytes
/// a node).
const MAX_RING: u64 = 1 << 18;

/// A fixed-key 64-bit hash, the same in every process, so that several gateways agree.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    finish(fnv(FNV_OFFSET, bytes))
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a over `bytes`, from state `h`.
fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A SplitMix64 finalizer, for good avalanche on short keys.
fn finish(mut h: u64) -> u64 {
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The hashes of an endpoint's virtual nodes: `stable_hash("<address>#<node as 8 LE
/// bytes>")`, from the address text's hash state computed once.
fn node_hashes(e: &ServingEndpoint, nodes: u64) -> impl Iterator<Item = u64> {
    let text = switchyard_upstream::address_text(e.address());
    let prefix = fnv(fnv(FNV_OFFSET, text.as_ref()), b"#");
    (0..nodes).map(move |node| finish(fnv(prefix, &node.to_le_bytes())))
}

/// One virtual node.
#[derive(Clone, Debug)]
struct Node {
    hash: u64,
    endpoint: Arc<ServingEndpoint>,
}

impl Item for Node {
    const HINTED: bool = true;

    #[inline]
    fn hint(&self) -> u64 {
        self.hash
    }
}

impl Node {
    /// Ring order: by hash, then (for the rare equal hashes) by address.
    fn before(&self, hash: u64, endpoint: &ServingEndpoint) -> bool {
        self.hash < hash || (self.hash == hash && self.endpoint.address() < endpoint.address())
    }
}

/// The `consistent_hash` selector of one snapshot.
#[derive(Debug)]
pub struct HashRing {
    ring: Chunked<Node>,
    /// The weight unit (the weights' greatest common divisor when the ring was built).
    unit: u32,
    /// Virtual nodes per weight unit.
    per_unit: u64,
    /// Weight units on the ring.
    units: u64,
    /// Distinct endpoints on the ring.
    endpoints: usize,
}

fn weight(e: &ServingEndpoint) -> u32 {
    e.weight.max(1)
}

/// Virtual nodes per weight unit for a ring of `units` weight units.
fn per_unit_for(units: u64) -> u64 {
    if units.saturating_mul(NODES_PER_WEIGHT) <= MAX_RING {
        NODES_PER_WEIGHT
    } else {
        (MAX_RING / units).max(MIN_NODES_PER_WEIGHT)
    }
}

impl HashRing {
    /// Builds the ring for `serving`.
    pub fn new(serving: &EndpointList) -> Self {
        let unit = serving
            .iter()
            .map(|e| u64::from(weight(e)))
            .fold(0, gcd)
            .max(1) as u32;
        let units: u64 = serving.iter().map(|e| u64::from(weight(e) / unit)).sum();
        HashRing::with(serving, unit, per_unit_for(units))
    }

    /// Builds the ring for `serving` with these parameters.
    fn with(serving: &EndpointList, unit: u32, per_unit: u64) -> Self {
        let units: u64 = serving.iter().map(|e| u64::from(weight(e) / unit)).sum();
        let mut nodes = Vec::with_capacity((units * per_unit) as usize);
        for e in serving.iter() {
            let count = u64::from(weight(e) / unit) * per_unit;
            nodes.extend(node_hashes(e, count).map(|hash| Node {
                hash,
                endpoint: e.clone(),
            }));
        }
        nodes.sort_unstable_by(|a, b| {
            a.hash
                .cmp(&b.hash)
                .then_with(|| a.endpoint.address().cmp(&b.endpoint.address()))
        });
        HashRing {
            ring: Chunked::from_vec(nodes),
            unit,
            per_unit,
            units,
            endpoints: serving.len(),
        }
    }

    /// The next snapshot's ring: this one with `changes`. `None` when a fresh build is
    /// due: a weight that is not a multiple of the unit, a ring size far from what its
    /// node count per unit was chosen for, or changes to more than an eighth of it.
    fn derive(&self, serving: &EndpointList, changes: &Changes<'_>) -> Option<HashRing> {
        let touched = changes.removed.len() + changes.added.len();
        if touched * 8 > self.endpoints.max(serving.len()) + 8 {
            return None;
        }
        if changes
            .added
            .iter()
            .any(|e| !weight(e).is_multiple_of(self.unit))
        {
            return None;
        }
        let units_of = |list: &[Arc<ServingEndpoint>]| -> u64 {
            list.iter().map(|e| u64::from(weight(e) / self.unit)).sum()
        };
        let units =
            (self.units + units_of(changes.added)).checked_sub(units_of(changes.removed))?;
        let ideal = per_unit_for(units);
        if ideal > self.per_unit * 2 || ideal * 2 < self.per_unit {
            return None;
        }
        let mut ring = self.ring.clone();
        for e in changes.removed {
            for hash in node_hashes(e, u64::from(weight(e) / self.unit) * self.per_unit) {
                let at = ring.partition_point(|n| n.before(hash, e));
                match ring.get(at) {
                    Some(n) if Arc::ptr_eq(&n.endpoint, e) => {
                        ring.remove(at);
                    }
                    _ => return None, // Not on this ring: start over.
                }
            }
        }
        for e in changes.added {
            for hash in node_hashes(e, u64::from(weight(e) / self.unit) * self.per_unit) {
                let at = ring.partition_point(|n| n.before(hash, e));
                ring.insert(
                    at,
                    Node {
                        hash,
                        endpoint: e.clone(),
                    },
                );
            }
        }
        Some(HashRing {
            ring,
            unit: self.unit,
            per_unit: self.per_unit,
            units,
            endpoints: serving.len(),
        })
    }
}

impl Selector for HashRing {
    fn pick<'a>(
        &'a self,
        _serving: &'a EndpointList,
        ctx: &PickContext,
    ) -> Option<&'a Arc<ServingEndpoint>> {
        let (start, node) = self.ring.seek_hint(ctx.hash)?;
        let first = &node.endpoint;
        if ctx.attempt == 0 || self.endpoints == 1 {
            return Some(first);
        }
        // A retry: the attempt-th distinct endpoint after the owner on the ring.
        let mut seen: Vec<&Arc<ServingEndpoint>> = vec![first];
        let len = self.ring.len();
        let around = self
            .ring
            .range(start + 1, len)
            .chain(self.ring.range(0, start));
        for node in around {
            if !seen.iter().any(|s| Arc::ptr_eq(s, &node.endpoint)) {
                seen.push(&node.endpoint);
                if seen.len() > ctx.attempt as usize {
                    return Some(&node.endpoint);
                }
            }
        }
        Some(first)
    }

    fn update(&self, serving: &EndpointList, changes: &Changes<'_>) -> Option<Box<dyn Selector>> {
        self.derive(serving, changes)
            .map(|ring| Box::new(ring) as Box<dyn Selector>)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::testing::{endpoint, endpoints, index};

    fn owner(ring: &HashRing, serving: &EndpointList, key: u64) -> usize {
        let ctx = PickContext {
            hash: stable_hash(&key.to_le_bytes()),
            attempt: 0,
        };
        index(ring.pick(serving, &ctx).unwrap())
    }

    fn owners(serving: &EndpointList, n: u64) -> Vec<usize> {
        let ring = HashRing::new(serving);
        (0..n).map(|k| owner(&ring, serving, k)).collect()
    }

    #[test]
    fn node_hashes_are_the_hash_of_the_address_and_node() {
        let e = endpoint(0, 1);
        let mut text = b"127.0.0.1:1#".to_vec();
        text.extend_from_slice(&7u64.to_le_bytes());
        assert_eq!(node_hashes(&e, 8).nth(7), Some(stable_hash(&text)));
    }

    #[test]
    fn removing_one_of_n_moves_about_one_nth() {
        let all = endpoints(&[1; 10]);
        let before = owners(&all, 10_000);
        let fewer = EndpointList::new(all.iter().filter(|e| index(e) != 3).cloned().collect());
        let after = owners(&fewer, 10_000);
        let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
        let owned = before.iter().filter(|&&k| k == 3).count();
        assert_eq!(moved, owned, "only the leaving endpoint's keys move");
        assert!((500..1500).contains(&moved), "about 1/10 moved: {moved}");
    }

    #[test]
    fn same_key_same_endpoint_and_retry_moves_on() {
        let serving = endpoints(&[1; 5]);
        let ring = HashRing::new(&serving);
        let ctx = |attempt| PickContext { hash: 42, attempt };
        let first = ring.pick(&serving, &ctx(0)).map(|e| index(e));
        assert_eq!(first, ring.pick(&serving, &ctx(0)).map(|e| index(e)));
        let retry = ring.pick(&serving, &ctx(1)).map(|e| index(e));
        assert_ne!(first, retry);
        let third = ring.pick(&serving, &ctx(2)).map(|e| index(e));
        assert!(third != first && third != retry);
    }

    #[test]
    fn weights_shape_ownership() {
        let got = owners(&endpoints(&[1, 3]), 20_000);
        let heavy = got.iter().filter(|&&k| k == 1).count() as f64 / 20_000.0;
        assert!((0.65..0.85).contains(&heavy), "{heavy}");
        // Weights with a common factor make the same ring as their quotients.
        let a = HashRing::new(&endpoints(&[10, 30]));
        let b = HashRing::new(&endpoints(&[1, 3]));
        assert_eq!(a.ring.len(), b.ring.len());
    }

    /// (hash, index) of every node, in ring order.
    fn nodes(ring: &HashRing) -> Vec<(u64, usize)> {
        ring.ring
            .iter()
            .map(|n| (n.hash, index(&n.endpoint)))
            .collect()
    }

    #[test]
    fn derived_rings_equal_fresh_builds() {
        let all: Vec<Arc<ServingEndpoint>> =
            (0..60).map(|i| endpoint(i, 1 + (i % 3) as u32)).collect();
        let mut current: Vec<Arc<ServingEndpoint>> = all[..50].to_vec();
        let serving = EndpointList::new(current.clone());
        let mut ring = HashRing::new(&serving);
        let (unit, per_unit) = (ring.unit, ring.per_unit);
        let mut rng = fastrand::Rng::with_seed(3);
        for _ in 0..30 {
            // Remove one, add one (a new endpoint or a weight change).
            let removed = vec![current.remove(rng.usize(..current.len()))];
            let i = index(&removed[0]);
            let added = if rng.bool() {
                vec![endpoint(i, 1 + rng.u32(0..3))]
            } else {
                let spare: Vec<&Arc<ServingEndpoint>> = all
                    .iter()
                    .filter(|e| !current.iter().any(|c| index(c) == index(e)))
                    .collect();
                vec![(*spare[rng.usize(..spare.len())]).clone()]
            };
            current.extend(added.iter().cloned());
            let serving = EndpointList::new(current.clone());
            let changes = Changes {
                removed: &removed,
                added: &added,
            };
            ring = ring.derive(&serving, &changes).expect("incremental");
            assert_eq!(
                nodes(&ring),
                nodes(&HashRing::with(&serving, unit, per_unit))
            );
        }
    }

    #[test]
    fn large_upstreams_get_fewer_nodes_per_weight() {
        assert_eq!(per_unit_for(100), NODES_PER_WEIGHT);
        assert_eq!(per_unit_for(10_000), 26);
        assert_eq!(per_unit_for(1_000_000), MIN_NODES_PER_WEIGHT);
    }
}
