//! The hyper routing/balancing core of Switchyard.
//!
//! - [`router`]: host/path/method/header matching, compiled per config generation.
//! - [`balance`]: the balancers, each a [`switchyard_upstream::SelectorFactory`].
//! - [`proxy`]: the request path — route, pick, forward with retries and timeouts.
//! - [`client`]: the upstream HTTP/1.1 client, a lock-free keep-alive pool per endpoint.
//! - [`forward`]: hop-by-hop stripping, `X-Forwarded-*`, request ids.
//! - [`filter`]: the per-route policy hook (auth, rate limits, cache, rewrites).
//! - [`server`]: the HTTP/1.1 + h2c listener with graceful drain.
//! - [`head_guard`]: strict HTTP/1 request framing in front of hyper (request smuggling → 400).
//! - [`tls`], [`upstream_tls`]: TLS termination on listeners; TLS to endpoints.
//! - [`metrics`], [`access_log`]: lock-free counters and the JSON access log.
//! - [`trace`]: OpenTelemetry SERVER and CLIENT spans and trace header propagation.
//!
//! Invariant: the request path takes no lock. It loads the route table and the upstream
//! snapshot with one atomic load each; counters are atomics; the access log is a channel.

pub mod access_log;
pub mod balance;
pub mod body;
pub mod client;
pub mod error;
pub mod filter;
pub mod first_bytes;
pub mod forward;
pub mod head_guard;
pub mod limits;
pub mod metrics;
pub mod proxy;
pub mod router;
pub mod server;
pub mod tls;
pub mod trace;
pub mod upgrade;
pub mod upstream_tls;

pub use balance::BalancerKind;
pub use filter::{Filter, RequestContext};
pub use head_guard::HeadGuard;
pub use proxy::{HashOn, Proxy, ProxySettings, RouteSpec, Table, UpstreamOptions};
