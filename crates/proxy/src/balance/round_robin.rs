//! Weighted round robin, driven by one atomic counter.
//!
//! - Equal weights: the counter modulo n.
//! - Unequal weights, small tables (n × cycle ≤ [`SMOOTH_BUDGET`], the cycle being the sum
//!   of the weights over their greatest common divisor): one precomputed cycle of nginx's
//!   smooth weighted round robin (a,a,b,a,c,a,a for weights 5,1,1 rather than
//!   a,a,a,a,a,b,c).
//! - Unequal weights, large tables: pick k takes the endpoint covering point
//!   `(start + k × step) mod cycle` of the serving list's cumulative-weight line (found with its
//!   weight index in two binary searches), `step` being the integer nearest to
//!   cycle / golden ratio that is coprime with the cycle. Every cycle visits each point
//!   once, so each endpoint gets exactly its weight's share per cycle, and the golden
//!   ratio spreads consecutive picks over the whole line (the low-discrepancy sequence of
//!   Fibonacci hashing, Knuth TAOCP 6.4), so an endpoint's turns come at near-even
//!   intervals. Nothing proportional to the table is built.
//!
//! The selector keeps a count of serving endpoints per weight, so that the next
//! snapshot's selector is derived from the changes in O(distinct weights) and the
//! counter carries on where it was.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use switchyard_upstream::{Changes, EndpointList, PickContext, Selector, ServingEndpoint};

use super::gcd;

/// Work allowed for precomputing the exact nginx cycle (n × cycle length).
pub const SMOOTH_BUDGET: u64 = 1 << 16;

/// The round-robin selector of one snapshot.
#[derive(Debug)]
pub struct RoundRobin {
    next: AtomicU64,
    plan: Plan,
    /// Serving endpoints per effective weight, by weight.
    weights: Vec<(u64, u32)>,
}

/// Counts one more (`delta` 1) or one fewer (`delta` -1) endpoint of weight `w`.
fn count(weights: &mut Vec<(u64, u32)>, w: u64, delta: i32) -> Option<()> {
    match weights.binary_search_by_key(&w, |(weight, _)| *weight) {
        Ok(at) => {
            let n = weights[at].1.checked_add_signed(delta)?;
            if n == 0 {
                weights.remove(at);
            } else {
                weights[at].1 = n;
            }
        }
        Err(at) if delta > 0 => weights.insert(at, (w, 1)),
        Err(_) => return None,
    }
    Some(())
}

#[derive(Debug)]
enum Plan {
    Empty,
    /// All weights equal: the counter modulo n.
    Uniform,
    /// One cycle of smooth weighted round robin, as indexes into the serving list.
    Schedule(Vec<u32>),
    /// Pick k covers weight point ((start + k × step) mod cycle) × unit: the counter
    /// advances by `step`.
    Stride {
        cycle: u64,
        step: u64,
        unit: u64,
    },
}

impl RoundRobin {
    /// The selector for `serving`, starting at a random place of its cycle.
    pub fn new(serving: &EndpointList) -> Self {
        let mut all: Vec<u64> = serving.iter().map(|e| e.effective_weight()).collect();
        all.sort_unstable();
        let mut weights: Vec<(u64, u32)> = Vec::new();
        for w in all {
            match weights.last_mut() {
                Some((last, n)) if *last == w => *n += 1,
                _ => weights.push((w, 1)),
            }
        }
        RoundRobin {
            next: AtomicU64::new(fastrand::u64(..)),
            plan: plan(serving, &weights),
            weights,
        }
    }
}

/// How to walk `serving`, whose weights are counted in `weights`.
fn plan(serving: &EndpointList, weights: &[(u64, u32)]) -> Plan {
    let n = serving.len() as u64;
    if n == 0 {
        return Plan::Empty;
    }
    if weights.len() <= 1 {
        return Plan::Uniform;
    }
    let unit = weights.iter().map(|(w, _)| *w).fold(0, gcd).max(1);
    let cycle = serving.total_weight() / unit;
    if n.saturating_mul(cycle) <= SMOOTH_BUDGET {
        let w: Vec<u64> = serving
            .iter()
            .map(|e| e.effective_weight() / unit)
            .collect();
        return Plan::Schedule(smooth(&w, cycle));
    }
    Plan::Stride {
        cycle,
        step: golden_step(cycle),
        unit,
    }
}

/// The integer nearest to `cycle / φ` (at least 1) that is coprime with `cycle`.
fn golden_step(cycle: u64) -> u64 {
    let mut step = ((cycle as f64) * 0.618_033_988_749_894_9).round() as u64;
    step = step.clamp(1, cycle.max(1));
    while gcd(step, cycle) != 1 {
        step += 1;
    }
    step
}

/// One cycle of nginx's smooth weighted round robin for weights `w` summing to `total`:
/// each step adds every weight to its current value, picks the largest, and subtracts
/// the total from it.
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

impl Selector for RoundRobin {
    #[inline]
    fn pick<'a>(
        &'a self,
        serving: &'a EndpointList,
        _ctx: &PickContext,
    ) -> Option<&'a Arc<ServingEndpoint>> {
        match &self.plan {
            Plan::Empty => None,
            Plan::Uniform => {
                let n = self.next.fetch_add(1, Ordering::Relaxed);
                serving.get((n % serving.len() as u64) as usize)
            }
            Plan::Schedule(schedule) => {
                let n = self.next.fetch_add(1, Ordering::Relaxed);
                serving.get(schedule[(n % schedule.len() as u64) as usize] as usize)
            }
            Plan::Stride { cycle, step, unit } => {
                // The counter advances by the step, so a pick is one division.
                let n = self.next.fetch_add(*step, Ordering::Relaxed);
                serving.find_weight(n % cycle * unit)
            }
        }
    }

    fn update(&self, serving: &EndpointList, changes: &Changes<'_>) -> Option<Box<dyn Selector>> {
        self.derive(serving, changes)
            .map(|next| Box::new(next) as Box<dyn Selector>)
    }
}

impl RoundRobin {
    /// The selector for the next snapshot (see [`Selector::update`]).
    fn derive(&self, serving: &EndpointList, changes: &Changes<'_>) -> Option<RoundRobin> {
        let mut weights = self.weights.clone();
        for e in changes.removed {
            count(&mut weights, e.effective_weight(), -1)?;
        }
        for e in changes.added {
            count(&mut weights, e.effective_weight(), 1)?;
        }
        Some(RoundRobin {
            next: AtomicU64::new(self.next.load(Ordering::Relaxed)),
            plan: plan(serving, &weights),
            weights,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::testing::{distribution, endpoint, endpoints, index};

    fn check(weights: &[u32], n: usize, expected: &[usize]) {
        let serving = endpoints(weights);
        let rr = RoundRobin::new(&serving);
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
        assert_eq!(smooth(&[5, 1, 1], 7), vec![0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(smooth(&[2, 1], 3), vec![0, 1, 0]);
        let serving = endpoints(&[5, 1, 1]);
        let rr = RoundRobin::new(&serving);
        assert!(matches!(rr.plan, Plan::Schedule(_)), "{:?}", rr.plan);
    }

    /// The weights of a large table: 1, 2, 3, 1, 2, 3, ...
    fn large(n: usize) -> Vec<u32> {
        (0..n).map(|i| 1 + (i % 3) as u32).collect()
    }

    #[test]
    fn large_tables_stride_with_exact_shares_per_cycle() {
        let weights = large(5000);
        let serving = endpoints(&weights);
        let rr = RoundRobin::new(&serving);
        let Plan::Stride { cycle, .. } = rr.plan else {
            panic!("{:?}", rr.plan);
        };
        let sum: u32 = weights.iter().sum();
        assert_eq!(
            cycle,
            u64::from(sum),
            "effective weights over their gcd, 100"
        );
        let counts = distribution(&rr, &serving, cycle as usize, |_| 0);
        for (i, w) in weights.iter().enumerate() {
            assert_eq!(counts.get(&i).copied(), Some(*w as usize), "endpoint {i}");
        }
    }

    #[test]
    fn stride_spreads_an_endpoint_s_turns() {
        // 2000 endpoints of weight 1 and one of weight 100 (about 5% of the cycle): its
        // turns come about every 21 picks, never in a long burst or a long gap.
        let mut weights = vec![1; 2000];
        weights.push(100);
        let serving = endpoints(&weights);
        let rr = RoundRobin::new(&serving);
        let picks: Vec<usize> = (0..2100)
            .map(|_| index(rr.pick(&serving, &PickContext::default()).unwrap()))
            .collect();
        let turns: Vec<usize> = (0..picks.len()).filter(|&k| picks[k] == 2000).collect();
        assert_eq!(turns.len(), 100);
        let gaps: Vec<usize> = turns.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.iter().all(|&g| (8..=40).contains(&g)), "{gaps:?}");
    }

    #[test]
    fn stride_is_a_permutation_of_the_cycle() {
        for cycle in [1u64, 2, 3, 10, 97, 100, 1024, 3000] {
            let step = golden_step(cycle);
            let mut seen = vec![false; cycle as usize];
            // The counter as the selector advances it, from an arbitrary start.
            let mut n = 12_345u64;
            for _ in 0..cycle {
                seen[(n % cycle) as usize] = true;
                n += step;
            }
            assert!(seen.iter().all(|&s| s), "cycle {cycle} step {step}");
        }
    }

    #[test]
    fn huge_weights_keep_their_shares() {
        let serving = endpoints(&[u32::MAX, 1, 1_000_000]);
        let rr = RoundRobin::new(&serving);
        assert!(matches!(rr.plan, Plan::Stride { .. }), "{:?}", rr.plan);
        // Every pick lands on an endpoint; the small ones only rarely.
        let counts = distribution(&rr, &serving, 10_000, |_| 0);
        assert!(counts[&0] > 9_990, "{counts:?}");
    }

    #[test]
    fn update_follows_changes_and_keeps_the_counter() {
        let serving = endpoints(&large(3000));
        let rr = RoundRobin::new(&serving);
        rr.next.store(12345, Ordering::Relaxed);
        // Endpoint 0 leaves, endpoint 3000 (weight 4) joins.
        let mut list = serving.to_vec();
        let removed = vec![list.remove(0)];
        let added = vec![endpoint(3000, 4)];
        list.push(added[0].clone());
        let next_serving = EndpointList::new(list);
        let changes = Changes {
            removed: &removed,
            added: &added,
        };
        let next = rr.derive(&next_serving, &changes).expect("derived");
        assert_eq!(next.next.load(Ordering::Relaxed), 12345);
        assert_eq!(next.weights, RoundRobin::new(&next_serving).weights);
        let picks = distribution(&next, &next_serving, 10_000, |_| 0);
        assert!(
            picks.contains_key(&3000) && !picks.contains_key(&0),
            "{picks:?}"
        );
    }

    #[test]
    fn empty_serves_nothing() {
        let serving = endpoints(&[]);
        let rr = RoundRobin::new(&serving);
        assert!(rr.pick(&serving, &PickContext::default()).is_none());
    }
}
