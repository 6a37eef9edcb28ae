//! `switchyard_upstream_apply_seconds`: how long an endpoint update takes to reach the
//! request path, from the update reaching its upstream's actor to the new snapshot being
//! published. One process-wide histogram of relaxed atomics (no labels, so it stays one
//! series however many upstreams there are).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Bucket upper bounds, in seconds (plus `+Inf`).
pub const APPLY_BUCKETS: [f64; 11] = [
    0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0,
];

/// The histogram's counters.
struct Histogram {
    buckets: [AtomicU64; APPLY_BUCKETS.len()],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

static APPLY: Histogram = Histogram {
    buckets: [const { AtomicU64::new(0) }; APPLY_BUCKETS.len()],
    count: AtomicU64::new(0),
    sum_ns: AtomicU64::new(0),
};

/// Records one applied update.
pub(crate) fn observe_apply(elapsed: Duration) {
    let secs = elapsed.as_secs_f64();
    if let Some(i) = APPLY_BUCKETS.iter().position(|&b| secs <= b) {
        APPLY.buckets[i].fetch_add(1, Ordering::Relaxed);
    }
    APPLY.count.fetch_add(1, Ordering::Relaxed);
    let ns = elapsed.as_nanos().min(u128::from(u64::MAX)) as u64;
    APPLY.sum_ns.fetch_add(ns, Ordering::Relaxed);
}

/// Updates applied so far (the histogram's `_count`).
pub fn applied_updates() -> u64 {
    APPLY.count.load(Ordering::Relaxed)
}

/// Appends `switchyard_upstream_apply_seconds` (HELP, TYPE, buckets, sum, count) to a
/// Prometheus text exposition.
pub fn render_apply_metrics(out: &mut String) {
    out.push_str(
        "# HELP switchyard_upstream_apply_seconds Time from an endpoint update reaching its upstream to the new snapshot being published.\n",
    );
    out.push_str("# TYPE switchyard_upstream_apply_seconds histogram\n");
    let mut cumulative = 0;
    for (bound, bucket) in APPLY_BUCKETS.iter().zip(&APPLY.buckets) {
        cumulative += bucket.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "switchyard_upstream_apply_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
        );
    }
    let count = APPLY.count.load(Ordering::Relaxed);
    let sum = APPLY.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
    let _ = writeln!(
        out,
        "switchyard_upstream_apply_seconds_bucket{{le=\"+Inf\"}} {count}"
    );
    let _ = writeln!(out, "switchyard_upstream_apply_seconds_sum {sum}");
    let _ = writeln!(out, "switchyard_upstream_apply_seconds_count {count}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_cumulative_histogram() {
        observe_apply(Duration::from_micros(30));
        observe_apply(Duration::from_millis(2));
        observe_apply(Duration::from_secs(5));
        let mut out = String::new();
        render_apply_metrics(&mut out);
        assert!(out.contains("# TYPE switchyard_upstream_apply_seconds histogram\n"));
        // Other tests of the crate may record too: check the shape and the lower bounds.
        let value = |series: &str| -> u64 {
            let line = out
                .lines()
                .find(|l| l.starts_with(series))
                .unwrap_or_else(|| panic!("{series} in {out}"));
            line.rsplit(' ').next().unwrap().parse().unwrap()
        };
        let b50 = value("switchyard_upstream_apply_seconds_bucket{le=\"0.00005\"}");
        let b5ms = value("switchyard_upstream_apply_seconds_bucket{le=\"0.005\"}");
        let inf = value("switchyard_upstream_apply_seconds_bucket{le=\"+Inf\"}");
        assert!(b50 >= 1 && b5ms > b50 && inf > b5ms, "{out}");
        assert_eq!(inf, value("switchyard_upstream_apply_seconds_count"));
        assert!(out.contains("switchyard_upstream_apply_seconds_bucket{le=\"0.00001\"}"));
        assert!(out.contains("switchyard_upstream_apply_seconds_bucket{le=\"1\"}"));
    }
}
