//! The request path: route, pick, forward, retry, answer.
//!
//! [`Proxy`] holds the route [`Table`] in an `ArcSwap` (replaced whole on reload) and the
//! [`UpstreamClient`] with its per-endpoint keep-alive pools. A request costs one atomic
//! load for the table and one for the upstream snapshot; nothing on the way takes a lock.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use http::header::{self, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, Uri};
use hyper::body::{Body as _, Incoming};
use switchyard_upstream::{PickContext, ServingEndpoint, Snapshot, Upstream, UpstreamCache};

use crate::access_log::{AccessLog, Entry};
use crate::balance::consistent_hash::stable_hash;
use crate::body::ProxyBody;
use crate::client::{ClientSettings, UpstreamClient};
use crate::error::{self, ProxyError};
use crate::filter::{Filter, RequestContext};
use crate::forward::{self, RequestId};
use crate::grpc;
use crate::hygiene::{self, Refused};
use crate::limits::{BodyLimit, Cidr, LimitedBody, Tripped};
use crate::metrics::RouteMetrics;
use crate::path::{self, Normalized, PathNormalization};
use crate::protocol::{UpstreamProtocol, Wire};
use crate::router::{PathMatch, RouteMatch, Router};
use crate::trace::{RequestTracer, ServerSpan};
use crate::upgrade::Offer;
use crate::upstream_tls::UpstreamTls;

/// What a consistent-hash upstream hashes on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HashOn {
    /// A request header's value.
    Header(HeaderName),
    /// A cookie's value.
    Cookie(String),
    /// The client's IP address.
    ClientIp,
    /// The request path.
    Path,
}

/// What the proxy needs to know about an upstream besides its endpoints.
#[derive(Clone, Debug, Default)]
pub struct UpstreamOptions {
    /// For consistent-hash upstreams: what to hash.
    pub hash_on: Option<HashOn>,
    /// TLS to the endpoints (`[upstreams.NAME.tls]`); `None` is plain HTTP.
    pub tls: Option<Arc<UpstreamTls>>,
    /// The protocol spoken to the endpoints (`protocol`). Default HTTP/1.1.
    pub protocol: UpstreamProtocol,
    /// HTTP/2 connection settings (`[upstreams.NAME.http2]`); `None` uses the client's
    /// defaults ([`H2Settings::default`](crate::client::h2::H2Settings)).
    pub h2: Option<crate::client::h2::H2Settings>,
}

/// One route as config describes it.
#[derive(Clone)]
pub struct RouteSpec {
    /// The route's name, shared with its metrics and each request's filter context.
    pub name: Arc<str>,
    /// What it matches.
    pub matcher: RouteMatch,
    /// The upstream it sends to (shared with its metrics).
    pub upstream: Arc<str>,
    /// Whether to remove the matched `path_prefix` before forwarding. Default false.
    pub strip_prefix: bool,
    /// Time allowed for the upstream's response headers. Default 30 s.
    pub timeout: Duration,
    /// Extra attempts on another endpoint for idempotent requests without a body. Default 1.
    pub retries: u32,
    /// Largest request body; `None` uses the server-wide limit.
    pub max_body: Option<u64>,
    /// Policies, in the order the route lists them.
    pub filters: Vec<Arc<dyn Filter>>,
    /// Protocols a request may upgrade to (`Upgrade`, lower case, without version), tunnelled
    /// after the upstream's 101; others get 403. Default `["websocket"]`. `h2c` is never
    /// forwarded.
    pub upgrades: Vec<String>,
    /// Extra retry conditions (`retry_on`). Default: none.
    pub retry_on: RetryOn,
    /// Translate gRPC-Web to gRPC and back (`grpc_web`). Default false.
    pub grpc_web: bool,
}

/// A route's `retry_on`: conditions under which a call goes again to another endpoint,
/// before any byte of the answer went to the client.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetryOn {
    /// `connect_failure`: the connection could not be opened (nothing was sent). Such
    /// failures are retried anyway (up to 3 times) for requests that can be replayed;
    /// listed, they are also retried for gRPC calls whose body was buffered.
    pub connect_failure: bool,
    /// gRPC statuses (bit `1 << code`) that, answered trailers-only by the endpoint, send a
    /// gRPC call whose request fit the replay buffer to another endpoint.
    pub grpc: u32,
}

impl RetryOn {
    /// Whether any condition is set.
    pub fn any(self) -> bool {
        self.connect_failure || self.grpc != 0
    }
}

/// A route bound to its running upstream.
pub struct Route {
    spec: RouteSpec,
    upstream: Arc<Upstream>,
    /// Shared by the routes of one upstream (40 bytes a route otherwise).
    options: Arc<UpstreamOptions>,
    metrics: Arc<RouteMetrics>,
}

impl AsRef<RouteMatch> for Route {
    fn as_ref(&self) -> &RouteMatch {
        &self.spec.matcher
    }
}

/// The routing table of one config generation.
pub struct Table {
    /// Routes in config order; the router's indexes point here.
    routes: Vec<Route>,
    router: Router,
    cache: Arc<UpstreamCache>,
    no_route: Arc<RouteMetrics>,
}

impl Table {
    /// Binds `routes` to the upstreams of `cache`. `options` gives each upstream's
    /// [`UpstreamOptions`] by name. Route metrics of `previous` are kept for routes of the same name.
    ///
    /// # Errors
    /// A route naming an upstream that `cache` does not have (config validation prevents it).
    pub fn new(
        routes: Vec<RouteSpec>,
        cache: Arc<UpstreamCache>,
        options: &dyn Fn(&str) -> UpstreamOptions,
        previous: Option<&Table>,
    ) -> Result<Self, String> {
        // The previous generation's counters by (route, upstream): a map, as a scan per
        // route would make a reload quadratic in the number of routes.
        let kept: HashMap<(&str, &str), &Arc<RouteMetrics>> = previous
            .map(|p| {
                p.routes
                    .iter()
                    .map(|r| ((&*r.spec.name, &*r.spec.upstream), &r.metrics))
                    .collect()
            })
            .unwrap_or_default();
        let mut bound = Vec::with_capacity(routes.len());
        let mut upstream_options: HashMap<Arc<str>, Arc<UpstreamOptions>> = HashMap::new();
        for spec in routes {
            let upstream = cache.get(&spec.upstream).cloned().ok_or_else(|| {
                format!("route {}: unknown upstream {}", spec.name, spec.upstream)
            })?;
            let metrics = match kept.get(&(&*spec.name, &*spec.upstream)) {
                Some(metrics) => Arc::clone(metrics),
                None => Arc::new(RouteMetrics::new(spec.name.clone(), spec.upstream.clone())),
            };
            let options = upstream_options
                .entry(spec.upstream.clone())
                .or_insert_with(|| Arc::new(options(&spec.upstream)))
                .clone();
            bound.push(Route {
                options,
                upstream,
                metrics,
                spec,
            });
        }
        Ok(Table {
            router: Router::new(&bound),
            routes: bound,
            cache,
            no_route: previous
                .map(|p| p.no_route.clone())
                .unwrap_or_else(|| Arc::new(RouteMetrics::new("", ""))),
        })
    }

    /// The upstream cache this table routes to.
    pub fn cache(&self) -> &Arc<UpstreamCache> {
        &self.cache
    }

    /// The options of upstream `name` (its protocol, TLS), when a route uses it.
    pub fn upstream_options(&self, name: &str) -> Option<&UpstreamOptions> {
        self.routes
            .iter()
            .find(|r| &*r.spec.upstream == name)
            .map(|r| &*r.options)
    }

    /// The protocol spoken to an endpoint of upstream `name` whose labels are `metadata`:
    /// `http1`, `h2c` or `h2` (`/api/upstreams`).
    pub fn endpoint_protocol(
        &self,
        name: &str,
        metadata: &switchyard_registry::Metadata,
    ) -> &'static str {
        match self.upstream_options(name) {
            Some(options) => options.protocol.wire(metadata).name(options.tls.is_some()),
            None => Wire::Http1.name(false),
        }
    }

    /// Every route's name and metrics, in config order.
    pub fn route_metrics(&self) -> impl Iterator<Item = (&RouteSpec, &Arc<RouteMetrics>)> {
        self.routes.iter().map(|r| (&r.spec, &r.metrics))
    }

    /// Every route's spec, in config order.
    pub fn routes(&self) -> impl Iterator<Item = &RouteSpec> {
        self.routes.iter().map(|r| &r.spec)
    }

    /// Writes every route's metric families to `/metrics` ([`crate::metrics::encode_families`]).
    pub fn encode_metrics(
        &self,
        encoder: &mut switchyard_metrics::prometheus_client::encoding::DescriptorEncoder,
    ) -> std::fmt::Result {
        crate::metrics::encode_families(
            encoder,
            &self.no_route,
            self.routes.iter().map(|r| &*r.metrics),
        )
    }
}

/// Proxy-wide settings.
#[derive(Clone, Debug)]
pub struct ProxySettings {
    /// Time allowed to connect to an endpoint. Default 2 s.
    pub connect_timeout: Duration,
    /// How long an idle upstream connection stays pooled. Default 90 s.
    pub pool_idle_timeout: Duration,
    /// Idle connections kept per endpoint. Default 256.
    pub pool_max_idle_per_endpoint: usize,
    /// Longest request target (path and query) in bytes; longer gets 414. Default 8 KiB.
    pub max_uri_bytes: usize,
    /// Largest request body for routes without their own `max_body`; larger gets 413,
    /// also when chunked (checked as it streams). Default 10 MiB.
    pub max_body_bytes: u64,
    /// A request body that sends nothing for this long is cut off (408). Default 60 s.
    pub body_idle_timeout: Duration,
    /// Requests in flight at most; past it, 503 at once. 0 = no cap. Default 0.
    pub max_in_flight: usize,
    /// Peers whose `X-Forwarded-*` headers are kept (appended to). From any other peer
    /// they are replaced. Default: none.
    pub trusted_proxies: Vec<Cidr>,
    /// An upgraded (WebSocket) tunnel idle this long is closed. Default 5 min.
    pub upgrade_idle_timeout: Duration,
    /// How request paths are normalized before routing (`[server.path_normalization]`).
    /// Default: normalize, merge slashes, refuse encoded slashes.
    pub path_normalization: PathNormalization,
}

impl Default for ProxySettings {
    fn default() -> Self {
        ProxySettings {
            connect_timeout: Duration::from_secs(2),
            pool_idle_timeout: Duration::from_secs(90),
            pool_max_idle_per_endpoint: 256,
            max_uri_bytes: 8 * 1024,
            max_body_bytes: 10 * 1024 * 1024,
            body_idle_timeout: Duration::from_secs(60),
            max_in_flight: 0,
            trusted_proxies: Vec::new(),
            upgrade_idle_timeout: Duration::from_secs(300),
            path_normalization: PathNormalization::default(),
        }
    }
}

/// The data plane.
pub struct Proxy {
    table: ArcSwap<Table>,
    client: Arc<UpstreamClient>,
    access_log: Option<AccessLog>,
    settings: ProxySettings,
    in_flight: AtomicUsize,
    /// OpenTelemetry spans (`[tracing]`); `None` (tracing off) costs a request one branch.
    tracer: Option<Arc<RequestTracer>>,
}

/// The other end of a client connection, worked out once per connection.
#[derive(Clone, Debug)]
pub struct Peer {
    /// The client's address.
    pub address: SocketAddr,
    /// The client's IP as a header value, for `X-Forwarded-For`.
    pub ip: HeaderValue,
    /// `http` or `https`, for `X-Forwarded-Proto`.
    pub proto: &'static str,
}

impl Peer {
    /// The peer at `address` on a listener speaking `proto`.
    pub fn new(address: SocketAddr, proto: &'static str) -> Peer {
        let ip = HeaderValue::from_str(&address.ip().to_string())
            .expect("an IP is a valid header value");
        Peer { address, ip, proto }
    }

    /// Whether the peer is one of the trusted proxies.
    pub fn trusted(&self, proxies: &[Cidr]) -> bool {
        proxies.iter().any(|c| c.contains(self.address.ip()))
    }
}

/// Decrements the in-flight count when a request is answered.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Proxy {
    /// A proxy serving `table`.
    pub fn new(table: Table, settings: &ProxySettings, access_log: Option<AccessLog>) -> Self {
        let client = UpstreamClient::new(ClientSettings {
            connect_timeout: settings.connect_timeout,
            idle_timeout: settings.pool_idle_timeout,
            max_idle_per_endpoint: settings.pool_max_idle_per_endpoint,
            h2: crate::client::h2::H2Settings::default(),
        });
        client.start_sweeper();
        Proxy {
            table: ArcSwap::from_pointee(table),
            client,
            access_log,
            settings: settings.clone(),
            in_flight: AtomicUsize::new(0),
            tracer: None,
        }
    }

    /// Traces every request with `tracer` (set once, before serving).
    #[must_use]
    pub fn with_tracer(mut self, tracer: Option<Arc<RequestTracer>>) -> Self {
        self.tracer = tracer;
        self
    }

    /// The upstream client (its pools), for tests and diagnostics.
    pub fn client(&self) -> &UpstreamClient {
        &self.client
    }

    /// Writes the access log's pending lines and stops it (after the drain, at shutdown).
    pub fn close_access_log(&self) {
        if let Some(log) = &self.access_log {
            log.close();
        }
    }

    /// The current table.
    pub fn table(&self) -> Arc<Table> {
        self.table.load_full()
    }

    /// Replaces the table (a reload). Requests in flight finish on the table they started with.
    pub fn set_table(&self, table: Table) {
        self.table.store(Arc::new(table));
    }

    /// Handles one request from `client` on a plain HTTP listener.
    pub async fn handle(
        &self,
        request: Request<Incoming>,
        client: SocketAddr,
    ) -> Response<ProxyBody> {
        self.handle_from(request, &Peer::new(client, "http")).await
    }

    /// Handles one request from a connection's peer.
    pub async fn handle_from(
        &self,
        mut request: Request<Incoming>,
        peer: &Peer,
    ) -> Response<ProxyBody> {
        let start = Instant::now();
        let id = forward::request_id(request.headers());
        let request_id = &id.value;
        let in_flight = self.in_flight.fetch_add(1, Ordering::Relaxed);
        let _in_flight = InFlight(&self.in_flight);
        let table = self.table.load();
        // The path as the client sent it, for the access log.
        let sent_path = self
            .access_log
            .as_ref()
            .and_then(|_| request.uri().path_and_query().cloned());
        let mut answered = None;
        let upgrade_asked;
        let http1 = request.version() < http::Version::HTTP_2;
        let mut span = self
            .tracer
            .as_ref()
            .map(|tracer| tracer.start(&request, peer));
        let refused =
            if self.settings.max_in_flight != 0 && in_flight >= self.settings.max_in_flight {
                Some(ProxyError::Overloaded)
            } else if request
                .uri()
                .path_and_query()
                .map_or(0, |p| p.as_str().len())
                > self.settings.max_uri_bytes
            {
                Some(ProxyError::UriTooLong)
            } else {
                None
            };
        let refused = if refused.is_some() {
            upgrade_asked = http1 && request.headers().contains_key(header::UPGRADE);
            refused
        } else {
            // Identity headers out, one validated host, the normalized path: before any
            // route decision (crate::hygiene).
            let admission = hygiene::admit(&mut request, &self.settings.path_normalization);
            upgrade_asked = http1 && admission.upgrade;
            match admission.result {
                Ok(_) => None,
                Err(Refused::BadRequest(why)) => {
                    tracing::debug!("request refused with 400: {why}");
                    Some(ProxyError::BadRequest)
                }
                Err(Refused::Redirect(location)) => {
                    answered = Some(error::redirect(&location, request_id));
                    Some(ProxyError::BadRequest)
                }
            }
        };
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok());
        let found = match refused {
            Some(_) => None,
            None => table.router.find(
                &table.routes,
                host,
                request.uri().path(),
                request.method(),
                request.headers(),
            ),
        };
        let log = self.access_log.as_ref().map(|log| Entry {
            log: log.clone(),
            ts: SystemTime::now(),
            start,
            request_id: request_id.clone(),
            method: request.method().clone(),
            host: request.headers().get(header::HOST).cloned(),
            path: sent_path.unwrap_or_else(|| PathAndQuery::from_static("/")),
            status: 0,
            route: None,
            endpoint: None,
            client_ip: peer.ip.clone(),
            grpc_status: None,
            trace: None,
        });
        // gRPC-Web calls get the gateway's errors in gRPC form too (trailers-only).
        let grpc = grpc::is_grpc_or_web(request.headers());
        let (response, metrics, endpoint) = match found {
            None => {
                let response = match answered {
                    Some(response) => response,
                    None => {
                        let error = refused.unwrap_or(ProxyError::NoRoute);
                        if grpc {
                            grpc::error_response(
                                grpc::error_code(error),
                                error.message(),
                                request_id,
                            )
                        } else {
                            error.response(request_id)
                        }
                    }
                };
                (response, table.no_route.clone(), None)
            }
            Some(index) => {
                let route = &table.routes[index];
                if let Some(span) = &mut span {
                    span.route(&route.spec.name, &route.spec.upstream);
                }
                let (response, endpoint) = if route.spec.filters.is_empty() {
                    self.forward_answer(route, request, peer, &id, grpc, span.as_mut())
                        .await
                } else {
                    self.forward_filtered(route, request, peer, &id, start, grpc, span.as_mut())
                        .await
                };
                (response, route.metrics.clone(), endpoint)
            }
        };
        // A sampled request's trace id becomes its duration bucket's exemplar.
        let sampled = span
            .as_ref()
            .filter(|s| s.is_recording())
            .map(|s| switchyard_metrics::TraceId(s.ids().trace_id.to_bytes()));
        metrics.record_traced(response.status().as_u16(), start.elapsed(), sampled);
        let mut response = response;
        if upgrade_asked && response.status() != http::StatusCode::SWITCHING_PROTOCOLS {
            // Not upgraded: nothing more is read from this connection (see Admission).
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        // The SERVER span ends with the response body (after the CLIENT span's hook, which
        // the upstream's body already carries).
        let (trace, response) = match span {
            Some(span) => {
                let ids = span.ids();
                let end = span.answered(response.status().as_u16());
                let response = if end.is_recording() {
                    response.map(|body| body.on_complete(Box::new(end)))
                } else {
                    end.end();
                    response
                };
                (Some(ids), response)
            }
            None => (None, response),
        };
        let log = log.map(|mut entry| {
            entry.trace = trace;
            entry
        });
        if grpc {
            return grpc_completion(response, metrics, log, found.is_some(), endpoint);
        }
        match log {
            None => response,
            Some(mut entry) => {
                entry.status = response.status().as_u16();
                entry.route = found.map(|_| metrics);
                entry.endpoint = endpoint;
                let (parts, body) = response.into_parts();
                Response::from_parts(parts, body.on_complete(Box::new(entry)))
            }
        }
    }

    /// Forwards and turns a failure into the gateway's error response.
    async fn forward_answer(
        &self,
        route: &Route,
        request: Request<Incoming>,
        peer: &Peer,
        id: &RequestId,
        grpc: bool,
        span: Option<&mut ServerSpan>,
    ) -> (Response<ProxyBody>, Option<SocketAddr>) {
        let forwarded = {
            let (parts, body) = request.into_parts();
            self.forward(route, parts, body, peer, None, id, span)
        }
        .await;
        match forwarded {
            Ok((response, endpoint)) => (response, Some(endpoint)),
            Err((error, endpoint)) => (error_response(error, &id.value, grpc), endpoint),
        }
    }

    /// Runs the route's filters around [`Proxy::forward`].
    // The request's own context (id, start, gRPC-ness, span) arrives as arguments; bundling
    // them in a per-request struct is left for when the next one is added.
    #[allow(clippy::too_many_arguments)]
    async fn forward_filtered(
        &self,
        route: &Route,
        request: Request<Incoming>,
        peer: &Peer,
        id: &RequestId,
        start: Instant,
        grpc: bool,
        mut span: Option<&mut ServerSpan>,
    ) -> (Response<ProxyBody>, Option<SocketAddr>) {
        let request_id = &id.value;
        let (mut parts, body) = request.into_parts();
        let mut ctx = RequestContext {
            client: peer.address,
            request_id: request_id.clone(),
            route: route.spec.name.clone(),
            consumer: None,
            start,
            extensions: http::Extensions::new(),
        };
        // The client's own Host, for X-Forwarded-Host, before a filter rewrites it.
        let original_host = parts.headers.get(header::HOST).cloned();
        let filters = &route.spec.filters;
        let mut ran = 0;
        let mut answered = None;
        for filter in filters {
            ran += 1;
            if let Err(response) = filter.on_request(&mut ctx, &mut parts).await {
                answered = Some(response);
                break;
            }
        }
        if let (Some(span), Some(consumer)) = (span.as_deref_mut(), &ctx.consumer) {
            span.consumer(consumer);
        }
        let (mut response, endpoint) = match answered {
            // A policy's own answer (401, 403, 429, ...) in gRPC's form for a gRPC call.
            Some(response) if grpc => (grpc::translate(response, request_id), None),
            Some(response) => (response, None),
            None => match self
                .forward(route, parts, body, peer, original_host, id, span)
                .await
            {
                Ok((response, endpoint)) => (response, Some(endpoint)),
                Err((error, endpoint)) => (error_response(error, request_id, grpc), endpoint),
            },
        };
        for filter in filters[..ran].iter().rev() {
            filter.on_response(&mut ctx, &mut response).await;
        }
        (response, endpoint)
    }

    /// Sends `request` to an endpoint of the route's upstream, retrying idempotent
    /// body-less requests on another endpoint when the first attempt fails before any
    /// response arrived. Each attempt is a CLIENT span of `span`, when traced.
    #[allow(clippy::too_many_arguments)]
    async fn forward(
        &self,
        route: &Route,
        mut parts: http::request::Parts,
        body: Incoming,
        peer: &Peer,
        original_host: Option<HeaderValue>,
        id: &RequestId,
        mut span: Option<&mut ServerSpan>,
    ) -> Result<(Response<ProxyBody>, SocketAddr), (ProxyError, Option<SocketAddr>)> {
        let request_id = &id.value;
        let client = peer.address;
        let web = if route.spec.grpc_web {
            crate::grpc_web::mode(&parts.headers)
        } else {
            None
        };
        if web.is_some() {
            crate::grpc_web::request_head(&mut parts.headers);
        }
        let grpc = web.is_some() || grpc::is_grpc(&parts.headers);
        let mut fields = forward::RequestFields::of(&parts.headers);
        let max_body = route.spec.max_body.unwrap_or(self.settings.max_body_bytes);
        let declared = fields.content_length();
        if declared.is_some_and(|n| n > max_body) {
            return Err((ProxyError::BodyTooLarge, None));
        }
        let hash = route
            .options
            .hash_on
            .as_ref()
            .map_or(0, |on| request_hash(on, &parts, client));
        let host = original_host.or_else(|| fields.host.clone());
        // `TE: trailers` is hop-by-hop, but HTTP/2 carries it end to end (gRPC needs it).
        let te_trailers = web.is_some()
            || fields.hop_by_hop
                && parts
                    .headers
                    .get(header::TE)
                    .is_some_and(|te| te.as_bytes().eq_ignore_ascii_case(b"trailers"));
        let upgrade = if fields.connection {
            crate::upgrade::requested(&parts.headers)
        } else {
            None
        };
        // Only the protocols the route allows are tunnelled; h2c is never forwarded (the
        // request goes on as a plain one).
        let upgrade = match upgrade {
            None => None,
            Some(value) => match crate::upgrade::offer(&value, &route.spec.upgrades) {
                Offer::Allowed => Some(value),
                Offer::H2c => {
                    parts.headers.remove(crate::upgrade::HTTP2_SETTINGS);
                    None
                }
                Offer::Refused => return Err((ProxyError::UpgradeRefused, None)),
            },
        };
        if fields.hop_by_hop {
            forward::strip_hop_by_hop(&mut parts.headers);
        }
        if !peer.trusted(&self.settings.trusted_proxies) {
            // Only trusted proxies may tell us who the client is.
            if fields.forwarded_for {
                parts.headers.remove(forward::X_FORWARDED_FOR);
                fields.forwarded_for = false;
            }
            if fields.forwarded_host {
                parts.headers.remove(forward::X_FORWARDED_HOST);
                fields.forwarded_host = false;
            }
        }
        let added = forward::forwarded_fields(
            &parts.headers,
            &fields,
            &peer.ip,
            peer.proto,
            host.as_ref(),
            id,
        );
        let client_upgrade = match upgrade {
            Some(value) => {
                crate::upgrade::restore(&mut parts.headers, value);
                parts.extensions.remove::<hyper::upgrade::OnUpgrade>()
            }
            None => None,
        };
        let Some(path) = upstream_path(route, &parts.uri, &self.settings.path_normalization) else {
            return Err((ProxyError::BadRequest, None));
        };

        let replayable = body.is_end_stream()
            && forward::is_idempotent(&parts.method)
            && client_upgrade.is_none();
        // Retries: `retries` extra attempts after failures, plus up to MAX_CONNECT_RETRIES
        // more after connect failures (the request never left), which may also move on to
        // the next tier when the serving one is exhausted.
        // Only a body that has bytes to count can trip a limit (no allocation otherwise).
        let mut tripped = None;
        let mut body = Some(if body.is_end_stream() {
            ProxyBody::stream(body)
        } else {
            let flag = tripped.insert(Arc::new(Tripped::default())).clone();
            ProxyBody::limited(LimitedBody::new(
                body,
                max_body,
                self.settings.body_idle_timeout,
                flag,
            ))
        });
        if let Some(mode) = web {
            body = body.map(|b| crate::grpc_web::request_body(b, mode));
        }
        // A gRPC call on a route with `retry_on` is kept (when its request fits the replay
        // buffer), so that another endpoint can be sent it.
        let buffered = if grpc && route.spec.retry_on.any() {
            match body.take() {
                Some(b) => match buffer_small(b).await {
                    Ok(bytes) => Some(bytes),
                    Err(rest) => {
                        body = Some(rest);
                        None
                    }
                },
                None => None,
            }
        } else {
            None
        };
        // An HTTP/1.0 client may send no Host; each attempt then names its own endpoint.
        // (Host is never stripped as hop-by-hop, whatever `Connection` names.)
        let client_sent_host = fields.host.is_some();
        // A gRPC call's deadline (`grpc-timeout`) bounds the wait when shorter.
        let timeout = match crate::grpc::timeout(&parts.headers) {
            Some(deadline) => deadline.min(route.spec.timeout),
            None => route.spec.timeout,
        };
        let snapshot = route.upstream.snapshot_full();
        let can_retry = (replayable || buffered.is_some()) && snapshot_has_alternatives(&snapshot);
        let mut failed: Vec<SocketAddr> = Vec::new();
        let mut last_error = ProxyError::NoHealthyEndpoint;
        let (mut retries_left, mut connect_retries_left) =
            (route.spec.retries, MAX_CONNECT_RETRIES);
        for attempt in 0.. {
            let Some(endpoint) = pick(&snapshot, hash, attempt, &failed) else {
                return Err((last_error, failed.last().copied()));
            };
            let address = endpoint.address();
            let started = Instant::now();
            endpoint.stats.start();
            let tls = route.options.tls.as_deref();
            let upgrade = client_upgrade.is_some();
            let mut attempt_span = None;
            // The request and the exchange future are made inside this block so that their
            // storage is scoped to it: a local still in scope at a later `await` keeps its
            // own slot in this function's future, and every request's future is moved into
            // place by hyper (see ARCHITECTURE.md, request path).
            let result = {
                let mut upstream_request = Request::new(match &buffered {
                    Some(bytes) => ProxyBody::full(bytes.clone()),
                    None => body.take().unwrap_or_else(ProxyBody::empty),
                });
                *upstream_request.method_mut() = parts.method.clone();
                *upstream_request.uri_mut() = Uri::from(path.clone());
                // Moved, not copied: a retry takes them back from the request below.
                *upstream_request.headers_mut() = std::mem::take(&mut parts.headers);
                if !client_sent_host {
                    // HTTP/1.1 requires a Host upstream (replacing a previous attempt's): an
                    // HTTP/2 client's `:authority`, else the endpoint's address.
                    let authority = match parts.uri.authority() {
                        Some(authority) => HeaderValue::from_str(authority.as_str()),
                        None => HeaderValue::from_maybe_shared(endpoint.authority()),
                    };
                    if let Ok(authority) = authority {
                        upstream_request
                            .headers_mut()
                            .insert(header::HOST, authority);
                    }
                }
                if let Some(span) = span.as_deref_mut() {
                    attempt_span = Some(span.attempt(endpoint, upstream_request.headers_mut()));
                }
                let client = &self.client;
                let wire = route.options.protocol.wire(endpoint.endpoint.metadata());
                if wire == Wire::Http2 && !upgrade {
                    let headers = upstream_request.headers_mut();
                    added.insert_into(headers);
                    if te_trailers {
                        headers.insert(header::TE, HeaderValue::from_static("trailers"));
                    }
                    // Boxed: the HTTP/2 exchange's future is large and this path is the rarer.
                    let send = Box::pin(client.send_h2(
                        address,
                        tls,
                        route.options.h2.as_ref(),
                        &mut upstream_request,
                    ));
                    let result = tokio::time::timeout(timeout, send).await;
                    if can_retry {
                        parts.headers = std::mem::take(upstream_request.headers_mut());
                    }
                    result
                } else if upgrade {
                    // hyper's client encodes this one: the added fields go into the map.
                    added.insert_into(upstream_request.headers_mut());
                    // Boxed, as rare and large (see UpstreamClient::send).
                    let send = Box::pin(client.send_upgrade(address, tls, upstream_request));
                    tokio::time::timeout(timeout, send).await
                } else {
                    let send = client.send(address, tls, &mut upstream_request, &added);
                    let result = tokio::time::timeout(timeout, send).await;
                    if can_retry {
                        parts.headers = std::mem::take(upstream_request.headers_mut());
                    }
                    result
                }
            };
            endpoint.stats.finish(started.elapsed());
            let error = match result {
                Ok(Ok(response)) => {
                    let attempt_end = attempt_span.map(|a| a.answered(response.status().as_u16()));
                    // A trailers-only gRPC status listed in `retry_on`: another endpoint.
                    let retry_status = buffered.is_some()
                        && retries_left > 0
                        && grpc::status_of(response.headers()).is_some_and(|code| {
                            code < 32 && route.spec.retry_on.grpc & (1 << code) != 0
                        });
                    // The attempt's CLIENT span ends with the endpoint's body.
                    let response = match attempt_end {
                        Some(end) if retry_status || !end.is_recording() => {
                            end.end();
                            response
                        }
                        Some(end) => response.map(|body| body.on_complete(Box::new(end))),
                        None => response,
                    };
                    if retry_status {
                        tracing::debug!(upstream = route.upstream.name(), %address, "gRPC status in retry_on: trying another endpoint");
                        endpoint.stats.record_success();
                        failed.push(address);
                        retries_left -= 1;
                        continue;
                    }
                    let failed =
                        response.status().is_server_error() && route.upstream.outlier().count_5xx;
                    if failed {
                        self.record_failure(route, endpoint);
                    } else {
                        endpoint.stats.record_success();
                    }
                    let switching = response.status() == http::StatusCode::SWITCHING_PROTOCOLS;
                    let (mut parts, body) = response.into_parts();
                    let upstream_upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
                    let upgraded_to = if switching {
                        parts.headers.get(header::UPGRADE).cloned()
                    } else {
                        None
                    };
                    forward::strip_hop_by_hop(&mut parts.headers);
                    parts
                        .headers
                        .insert(forward::X_REQUEST_ID, request_id.clone());
                    if let (true, Some(client_side), Some(upstream_side), Some(to)) =
                        (switching, client_upgrade, upstream_upgrade, upgraded_to)
                    {
                        crate::upgrade::restore(&mut parts.headers, to);
                        let idle = self.settings.upgrade_idle_timeout;
                        tokio::spawn(crate::upgrade::tunnel(client_side, upstream_side, idle));
                    }
                    let response = Response::from_parts(parts, body);
                    let response = match web {
                        Some(mode) => crate::grpc_web::response(response, mode),
                        None => response,
                    };
                    return Ok((response, address));
                }
                Ok(Err(error)) => {
                    tracing::debug!(upstream = route.upstream.name(), %address, "upstream request failed: {error:?}");
                    match tripped.as_deref().and_then(Tripped::get) {
                        // The client's body broke a limit: not the endpoint's fault.
                        Some(BodyLimit::TooLarge) => return Err((ProxyError::BodyTooLarge, None)),
                        Some(BodyLimit::Idle) => return Err((ProxyError::RequestTimeout, None)),
                        Some(BodyLimit::Broken) => return Err((ProxyError::BadRequest, None)),
                        None => {}
                    }
                    let (error, kind) = if error.is_connect() {
                        (ProxyError::Connect, "connect_failure")
                    } else {
                        (ProxyError::Upstream, "upstream_failure")
                    };
                    if let Some(attempt) = attempt_span {
                        attempt.failed(kind);
                    }
                    error
                }
                Err(_elapsed) => {
                    if let Some(attempt) = attempt_span {
                        attempt.failed("timeout");
                    }
                    self.record_failure(route, endpoint);
                    return Err((ProxyError::Timeout, Some(address)));
                }
            };
            self.record_failure(route, endpoint);
            failed.push(address);
            last_error = error;
            let budget = if error == ProxyError::Connect && connect_retries_left > 0 {
                &mut connect_retries_left
            } else {
                &mut retries_left
            };
            if !can_retry || *budget == 0 {
                break;
            }
            *budget -= 1;
        }
        Err((last_error, failed.last().copied()))
    }

    fn record_failure(&self, route: &Route, endpoint: &ServingEndpoint) {
        if endpoint.stats.record_failure(route.upstream.outlier()) {
            tracing::warn!(upstream = route.upstream.name(), address = %endpoint.address(), "endpoint ejected");
            route.upstream.health_changed();
        }
    }
}

/// The gateway's error answer: short JSON, or trailers-only for a gRPC call.
fn error_response(error: ProxyError, request_id: &HeaderValue, grpc: bool) -> Response<ProxyBody> {
    if grpc {
        grpc::error_response(grpc::error_code(error), error.message(), request_id)
    } else {
        error.response(request_id)
    }
}

/// Hooks a gRPC call's response so that its final status (a trailers-only head's, else
/// its trailers') is counted on the route and written to its access log line.
fn grpc_completion(
    response: Response<ProxyBody>,
    metrics: Arc<RouteMetrics>,
    log: Option<Entry>,
    routed: bool,
    endpoint: Option<SocketAddr>,
) -> Response<ProxyBody> {
    let status = response.status();
    let entry = log.map(|mut entry| {
        entry.status = status.as_u16();
        entry.route = routed.then(|| metrics.clone());
        entry.endpoint = endpoint;
        Box::new(entry)
    });
    let completion = grpc::GrpcCompletion {
        metrics,
        code: grpc::status_of(response.headers()),
        fallback: if status == http::StatusCode::OK {
            grpc::code::UNKNOWN
        } else {
            grpc::http_code(status)
        },
        entry,
        web: response
            .extensions()
            .get::<crate::grpc_web::TrailerStatus>()
            .cloned(),
    };
    let (parts, body) = response.into_parts();
    Response::from_parts(parts, body.on_complete(Box::new(completion)))
}

/// Most request bytes kept to send a gRPC call again (`retry_on`). 64 KiB.
const RETRY_BUFFER: usize = 64 * 1024;

/// How long to wait for the rest of a request body that may be kept for a retry.
const RETRY_BUFFER_WAIT: Duration = Duration::from_millis(100);

/// Reads `body` whole when it ends within [`RETRY_BUFFER`] bytes and
/// [`RETRY_BUFFER_WAIT`] (a unary call's message arrives with its headers); otherwise gives
/// back a body that yields what was read, then the rest (a streaming call is not kept).
async fn buffer_small(mut body: ProxyBody) -> Result<bytes::Bytes, ProxyBody> {
    use http_body_util::BodyExt;
    let mut kept = bytes::BytesMut::new();
    let mut trailers = None;
    let deadline = tokio::time::Instant::now() + RETRY_BUFFER_WAIT;
    loop {
        if body.is_end_stream() {
            if trailers.is_none() {
                return Ok(kept.freeze());
            }
            break;
        }
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => {
                    kept.extend_from_slice(&data);
                    if kept.len() > RETRY_BUFFER {
                        break;
                    }
                }
                Err(frame) => {
                    trailers = frame.into_trailers().ok();
                    break;
                }
            },
            Ok(None) => return Ok(kept.freeze()),
            Ok(Some(Err(_))) | Err(_) => break,
        }
    }
    let prefix = futures::stream::iter(
        [
            Some(Ok(http_body::Frame::data(kept.freeze()))),
            trailers.map(|t| Ok(http_body::Frame::trailers(t))),
        ]
        .into_iter()
        .flatten(),
    );
    let rest = http_body_util::BodyStream::new(body);
    let chained = http_body_util::StreamBody::new(futures::StreamExt::chain(prefix, rest));
    Err(ProxyBody::boxed(BodyExt::boxed_unsync(chained)))
}

/// Extra attempts allowed after connect failures, beyond the route's `retries`.
const MAX_CONNECT_RETRIES: u32 = 3;

/// Whether a retry could go anywhere else.
fn snapshot_has_alternatives(snapshot: &Snapshot) -> bool {
    snapshot.endpoints.len() > 1
}

/// Picks an endpoint for attempt `attempt`, avoiding the ones that already failed this
/// request: the balancer's choice first, then any other endpoint of the serving tier,
/// then a healthy endpoint of the next tiers (so a request fails over even before health
/// checks have moved the tier).
fn pick<'a>(
    snapshot: &'a Snapshot,
    hash: u64,
    attempt: u32,
    failed: &[SocketAddr],
) -> Option<&'a ServingEndpoint> {
    let ctx = PickContext { hash, attempt };
    let first = snapshot.pick(&ctx);
    if failed.is_empty() {
        return first.map(AsRef::as_ref);
    }
    let fresh = |e: &&ServingEndpoint| !failed.contains(&e.address());
    for extra in 0..4 {
        let ctx = PickContext {
            hash,
            attempt: attempt + extra,
        };
        if let Some(e) = snapshot.pick(&ctx).map(AsRef::as_ref).filter(fresh) {
            return Some(e);
        }
    }
    if let Some(e) = snapshot.serving.iter().map(AsRef::as_ref).find(fresh) {
        return Some(e);
    }
    let serving_tier = snapshot.serving_tier;
    snapshot
        .endpoints
        .iter()
        .map(AsRef::as_ref)
        .filter(|e| Some(e.tier) > serving_tier && e.healthy)
        .find(fresh)
}

/// The path and query to send upstream (already normalized, see [`crate::hygiene`]), with
/// the route's prefix stripped if asked. What is left after the prefix is normalized again:
/// `/ap../x` under the prefix `/ap` would otherwise go upstream as `/../x`; such a path is
/// refused (`None`, 400).
fn upstream_path(route: &Route, uri: &Uri, rules: &PathNormalization) -> Option<PathAndQuery> {
    let original = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    match (&route.spec.matcher.path, route.spec.strip_prefix) {
        (PathMatch::Prefix(prefix), true) if prefix != "/" => {
            let rest = original
                .path()
                .strip_prefix(prefix.as_str())
                .unwrap_or(original.path());
            let rest = rest.trim_start_matches('/');
            let mut path = format!("/{rest}");
            match path::normalize(&path, rules) {
                Ok(Normalized::Unchanged) => {}
                Ok(Normalized::Rewritten(p) | Normalized::Redirect(p)) => path = p,
                Err(_) => return None,
            }
            if let Some(query) = original.query() {
                path.push('?');
                path.push_str(query);
            }
            path.parse().ok()
        }
        _ => Some(original),
    }
}

/// The consistent-hash key of a request.
fn request_hash(on: &HashOn, parts: &http::request::Parts, client: SocketAddr) -> u64 {
    match on {
        HashOn::Header(name) => parts
            .headers
            .get(name)
            .map_or(0, |v| stable_hash(v.as_bytes())),
        HashOn::Path => stable_hash(parts.uri.path().as_bytes()),
        HashOn::ClientIp => match client.ip() {
            std::net::IpAddr::V4(ip) => stable_hash(&ip.octets()),
            std::net::IpAddr::V6(ip) => stable_hash(&ip.octets()),
        },
        HashOn::Cookie(name) => parts
            .headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(k, _)| k == name)
            .map_or(0, |(_, v)| stable_hash(v.as_bytes())),
    }
}
