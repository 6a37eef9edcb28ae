//! `GET /api/openapi.json`: the admin API as an OpenAPI 3.1 document, generated with
//! `utoipa` from the admin handlers' `#[utoipa::path]` annotations (`handlers.rs`) and the
//! response types they serialize ([`crate::api`]). Nothing here is written by hand but the
//! title and the list of handlers.
//!
//! The integration test `admin_history` checks that the document lists every route and
//! that each live answer validates against the schema the document gives it.

use utoipa::OpenApi;

use super::handlers as admin;
use crate::api;

/// The admin API's OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Switchyard admin API",
        description = "The admin listener: health, metrics, the JSON API and the dashboard (docs/admin-api.md). With `admin.token` set, `/` and `/api/*` need `Authorization: Bearer TOKEN`; errors are `{\"error\": \"...\"}`."
    ),
    paths(
        admin::healthz,
        admin::readyz,
        admin::metrics,
        admin::dashboard,
        admin::upstreams,
        admin::upstream,
        admin::registries,
        admin::routes,
        admin::history,
        admin::config_source,
        admin::stats,
        admin::cache_purge,
        admin::reload,
        admin::openapi
    ),
    components(schemas(
        api::ErrorBody,
        api::Readiness,
        api::Upstream,
        api::Endpoint,
        api::EndpointSource,
        api::EndpointHealth,
        api::Source,
        api::Tier,
        api::Registry,
        api::RouteEntry,
        api::RouteWindow,
        api::HistoryDocument,
        api::HistoryPoint,
        api::RoutePoint,
        api::UpstreamPoint,
        api::RegistryPoint,
        api::Event,
        api::ConfigSourceStatus,
        api::ConfigRefusal,
        api::ConfigChanges,
        api::Stats,
        api::RouteUsage,
        api::ConsumerUsage,
        api::Usage,
        api::Latency,
        api::Purged,
        api::ReloadOutcome
    ))
)]
pub struct AdminApi;

/// The document as JSON.
pub fn document() -> serde_json::Value {
    serde_json::to_value(AdminApi::openapi()).unwrap_or_default()
}

/// Every path of the document with its methods (`GET /api/routes`...), sorted.
pub fn operations() -> Vec<String> {
    let doc = document();
    let mut out = Vec::new();
    if let Some(paths) = doc["paths"].as_object() {
        for (path, item) in paths {
            for method in item.as_object().into_iter().flat_map(|m| m.keys()) {
                out.push(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_every_admin_path_and_the_typed_schemas() {
        let operations = operations();
        for want in [
            "GET /",
            "GET /healthz",
            "GET /readyz",
            "GET /metrics",
            "GET /api/upstreams",
            "GET /api/upstreams/{name}",
            "GET /api/registries",
            "GET /api/routes",
            "GET /api/history",
            "GET /api/config_source",
            "GET /api/stats",
            "POST /api/cache/purge",
            "POST /api/reload",
            "GET /api/openapi.json",
        ] {
            assert!(
                operations.iter().any(|o| o == want),
                "{want} missing: {operations:?}"
            );
        }
        let doc = document();
        let figures = &doc["components"]["schemas"]["RouteWindow"]["properties"];
        for field in [
            "requests_per_second",
            "p50_ms",
            "p90_ms",
            "p99_ms",
            "error_ratio",
        ] {
            assert!(figures[field].is_object(), "{field} missing: {figures}");
        }
    }

    /// Each type's schema accepts what the type writes (an off and an etcd config source,
    /// a refused reload), checked with a JSON Schema validator.
    #[test]
    fn schemas_accept_what_the_types_write() {
        let doc = document();
        let check = |name: &str, value: serde_json::Value| {
            let schema = serde_json::json!({
                "$ref": format!("#/components/schemas/{name}"),
                "components": doc["components"].clone(),
            });
            let validator = jsonschema::validator_for(&schema).expect(name);
            let errors: Vec<String> = validator
                .iter_errors(&value)
                .map(|e| e.to_string())
                .collect();
            assert!(errors.is_empty(), "{name}: {errors:?} in {value}");
        };
        let off = crate::config_source::status::Status::new(None).to_json();
        assert_eq!(off, serde_json::json!({"type": null, "state": "off"}));
        check("ConfigSourceStatus", off);
        check(
            "ConfigSourceStatus",
            serde_json::json!({"type": "etcd", "state": "connecting", "endpoints": ["http://a:1"],
                "prefix": "/p", "revision": null, "applied_revision": null, "applied_at": null,
                "objects": 0, "last_error": null, "refused": null, "changes": {"applied": 0, "refused": 0}}),
        );
        let refused = api::ReloadOutcome {
            status: "refused".into(),
            errors: Some(vec!["routes[0].upstream: unknown".into()]),
        };
        check("ReloadOutcome", serde_json::to_value(&refused).unwrap());
        check("ErrorBody", serde_json::json!({"error": "not found"}));
    }
}
