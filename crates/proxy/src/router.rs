//! The router: picks a route for a request by host, path, method and headers.
//!
//! Routes are compiled into a table that is rebuilt on reload and swapped atomically, and
//! looked up without allocating:
//!
//! 1. Host: an exact host bucket first, then `*.suffix` buckets from the longest suffix,
//!    then the routes with no host. The `Host` header's port is ignored; comparison is
//!    case-insensitive.
//! 2. Within a bucket: an exact `path` first, then the longest `path_prefix`. Prefix
//!    lengths present in the bucket are kept sorted, so a lookup costs one hash probe per
//!    distinct prefix length, not one comparison per route.
//! 3. Among routes with the same host and path: the most specific (more method and header
//!    conditions) first, then config order. The first whose methods and headers match wins.

use std::collections::HashMap;

use http::{HeaderMap, HeaderName, HeaderValue, Method};

/// How a route matches the path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathMatch {
    /// `path = "/exact"`.
    Exact(String),
    /// `path_prefix = "/orders"` (plain string prefix, as Envoy's `prefix`).
    Prefix(String),
}

/// How a route matches one header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderMatch {
    /// The header is present, with any value.
    Present,
    /// The header has exactly this value.
    Exact(HeaderValue),
}

/// The matching part of a route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteMatch {
    /// `host`: exact (`api.example.com`) or wildcard (`*.example.com`); `None` = any host.
    pub host: Option<String>,
    /// The path condition.
    pub path: PathMatch,
    /// Allowed methods; empty = any.
    pub methods: Vec<Method>,
    /// Header conditions; all must hold.
    pub headers: Vec<(HeaderName, HeaderMatch)>,
}

impl AsRef<RouteMatch> for RouteMatch {
    fn as_ref(&self) -> &RouteMatch {
        self
    }
}

impl RouteMatch {
    fn specificity(&self) -> usize {
        usize::from(!self.methods.is_empty()) + self.headers.len()
    }

    fn matches_rest(&self, method: &Method, headers: &HeaderMap) -> bool {
        (self.methods.is_empty() || self.methods.contains(method))
            && self.headers.iter().all(|(name, cond)| match cond {
                HeaderMatch::Present => headers.contains_key(name),
                HeaderMatch::Exact(v) => headers.get_all(name).iter().any(|h| h == v),
            })
    }
}

/// Routes that share a host condition.
///
/// Each path maps to a [`Span`] of `indexes` rather than a list of its own: at 10,000
/// routes that saves a small allocation and 24 bytes of map entry per route (~0.8 MiB).
#[derive(Debug, Default)]
struct Bucket {
    exact: HashMap<Box<str>, Span>,
    prefixes: HashMap<Box<str>, Span>,
    /// Distinct prefix lengths, longest first.
    prefix_lengths: Vec<usize>,
    /// The route indexes of every path, each path's run most specific first.
    indexes: Vec<u32>,
}

/// A run of [`Bucket::indexes`].
#[derive(Clone, Copy, Debug)]
struct Span {
    start: u32,
    len: u32,
}

/// A bucket while routes are added: each path's route indexes in a list of its own.
#[derive(Default)]
struct BucketBuilder {
    exact: HashMap<Box<str>, Vec<usize>>,
    prefixes: HashMap<Box<str>, Vec<usize>>,
}

impl BucketBuilder {
    /// Orders each path's routes by `key` and packs them into a [`Bucket`].
    fn build(self, key: impl Fn(usize) -> (std::cmp::Reverse<usize>, usize)) -> Bucket {
        let mut bucket = Bucket::default();
        let mut pack = |mut list: Vec<usize>| {
            list.sort_by_key(|&i| key(i));
            let start = to_u32(bucket.indexes.len());
            bucket.indexes.extend(list.into_iter().map(to_u32));
            Span {
                start,
                len: to_u32(bucket.indexes.len()) - start,
            }
        };
        let exact: HashMap<Box<str>, Span> = self
            .exact
            .into_iter()
            .map(|(path, list)| (path, pack(list)))
            .collect();
        let prefixes: HashMap<Box<str>, Span> = self
            .prefixes
            .into_iter()
            .map(|(path, list)| (path, pack(list)))
            .collect();
        let mut lengths: Vec<usize> = prefixes.keys().map(|p| p.len()).collect();
        lengths.sort_unstable_by(|a, b| b.cmp(a));
        lengths.dedup();
        bucket.exact = exact;
        bucket.prefixes = prefixes;
        bucket.prefix_lengths = lengths;
        bucket.indexes.shrink_to_fit();
        bucket
    }
}

/// A route index as stored (a table of more than 4 billion routes is not a config).
fn to_u32(index: usize) -> u32 {
    u32::try_from(index).expect("fewer than 2^32 routes")
}

/// A compiled route table. Route indexes are positions in the list given to [`Router::new`].
#[derive(Debug, Default)]
pub struct Router {
    hosts: HashMap<String, Bucket>,
    /// (suffix including the leading dot, bucket), longest suffix first.
    wildcards: Vec<(String, Bucket)>,
    any_host: Bucket,
}

impl Router {
    /// Compiles `routes`.
    pub fn new<R: AsRef<RouteMatch>>(routes: &[R]) -> Self {
        let mut hosts: HashMap<String, BucketBuilder> = HashMap::new();
        let mut wildcards: Vec<(String, BucketBuilder)> = Vec::new();
        let mut any_host = BucketBuilder::default();
        for (index, route) in routes.iter().map(AsRef::as_ref).enumerate() {
            let bucket = match &route.host {
                None => &mut any_host,
                Some(host) => {
                    let host = host.to_ascii_lowercase();
                    if let Some(suffix) = host.strip_prefix('*') {
                        let suffix = suffix.to_owned();
                        match wildcards.iter().position(|(s, _)| *s == suffix) {
                            Some(i) => &mut wildcards[i].1,
                            None => {
                                wildcards.push((suffix, BucketBuilder::default()));
                                &mut wildcards.last_mut().expect("pushed").1
                            }
                        }
                    } else {
                        hosts.entry(host).or_default()
                    }
                }
            };
            let (paths, path) = match &route.path {
                PathMatch::Exact(p) => (&mut bucket.exact, p),
                PathMatch::Prefix(p) => (&mut bucket.prefixes, p),
            };
            match paths.get_mut(path.as_str()) {
                Some(list) => list.push(index),
                None => {
                    paths.insert(path.as_str().into(), vec![index]);
                }
            }
        }
        wildcards.sort_by_key(|(suffix, _)| std::cmp::Reverse(suffix.len()));
        let by_specificity = |i: usize| (std::cmp::Reverse(routes[i].as_ref().specificity()), i);
        Router {
            hosts: hosts
                .into_iter()
                .map(|(host, b)| (host, b.build(by_specificity)))
                .collect(),
            wildcards: wildcards
                .into_iter()
                .map(|(suffix, b)| (suffix, b.build(by_specificity)))
                .collect(),
            any_host: any_host.build(by_specificity),
        }
    }

    /// The index of the route for a request, if any. `host` is the `Host` header (or the
    /// URI authority) as sent, port included.
    pub fn find<R: AsRef<RouteMatch>>(
        &self,
        routes: &[R],
        host: Option<&str>,
        path: &str,
        method: &Method,
        headers: &HeaderMap,
    ) -> Option<usize> {
        let mut host = host.map(strip_port).unwrap_or("");
        let lowered;
        if host.bytes().any(|b| b.is_ascii_uppercase()) {
            lowered = host.to_ascii_lowercase();
            host = &lowered;
        }
        let host = host.strip_suffix('.').unwrap_or(host);
        let matches = |bucket: &Bucket| bucket.find(routes, path, method, headers);
        if !host.is_empty() {
            if let Some(found) = self.hosts.get(host).and_then(matches) {
                return Some(found);
            }
            for (suffix, bucket) in &self.wildcards {
                if host.len() > suffix.len() && host.ends_with(suffix.as_str()) {
                    if let Some(found) = matches(bucket) {
                        return Some(found);
                    }
                }
            }
        }
        matches(&self.any_host)
    }
}

impl Bucket {
    fn find<R: AsRef<RouteMatch>>(
        &self,
        routes: &[R],
        path: &str,
        method: &Method,
        headers: &HeaderMap,
    ) -> Option<usize> {
        let first_match = |span: &Span| {
            let start = span.start as usize;
            self.indexes[start..start + span.len as usize]
                .iter()
                .map(|&i| i as usize)
                .find(|&i| routes[i].as_ref().matches_rest(method, headers))
        };
        if let Some(found) = self.exact.get(path).and_then(first_match) {
            return Some(found);
        }
        for &len in &self.prefix_lengths {
            if let Some(prefix) = path.get(..len) {
                if let Some(found) = self.prefixes.get(prefix).and_then(first_match) {
                    return Some(found);
                }
            }
        }
        None
    }
}

/// `example.com:8080` → `example.com`; `[::1]:8080` → `[::1]`.
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.rfind(':') {
        Some(i) if host[i + 1..].bytes().all(|b| b.is_ascii_digit()) => &host[..i],
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(
        host: Option<&str>,
        path: PathMatch,
        methods: &[&str],
        headers: &[(&str, Option<&str>)],
    ) -> RouteMatch {
        RouteMatch {
            host: host.map(str::to_owned),
            path,
            methods: methods.iter().map(|m| m.parse().unwrap()).collect(),
            headers: headers
                .iter()
                .map(|(n, v)| {
                    let cond = match v {
                        Some(v) => HeaderMatch::Exact(HeaderValue::from_str(v).unwrap()),
                        None => HeaderMatch::Present,
                    };
                    (HeaderName::from_bytes(n.as_bytes()).unwrap(), cond)
                })
                .collect(),
        }
    }

    fn prefix(p: &str) -> PathMatch {
        PathMatch::Prefix(p.into())
    }

    fn exact(p: &str) -> PathMatch {
        PathMatch::Exact(p.into())
    }

    /// Looks up (host, method, path, headers) and compares with the expected route index.
    fn check(
        routes: &[RouteMatch],
        host: Option<&str>,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        expected: Option<usize>,
    ) {
        let router = Router::new(routes);
        let mut map = HeaderMap::new();
        for (n, v) in headers {
            map.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let got = router.find(routes, host, path, &method.parse().unwrap(), &map);
        assert_eq!(got, expected, "{host:?} {method} {path} {headers:?}");
    }

    #[test]
    fn host_path_method_and_headers() {
        let routes = vec![
            route(None, prefix("/"), &[], &[]),                          // 0
            route(None, prefix("/orders"), &[], &[]),                    // 1
            route(None, exact("/orders/special"), &[], &[]),             // 2
            route(Some("api.example.com"), prefix("/orders"), &[], &[]), // 3
            route(Some("*.example.com"), prefix("/"), &[], &[]),         // 4
            route(None, prefix("/orders"), &["POST"], &[]),              // 5
            route(None, prefix("/orders"), &[], &[("x-canary", Some("1"))]), // 6
            route(Some("*.deep.example.com"), prefix("/"), &[], &[]),    // 7
        ];
        check(&routes, None, "GET", "/", &[], Some(0));
        check(&routes, None, "GET", "/orders/1", &[], Some(1));
        check(&routes, None, "GET", "/orders/special", &[], Some(2));
        check(
            &routes,
            Some("api.example.com"),
            "GET",
            "/orders/1",
            &[],
            Some(3),
        );
        check(
            &routes,
            Some("API.Example.com:8080"),
            "GET",
            "/orders",
            &[],
            Some(3),
        );
        check(
            &routes,
            Some("api.example.com"),
            "GET",
            "/other",
            &[],
            Some(4),
        );
        check(
            &routes,
            Some("www.example.com"),
            "GET",
            "/orders",
            &[],
            Some(4),
        );
        check(&routes, Some("example.com"), "GET", "/orders", &[], Some(1));
        check(
            &routes,
            Some("a.deep.example.com"),
            "GET",
            "/",
            &[],
            Some(7),
        );
        check(&routes, None, "POST", "/orders", &[], Some(5));
        check(
            &routes,
            None,
            "GET",
            "/orders",
            &[("x-canary", "1")],
            Some(6),
        );
        check(
            &routes,
            None,
            "GET",
            "/orders",
            &[("x-canary", "2")],
            Some(1),
        );
    }

    #[test]
    fn no_match_and_method_only_routes() {
        let routes = vec![
            route(None, prefix("/api"), &["GET", "HEAD"], &[]),
            route(Some("only.example"), exact("/x"), &[], &[("x-key", None)]),
        ];
        check(&routes, None, "GET", "/api/v1", &[], Some(0));
        check(&routes, None, "DELETE", "/api/v1", &[], None);
        check(&routes, None, "GET", "/", &[], None);
        check(&routes, Some("only.example"), "GET", "/x", &[], None);
        check(
            &routes,
            Some("only.example"),
            "GET",
            "/x",
            &[("x-key", "a")],
            Some(1),
        );
        check(&routes, Some("[::1]:80"), "GET", "/api", &[], Some(0));
    }

    #[test]
    fn first_in_config_order_wins_ties() {
        let routes = vec![
            route(None, prefix("/a"), &[], &[]),
            route(None, prefix("/a"), &[], &[]),
        ];
        check(&routes, None, "GET", "/a", &[], Some(0));
    }

    #[test]
    fn strip_port_cases() {
        assert_eq!(strip_port("a.b:80"), "a.b");
        assert_eq!(strip_port("a.b"), "a.b");
        assert_eq!(strip_port("[::1]:443"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
    }
}
