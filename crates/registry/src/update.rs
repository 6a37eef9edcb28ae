//! The stream of changes a registry pushes for one watched service.

use std::net::SocketAddr;

use futures::stream::BoxStream;

use crate::{Endpoint, RegistryError};

/// A change to the set of endpoints of one watched service.
///
/// Modelled on linkerd2-proxy's `resolve::Update`. A consumer applies updates in order:
/// `Reset` replaces the whole set, `Add` inserts or replaces endpoints by address,
/// `Remove` deletes by address, and `DoesNotExist` empties the set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Update {
    /// The complete current set: replaces everything known before. An empty `Reset` is an
    /// authoritative "zero instances" and empties the set.
    Reset(Vec<Endpoint>),
    /// Endpoints added, or changed in place (same address, new weight or metadata).
    Add(Vec<Endpoint>),
    /// Endpoints gone, by address.
    Remove(Vec<SocketAddr>),
    /// The registry says authoritatively that the service does not exist (DNS NXDOMAIN,
    /// no EndpointSlice): the set is empty.
    DoesNotExist,
}

/// The stream [`crate::Registry::watch`] returns.
///
/// An `Err` item means the stream is broken; the consumer stops reading it and watches
/// again after a backoff (see [`crate::recover`]).
pub type UpdateStream = BoxStream<'static, Result<Update, RegistryError>>;
