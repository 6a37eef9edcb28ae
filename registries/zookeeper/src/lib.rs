//! The `zookeeper` registry: service instances registered in ZooKeeper by Apache Curator's
//! service discovery (x-discovery, Spring Cloud Zookeeper) or by Apache Dubbo.
//!
//! ```toml
//! [registries.zk]
//! type = "zookeeper"
//! servers = ["127.0.0.1:2181"]      # several fail over
//! root = "/services"                # default
//! format = "curator"                # curator (default) | dubbo
//! # session_timeout = "30s"  connect_timeout = "5s"  username = "u"  password = "p" (digest)
//!
//! [[upstreams.orders.sources]]
//! registry = "zk"
//! service = "orders"                # Curator: the service name; Dubbo: the interface
//! ```
//!
//! Layouts and field meanings are in [`decode`]; how watches follow changes, and what a
//! disconnect or an expired session does, in `watch` and `session`. In short: one session
//! per registry; per watched service a child watch (and, for Curator, a data watch per
//! instance) re-armed on every event; ephemeral instances vanish with their owner's session;
//! a lost connection keeps the last set (stale) and the next successful read replaces it
//! whole; a malformed instance is skipped and counted, the others stay.

pub mod config;
pub mod decode;
mod session;
mod watch;

use std::sync::Arc;

use async_trait::async_trait;
use switchyard_registry::{
    ConfigIssue, Registry, RegistryContext, RegistryError, RegistryFactory, ServiceQuery,
    UpdateStream,
};

pub use config::{Config, Format};

/// Builds `type = "zookeeper"` registries.
#[derive(Clone, Copy, Debug, Default)]
pub struct ZooKeeperFactory;

impl RegistryFactory for ZooKeeperFactory {
    fn kind(&self) -> &'static str {
        "zookeeper"
    }

    fn settings_schema(&self, generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        generator.subschema_for::<config::Settings>()
    }

    fn build(
        &self,
        ctx: RegistryContext,
        settings: &serde_json::Value,
    ) -> Result<Arc<dyn Registry>, Vec<ConfigIssue>> {
        let config = Config::decode(settings)?;
        Ok(Arc::new(ZooKeeperRegistry {
            shared: Arc::new(watch::Shared {
                ctx,
                sessions: session::Sessions::new(config.clone()),
                config,
            }),
        }))
    }
}

/// A configured ZooKeeper registry. Nothing connects until the first watch.
pub struct ZooKeeperRegistry {
    shared: Arc<watch::Shared>,
}

#[async_trait]
impl Registry for ZooKeeperRegistry {
    fn kind(&self) -> &'static str {
        "zookeeper"
    }

    fn check_query(&self, query: &ServiceQuery) -> Result<(), Vec<ConfigIssue>> {
        let mut issues = Vec::new();
        if let Err(message) = config::check_service(&query.service) {
            issues.push(ConfigIssue::new("service", message));
        }
        if query.port.is_some() {
            issues.push(ConfigIssue::new(
                "port",
                "not used by zookeeper registries: each instance carries its port",
            ));
        }
        if !query.tags.is_empty() {
            issues.push(ConfigIssue::new(
                "tags",
                "not supported by zookeeper registries",
            ));
        }
        if query.datacenter.is_some() {
            issues.push(ConfigIssue::new(
                "datacenter",
                "not supported by zookeeper registries",
            ));
        }
        if issues.is_empty() {
            Ok(())
        } else {
            Err(issues)
        }
    }

    async fn watch(&self, query: &ServiceQuery) -> Result<UpdateStream, RegistryError> {
        config::check_service(&query.service).map_err(RegistryError::invalid_query)?;
        Ok(watch::watch_service(
            self.shared.clone(),
            query.service.clone(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn queries() {
        let registry = ZooKeeperFactory
            .build(
                RegistryContext::new("zk"),
                &json!({"servers": ["127.0.0.1:1"]}),
            )
            .unwrap();
        let check = |query: ServiceQuery, expected: &[&str]| {
            let got: Vec<String> = match registry.check_query(&query) {
                Ok(()) => vec![],
                Err(issues) => issues.into_iter().map(|i| i.path).collect(),
            };
            assert_eq!(got, expected, "{query}");
        };
        check(ServiceQuery::new("orders"), &[]);
        check(ServiceQuery::new("org.demo.Greeter"), &[]);
        check(ServiceQuery::new("a/b"), &["service"]);
        let query = ServiceQuery {
            port: Some("http".into()),
            tags: vec!["a".into()],
            datacenter: Some("dc".into()),
            ..ServiceQuery::new("")
        };
        check(query, &["service", "port", "tags", "datacenter"]);
    }

    #[test]
    fn build_reports_issues_with_paths_without_connecting() {
        let err = ZooKeeperFactory
            .build(
                RegistryContext::new("zk"),
                &json!({"servers": ["x"], "root": "r"}),
            )
            .err()
            .unwrap();
        let paths: Vec<&str> = err.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(paths, ["servers[0]", "root"]);
    }
}
