//! Per-route policy counters (authentication results, rate-limit decisions and backend
//! failures, cache results) and their families for `/metrics` (through
//! `prometheus-client`, crates/metrics). Labels are the route name and a fixed result
//! word: bounded. A route's counters are found when its filters are built, never per
//! request.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use switchyard_metrics::family;
use switchyard_metrics::prometheus_client::encoding::DescriptorEncoder;
use switchyard_metrics::Escaped;

/// A monotonically increasing counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// The value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The policy counters of one route (kept across reloads by route name).
#[derive(Debug, Default)]
pub struct RouteCounters {
    /// Clients refused by `ip_allow`/`ip_deny`.
    pub ip_denied: Counter,
    /// Requests that authenticated.
    pub authenticated: Counter,
    /// 401s.
    pub unauthorized: Counter,
    /// 403s for consumers outside `allow`.
    pub forbidden: Counter,
    /// Requests within the rate limit.
    pub limit_allowed: Counter,
    /// 429s.
    pub limit_limited: Counter,
    /// Requests let through because the limiter backend failed (`fail = "open"`).
    pub limit_failed_open: Counter,
    /// 503s because the limiter backend failed (`fail = "closed"`).
    pub limit_failed_closed: Counter,
    /// Failed calls to the limiter backend (errors and timeouts).
    pub limit_backend_errors: Counter,
    /// Answered from the cache.
    pub cache_hit: Counter,
    /// Sent upstream (not in the cache, or not cacheable).
    pub cache_miss: Counter,
    /// Served stale because the upstream failed.
    pub cache_stale: Counter,
    /// Revalidated with the upstream (304) and answered from the cache.
    pub cache_revalidated: Counter,
    /// Answered from the cache after waiting for another request's upstream response.
    pub cache_coalesced: Counter,
}

/// The counters of every route, by name.
#[derive(Debug, Default)]
pub struct Counters {
    routes: std::sync::Mutex<BTreeMap<String, Arc<RouteCounters>>>,
}

impl Counters {
    /// The counters of `route`, created on first use.
    pub fn route(&self, route: &str) -> Arc<RouteCounters> {
        self.routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(route.to_owned())
            .or_default()
            .clone()
    }

    /// Writes the counter families to `/metrics`. Routes whose counters of a family are
    /// all zero are left out of it.
    pub fn encode(&self, encoder: &mut DescriptorEncoder) -> std::fmt::Result {
        let routes: Vec<(String, Arc<RouteCounters>)> = self
            .routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        type Pick = fn(&RouteCounters) -> &Counter;
        type Family<'a> = (&'a str, &'a str, &'a [(&'a str, Pick)]);
        let families: [Family; 4] = [
            (
                "switchyard_auth_total",
                "Access decisions by route: ok, unauthorized (401), forbidden (403), ip_denied (403).",
                &[
                    ("ok", |c| &c.authenticated),
                    ("unauthorized", |c| &c.unauthorized),
                    ("forbidden", |c| &c.forbidden),
                    ("ip_denied", |c| &c.ip_denied),
                ],
            ),
            (
                "switchyard_rate_limit_total",
                "Rate-limit decisions by route: allowed, limited (429), failed_open and failed_closed (backend unreachable).",
                &[
                    ("allowed", |c| &c.limit_allowed),
                    ("limited", |c| &c.limit_limited),
                    ("failed_open", |c| &c.limit_failed_open),
                    ("failed_closed", |c| &c.limit_failed_closed),
                ],
            ),
            (
                "switchyard_rate_limit_backend_errors_total",
                "Failed calls to the shared rate-limit backend (Redis), by route.",
                &[("", |c| &c.limit_backend_errors)],
            ),
            (
                "switchyard_cache_total",
                "Response cache results by route: hit, miss, stale, revalidated, coalesced.",
                &[
                    ("hit", |c| &c.cache_hit),
                    ("miss", |c| &c.cache_miss),
                    ("stale", |c| &c.cache_stale),
                    ("revalidated", |c| &c.cache_revalidated),
                    ("coalesced", |c| &c.cache_coalesced),
                ],
            ),
        ];
        for (name, help, results) in families {
            let busy = routes
                .iter()
                .filter(|(_, c)| results.iter().any(|(_, pick)| pick(c).get() != 0));
            if results[0].0.is_empty() {
                family::counter(
                    encoder,
                    name,
                    help,
                    busy.map(|(route, c)| ([("route", Escaped(route))], results[0].1(c).get())),
                )?;
            } else {
                family::counter(
                    encoder,
                    name,
                    help,
                    busy.flat_map(|(route, c)| {
                        results.iter().map(move |(result, pick)| {
                            (
                                [("route", Escaped(route)), ("result", Escaped(result))],
                                pick(c).get(),
                            )
                        })
                    }),
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_only_routes_with_counts() {
        let counters = Arc::new(Counters::default());
        counters.route("quiet");
        let busy = counters.route("busy");
        busy.limit_limited.inc();
        busy.limit_limited.inc();
        busy.limit_backend_errors.inc();
        let out = switchyard_metrics::exposition::render_one(
            switchyard_metrics::Format::Prometheus,
            move |e| counters.encode(e),
        );
        assert!(
            out.contains("switchyard_rate_limit_total{route=\"busy\",result=\"limited\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("switchyard_rate_limit_total{route=\"busy\",result=\"allowed\"} 0\n"),
            "{out}"
        );
        assert!(
            out.contains("switchyard_rate_limit_backend_errors_total{route=\"busy\"} 1\n"),
            "{out}"
        );
        assert!(!out.contains("quiet"), "{out}");
        assert!(!out.contains("switchyard_auth_total{"), "{out}");
    }
}
