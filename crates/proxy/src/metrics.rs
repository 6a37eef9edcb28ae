//! Lock-free request metrics and their Prometheus text rendering.
//!
//! Per route: `switchyard_requests_total{route,upstream,code}` in a small open-addressed
//! table of atomics, each holding a status and its count in one word, and
//! `switchyard_request_duration_seconds{route}` as a fixed-bucket histogram of atomics.
//! Recording is a few relaxed atomic operations, never a lock or an allocation. Route
//! metrics live as long as a route of that name exists, so a reload keeps the counts.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

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
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
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
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
            grpc: std::sync::OnceLock::new(),
        }
    }

    /// Records one finished request.
    pub fn record(&self, status: u16, elapsed: Duration) {
        self.count_status(status);
        let secs = elapsed.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|&b| secs <= b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    /// Records a gRPC call's final status (codes past 16 count as UNKNOWN, 2).
    pub fn record_grpc(&self, code: u16) {
        let counters = self
            .grpc
            .get_or_init(|| Box::new(std::array::from_fn(|_| AtomicU64::new(0))));
        let code = if code > 16 { 2 } else { usize::from(code) };
        counters[code].fetch_add(1, Ordering::Relaxed);
    }

    /// Appends this route's `switchyard_grpc_responses_total` lines (none before its first
    /// gRPC call).
    pub fn render_grpc(&self, out: &mut String) {
        let Some(counters) = self.grpc.get() else {
            return;
        };
        for (code, counter) in counters.iter().enumerate() {
            let n = counter.load(Ordering::Relaxed);
            if n > 0 {
                let _ = writeln!(
                    out,
                    "switchyard_grpc_responses_total{{route=\"{}\",code=\"{code}\"}} {n}",
                    escape(&self.route)
                );
            }
        }
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
        RouteSample {
            requests: self.count.load(Ordering::Relaxed),
            server_errors,
            buckets: std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed)),
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

    /// Appends this route's series to a Prometheus text exposition.
    pub fn render(&self, out: &mut String) {
        let route = escape(&self.route);
        let upstream = escape(&self.upstream);
        for slot in &self.codes {
            let slot = slot.load(Ordering::Relaxed);
            if slot != 0 {
                let (code, n) = (slot_code(slot), slot & COUNT_MASK);
                let _ = writeln!(
                    out,
                    "switchyard_requests_total{{route=\"{route}\",upstream=\"{upstream}\",code=\"{code}\"}} {n}"
                );
            }
        }
        let other = self.other_codes.load(Ordering::Relaxed);
        if other != 0 {
            let _ = writeln!(
                out,
                "switchyard_requests_total{{route=\"{route}\",upstream=\"{upstream}\",code=\"other\"}} {other}"
            );
        }
    }

    /// Appends this route's histogram to a Prometheus text exposition.
    pub fn render_histogram(&self, out: &mut String) {
        let route = escape(&self.route);
        let mut cumulative = 0;
        for (bound, bucket) in BUCKETS.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "switchyard_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {cumulative}"
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(
            out,
            "switchyard_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "switchyard_request_duration_seconds_sum{{route=\"{route}\"}} {sum}"
        );
        let _ = writeln!(
            out,
            "switchyard_request_duration_seconds_count{{route=\"{route}\"}} {count}"
        );
    }
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

/// Escapes a Prometheus label value.
pub fn escape(value: &str) -> std::borrow::Cow<'_, str> {
    if value.contains(['\\', '"', '\n']) {
        value
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
            .into()
    } else {
        value.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_codes_and_renders() {
        let m = RouteMetrics::new("orders", "orders-up");
        for _ in 0..3 {
            m.record(200, Duration::from_millis(2));
        }
        m.record(503, Duration::from_millis(20));
        assert_eq!(m.requests_with(200), 3);
        assert_eq!(m.requests_with(503), 1);
        let mut out = String::new();
        m.render(&mut out);
        m.render_histogram(&mut out);
        assert!(
            out.contains(
                "switchyard_requests_total{route=\"orders\",upstream=\"orders-up\",code=\"200\"} 3"
            ),
            "{out}"
        );
        assert!(
            out.contains(
                "switchyard_request_duration_seconds_bucket{route=\"orders\",le=\"0.0025\"} 3"
            ),
            "{out}"
        );
        assert!(
            out.contains("switchyard_request_duration_seconds_count{route=\"orders\"} 4"),
            "{out}"
        );
    }

    #[test]
    fn more_codes_than_slots_go_to_other() {
        let m = RouteMetrics::new("r", "u");
        for code in 200..230 {
            m.record(code, Duration::ZERO);
        }
        let mut out = String::new();
        m.render(&mut out);
        assert_eq!(out.lines().count(), CODE_SLOTS + 1, "{out}");
        assert!(out.contains("code=\"other\"} 14"));
    }

    #[test]
    fn counts_from_many_threads_add_up_per_status() {
        let m = RouteMetrics::new("r", "u");
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
        let mut out = String::new();
        m.render(&mut out);
        assert!(out.contains("code=\"200\"} 20000"), "{out}");
        assert!(out.contains("code=\"503\"} 5000"), "{out}");
        assert!(out.contains("code=\"other\"} 2"), "{out}");
    }

    #[test]
    fn escapes_label_values() {
        assert_eq!(escape("a\"b\\c"), "a\\\"b\\\\c");
    }
}
