//! Request hygiene before any route decision, for every request on every route, HTTP/1 and
//! HTTP/2 alike:
//!
//! 1. The identity headers the gateway owns ([`OWNED_IDENTITY`]: `x-consumer`, which the
//!    auth policy sets to the authenticated consumer) are removed, also when spelled with
//!    underscores (`x_consumer`, which CGI-style upstreams read as the same name). A client
//!    can then never choose a route by them nor reach an upstream with them.
//! 2. The request's host is validated and made one (RFC 9110 §7.2, RFC 9112 §3.2, RFC 9113
//!    §8.3.1): an HTTP/1.1 request without `Host`, two `Host` fields, a value that is not
//!    `uri-host [ ":" port ]` ([`crate::grammar::host`]), and a request target's authority
//!    (absolute form, h2 `:authority`) that disagrees with `Host` are refused with 400. An
//!    h2 request's `:authority`, or an absolute-form target's authority, becomes the
//!    `Host` field when none was sent, so that routing, the `Host` sent upstream and
//!    `X-Forwarded-Host` all use the one validated host.
//! 3. The path is normalized ([`crate::path`]); the router matches, and the upstream gets,
//!    the normalized path.
//!
//! Cost on a request that is already clean (one `Host`, a normal path): one pass over the
//! header names, one over the host's bytes and one over the path's; no allocation.

use http::header::{self, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, Uri, Version};

use crate::grammar;
use crate::path::{self, Normalized, PathNormalization};

/// `x-consumer`: the consumer the auth policy authenticated.
pub const X_CONSUMER: HeaderName = HeaderName::from_static("x-consumer");

/// The identity headers only the gateway may set: removed from every request as it arrives.
pub const OWNED_IDENTITY: [HeaderName; 1] = [X_CONSUMER];

/// Why a request is answered before routing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refused {
    /// 400, for this reason.
    BadRequest(&'static str),
    /// 307 to this path and query (`escaped_slashes = "unescape_and_redirect"`).
    Redirect(String),
}

/// What [`admit`] found.
#[derive(Debug)]
pub struct Admission {
    /// The one validated host (`None` only for an HTTP/1.0 request that named none), or why
    /// the request is answered without being routed.
    pub result: Result<Option<HeaderValue>, Refused>,
    /// The request carries `Upgrade`: unless it is answered with 101, its connection is
    /// closed after the answer (the head guard stops checking after an upgrade request, so
    /// nothing more may be read from that connection as HTTP).
    pub upgrade: bool,
}

/// Cleans `request` up as the module docs say.
///
/// Kept out of line so that `bench/cost.sh` can count its instructions apart (callgrind's
/// inclusive cost of this function); one call per request costs a few instructions.
#[inline(never)]
pub fn admit<B>(request: &mut Request<B>, rules: &PathNormalization) -> Admission {
    let mut hosts = 0u32;
    let mut owned = false;
    let mut upgrade = false;
    for (name, _) in request.headers() {
        if *name == header::HOST {
            hosts += 1;
        } else if *name == header::UPGRADE {
            upgrade = true;
        } else if is_owned(name) {
            owned = true;
        }
    }
    if owned {
        remove_owned(request.headers_mut());
    }
    let result = if hosts > 1 {
        Err(Refused::BadRequest("more than one Host"))
    } else {
        admit_host(request).and_then(|host| admit_path(request, rules).map(|()| host))
    };
    Admission { result, upgrade }
}

/// Whether `name` is an owned identity header, also with `_` for `-`.
fn is_owned(name: &HeaderName) -> bool {
    let name = name.as_str().as_bytes();
    OWNED_IDENTITY.iter().any(|owned| {
        let owned = owned.as_str().as_bytes();
        owned.len() == name.len()
            && owned
                .iter()
                .zip(name)
                .all(|(&o, &n)| o == n || (o == b'-' && n == b'_'))
    })
}

/// Removes every owned identity header (a rare path: only when a client sent one).
fn remove_owned(headers: &mut http::HeaderMap) {
    let names: Vec<HeaderName> = headers.keys().filter(|n| is_owned(n)).cloned().collect();
    for name in names {
        tracing::debug!("client-sent {name} removed");
        headers.remove(name);
    }
}

/// Step 2 of the module docs.
fn admit_host<B>(request: &mut Request<B>) -> Result<Option<HeaderValue>, Refused> {
    let field = request.headers().get(header::HOST);
    let authority = request.uri().authority().map(|a| a.as_str());
    let connect = request.method() == Method::CONNECT;
    let (host, insert) = match (authority, field) {
        (Some(authority), Some(field)) => {
            // The target's authority wins (RFC 9112 §3.2.2); one that disagrees with Host
            // is refused, as HAProxy does (CONNECT's target is the tunnel's, not the host).
            if !connect && !authority.as_bytes().eq_ignore_ascii_case(field.as_bytes()) {
                return Err(Refused::BadRequest(
                    "Host disagrees with the request target",
                ));
            }
            (field.clone(), false)
        }
        (Some(authority), None) => {
            if request.version() == Version::HTTP_11 {
                return Err(Refused::BadRequest("HTTP/1.1 request without Host"));
            }
            let value = HeaderValue::from_str(authority)
                .map_err(|_| Refused::BadRequest("invalid authority"))?;
            (value, true)
        }
        (None, Some(field)) => (field.clone(), false),
        (None, None) => {
            return match request.version() {
                Version::HTTP_10 | Version::HTTP_09 => Ok(None),
                _ => Err(Refused::BadRequest("request without Host")),
            }
        }
    };
    if grammar::host(host.as_bytes()).is_none() {
        return Err(Refused::BadRequest("invalid Host"));
    }
    if insert {
        request.headers_mut().insert(header::HOST, host.clone());
    }
    Ok(Some(host))
}

/// Step 3 of the module docs.
fn admit_path<B>(request: &mut Request<B>, rules: &PathNormalization) -> Result<(), Refused> {
    let uri = request.uri();
    let normalized = path::normalize(uri.path(), rules).map_err(|error| {
        tracing::debug!("request refused: {error}");
        Refused::BadRequest("invalid path")
    })?;
    let (path, redirect) = match normalized {
        Normalized::Unchanged => return Ok(()),
        Normalized::Rewritten(path) => (path, false),
        Normalized::Redirect(path) => (path, true),
    };
    let path_and_query = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path,
    };
    if redirect {
        return Err(Refused::Redirect(path_and_query));
    }
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(
        PathAndQuery::try_from(path_and_query).map_err(|_| Refused::BadRequest("invalid path"))?,
    );
    *request.uri_mut() = Uri::from_parts(parts).map_err(|_| Refused::BadRequest("invalid path"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(version: Version, target: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::builder().version(version).uri(target);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap()
    }

    fn admitted(request: &mut Request<()>) -> Result<Option<String>, Refused> {
        admit(request, &PathNormalization::default())
            .result
            .map(|host| host.map(|h| h.to_str().unwrap().to_owned()))
    }

    #[test]
    fn identity_headers_are_removed() {
        let mut r = request(
            Version::HTTP_11,
            "/",
            &[
                ("host", "a"),
                ("x-consumer", "alice"),
                ("x_consumer", "alice"),
                ("X-Consumer", "bob"),
                ("x-consumers", "kept"),
            ],
        );
        assert_eq!(admitted(&mut r), Ok(Some("a".into())));
        let names: Vec<&str> = r.headers().keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["host", "x-consumers"]);
    }

    #[test]
    fn hosts_are_validated() {
        let bad = |version, target: &str, headers: &[(&str, &str)]| {
            let mut r = request(version, target, headers);
            assert!(
                matches!(admitted(&mut r), Err(Refused::BadRequest(_))),
                "{target} {headers:?}"
            );
        };
        bad(Version::HTTP_11, "/", &[]);
        bad(Version::HTTP_11, "/", &[("host", "a"), ("host", "a")]);
        bad(Version::HTTP_11, "/", &[("host", "admin.internal:abc")]);
        bad(Version::HTTP_11, "/", &[("host", "a:80:80")]);
        bad(Version::HTTP_11, "/", &[("host", "a b")]);
        bad(Version::HTTP_11, "/", &[("host", "a, b")]);
        bad(Version::HTTP_11, "/", &[("host", "u@a")]);
        bad(Version::HTTP_11, "http://a/", &[("host", "b")]);
        bad(Version::HTTP_11, "http://a/", &[]);
        bad(Version::HTTP_11, "http://u@a/", &[("host", "u@a")]);
        bad(Version::HTTP_2, "/", &[]);
        bad(Version::HTTP_2, "http://a/", &[("host", "b")]);
        // h2: :authority becomes Host.
        let mut r = request(Version::HTTP_2, "https://api.example:8443/x", &[]);
        assert_eq!(admitted(&mut r), Ok(Some("api.example:8443".into())));
        assert_eq!(r.headers()["host"], "api.example:8443");
        // Absolute form agreeing with Host (case aside).
        let mut r = request(
            Version::HTTP_11,
            "http://A.example/x",
            &[("host", "a.EXAMPLE")],
        );
        assert_eq!(admitted(&mut r), Ok(Some("a.EXAMPLE".into())));
        // HTTP/1.0 may name no host.
        let mut r = request(Version::HTTP_10, "/", &[]);
        assert_eq!(admitted(&mut r), Ok(None));
        let mut r = request(Version::HTTP_10, "http://a/", &[]);
        assert_eq!(admitted(&mut r), Ok(Some("a".into())));
    }

    #[test]
    fn paths_are_normalized_in_the_uri() {
        let mut r = request(
            Version::HTTP_11,
            "/x/../admin-only?a=/../b",
            &[("host", "a")],
        );
        admitted(&mut r).unwrap();
        assert_eq!(r.uri(), "/admin-only?a=/../b");
        let mut r = request(Version::HTTP_2, "https://a/%61//b", &[]);
        admitted(&mut r).unwrap();
        assert_eq!(r.uri(), "https://a/a/b");
        let mut r = request(Version::HTTP_11, "/..", &[("host", "a")]);
        assert!(admitted(&mut r).is_err());
        let rules = PathNormalization {
            escaped_slashes: path::EscapedSlashes::UnescapeAndRedirect,
            ..PathNormalization::default()
        };
        let mut r = request(Version::HTTP_11, "/a%2Fb?q", &[("host", "a")]);
        assert_eq!(
            admit(&mut r, &rules).result,
            Err(Refused::Redirect("/a/b?q".into()))
        );
    }
}
