//! The registry abstraction every Switchyard backend implements.
//!
//! A *registry* (Kubernetes, Consul, etcd, DNS, a file, static config) is asked to
//! [`Registry::watch`] one [`ServiceQuery`] and answers with a stream of [`Update`]s
//! carrying [`Endpoint`]s. Streams have reset points (`Update::Reset`), in the manner of
//! linkerd2-proxy's `resolve::Update` and kube-runtime's `Init..InitDone` bracketing, so a
//! consumer never has to guess whether a set is complete.
//!
//! The shared [`recover`] wrapper, not each backend, owns reconnects: it applies jittered
//! exponential backoff and turns the first update after a reconnect into a full reset.
//!
//! Backends are chosen at run time from config: each backend crate provides a
//! [`RegistryFactory`], and the binary registers them in a [`Catalog`] keyed by `type`.
//!
//! This crate depends on no backend and on no HTTP server.

mod blocking;
mod endpoint;
mod error;
mod factory;
mod fields;
mod malformed;
mod metrics;
mod query;
pub mod recover;
mod resolve;
#[cfg(feature = "testkit")]
pub mod testkit;
mod update;

pub use blocking::{next_index, TokenBucket};
pub use endpoint::{Endpoint, Metadata, META_HINTS_FOR_ZONES};
pub use error::{ErrorKind, RegistryError};
pub use factory::{
    decode_settings, decode_settings_naming_all, Catalog, ConfigIssue, RegistryContext,
    RegistryFactory,
};
pub use fields::field_names;
pub use malformed::MalformedEntries;
pub use metrics::RegistryMetrics;
pub use query::ServiceQuery;
pub use recover::{recover, Backoff, SourceEvent};
pub use resolve::{resolve_host, RESOLVE_TIMEOUT};
pub use update::{answer_updates, diff_sorted, set_diff, SetDiff, Update, UpdateStream};

use async_trait::async_trait;

/// A source of service endpoints: one configured `[registries.NAME]` table.
///
/// Implementations must be cheap to share (`Arc<dyn Registry>`) and must push changes:
/// the stream returned by [`Registry::watch`] yields an update when the registry changes,
/// never on a timer of the consumer's.
///
/// A stream that yields `Err` is considered broken: the consumer ([`recover`]) drops it and
/// calls `watch` again after a backoff. A stream that ends without error is treated the
/// same way (the backend lost its connection without saying why).
#[async_trait]
pub trait Registry: Send + Sync + 'static {
    /// The `type` of this registry in config (`"etcd"`, `"consul"`, ...).
    fn kind(&self) -> &'static str;

    /// Checks a source's query when the config is validated, before anything runs.
    ///
    /// Issues name keys relative to the source table (`"service"`, `"port"`); the caller
    /// prefixes them with the source's own path. The default accepts every query.
    fn check_query(&self, query: &ServiceQuery) -> Result<(), Vec<ConfigIssue>> {
        let _ = query;
        Ok(())
    }

    /// Warnings about this registry and the `queries` its sources will watch: things that are
    /// valid but likely wrong (a DNS name that depends on a search domain, a Consul agent
    /// with default-deny ACLs and no token configured). Printed by `switchyard check` and
    /// logged at start-up; never an error.
    ///
    /// May ask the registry, briefly: callers bound the whole call with a short timeout, and
    /// an unreachable registry gives no warning here (the watch reports it). Default: none.
    async fn warnings(&self, queries: &[ServiceQuery]) -> Vec<String> {
        let _ = queries;
        Vec::new()
    }

    /// Starts watching one service. The first item of a healthy stream is a
    /// [`Update::Reset`] (or [`Update::DoesNotExist`]) carrying the complete current set.
    async fn watch(&self, query: &ServiceQuery) -> Result<UpdateStream, RegistryError>;
}
