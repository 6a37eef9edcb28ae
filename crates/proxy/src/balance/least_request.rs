//! Power-of-two-choices balancers.
//!
//! Pick two endpoints at random (weighted), keep the one with the lower load. `least_request`
//! measures load as in-flight requests divided by weight; `ewma` as the latency EWMA
//! times (in-flight + 1), the "peak EWMA" idea of Finagle and linkerd. Both read only
//! atomics (Mitzenmacher, "The Power of Two Choices in Randomized Load Balancing", IEEE
//! TPDS 2001).

use std::sync::Arc;

use switchyard_upstream::{PickContext, Selector, ServingEndpoint};

use super::effective_weight;

/// `least_request`: fewest in-flight requests per unit of weight.
#[derive(Debug)]
pub struct LeastRequest;

/// `ewma`: lowest latency EWMA × (in-flight + 1), per unit of weight.
#[derive(Debug)]
pub struct Ewma;

fn two_choices(
    serving: &[Arc<ServingEndpoint>],
    cost: impl Fn(&ServingEndpoint) -> u128,
) -> Option<usize> {
    match serving.len() {
        0 => None,
        1 => Some(0),
        n => {
            let a = fastrand::usize(..n);
            let mut b = fastrand::usize(..n - 1);
            if b >= a {
                b += 1;
            }
            let load = |i: usize| {
                let e = &serving[i];
                // Cross-multiplied so that weights compare without division.
                cost(e) * u128::from(effective_weight(serving[if i == a { b } else { a }].weight))
            };
            Some(if load(a) <= load(b) { a } else { b })
        }
    }
}

impl Selector for LeastRequest {
    fn pick(&self, serving: &[Arc<ServingEndpoint>], _ctx: &PickContext) -> Option<usize> {
        two_choices(serving, |e| u128::from(e.stats.in_flight()))
    }
}

impl Selector for Ewma {
    fn pick(&self, serving: &[Arc<ServingEndpoint>], _ctx: &PickContext) -> Option<usize> {
        two_choices(serving, |e| {
            u128::from(e.stats.ewma_us().max(1)) * u128::from(e.stats.in_flight() + 1)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::testing::{distribution, endpoints};
    use std::time::Duration;

    #[test]
    fn least_request_avoids_the_busy_endpoint() {
        let serving = endpoints(&[1, 1]);
        for _ in 0..10 {
            serving[0].stats.start();
        }
        let counts = distribution(&LeastRequest, &serving, 100, |_| 0);
        assert_eq!(counts.get(&1), Some(&100));
    }

    #[test]
    fn least_request_spreads_idle_load() {
        let serving = endpoints(&[1, 1, 1, 1]);
        let counts = distribution(&LeastRequest, &serving, 4000, |_| 0);
        for i in 0..4 {
            let c = counts[&i];
            assert!((700..1300).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn ewma_prefers_the_fast_endpoint() {
        let serving = endpoints(&[1, 1]);
        serving[0].stats.start();
        serving[0].stats.finish(Duration::from_millis(100));
        serving[1].stats.start();
        serving[1].stats.finish(Duration::from_millis(1));
        let counts = distribution(&Ewma, &serving, 100, |_| 0);
        assert_eq!(counts.get(&1), Some(&100));
    }

    #[test]
    fn single_and_empty() {
        assert_eq!(LeastRequest.pick(&[], &PickContext::default()), None);
        assert_eq!(
            LeastRequest.pick(&endpoints(&[3]), &PickContext::default()),
            Some(0)
        );
    }
}
