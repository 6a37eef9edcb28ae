//! Route lookup and route-table compilation with 10, 1,000 and 10,000 routes
//! (`cargo bench -p switchyard-proxy --bench router`).
//!
//! The table mixes the route shapes config allows, one in ten of each kind per ten routes:
//! host-less path prefixes (40%), exact hosts (20%), wildcard hosts (10%), exact paths
//! (10%), method-restricted prefixes (10%) and header-conditioned prefixes (10%). Each
//! lookup case targets a route from the middle of the table:
//!
//! - `prefix`: a host-less `path_prefix` route, `Host: gateway.local` (no host bucket, so
//!   every wildcard suffix is tried first);
//! - `host`: an exact-host route;
//! - `exact`: an exact `path` route;
//! - `header`: a route that needs `x-canary: 1`;
//! - `miss`: nothing matches (the 404 path).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use switchyard_proxy::router::{HeaderMatch, PathMatch, RouteMatch, Router};

const SIZES: [usize; 3] = [10, 1_000, 10_000];

/// Route `i` of a table: its kind is `i % 10` (see the module doc).
fn route(i: usize) -> RouteMatch {
    let prefix = PathMatch::Prefix(format!("/svc{i}"));
    let (host, path, methods, headers) = match i % 10 {
        0..=3 => (None, prefix, vec![], vec![]),
        4 | 5 => (
            Some(format!("svc{i}.example.com")),
            PathMatch::Prefix("/".into()),
            vec![],
            vec![],
        ),
        6 => (
            Some(format!("*.w{i}.example.com")),
            PathMatch::Prefix("/".into()),
            vec![],
            vec![],
        ),
        7 => (
            None,
            PathMatch::Exact(format!("/exact/{i}")),
            vec![],
            vec![],
        ),
        8 => (None, prefix, vec![Method::POST], vec![]),
        _ => (
            None,
            prefix,
            vec![],
            vec![(
                HeaderName::from_static("x-canary"),
                HeaderMatch::Exact(HeaderValue::from_static("1")),
            )],
        ),
    };
    RouteMatch {
        host,
        path,
        methods,
        headers,
    }
}

/// The first route of kind `kind` at or after the middle of a table of `n` routes.
fn middle(n: usize, kind: usize) -> usize {
    let start = n / 2 - (n / 2) % 10;
    let i = start + kind;
    if i < n {
        i
    } else {
        kind
    }
}

/// (case, host, path, method, headers, expected route)
type Case = (
    &'static str,
    String,
    String,
    Method,
    HeaderMap,
    Option<usize>,
);

fn cases(n: usize) -> Vec<Case> {
    let mut canary = HeaderMap::new();
    canary.insert("x-canary", HeaderValue::from_static("1"));
    let (p, h, e, c) = (middle(n, 0), middle(n, 4), middle(n, 7), middle(n, 9));
    vec![
        (
            "prefix",
            "gateway.local".into(),
            format!("/svc{p}/orders/42"),
            Method::GET,
            HeaderMap::new(),
            Some(p),
        ),
        (
            "host",
            format!("svc{h}.example.com:8080"),
            "/orders/42".into(),
            Method::GET,
            HeaderMap::new(),
            Some(h),
        ),
        (
            "exact",
            "gateway.local".into(),
            format!("/exact/{e}"),
            Method::GET,
            HeaderMap::new(),
            Some(e),
        ),
        (
            "header",
            "gateway.local".into(),
            format!("/svc{c}/orders"),
            Method::GET,
            canary,
            Some(c),
        ),
        (
            "miss",
            "gateway.local".into(),
            "/nothing/here".into(),
            Method::GET,
            HeaderMap::new(),
            None,
        ),
    ]
}

fn lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("route_lookup");
    for n in SIZES {
        let routes: Vec<RouteMatch> = (0..n).map(route).collect();
        let router = Router::new(&routes);
        for (name, host, path, method, headers, expected) in cases(n) {
            // A benchmark of the wrong route would measure nothing useful.
            let found = router.find(&routes, Some(&host), &path, &method, &headers);
            assert_eq!(found, expected, "{name} with {n} routes");
            group.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
                b.iter(|| {
                    router.find(
                        black_box(&routes),
                        black_box(Some(host.as_str())),
                        black_box(path.as_str()),
                        black_box(&method),
                        black_box(&headers),
                    )
                });
            });
        }
    }
    group.finish();
}

fn compile(c: &mut Criterion) {
    let mut group = c.benchmark_group("route_compile");
    group.sample_size(20);
    for n in SIZES {
        let routes: Vec<RouteMatch> = (0..n).map(route).collect();
        group.bench_with_input(BenchmarkId::from_parameter(n), &routes, |b, routes| {
            b.iter(|| Router::new(black_box(routes)));
        });
    }
    group.finish();
}

fn main() {
    // What criterion_main! does, without the undocumented public function it generates.
    let mut criterion = Criterion::default().configure_from_args();
    lookup(&mut criterion);
    compile(&mut criterion);
    criterion.final_summary();
}
