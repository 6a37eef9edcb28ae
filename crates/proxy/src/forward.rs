//! Forwarding hygiene (DESIGN.md §4, RFC 9110 §7.6.1): hop-by-hop headers out,
//! `X-Forwarded-*` in, `x-request-id` kept or created.

use std::cell::RefCell;

use bytes::BytesMut;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::Method;

/// `x-request-id`.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// `x-forwarded-for`.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `x-forwarded-proto`.
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `x-forwarded-host`.
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Headers that describe one connection, never the message (RFC 9110 §7.6.1, plus the
/// non-standard `Keep-Alive` and `Proxy-Connection`).
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop headers and every header the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Usually there are none: one pass over the few names present is cheaper than hashing
    // each of the nine names to look it up.
    if !headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
        return;
    }
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        if headers.contains_key(name) {
            headers.remove(name);
        }
    }
}

/// Whether a method is idempotent (RFC 9110 §9.2.2): a request that failed before any answer
/// may be sent again, on another connection or endpoint.
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// Whether a request is ambiguous about its length (both `Content-Length` and
/// `Transfer-Encoding`, or several differing `Content-Length`s): such a request is refused
/// with 400, never forwarded (request smuggling).
pub fn is_ambiguous_length(headers: &HeaderMap) -> bool {
    let mut lengths = headers.get_all(header::CONTENT_LENGTH).iter();
    let first = lengths.next();
    if first.is_some() && headers.contains_key(header::TRANSFER_ENCODING) {
        return true;
    }
    lengths.any(|v| Some(v) != first)
}

/// Sets the `X-Forwarded-*` headers: appends the client to `X-Forwarded-For`, sets
/// `X-Forwarded-Proto` and (when absent) `X-Forwarded-Host`.
pub fn add_forwarded(
    headers: &mut HeaderMap,
    client_ip: &HeaderValue,
    proto: &'static str,
    host: Option<&HeaderValue>,
) {
    match headers.get_mut(X_FORWARDED_FOR) {
        Some(existing) => {
            let mut joined = Vec::with_capacity(existing.len() + 2 + client_ip.len());
            joined.extend_from_slice(existing.as_bytes());
            joined.extend_from_slice(b", ");
            joined.extend_from_slice(client_ip.as_bytes());
            if let Ok(value) = HeaderValue::from_bytes(&joined) {
                *existing = value;
            }
        }
        None => {
            headers.insert(X_FORWARDED_FOR, client_ip.clone());
        }
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    if let Some(host) = host {
        if !headers.contains_key(X_FORWARDED_HOST) {
            headers.insert(X_FORWARDED_HOST, host.clone());
        }
    }
}

/// The request's `x-request-id`, or a new random one (16 hex digits) set on the headers.
pub fn request_id(headers: &mut HeaderMap) -> HeaderValue {
    if let Some(id) = headers.get(X_REQUEST_ID) {
        if !id.is_empty() && id.len() <= 200 {
            return id.clone();
        }
    }
    let id = new_request_id();
    headers.insert(X_REQUEST_ID, id.clone());
    id
}

/// 16 random hex digits.
///
/// Cut from a per-thread block of [`ID_BLOCK`] ids, so that neither making one nor cloning
/// it allocates (a value copied into its own buffer costs one allocation, and its first
/// clone, for the response header, a second one to make it shareable); the block is freed
/// once the last id cut from it is dropped.
pub fn new_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut n = fastrand::u64(..);
    let mut digits = [0u8; 16];
    for b in digits.iter_mut().rev() {
        *b = HEX[(n & 0xf) as usize];
        n >>= 4;
    }
    let id = ID_SLAB.with(|slab| {
        let mut slab = slab.borrow_mut();
        if slab.capacity() < digits.len() {
            *slab = BytesMut::with_capacity(ID_BLOCK * digits.len());
        }
        slab.extend_from_slice(&digits);
        slab.split().freeze()
    });
    HeaderValue::from_maybe_shared(id).expect("hex is a valid header value")
}

/// Request ids per block (16 bytes each).
const ID_BLOCK: usize = 64;

thread_local! {
    /// The current block request ids are cut from.
    static ID_SLAB: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (n, v) in pairs {
            map.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    #[test]
    fn strips_hop_by_hop_and_connection_named() {
        let mut h = headers(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic x"),
            ("x-keep", "yes"),
        ]);
        strip_hop_by_hop(&mut h);
        let names: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, vec!["x-keep"]);
    }

    #[test]
    fn ambiguous_lengths() {
        assert!(is_ambiguous_length(&headers(&[
            ("content-length", "3"),
            ("transfer-encoding", "chunked")
        ])));
        assert!(is_ambiguous_length(&headers(&[
            ("transfer-encoding", "chunked"),
            ("content-length", "3")
        ])));
        assert!(is_ambiguous_length(&headers(&[
            ("content-length", "3"),
            ("content-length", "4")
        ])));
        assert!(!is_ambiguous_length(&headers(&[
            ("content-length", "3"),
            ("content-length", "3")
        ])));
        assert!(!is_ambiguous_length(&headers(&[("content-length", "3")])));
        assert!(!is_ambiguous_length(&headers(&[(
            "transfer-encoding",
            "chunked"
        )])));
    }

    #[test]
    fn forwarded_headers_append() {
        let ip = HeaderValue::from_static("10.0.0.9");
        let host = HeaderValue::from_static("api.example.com");
        let mut h = headers(&[("x-forwarded-for", "1.2.3.4")]);
        add_forwarded(&mut h, &ip, "http", Some(&host));
        assert_eq!(h["x-forwarded-for"], "1.2.3.4, 10.0.0.9");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "api.example.com");
        let mut h = HeaderMap::new();
        add_forwarded(&mut h, &ip, "http", None);
        assert_eq!(h["x-forwarded-for"], "10.0.0.9");
    }

    #[test]
    fn request_id_kept_or_created() {
        let mut h = headers(&[("x-request-id", "abc")]);
        assert_eq!(request_id(&mut h), "abc");
        let mut h = HeaderMap::new();
        let id = request_id(&mut h);
        assert_eq!(id.len(), 16);
        assert_eq!(h["x-request-id"], id);
        assert_ne!(new_request_id(), new_request_id());
    }

    #[test]
    fn request_ids_cut_from_blocks_stay_whole_and_distinct() {
        // Several blocks' worth, some kept past their block's end.
        let ids: Vec<HeaderValue> = (0..ID_BLOCK * 3 + 5).map(|_| new_request_id()).collect();
        let texts: std::collections::HashSet<&str> =
            ids.iter().map(|id| id.to_str().unwrap()).collect();
        assert_eq!(texts.len(), ids.len());
        for text in texts {
            assert_eq!(text.len(), 16, "{text}");
            assert!(text.bytes().all(|b| b.is_ascii_hexdigit()), "{text}");
        }
    }
}
