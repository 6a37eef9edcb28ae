//! `cache`: a shared HTTP response cache per route, for GET and HEAD.
//!
//! - **Lookup.** The key is the request's host and path with query (after the filters
//!   before it ran: credentials are already stripped), plus the request headers the
//!   stored response's `Vary` names. A fresh entry is answered at once (`x-cache: HIT`,
//!   with `Age`), including a 304 when the client's `If-None-Match`/`If-Modified-Since`
//!   matches it. HEAD is answered from a stored GET.
//! - **Revalidation.** A stale entry with an `ETag` or `Last-Modified` (or one stored with
//!   `no-cache`, or asked for with `Cache-Control: no-cache`) is revalidated: the request
//!   goes upstream with `If-None-Match`/`If-Modified-Since`, and a 304 refreshes the entry
//!   and is answered from it (`x-cache: HIT`).
//! - **Storing.** A response is stored when its status is cacheable, it has no
//!   `no-store`, `private`, `Set-Cookie` or `Vary: *`, and it has a freshness lifetime
//!   (`s-maxage`, `max-age`, `Expires`, else the route's `default_ttl`) or a validator; the
//!   lifetime is capped by `max_ttl`. Requests with `Cache-Control: no-store` or an
//!   `Authorization` header (forwarded credentials) bypass the cache. The body streams to
//!   the client while it is copied; a body over `max_object_bytes` is not stored.
//! - **Coalescing.** While one request for a key is upstream, other requests for it wait
//!   (up to `coalesce_timeout`) and are answered from what it stored; when it stored
//!   nothing they go upstream themselves.
//! - **Errors.** With `stale_if_error`, a 5xx (the upstream's or the gateway's own 502,
//!   503, 504) is replaced by a stale entry within that window (`x-cache: STALE`), unless
//!   the entry said `must-revalidate`.
//! - **Invalidation.** A successful POST, PUT, PATCH or DELETE forgets the resource at its
//!   URL; `POST /api/cache/purge` on the admin port removes entries by route, host, path
//!   or prefix.

pub mod control;
pub mod store;

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use switchyard_proxy::body::{BoxBody, BoxError, ProxyBody};
use switchyard_proxy::forward::X_REQUEST_ID;
use switchyard_proxy::{Filter, RequestContext};

use crate::metrics::RouteCounters;
use control::{cacheable_status, freshness, initial_age, CacheControl, Conditionals};
use store::{age_value, variant_key, vary_names, Entry, Flight, FlightGuard, Store};

/// The `x-cache` response header.
pub const X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// A route's cache settings (besides the store's own limits).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheSettings {
    /// Cap on freshness.
    pub max_ttl: Duration,
    /// Freshness of responses that give none (0: not stored without a validator).
    pub default_ttl: Duration,
    /// Larger bodies are not stored.
    pub max_object_bytes: u64,
    /// How long past freshness an entry may replace an error.
    pub stale_if_error: Duration,
    /// Whether concurrent misses wait for one upstream request.
    pub coalesce: bool,
    /// How long they wait at most.
    pub coalesce_timeout: Duration,
}

/// The `cache` filter.
pub struct CacheFilter {
    store: Arc<Store>,
    settings: CacheSettings,
    counters: Arc<RouteCounters>,
}

/// What the request phase leaves for the response phase.
enum State {
    /// Not cached (no-store request, forwarded credentials, HEAD miss).
    Bypass,
    /// A successful unsafe request forgets the resource.
    Invalidate(String),
    /// A GET that went upstream.
    Fill(Box<Fill>),
}

struct Fill {
    /// A HEAD request (revalidating a stored GET): its response is never stored.
    head: bool,
    host: String,
    path: String,
    request_headers: HeaderMap,
    conditionals: Conditionals,
    /// The entry we hold but could not serve fresh.
    stale: Option<Arc<Entry>>,
    /// Whether the request carries our validators.
    revalidating: bool,
    guard: Option<FlightGuard>,
}

/// `http::Extensions` needs `Clone`: the state travels behind a shared slot.
#[derive(Clone)]
struct Slot(Arc<Mutex<Option<State>>>);

impl CacheFilter {
    /// A filter over `store`.
    pub fn new(store: Arc<Store>, settings: CacheSettings, counters: Arc<RouteCounters>) -> Self {
        CacheFilter {
            store,
            settings,
            counters,
        }
    }

    fn keep(ctx: &mut RequestContext, state: State) {
        ctx.extensions
            .insert(Slot(Arc::new(Mutex::new(Some(state)))));
    }

    /// The answer from `entry`, or 304 when the client's conditionals match it.
    fn answer(
        &self,
        entry: &Entry,
        ctx: &RequestContext,
        head: bool,
        conditionals: &Conditionals,
        x_cache: &'static str,
    ) -> Response<ProxyBody> {
        let now = Instant::now();
        let not_modified = conditionals.not_modified(&entry.headers);
        let mut headers = entry.headers.clone();
        let mut response = if not_modified {
            for name in [
                header::CONTENT_LENGTH,
                header::CONTENT_TYPE,
                header::CONTENT_ENCODING,
                header::CONTENT_RANGE,
            ] {
                headers.remove(name);
            }
            let mut r = Response::new(ProxyBody::empty());
            *r.status_mut() = StatusCode::NOT_MODIFIED;
            r
        } else {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(entry.body.len()));
            let body = if head || entry.body.is_empty() {
                ProxyBody::empty()
            } else {
                ProxyBody::full(entry.body.clone())
            };
            let mut r = Response::new(body);
            *r.status_mut() = entry.status;
            r
        };
        headers.remove(header::TRANSFER_ENCODING);
        headers.insert(header::AGE, age_value(entry.age(now)));
        headers.insert(X_REQUEST_ID, ctx.request_id.clone());
        headers.insert(X_CACHE, HeaderValue::from_static(x_cache));
        *response.headers_mut() = headers;
        response
    }

    /// Whether a response may be stored, and for how long it is fresh.
    fn storable(&self, response: &Response<ProxyBody>) -> Option<(Duration, CacheControl)> {
        if !cacheable_status(response.status()) {
            return None;
        }
        let headers = response.headers();
        let cc = CacheControl::parse(headers);
        if cc.no_store || cc.private || headers.contains_key(header::SET_COOKIE) {
            return None;
        }
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.settings.max_object_bytes) {
            return None;
        }
        let has_validator =
            headers.contains_key(header::ETAG) || headers.contains_key(header::LAST_MODIFIED);
        match freshness(
            headers,
            &cc,
            self.settings.default_ttl,
            self.settings.max_ttl,
        ) {
            Some(lifetime) if !lifetime.is_zero() || has_validator => Some((lifetime, cc)),
            None if has_validator => Some((Duration::ZERO, cc)),
            _ => None,
        }
    }

    /// Waits for the request in flight on `key`; true when it finished (rather than the
    /// wait timing out).
    async fn wait(&self, mut receiver: tokio::sync::watch::Receiver<()>) -> bool {
        tokio::time::timeout(self.settings.coalesce_timeout, receiver.changed())
            .await
            .is_ok()
    }
}

fn request_host(request: &Parts) -> String {
    request
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri.authority().map(|a| a.as_str()))
        .unwrap_or("")
        .to_owned()
}

fn request_path(request: &Parts) -> String {
    request
        .uri
        .path_and_query()
        .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned())
}

#[async_trait]
impl Filter for CacheFilter {
    fn name(&self) -> &'static str {
        "cache"
    }

    async fn on_request(
        &self,
        ctx: &mut RequestContext,
        request: &mut Parts,
    ) -> Result<(), Response<ProxyBody>> {
        let head = request.method == Method::HEAD;
        if request.method != Method::GET && !head {
            if matches!(
                request.method,
                Method::POST | Method::PUT | Method::PATCH | Method::DELETE
            ) {
                let primary = Store::primary_key(&request_host(request), &request_path(request));
                Self::keep(ctx, State::Invalidate(primary));
            }
            return Ok(());
        }
        let request_cc = CacheControl::parse(&request.headers);
        if request_cc.no_store || request.headers.contains_key(header::AUTHORIZATION) {
            Self::keep(ctx, State::Bypass);
            return Ok(());
        }
        let (host, path) = (request_host(request), request_path(request));
        let primary = Store::primary_key(&host, &path);
        let mut entry = self.store.lookup(&primary, &request.headers);
        let usable = |e: &Entry| {
            e.is_fresh(Instant::now())
                && !request_cc.no_cache
                && request_cc
                    .max_age
                    .is_none_or(|max| e.age(Instant::now()) <= Duration::from_secs(max))
        };
        if let Some(e) = entry.as_ref().filter(|e| usable(e)) {
            self.counters.cache_hit.inc();
            let conditionals = Conditionals::take(&mut request.headers);
            return Err(self.answer(e, ctx, head, &conditionals, "HIT"));
        }
        if head && entry.is_none() {
            Self::keep(ctx, State::Bypass);
            return Ok(());
        }
        let mut guard = None;
        if self.settings.coalesce && !head {
            // The key of the in-flight request: the variant this request would get.
            let key = format!(
                "{primary}\n{}",
                entry.as_ref().map_or("", |e| e.variant.as_str())
            );
            match self.store.flight(&key) {
                Flight::Lead(g) => guard = Some(g),
                Flight::Follow(receiver) => {
                    if self.wait(receiver).await {
                        entry = self.store.lookup(&primary, &request.headers);
                        if let Some(e) = entry.as_ref().filter(|e| usable(e)) {
                            self.counters.cache_coalesced.inc();
                            let conditionals = Conditionals::take(&mut request.headers);
                            return Err(self.answer(e, ctx, head, &conditionals, "HIT"));
                        }
                    }
                }
            }
        }
        let conditionals = Conditionals::take(&mut request.headers);
        let mut revalidating = false;
        if let Some(e) = &entry {
            if let Some(etag) = e.headers.get(header::ETAG) {
                request.headers.insert(header::IF_NONE_MATCH, etag.clone());
                revalidating = true;
            }
            if let Some(modified) = e.headers.get(header::LAST_MODIFIED) {
                request
                    .headers
                    .insert(header::IF_MODIFIED_SINCE, modified.clone());
                revalidating = true;
            }
        }
        Self::keep(
            ctx,
            State::Fill(Box::new(Fill {
                head,
                host,
                path,
                request_headers: request.headers.clone(),
                conditionals,
                stale: entry,
                revalidating,
                guard,
            })),
        );
        Ok(())
    }

    async fn on_response(&self, ctx: &mut RequestContext, response: &mut Response<ProxyBody>) {
        let Some(state) = ctx
            .extensions
            .get::<Slot>()
            .and_then(|slot| slot.0.lock().unwrap_or_else(|p| p.into_inner()).take())
        else {
            return;
        };
        let fill = match state {
            State::Bypass => {
                self.counters.cache_miss.inc();
                response
                    .headers_mut()
                    .insert(X_CACHE, HeaderValue::from_static("MISS"));
                return;
            }
            State::Invalidate(primary) => {
                let status = response.status();
                if status.is_success() || status.is_redirection() {
                    self.store.invalidate(&primary);
                }
                return;
            }
            State::Fill(fill) => fill,
        };
        let Fill {
            head,
            host,
            path,
            request_headers,
            conditionals,
            stale,
            revalidating,
            guard,
        } = *fill;
        let now = Instant::now();
        let status = response.status();

        // 304 to our revalidation: refresh the entry and answer from it.
        if let (true, StatusCode::NOT_MODIFIED, Some(old)) = (revalidating, status, &stale) {
            let mut headers = old.headers.clone();
            for (name, value) in response.headers() {
                if name != header::CONTENT_LENGTH && name != X_REQUEST_ID {
                    headers.insert(name.clone(), value.clone());
                }
            }
            let cc = CacheControl::parse(&headers);
            let lifetime = freshness(
                &headers,
                &cc,
                self.settings.default_ttl,
                self.settings.max_ttl,
            )
            .unwrap_or(Duration::ZERO);
            let refreshed = Entry {
                status: old.status,
                headers,
                body: old.body.clone(),
                stored: now,
                initial_age: initial_age(response.headers()),
                lifetime,
                no_cache: cc.no_cache,
                must_revalidate: cc.must_revalidate,
                variant: old.variant.clone(),
            };
            let answer = self.answer(&refreshed, ctx, head, &conditionals, "HIT");
            if !cc.no_store && !cc.private {
                let vary = vary_names(&refreshed.headers).unwrap_or_default();
                self.store.insert(&host, &path, vary, refreshed);
            }
            drop(guard);
            self.counters.cache_revalidated.inc();
            *response = answer;
            return;
        }

        // An error with a stale entry at hand.
        if status.is_server_error() {
            if let Some(old) = stale.as_ref().filter(|e| {
                !e.must_revalidate
                    && !self.settings.stale_if_error.is_zero()
                    && e.age(now) < e.lifetime + self.settings.stale_if_error
            }) {
                drop(guard);
                self.counters.cache_stale.inc();
                *response = self.answer(old, ctx, head, &conditionals, "STALE");
                return;
            }
        }

        self.counters.cache_miss.inc();
        response
            .headers_mut()
            .insert(X_CACHE, HeaderValue::from_static("MISS"));
        let Some((lifetime, cc)) = self.storable(response).filter(|_| !head) else {
            drop(guard);
            return;
        };
        let Some(vary) = vary_names(response.headers()) else {
            drop(guard);
            return;
        };
        let mut headers = response.headers().clone();
        headers.remove(X_CACHE);
        headers.remove(X_REQUEST_ID);
        let template = Entry {
            status,
            headers,
            body: Bytes::new(),
            stored: now,
            initial_age: initial_age(response.headers()),
            lifetime,
            no_cache: cc.no_cache,
            must_revalidate: cc.must_revalidate,
            variant: variant_key(&vary, &request_headers),
        };
        let body = std::mem::replace(response.body_mut(), ProxyBody::empty());
        *response.body_mut() = ProxyBody::boxed(BoxBody::new(Tee {
            inner: body,
            buffer: Some(BytesMut::new()),
            limit: self.settings.max_object_bytes,
            pending: Some(Pending {
                store: self.store.clone(),
                host,
                path,
                vary,
                template,
                guard,
            }),
        }));
    }
}

/// A response to store once its body is complete.
struct Pending {
    store: Arc<Store>,
    host: String,
    path: String,
    vary: Vec<HeaderName>,
    template: Entry,
    guard: Option<FlightGuard>,
}

/// A body passed through to the client while a copy is kept for the store.
struct Tee {
    inner: ProxyBody,
    buffer: Option<BytesMut>,
    limit: u64,
    pending: Option<Pending>,
}

impl Tee {
    /// Stores the copy (the body is complete); the guard drops after the insert, so
    /// waiting requests find the entry.
    fn complete(&mut self) {
        let (Some(buffer), Some(mut pending)) = (self.buffer.take(), self.pending.take()) else {
            return;
        };
        pending.template.body = buffer.freeze();
        pending
            .store
            .insert(&pending.host, &pending.path, pending.vary, pending.template);
        drop(pending.guard);
    }

    fn abandon(&mut self) {
        self.buffer = None;
        self.pending = None;
    }
}

impl Drop for Tee {
    fn drop(&mut self) {
        if self.inner.is_end_stream() {
            self.complete();
        }
    }
}

impl Body for Tee {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let fits = this
                        .buffer
                        .as_ref()
                        .is_some_and(|b| (b.len() + data.len()) as u64 <= this.limit);
                    if fits {
                        if let Some(buffer) = this.buffer.as_mut() {
                            buffer.extend_from_slice(data);
                        }
                    } else {
                        this.abandon();
                    }
                }
                if this.inner.is_end_stream() {
                    this.complete();
                }
            }
            Poll::Ready(None) => this.complete(),
            Poll::Ready(Some(Err(_))) => this.abandon(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
