//! Consistent hashing on a ring of virtual nodes (Karger et al., "Consistent Hashing and
//! Random Trees", STOC 1997; the ketama layout).
//!
//! Each endpoint gets virtual nodes in proportion to its weight, placed by hashing its
//! address; a request goes to the first node at or after its key's hash. When one of N
//! endpoints leaves, only the keys it owned (about 1/N) move. Retries walk to the next
//! distinct endpoint on the ring.

use std::sync::Arc;

use switchyard_upstream::{PickContext, Selector, ServingEndpoint};

/// Virtual nodes for an endpoint of weight 1.
const NODES_PER_WEIGHT: u64 = 160;
/// Cap on the ring size, so that huge upstreams stay cheap to rebuild.
const MAX_RING: u64 = 1 << 20;

/// The `consistent_hash` selector of one snapshot.
#[derive(Debug)]
pub struct HashRing {
    /// (hash, endpoint index), sorted by hash.
    ring: Vec<(u64, u32)>,
    endpoints: usize,
}

/// A fixed-key 64-bit hash, the same in every process, so that several gateways agree.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    // FNV-1a followed by a SplitMix64 finalizer for good avalanche on short keys.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

impl HashRing {
    /// Builds the ring for endpoints named by `keys` (their addresses) with `weights`.
    pub fn new(keys: &[String], weights: &[u32]) -> Self {
        let total_weight: u64 = weights.iter().map(|&w| u64::from(w.max(1))).sum();
        let per_weight = if total_weight * NODES_PER_WEIGHT > MAX_RING {
            (MAX_RING / total_weight.max(1)).max(1)
        } else {
            NODES_PER_WEIGHT
        };
        let mut ring = Vec::with_capacity((total_weight * per_weight) as usize);
        for (i, (key, &w)) in keys.iter().zip(weights).enumerate() {
            for node in 0..u64::from(w.max(1)) * per_weight {
                let mut buf = Vec::with_capacity(key.len() + 8);
                buf.extend_from_slice(key.as_bytes());
                buf.push(b'#');
                buf.extend_from_slice(&node.to_le_bytes());
                ring.push((stable_hash(&buf), i as u32));
            }
        }
        ring.sort_unstable();
        HashRing {
            ring,
            endpoints: keys.len(),
        }
    }
}

impl Selector for HashRing {
    fn pick(&self, serving: &[Arc<ServingEndpoint>], ctx: &PickContext) -> Option<usize> {
        if self.ring.is_empty() || serving.len() != self.endpoints {
            return None;
        }
        let start = self.ring.partition_point(|&(h, _)| h < ctx.hash);
        let first = self.ring[start % self.ring.len()].1;
        if ctx.attempt == 0 || self.endpoints == 1 {
            return Some(first as usize);
        }
        // A retry: the attempt-th distinct endpoint after the owner on the ring.
        let mut seen = vec![first];
        for step in 1..self.ring.len() {
            let idx = self.ring[(start + step) % self.ring.len()].1;
            if !seen.contains(&idx) {
                seen.push(idx);
                if seen.len() > ctx.attempt as usize {
                    return Some(idx as usize);
                }
            }
        }
        Some(first as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::testing::endpoints;

    fn owners(keys: &[String], weights: &[u32], n: u64) -> Vec<String> {
        let serving = endpoints(weights);
        let ring = HashRing::new(keys, weights);
        (0..n)
            .map(|k| {
                let ctx = PickContext {
                    hash: stable_hash(&k.to_le_bytes()),
                    attempt: 0,
                };
                keys[ring.pick(&serving, &ctx).unwrap()].clone()
            })
            .collect()
    }

    #[test]
    fn removing_one_of_n_moves_about_one_nth() {
        let keys: Vec<String> = (0..10).map(|i| format!("10.0.0.{i}:80")).collect();
        let before = owners(&keys, &[1; 10], 10_000);
        let fewer: Vec<String> = keys
            .iter()
            .filter(|k| *k != "10.0.0.3:80")
            .cloned()
            .collect();
        let after = owners(&fewer, &[1; 9], 10_000);
        let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
        let owned = before.iter().filter(|k| *k == "10.0.0.3:80").count();
        assert_eq!(moved, owned, "only the leaving endpoint's keys move");
        assert!((500..1500).contains(&moved), "about 1/10 moved: {moved}");
    }

    #[test]
    fn same_key_same_endpoint_and_retry_moves_on() {
        let keys: Vec<String> = (0..5).map(|i| format!("10.0.0.{i}:80")).collect();
        let serving = endpoints(&[1; 5]);
        let ring = HashRing::new(&keys, &[1; 5]);
        let ctx = PickContext {
            hash: 42,
            attempt: 0,
        };
        let first = ring.pick(&serving, &ctx);
        assert_eq!(first, ring.pick(&serving, &ctx));
        let retry = ring.pick(
            &serving,
            &PickContext {
                hash: 42,
                attempt: 1,
            },
        );
        assert_ne!(first, retry);
    }

    #[test]
    fn weights_shape_ownership() {
        let keys: Vec<String> = (0..2).map(|i| format!("10.0.0.{i}:80")).collect();
        let got = owners(&keys, &[1, 3], 20_000);
        let heavy = got.iter().filter(|k| *k == "10.0.0.1:80").count() as f64 / 20_000.0;
        assert!((0.65..0.85).contains(&heavy), "{heavy}");
    }
}
