//! gRPC-aware behaviour for requests whose `content-type` is `application/grpc*`
//! (docs/grpc.md): the gateway's own errors become trailers-only responses (HTTP 200 with
//! `grpc-status` and `grpc-message`), `grpc-timeout` bounds the wait, and each call's
//! final status is counted (`switchyard_grpc_responses_total{route,code}`) and logged
//! (`grpc_status`).
//!
//! The status of a gateway-made error starts from the gRPC project's HTTP-to-gRPC table
//! (doc/http-grpc-status-mapping.md: 400 INTERNAL, 401 UNAUTHENTICATED, 403
//! PERMISSION_DENIED, 404 UNIMPLEMENTED, 429/502/503/504 UNAVAILABLE) and departs from it
//! where a client can act on something finer: the gateway's own timeout is
//! DEADLINE_EXCEEDED (Envoy: the same for its route timeout), a rate limit and a too
//! large request are RESOURCE_EXHAUSTED (Envoy: `rate_limited_as_resource_exhausted`).

use std::time::Duration;

use http::{header, HeaderMap, HeaderValue, Response, StatusCode};

use crate::body::{Completion, ProxyBody};
use crate::error::ProxyError;
use crate::metrics::RouteMetrics;

/// gRPC status codes (grpc/grpc doc/statuscodes.md) the gateway itself answers with.
pub mod code {
    /// The call succeeded.
    pub const OK: u16 = 0;
    /// The deadline passed.
    pub const DEADLINE_EXCEEDED: u16 = 4;
    /// The caller may not do this.
    pub const PERMISSION_DENIED: u16 = 7;
    /// A quota or limit ran out.
    pub const RESOURCE_EXHAUSTED: u16 = 8;
    /// No such method here.
    pub const UNIMPLEMENTED: u16 = 12;
    /// An internal error (a malformed request).
    pub const INTERNAL: u16 = 13;
    /// The service is unavailable now; retrying may help.
    pub const UNAVAILABLE: u16 = 14;
    /// Unknown error.
    pub const UNKNOWN: u16 = 2;
    /// No valid credentials.
    pub const UNAUTHENTICATED: u16 = 16;
}

/// The status names `retry_on` accepts, by code (as Envoy's `retry_on` spells them).
pub const STATUS_NAMES: [(&str, u16); 17] = [
    ("ok", 0),
    ("cancelled", 1),
    ("unknown", 2),
    ("invalid_argument", 3),
    ("deadline_exceeded", 4),
    ("not_found", 5),
    ("already_exists", 6),
    ("permission_denied", 7),
    ("resource_exhausted", 8),
    ("failed_precondition", 9),
    ("aborted", 10),
    ("out_of_range", 11),
    ("unimplemented", 12),
    ("internal", 13),
    ("unavailable", 14),
    ("data_loss", 15),
    ("unauthenticated", 16),
];

/// The code of a status name (`unavailable` → 14).
pub fn status_code(name: &str) -> Option<u16> {
    STATUS_NAMES
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|&(_, c)| c)
}

/// Whether a request is gRPC (`application/grpc`, `application/grpc+proto`, ...; not
/// gRPC-Web, which has its own framing).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).is_some_and(|v| {
        let v = v.as_bytes();
        v.len() >= 16
            && v[..16].eq_ignore_ascii_case(b"application/grpc")
            && !v[16..].starts_with(b"-web")
    })
}

/// Whether the request is a gRPC or gRPC-Web call (`content-type: application/grpc*`), with
/// one header lookup: the gateway's own errors for both are trailers-only.
pub fn is_grpc_or_web(headers: &HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).is_some_and(|v| {
        let v = v.as_bytes();
        v.len() >= 16 && v[..16].eq_ignore_ascii_case(b"application/grpc")
    })
}

/// `grpc-timeout`: up to 8 digits and a unit (`H M S m u n`). `None` when absent or
/// malformed (then only the route's timeout applies).
pub fn timeout(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.as_bytes();
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b"H" => Duration::from_secs(n.saturating_mul(3600)),
        b"M" => Duration::from_secs(n.saturating_mul(60)),
        b"S" => Duration::from_secs(n),
        b"m" => Duration::from_millis(n),
        b"u" => Duration::from_micros(n),
        b"n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The gRPC status of a gateway error.
pub fn error_code(error: ProxyError) -> u16 {
    match error {
        ProxyError::NoRoute => code::UNIMPLEMENTED,
        ProxyError::NoHealthyEndpoint
        | ProxyError::Connect
        | ProxyError::Upstream
        | ProxyError::Overloaded => code::UNAVAILABLE,
        ProxyError::Timeout | ProxyError::RequestTimeout => code::DEADLINE_EXCEEDED,
        ProxyError::BadRequest => code::INTERNAL,
        ProxyError::UpgradeRefused => code::PERMISSION_DENIED,
        ProxyError::BodyTooLarge | ProxyError::UriTooLong => code::RESOURCE_EXHAUSTED,
    }
}

/// The gRPC status of an HTTP status the gateway (or a policy) answered with.
pub fn http_code(status: StatusCode) -> u16 {
    match status.as_u16() {
        200 => code::OK,
        400 => code::INTERNAL,
        401 => code::UNAUTHENTICATED,
        403 => code::PERMISSION_DENIED,
        404 => code::UNIMPLEMENTED,
        408 | 504 => code::DEADLINE_EXCEEDED,
        413 | 414 | 429 | 431 => code::RESOURCE_EXHAUSTED,
        502 | 503 => code::UNAVAILABLE,
        _ => code::UNKNOWN,
    }
}

/// A trailers-only response: HTTP 200, `content-type: application/grpc`, `grpc-status`,
/// `grpc-message` (percent-encoded), no body, so HTTP/2 sends one HEADERS frame with
/// END_STREAM (grpcio rejects an error sent as headers and an empty DATA frame).
pub fn error_response(code: u16, message: &str, request_id: &HeaderValue) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::empty());
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert("grpc-status", HeaderValue::from(code));
    if let Ok(message) = HeaderValue::from_str(&percent_encode(message)) {
        headers.insert("grpc-message", message);
    }
    headers.insert(crate::forward::X_REQUEST_ID, request_id.clone());
    response
}

/// Turns a gateway-made HTTP error (a policy's 401, 403, 429, ...) into its trailers-only
/// gRPC form; a response that already is gRPC is left alone.
pub fn translate(response: Response<ProxyBody>, request_id: &HeaderValue) -> Response<ProxyBody> {
    if response.headers().contains_key("grpc-status") || response.status() == StatusCode::OK {
        return response;
    }
    let status = response.status();
    let mut translated = error_response(
        http_code(status),
        status.canonical_reason().unwrap_or("error"),
        request_id,
    );
    // Keep what a client may act on (Retry-After, WWW-Authenticate, rate limit fields).
    for (name, value) in response.headers() {
        if name != header::CONTENT_TYPE
            && name != header::CONTENT_LENGTH
            && !translated.headers().contains_key(name)
        {
            translated.headers_mut().append(name, value.clone());
        }
    }
    translated
}

/// Percent-encodes a `grpc-message` (PROTOCOL-HTTP2.md: printable ASCII but `%` as is).
fn percent_encode(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for b in message.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The `grpc-status` of a header or trailer block.
pub fn status_of(headers: &HeaderMap) -> Option<u16> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Watches a gRPC response body for its final status, counts it on the route and hands it
/// to the access log line when the body ends.
pub struct GrpcCompletion {
    /// The route's counters.
    pub metrics: std::sync::Arc<RouteMetrics>,
    /// The status seen so far (from a trailers-only head, then from the trailers).
    pub code: Option<u16>,
    /// The status when none is seen (the HTTP status mapped, for a non-gRPC answer).
    pub fallback: u16,
    /// The access log line, when there is one.
    pub entry: Option<Box<crate::access_log::Entry>>,
    /// A gRPC-Web answer's status, which its trailers carry inside the body.
    pub web: Option<crate::grpc_web::TrailerStatus>,
}

impl Completion for GrpcCompletion {
    fn complete(self: Box<Self>, bytes: u64) {
        // A stream that ended with no status (reset, cut short) is counted as UNKNOWN.
        let code = self
            .code
            .or_else(|| {
                self.web
                    .as_ref()
                    .and_then(crate::grpc_web::TrailerStatus::get)
            })
            .unwrap_or(self.fallback);
        self.metrics.record_grpc(code);
        if let Some(mut entry) = self.entry {
            entry.grpc_status = Some(code);
            entry.complete(bytes);
        }
    }

    fn trailers(&mut self, trailers: &HeaderMap) {
        if let Some(code) = status_of(trailers) {
            self.code = Some(code);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_timeout(value: &str, expected: Option<Duration>) {
        let mut headers = HeaderMap::new();
        headers.insert("grpc-timeout", HeaderValue::from_str(value).unwrap());
        assert_eq!(timeout(&headers), expected, "{value}");
    }

    #[test]
    fn timeouts() {
        check_timeout("50m", Some(Duration::from_millis(50)));
        check_timeout("1S", Some(Duration::from_secs(1)));
        check_timeout("2M", Some(Duration::from_secs(120)));
        check_timeout("1H", Some(Duration::from_secs(3600)));
        check_timeout("100u", Some(Duration::from_micros(100)));
        check_timeout("7n", Some(Duration::from_nanos(7)));
        check_timeout("123456789m", None);
        check_timeout("m", None);
        check_timeout("10x", None);
        check_timeout("-1S", None);
    }

    #[test]
    fn grpc_content_types() {
        let check = |ct: &str, expected: bool| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
            assert_eq!(is_grpc(&headers), expected, "{ct}");
        };
        check("application/grpc", true);
        check("application/grpc+proto", true);
        check("application/GRPC+json", true);
        check("application/grpc-web", false);
        check("application/grpc-web-text", false);
        check("application/json", false);
    }

    #[test]
    fn errors_are_trailers_only() {
        let id = HeaderValue::from_static("r1");
        for (error, code) in [
            (ProxyError::NoRoute, 12),
            (ProxyError::NoHealthyEndpoint, 14),
            (ProxyError::Connect, 14),
            (ProxyError::Timeout, 4),
            (ProxyError::BodyTooLarge, 8),
        ] {
            let response = error_response(error_code(error), error.message(), &id);
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(status_of(response.headers()), Some(code), "{error:?}");
            assert!(http_body::Body::is_end_stream(response.body()));
        }
        let message = error_response(14, "no healthy endpoint: 100% busy", &id);
        assert_eq!(
            message.headers()["grpc-message"],
            "no healthy endpoint: 100%25 busy"
        );
    }

    #[test]
    fn policy_answers_translate() {
        let id = HeaderValue::from_static("r1");
        for (status, code) in [(401, 16), (403, 7), (429, 8), (413, 8), (431, 8), (404, 12)] {
            let mut response = Response::new(ProxyBody::empty());
            *response.status_mut() = StatusCode::from_u16(status).unwrap();
            response
                .headers_mut()
                .insert("retry-after", HeaderValue::from_static("1"));
            let translated = translate(response, &id);
            assert_eq!(translated.status(), StatusCode::OK);
            assert_eq!(status_of(translated.headers()), Some(code), "{status}");
            assert_eq!(translated.headers()["retry-after"], "1");
        }
        assert_eq!(status_code("unavailable"), Some(14));
        assert_eq!(status_code("RESOURCE_EXHAUSTED"), Some(8));
        assert_eq!(status_code("nope"), None);
    }
}
