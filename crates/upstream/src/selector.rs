//! The seam between the cache and the balancers.
//!
//! The cache knows nothing about balancing algorithms: it asks the upstream's
//! [`SelectorFactory`] to prebuild a [`Selector`] for every new snapshot, so the request
//! path only picks. Implementations live in `switchyard-proxy`.

use std::sync::Arc;

use crate::ServingEndpoint;

/// Per-request inputs to a pick.
#[derive(Clone, Copy, Debug, Default)]
pub struct PickContext {
    /// The request's hash key (consistent hashing); 0 when the balancer needs none.
    pub hash: u64,
    /// How many picks this request already made (0 first, 1 for the first retry, ...).
    pub attempt: u32,
}

/// Picks one endpoint of a snapshot's serving set. Built once per snapshot; must be
/// cheap and lock-free to call.
pub trait Selector: Send + Sync + 'static {
    /// The index into `serving` of the chosen endpoint, or `None` when empty.
    fn pick(&self, serving: &[Arc<ServingEndpoint>], ctx: &PickContext) -> Option<usize>;
}

/// Builds a [`Selector`] for a serving set.
pub trait SelectorFactory: Send + Sync + 'static {
    /// A selector for `serving` (non-empty or empty).
    fn build(&self, serving: &[Arc<ServingEndpoint>]) -> Box<dyn Selector>;
}
