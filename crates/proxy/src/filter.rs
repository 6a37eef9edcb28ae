//! Per-route filters: the hook that policies (authentication, rate limiting, caching,
//! rewrites, analytics) plug into.
//!
//! A route runs its filters in config order before forwarding (`on_request`), and the
//! filters whose `on_request` ran in reverse order on the response (`on_response`), whether
//! the response came from the upstream, from a filter that answered itself, or from the
//! gateway (a 502, say). A route without filters pays nothing: no context is built and no
//! call is made.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use http::{request, HeaderValue, Response};

use crate::body::ProxyBody;

/// What filters know about the request beyond its head, and what they tell each other.
pub struct RequestContext {
    /// The client's address (the TCP peer).
    pub client: SocketAddr,
    /// The request id (also in the `x-request-id` header).
    pub request_id: HeaderValue,
    /// The route's name.
    pub route: Arc<str>,
    /// The authenticated consumer, once an authentication filter has found one.
    pub consumer: Option<Arc<str>>,
    /// When the request arrived.
    pub start: Instant,
    /// Free-form state a filter hands from its request phase to its response phase.
    pub extensions: http::Extensions,
}

/// A per-route policy.
#[async_trait]
pub trait Filter: Send + Sync + 'static {
    /// A short name for logs (`auth`, `rate_limit`, `cache`, ...).
    fn name(&self) -> &'static str;

    /// Runs before forwarding. It may change the request head (headers, URI). Returning
    /// `Err(response)` answers the request with it: the remaining filters and the upstream
    /// are skipped, and the response goes through `on_response` of the filters that ran.
    async fn on_request(
        &self,
        ctx: &mut RequestContext,
        request: &mut request::Parts,
    ) -> Result<(), Response<ProxyBody>>;

    /// Runs on the response head before it is sent; it may change headers or replace the
    /// body (keeping its completion hook with [`ProxyBody::take_completion`]). Default:
    /// nothing.
    async fn on_response(&self, ctx: &mut RequestContext, response: &mut Response<ProxyBody>) {
        let _ = (ctx, response);
    }
}
