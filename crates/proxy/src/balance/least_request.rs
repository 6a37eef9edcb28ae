//! Power-of-two-choices balancers.
//!
//! Pick two endpoints at random (weighted), keep the one with the lower load. `least_request`
//! measures load as in-flight requests divided by weight; `ewma` as the latency EWMA
//! times (in-flight + 1), the "peak EWMA" idea of Finagle and linkerd. Both read only
//! atomics (Mitzenmacher, "The Power of Two Choices in Randomized Load Balancing", IEEE
//! TPDS 2001).

use std::sync::Arc;

use switchyard_upstream::{EndpointList, PickContext, Selector, ServingEndpoint};

/// `least_request`: fewest in-flight requests per unit of weight.
#[derive(Debug)]
pub struct LeastRequest;

/// `ewma`: lowest latency EWMA × (in-flight + 1), per unit of weight.
#[derive(Debug)]
pub struct Ewma;

fn two_choices(
    serving: &EndpointList,
    cost: impl Fn(&ServingEndpoint) -> u128,
) -> Option<&Arc<ServingEndpoint>> {
    match serving.len() {
        0 => None,
        1 => serving.get(0),
        n => {
            let a = fastrand::usize(..n);
            let mut b = fastrand::usize(..n - 1);
            if b >= a {
                b += 1;
            }
            let (a, b) = (serving.get(a)?, serving.get(b)?);
            // cost(a) / weight(a) <= cost(b) / weight(b), cross-multiplied so that
            // weights compare without division.
            let load_a = cost(a) * u128::from(b.effective_weight());
            let load_b = cost(b) * u128::from(a.effective_weight());
            Some(if load_a <= load_b { a } else { b })
        }
    }
}

impl Selector for LeastRequest {
    fn pick<'a>(
        &'a self,
        serving: &'a EndpointList,
        _ctx: &PickContext,
    ) -> Option<&'a Arc<ServingEndpoint>> {
        two_choices(serving, |e| u128::from(e.stats.in_flight()))
    }
}

impl Selector for Ewma {
    fn pick<'a>(
        &'a self,
        serving: &'a EndpointList,
        _ctx: &PickContext,
    ) -> Option<&'a Arc<ServingEndpoint>> {
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
            serving.get(0).unwrap().stats.start();
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
        let (slow, fast) = (serving.get(0).unwrap(), serving.get(1).unwrap());
        slow.stats.start();
        slow.stats.finish(Duration::from_millis(100));
        fast.stats.start();
        fast.stats.finish(Duration::from_millis(1));
        let counts = distribution(&Ewma, &serving, 100, |_| 0);
        assert_eq!(counts.get(&1), Some(&100));
    }

    #[test]
    fn single_and_empty() {
        let empty = endpoints(&[]);
        assert!(LeastRequest.pick(&empty, &PickContext::default()).is_none());
        let one = endpoints(&[3]);
        let picked = LeastRequest.pick(&one, &PickContext::default());
        assert_eq!(picked.map(|e| e.address().port()), Some(1));
    }
}
