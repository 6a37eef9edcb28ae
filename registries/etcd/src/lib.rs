//! The etcd registry backend of Switchyard (`type = "etcd"`), and the `register` helper.
//!
//! Instances live under a key prefix, one key each: `<prefix>/<service>/<instance-id>`,
//! whose value is SkyDNS/CoreDNS-style JSON `{"host","port","weight","priority","metadata"}`
//! or a plain `host:port` (see `entry` for the details and defaults). A source's
//! `service` is the `<service>` key segment.
//!
//! Sync follows etcd's API guarantees: one prefix get at a revision, then one watch from
//! revision + 1 that sees every later change once. One get and one watch serve all the
//! services a registry watches (`hub`); a compaction or a cancelled watch leads to a
//! re-read that replaces each set; a broken connection ends the streams with an error, and
//! the shared recover wrapper reconnects while the upstream cache keeps the last set.
//!
//! [`register`] keeps one instance's key alive under a lease for services that have no
//! agent of their own: `switchyard register --etcd URL --service NAME --address HOST:PORT`.

mod config;
mod connect;
pub mod entry;
mod hub;
pub mod keys;
pub mod register;

use std::sync::Arc;

use async_trait::async_trait;
use switchyard_registry::{
    ConfigIssue, Registry, RegistryContext, RegistryError, RegistryFactory, ServiceQuery,
    UpdateStream,
};

pub use config::{ConnectSettings, Settings, DEFAULT_DIAL_TIMEOUT, DEFAULT_PREFIX};
pub use connect::{connect, REQUEST_TIMEOUT};

/// Builds etcd registries from `[registries.NAME]` tables with `type = "etcd"`.
///
/// Keys: `endpoints` (required, several fail over), `prefix` (default
/// `/switchyard/services`), `username`/`password`, TLS `ca`/`cert`/`key` (PEM paths,
/// relative to the config file), `dial_timeout` (default 5 s).
#[derive(Clone, Copy, Debug, Default)]
pub struct EtcdFactory;

impl RegistryFactory for EtcdFactory {
    fn kind(&self) -> &'static str {
        "etcd"
    }

    fn settings_schema(&self, generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        generator.subschema_for::<config::RawSettings>()
    }

    fn build(
        &self,
        ctx: RegistryContext,
        settings: &serde_json::Value,
    ) -> Result<Arc<dyn Registry>, Vec<ConfigIssue>> {
        let settings = Settings::decode(&ctx, settings)?;
        Ok(Arc::new(EtcdRegistry::new(ctx, settings)))
    }
}

/// One etcd registry: a shared get-and-watch of its prefix, fanned out to the services
/// that are watched. Nothing connects until the first [`Registry::watch`].
pub struct EtcdRegistry {
    shared: Arc<hub::Shared>,
}

impl EtcdRegistry {
    /// A registry with decoded settings.
    pub fn new(ctx: RegistryContext, settings: Settings) -> Self {
        EtcdRegistry {
            shared: Arc::new(hub::Shared::new(ctx, settings)),
        }
    }
}

/// Checks a service name: one non-empty key segment.
fn check_service(service: &str) -> Result<(), String> {
    if service.is_empty() {
        return Err("must name the <service> key segment under the prefix".into());
    }
    if service.contains('/') {
        return Err(format!(
            "{service:?}: an etcd service is one key segment, without '/'"
        ));
    }
    if service.chars().any(char::is_whitespace) {
        return Err(format!("{service:?}: contains whitespace"));
    }
    Ok(())
}

#[async_trait]
impl Registry for EtcdRegistry {
    fn kind(&self) -> &'static str {
        "etcd"
    }

    fn check_query(&self, query: &ServiceQuery) -> Result<(), Vec<ConfigIssue>> {
        let mut issues = Vec::new();
        if let Err(message) = check_service(&query.service) {
            issues.push(ConfigIssue::new("service", message));
        }
        if query.port.is_some() {
            issues.push(ConfigIssue::new(
                "port",
                "not used by etcd registries: the port is in each instance's value",
            ));
        }
        if !query.tags.is_empty() {
            issues.push(ConfigIssue::new("tags", "not supported by etcd registries"));
        }
        if query.datacenter.is_some() {
            issues.push(ConfigIssue::new(
                "datacenter",
                "not supported by etcd registries",
            ));
        }
        if query.filter.is_some() {
            issues.push(ConfigIssue::new(
                "filter",
                "not supported by etcd registries (Consul only)",
            ));
        }
        if issues.is_empty() {
            Ok(())
        } else {
            Err(issues)
        }
    }

    async fn watch(&self, query: &ServiceQuery) -> Result<UpdateStream, RegistryError> {
        check_service(&query.service).map_err(RegistryError::invalid_query)?;
        Ok(self.shared.subscribe(query.service.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Checks a query against a built registry; `expected` lists the issue paths.
    fn check(query: ServiceQuery, expected: &[&str]) {
        let registry = EtcdFactory
            .build(
                RegistryContext::new("etcd"),
                &json!({"endpoints": ["http://127.0.0.1:2379"]}),
            )
            .unwrap();
        let paths: Vec<String> = match registry.check_query(&query) {
            Ok(()) => Vec::new(),
            Err(issues) => issues.into_iter().map(|i| i.path).collect(),
        };
        assert_eq!(paths, expected, "{query}");
    }

    #[test]
    fn queries() {
        check(ServiceQuery::new("echo"), &[]);
        check(ServiceQuery::new("orders-v2.prod"), &[]);
        check(ServiceQuery::new(""), &["service"]);
        check(ServiceQuery::new("shop/orders"), &["service"]);
        check(ServiceQuery::new("a b"), &["service"]);
        let query = ServiceQuery {
            port: Some("http".into()),
            tags: vec!["v2".into()],
            datacenter: Some("dc1".into()),
            ..ServiceQuery::new("echo")
        };
        check(query, &["port", "tags", "datacenter"]);
    }

    #[test]
    fn build_reports_issues_with_paths() {
        let err = EtcdFactory
            .build(
                RegistryContext::new("etcd"),
                &json!({"endpoints": ["x"], "prefix": "p"}),
            )
            .err()
            .unwrap();
        let paths: Vec<&str> = err.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(paths, ["prefix", "endpoints[0]"]);
    }
}
