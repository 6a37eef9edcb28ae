//! A fixed-bucket histogram of relaxed atomics: `observe` is a bucket search and two
//! `fetch_add`s, never a lock or an allocation (`prometheus-client`'s `Histogram` takes a
//! mutex on every observation, its `HistogramWithExemplars` a write lock). The count is the
//! sum of the buckets (one of them is the `+Inf` overflow), so `_count` and the `+Inf`
//! bucket always agree, however a scrape interleaves with observations.
//!
//! With [`Histogram::with_exemplars`], each bucket also keeps the latest traced
//! observation as an OpenMetrics exemplar, stored lock-free ([`crate::exemplar`]). The
//! exemplar slots (40 bytes a bucket) are allocated at the first traced observation, so a
//! gateway with tracing off spends no memory on them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use crate::exemplar::{Exemplar, Slot, TraceId};

/// A histogram of durations over fixed bucket bounds (seconds, ascending; `+Inf` implied).
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// One per bound, then the overflow (`+Inf`) bucket; each counts its own range.
    buckets: Box<[AtomicU64]>,
    sum_ns: AtomicU64,
    /// Whether exemplars are kept.
    keeps_exemplars: bool,
    /// One per bucket, from the first traced observation on.
    exemplars: OnceLock<Box<[Slot]>>,
}

impl Histogram {
    /// An empty histogram over `bounds`, keeping no exemplars.
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_ns: AtomicU64::new(0),
            keeps_exemplars: false,
            exemplars: OnceLock::new(),
        }
    }

    /// An empty histogram over `bounds` that keeps an exemplar per bucket.
    pub fn with_exemplars(bounds: &'static [f64]) -> Histogram {
        Histogram {
            keeps_exemplars: true,
            ..Histogram::new(bounds)
        }
    }

    /// Records one observation: two relaxed atomic adds.
    #[inline]
    pub fn observe(&self, elapsed: Duration) {
        self.observe_traced(elapsed, None);
    }

    /// Records one observation of a traced request; with exemplars kept, it becomes its
    /// bucket's exemplar (unless another request is storing that bucket's exemplar at this
    /// instant: then it is skipped, never waited for).
    pub fn observe_traced(&self, elapsed: Duration, trace_id: Option<TraceId>) {
        let index = self.index(elapsed);
        self.buckets[index].fetch_add(1, Ordering::Relaxed);
        let ns = elapsed.as_nanos().min(u128::from(u64::MAX)) as u64;
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
        if let Some(id) = trace_id.filter(|_| self.keeps_exemplars) {
            let slots = self
                .exemplars
                .get_or_init(|| (0..self.buckets.len()).map(|_| Slot::default()).collect());
            slots[index].store(id, elapsed.as_secs_f64(), SystemTime::now());
        }
    }

    #[inline]
    fn index(&self, elapsed: Duration) -> usize {
        let secs = elapsed.as_secs_f64();
        self.bounds
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(self.bounds.len())
    }

    /// The bucket bounds (seconds), without `+Inf`.
    pub fn bounds(&self) -> &'static [f64] {
        self.bounds
    }

    /// Observations per bucket (non-cumulative), the `+Inf` overflow last.
    pub fn counts(&self) -> Vec<u64> {
        self.buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect()
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// The sum of the observations, in seconds.
    pub fn sum(&self) -> f64 {
        self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9
    }

    /// The exemplar of each bucket (`None` where there is none), the `+Inf` bucket last;
    /// empty before the first traced observation, or when exemplars are not kept.
    pub fn exemplars(&self) -> Vec<Option<Exemplar>> {
        self.exemplars
            .get()
            .map_or_else(Vec::new, |slots| slots.iter().map(Slot::load).collect())
    }
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let counts = self.counts();
        let count = counts.iter().sum();
        let buckets: Vec<(f64, u64)> = self
            .bounds
            .iter()
            .copied()
            // prometheus-client writes the bucket bounded by f64::MAX as `+Inf`.
            .chain([f64::MAX])
            .zip(counts)
            .collect();
        // prometheus-client's `Exemplar` cannot be built outside the crate: the exemplars
        // are handed to the exposition, which writes them after the bucket lines.
        crate::exposition::pending_exemplars(self.exemplars());
        encoder.encode_histogram::<NoLabelSet>(self.sum(), count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: [f64; 3] = [0.001, 0.01, 0.1];

    #[test]
    fn counts_per_bucket_and_overflow() {
        let h = Histogram::new(&BOUNDS);
        for ms in [0, 1, 2, 50, 100, 101, 5000] {
            h.observe(Duration::from_millis(ms));
        }
        assert_eq!(h.counts(), vec![2, 1, 2, 2]);
        assert_eq!(h.count(), 7);
        assert!((h.sum() - 5.254).abs() < 1e-9, "{}", h.sum());
        assert!(h.exemplars().is_empty());
    }

    #[test]
    fn traced_observations_become_their_buckets_exemplars() {
        let h = Histogram::with_exemplars(&BOUNDS);
        h.observe_traced(Duration::from_millis(6), None);
        assert!(
            h.exemplars().is_empty(),
            "no slots before a traced observation"
        );
        h.observe_traced(Duration::from_millis(5), Some(TraceId([7; 16])));
        h.observe_traced(Duration::from_millis(6), None);
        h.observe_traced(Duration::from_secs(3), Some(TraceId([9; 16])));
        let exemplars = h.exemplars();
        assert_eq!(exemplars.len(), 4);
        assert_eq!(exemplars[1].unwrap().trace_id, TraceId([7; 16]));
        assert_eq!(exemplars[1].unwrap().value, 0.005);
        assert_eq!(exemplars[3].unwrap().trace_id, TraceId([9; 16]));
        assert!(exemplars[0].is_none() && exemplars[2].is_none());
        assert_eq!(h.count(), 4);
        let plain = Histogram::new(&BOUNDS);
        plain.observe_traced(Duration::from_millis(5), Some(TraceId([7; 16])));
        assert!(
            plain.exemplars().is_empty(),
            "a histogram without exemplars keeps none"
        );
    }
}
