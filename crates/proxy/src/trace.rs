//! OpenTelemetry spans on the request path: a SERVER span per request, a CLIENT span per
//! upstream attempt, and the W3C Trace Context (`traceparent`, `tracestate`), baggage and
//! optionally B3 headers continued from the client and propagated upstream.
//!
//! The hook is an `Option<Arc<RequestTracer>>` held by the [`Proxy`](crate::Proxy): with
//! tracing off, a request pays one branch on `None` and allocates nothing. With tracing on,
//! the tracer comes from the OpenTelemetry SDK (`opentelemetry_sdk::trace::SdkTracer`), whose
//! sampler decides per trace; an unsampled request still gets a span context (not
//! recorded, not exported), so that the trace id and its "not sampled" flag go upstream and
//! into the access log. Spans are handed to the SDK's span processor when they end; the
//! binary installs one that exports in batches off the request path.
//!
//! Attribute names follow the OpenTelemetry HTTP semantic conventions
//! (<https://opentelemetry.io/docs/specs/semconv/http/http-spans/>): on the SERVER span
//! `http.request.method`, `url.path`, `url.scheme`, `http.route` (the route's name),
//! `http.response.status_code`, `server.address`, `client.address`,
//! `network.protocol.version`, plus Switchyard's own `switchyard.upstream`,
//! `switchyard.endpoint`, `switchyard.registry`, `switchyard.tier`, `switchyard.retries`
//! and `switchyard.consumer`; on each CLIENT span `http.request.method`, `server.address`,
//! `server.port`, `http.response.status_code` or `error.type`, and `switchyard.attempt`.
//! A span's status is Error for a 5xx answer (SERVER) or a failed attempt (CLIENT).
//!
//! A span lasts until its response body has gone through, not just until its head: the
//! SERVER span ends when the client has been sent the whole body (or went away), each
//! CLIENT span when the endpoint's body ended; both then carry `http.response.body.size`,
//! and a gRPC call's `rpc.grpc.status_code` from its trailers. See [`SpanEnd`].

use std::borrow::Cow;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Version};
use opentelemetry::propagation::{
    Extractor, Injector, TextMapCompositePropagator, TextMapPropagator,
};
use opentelemetry::trace::{
    Span as _, SpanId, SpanKind, Status, TraceContextExt, TraceId, Tracer as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use opentelemetry_sdk::trace::{SdkTracer, Span};
use switchyard_upstream::ServingEndpoint;

use crate::body::Completion;
use crate::proxy::Peer;

mod b3;

pub use b3::B3Propagator;

/// A header propagation format (`[tracing] propagators`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Propagation {
    /// W3C Trace Context: `traceparent`, `tracestate`.
    TraceContext,
    /// W3C Baggage: `baggage`.
    Baggage,
    /// Zipkin B3, single (`b3`) and multiple (`X-B3-*`) headers; injects multiple headers.
    B3,
}

/// The request path's tracer: the SDK tracer, the propagators, and whether to continue a
/// client's trace.
pub struct RequestTracer {
    tracer: SdkTracer,
    propagator: TextMapCompositePropagator,
    /// Every header name the propagators read or write (removed before each injection, so
    /// that nothing of an untrusted client's trace goes upstream).
    fields: Vec<HeaderName>,
    trust_incoming: bool,
}

impl RequestTracer {
    /// A tracer using `tracer`, reading and writing `propagations`. With `trust_incoming`
    /// (the default in config) a request's `traceparent` continues its trace; otherwise every
    /// request starts a trace of its own.
    pub fn new(tracer: SdkTracer, propagations: &[Propagation], trust_incoming: bool) -> Self {
        let propagators: Vec<Box<dyn TextMapPropagator + Send + Sync>> = propagations
            .iter()
            .map(|p| -> Box<dyn TextMapPropagator + Send + Sync> {
                match p {
                    Propagation::TraceContext => Box::new(TraceContextPropagator::new()),
                    Propagation::Baggage => Box::new(BaggagePropagator::new()),
                    Propagation::B3 => Box::new(B3Propagator),
                }
            })
            .collect();
        let propagator = TextMapCompositePropagator::new(propagators);
        let fields = propagator
            .fields()
            .filter_map(|f| HeaderName::from_bytes(f.as_bytes()).ok())
            .collect();
        RequestTracer {
            tracer,
            propagator,
            fields,
            trust_incoming,
        }
    }

    /// Starts the SERVER span of `request` from `peer`.
    pub fn start<B>(self: &Arc<Self>, request: &Request<B>, peer: &Peer) -> ServerSpan {
        let parent = if self.trust_incoming {
            self.propagator.extract(&HeaderExtractor(request.headers()))
        } else {
            Context::new()
        };
        let method = request.method().clone();
        // The sampler decides first, on the name and kind alone (the OpenTelemetry samplers
        // this gateway offers read neither attributes nor links): a request it drops (99 of
        // 100 at a 1% ratio) then costs no attribute strings at all.
        let mut span = self
            .tracer
            .span_builder(method_name(&method))
            .with_kind(SpanKind::Server)
            .start_with_context(&self.tracer, &parent);
        if span.is_recording() {
            span.set_attributes(server_attributes(request, peer, &method));
        }
        ServerSpan {
            tracer: Arc::clone(self),
            parent,
            span,
            method,
            attempts: 0,
        }
    }
}

/// The SERVER span of one request, and what it needs to start its attempts' CLIENT spans.
pub struct ServerSpan {
    tracer: Arc<RequestTracer>,
    /// The extracted context (the client's span and baggage), or an empty one.
    parent: Context,
    span: Span,
    method: Method,
    attempts: u32,
}

/// A request's trace and span ids, for its access log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceIds {
    /// The trace id.
    pub trace_id: TraceId,
    /// The SERVER span's id.
    pub span_id: SpanId,
}

impl ServerSpan {
    /// The trace and span ids (also of a request its sampler did not record).
    pub fn ids(&self) -> TraceIds {
        let context = self.span.span_context();
        TraceIds {
            trace_id: context.trace_id(),
            span_id: context.span_id(),
        }
    }

    /// Whether the span is recorded (sampled).
    pub fn is_recording(&self) -> bool {
        self.span.is_recording()
    }

    /// The route matched: names the span `METHOD route` and sets `http.route` and
    /// `switchyard.upstream`.
    pub fn route(&mut self, route: &str, upstream: &str) {
        if !self.span.is_recording() {
            return;
        }
        self.span
            .update_name(format!("{} {route}", method_name(&self.method)));
        self.span
            .set_attribute(KeyValue::new("http.route", route.to_owned()));
        self.span
            .set_attribute(KeyValue::new("switchyard.upstream", upstream.to_owned()));
    }

    /// The consumer a policy identified.
    pub fn consumer(&mut self, consumer: &str) {
        if self.span.is_recording() {
            self.span
                .set_attribute(KeyValue::new("switchyard.consumer", consumer.to_owned()));
        }
    }

    /// Starts the CLIENT span of an attempt on `endpoint` and writes the trace headers of
    /// that span into `headers` (the request going upstream), replacing any the client sent.
    pub fn attempt(&mut self, endpoint: &ServingEndpoint, headers: &mut HeaderMap) -> ClientSpan {
        self.attempts += 1;
        let address = endpoint.address();
        let tracer = &self.tracer;
        let parent = self
            .parent
            .with_remote_span_context(self.span.span_context().clone());
        let span = if self.span.is_recording() {
            let tier = format!("{}.{}", endpoint.tier.source, endpoint.tier.endpoint);
            let endpoint_text = address.to_string();
            self.span
                .set_attribute(KeyValue::new("switchyard.endpoint", endpoint_text.clone()));
            self.span.set_attribute(KeyValue::new(
                "switchyard.registry",
                endpoint.source.registry.clone(),
            ));
            self.span
                .set_attribute(KeyValue::new("switchyard.tier", tier));
            tracer
                .tracer
                .span_builder(method_name(&self.method))
                .with_kind(SpanKind::Client)
                .with_attributes([
                    KeyValue::new("http.request.method", method_name(&self.method)),
                    KeyValue::new("server.address", address.ip().to_string()),
                    KeyValue::new("server.port", i64::from(address.port())),
                    KeyValue::new("network.peer.address", endpoint_text),
                    KeyValue::new("switchyard.attempt", i64::from(self.attempts)),
                ])
                .start_with_context(&tracer.tracer, &parent)
        } else {
            // Not sampled: the sampler would say no again; its context still goes upstream.
            tracer
                .tracer
                .build_with_context(tracer.tracer.span_builder("attempt"), &parent)
        };
        for name in &tracer.fields {
            headers.remove(name);
        }
        let injected = self
            .parent
            .with_remote_span_context(span.span_context().clone());
        tracer
            .propagator
            .inject_context(&injected, &mut HeaderInjector(headers));
        ClientSpan { span }
    }

    /// The response's head is known: records its status and the retries, and gives the
    /// hook that ends the span when the response body has been sent whole, or the client
    /// went away ([`ProxyBody::on_complete`](crate::body::ProxyBody::on_complete)), so that
    /// the span covers a streamed body too.
    pub fn answered(mut self, status: u16) -> SpanEnd {
        if self.span.is_recording() {
            self.span.set_attribute(KeyValue::new(
                "http.response.status_code",
                i64::from(status),
            ));
            self.span.set_attribute(KeyValue::new(
                "switchyard.retries",
                i64::from(self.attempts.saturating_sub(1)),
            ));
            if status >= 500 {
                self.span.set_status(Status::error(""));
            }
        }
        SpanEnd { span: self.span }
    }
}

/// The CLIENT span of one upstream attempt.
pub struct ClientSpan {
    span: Span,
}

impl ClientSpan {
    /// The endpoint answered with `status`: records it, and gives the hook that ends the
    /// span when the endpoint's response body has ended (or was dropped: the client went
    /// away, or the answer was discarded for a retry).
    pub fn answered(mut self, status: u16) -> SpanEnd {
        if self.span.is_recording() {
            self.span.set_attribute(KeyValue::new(
                "http.response.status_code",
                i64::from(status),
            ));
            if status >= 500 {
                self.span.set_status(Status::error(""));
            }
        }
        SpanEnd { span: self.span }
    }

    /// Ends the span: the attempt failed (`error` is its `error.type`, e.g. `timeout`).
    pub fn failed(mut self, error: &'static str) {
        if self.span.is_recording() {
            self.span.set_attribute(KeyValue::new("error.type", error));
            self.span.set_status(Status::error(error));
        }
        self.span.end();
    }
}

/// Ends a SERVER or CLIENT span when the response body it watches ends: records the body's
/// size (`http.response.body.size`) and a gRPC call's `grpc-status` trailer
/// (`rpc.grpc.status_code`).
pub struct SpanEnd {
    span: Span,
}

impl SpanEnd {
    /// Whether the span records (was sampled): a span that does not has nothing to wait
    /// for, and is ended at once instead of riding on the body.
    pub fn is_recording(&self) -> bool {
        self.span.is_recording()
    }

    /// Ends the span now (the body will not be watched).
    pub fn end(mut self) {
        self.span.end();
    }
}

impl Completion for SpanEnd {
    fn complete(mut self: Box<Self>, bytes: u64) {
        if self.span.is_recording() {
            self.span.set_attribute(KeyValue::new(
                "http.response.body.size",
                i64::try_from(bytes).unwrap_or(i64::MAX),
            ));
        }
        self.span.end();
    }

    fn trailers(&mut self, trailers: &HeaderMap) {
        if let (true, Some(code)) = (self.span.is_recording(), crate::grpc::status_of(trailers)) {
            self.span
                .set_attribute(KeyValue::new("rpc.grpc.status_code", i64::from(code)));
        }
    }
}

/// The SERVER span's HTTP semantic-convention attributes of `request` from `peer`.
fn server_attributes<B>(request: &Request<B>, peer: &Peer, method: &Method) -> Vec<KeyValue> {
    let mut attributes = Vec::with_capacity(8);
    attributes.push(KeyValue::new("http.request.method", method_name(method)));
    attributes.push(KeyValue::new("url.path", request.uri().path().to_owned()));
    attributes.push(KeyValue::new("url.scheme", peer.proto));
    attributes.push(KeyValue::new(
        "network.protocol.version",
        protocol_version(request.version()),
    ));
    attributes.push(KeyValue::new(
        "client.address",
        peer.address.ip().to_string(),
    ));
    let host = request
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().host());
    if let Some(host) = host {
        let (name, port) = split_host(host);
        attributes.push(KeyValue::new("server.address", name.to_owned()));
        if let Some(port) = port {
            attributes.push(KeyValue::new("server.port", i64::from(port)));
        }
    }
    attributes
}

/// The method as the semantic conventions want it: a known method's name, else `_OTHER`.
fn method_name(method: &Method) -> Cow<'static, str> {
    let known = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::CONNECT,
        Method::OPTIONS,
        Method::TRACE,
        Method::PATCH,
    ];
    match known.iter().find(|m| *m == method) {
        Some(m) => Cow::Owned(m.as_str().to_owned()),
        None => Cow::Borrowed("_OTHER"),
    }
}

/// `network.protocol.version`: `1.0`, `1.1`, `2`, `3`.
fn protocol_version(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

/// A `Host` value's name and port (`[::1]:80` → `::1`, 80).
fn split_host(host: &str) -> (&str, Option<u16>) {
    if let Some(rest) = host.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((ip, port)) => (ip, port.strip_prefix(':').and_then(|p| p.parse().ok())),
            None => (host, None),
        };
    }
    match host.rsplit_once(':') {
        Some((name, port)) => match port.parse() {
            Ok(port) => (name, Some(port)),
            Err(_) => (host, None),
        },
        None => (host, None),
    }
}

/// Reads propagation fields from a request's headers.
struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

/// Writes propagation fields into the upstream request's headers.
struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_split() {
        let check = |host: &str, want: (&str, Option<u16>)| {
            assert_eq!(split_host(host), want, "{host}");
        };
        check("example.com", ("example.com", None));
        check("example.com:8080", ("example.com", Some(8080)));
        check("[::1]:80", ("::1", Some(80)));
        check("[::1]", ("::1", None));
        check("a:b", ("a:b", None));
    }

    #[test]
    fn methods_and_versions() {
        assert_eq!(method_name(&Method::GET), "GET");
        assert_eq!(
            method_name(&Method::from_bytes(b"PURGE").unwrap()),
            "_OTHER"
        );
        assert_eq!(protocol_version(Version::HTTP_11), "1.1");
        assert_eq!(protocol_version(Version::HTTP_2), "2");
    }
}
