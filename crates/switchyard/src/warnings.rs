//! Registry warnings ([`switchyard_registry::Registry::warnings`]) for a planned config:
//! printed by `switchyard check`, logged at start-up. Each registry is asked once, with the
//! queries of every source that names it, within [`TIMEOUT`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use switchyard_registry::{Registry, ServiceQuery};

use crate::plan::Plan;

/// How long one registry may take to answer (it may contact its server).
pub const TIMEOUT: Duration = Duration::from_secs(3);

/// One registry to ask: its name, the backend, the queries of its sources.
pub type Ask = (String, Arc<dyn Registry>, Vec<ServiceQuery>);

/// What to ask, taken from a plan (so the plan can move on while the asking runs).
pub fn asks(plan: &Plan) -> Vec<Ask> {
    let mut queries: BTreeMap<&str, Vec<ServiceQuery>> = BTreeMap::new();
    for upstream in &plan.upstreams {
        for source in &upstream.sources {
            queries
                .entry(source.registry_name.as_str())
                .or_default()
                .push(source.query.clone());
        }
    }
    plan.registries
        .iter()
        .map(|(name, built)| {
            let queries = queries.get(name.as_str()).cloned().unwrap_or_default();
            (name.clone(), built.registry.clone(), queries)
        })
        .collect()
}

/// `(registry name, warning)` for every registry asked, in name order.
pub async fn collect(asks: Vec<Ask>) -> Vec<(String, String)> {
    let asks = asks
        .into_iter()
        .map(|(name, registry, queries)| async move {
            let warnings = tokio::time::timeout(TIMEOUT, registry.warnings(&queries))
                .await
                .unwrap_or_default();
            warnings
                .into_iter()
                .map(|w| (name.clone(), w))
                .collect::<Vec<_>>()
        });
    futures::future::join_all(asks)
        .await
        .into_iter()
        .flatten()
        .collect()
}
