//! `switchyard status`: a running gateway's upstreams, registries, routes (with request
//! rates, p99 latency and 5xx share) and fleet config source as terminal tables, read from
//! its admin API into the same types the gateway writes them with ([`crate::api`]), the
//! same tables as the dashboard. Also the start-up lines that say when each registry
//! finished its first sync.
//!
//! Rates, p99 and the 5xx share come from the gateway itself: `GET /api/routes?window=60s`
//! carries them per route, computed by the server from its history ([`STATUS_WINDOW`]).

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use switchyard_upstream::RegistryState;

use crate::api::{ConfigSourceStatus, Endpoint, Registry, RouteEntry, Upstream};
use crate::app::App;

/// The window of the figures `status` asks the gateway for.
pub const STATUS_WINDOW: &str = "60s";

/// What `status` shows, as the gateway answered it.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// `GET /api/upstreams`.
    pub upstreams: Vec<Upstream>,
    /// `GET /api/registries`.
    pub registries: Vec<Registry>,
    /// `GET /api/routes?window=60s`.
    pub routes: Vec<RouteEntry>,
    /// `GET /api/config_source` (`None`: a gateway without the endpoint).
    pub source: Option<ConfigSourceStatus>,
}

/// Fetches and prints; exit 1 when the gateway cannot be reached or answers something
/// that is not the admin API's.
pub fn run(admin: &str, token: Option<&str>) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        match fetch_snapshot(admin.trim_end_matches('/'), token).await {
            Ok(snapshot) => {
                print!("{}", render(&snapshot));
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("switchyard status: {error}");
                ExitCode::from(1)
            }
        }
    })
}

/// Reads the four documents `status` shows from the admin API at `base`.
pub async fn fetch_snapshot(base: &str, token: Option<&str>) -> Result<Snapshot, String> {
    let routes = format!("/api/routes?window={STATUS_WINDOW}");
    Ok(Snapshot {
        upstreams: get_typed(base, "/api/upstreams", token).await?,
        registries: get_typed(base, "/api/registries", token).await?,
        routes: get_typed(base, &routes, token).await?,
        // Older gateways have no config source endpoint: leave the line out.
        source: get_typed(base, "/api/config_source", token).await.ok(),
    })
}

/// `GET base+path`, deserialized into `T`; the error names the address.
pub async fn get_typed<T: DeserializeOwned>(
    base: &str,
    path: &str,
    token: Option<&str>,
) -> Result<T, String> {
    let url = format!("{base}{path}");
    let body = fetch(&url, token)
        .await
        .map_err(|error| format!("{url}: {error}"))?;
    serde_json::from_str(&body).map_err(|error| format!("{url}: {error}"))
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

// === tables ===

/// An optional value as a table cell, `-` when absent.
fn cell<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".into(), |v| v.to_string())
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
pub fn health_inputs(endpoint: &Endpoint) -> String {
    let health = &endpoint.health;
    format!(
        "{}/{}/{}",
        if health.registry { "ok" } else { "down" },
        if health.active { "ok" } else { "failing" },
        if health.ejected { "ejected" } else { "ok" },
    )
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

/// The tables `status` prints.
pub fn render(snapshot: &Snapshot) -> String {
    let mut rows = Vec::new();
    for u in &snapshot.upstreams {
        if u.endpoints.is_empty() {
            let mut row = vec![u.name.clone(), "(no endpoints)".into()];
            row.extend(std::iter::repeat_n("-".to_owned(), 6));
            rows.push(row);
        }
        for e in &u.endpoints {
            let mut tier = format!("{}.{}", e.priority, e.endpoint_priority);
            if e.serving {
                tier.push_str(" serving");
            }
            rows.push(vec![
                u.name.clone(),
                e.address.clone(),
                format!("{}/{}", e.source.registry, e.source.service),
                tier,
                if e.healthy { "healthy" } else { "unhealthy" }.into(),
                health_inputs(e),
                if e.stale { "stale" } else { "fresh" }.into(),
                e.in_flight.to_string(),
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
    let rows: Vec<Vec<String>> = snapshot
        .registries
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                r.kind.clone(),
                r.state.clone(),
                r.services.to_string(),
                r.endpoints.to_string(),
                cell(r.last_update.as_ref()),
                cell(r.last_error.as_ref()),
            ]
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
    let rows: Vec<Vec<String>> = snapshot
        .routes
        .iter()
        .map(|r| {
            let path = match (&r.path, &r.path_prefix) {
                (Some(path), _) => path.clone(),
                (None, prefix) => format!("{}*", cell(prefix.as_ref())),
            };
            let f = &r.figures;
            let requests = f.window_seconds > 0.0;
            vec![
                r.name.clone(),
                cell(r.host.as_ref()),
                path,
                r.upstream.clone(),
                if requests {
                    format!("{:.1}", f.requests_per_second)
                } else {
                    "-".into()
                },
                f.p99_ms.map_or("-".into(), |ms| human_seconds(ms / 1000.0)),
                f.error_ratio
                    .map_or("-".into(), |e| format!("{:.1}%", e * 100.0)),
            ]
        })
        .collect();
    out.push_str("\nRoutes\n");
    out.push_str(&columns(
        &["route", "host", "path", "upstream", "req/s", "p99", "5xx"],
        &rows,
    ));
    if let Some(source) = snapshot.source.as_ref().filter(|s| s.kind.is_some()) {
        out.push_str(&format!(
            "\nConfig source: {} {}{}: {}, revision {} ({} objects)",
            cell(source.kind.as_ref()),
            source.endpoints.clone().unwrap_or_default().join(","),
            cell(source.prefix.as_ref()),
            source.state,
            cell(source.applied_revision.flatten()),
            cell(source.objects),
        ));
        if let Some(error) = source.last_error.clone().flatten() {
            out.push_str(&format!("; last error: {error}"));
        }
        out.push('\n');
        if let Some(refused) = source.refused.clone().flatten() {
            for error in &refused.errors {
                out.push_str(&format!(
                    "  refused revision {}: {error}\n",
                    refused.revision
                ));
            }
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

    fn typed<T: DeserializeOwned>(value: serde_json::Value) -> T {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn renders_aligned_tables() {
        let endpoint = json!({"address": "127.0.0.1:1", "weight": 1, "effective_weight": 1,
            "priority": 0, "endpoint_priority": 0, "healthy": true, "serving": true, "stale": false,
            "source": {"registry": "files", "service": "echo"}, "zone": null, "local": null,
            "metadata": {}, "protocol": "http1", "health": {"registry": true, "active": true, "ejected": false},
            "in_flight": 2});
        let upstream = |name: &str, endpoints: serde_json::Value| {
            json!({"name": name,
            "balancer": "round_robin", "serving_tier": null, "panic": false, "endpoints": endpoints, "sources": []})
        };
        let route = |name: &str,
                     host: serde_json::Value,
                     path: (&str, &str),
                     window: f64,
                     rps: f64,
                     p99: serde_json::Value,
                     ratio: serde_json::Value| {
            let mut r = json!({"name": name, "host": host, "methods": [], "headers": [], "upstream": "echo",
                "strip_prefix": false, "timeout_ms": 30000, "retries": 1, "window_seconds": window,
                "requests_per_second": rps, "p50_ms": p99, "p90_ms": p99, "p99_ms": p99, "error_ratio": ratio});
            r[path.0] = json!(path.1);
            r
        };
        let snapshot = Snapshot {
            upstreams: typed(json!([
                upstream("echo", json!([endpoint])),
                upstream("empty", json!([]))
            ])),
            registries: typed(
                json!([{"name": "files", "type": "file", "state": "ok", "services": 1,
                "endpoints": 1, "last_update": null, "last_error": null, "updates": 1, "errors": 0}]),
            ),
            routes: typed(json!([
                route(
                    "echo",
                    json!(null),
                    ("path_prefix", "/"),
                    60.0,
                    12.5,
                    json!(12.3),
                    json!(0.1)
                ),
                route(
                    "idle",
                    json!("a.test"),
                    ("path", "/x"),
                    0.0,
                    0.0,
                    json!(null),
                    json!(null)
                ),
            ])),
            source: Some(typed(
                json!({"type": "etcd", "endpoints": ["http://e:2379"],
                "prefix": "/switchyard/config", "state": "refused", "revision": 9, "applied_revision": 7,
                "applied_at": null, "objects": 3, "last_error": null,
                "refused": {"revision": 9, "at": null, "errors": ["etcd:/switchyard/config/routes/x: upstream: unknown"]},
                "changes": {"applied": 1, "refused": 1}}),
            )),
        };
        let out = render(&snapshot);
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
        // The config source off: no line.
        let off = Snapshot {
            source: Some(typed(json!({"type": null, "state": "off"}))),
            ..snapshot
        };
        assert!(!render(&off).contains("Config source"));
    }

    #[test]
    fn human_durations() {
        assert_eq!(human_seconds(0.00085), "850 µs");
        assert_eq!(human_seconds(0.0123), "12.3 ms");
        assert_eq!(human_seconds(1.2), "1.20 s");
    }
}
