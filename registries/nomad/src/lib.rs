//! The `nomad` registry: service instances from Nomad's native service discovery.
//!
//! ```toml
//! [registries.nomad]
//! type = "nomad"
//! address = "http://127.0.0.1:4646"   # default
//! # token = "..."  namespace = "default"  region = "global"  wait = "5m"
//!
//! [[upstreams.web.sources]]
//! registry = "nomad"
//! service = "web"                     # a Nomad service (provider = "nomad") name
//! tags = ["v2"]                       # all must match
//! ```
//!
//! Each watched service runs one blocking-query loop on `GET /v1/service/<name>` (see
//! [`watch`]). An instance's address is the registration's `Address`, its port `Port`; Nomad
//! has no weights (every instance weighs 1) and no health in registrations (the Nomad
//! client removes an allocation's registrations when it stops or fails); see [`decode`].
//!
//! Failures end the watch with an error of the right kind and the shared recover wrapper
//! reconnects with backoff while the last good set stays, stale: an unreachable agent or a
//! 5xx is `unavailable`; 401/403 (`Permission denied`, `ACL token not found`) is
//! `unauthorized`, retried only at the slow pace.

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

use config::Config;
use watch::{Shared, Watch};

/// How long a TCP connection to the agent may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Builds `type = "nomad"` registries.
#[derive(Debug, Default)]
pub struct NomadFactory;

impl RegistryFactory for NomadFactory {
    fn kind(&self) -> &'static str {
        "nomad"
    }

    fn settings_schema(&self, generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        generator.subschema_for::<config::Settings>()
    }

    fn build(
        &self,
        ctx: RegistryContext,
        settings: &serde_json::Value,
    ) -> Result<Arc<dyn Registry>, Vec<ConfigIssue>> {
        let config = config::decode(settings)?;
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .user_agent(concat!("switchyard/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| {
                vec![ConfigIssue::new(
                    "",
                    format!("cannot build the HTTP client: {e}"),
                )]
            })?;
        Ok(Arc::new(NomadRegistry::new(&ctx, config, client)))
    }
}

/// A configured Nomad registry.
#[derive(Debug)]
pub struct NomadRegistry {
    config: Config,
    shared: Arc<Shared>,
}

impl NomadRegistry {
    fn new(ctx: &RegistryContext, config: Config, client: reqwest::Client) -> Self {
        NomadRegistry {
            shared: Arc::new(Shared {
                name: ctx.name.clone(),
                metrics: ctx.metrics.clone(),
                client,
                token: config.token.clone(),
                wait: config.wait,
            }),
            config,
        }
    }

    /// The service URL of a query with its fixed parameters (`namespace`, `region`);
    /// `index` and `wait` are added per request.
    pub fn service_url(&self, query: &ServiceQuery) -> reqwest::Url {
        let mut url = self.config.address.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments
                .pop_if_empty()
                .extend(["v1", "service", &query.service]);
        }
        {
            let mut pairs = url.query_pairs_mut();
            pairs.append_pair("namespace", &self.config.namespace);
            if let Some(region) = &self.config.region {
                pairs.append_pair("region", region);
            }
        }
        url
    }
}

#[async_trait]
impl Registry for NomadRegistry {
    fn kind(&self) -> &'static str {
        "nomad"
    }

    fn check_query(&self, query: &ServiceQuery) -> Result<(), Vec<ConfigIssue>> {
        let mut issues = Vec::new();
        if query.service.trim().is_empty() {
            issues.push(ConfigIssue::new("service", "must name a Nomad service"));
        } else if query.service.contains('/') {
            issues.push(ConfigIssue::new(
                "service",
                format!("{:?} is not a Nomad service name (no '/')", query.service),
            ));
        }
        if query.port.is_some() {
            issues.push(ConfigIssue::new(
                "port",
                "nomad sources take the port from the registration; remove `port`",
            ));
        }
        if query.datacenter.is_some() {
            issues.push(ConfigIssue::new(
                "datacenter",
                "nomad sources do not take a datacenter (set `region` on the registry)",
            ));
        }
        for (i, tag) in query.tags.iter().enumerate() {
            if tag.is_empty() {
                issues.push(ConfigIssue::new(format!("tags[{i}]"), "must not be empty"));
            }
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
        let watch = Watch::new(
            self.shared.clone(),
            self.service_url(query),
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

    fn registry(settings: serde_json::Value) -> NomadRegistry {
        let ctx = RegistryContext::new("nomad");
        NomadRegistry::new(
            &ctx,
            config::decode(&settings).unwrap(),
            reqwest::Client::new(),
        )
    }

    #[test]
    fn service_urls() {
        assert_eq!(
            registry(json!({}))
                .service_url(&ServiceQuery::new("web"))
                .as_str(),
            "http://127.0.0.1:4646/v1/service/web?namespace=default"
        );
        assert_eq!(
            registry(
                json!({"address": "https://n:4646/nomad", "namespace": "shop", "region": "eu"})
            )
            .service_url(&ServiceQuery::new("my web"))
            .as_str(),
            "https://n:4646/nomad/v1/service/my%20web?namespace=shop&region=eu"
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
        check(ServiceQuery::new(" "), &["service"]);
        check(ServiceQuery::new("a/b"), &["service"]);
        let mut q = ServiceQuery::new("web");
        q.port = Some("http".into());
        q.datacenter = Some("dc1".into());
        q.tags = vec!["v1".into(), String::new()];
        check(q, &["port", "datacenter", "tags[1]"]);
    }

    #[test]
    fn factory_refuses_bad_settings_without_connecting() {
        let err = NomadFactory
            .build(
                RegistryContext::new("n"),
                &json!({"address": "ftp://x", "wait": "1h"}),
            )
            .err()
            .unwrap();
        let paths: Vec<&str> = err.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(paths, ["address", "wait"]);
        assert!(NomadFactory
            .build(
                RegistryContext::new("n"),
                &json!({"address": "http://127.0.0.1:1"})
            )
            .is_ok());
    }
}
