//! The admin API's documents, built from the running app as [`crate::api`] types.

use std::time::Duration;

use switchyard_proxy::access_log::rfc3339;
use switchyard_proxy::router::PathMatch;

use crate::api::{
    Endpoint, EndpointHealth, EndpointSource, HistoryDocument, HistoryPoint, Registry,
    RegistryPoint, RouteEntry, RoutePoint, Source, Tier, Upstream, UpstreamPoint,
};
use crate::app::App;

/// `GET /api/upstreams`: every upstream.
pub fn upstream_list(app: &App) -> Vec<Upstream> {
    let table = app.proxy.table();
    let zone = app.with_current(|c| c.config.server.zone.clone());
    table
        .cache()
        .iter()
        .map(|u| upstream_view(u, &table, zone.as_deref()))
        .collect()
}

/// `GET /api/upstreams/{name}`: one upstream, or `None` when no upstream has that name.
/// At scale (100,000 endpoints) the whole list is megabytes; this answers in proportion to
/// the one upstream asked about.
pub fn upstream_named(app: &App, name: &str) -> Option<Upstream> {
    let table = app.proxy.table();
    let zone = app.with_current(|c| c.config.server.zone.clone());
    table
        .cache()
        .get(name)
        .map(|u| upstream_view(u, &table, zone.as_deref()))
}

/// One upstream: its endpoints with their state, and its sources' sync status. `local`
/// says whether an endpoint is in the gateway's `[server] zone` (null without one).
fn upstream_view(
    upstream: &switchyard_upstream::Upstream,
    table: &switchyard_proxy::Table,
    zone: Option<&str>,
) -> Upstream {
    let snapshot = upstream.snapshot();
    let endpoints = snapshot
        .endpoints
        .iter()
        .map(|e| Endpoint {
            address: e.address().to_string(),
            weight: e.endpoint.weight,
            effective_weight: e.weight,
            priority: e.tier.source,
            endpoint_priority: e.tier.endpoint,
            healthy: e.healthy,
            serving: snapshot.is_serving(e),
            stale: e.stale,
            source: EndpointSource {
                registry: e.source.registry.clone(),
                service: e.source.service.clone(),
            },
            zone: e.endpoint.zone().map(str::to_owned),
            local: zone.map(|zone| switchyard_proxy::balance::zone_aware::is_local(e, zone)),
            metadata: e.endpoint.metadata().clone(),
            protocol: table
                .endpoint_protocol(upstream.name(), e.endpoint.metadata())
                .to_owned(),
            health: EndpointHealth {
                registry: e.endpoint.healthy,
                active: e.stats.active_healthy(),
                ejected: e.stats.is_ejected(),
            },
            in_flight: e.stats.in_flight(),
        })
        .collect();
    Upstream {
        name: upstream.name().to_owned(),
        balancer: upstream.balancer().to_owned(),
        serving_tier: snapshot.serving_tier.map(|t| Tier {
            priority: t.source,
            endpoint_priority: t.endpoint,
        }),
        panic: snapshot.panic,
        endpoints,
        sources: upstream
            .sources()
            .iter()
            .map(|s| Source {
                registry: s.registry.clone(),
                kind: s.registry_kind.to_owned(),
                service: s.service.clone(),
                synced: s.synced,
                restored: s.restored,
                guarded: s.guarded,
                stale: s.stale,
                endpoints: s.endpoints as u64,
                last_update: s.last_update.map(rfc3339),
                last_error: s.last_error.clone(),
            })
            .collect(),
    }
}

/// `GET /api/registries`.
pub fn registry_list(app: &App) -> Vec<Registry> {
    let table = app.proxy.table();
    app.with_current(|current| {
        current
            .registries
            .iter()
            .map(|(name, built)| {
                let status = table.cache().registry_status(name, built.kind);
                Registry {
                    name: name.clone(),
                    kind: built.kind.to_owned(),
                    state: status.state.as_str().to_owned(),
                    services: status.services as u64,
                    endpoints: status.endpoints as u64,
                    last_update: status.last_update.map(rfc3339),
                    last_error: status.last_error,
                    updates: built.metrics.updates(),
                    errors: built.metrics.errors(),
                }
            })
            .collect()
    })
}

/// `GET /api/routes?window=60s`: every route, with its requests per second, p50/p90/p99
/// (ms) and 5xx ratio over the window, computed from the history and the live counters.
pub fn routes_over(app: &App, window: Duration) -> Vec<RouteEntry> {
    let table = app.proxy.table();
    let now = crate::history::unix_now();
    table
        .route_metrics()
        .map(|(r, metrics)| {
            let (path, path_prefix) = match &r.matcher.path {
                PathMatch::Exact(p) => (Some(p.clone()), None),
                PathMatch::Prefix(p) => (None, Some(p.clone())),
            };
            RouteEntry {
                name: r.name.to_string(),
                host: r.matcher.host.clone(),
                path,
                path_prefix,
                methods: r
                    .matcher
                    .methods
                    .iter()
                    .map(|m| m.as_str().to_owned())
                    .collect(),
                headers: r
                    .matcher
                    .headers
                    .iter()
                    .map(|(n, _)| n.as_str().to_owned())
                    .collect(),
                upstream: r.upstream.to_string(),
                strip_prefix: r.strip_prefix,
                timeout_ms: r.timeout.as_millis() as u64,
                retries: r.retries,
                figures: app
                    .history
                    .route_window(&r.name, &metrics.sample(), now, window),
            }
        })
        .collect()
}

/// `GET /api/history?window=15m`: per sample (one a second) each route's requests per
/// second, p99 (ms) and 5xx ratio since the previous sample, each upstream's healthy
/// endpoints, each registry's state and updates; and the event timeline.
pub fn history_over(app: &App, window: Duration) -> HistoryDocument {
    let samples = app
        .history
        .samples_since(crate::history::unix_now() - window.as_secs_f64());
    let samples = samples
        .windows(2)
        .map(|pair| {
            let (before, after) = (&pair[0], &pair[1]);
            let seconds = after.at - before.at;
            let routes = after
                .routes
                .iter()
                .map(|(name, now)| {
                    let then = before
                        .routes
                        .iter()
                        .find(|(n, _)| n == name)
                        .map(|(_, s)| *s)
                        .unwrap_or_default();
                    let f = crate::history::figures(&then, now, seconds);
                    let point = RoutePoint {
                        rps: f.requests_per_second,
                        p99_ms: f.p99_ms,
                        error_ratio: f.error_ratio,
                    };
                    (name.to_string(), point)
                })
                .collect();
            let upstreams = after
                .upstreams
                .iter()
                .map(|(name, healthy, total, tier)| {
                    let point = UpstreamPoint {
                        healthy: *healthy as u64,
                        endpoints: *total as u64,
                        tier: tier.clone(),
                    };
                    (name.clone(), point)
                })
                .collect();
            let registries = after
                .registries
                .iter()
                .map(|(name, state, updates)| {
                    let then = before
                        .registries
                        .iter()
                        .find(|(n, _, _)| n == name)
                        .map_or(*updates, |r| r.2);
                    let point = RegistryPoint {
                        state: state.clone(),
                        updates: updates.saturating_sub(then),
                    };
                    (name.clone(), point)
                })
                .collect();
            HistoryPoint {
                at: after.at,
                routes,
                upstreams,
                registries,
            }
        })
        .collect();
    HistoryDocument {
        interval_seconds: crate::history::INTERVAL.as_secs(),
        samples,
        events: app.history.events(),
    }
}
