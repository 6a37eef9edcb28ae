//! Forwarding hygiene (docs/admin-api.md, "Errors and forwarding"; RFC 9110 §7.6.1): hop-by-hop headers out,
//! `X-Forwarded-*` in (written by the upstream encoder, [`AddedFields`]), `x-request-id`
//! kept or created.

use std::cell::RefCell;

use bytes::BytesMut;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::Method;

use crate::client::AddedFields;

pub use crate::client::codec::{
    X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO, X_REQUEST_ID,
};
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

/// Fields that are never hop-by-hop, whatever `Connection` names (RFC 9110 §7.6.1 lets a
/// sender name any field; a client naming these would make the gateway drop what it needs
/// or sets: `Connection: Host` sent the endpoint's address as the host). Envoy and HAProxy
/// likewise refuse to let `Connection` remove `Host`.
const NEVER_HOP_BY_HOP: [HeaderName; 6] = [
    header::HOST,
    X_REQUEST_ID,
    X_FORWARDED_FOR,
    X_FORWARDED_PROTO,
    X_FORWARDED_HOST,
    crate::hygiene::X_CONSUMER,
];

/// Removes hop-by-hop headers and every header the `Connection` header names, except those
/// in [`NEVER_HOP_BY_HOP`].
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
            .filter(|name| !NEVER_HOP_BY_HOP.contains(name))
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

/// The request fields forwarding reads, found in one pass over the fields present. Looking
/// each one up hashed its name and probed the map: about ten lookups a request, most of
/// them for names the request did not carry.
///
/// An ambiguous length (`Content-Length` with `Transfer-Encoding`, differing lengths) is not
/// looked for here any more: over HTTP/1 the head guard refuses it before hyper parses the
/// request ([`crate::head_guard`]); over h2 the `h2` crate does (`transfer-encoding` is a
/// connection-specific field, a malformed request; differing `content-length`s and a body
/// that disagrees with its length reset the stream, `proto/streams/recv.rs`).
#[derive(Debug, Default)]
pub struct RequestFields {
    /// The first `Host`.
    pub host: Option<HeaderValue>,
    /// The first `Content-Length`.
    first_length: Option<HeaderValue>,
    /// `Connection` is present (it may name more fields to strip, or ask to upgrade).
    pub connection: bool,
    /// A hop-by-hop field is present.
    pub hop_by_hop: bool,
    /// `X-Forwarded-For` may be present (false: it is not).
    pub forwarded_for: bool,
    /// `X-Forwarded-Host` may be present (false: it is not).
    pub forwarded_host: bool,
}

impl RequestFields {
    /// Reads `headers` once.
    pub fn of(headers: &HeaderMap) -> Self {
        let mut fields = RequestFields::default();
        for (name, value) in headers {
            if *name == header::HOST {
                if fields.host.is_none() {
                    fields.host = Some(value.clone());
                }
            } else if *name == header::CONTENT_LENGTH {
                if fields.first_length.is_none() {
                    fields.first_length = Some(value.clone());
                }
            } else if *name == X_FORWARDED_FOR {
                fields.forwarded_for = true;
            } else if *name == X_FORWARDED_HOST {
                fields.forwarded_host = true;
            } else if HOP_BY_HOP.contains(name) {
                fields.hop_by_hop = true;
                fields.connection |= *name == header::CONNECTION;
            }
        }
        fields
    }

    /// The declared body length: the first `Content-Length`, when it is a number.
    pub fn content_length(&self) -> Option<u64> {
        let value = self.first_length.as_ref()?;
        value.to_str().ok()?.parse().ok()
    }
}

/// The fields the gateway adds to the request upstream: the client appended to
/// `X-Forwarded-For`, `X-Forwarded-Proto`, `X-Forwarded-Host` unless the request has one
/// already, and the request id when it is fresh. `fields` says which the request may have
/// (those an untrusted client sent are removed first).
pub fn forwarded_fields(
    headers: &HeaderMap,
    fields: &RequestFields,
    client_ip: &HeaderValue,
    proto: &'static str,
    host: Option<&HeaderValue>,
    request_id: &RequestId,
) -> AddedFields {
    let sent = fields
        .forwarded_for
        .then(|| headers.get_all(X_FORWARDED_FOR));
    let forwarded_for = match sent {
        Some(sent) if sent.iter().next().is_some() => {
            let mut joined = Vec::new();
            for value in sent {
                joined.extend_from_slice(value.as_bytes());
                joined.extend_from_slice(b", ");
            }
            joined.extend_from_slice(client_ip.as_bytes());
            HeaderValue::from_bytes(&joined).unwrap_or_else(|_| client_ip.clone())
        }
        _ => client_ip.clone(),
    };
    let keep_host = fields.forwarded_host && headers.contains_key(X_FORWARDED_HOST);
    AddedFields {
        forwarded_for: Some(forwarded_for),
        forwarded_proto: Some(HeaderValue::from_static(proto)),
        forwarded_host: if keep_host { None } else { host.cloned() },
        request_id: request_id.fresh.then(|| request_id.value.clone()),
    }
}

/// A request's id, and where it comes from.
#[derive(Clone, Debug)]
pub struct RequestId {
    /// The id.
    pub value: HeaderValue,
    /// Made here: the request had no usable `x-request-id`. A fresh id goes upstream as an
    /// added field ([`AddedFields::request_id`]); a kept one travels with the request.
    pub fresh: bool,
}

/// The request's `x-request-id` (1 to 200 bytes), or a new random one (16 hex digits).
pub fn request_id(headers: &HeaderMap) -> RequestId {
    if let Some(id) = headers.get(X_REQUEST_ID) {
        if !id.is_empty() && id.len() <= 200 {
            return RequestId {
                value: id.clone(),
                fresh: false,
            };
        }
    }
    RequestId {
        value: new_request_id(),
        fresh: true,
    }
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
    fn connection_never_strips_what_the_gateway_needs() {
        let mut h = headers(&[
            (
                "connection",
                "Host, x-request-id, X-Forwarded-For, x-consumer, x-forwarded-proto, x-forwarded-host, x-gone",
            ),
            ("host", "api.example"),
            ("x-request-id", "abc"),
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "h"),
            ("x-consumer", "alice"),
            ("x-gone", "1"),
        ]);
        strip_hop_by_hop(&mut h);
        let mut names: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "host",
                "x-consumer",
                "x-forwarded-for",
                "x-forwarded-host",
                "x-forwarded-proto",
                "x-request-id",
            ]
        );
    }

    #[test]
    fn request_fields_in_one_pass() {
        let h = headers(&[
            ("host", "a.example"),
            ("host", "b.example"),
            ("content-length", "12"),
            ("x-forwarded-host", "c.example"),
        ]);
        let fields = RequestFields::of(&h);
        assert_eq!(fields.host.as_ref().unwrap(), "a.example");
        assert_eq!(fields.content_length(), Some(12));
        assert!(fields.forwarded_host && !fields.forwarded_for);
        assert!(!fields.hop_by_hop && !fields.connection);
        let fields = RequestFields::of(&headers(&[("connection", "close")]));
        assert!(fields.hop_by_hop && fields.connection);
        assert_eq!(fields.content_length(), None);
        let fields = RequestFields::of(&headers(&[("content-length", "x")]));
        assert_eq!(fields.content_length(), None);
    }

    #[test]
    fn forwarded_fields_append() {
        let ip = HeaderValue::from_static("10.0.0.9");
        let host = HeaderValue::from_static("api.example.com");
        let forwarded = |h: &HeaderMap, host: Option<&HeaderValue>| {
            let id = request_id(h);
            forwarded_fields(h, &RequestFields::of(h), &ip, "http", host, &id)
        };
        let h = headers(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-for", "5.6.7.8"),
        ]);
        let added = forwarded(&h, Some(&host));
        assert_eq!(added.forwarded_for.unwrap(), "1.2.3.4, 5.6.7.8, 10.0.0.9");
        assert_eq!(added.forwarded_proto.unwrap(), "http");
        assert_eq!(added.forwarded_host.unwrap(), "api.example.com");
        let h = headers(&[("x-forwarded-host", "kept.example")]);
        assert_eq!(
            forwarded(&h, Some(&host)).forwarded_host,
            None,
            "the request's kept"
        );
        let added = forwarded(&HeaderMap::new(), None);
        assert_eq!(added.forwarded_for.unwrap(), "10.0.0.9");
        assert_eq!(added.forwarded_host, None);
    }

    #[test]
    fn request_id_kept_or_created() {
        let h = headers(&[("x-request-id", "abc")]);
        let kept = request_id(&h);
        assert_eq!((kept.value.to_str().unwrap(), kept.fresh), ("abc", false));
        let too_long = "x".repeat(201);
        for h in [HeaderMap::new(), headers(&[("x-request-id", &too_long)])] {
            let made = request_id(&h);
            assert_eq!((made.value.len(), made.fresh), (16, true));
            let added = forwarded_fields(
                &h,
                &RequestFields::of(&h),
                &HeaderValue::from_static("10.0.0.9"),
                "http",
                None,
                &made,
            );
            assert_eq!(
                added.request_id,
                Some(made.value),
                "a fresh id goes upstream"
            );
        }
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
