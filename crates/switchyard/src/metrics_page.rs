//! The admin listener's `/metrics` page: every metric family of the process (the proxy
//! table's, the policies', the upstream cache's, the registries', config reloads, the config
//! source's, telemetry's) in one `prometheus-client` registry, rendered as OpenMetrics 1.0
//! (with exemplars) when the scraper's `Accept` asks for it, else as the Prometheus text
//! format 0.0.4 (docs/observability.md).
//!
//! The registry is built per scrape from the generation running at that moment: each
//! collector holds the `Arc`s it reads (the route table, the policy hub, the registries'
//! counters), so a reload between two scrapes shows in the second.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use bytes::Bytes;
use http::{header, Response};
use http_body_util::Full;
use switchyard_metrics::exposition::collector;
use switchyard_metrics::prometheus_client::registry::Registry;
use switchyard_metrics::{family, Escaped, Format};
use switchyard_upstream::RegistryState;

use crate::app::App;

/// The `/metrics` answer, in the format `request_headers`' `Accept` asks for.
pub fn response(app: &App, request_headers: &http::HeaderMap) -> Response<Full<Bytes>> {
    let accept = request_headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok());
    let format = Format::from_accept(accept);
    let body = switchyard_metrics::render(&registry(app), format);
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static(format.content_type()),
    );
    response
}

/// Every family of the process, in page order.
fn registry(app: &App) -> Registry {
    let mut registry = Registry::default();
    let table = app.proxy.table();
    {
        let table = table.clone();
        registry.register_collector(collector(move |e| table.encode_metrics(e)));
    }
    let hub = app.hub().clone();
    registry.register_collector(collector(move |e| crate::policy::encode_metrics(&hub, e)));
    {
        let table = table.clone();
        registry.register_collector(collector(move |e| {
            let mut series = Vec::new();
            for upstream in table.cache().iter() {
                let snapshot = upstream.snapshot();
                let healthy = snapshot.endpoints.iter().filter(|e| e.healthy).count();
                let unhealthy = snapshot.endpoints.len() - healthy;
                let stale = snapshot.endpoints.iter().filter(|e| e.stale).count();
                for (state, n) in [
                    ("healthy", healthy),
                    ("unhealthy", unhealthy),
                    ("stale", stale),
                    ("serving", snapshot.serving.len()),
                ] {
                    series.push((upstream.name().to_owned(), state, n as i64));
                }
            }
            family::gauge(
                e,
                "switchyard_upstream_endpoints",
                "Endpoints per upstream by state (stale overlaps the others).",
                series.iter().map(|(name, state, n)| {
                    ([("upstream", Escaped(name)), ("state", Escaped(state))], *n)
                }),
            )
        }));
    }
    registry.register_collector(collector(switchyard_upstream::encode_apply_metrics));
    let registries: Arc<Vec<_>> = Arc::new(app.with_current(|c| {
        c.registries
            .iter()
            .map(|(name, b)| (name.clone(), b.kind, b.metrics.clone()))
            .collect()
    }));
    registry.register_collector(collector(move |e| {
        fn label(name: &str) -> switchyard_metrics::labels::Labels<'_, 1> {
            [("registry", Escaped(name))]
        }
        family::counter(
            e,
            "switchyard_registry_updates_total",
            "Updates received from each registry.",
            registries
                .iter()
                .map(|(name, _, m)| (label(name), m.updates())),
        )?;
        family::counter(
            e,
            "switchyard_registry_errors_total",
            "Errors from each registry (broken watches, malformed entries).",
            registries
                .iter()
                .map(|(name, _, m)| (label(name), m.errors())),
        )?;
        let statuses: Vec<_> = registries
            .iter()
            .map(|(name, kind, _)| table.cache().registry_status(name, kind))
            .collect();
        family::gauge(
            e,
            "switchyard_registry_up",
            "1 unless every watched service of the registry is failing.",
            registries
                .iter()
                .zip(&statuses)
                .map(|((name, _, _), s)| (label(name), i64::from(s.state != RegistryState::Down))),
        )?;
        family::gauge(
            e,
            "switchyard_registry_last_update_timestamp_seconds",
            "Unix time of the newest update from the registry.",
            registries.iter().zip(&statuses).map(|((name, _, _), s)| {
                let at = s
                    .last_update
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map_or(0.0, |d| d.as_secs_f64());
                (label(name), at)
            }),
        )
    }));
    let reloads = [
        ("ok", app.reloads.load(Ordering::Relaxed)),
        ("refused", app.reload_failures.load(Ordering::Relaxed)),
    ];
    registry.register_collector(collector(move |e| {
        family::counter(
            e,
            "switchyard_config_reloads_total",
            "Config reloads by result.",
            reloads
                .iter()
                .map(|(result, n)| ([("result", Escaped(result))], *n)),
        )
    }));
    let config_source = app.config_source.clone();
    registry.register_collector(collector(move |e| config_source.encode_metrics(e)));
    registry.register_collector(collector(crate::telemetry::encode_metrics));
    let uptime = app.started.elapsed().as_secs_f64();
    registry.register_collector(collector(move |e| {
        family::single_gauge(
            e,
            "switchyard_uptime_seconds",
            "Seconds since the process started.",
            uptime,
        )
    }));
    registry
}
