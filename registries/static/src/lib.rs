//! The `static` registry: instances listed in the config.
//!
//! ```toml
//! [registries.local]
//! type = "static"
//! services.echo = ["127.0.0.1:9001", { address = "127.0.0.1:9002", weight = 3 }]
//! ```
//!
//! Each entry is `"host:port"` or a table with `address` and optional `weight` (default
//! 1), `priority` (default 0), `zone` and `metadata`. Host names are resolved when the
//! service is first watched; an entry that does not resolve is skipped and counted.
//! The set changes only on reload.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use serde::Deserialize;
use switchyard_registry::{
    decode_settings, ConfigIssue, Endpoint, Metadata, Registry, RegistryContext, RegistryError,
    RegistryFactory, ServiceQuery, Update, UpdateStream,
};

/// Builds `type = "static"` registries.
#[derive(Debug, Default)]
pub struct StaticFactory;

/// `[registries.NAME]` with `type = "static"`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// Service name → its instances: `"host:port"` strings or
    /// `{ address, weight, priority, zone, metadata }` tables. Default: none.
    #[serde(default)]
    services: BTreeMap<String, Vec<Entry>>,
}

/// One configured instance.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
enum Entry {
    /// `"host:port"`, weight 1, priority 0.
    Address(String),
    /// A table with the address and its attributes.
    Full(FullEntry),
}

/// One instance written as a table.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct FullEntry {
    /// `host:port` (an IP or a name resolved once when the registry starts).
    address: String,
    /// Balancer weight. Default 1.
    #[serde(default = "one")]
    weight: u32,
    /// Tier of the endpoint; lower is preferred. Default 0.
    #[serde(default)]
    priority: u32,
    /// The instance's zone, for zone-aware routing. Default: none.
    #[serde(default)]
    zone: Option<String>,
    /// Free-form labels shown by the admin API. Default: none.
    #[serde(default)]
    metadata: Metadata,
}

fn one() -> u32 {
    1
}

impl Entry {
    fn into_full(self) -> FullEntry {
        match self {
            Entry::Address(address) => FullEntry {
                address,
                weight: 1,
                priority: 0,
                zone: None,
                metadata: Metadata::new(),
            },
            Entry::Full(full) => full,
        }
    }
}

/// Whether `address` has the `host:port` shape (resolution happens later).
fn check_address(address: &str) -> Result<(), String> {
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| format!("{address:?} is not host:port"))?;
    if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(format!("{address:?} is not host:port"));
    }
    Ok(())
}

impl RegistryFactory for StaticFactory {
    fn kind(&self) -> &'static str {
        "static"
    }

    fn settings_schema(&self, generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        generator.subschema_for::<Settings>()
    }

    fn build(
        &self,
        ctx: RegistryContext,
        settings: &serde_json::Value,
    ) -> Result<Arc<dyn Registry>, Vec<ConfigIssue>> {
        let settings: Settings = decode_settings(settings).map_err(|e| vec![e])?;
        let mut issues = Vec::new();
        let mut services = BTreeMap::new();
        for (name, entries) in settings.services {
            let entries: Vec<FullEntry> = entries.into_iter().map(Entry::into_full).collect();
            for (i, entry) in entries.iter().enumerate() {
                if let Err(message) = check_address(&entry.address) {
                    issues.push(ConfigIssue::new(format!("services.{name}[{i}]"), message));
                }
            }
            services.insert(name, entries);
        }
        if !issues.is_empty() {
            return Err(issues);
        }
        Ok(Arc::new(StaticRegistry { ctx, services }))
    }
}

/// A registry whose services are fixed by config.
#[derive(Debug)]
pub struct StaticRegistry {
    ctx: RegistryContext,
    services: BTreeMap<String, Vec<FullEntry>>,
}

#[async_trait]
impl Registry for StaticRegistry {
    fn kind(&self) -> &'static str {
        "static"
    }

    fn check_query(&self, query: &ServiceQuery) -> Result<(), Vec<ConfigIssue>> {
        if self.services.contains_key(&query.service) {
            Ok(())
        } else {
            let known: Vec<&str> = self.services.keys().map(String::as_str).collect();
            Err(vec![ConfigIssue::new(
                "service",
                format!(
                    "unknown service {:?} in static registry {:?} (known: {})",
                    query.service,
                    self.ctx.name,
                    known.join(", ")
                ),
            )])
        }
    }

    async fn watch(&self, query: &ServiceQuery) -> Result<UpdateStream, RegistryError> {
        let Some(entries) = self.services.get(&query.service) else {
            return Ok(futures::stream::iter([Ok(Update::DoesNotExist)])
                .chain(futures::stream::pending())
                .boxed());
        };
        let mut endpoints = Vec::with_capacity(entries.len());
        for entry in entries {
            match tokio::net::lookup_host(entry.address.as_str())
                .await
                .map(|mut a| a.next())
            {
                Ok(Some(address)) => {
                    let mut endpoint = Endpoint::new(address)
                        .with_weight(entry.weight)
                        .with_priority(entry.priority)
                        .with_metadata(entry.metadata.clone());
                    endpoint.set_zone(entry.zone.clone());
                    endpoints.push(Arc::new(endpoint));
                }
                Ok(None) | Err(_) => self.ctx.metrics.malformed(
                    &self.ctx.name,
                    format!("{}: {} does not resolve", query.service, entry.address),
                ),
            }
        }
        // The set never changes until a reload: one Reset, then nothing.
        Ok(futures::stream::iter([Ok(Update::Reset(endpoints))])
            .chain(futures::stream::pending())
            .boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn build(settings: serde_json::Value) -> Result<Arc<dyn Registry>, Vec<ConfigIssue>> {
        StaticFactory.build(RegistryContext::new("local"), &settings)
    }

    #[tokio::test]
    async fn serves_configured_endpoints() {
        let registry = build(json!({"services": {"echo": ["127.0.0.1:9001", {"address": "127.0.0.1:9002", "weight": 3, "zone": "a"}]}})).unwrap();
        let mut stream = registry.watch(&ServiceQuery::new("echo")).await.unwrap();
        let Some(Ok(Update::Reset(endpoints))) = stream.next().await else {
            panic!("no reset")
        };
        assert_eq!(endpoints.len(), 2);
        assert_eq!(endpoints[1].weight, 3);
        assert_eq!(endpoints[1].zone(), Some("a"));
        assert!(registry.check_query(&ServiceQuery::new("echo")).is_ok());
        let issues = registry
            .check_query(&ServiceQuery::new("ecko"))
            .err()
            .unwrap_or_else(|| panic!("refused"));
        assert_eq!(issues[0].path, "service");
    }

    #[test]
    fn bad_settings_name_their_keys() {
        let issues = build(
            json!({"services": {"a": ["nope", "127.0.0.1:1"], "b": [{"address": "x:99999"}]}}),
        )
        .err()
        .unwrap_or_else(|| panic!("refused"));
        let paths: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(paths, vec!["services.a[0]", "services.b[0]"]);
        let issues = build(json!({"servces": {}}))
            .err()
            .unwrap_or_else(|| panic!("refused"));
        assert!(issues[0].message.contains("unknown field"), "{issues:?}");
        let issues = build(json!({"services": {"a": [{"address": "127.0.0.1:1", "wieght": 2}]}}))
            .err()
            .unwrap_or_else(|| panic!("refused"));
        assert!(!issues.is_empty());
    }
}
