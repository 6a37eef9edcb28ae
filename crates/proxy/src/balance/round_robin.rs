//! Smooth weighted round robin.
//!
//! With equal weights this is a plain counter modulo n. With different weights the
//! selector precomputes one full cycle of nginx's smooth weighted round robin (a,a,b,a,c,a,a
//! for weights 5,1,1 rather than a,a,a,a,a,b,c), which gives every endpoint exactly its
//! weight's share over a cycle. A pick is one atomic increment and one array read, so the
//! request path needs no lock for the algorithm's running state.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use switchyard_upstream::{PickContext, Selector, ServingEndpoint};

use super::effective_weight;

/// Longest schedule kept; larger weight sums are scaled down to fit.
const MAX_CYCLE: u64 = 1 << 16;

/// The round-robin selector of one snapshot.
#[derive(Debug)]
pub struct RoundRobin {
    next: AtomicUsize,
    /// One cycle of indexes; empty when all weights are equal.
    schedule: Vec<u32>,
    len: usize,
}

impl RoundRobin {
    /// Builds the schedule for `weights`.
    pub fn new(weights: &[u32]) -> Self {
        let start = if weights.is_empty() {
            0
        } else {
            fastrand::usize(..weights.len())
        };
        let equal = weights.windows(2).all(|w| w[0] == w[1]);
        RoundRobin {
            next: AtomicUsize::new(start),
            schedule: if equal { Vec::new() } else { schedule(weights) },
            len: weights.len(),
        }
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// One cycle for `weights`, scaled so its length stays under [`MAX_CYCLE`].
///
/// Small tables run nginx's smooth weighted round robin itself (each step adds every
/// weight to its current value, picks the largest, and subtracts the total from it);
/// large ones, where that costs O(n) per step, use an earliest-deadline-first schedule
/// with deadlines at the middle of each slot ((k + 1/2) / w), which interleaves almost as
/// well in O(log n) per step.
fn schedule(weights: &[u32]) -> Vec<u32> {
    let mut w: Vec<u64> = weights.iter().map(|&w| effective_weight(w)).collect();
    let g = w.iter().copied().fold(0, gcd).max(1);
    w.iter_mut().for_each(|x| *x /= g);
    let total: u64 = w.iter().sum();
    if total > MAX_CYCLE {
        w.iter_mut()
            .for_each(|x| *x = (*x * MAX_CYCLE / total).max(1));
    }
    let total: u64 = w.iter().sum();
    if (w.len() as u64).saturating_mul(total) <= SMOOTH_BUDGET {
        smooth(&w, total)
    } else {
        earliest_deadline_first(&w, total)
    }
}

/// Work allowed for the exact nginx algorithm (n × cycle length).
const SMOOTH_BUDGET: u64 = 1 << 22;

fn smooth(w: &[u64], total: u64) -> Vec<u32> {
    let total = total as i64;
    let mut current = vec![0i64; w.len()];
    (0..total)
        .map(|_| {
            let mut best = 0;
            for (i, c) in current.iter_mut().enumerate() {
                *c += w[i] as i64;
            }
            for i in 1..current.len() {
                if current[i] > current[best] {
                    best = i;
                }
            }
            current[best] -= total;
            best as u32
        })
        .collect()
}

fn earliest_deadline_first(w: &[u64], total: u64) -> Vec<u32> {
    // Deadline of pick k of endpoint i: (2k + 1) / (2 w_i), compared exactly by scaling
    // with 2 × the cycle length (every deadline falls inside one cycle).
    let scale = u128::from(total) * 2;
    let due = |k: u64, wi: u64| u128::from(2 * k + 1) * scale / u128::from(2 * wi);
    let mut heap: BinaryHeap<Reverse<(u128, u32)>> = w
        .iter()
        .enumerate()
        .map(|(i, &wi)| Reverse((due(0, wi), i as u32)))
        .collect();
    let mut picks = vec![0u64; w.len()];
    let mut out = Vec::with_capacity(total as usize);
    while (out.len() as u64) < total {
        let Reverse((_, i)) = heap.pop().expect("non-empty");
        out.push(i);
        let idx = i as usize;
        picks[idx] += 1;
        heap.push(Reverse((due(picks[idx], w[idx]), i)));
    }
    out
}

impl Selector for RoundRobin {
    fn pick(&self, serving: &[Arc<ServingEndpoint>], _ctx: &PickContext) -> Option<usize> {
        if serving.is_empty() || self.len != serving.len() {
            return None;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        if self.schedule.is_empty() {
            Some(n % self.len)
        } else {
            Some(self.schedule[n % self.schedule.len()] as usize)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::testing::{distribution, endpoints};

    fn check(weights: &[u32], n: usize, expected: &[usize]) {
        let serving = endpoints(weights);
        let rr = RoundRobin::new(weights);
        let counts = distribution(&rr, &serving, n, |_| 0);
        let got: Vec<usize> = (0..weights.len())
            .map(|i| counts.get(&i).copied().unwrap_or(0))
            .collect();
        assert_eq!(got, expected, "weights {weights:?}");
    }

    #[test]
    fn exact_shares_over_whole_cycles() {
        check(&[1, 1, 1], 300, &[100, 100, 100]);
        check(&[1, 3], 1000, &[250, 750]);
        check(&[5, 1, 1], 700, &[500, 100, 100]);
        check(&[2, 4], 600, &[200, 400]);
        check(&[7], 10, &[10]);
    }

    #[test]
    fn zero_weight_gets_a_tiny_share() {
        check(&[0, 1], 10100, &[100, 10000]);
    }

    #[test]
    fn interleaves_smoothly() {
        // nginx's smooth weighted round robin order for 5, 1, 1.
        assert_eq!(schedule(&[5, 1, 1]), vec![0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(schedule(&[2, 1]), vec![0, 1, 0]);
    }

    #[test]
    fn large_tables_use_edf_with_exact_shares() {
        let w: Vec<u64> = (0..5000).map(|i| 1 + (i % 3)).collect();
        let total: u64 = w.iter().sum();
        let sched = earliest_deadline_first(&w, total);
        let mut counts = vec![0u64; w.len()];
        sched.iter().for_each(|&i| counts[i as usize] += 1);
        assert_eq!(counts, w);
    }

    #[test]
    fn huge_weights_are_scaled() {
        let weights = [u32::MAX, 1, 1_000_000];
        let sched = schedule(&weights);
        assert!(sched.len() as u64 <= MAX_CYCLE + 3);
        assert!(sched.contains(&1) && sched.contains(&2));
    }

    #[test]
    fn empty_serves_nothing() {
        let rr = RoundRobin::new(&[]);
        assert_eq!(rr.pick(&[], &PickContext::default()), None);
    }
}
