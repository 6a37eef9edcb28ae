//! Lock-free request metrics of the routes, and their families for `/metrics`.
//!
//! Per route: `switchyard_requests_total{route,upstream,code}` in a small open-addressed
//! table of atomics, each holding a status and its count in one word, and
//! `switchyard_request_duration_seconds{route}` as a [`Histogram`] of atomics that keeps
//! the latest traced request of each bucket as an OpenMetrics exemplar. Recording is a few
//! relaxed atomic operations, never a lock or an allocation; the route's metrics are found
//! once when the table is built (each route holds its own), never looked up per request.
//! Route metrics live as long as a route of that name exists, so a reload keeps the counts.
//! [`encode_families`] writes them through `prometheus-client` (crates/metrics).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use switchyard_metrics::family;
use switchyard_metrics::prometheus_client::encoding::DescriptorEncoder;
use switchyard_metrics::{Escaped, Histogram, TraceId};

/// Histogram bucket upper bounds, in seconds.
pub const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

const CODE_SLOTS: usize = 16;

/// A code slot holds the status in its top bits and the count below: 8 bytes a slot
/// instead of 16 for a separate `(AtomicU16, AtomicU64)` pair (10,000 routes: 1.3 MiB).
const COUNT_BITS: u32 = 54;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;

/// The status a slot holds (0: free).
fn slot_code(slot: u64) -> u16 {
    (slot >> COUNT_BITS) as u16
}

/// Counters of one route.
#[derive(Debug)]
pub struct RouteMetrics {
    /// The route's name (the `route` label); empty for requests that matched no route.
    pub route: Arc<str>,
    /// The route's upstream (the `upstream` label).
    pub upstream: Arc<str>,
    /// `status << COUNT_BITS | count`; 0 is a free slot. A status is below 1024.
    codes: [AtomicU64; CODE_SLOTS],
    /// Requests whose status did not fit the table (more than 16 distinct codes).
    other_codes: AtomicU64,
    /// `switchyard_request_duration_seconds`, with exemplars.
    duration: Histogram,
    /// `switchyard_grpc_responses_total{route,code}`: one counter per gRPC status (0–16),
    /// allocated at the route's first gRPC call (8 bytes a route until then).
    grpc: std::sync::OnceLock<Box<[AtomicU64; 17]>>,
}

impl RouteMetrics {
    /// Fresh counters for a route.
    pub fn new(route: impl Into<Arc<str>>, upstream: impl Into<Arc<str>>) -> Self {
        RouteMetrics {
            route: route.into(),
            upstream: upstream.into(),
            codes: std::array::from_fn(|_| AtomicU64::new(0)),
            other_codes: AtomicU64::new(0),
            duration: Histogram::with_exemplars(&BUCKETS),
            grpc: std::sync::OnceLock::new(),
        }
    }

    /// Records one finished request.
    pub fn record(&self, status: u16, elapsed: Duration) {
        self.count_status(status);
        self.duration.observe(elapsed);
    }

    /// Records one finished request that was traced and sampled: its trace id becomes the
    /// exemplar of its duration bucket (lock-free; see `switchyard_metrics::exemplar`).
    pub fn record_traced(&self, status: u16, elapsed: Duration, trace_id: Option<TraceId>) {
        self.count_status(status);
        self.duration.observe_traced(elapsed, trace_id);
    }

    /// Records a gRPC call's final status (codes past 16 count as UNKNOWN, 2).
    pub fn record_grpc(&self, code: u16) {
        let counters = self
            .grpc
            .get_or_init(|| Box::new(std::array::from_fn(|_| AtomicU64::new(0))));
        let code = if code > 16 { 2 } else { usize::from(code) };
        counters[code].fetch_add(1, Ordering::Relaxed);
    }

    /// This route's `switchyard_grpc_responses_total` series (none before its first gRPC
    /// call), as (code, count).
    fn grpc_series(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        self.grpc
            .get()
            .into_iter()
            .flat_map(|counters| {
                counters
                    .iter()
                    .map(|c| c.load(Ordering::Relaxed))
                    .enumerate()
            })
            .filter(|&(_, n)| n > 0)
    }

    fn count_status(&self, status: u16) {
        if status == 0 || status >= 1024 {
            // Not an HTTP status (hyper only sends 100–999): counted as "other".
            self.other_codes.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let start = usize::from(status) % CODE_SLOTS;
        for probe in 0..CODE_SLOTS {
            let slot = &self.codes[(start + probe) % CODE_SLOTS];
            let current = slot.load(Ordering::Relaxed);
            if slot_code(current) == status {
                // The count stays below 2^54: adding never touches the status bits.
                slot.fetch_add(1, Ordering::Relaxed);
                return;
            }
            if current == 0 {
                let claimed = (u64::from(status) << COUNT_BITS) | 1;
                match slot.compare_exchange(0, claimed, Ordering::Relaxed, Ordering::Relaxed) {
                    Ok(_) => return,
                    Err(actual) if slot_code(actual) == status => {
                        slot.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    Err(_) => continue,
                }
            }
        }
        self.other_codes.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters as they stand: requests, 5xx answers, and the duration histogram's
    /// (non-cumulative) bucket counts, for the admin's history (read off the request path).
    pub fn sample(&self) -> RouteSample {
        let server_errors = self
            .codes
            .iter()
            .map(|slot| slot.load(Ordering::Relaxed))
            .filter(|&slot| (500..600).contains(&slot_code(slot)))
            .map(|slot| slot & COUNT_MASK)
            .sum();
        let counts = self.duration.counts();
        RouteSample {
            requests: counts.iter().sum(),
            server_errors,
            buckets: std::array::from_fn(|i| counts[i]),
        }
    }

    /// Requests counted so far with `status`.
    pub fn requests_with(&self, status: u16) -> u64 {
        self.codes
            .iter()
            .map(|slot| slot.load(Ordering::Relaxed))
            .filter(|&slot| slot_code(slot) == status)
            .map(|slot| slot & COUNT_MASK)
            .sum()
    }

    /// This route's `switchyard_requests_total` series, as (code, count); codes past the
    /// table's 16 slots count as `other`.
    fn code_series(&self) -> impl Iterator<Item = (Code, u64)> + '_ {
        let other = self.other_codes.load(Ordering::Relaxed);
        self.codes
            .iter()
            .map(|slot| slot.load(Ordering::Relaxed))
            .filter(|&slot| slot != 0)
            .map(|slot| (Code::Status(slot_code(slot)), slot & COUNT_MASK))
            .chain((other != 0).then_some((Code::Other, other)))
    }
}

/// The `code` label of `switchyard_requests_total`.
#[derive(Clone, Copy, Debug)]
enum Code {
    Status(u16),
    Other,
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Code::Status(code) => write!(f, "{code}"),
            Code::Other => f.write_str("other"),
        }
    }
}

/// Writes the route families (`switchyard_requests_total`,
/// `switchyard_request_duration_seconds`, `switchyard_grpc_responses_total`) of `routes`;
/// `no_route` counts requests that matched none (in the first and last family only).
pub fn encode_families<'a>(
    encoder: &mut DescriptorEncoder,
    no_route: &'a RouteMetrics,
    routes: impl Iterator<Item = &'a RouteMetrics> + Clone,
) -> std::fmt::Result {
    let all = std::iter::once(no_route).chain(routes.clone());
    let requests: Vec<_> = all
        .clone()
        .flat_map(|m| {
            m.code_series()
                .map(move |(code, n)| (m, code.to_string(), n))
        })
        .collect();
    family::counter(
        encoder,
        "switchyard_requests_total",
        "Requests answered, by route, upstream and status.",
        requests.iter().map(|(m, code, n)| {
            (
                [
                    ("route", Escaped(&m.route)),
                    ("upstream", Escaped(&m.upstream)),
                    ("code", Escaped(code)),
                ],
                *n,
            )
        }),
    )?;
    family::histogram(
        encoder,
        "switchyard_request_duration_seconds",
        "Time to the response headers, by route.",
        routes.map(|m| ([("route", Escaped(&m.route))], &m.duration)),
    )?;
    let grpc: Vec<_> = all
        .flat_map(|m| {
            m.grpc_series()
                .map(move |(code, n)| (m, code.to_string(), n))
        })
        .collect();
    family::counter(
        encoder,
        "switchyard_grpc_responses_total",
        "gRPC calls answered, by route and final grpc-status.",
        grpc.iter()
            .map(|(m, code, n)| ([("route", Escaped(&m.route)), ("code", Escaped(code))], *n)),
    )
}

/// A route's counters at one moment ([`RouteMetrics::sample`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouteSample {
    /// Requests answered.
    pub requests: u64,
    /// Of which with a 5xx status.
    pub server_errors: u64,
    /// Requests per [`BUCKETS`] bound (each counts its own range; slower than the last
    /// bound are not in any).
    pub buckets: [u64; BUCKETS.len()],
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_metrics::prometheus_client::collector::Collector;
    use switchyard_metrics::prometheus_client::registry::Registry;
    use switchyard_metrics::Format;

    /// The no-route metrics first, then the routes.
    #[derive(Debug)]
    struct Routes(Vec<Arc<RouteMetrics>>);

    impl Collector for Routes {
        fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
            encode_families(&mut encoder, &self.0[0], self.0[1..].iter().map(|m| &**m))
        }
    }

    fn exposition(metrics: &[&Arc<RouteMetrics>], format: Format) -> String {
        let mut registry = Registry::default();
        let routes = metrics.iter().map(|m| Arc::clone(m)).collect();
        registry.register_collector(Box::new(Routes(routes)));
        switchyard_metrics::render(&registry, format)
    }

    fn text(m: &Arc<RouteMetrics>) -> String {
        exposition(
            &[&Arc::new(RouteMetrics::new("", "")), m],
            Format::Prometheus,
        )
    }

    #[test]
    fn counts_codes_and_renders() {
        let m = Arc::new(RouteMetrics::new("orders", "orders-up"));
        for _ in 0..3 {
            m.record(200, Duration::from_millis(2));
        }
        m.record(503, Duration::from_millis(20));
        assert_eq!(m.requests_with(200), 3);
        assert_eq!(m.requests_with(503), 1);
        let out = text(&m);
        for line in [
            "# TYPE switchyard_requests_total counter\n",
            "switchyard_requests_total{route=\"orders\",upstream=\"orders-up\",code=\"200\"} 3\n",
            "# TYPE switchyard_request_duration_seconds histogram\n",
            "switchyard_request_duration_seconds_bucket{le=\"0.0025\",route=\"orders\"} 3\n",
            "switchyard_request_duration_seconds_bucket{le=\"+Inf\",route=\"orders\"} 4\n",
            "switchyard_request_duration_seconds_count{route=\"orders\"} 4\n",
            "# TYPE switchyard_grpc_responses_total counter\n",
        ] {
            assert!(out.contains(line), "{line} not in\n{out}");
        }
        assert_eq!(m.sample().requests, 4);
        assert_eq!(m.sample().server_errors, 1);
    }

    #[test]
    fn more_codes_than_slots_go_to_other() {
        let m = Arc::new(RouteMetrics::new("r", "u"));
        for code in 200..230 {
            m.record(code, Duration::ZERO);
        }
        let out = text(&m);
        let series = out
            .lines()
            .filter(|l| l.starts_with("switchyard_requests_total{"))
            .count();
        assert_eq!(series, CODE_SLOTS + 1, "{out}");
        assert!(out.contains("code=\"other\"} 14"));
    }

    #[test]
    fn counts_from_many_threads_add_up_per_status() {
        let m = Arc::new(RouteMetrics::new("r", "u"));
        std::thread::scope(|scope| {
            for t in 0..4u16 {
                let m = &m;
                scope.spawn(move || {
                    for i in 0..10_000u16 {
                        m.record(if i % 2 == 0 { 200 } else { 500 + t }, Duration::ZERO);
                    }
                });
            }
        });
        assert_eq!(m.requests_with(200), 20_000);
        for t in 0..4 {
            assert_eq!(m.requests_with(500 + t), 5_000);
        }
        m.record(0, Duration::ZERO);
        m.record(1024, Duration::ZERO);
        let out = text(&m);
        assert!(out.contains("code=\"200\"} 20000"), "{out}");
        assert!(out.contains("code=\"503\"} 5000"), "{out}");
        assert!(out.contains("code=\"other\"} 2"), "{out}");
    }

    #[test]
    fn escapes_label_values_and_counts_grpc() {
        let m = Arc::new(RouteMetrics::new("a\"b\\c", "u"));
        m.record(200, Duration::ZERO);
        m.record_grpc(5);
        m.record_grpc(99);
        let out = text(&m);
        assert!(
            out.contains(
                "switchyard_requests_total{route=\"a\\\"b\\\\c\",upstream=\"u\",code=\"200\"} 1\n"
            ),
            "{out}"
        );
        assert!(
            out.contains("switchyard_grpc_responses_total{route=\"a\\\"b\\\\c\",code=\"5\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains(",code=\"2\"} 1\n"),
            "past 16 is UNKNOWN: {out}"
        );
    }

    #[test]
    fn traced_requests_are_exemplars_in_openmetrics_only() {
        let m = Arc::new(RouteMetrics::new("orders", "u"));
        let id = TraceId(*b"\x4b\xf9\x2f\x35\x77\xb3\x4d\xa6\xa3\xce\x92\x9d\x0e\x0e\x47\x36");
        m.record_traced(200, Duration::from_millis(30), Some(id));
        m.record_traced(200, Duration::from_millis(31), None);
        let none = Arc::new(RouteMetrics::new("", ""));
        let open = exposition(&[&none, &m], Format::OpenMetrics);
        let bucket = open
            .lines()
            .find(|l| l.starts_with("switchyard_request_duration_seconds_bucket{le=\"0.05\""))
            .unwrap();
        assert!(
            bucket.contains("2 # {trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\"} 0.03 "),
            "{open}"
        );
        assert!(!text(&m).contains("trace_id"));
    }
}
