//! The admin's recent history: once a second, a sample of every route's counters, every
//! upstream's healthy endpoints and serving tier, and every registry's state, kept for 15
//! minutes in an in-process ring buffer; and a timeline of events derived from consecutive
//! samples (a registry changed state, an upstream changed tier).
//!
//! It feeds `GET /api/routes?window=60s` (requests per second, p50/p90/p99 and error ratio
//! over the window, computed here so that `switchyard status` and the dashboard do not each
//! re-derive them from Prometheus text) and `GET /api/history` (the dashboard's charts).
//! Sampling reads the same atomics `/metrics` reads; nothing here is on the request path.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use switchyard_proxy::metrics::{RouteSample, BUCKETS};

pub use crate::api::{Event, RouteWindow};

/// Time between samples.
pub const INTERVAL: Duration = Duration::from_secs(1);
/// Samples kept: 15 minutes.
pub const KEPT: usize = 900;
/// Events kept.
pub const EVENTS_KEPT: usize = 200;

/// One sample.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    /// Seconds since the Unix epoch.
    pub at: f64,
    /// Every route's counters.
    pub routes: Vec<(Arc<str>, RouteSample)>,
    /// Every upstream: name, healthy endpoints, endpoints, serving tier (`source.endpoint`).
    pub upstreams: Vec<(String, usize, usize, Option<String>)>,
    /// Every registry: name, state and updates received since start.
    pub registries: Vec<(String, String, u64)>,
}

/// The ring buffer and the event timeline.
#[derive(Default)]
pub struct History {
    samples: Mutex<VecDeque<Sample>>,
    events: Mutex<VecDeque<Event>>,
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl History {
    /// Adds a sample, noting the events it shows against the previous one.
    pub fn push(&self, sample: Sample) {
        let mut samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(previous) = samples.back() {
            let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
            for event in changes(previous, &sample) {
                if events.len() == EVENTS_KEPT {
                    events.pop_front();
                }
                events.push_back(event);
            }
        }
        if samples.len() == KEPT {
            samples.pop_front();
        }
        samples.push_back(sample);
    }

    /// Every sample kept at or after `since` (seconds since the epoch).
    pub fn samples_since(&self, since: f64) -> Vec<Sample> {
        let samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        samples.iter().filter(|s| s.at >= since).cloned().collect()
    }

    /// The events kept, oldest first.
    pub fn events(&self) -> Vec<Event> {
        let events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        events.iter().cloned().collect()
    }

    /// Route `name`'s figures between the oldest sample within `window` of `now` and `live`
    /// (its counters now).
    pub fn route_window(
        &self,
        name: &str,
        live: &RouteSample,
        now: f64,
        window: Duration,
    ) -> RouteWindow {
        let samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let since = now - window.as_secs_f64();
        let earlier = samples.iter().find(|s| s.at >= since).and_then(|s| {
            s.routes
                .iter()
                .find(|(n, _)| &**n == name)
                .map(|(_, r)| (s.at, *r))
        });
        match earlier {
            Some((at, before)) => figures(&before, live, (now - at).max(0.0)),
            None => RouteWindow::default(),
        }
    }
}

/// The figures of what happened between two samples `seconds` apart.
pub fn figures(before: &RouteSample, after: &RouteSample, seconds: f64) -> RouteWindow {
    let requests = after.requests.saturating_sub(before.requests);
    let errors = after.server_errors.saturating_sub(before.server_errors);
    let buckets: Vec<u64> = after
        .buckets
        .iter()
        .zip(&before.buckets)
        .map(|(a, b)| a.saturating_sub(*b))
        .collect();
    let round = |v: f64| (v * 1000.0).round() / 1000.0;
    RouteWindow {
        window_seconds: round(seconds),
        requests_per_second: if seconds > 0.0 {
            round(requests as f64 / seconds)
        } else {
            0.0
        },
        p50_ms: quantile_ms(&buckets, requests, 0.50).map(round),
        p90_ms: quantile_ms(&buckets, requests, 0.90).map(round),
        p99_ms: quantile_ms(&buckets, requests, 0.99).map(round),
        error_ratio: (requests > 0).then(|| round(errors as f64 / requests as f64)),
    }
}

/// The `q` quantile (ms) of `total` requests counted in `buckets` (per [`BUCKETS`] bound,
/// not cumulative; requests slower than the last bound are in none), interpolated linearly
/// within the bucket as Prometheus' `histogram_quantile` does.
pub fn quantile_ms(buckets: &[u64], total: u64, q: f64) -> Option<f64> {
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut seen = 0.0;
    let mut lower = 0.0;
    for (bound, &n) in BUCKETS.iter().zip(buckets) {
        let n = n as f64;
        if n > 0.0 && seen + n >= rank {
            let share = ((rank - seen) / n).clamp(0.0, 1.0);
            return Some((lower + (bound - lower) * share) * 1000.0);
        }
        seen += n;
        lower = *bound;
    }
    Some(BUCKETS[BUCKETS.len() - 1] * 1000.0)
}

/// The events between two consecutive samples.
fn changes(previous: &Sample, next: &Sample) -> Vec<Event> {
    let mut events = Vec::new();
    for (name, state, _) in &next.registries {
        let before = previous
            .registries
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, s, _)| s);
        if before != Some(state) {
            events.push(Event {
                at: next.at,
                kind: "registry".into(),
                name: name.clone(),
                from: before.cloned(),
                to: Some(state.clone()),
            });
        }
    }
    for (name, _, _, tier) in &next.upstreams {
        let before = previous.upstreams.iter().find(|u| &u.0 == name);
        if let Some((_, _, _, before)) = before {
            if before != tier {
                events.push(Event {
                    at: next.at,
                    kind: "upstream".into(),
                    name: name.clone(),
                    from: before.clone(),
                    to: tier.clone(),
                });
            }
        }
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(requests: u64, server_errors: u64, buckets: &[(usize, u64)]) -> RouteSample {
        let mut sample = RouteSample {
            requests,
            server_errors,
            ..RouteSample::default()
        };
        for &(i, n) in buckets {
            sample.buckets[i] = n;
        }
        sample
    }

    #[test]
    fn quantiles_interpolate_within_buckets() {
        // 100 requests, all in (5 ms, 10 ms]: the median is half-way.
        let mut buckets = [0u64; BUCKETS.len()];
        buckets[4] = 100;
        assert_eq!(quantile_ms(&buckets, 100, 0.5), Some(7.5));
        let p99 = quantile_ms(&buckets, 100, 0.99).unwrap();
        assert!((p99 - 9.95).abs() < 1e-9, "{p99}");
        assert_eq!(quantile_ms(&buckets, 0, 0.5), None);
        // Slower than every bound: the last bound.
        assert_eq!(quantile_ms(&[0; BUCKETS.len()], 3, 0.5), Some(10_000.0));
    }

    #[test]
    fn window_figures() {
        let before = route(100, 1, &[(4, 100)]);
        let after = route(300, 21, &[(4, 150), (7, 150)]);
        let w = figures(&before, &after, 10.0);
        assert_eq!(w.requests_per_second, 20.0);
        assert_eq!(w.error_ratio, Some(0.1));
        // 50 in (5, 10] ms, 150 in (50, 100] ms: the median is in the second bucket.
        let p50 = w.p50_ms.unwrap();
        assert!((50.0..=100.0).contains(&p50), "{p50}");
        assert_eq!(figures(&after, &after, 10.0).error_ratio, None);
    }

    #[test]
    fn events_from_consecutive_samples() {
        let history = History::default();
        let at = |t: f64, state: &str, tier: Option<&str>| Sample {
            at: t,
            routes: vec![],
            upstreams: vec![("orders".into(), 1, 2, tier.map(String::from))],
            registries: vec![("consul".into(), state.into(), 0)],
        };
        history.push(at(1.0, "ok", Some("0.0")));
        history.push(at(2.0, "ok", Some("0.0")));
        history.push(at(3.0, "down", Some("1.0")));
        let events = history.events();
        assert_eq!(events.len(), 2, "{events:?}");
        assert_eq!(
            (
                events[0].kind.as_str(),
                events[0].from.as_deref(),
                events[0].to.as_deref()
            ),
            ("registry", Some("ok"), Some("down"))
        );
        assert_eq!(
            (
                events[1].kind.as_str(),
                events[1].from.as_deref(),
                events[1].to.as_deref()
            ),
            ("upstream", Some("0.0"), Some("1.0"))
        );
        for t in 0..(KEPT + 10) {
            history.push(at(10.0 + t as f64, "down", Some("1.0")));
        }
        assert_eq!(history.samples_since(0.0).len(), KEPT);
    }
}
