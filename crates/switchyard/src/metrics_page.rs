//! The admin listener's `/metrics` page: every metric family of the process (the proxy
//! table's, the policies', the upstream cache's, the registries', config reloads, the config
//! source's, telemetry's) rendered in the Prometheus text format (docs/metrics.md).

use std::fmt::Write;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::{header, Response};
use http_body_util::Full;
use switchyard_proxy::metrics::escape;
use switchyard_upstream::RegistryState;

use crate::app::App;

/// The `/metrics` answer: every family in the Prometheus text format.
pub fn response(app: &App, _request_headers: &http::HeaderMap) -> Response<Full<Bytes>> {
    let table = app.proxy.table();
    let mut out = String::with_capacity(16 * 1024);
    table.render_metrics(&mut out);
    crate::policy::render_metrics(app.hub(), &mut out);

    out.push_str("# HELP switchyard_upstream_endpoints Endpoints per upstream by state (stale overlaps the others).\n");
    out.push_str("# TYPE switchyard_upstream_endpoints gauge\n");
    for upstream in table.cache().iter() {
        let snapshot = upstream.snapshot();
        let healthy = snapshot.endpoints.iter().filter(|e| e.healthy).count();
        let unhealthy = snapshot.endpoints.len() - healthy;
        let stale = snapshot.endpoints.iter().filter(|e| e.stale).count();
        let name = escape(upstream.name());
        for (state, n) in [
            ("healthy", healthy),
            ("unhealthy", unhealthy),
            ("stale", stale),
            ("serving", snapshot.serving.len()),
        ] {
            let _ = writeln!(
                out,
                "switchyard_upstream_endpoints{{upstream=\"{name}\",state=\"{state}\"}} {n}"
            );
        }
    }
    switchyard_upstream::render_apply_metrics(&mut out);

    let registries = app.with_current(|c| {
        c.registries
            .iter()
            .map(|(name, b)| (name.clone(), b.kind, b.metrics.clone()))
            .collect::<Vec<_>>()
    });
    let families = [
        (
            "switchyard_registry_updates_total",
            "counter",
            "Updates received from each registry.",
        ),
        (
            "switchyard_registry_errors_total",
            "counter",
            "Errors from each registry (broken watches, malformed entries).",
        ),
        (
            "switchyard_registry_up",
            "gauge",
            "1 unless every watched service of the registry is failing.",
        ),
        (
            "switchyard_registry_last_update_timestamp_seconds",
            "gauge",
            "Unix time of the newest update from the registry.",
        ),
    ];
    for (family, kind, help) in families {
        let _ = writeln!(out, "# HELP {family} {help}\n# TYPE {family} {kind}");
        for (name, kind, metrics) in &registries {
            let status = table.cache().registry_status(name, kind);
            let value = match family {
                "switchyard_registry_updates_total" => metrics.updates() as f64,
                "switchyard_registry_errors_total" => metrics.errors() as f64,
                "switchyard_registry_up" => {
                    f64::from(u8::from(status.state != RegistryState::Down))
                }
                _ => status
                    .last_update
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0.0, |d| d.as_secs_f64()),
            };
            let _ = writeln!(out, "{family}{{registry=\"{}\"}} {value}", escape(name));
        }
    }
    let _ = writeln!(
        out,
        "# HELP switchyard_config_reloads_total Config reloads by result.\n# TYPE switchyard_config_reloads_total counter\n\
         switchyard_config_reloads_total{{result=\"ok\"}} {}\nswitchyard_config_reloads_total{{result=\"refused\"}} {}",
        app.reloads.load(Ordering::Relaxed),
        app.reload_failures.load(Ordering::Relaxed),
    );
    app.config_source.render_metrics(&mut out);
    crate::telemetry::render_metrics(&mut out);
    let _ = writeln!(
        out,
        "# HELP switchyard_uptime_seconds Seconds since the process started.\n# TYPE switchyard_uptime_seconds gauge\nswitchyard_uptime_seconds {}",
        app.started.elapsed().as_secs_f64()
    );
    let mut response = Response::new(Full::new(Bytes::from(out)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}
