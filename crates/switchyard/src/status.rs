//! `switchyard status`: a running gateway's upstreams, registries, routes (with request
//! rates and p99 latency) and fleet config source as terminal tables, read from its admin
//! API, the same tables as the dashboard. Also the start-up lines that say when each
//! registry finished its first sync.
//!
//! Rates, p99 and the 5xx share come from the gateway itself: `GET /api/routes?window=60s`
//! carries them per route, computed by the server from its history ([`STATUS_WINDOW`]). A
//! gateway too old to carry them gets the former arithmetic: two `/metrics` samples one
//! second apart, the difference of `switchyard_requests_total` per route, and the p99 of the
//! difference of the `switchyard_request_duration_seconds` histogram (linear within a
//! bucket, as Prometheus' `histogram_quantile` does).

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use switchyard_upstream::RegistryState;

use crate::app::App;

/// The time between the two `/metrics` samples that rates are computed from (gateways
/// without windowed figures in `/api/routes`).
pub const RATE_INTERVAL: Duration = Duration::from_secs(1);

/// The window of the figures `status` asks the gateway for.
pub const STATUS_WINDOW: &str = "60s";

/// The server's figures of each route in `/api/routes?window=`, read through the same
/// type the gateway writes them with ([`RouteEntry`](crate::openapi::RouteEntry)); `None`
/// for a gateway too old to carry them.
pub fn server_rates(routes: &Value) -> Option<BTreeMap<String, RouteRate>> {
    let entries: Vec<crate::openapi::RouteEntry> = serde_json::from_value(routes.clone()).ok()?;
    Some(
        entries
            .into_iter()
            .map(|entry| {
                let figures = entry.figures;
                let rate = RouteRate {
                    rate: figures.requests_per_second,
                    error_ratio: figures.error_ratio,
                    p99: figures.p99_ms.map(|ms| ms / 1000.0),
                };
                (entry.name, rate)
            })
            .collect(),
    )
}

/// Fetches and prints; exit 1 when the gateway cannot be reached.
pub fn run(admin: &str, token: Option<&str>) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let base = admin.trim_end_matches('/');
        let get = |path: &str| {
            let url = format!("{base}{path}");
            async move {
                fetch(&url, token)
                    .await
                    .map_err(|error| format!("switchyard status: {url}: {error}"))
            }
        };
        let routes_path = format!("/api/routes?window={STATUS_WINDOW}");
        let mut parts = Vec::new();
        for api in ["/api/upstreams", "/api/registries", routes_path.as_str()] {
            match get(api).await {
                Ok(body) => match serde_json::from_str::<Value>(&body) {
                    Ok(value) => parts.push(value),
                    Err(error) => {
                        eprintln!("switchyard status: {base}{api}: {error}");
                        return ExitCode::from(1);
                    }
                },
                Err(error) => {
                    eprintln!("{error}");
                    return ExitCode::from(1);
                }
            }
        }
        // Older gateways have no config source endpoint: leave the line out.
        let source = get("/api/config_source")
            .await
            .ok()
            .and_then(|body| serde_json::from_str::<Value>(&body).ok())
            .unwrap_or(Value::Null);
        let rates = match server_rates(&parts[2]) {
            Some(rates) => rates,
            None => {
                // An older gateway: two /metrics samples.
                let first = get("/metrics").await;
                let started = Instant::now();
                tokio::time::sleep(RATE_INTERVAL.saturating_sub(started.elapsed())).await;
                let second = get("/metrics").await;
                match (first, second) {
                    (Ok(a), Ok(b)) => route_rates(
                        &RouteSample::parse(&a),
                        &RouteSample::parse(&b),
                        RATE_INTERVAL.as_secs_f64(),
                    ),
                    _ => BTreeMap::new(),
                }
            }
        };
        print!(
            "{}",
            render(&parts[0], &parts[1], &parts[2], &rates, &source)
        );
        ExitCode::SUCCESS
    })
}

async fn fetch(url: &str, token: Option<&str>) -> Result<String, String> {
    let client: Client<_, Empty<bytes::Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut request = http::Request::get(url)
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    if let Some(token) = token {
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| "bad token".to_owned())?;
        request
            .headers_mut()
            .insert(http::header::AUTHORIZATION, value);
    }
    let response = client.request(request).await.map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    if !status.is_success() {
        return Err(format!("{status}: {}", String::from_utf8_lossy(&body)));
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

// === rates from /metrics ===

/// One route's counters in one `/metrics` sample.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RouteSample {
    /// Requests answered.
    pub requests: f64,
    /// Of which 5xx.
    pub errors: f64,
    /// Cumulative histogram buckets: (upper bound, count), `+Inf` last.
    pub buckets: Vec<(f64, f64)>,
}

impl RouteSample {
    /// The per-route counters of a Prometheus text page.
    pub fn parse(text: &str) -> BTreeMap<String, RouteSample> {
        let mut routes: BTreeMap<String, RouteSample> = BTreeMap::new();
        for line in text.lines() {
            let Some((name, labels, value)) = parse_line(line) else {
                continue;
            };
            let Some(route) = labels.get("route") else {
                continue;
            };
            let sample = routes.entry(route.clone()).or_default();
            match name {
                "switchyard_requests_total" => {
                    sample.requests += value;
                    if labels.get("code").is_some_and(|c| c.starts_with('5')) {
                        sample.errors += value;
                    }
                }
                "switchyard_request_duration_seconds_bucket" => {
                    let bound = match labels.get("le").map(String::as_str) {
                        Some("+Inf") => f64::INFINITY,
                        Some(le) => match le.parse() {
                            Ok(bound) => bound,
                            Err(_) => continue,
                        },
                        None => continue,
                    };
                    sample.buckets.push((bound, value));
                }
                _ => {}
            }
        }
        for sample in routes.values_mut() {
            sample.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
        routes
    }
}

/// `name{k="v",...} value` (labels optional); `None` for comments and other lines.
fn parse_line(line: &str) -> Option<(&str, BTreeMap<String, String>, f64)> {
    if line.starts_with('#') || line.trim().is_empty() {
        return None;
    }
    let (head, value) = line.rsplit_once(' ')?;
    let value: f64 = value.trim().parse().ok()?;
    let Some((name, rest)) = head.split_once('{') else {
        return Some((head, BTreeMap::new(), value));
    };
    let mut labels = BTreeMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
        let key = key.trim_start_matches(',').trim().to_owned();
        if key.is_empty() || key.starts_with('}') {
            break;
        }
        if chars.next() != Some('"') {
            return None;
        }
        let mut value = String::new();
        loop {
            match chars.next()? {
                '\\' => match chars.next()? {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break,
                c => value.push(c),
            }
        }
        labels.insert(key, value);
    }
    Some((name, labels, value))
}

/// A route's live figures between two samples.
#[derive(Clone, Debug, PartialEq)]
pub struct RouteRate {
    /// Requests per second.
    pub rate: f64,
    /// Share of 5xx answers (0–1), when there were requests.
    pub error_ratio: Option<f64>,
    /// 99th percentile latency in seconds, when there were requests.
    pub p99: Option<f64>,
}

/// Rates between two samples `seconds` apart.
pub fn route_rates(
    before: &BTreeMap<String, RouteSample>,
    after: &BTreeMap<String, RouteSample>,
    seconds: f64,
) -> BTreeMap<String, RouteRate> {
    after
        .iter()
        .map(|(route, now)| {
            let then = before.get(route).cloned().unwrap_or_default();
            let requests = (now.requests - then.requests).max(0.0);
            let errors = (now.errors - then.errors).max(0.0);
            let buckets: Vec<(f64, f64)> = now
                .buckets
                .iter()
                .map(|&(bound, count)| {
                    let old = then
                        .buckets
                        .iter()
                        .find(|b| b.0 == bound)
                        .map_or(0.0, |b| b.1);
                    (bound, (count - old).max(0.0))
                })
                .collect();
            let rate = RouteRate {
                rate: requests / seconds.max(f64::EPSILON),
                error_ratio: (requests > 0.0).then(|| errors / requests),
                p99: quantile(0.99, &buckets),
            };
            (route.clone(), rate)
        })
        .collect()
}

/// The `q` quantile of cumulative buckets, linear within the bucket it falls in (as
/// Prometheus' `histogram_quantile`); one in the `+Inf` bucket is the largest finite bound.
pub fn quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(bound, count) in buckets {
        if count >= rank {
            if bound.is_infinite() {
                return Some(lower.0);
            }
            let width = count - lower.1;
            let within = if width > 0.0 {
                (rank - lower.1) / width
            } else {
                1.0
            };
            return Some(lower.0 + (bound - lower.0) * within);
        }
        lower = (bound, count);
    }
    Some(lower.0)
}

// === tables ===

/// A JSON value as a table cell: a string without its quotes, `null` as `-`.
fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Lays rows out in aligned columns.
fn columns(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            out.push_str(&format!("{cell:<width$}  ", width = widths[i]));
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(head.iter().map(|h| h.to_uppercase()).collect());
    for row in rows {
        out.push_str(&line(row.clone()));
    }
    out
}

/// An endpoint's three health inputs: registry / active / passive.
pub fn health_inputs(endpoint: &Value) -> String {
    let health = &endpoint["health"];
    let registry = if health["registry"].as_bool() == Some(false) {
        "down"
    } else {
        "ok"
    };
    let active = if health["active"].as_bool() == Some(false) {
        "failing"
    } else {
        "ok"
    };
    let passive = if health["ejected"].as_bool() == Some(true) {
        "ejected"
    } else {
        "ok"
    };
    format!("{registry}/{active}/{passive}")
}

/// Formats a duration in seconds for humans: `850 µs`, `12.3 ms`, `1.20 s`.
pub fn human_seconds(seconds: f64) -> String {
    if seconds < 0.001 {
        format!("{:.0} µs", seconds * 1e6)
    } else if seconds < 1.0 {
        format!("{:.1} ms", seconds * 1e3)
    } else {
        format!("{seconds:.2} s")
    }
}

fn render(
    upstreams: &Value,
    registries: &Value,
    routes: &Value,
    rates: &BTreeMap<String, RouteRate>,
    source: &Value,
) -> String {
    let empty = Vec::new();
    let mut rows = Vec::new();
    for u in upstreams.as_array().unwrap_or(&empty) {
        let endpoints = u["endpoints"].as_array().unwrap_or(&empty);
        if endpoints.is_empty() {
            rows.push(vec![
                cell(&u["name"]),
                "(no endpoints)".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
            ]);
        }
        for e in endpoints {
            let mut tier = format!("{}.{}", cell(&e["priority"]), cell(&e["endpoint_priority"]));
            if e["serving"].as_bool() == Some(true) {
                tier.push_str(" serving");
            }
            rows.push(vec![
                cell(&u["name"]),
                cell(&e["address"]),
                format!(
                    "{}/{}",
                    cell(&e["source"]["registry"]),
                    cell(&e["source"]["service"])
                ),
                tier,
                if e["healthy"].as_bool() == Some(true) {
                    "healthy".into()
                } else {
                    "unhealthy".into()
                },
                health_inputs(e),
                if e["stale"].as_bool() == Some(true) {
                    "stale".into()
                } else {
                    "fresh".into()
                },
                cell(&e["in_flight"]),
            ]);
        }
    }
    let mut out = String::from("Upstreams\n");
    out.push_str(&columns(
        &[
            "upstream",
            "address",
            "source",
            "tier",
            "health",
            "registry/active/passive",
            "stale",
            "in flight",
        ],
        &rows,
    ));
    let rows: Vec<Vec<String>> = registries
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .map(|r| {
            [
                "name",
                "type",
                "state",
                "services",
                "endpoints",
                "last_update",
                "last_error",
            ]
            .iter()
            .map(|k| cell(&r[*k]))
            .collect()
        })
        .collect();
    out.push_str("\nRegistries\n");
    out.push_str(&columns(
        &[
            "registry",
            "type",
            "state",
            "services",
            "endpoints",
            "last update",
            "last error",
        ],
        &rows,
    ));
    let rows: Vec<Vec<String>> = routes
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .map(|r| {
            let path = if r["path"].is_string() {
                cell(&r["path"])
            } else {
                format!("{}*", cell(&r["path_prefix"]))
            };
            let name = cell(&r["name"]);
            let rate = rates.get(&name);
            vec![
                name,
                cell(&r["host"]),
                path,
                cell(&r["upstream"]),
                rate.map_or("-".into(), |r| format!("{:.1}", r.rate)),
                rate.and_then(|r| r.p99).map_or("-".into(), human_seconds),
                rate.and_then(|r| r.error_ratio)
                    .map_or("-".into(), |e| format!("{:.1}%", e * 100.0)),
            ]
        })
        .collect();
    out.push_str("\nRoutes\n");
    out.push_str(&columns(
        &["route", "host", "path", "upstream", "req/s", "p99", "5xx"],
        &rows,
    ));
    if source["type"].is_string() {
        out.push_str(&format!(
            "\nConfig source: {} {}{}: {}, revision {} ({} objects)",
            cell(&source["type"]),
            source["endpoints"]
                .as_array()
                .map(|e| e.iter().map(cell).collect::<Vec<_>>().join(","))
                .unwrap_or_default(),
            cell(&source["prefix"]),
            cell(&source["state"]),
            cell(&source["applied_revision"]),
            cell(&source["objects"]),
        ));
        if let Some(error) = source["last_error"].as_str() {
            out.push_str(&format!("; last error: {error}"));
        }
        out.push('\n');
        for error in source["refused"]["errors"].as_array().unwrap_or(&empty) {
            out.push_str(&format!(
                "  refused revision {}: {}\n",
                cell(&source["refused"]["revision"]),
                cell(error)
            ));
        }
    }
    out
}

// === start-up lines ===

/// Prints one line per registry on stderr as it finishes its first sync
/// (`k8s: 12 services, 48 endpoints, synced in 0.3 s`), or when it fails or is still
/// syncing when `server.startup_grace` runs out; then releases the sync's garbage
/// ([`switchyard_heap::release_free_memory`]).
pub async fn report_startup_sync(app: Arc<App>) {
    let (registries, grace) = app.with_current(|c| {
        let registries: Vec<(String, &'static str)> = c
            .registries
            .iter()
            .map(|(name, built)| (name.clone(), built.kind))
            .collect();
        (registries, c.config.server.startup_grace)
    });
    let mut pending: BTreeSet<(String, &'static str)> = registries.into_iter().collect();
    while !pending.is_empty() {
        let table = app.proxy.table();
        let elapsed = app.started.elapsed().as_secs_f64();
        let over = app.started.elapsed() >= grace;
        pending.retain(|(name, kind)| {
            let status = table.cache().registry_status(name, kind);
            let counts = format!(
                "{} service{}, {} endpoint{}",
                status.services,
                if status.services == 1 { "" } else { "s" },
                status.endpoints,
                if status.endpoints == 1 { "" } else { "s" },
            );
            let error = status
                .last_error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default();
            match status.state {
                RegistryState::Ok => {
                    eprintln!("{name}: {counts}, synced in {elapsed:.2} s");
                    false
                }
                RegistryState::Degraded | RegistryState::Down => {
                    eprintln!(
                        "{name}: {counts}, {} after {elapsed:.1} s{error}",
                        status.state.as_str()
                    );
                    false
                }
                RegistryState::Syncing if over => {
                    eprintln!("{name}: {counts}, still syncing after {elapsed:.1} s (startup_grace ran out){error}");
                    false
                }
                RegistryState::Syncing => true,
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A first sync is a burst of parsing garbage (the etcd backend's initial range, the
    // Kubernetes list, the first snapshots): once the upstreams have applied it, give the
    // free pages back rather than carry them for the life of the process.
    tokio::time::sleep(Duration::from_secs(1)).await;
    switchyard_heap::release_free_memory();
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_aligned_tables() {
        let upstreams = json!([{"name": "echo", "endpoints": [{"address": "127.0.0.1:1", "source": {"registry": "files", "service": "echo"}, "priority": 0, "endpoint_priority": 0, "healthy": true, "stale": false, "serving": true, "in_flight": 2, "health": {"registry": true, "active": true, "ejected": false}}]},
            {"name": "empty", "endpoints": []}]);
        let registries = json!([{"name": "files", "type": "file", "state": "ok", "services": 1, "endpoints": 1, "last_update": null, "last_error": null}]);
        let routes = json!([{"name": "echo", "host": null, "path_prefix": "/", "upstream": "echo"},
            {"name": "idle", "host": "a.test", "path": "/x", "upstream": "echo"}]);
        let rates = BTreeMap::from([(
            "echo".to_owned(),
            RouteRate {
                rate: 12.5,
                error_ratio: Some(0.1),
                p99: Some(0.0123),
            },
        )]);
        let source = json!({"type": "etcd", "endpoints": ["http://e:2379"], "prefix": "/switchyard/config", "state": "refused",
            "applied_revision": 7, "objects": 3, "last_error": null,
            "refused": {"revision": 9, "errors": ["etcd:/switchyard/config/routes/x: upstream: unknown"]}});
        let out = render(&upstreams, &registries, &routes, &rates, &source);
        let want = [
            "UPSTREAM  ADDRESS         SOURCE      TIER         HEALTH   REGISTRY/ACTIVE/PASSIVE  STALE  IN FLIGHT",
            "echo      127.0.0.1:1     files/echo  0.0 serving  healthy  ok/ok/ok                 fresh  2",
            "empty     (no endpoints)  -",
            "files     file  ok",
            "ROUTE  HOST    PATH  UPSTREAM  REQ/S  P99      5XX",
            "echo   -       /*    echo      12.5   12.3 ms  10.0%",
            "idle   a.test  /x    echo      -      -        -",
            "Config source: etcd http://e:2379/switchyard/config: refused, revision 7 (3 objects)",
            "  refused revision 9: etcd:/switchyard/config/routes/x: upstream: unknown",
        ];
        for line in want {
            assert!(out.contains(line), "{line:?} not in\n{out}");
        }
    }

    #[test]
    fn rates_from_the_server() {
        let entry = |name: &str, rps: f64, ratio: Value, p99: Value| {
            serde_json::json!({"name": name, "host": null, "path_prefix": "/", "methods": [],
                "headers": [], "upstream": "u", "strip_prefix": false, "timeout_ms": 30000,
                "retries": 1, "window_seconds": 60.0, "requests_per_second": rps,
                "p50_ms": p99, "p90_ms": p99, "p99_ms": p99, "error_ratio": ratio})
        };
        let routes = Value::Array(vec![
            entry("a", 2.5, serde_json::json!(0.1), serde_json::json!(12.0)),
            entry("b", 0.0, Value::Null, Value::Null),
        ]);
        let rates = server_rates(&routes).unwrap();
        assert_eq!(rates["a"].rate, 2.5);
        assert_eq!(rates["a"].error_ratio, Some(0.1));
        assert_eq!(rates["a"].p99, Some(0.012));
        assert_eq!(rates["b"].p99, None);
        // An older gateway's routes: no figures, the caller samples /metrics.
        assert!(server_rates(&serde_json::json!([{"name": "a"}])).is_none());
    }

    #[test]
    fn rates_and_p99_from_metric_deltas() {
        let page = |ok: u32, bad: u32, fast: u32, slow: u32| {
            format!(
                "# HELP x\nswitchyard_requests_total{{route=\"a\",upstream=\"u\",code=\"200\"}} {ok}\n\
                 switchyard_requests_total{{route=\"a\",upstream=\"u\",code=\"503\"}} {bad}\n\
                 switchyard_request_duration_seconds_bucket{{route=\"a\",le=\"0.01\"}} {fast}\n\
                 switchyard_request_duration_seconds_bucket{{route=\"a\",le=\"0.1\"}} {}\n\
                 switchyard_request_duration_seconds_bucket{{route=\"a\",le=\"+Inf\"}} {}\n\
                 switchyard_request_duration_seconds_sum{{route=\"a\"}} 1.5\n\
                 switchyard_uptime_seconds 3\n",
                fast + slow,
                fast + slow
            )
        };
        let before = RouteSample::parse(&page(10, 0, 10, 0));
        assert_eq!(before["a"].requests, 10.0);
        let after = RouteSample::parse(&page(100, 10, 10, 100));
        let rates = route_rates(&before, &after, 2.0);
        let a = &rates["a"];
        assert_eq!(a.rate, 50.0);
        assert_eq!(a.error_ratio, Some(0.1));
        // All 100 new requests fall in (0.01, 0.1]: p99 is 99% of the way through it.
        let p99 = a.p99.unwrap();
        assert!((p99 - (0.01 + 0.09 * 0.99)).abs() < 1e-9, "{p99}");
        // Nothing new: no p99.
        assert_eq!(route_rates(&after, &after, 1.0)["a"].p99, None);
    }

    #[test]
    fn quantiles() {
        let check = |q: f64, buckets: &[(f64, f64)], want: Option<f64>| {
            assert_eq!(quantile(q, buckets), want, "{q} {buckets:?}");
        };
        check(
            0.5,
            &[(1.0, 0.0), (2.0, 10.0), (f64::INFINITY, 10.0)],
            Some(1.5),
        );
        check(0.99, &[(1.0, 0.0), (f64::INFINITY, 4.0)], Some(1.0));
        check(0.5, &[(1.0, 4.0), (f64::INFINITY, 4.0)], Some(0.5));
        check(0.5, &[(f64::INFINITY, 0.0)], None);
        check(0.5, &[], None);
    }

    #[test]
    fn metric_lines() {
        let (name, labels, value) = parse_line(r#"m{route="a \"b\"",le="+Inf"} 3"#).unwrap();
        assert_eq!((name, value), ("m", 3.0));
        assert_eq!(labels["route"], "a \"b\"");
        assert_eq!(labels["le"], "+Inf");
        assert_eq!(parse_line("plain 1.5").unwrap().2, 1.5);
        assert!(parse_line("# TYPE m counter").is_none());
    }
}
