//! `switchyard_upstream_apply_seconds`: how long an endpoint update takes to reach the
//! request path, from the update reaching its upstream's actor to the new snapshot being
//! published. One process-wide lock-free histogram (`switchyard_metrics::Histogram`, no
//! labels, so it stays one series however many upstreams there are).

use std::sync::LazyLock;
use std::time::Duration;

use switchyard_metrics::prometheus_client::encoding::DescriptorEncoder;
use switchyard_metrics::{family, Histogram};

/// Bucket upper bounds, in seconds (plus `+Inf`).
pub const APPLY_BUCKETS: [f64; 11] = [
    0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0,
];

static APPLY: LazyLock<Histogram> = LazyLock::new(|| Histogram::new(&APPLY_BUCKETS));

/// Records one applied update.
pub(crate) fn observe_apply(elapsed: Duration) {
    APPLY.observe(elapsed);
}

/// Updates applied so far (the histogram's `_count`).
pub fn applied_updates() -> u64 {
    APPLY.count()
}

/// Writes the `switchyard_upstream_apply_seconds` family to `/metrics`.
pub fn encode_apply_metrics(encoder: &mut DescriptorEncoder) -> std::fmt::Result {
    family::single_histogram(
        encoder,
        "switchyard_upstream_apply_seconds",
        "Time from an endpoint update reaching its upstream to the new snapshot being published.",
        &APPLY,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_metrics::prometheus_client::collector::Collector;
    use switchyard_metrics::prometheus_client::registry::Registry;

    #[derive(Debug)]
    struct Apply;

    impl Collector for Apply {
        fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
            encode_apply_metrics(&mut encoder)
        }
    }

    #[test]
    fn renders_a_cumulative_histogram() {
        observe_apply(Duration::from_micros(30));
        observe_apply(Duration::from_millis(2));
        observe_apply(Duration::from_secs(5));
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Apply));
        let out = switchyard_metrics::render(&registry, switchyard_metrics::Format::Prometheus);
        assert!(out.contains("# TYPE switchyard_upstream_apply_seconds histogram\n"));
        // Other tests of the crate may record too: check the shape and the lower bounds.
        let value = |series: &str| -> u64 {
            let line = out
                .lines()
                .find(|l| l.starts_with(series))
                .unwrap_or_else(|| panic!("{series} in {out}"));
            line.rsplit(' ').next().unwrap().parse().unwrap()
        };
        let bound = |b: f64| {
            let line = out
                .lines()
                .filter(|l| l.starts_with("switchyard_upstream_apply_seconds_bucket{le=\""))
                .find(|l| {
                    let le = &l["switchyard_upstream_apply_seconds_bucket{le=\"".len()..];
                    le.split('"').next().and_then(|v| v.parse::<f64>().ok()) == Some(b)
                })
                .unwrap_or_else(|| panic!("le {b} in {out}"));
            line.rsplit(' ').next().unwrap().parse::<u64>().unwrap()
        };
        let b50 = bound(0.00005);
        let b5ms = bound(0.005);
        let inf = value("switchyard_upstream_apply_seconds_bucket{le=\"+Inf\"}");
        assert!(b50 >= 1 && b5ms > b50 && inf > b5ms, "{out}");
        assert_eq!(inf, value("switchyard_upstream_apply_seconds_count"));
        bound(0.00001);
        bound(1.0);
    }
}
