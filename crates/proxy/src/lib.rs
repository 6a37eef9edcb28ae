//! The hyper routing/balancing core of Switchyard.
//!
//! - [`router`]: host/path/method/header matching, compiled per config generation.
//! - [`balance`]: the balancers, each a [`switchyard_upstream::SelectorFactory`].
//! - [`proxy`]: the request path — route, pick, forward with retries and timeouts.
//! - [`client`]: the upstream HTTP/1.1 client, a lock-free keep-alive pool per endpoint.
//! - [`protocol`]: which protocol an upstream's endpoints speak (`http1`, `h2c`, `h2`, `auto`).
//! - [`grpc`]: gRPC-aware errors, `grpc-timeout`, the per-call status (metrics, access log).
//! - [`grpc_web`]: gRPC-Web to gRPC and back (`grpc_web = true` on a route).
//! - [`forward`]: hop-by-hop stripping, `X-Forwarded-*`, request ids.
//! - [`hygiene`]: before routing: owned identity headers out, one validated host, the
//!   normalized path ([`path`]).
//! - [`grammar`]: the HTTP/1 grammar shared by the head guard and the upstream codec.
//! - [`filter`]: the per-route policy hook (auth, rate limits, cache, rewrites).
//! - [`server`]: the HTTP/1.1 + h2c listener with graceful drain.
//! - [`head_guard`]: strict HTTP/1 request framing in front of hyper (request smuggling → 400).
//! - [`tls`], [`upstream_tls`]: TLS termination on listeners; TLS to endpoints.
//! - [`metrics`], [`access_log`]: lock-free counters and the JSON access log.
//! - [`trace`]: OpenTelemetry SERVER and CLIENT spans and trace header propagation.
//!
//! Invariant: the request path takes no lock that another request contends for. It loads the
//! route table and the upstream snapshot with one atomic load each; counters are atomics; an
//! access log line is appended to the worker thread's own buffer, whose mutex only the log's
//! writer thread also takes, once per batch (see [`access_log`]).

pub mod access_log;
pub mod balance;
pub mod body;
pub mod client;
pub mod error;
pub mod filter;
pub mod first_bytes;
pub mod forward;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod grammar;
pub mod grpc;
pub mod grpc_web;
pub mod head_guard;
pub mod hygiene;
pub mod limits;
pub mod metrics;
pub mod path;
pub mod protocol;
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
pub use proxy::{HashOn, Proxy, ProxySettings, RetryOn, RouteSpec, Table, UpstreamOptions};
