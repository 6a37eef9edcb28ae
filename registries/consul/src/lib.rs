//! The `consul` registry: service instances from a Consul agent's health API.
//!
//! ```toml
//! [registries.consul]
//! type = "consul"
//! address = "http://127.0.0.1:8500"   # http or https; `ca = "path.pem"` for a private CA
//! # token = "..." | token_file = "path"  datacenter = "dc1"  namespace = "..."  partition = "..."
//! # wait = "5m"                          # blocking-query wait, at most 10m
//! # only_passing = true                  # false: also serve `warning` instances at Weights.Warning
//!
//! [[upstreams.orders.sources]]
//! registry = "consul"
//! service = "orders"
//! tags = ["v2"]                          # all must match
//! # datacenter = "dc2"                   # overrides the registry's
//! ```
//!
//! Each watched service runs one blocking-query loop on `GET /v1/health/service/<name>`
//! (see [`watch`] for Consul's rules it follows). An instance's address is `Service.Address`,
//! or `Node.Address` when that is empty; its port `Service.Port`; its weight
//! `Weights.Passing`; `Service.Meta` and the tags are kept as metadata (see [`decode`]).
//!
//! Failures end the watch with an error of the right kind, and the shared recover wrapper
//! backs off and reconnects while the last good set stays, stale: an unreachable agent or a
//! 5xx is `unavailable`; 401/403 (`ACL not found`, `Permission denied`) or an answer emptied
//! by ACL filtering is `unauthorized`, retried only at the slow pace; an unknown datacenter
//! or a refused parameter is `invalid_query`.

pub mod config;
pub mod decode;
pub mod watch;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use switchyard_registry::{
    ConfigIssue, Registry, RegistryContext, RegistryError, RegistryFactory, ServiceQuery,
    UpdateStream,
};

use config::{Config, TokenSource};
use watch::{Shared, Watch};

/// How long a TCP (and TLS) connection to the agent may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Builds `type = "consul"` registries.
#[derive(Debug, Default)]
pub struct ConsulFactory;

impl RegistryFactory for ConsulFactory {
    fn kind(&self) -> &'static str {
        "consul"
    }

    fn settings_schema(&self, generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        generator.subschema_for::<config::Settings>()
    }

    fn build(
        &self,
        ctx: RegistryContext,
        settings: &serde_json::Value,
    ) -> Result<Arc<dyn Registry>, Vec<ConfigIssue>> {
        let config = config::decode(&ctx, settings)?;
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .user_agent(concat!("switchyard/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = &config.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| vec![ConfigIssue::new("ca", e.to_string())])?;
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder.build().map_err(|e| {
            vec![ConfigIssue::new(
                "",
                format!("cannot build the HTTP client: {e}"),
            )]
        })?;
        Ok(Arc::new(ConsulRegistry {
            shared: Arc::new(Shared {
                name: ctx.name.clone(),
                metrics: ctx.metrics.clone(),
                client,
                address: config.address.clone(),
                wait: config.wait,
                only_passing: config.only_passing,
            }),
            config,
        }))
    }
}

/// A configured Consul registry.
#[derive(Debug)]
pub struct ConsulRegistry {
    config: Config,
    shared: Arc<Shared>,
}

impl ConsulRegistry {
    /// The health URL of a query, with its fixed parameters (`passing`, `tag`, `dc`, `ns`,
    /// `partition`); `index` and `wait` are added per request.
    pub fn health_url(&self, query: &ServiceQuery) -> reqwest::Url {
        let mut url = self.config.address.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments
                .pop_if_empty()
                .extend(["v1", "health", "service", &query.service]);
        }
        {
            let mut pairs = url.query_pairs_mut();
            if self.config.only_passing {
                pairs.append_pair("passing", "true");
            }
            for tag in &query.tags {
                pairs.append_pair("tag", tag);
            }
            if let Some(dc) = query
                .datacenter
                .as_ref()
                .or(self.config.datacenter.as_ref())
            {
                pairs.append_pair("dc", dc);
            }
            if let Some(ns) = &self.config.namespace {
                pairs.append_pair("ns", ns);
            }
            if let Some(partition) = &self.config.partition {
                pairs.append_pair("partition", partition);
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        url
    }
}

#[async_trait]
impl Registry for ConsulRegistry {
    fn kind(&self) -> &'static str {
        "consul"
    }

    fn check_query(&self, query: &ServiceQuery) -> Result<(), Vec<ConfigIssue>> {
        let mut issues = Vec::new();
        if query.service.trim().is_empty() {
            issues.push(ConfigIssue::new("service", "must name a Consul service"));
        } else if query.service.contains('/') {
            issues.push(ConfigIssue::new(
                "service",
                format!("{:?} is not a Consul service name (no '/')", query.service),
            ));
        }
        if query.port.is_some() {
            issues.push(ConfigIssue::new(
                "port",
                "consul sources take the port from Service.Port; remove `port`",
            ));
        }
        for (i, tag) in query.tags.iter().enumerate() {
            if tag.is_empty() {
                issues.push(ConfigIssue::new(format!("tags[{i}]"), "must not be empty"));
            }
        }
        if query
            .datacenter
            .as_deref()
            .is_some_and(|dc| dc.trim().is_empty())
        {
            issues.push(ConfigIssue::new("datacenter", "must not be empty"));
        }
        if issues.is_empty() {
            Ok(())
        } else {
            Err(issues)
        }
    }

    async fn watch(&self, query: &ServiceQuery) -> Result<UpdateStream, RegistryError> {
        if let Err(issues) = self.check_query(query) {
            let text: Vec<String> = issues.iter().map(ToString::to_string).collect();
            return Err(RegistryError::invalid_query(text.join("; ")));
        }
        let token = self.config.token.read().map_err(|message| {
            RegistryError::unauthorized(format!(
                "consul registry {:?}: {message}",
                self.shared.name
            ))
        })?;
        if matches!(self.config.token, TokenSource::File(_)) {
            tracing::debug!(registry = %self.shared.name, "read token_file");
        }
        let watch = Watch::new(
            self.shared.clone(),
            self.health_url(query),
            token,
            query.service.clone(),
            query.tags.clone(),
        );
        Ok(futures::stream::unfold(watch, |mut watch| async move {
            watch.next().await.map(|item| (item, watch))
        })
        .boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn registry(settings: serde_json::Value) -> ConsulRegistry {
        let ctx = RegistryContext::new("consul");
        let config = config::decode(&ctx, &settings).unwrap();
        ConsulRegistry {
            shared: Arc::new(Shared {
                name: "consul".into(),
                metrics: ctx.metrics.clone(),
                client: reqwest::Client::new(),
                address: config.address.clone(),
                wait: config.wait,
                only_passing: config.only_passing,
            }),
            config,
        }
    }

    #[test]
    fn health_urls() {
        fn check(settings: serde_json::Value, query: ServiceQuery, expected: &str) {
            assert_eq!(registry(settings).health_url(&query).as_str(), expected);
        }
        let mut tagged = ServiceQuery::new("web");
        tagged.tags = vec!["v1".into(), "a b".into()];
        let mut dc2 = ServiceQuery::new("web");
        dc2.datacenter = Some("dc2".into());
        check(
            json!({}),
            ServiceQuery::new("web"),
            "http://127.0.0.1:8500/v1/health/service/web?passing=true",
        );
        check(
            json!({"only_passing": false, "address": "https://c:8501/consul"}),
            ServiceQuery::new("my web"),
            "https://c:8501/consul/v1/health/service/my%20web",
        );
        check(
            json!({"datacenter": "dc1", "namespace": "n", "partition": "p"}),
            tagged,
            "http://127.0.0.1:8500/v1/health/service/web?passing=true&tag=v1&tag=a+b&dc=dc1&ns=n&partition=p",
        );
        check(
            json!({"datacenter": "dc1"}),
            dc2,
            "http://127.0.0.1:8500/v1/health/service/web?passing=true&dc=dc2",
        );
    }

    #[test]
    fn queries() {
        fn check(query: ServiceQuery, expected: &[&str]) {
            let got = match registry(json!({})).check_query(&query) {
                Ok(()) => vec![],
                Err(issues) => issues.iter().map(|i| i.path.clone()).collect(),
            };
            assert_eq!(got, expected, "{query}");
        }
        check(ServiceQuery::new("web"), &[]);
        check(ServiceQuery::new(""), &["service"]);
        check(ServiceQuery::new("shop/web"), &["service"]);
        let mut q = ServiceQuery::new("web");
        q.port = Some("http".into());
        q.tags = vec!["ok".into(), String::new()];
        q.datacenter = Some(String::new());
        check(q, &["port", "tags[1]", "datacenter"]);
    }

    #[test]
    fn factory_refuses_bad_settings_without_connecting() {
        let err = ConsulFactory
            .build(
                RegistryContext::new("c"),
                &json!({"address": "ftp://x", "wait": "1h"}),
            )
            .err()
            .unwrap();
        let paths: Vec<&str> = err.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(paths, ["address", "wait"]);
        // Nothing listens on port 1: building still succeeds.
        assert!(ConsulFactory
            .build(
                RegistryContext::new("c"),
                &json!({"address": "http://127.0.0.1:1"})
            )
            .is_ok());
    }
}
