//! The registry conformance kit: one suite every backend runs against its real server (or
//! the project's double of it), so a new backend gets the whole list of checks for free.
//!
//! Enabled by the `testkit` feature (a dev-dependency: nothing in a release build uses it).
//! A backend's test implements [`Harness`] — how to change the registry the way a user
//! would (register, deregister, write a malformed entry, delete the service, stop and start
//! the server) — and calls [`run`]:
//!
//! ```ignore
//! use switchyard_registry::testkit::{self, Harness, Instance, Supports};
//!
//! struct MyHarness { /* a server, a client */ }
//!
//! #[async_trait::async_trait]
//! impl Harness for MyHarness {
//!     fn supports(&self) -> Supports { Supports::ALL }
//!     async fn registry(&mut self) -> Arc<dyn Registry> { /* Factory.build(..) */ }
//!     async fn register(&mut self, service: &str, instance: Instance) { /* PUT .. */ }
//!     async fn deregister(&mut self, service: &str, address: SocketAddr) { /* DELETE .. */ }
//!     // write_malformed, delete_service, stop_server, start_server as supported
//! }
//!
//! #[tokio::test]
//! async fn conformance() {
//!     testkit::run(&mut MyHarness::start()).await;
//! }
//! ```
//!
//! The cases ([`Case`]), each on its own service `kit-<case>` so they do not see each other:
//!
//! | case | what must hold |
//! | --- | --- |
//! | `first_sync` | the first item of `watch` is a `Reset` of exactly the registered set |
//! | `add` | an instance registered while watched appears |
//! | `remove` | a deregistered instance leaves; the others stay |
//! | `weight` | a changed weight reaches the set |
//! | `malformed` | a malformed entry is skipped: its neighbours are served, the watch does not break |
//! | `server_down` | the server stopped: errors, the last set kept (never emptied), retries paced |
//! | `server_back` | the server started again: the first update is a full `Reset` of the set |
//! | `deleted` | the service deleted: an authoritative empty set (`Reset([])`/`DoesNotExist`), no error |
//! | `backoff` | while the server is down, retries keep coming, each after at least the backoff's floor |
//!
//! Cases whose needs a backend lacks ([`Supports`]) are reported as not applicable, with the
//! reason, in the printed report and in the returned [`Report`]; every other case must pass
//! (a failure panics naming the case, the registry and what was seen).
//!
//! Everything is driven through [`crate::recover`], as the gateway drives it, with a fast
//! [`KIT_BACKOFF`]; waits poll up to [`Harness::deadline`] (default 20 s: generous, since
//! CI machines are loaded) and print the time seen.
//!
//! Beside the suite, [`assert_issues`]: the check of a backend's settings decoding that
//! every backend's config tests make.

mod cases;
mod settings;
mod view;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::{Backoff, Registry, ServiceQuery};

pub use cases::{run, Case, Outcome, Report};
pub use settings::assert_issues;
pub use view::View;

/// The backoff the kit drives `recover` with: 100 ms doubling to 800 ms, 800 ms for the
/// errors retried slowly (so a backend that reports a down server as `Unauthorized` still
/// shows a few retries within the deadline).
pub const KIT_BACKOFF: Backoff = Backoff {
    initial: Duration::from_millis(100),
    max: Duration::from_millis(800),
    slow_retry: Duration::from_millis(800),
};

/// One instance as the kit registers it: an address (loopback, never connected to) and a
/// weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Instance {
    /// Where the instance says it listens.
    pub address: SocketAddr,
    /// Its weight (1 unless the case is about weights).
    pub weight: u32,
}

impl Instance {
    /// `127.0.0.1:<port>` with weight `weight`.
    pub fn local(port: u16, weight: u32) -> Self {
        Instance {
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            weight,
        }
    }
}

/// What a backend (and its harness) can do; each case runs only when its needs are met.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Supports {
    /// Instances can be registered and deregistered while the service is watched (false:
    /// the set is fixed when the registry is built, as with `static`).
    pub changes: bool,
    /// The registry carries per-instance weights (false for Kubernetes EndpointSlices).
    pub weights: bool,
    /// [`Harness::write_malformed`] can store an entry the backend must skip (false where the
    /// server refuses malformed entries, or config validation does).
    pub malformed: bool,
    /// [`Harness::stop_server`] and [`Harness::start_server`] work, keeping the data.
    pub restart: bool,
    /// [`Harness::delete_service`] works.
    pub delete: bool,
}

impl Supports {
    /// Everything.
    pub const ALL: Supports = Supports {
        changes: true,
        weights: true,
        malformed: true,
        restart: true,
        delete: true,
    };
    /// Nothing beyond the first sync (a set fixed by config).
    pub const FIXED: Supports = Supports {
        changes: false,
        weights: true,
        malformed: false,
        restart: false,
        delete: false,
    };
}

/// How the kit changes a backend's registry, the way a user or an operator would.
///
/// Methods the harness's [`Supports`] rules out are never called; their defaults panic.
/// Every method should return once the change is stored on the server (not once the watch
/// saw it: that is what the kit checks).
#[async_trait]
pub trait Harness: Send {
    /// What this backend can do.
    fn supports(&self) -> Supports;

    /// A registry pointed at the server, built afresh (called once per case, after the
    /// case's first registrations, so a registry whose set is fixed at build time sees them).
    async fn registry(&mut self) -> Arc<dyn Registry>;

    /// The query that watches `service` (default: `ServiceQuery::new(service)`; Kubernetes
    /// adds a namespace and a port, DNS an SRV name).
    fn query(&self, service: &str) -> ServiceQuery {
        ServiceQuery::new(service)
    }

    /// How long any one expectation may take to hold. Default 20 s.
    fn deadline(&self) -> Duration {
        Duration::from_secs(20)
    }

    /// Registers `instance` under `service`, or updates its weight when its address is
    /// already registered.
    async fn register(&mut self, service: &str, instance: Instance);

    /// Deregisters the instance of `service` at `address`.
    async fn deregister(&mut self, service: &str, address: SocketAddr) {
        let _ = (service, address);
        unimplemented!("this harness cannot deregister")
    }

    /// Stores one malformed entry under `service` (bad JSON, no port, an address that is not
    /// one) next to the valid ones.
    async fn write_malformed(&mut self, service: &str) {
        let _ = service;
        unimplemented!("this harness cannot write a malformed entry")
    }

    /// Deletes `service` and all its instances.
    async fn delete_service(&mut self, service: &str) {
        let _ = service;
        unimplemented!("this harness cannot delete a service")
    }

    /// Stops the server, keeping its data (connections are refused or dropped).
    async fn stop_server(&mut self) {
        unimplemented!("this harness cannot stop its server")
    }

    /// Starts the server again with the data it had.
    async fn start_server(&mut self) {
        unimplemented!("this harness cannot start its server")
    }
}
