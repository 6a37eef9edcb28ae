//! One handler per admin endpoint, each with the `#[utoipa::path]` the OpenAPI document
//! is generated from (`openapi.rs`).

use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use http::{HeaderMap, StatusCode};

use super::documents::{history_over, registry_list, routes_over, upstream_list, upstream_named};
use super::{body, checked, error, json, text, window, Shared};
use crate::api::{
    ConfigSourceStatus, ErrorBody, HistoryDocument, Purged, Readiness, Registry, ReloadOutcome,
    RouteEntry, Stats, Upstream,
};

#[utoipa::path(get, path = "/healthz", responses(
    (status = 200, description = "The process is up: `ok`", content_type = "text/plain", body = String)))]
pub async fn healthz() -> Response {
    text(StatusCode::OK, "ok\n")
}

#[utoipa::path(get, path = "/readyz", responses(
    (status = 200, description = "Every source finished its first sync: the text `ready`; or, once `server.startup_grace` ran out with some still syncing, JSON naming them", body = Readiness),
    (status = 503, description = "Sources still syncing", body = Readiness),
))]
pub async fn readyz(State(app): Shared) -> Response {
    let pending = app.proxy.table().cache().pending();
    let grace = app.with_current(|c| c.config.server.startup_grace);
    if pending.is_empty() {
        text(StatusCode::OK, "ready\n")
    } else if app.started.elapsed() >= grace {
        let ready = Readiness {
            status: "ready".into(),
            startup_grace_expired: Some(true),
            pending,
        };
        json(StatusCode::OK, &ready)
    } else {
        let starting = Readiness {
            status: "starting".into(),
            startup_grace_expired: None,
            pending,
        };
        json(StatusCode::SERVICE_UNAVAILABLE, &starting)
    }
}

#[utoipa::path(get, path = "/metrics", responses(
    (status = 200, description = "Prometheus text exposition (docs/metrics.md)", content_type = "text/plain", body = String)))]
pub async fn metrics(State(app): Shared, headers: HeaderMap) -> Response {
    body(crate::metrics_page::response(&app, &headers))
}

#[utoipa::path(get, path = "/", responses(
    (status = 200, description = "The dashboard page", content_type = "text/html", body = String),
    (status = 401, description = "A login form (with `admin.token`, no or a wrong token)", content_type = "text/html", body = String),
))]
pub async fn dashboard() -> Response {
    body(crate::dashboard::page())
}

#[utoipa::path(get, path = "/api/upstreams", responses(
    (status = 200, description = "Every upstream with its endpoints, their source, tier and health", body = Vec<Upstream>),
    (status = 401, description = "`admin.token` set and not given", body = ErrorBody),
))]
pub async fn upstreams(State(app): Shared) -> Response {
    json(StatusCode::OK, &upstream_list(&app))
}

#[utoipa::path(get, path = "/api/upstreams/{name}",
    params(("name" = String, Path, description = "The upstream")),
    responses(
        (status = 200, description = "One upstream", body = Upstream),
        (status = 404, description = "No such upstream", body = ErrorBody),
    ))]
pub async fn upstream(State(app): Shared, Path(name): Path<String>) -> Response {
    match upstream_named(&app, &name) {
        Some(upstream) => json(StatusCode::OK, &upstream),
        None => error(StatusCode::NOT_FOUND, "no such upstream"),
    }
}

#[utoipa::path(get, path = "/api/registries", responses(
    (status = 200, description = "Every registry: type, state, services, last update and error", body = Vec<Registry>)))]
pub async fn registries(State(app): Shared) -> Response {
    json(StatusCode::OK, &registry_list(&app))
}

#[utoipa::path(get, path = "/api/routes",
    params(("window" = Option<String>, Query, description = "Duration of the figures, 1s to 15m (default 60s)")),
    responses(
        (status = 200, description = "Every route, with its figures over the window", body = Vec<RouteEntry>),
        (status = 400, description = "A window that is not a duration", body = ErrorBody),
    ))]
pub async fn routes(State(app): Shared, RawQuery(query): RawQuery) -> Response {
    match window(query.as_deref()) {
        Ok(window) => json(StatusCode::OK, &routes_over(&app, window)),
        Err(message) => error(StatusCode::BAD_REQUEST, message),
    }
}

#[utoipa::path(get, path = "/api/history",
    params(("window" = Option<String>, Query, description = "How far back, 1s to 15m (default 60s)")),
    responses(
        (status = 200, description = "Per-second samples and the event timeline", body = HistoryDocument),
        (status = 400, description = "A window that is not a duration", body = ErrorBody),
    ))]
pub async fn history(State(app): Shared, RawQuery(query): RawQuery) -> Response {
    match window(query.as_deref()) {
        Ok(window) => json(StatusCode::OK, &history_over(&app, window)),
        Err(message) => error(StatusCode::BAD_REQUEST, message),
    }
}

#[utoipa::path(get, path = "/api/config_source", responses(
    (status = 200, description = "The fleet config source's state", body = ConfigSourceStatus)))]
pub async fn config_source(State(app): Shared) -> Response {
    json(StatusCode::OK, &app.config_source.to_status())
}

#[utoipa::path(get, path = "/api/stats",
    params(("window" = Option<String>, Query, description = "Usage window, 10s to 1h (default 5m)")),
    responses(
        (status = 200, description = "Usage per route and consumer (routes with analytics)", body = Stats),
        (status = 400, description = "A bad window or an unknown parameter", body = ErrorBody),
    ))]
pub async fn stats(State(app): Shared, RawQuery(query): RawQuery) -> Response {
    let (status, value) = crate::policy::stats(app.hub(), query.as_deref());
    checked::<Stats>(status, value)
}

#[utoipa::path(post, path = "/api/cache/purge",
    params(
        ("route" = Option<String>, Query, description = "Only this route's cache"),
        ("host" = Option<String>, Query, description = "Only this host"),
        ("path" = Option<String>, Query, description = "Only this exact path"),
        ("prefix" = Option<String>, Query, description = "Only paths under this prefix"),
    ),
    responses(
        (status = 200, description = "Cached responses purged", body = Purged),
        (status = 400, description = "An unknown parameter", body = ErrorBody),
    ))]
pub async fn cache_purge(State(app): Shared, RawQuery(query): RawQuery) -> Response {
    let (status, value) = crate::policy::purge(app.hub(), query.as_deref());
    checked::<Purged>(status, value)
}

#[utoipa::path(post, path = "/api/reload", responses(
    (status = 200, description = "Reloaded", body = ReloadOutcome),
    (status = 422, description = "Refused: the errors; the running config stays", body = ReloadOutcome),
))]
pub async fn reload(State(app): Shared) -> Response {
    match app.reload().await {
        Ok(()) => json(
            StatusCode::OK,
            &ReloadOutcome {
                status: "reloaded".into(),
                errors: None,
            },
        ),
        Err(issues) => json(
            StatusCode::UNPROCESSABLE_ENTITY,
            &ReloadOutcome {
                status: "refused".into(),
                errors: Some(issues.iter().map(ToString::to_string).collect()),
            },
        ),
    }
}

#[utoipa::path(get, path = "/api/openapi.json", responses(
    (status = 200, description = "This document (OpenAPI 3.1)", body = Object)))]
pub async fn openapi() -> Response {
    json(StatusCode::OK, &super::openapi::document())
}
