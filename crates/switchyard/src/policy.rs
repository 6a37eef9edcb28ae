//! The bridge between config and the route policies of `switchyard-policy`
//! (authentication, IP lists, rate limits, cache, rewrites, analytics): top-level
//! `[consumers]`, `[auth]`, `[route_defaults]` and every non-router key of a `[[routes]]`
//! table become the route's filters.
//!
//! The policy [`Hub`] (analytics, counters, cache stores, rate-limit buckets, Redis
//! connections) is one per process, held by the app's loader and reached through `App::hub`,
//! and outlives config generations, so a reload keeps usage numbers, cached responses and
//! buckets whose settings did not change. The admin API reaches it through
//! [`encode_metrics`], [`stats`] and [`purge`].

use std::path::Path;
use std::sync::Arc;

use http::StatusCode;
use switchyard_policy::Hub;
use switchyard_proxy::Filter;
use switchyard_registry::ConfigIssue;

use crate::config::Config;

/// The shared policy state of one config generation.
pub type Policies = switchyard_policy::Policies;

/// Builds the shared policy state from the top-level sections; issues carry full paths.
pub fn build_policies(
    hub: &Arc<Hub>,
    config: &Config,
    base_dir: &Path,
) -> Result<Policies, Vec<ConfigIssue>> {
    switchyard_policy::build(hub, &config.policy_sections, base_dir)
}

/// The filters of one route, from its policy keys; issues are relative to the route.
pub fn route_filters(
    policies: &Policies,
    route: &str,
    keys: &serde_json::Map<String, serde_json::Value>,
) -> Result<Vec<Arc<dyn Filter>>, Vec<ConfigIssue>> {
    policies.route_filters(route, keys)
}

/// Writes the policy metric families (usage, access, rate limits, cache) to `/metrics`.
pub fn encode_metrics(
    hub: &Hub,
    encoder: &mut switchyard_metrics::prometheus_client::encoding::DescriptorEncoder,
) -> std::fmt::Result {
    hub.encode_metrics(encoder)
}

/// `GET /api/stats?window=5m`.
pub fn stats(hub: &Hub, query: Option<&str>) -> (StatusCode, serde_json::Value) {
    switchyard_policy::admin::stats(hub, query)
}

/// `POST /api/cache/purge?route=&host=&path=&prefix=`.
pub fn purge(hub: &Hub, query: Option<&str>) -> (StatusCode, serde_json::Value) {
    switchyard_policy::admin::purge(hub, query)
}
