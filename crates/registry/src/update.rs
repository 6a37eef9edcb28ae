//! The stream of changes a registry pushes for one watched service.

use std::net::SocketAddr;
use std::sync::Arc;

use futures::stream::BoxStream;

use crate::{Endpoint, RegistryError};

/// A change to the set of endpoints of one watched service.
///
/// Modelled on linkerd2-proxy's `resolve::Update`. A consumer applies updates in order:
/// `Reset` replaces the whole set, `Add` inserts or replaces endpoints by address,
/// `Remove` deletes by address, and `DoesNotExist` empties the set.
///
/// Endpoints travel as `Arc`s: a backend that keeps its current set (etcd, Kubernetes)
/// hands over the same allocation that the upstream cache then stores and serves from, so
/// an instance is held once in memory, not once per layer (at 100,000 endpoints each copy
/// cost ~11 MiB).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Update {
    /// The complete current set: replaces everything known before. An empty `Reset` is an
    /// authoritative "zero instances" and empties the set.
    Reset(Vec<Arc<Endpoint>>),
    /// Endpoints added, or changed in place (same address, new weight or metadata).
    Add(Vec<Arc<Endpoint>>),
    /// Endpoints gone, by address.
    Remove(Vec<SocketAddr>),
    /// The registry says authoritatively that the service does not exist (DNS NXDOMAIN,
    /// no EndpointSlice): the set is empty.
    DoesNotExist,
}

impl Update {
    /// A `Reset` of endpoints not shared with anything yet (each goes into its own `Arc`).
    pub fn reset(endpoints: impl IntoIterator<Item = Endpoint>) -> Update {
        Update::Reset(endpoints.into_iter().map(Arc::new).collect())
    }

    /// An `Add` of endpoints not shared with anything yet.
    pub fn add(endpoints: impl IntoIterator<Item = Endpoint>) -> Update {
        Update::Add(endpoints.into_iter().map(Arc::new).collect())
    }
}

/// The stream [`crate::Registry::watch`] returns.
///
/// An `Err` item means the stream is broken; the consumer stops reading it and watches
/// again after a backoff (see [`crate::recover`]).
pub type UpdateStream = BoxStream<'static, Result<Update, RegistryError>>;
