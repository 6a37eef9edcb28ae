//! Per-route policy counters (authentication results, rate-limit decisions and backend
//! failures, cache results) and their Prometheus rendering. Labels are the route name and
//! a fixed result word: bounded.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use switchyard_proxy::metrics::escape;

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

    /// Appends the counter families to a Prometheus exposition. Routes whose counters of
    /// a family are all zero are left out of it.
    pub fn render(&self, out: &mut String) {
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
        for (family, help, results) in families {
            let _ = writeln!(out, "# HELP {family} {help}\n# TYPE {family} counter");
            for (route, counters) in &routes {
                if results.iter().all(|(_, pick)| pick(counters).get() == 0) {
                    continue;
                }
                let route = escape(route);
                for (result, pick) in results {
                    let value = pick(counters).get();
                    if result.is_empty() {
                        let _ = writeln!(out, "{family}{{route=\"{route}\"}} {value}");
                    } else {
                        let _ = writeln!(
                            out,
                            "{family}{{route=\"{route}\",result=\"{result}\"}} {value}"
                        );
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_only_routes_with_counts() {
        let counters = Counters::default();
        counters.route("quiet");
        let busy = counters.route("busy");
        busy.limit_limited.inc();
        busy.limit_limited.inc();
        busy.limit_backend_errors.inc();
        let mut out = String::new();
        counters.render(&mut out);
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
