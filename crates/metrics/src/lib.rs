//! Switchyard's metrics: the lock-free types the request path records into, and the
//! `/metrics` exposition through the `prometheus-client` crate.
//!
//! - [`Histogram`]: fixed buckets of relaxed atomics (no lock on `observe`, unlike
//!   `prometheus-client`'s own histogram, which takes a mutex), with an optional
//!   OpenMetrics exemplar per bucket (the latest traced observation, [`exemplar`]).
//!   It implements `prometheus-client`'s `EncodeMetric`.
//! - [`family`]: helpers a `Collector` uses to write a counter, gauge or histogram family
//!   from the atomics it already holds, with escaped label values ([`Escaped`]).
//! - [`exposition`]: one registry rendered as OpenMetrics 1.0 (with exemplars) or as the
//!   Prometheus text format 0.0.4, chosen from the scraper's `Accept` header.
//!
//! The crate depends on nothing of Switchyard's: the proxy, the policies, the upstream
//! cache and the binary all record into it.

pub mod exemplar;
pub mod exposition;
pub mod family;
pub mod histogram;
pub mod labels;

pub use exemplar::TraceId;
pub use exposition::{render, Format};
pub use histogram::Histogram;
pub use labels::Escaped;
pub use prometheus_client;
