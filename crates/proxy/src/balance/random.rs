//! Weighted random: a uniform draw on the serving list's cumulative-weight line, found
//! with the list's weight index (two binary searches); nothing is built per snapshot.

use std::sync::Arc;

use switchyard_upstream::{EndpointList, PickContext, Selector, ServingEndpoint};

/// The `random` selector.
#[derive(Debug)]
pub struct WeightedRandom;

impl Selector for WeightedRandom {
    fn pick<'a>(
        &'a self,
        serving: &'a EndpointList,
        _ctx: &PickContext,
    ) -> Option<&'a Arc<ServingEndpoint>> {
        let total = serving.total_weight();
        if total == 0 {
            return None;
        }
        serving.find_weight(fastrand::u64(..total))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::testing::{distribution, endpoints};

    #[test]
    fn follows_weights() {
        let serving = endpoints(&[1, 3]);
        let counts = distribution(&WeightedRandom, &serving, 20_000, |_| 0);
        let share = counts[&1] as f64 / 20_000.0;
        assert!((0.72..0.78).contains(&share), "{counts:?}");
    }

    #[test]
    fn zero_weight_gets_a_hundredth() {
        let serving = endpoints(&[0, 1]);
        let counts = distribution(&WeightedRandom, &serving, 50_500, |_| 0);
        let zero = counts.get(&0).copied().unwrap_or(0);
        assert!((200..900).contains(&zero), "{counts:?}");
    }

    #[test]
    fn empty_is_none() {
        assert!(WeightedRandom
            .pick(&endpoints(&[]), &PickContext::default())
            .is_none());
    }
}
