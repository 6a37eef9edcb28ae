//! The admin API endpoints of the policies, independent of the HTTP server that serves
//! them: `GET /api/stats?window=5m` and `POST /api/cache/purge?route=&host=&path=&prefix=`.

use std::time::Duration;

use http::StatusCode;
use serde_json::{json, Value};

use crate::analytics::MAX_WINDOW;
use crate::cache::store::PurgeFilter;
use crate::Hub;

fn params(query: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// `GET /api/stats?window=D` (`D` a duration such as `30s`, `5m`, `1h`; default `5m`;
/// at most 1 h): per route and per consumer, requests, status classes, bytes and
/// p50/p95/p99 latency over the window.
pub fn stats(hub: &Hub, query: Option<&str>) -> (StatusCode, Value) {
    let mut window = Duration::from_secs(300);
    for (key, value) in params(query) {
        match key.as_str() {
            "window" => match humantime::parse_duration(&value) {
                Ok(d) if d >= Duration::from_secs(1) && d <= MAX_WINDOW => window = d,
                _ => {
                    return (
                        StatusCode::BAD_REQUEST,
                        json!({"error": format!("window {value:?}: expected a duration from 1s to 1h, such as 5m")}),
                    )
                }
            },
            other => {
                return (
                    StatusCode::BAD_REQUEST,
                    json!({"error": format!("unknown parameter {other:?} (known: window)")}),
                )
            }
        }
    }
    (StatusCode::OK, hub.stats(window))
}

/// `POST /api/cache/purge`: removes cached responses, all of them or those matching every
/// parameter given — `route` (a route name), `host`, `path` (exact path and query),
/// `prefix` (path prefix). Answers `{"purged": N}`.
pub fn purge(hub: &Hub, query: Option<&str>) -> (StatusCode, Value) {
    let mut filter = PurgeFilter::default();
    for (key, value) in params(query) {
        let slot = match key.as_str() {
            "route" => &mut filter.route,
            "host" => &mut filter.host,
            "path" => &mut filter.path,
            "prefix" => &mut filter.prefix,
            other => {
                return (
                    StatusCode::BAD_REQUEST,
                    json!({"error": format!("unknown parameter {other:?} (known: route, host, path, prefix)")}),
                )
            }
        };
        *slot = Some(value);
    }
    let purged = hub.purge(&filter);
    (StatusCode::OK, json!({"purged": purged}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_parameters_are_refused() {
        let hub = Hub::default();
        assert_eq!(stats(&hub, None).0, StatusCode::OK);
        assert_eq!(stats(&hub, Some("window=30s")).1["window_seconds"], 30);
        for query in ["window=2h", "window=soon", "windw=5m"] {
            assert_eq!(
                stats(&hub, Some(query)).0,
                StatusCode::BAD_REQUEST,
                "{query}"
            );
        }
        assert_eq!(
            purge(&hub, Some("route=x&prefix=/a")).1,
            json!({"purged": 0})
        );
        assert_eq!(purge(&hub, Some("paht=/a")).0, StatusCode::BAD_REQUEST);
    }
}
