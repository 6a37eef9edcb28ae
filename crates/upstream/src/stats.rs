//! Per-endpoint counters shared by the request path and the cache: in-flight requests,
//! latency EWMA and the passive-health (outlier ejection) state.
//!
//! Everything is an atomic: the request path updates them without a lock. An endpoint
//! keeps the same `EndpointStats` across snapshots for as long as it stays in its upstream.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::OutlierSpec;

/// The instant ejection deadlines count from: the first use in the process. One for
/// everything, so that counters need not carry their own (32 bytes a piece with the
/// `Arc`, the largest part of them).
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Live counters of one endpoint of one upstream: 24 bytes, a 48-byte allocation with
/// its `Arc` (one per endpoint).
#[derive(Debug)]
pub struct EndpointStats {
    in_flight: AtomicU32,
    consecutive_failures: AtomicU32,
    /// Ejections in a row, counted up to 10 (what the ejection time grows with).
    ejections: AtomicU8,
    /// Milliseconds since [`epoch`] until which the endpoint is ejected; 0 = not ejected.
    ejected_until_ms: AtomicU64,
    /// Exponentially weighted moving average of response latency, in microseconds
    /// (samples above `u32::MAX` µs, 71 minutes, count as that).
    ewma_us: AtomicU32,
    /// Result of the active health check; true until a check says otherwise.
    active_healthy: AtomicBool,
}

impl EndpointStats {
    /// Fresh counters: healthy, idle, not ejected.
    pub fn new() -> Self {
        EndpointStats {
            in_flight: AtomicU32::new(0),
            consecutive_failures: AtomicU32::new(0),
            ejections: AtomicU8::new(0),
            ejected_until_ms: AtomicU64::new(0),
            ewma_us: AtomicU32::new(0),
            active_healthy: AtomicBool::new(true),
        }
    }

    /// Requests being served by this endpoint now.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Marks a request started; pair with [`EndpointStats::finish`].
    pub fn start(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// Marks a request finished and folds its latency into the EWMA (weight 1/8 for the
    /// new sample).
    pub fn finish(&self, latency: Duration) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        let sample = latency.as_micros().min(u128::from(u32::MAX)) as u32;
        let old = self.ewma_us.load(Ordering::Relaxed);
        let new = if old == 0 {
            sample
        } else {
            old - old / 8 + sample / 8
        };
        self.ewma_us.store(new, Ordering::Relaxed);
    }

    /// Latency EWMA in microseconds (0 before the first sample).
    pub fn ewma_us(&self) -> u64 {
        u64::from(self.ewma_us.load(Ordering::Relaxed))
    }

    /// Records a success: clears the failure streak.
    pub fn record_success(&self) {
        if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
            self.consecutive_failures.store(0, Ordering::Relaxed);
        }
    }

    /// Records a failure. Returns true when this failure ejected the endpoint, so the
    /// caller can tell the cache to rebuild the snapshot.
    pub fn record_failure(&self, outlier: &OutlierSpec) -> bool {
        let failures = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if outlier.consecutive_failures == 0 || failures < outlier.consecutive_failures {
            return false;
        }
        if self.is_ejected() {
            return false;
        }
        self.consecutive_failures.store(0, Ordering::Relaxed);
        let previous = self
            .ejections
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < 10).then_some(n + 1)
            })
            .unwrap_or_else(|n| n);
        let n = previous.min(9) + 1;
        let until = self.now_ms() + outlier.base_ejection.as_millis() as u64 * u64::from(n);
        self.ejected_until_ms.store(until.max(1), Ordering::Relaxed);
        true
    }

    /// Whether the endpoint is ejected now.
    pub fn is_ejected(&self) -> bool {
        let until = self.ejected_until_ms.load(Ordering::Relaxed);
        until != 0 && self.now_ms() < until
    }

    /// When the current ejection ends, if ejected.
    pub fn ejected_until(&self) -> Option<Instant> {
        let until = self.ejected_until_ms.load(Ordering::Relaxed);
        (until != 0 && self.now_ms() < until).then(|| epoch() + Duration::from_millis(until))
    }

    /// Ends an ejection that ran out; a success after it resets the ejection count.
    pub(crate) fn expire_ejection(&self) {
        if !self.is_ejected() {
            self.ejected_until_ms.store(0, Ordering::Relaxed);
        }
    }

    /// The active health check's verdict.
    pub fn active_healthy(&self) -> bool {
        self.active_healthy.load(Ordering::Relaxed)
    }

    /// Sets the active health check's verdict; returns true when it changed.
    pub fn set_active_healthy(&self, healthy: bool) -> bool {
        self.active_healthy.swap(healthy, Ordering::Relaxed) != healthy
    }

    fn now_ms(&self) -> u64 {
        epoch().elapsed().as_millis() as u64
    }
}

impl Default for EndpointStats {
    fn default() -> Self {
        EndpointStats::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ejects_after_consecutive_failures_only() {
        let stats = EndpointStats::new();
        let outlier = OutlierSpec {
            consecutive_failures: 3,
            ..OutlierSpec::default()
        };
        assert!(!stats.record_failure(&outlier));
        assert!(!stats.record_failure(&outlier));
        stats.record_success();
        assert!(!stats.record_failure(&outlier));
        assert!(!stats.record_failure(&outlier));
        assert!(stats.record_failure(&outlier));
        assert!(stats.is_ejected());
        assert!(stats.ejected_until().is_some());
    }

    #[test]
    fn ejection_expires() {
        let stats = EndpointStats::new();
        let outlier = OutlierSpec {
            consecutive_failures: 1,
            base_ejection: Duration::from_millis(20),
            count_5xx: false,
        };
        assert!(stats.record_failure(&outlier));
        std::thread::sleep(Duration::from_millis(30));
        assert!(!stats.is_ejected());
        stats.expire_ejection();
        assert!(stats.ejected_until().is_none());
    }

    #[test]
    fn layout_stays_small() {
        // One per endpoint: 24 bytes, 40 with the `Arc` counts (a 48-byte allocation); the
        // serving entry 40 (56 with its `Arc`).
        assert_eq!(std::mem::size_of::<EndpointStats>(), 24);
        assert_eq!(std::mem::size_of::<crate::ServingEndpoint>(), 40);
    }

    #[test]
    fn zero_threshold_disables_ejection() {
        let stats = EndpointStats::new();
        let outlier = OutlierSpec {
            consecutive_failures: 0,
            ..OutlierSpec::default()
        };
        for _ in 0..100 {
            assert!(!stats.record_failure(&outlier));
        }
        assert!(!stats.is_ejected());
    }
}
