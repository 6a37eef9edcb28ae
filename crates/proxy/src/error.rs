//! Data-plane errors and the short JSON bodies they answer with (docs/admin-api.md, "Errors and forwarding").

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

use crate::body::ProxyBody;

/// Why the gateway answered instead of an upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyError {
    /// No route matched: 404.
    NoRoute,
    /// The route's upstream has no endpoint to serve: 503.
    NoHealthyEndpoint,
    /// Connecting to the endpoint failed: 502.
    Connect,
    /// The endpoint broke the exchange (reset, bad response): 502.
    Upstream,
    /// The endpoint did not answer in time: 504.
    Timeout,
    /// The request was malformed: 400.
    BadRequest,
    /// The request body exceeded the limit: 413.
    BodyTooLarge,
    /// The request target is longer than allowed: 414.
    UriTooLong,
    /// The request body stalled: 408.
    RequestTimeout,
    /// Too many requests in flight: 503.
    Overloaded,
    /// The request asks to upgrade to a protocol its route does not allow: 403 (as Envoy
    /// answers an upgrade it is not configured for).
    UpgradeRefused,
}

impl ProxyError {
    /// The status this error answers with.
    pub fn status(self) -> StatusCode {
        match self {
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::NoHealthyEndpoint => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Connect | ProxyError::Upstream => StatusCode::BAD_GATEWAY,
            ProxyError::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::BadRequest => StatusCode::BAD_REQUEST,
            ProxyError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::UriTooLong => StatusCode::URI_TOO_LONG,
            ProxyError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ProxyError::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::UpgradeRefused => StatusCode::FORBIDDEN,
        }
    }

    /// The `error` text of the JSON body.
    pub fn message(self) -> &'static str {
        match self {
            ProxyError::NoRoute => "no route",
            ProxyError::NoHealthyEndpoint => "no healthy endpoint",
            ProxyError::Connect => "upstream connect failed",
            ProxyError::Upstream => "upstream error",
            ProxyError::Timeout => "upstream timeout",
            ProxyError::BadRequest => "bad request",
            ProxyError::BodyTooLarge => "request body too large",
            ProxyError::UriTooLong => "request target too long",
            ProxyError::RequestTimeout => "request body timeout",
            ProxyError::Overloaded => "overloaded",
            ProxyError::UpgradeRefused => "upgrade not allowed",
        }
    }

    /// The response: `{"error":"...","request_id":"..."}`. Errors about the client's own
    /// request also close the connection, since what follows it cannot be trusted.
    pub fn response(self, request_id: &HeaderValue) -> Response<ProxyBody> {
        let mut response = json_error(self.status(), self.message(), request_id);
        if matches!(
            self,
            ProxyError::BadRequest
                | ProxyError::BodyTooLarge
                | ProxyError::RequestTimeout
                | ProxyError::UriTooLong
                | ProxyError::UpgradeRefused
        ) {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

/// A short JSON error response carrying the request id.
pub fn json_error(
    status: StatusCode,
    message: &str,
    request_id: &HeaderValue,
) -> Response<ProxyBody> {
    let body = serde_json::json!({
        "error": message,
        "request_id": request_id.to_str().unwrap_or(""),
    })
    .to_string();
    let mut response = Response::new(ProxyBody::full(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(crate::forward::X_REQUEST_ID, request_id.clone());
    response
}

/// `307 Temporary Redirect` to `location` (a path and query on the same host), for
/// `escaped_slashes = "unescape_and_redirect"`: the method and body are to be sent again.
pub fn redirect(location: &str, request_id: &HeaderValue) -> Response<ProxyBody> {
    let mut response = json_error(StatusCode::TEMPORARY_REDIRECT, "redirect", request_id);
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}
