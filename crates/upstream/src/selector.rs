//! The seam between the cache and the balancers.
//!
//! The cache knows nothing about balancing algorithms: it asks the upstream's
//! [`SelectorFactory`] to build a [`Selector`] for a snapshot's serving set, or asks the
//! previous snapshot's selector to derive the next one from what changed
//! ([`Selector::update`]), so the request path only picks. Implementations live in
//! `switchyard-proxy`.

use std::sync::Arc;

use crate::{EndpointList, ServingEndpoint};

/// Per-request inputs to a pick.
#[derive(Clone, Copy, Debug, Default)]
pub struct PickContext {
    /// The request's hash key (consistent hashing); 0 when the balancer needs none.
    pub hash: u64,
    /// How many picks this request already made (0 first, 1 for the first retry, ...).
    pub attempt: u32,
}

/// How a serving set differs from the previous snapshot's, within the same serving tier.
#[derive(Clone, Copy, Debug)]
pub struct Changes<'a> {
    /// Endpoints of the previous serving set that are not in the new one (the same
    /// `Arc`s the previous set held).
    pub removed: &'a [Arc<ServingEndpoint>],
    /// Endpoints of the new serving set that were not in the previous one. An endpoint
    /// whose weight or metadata changed is removed (old `Arc`) and added (new `Arc`).
    pub added: &'a [Arc<ServingEndpoint>],
}

/// Picks one endpoint of a snapshot's serving set. Built once per snapshot; must be
/// cheap and lock-free to call.
pub trait Selector: Send + Sync + 'static {
    /// The chosen endpoint of `serving` (the set this selector was built or updated for),
    /// or `None` when it is empty.
    fn pick<'a>(
        &'a self,
        serving: &'a EndpointList,
        ctx: &PickContext,
    ) -> Option<&'a Arc<ServingEndpoint>>;

    /// The selector for the next snapshot, whose serving set is `serving`: this one's set
    /// with `changes` applied. `None` (the default) asks the factory to build one from
    /// scratch; selectors whose build is costly derive the next one in O(changes).
    fn update(&self, serving: &EndpointList, changes: &Changes<'_>) -> Option<Box<dyn Selector>> {
        let _ = (serving, changes);
        None
    }
}

/// Builds a [`Selector`] for a serving set.
pub trait SelectorFactory: Send + Sync + 'static {
    /// A selector for `serving` (non-empty or empty).
    fn build(&self, serving: &EndpointList) -> Box<dyn Selector>;
}
