//! HTTP caching rules for a shared cache (RFC 9111), the parts the response cache uses:
//! `Cache-Control` directives, freshness lifetime (`s-maxage`, `max-age`, `Expires`),
//! age, storability, and conditional-request matching (`If-None-Match`,
//! `If-Modified-Since`).

use std::time::{Duration, SystemTime};

use http::header::{self, HeaderMap, HeaderValue};
use http::StatusCode;

/// The directives the cache acts on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheControl {
    /// `no-store`.
    pub no_store: bool,
    /// `no-cache` (a response: store, but revalidate before every use; a request:
    /// revalidate).
    pub no_cache: bool,
    /// `private` (a shared cache must not store it).
    pub private: bool,
    /// `public`.
    pub public: bool,
    /// `must-revalidate` / `proxy-revalidate`: never served stale.
    pub must_revalidate: bool,
    /// `max-age=N`.
    pub max_age: Option<u64>,
    /// `s-maxage=N`.
    pub s_maxage: Option<u64>,
}

impl CacheControl {
    /// The directives of every `Cache-Control` header (and `Pragma: no-cache` when there is
    /// no `Cache-Control`).
    pub fn parse(headers: &HeaderMap) -> CacheControl {
        let mut cc = CacheControl::default();
        let mut any = false;
        for value in headers.get_all(header::CACHE_CONTROL) {
            let Ok(text) = value.to_str() else { continue };
            any = true;
            for directive in split_list(text) {
                let (name, arg) = match directive.split_once('=') {
                    Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
                    None => (directive, None),
                };
                let seconds = || arg.and_then(|a| a.parse::<u64>().ok());
                match name.to_ascii_lowercase().as_str() {
                    "no-store" => cc.no_store = true,
                    "no-cache" => cc.no_cache = true,
                    "private" => cc.private = true,
                    "public" => cc.public = true,
                    "must-revalidate" | "proxy-revalidate" => cc.must_revalidate = true,
                    // A malformed age is as good as zero (RFC 9111 §4.2.1).
                    "max-age" => cc.max_age = Some(seconds().unwrap_or(0)),
                    "s-maxage" => cc.s_maxage = Some(seconds().unwrap_or(0)),
                    _ => {}
                }
            }
        }
        if !any {
            cc.no_cache = headers
                .get_all(header::PRAGMA)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .any(|v| split_list(v).any(|d| d.eq_ignore_ascii_case("no-cache")));
        }
        cc
    }
}

/// The items of a comma-separated header value, trimmed, empty ones skipped.
pub fn split_list(text: &str) -> impl Iterator<Item = &str> {
    text.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// Whether a shared cache may store a response with `status` (RFC 9110 §15.1:
/// heuristically cacheable codes).
pub fn cacheable_status(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// The response's freshness lifetime: `s-maxage`, else `max-age`, else `Expires - Date`,
/// else `default_ttl`; at most `max_ttl`. `None` when the response gives none and
/// `default_ttl` is zero.
pub fn freshness(
    headers: &HeaderMap,
    cc: &CacheControl,
    default_ttl: Duration,
    max_ttl: Duration,
) -> Option<Duration> {
    let explicit = cc
        .s_maxage
        .or(cc.max_age)
        .map(Duration::from_secs)
        .or_else(|| {
            let expires = headers.get(header::EXPIRES)?;
            // An invalid Expires (such as "0") means already expired.
            let Some(expires) = http_date(expires) else {
                return Some(Duration::ZERO);
            };
            let date = headers
                .get(header::DATE)
                .and_then(http_date)
                .unwrap_or_else(SystemTime::now);
            Some(expires.duration_since(date).unwrap_or(Duration::ZERO))
        });
    let lifetime = match explicit {
        Some(d) => d,
        None if !default_ttl.is_zero() => default_ttl,
        None => return None,
    };
    Some(lifetime.min(max_ttl))
}

/// The `Age` the response arrived with.
pub fn initial_age(headers: &HeaderMap) -> Duration {
    headers
        .get(header::AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(Duration::ZERO, Duration::from_secs)
}

fn http_date(value: &HeaderValue) -> Option<SystemTime> {
    httpdate::parse_http_date(value.to_str().ok()?).ok()
}

/// The client's conditional headers.
#[derive(Clone, Debug, Default)]
pub struct Conditionals {
    /// `If-None-Match`.
    pub if_none_match: Option<HeaderValue>,
    /// `If-Modified-Since`.
    pub if_modified_since: Option<HeaderValue>,
}

impl Conditionals {
    /// Removes the conditional headers from `headers`, keeping them here.
    pub fn take(headers: &mut HeaderMap) -> Conditionals {
        headers.remove(header::IF_MATCH);
        headers.remove(header::IF_UNMODIFIED_SINCE);
        headers.remove(header::IF_RANGE);
        Conditionals {
            if_none_match: headers.remove(header::IF_NONE_MATCH),
            if_modified_since: headers.remove(header::IF_MODIFIED_SINCE),
        }
    }

    /// Whether a response with these `headers` is "not modified" for the client:
    /// `If-None-Match` against its `ETag` (weak comparison), or, without
    /// `If-None-Match`, `If-Modified-Since` against its `Last-Modified`.
    pub fn not_modified(&self, headers: &HeaderMap) -> bool {
        if let Some(inm) = &self.if_none_match {
            let Some(etag) = headers.get(header::ETAG).and_then(|v| v.to_str().ok()) else {
                return false;
            };
            let Ok(list) = inm.to_str() else { return false };
            let weak = |t: &str| t.trim().trim_start_matches("W/").to_owned();
            return split_list(list).any(|t| t == "*" || weak(t) == weak(etag));
        }
        if let Some(ims) = &self.if_modified_since {
            let (Some(since), Some(modified)) = (
                http_date(ims),
                headers.get(header::LAST_MODIFIED).and_then(http_date),
            ) else {
                return false;
            };
            return modified <= since;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (n, v) in pairs {
            map.append(
                http::header::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    #[test]
    fn directives() {
        let cc = CacheControl::parse(&headers(&[
            ("cache-control", "public, max-age=60"),
            ("cache-control", "S-MAXAGE=\"120\", must-revalidate"),
        ]));
        assert_eq!(
            cc,
            CacheControl {
                public: true,
                must_revalidate: true,
                max_age: Some(60),
                s_maxage: Some(120),
                ..CacheControl::default()
            }
        );
        let cc = CacheControl::parse(&headers(&[(
            "cache-control",
            "no-store, private=\"x\", max-age=abc",
        )]));
        assert!(cc.no_store && cc.private);
        assert_eq!(cc.max_age, Some(0));
        assert!(CacheControl::parse(&headers(&[("pragma", "no-cache")])).no_cache);
        assert!(
            !CacheControl::parse(&headers(&[
                ("pragma", "no-cache"),
                ("cache-control", "max-age=5")
            ]))
            .no_cache
        );
    }

    #[test]
    fn lifetimes() {
        let min = Duration::from_secs(60);
        let max = Duration::from_secs(300);
        let lifetime = |pairs: &[(&str, &str)], default: Duration| {
            let h = headers(pairs);
            freshness(&h, &CacheControl::parse(&h), default, max).map(|d| d.as_secs())
        };
        assert_eq!(
            lifetime(&[("cache-control", "max-age=30")], Duration::ZERO),
            Some(30)
        );
        assert_eq!(
            lifetime(
                &[("cache-control", "max-age=30, s-maxage=90")],
                Duration::ZERO
            ),
            Some(90)
        );
        assert_eq!(
            lifetime(&[("cache-control", "max-age=3000")], Duration::ZERO),
            Some(300),
            "capped"
        );
        assert_eq!(
            lifetime(
                &[
                    ("date", "Sun, 06 Nov 1994 08:49:37 GMT"),
                    ("expires", "Sun, 06 Nov 1994 08:50:37 GMT")
                ],
                Duration::ZERO
            ),
            Some(60)
        );
        assert_eq!(lifetime(&[("expires", "0")], Duration::ZERO), Some(0));
        assert_eq!(
            lifetime(
                &[
                    ("cache-control", "max-age=10"),
                    ("expires", "Sun, 06 Nov 1994 08:50:37 GMT")
                ],
                Duration::ZERO
            ),
            Some(10),
            "max-age wins over Expires"
        );
        assert_eq!(lifetime(&[], Duration::ZERO), None);
        assert_eq!(lifetime(&[], min), Some(60));
    }

    #[test]
    fn conditionals() {
        let response = headers(&[
            ("etag", "\"v1\""),
            ("last-modified", "Sun, 06 Nov 1994 08:49:37 GMT"),
        ]);
        let check = |pairs: &[(&str, &str)]| {
            let mut request = headers(pairs);
            Conditionals::take(&mut request).not_modified(&response)
        };
        assert!(check(&[("if-none-match", "\"v1\"")]));
        assert!(check(&[("if-none-match", "\"v0\", W/\"v1\"")]));
        assert!(check(&[("if-none-match", "*")]));
        assert!(!check(&[("if-none-match", "\"v2\"")]));
        assert!(
            !check(&[
                ("if-none-match", "\"v2\""),
                ("if-modified-since", "Sun, 06 Nov 1994 08:49:37 GMT")
            ]),
            "If-None-Match decides"
        );
        assert!(check(&[(
            "if-modified-since",
            "Sun, 06 Nov 1994 08:49:37 GMT"
        )]));
        assert!(!check(&[(
            "if-modified-since",
            "Sun, 06 Nov 1994 08:49:36 GMT"
        )]));
        assert!(!check(&[]));
    }
}
