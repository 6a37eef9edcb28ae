//! Weighted random: a cumulative weight table and a binary search per pick.

use std::sync::Arc;

use switchyard_upstream::{PickContext, Selector, ServingEndpoint};

use super::effective_weight;

/// The `random` selector of one snapshot.
#[derive(Debug)]
pub struct WeightedRandom {
    /// Running sums of effective weights; the last is the total.
    cumulative: Vec<u64>,
}

impl WeightedRandom {
    /// Builds the table for `weights`.
    pub fn new(weights: &[u32]) -> Self {
        let mut sum = 0;
        let cumulative = weights
            .iter()
            .map(|&w| {
                sum += effective_weight(w);
                sum
            })
            .collect();
        WeightedRandom { cumulative }
    }
}

impl Selector for WeightedRandom {
    fn pick(&self, serving: &[Arc<ServingEndpoint>], _ctx: &PickContext) -> Option<usize> {
        let total = *self.cumulative.last()?;
        if serving.len() != self.cumulative.len() {
            return None;
        }
        let x = fastrand::u64(..total);
        Some(self.cumulative.partition_point(|&c| c <= x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::testing::{distribution, endpoints};

    #[test]
    fn follows_weights() {
        let serving = endpoints(&[1, 3]);
        let counts = distribution(&WeightedRandom::new(&[1, 3]), &serving, 20_000, |_| 0);
        let share = counts[&1] as f64 / 20_000.0;
        assert!((0.72..0.78).contains(&share), "{counts:?}");
    }

    #[test]
    fn empty_is_none() {
        assert_eq!(
            WeightedRandom::new(&[]).pick(&[], &PickContext::default()),
            None
        );
    }
}
