//! The bridge between config and the route policies (authentication, rate limits, cache,
//! rewrites, analytics): top-level `[consumers]`, `[auth]`, `[route_defaults]` and every
//! non-router key of a `[[routes]]` table become the route's filters.
//!
//! Until the policy layer exists, any policy key is refused by name, so a config that
//! asks for a policy never silently runs without it.

use std::path::Path;
use std::sync::Arc;

use switchyard_proxy::Filter;
use switchyard_registry::ConfigIssue;

use crate::config::Config;

/// The shared policy state of one config generation.
#[derive(Debug, Default)]
pub struct Policies;

/// Builds the shared policy state from the top-level sections.
pub fn build_policies(config: &Config, _base_dir: &Path) -> Result<Policies, Vec<ConfigIssue>> {
    let issues: Vec<ConfigIssue> = config
        .policy_sections
        .keys()
        .map(|section| {
            ConfigIssue::new(section.clone(), "policies are not supported by this build")
        })
        .collect();
    if issues.is_empty() {
        Ok(Policies)
    } else {
        Err(issues)
    }
}

/// The filters of one route, from its policy keys.
pub fn route_filters(
    _policies: &Policies,
    _route: &str,
    keys: &serde_json::Map<String, serde_json::Value>,
) -> Result<Vec<Arc<dyn Filter>>, Vec<ConfigIssue>> {
    let issues: Vec<ConfigIssue> = keys
        .keys()
        .map(|key| ConfigIssue::new(key.clone(), format!("unknown field `{key}`")))
        .collect();
    if issues.is_empty() {
        Ok(Vec::new())
    } else {
        Err(issues)
    }
}
