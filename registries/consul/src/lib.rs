//! The `consul` registry: service instances from a Consul agent's health API.
//!
//! ```toml
//! [registries.consul]
//! type = "consul"
//! address = "http://127.0.0.1:8500"   # http or https; `ca = "path.pem"` for a private CA
//! # token = "..." | token_file = "path"  datacenter = "dc1"  namespace = "..."  partition = "..."
//! # wait = "5m"                          # blocking-query wait, at most 10m
//! # only_passing = true                  # false: also serve `warning` instances at Weights.Warning
//! # allow_stale = true                   # ?stale: any server answers (default); false: the leader
//! # consistent = false                   # ?consistent: the leader, after confirming it leads
//! # filter = 'Service.Meta.version == "2"'  # Consul filter expression, for every source
//!
//! [[upstreams.orders.sources]]
//! registry = "consul"
//! service = "orders"
//! tags = ["v2"]                          # all must match
//! # datacenter = "dc2"                   # overrides the registry's
//! # filter = '"canary" not in Service.Tags'  # and-ed with the registry's filter
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

use config::{Config, Consistency, TokenSource};
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
            match self.config.consistency {
                Consistency::Stale => {
                    pairs.append_pair("stale", "");
                }
                Consistency::Consistent => {
                    pairs.append_pair("consistent", "");
                }
                Consistency::Default => {}
            }
            // Consul takes one `filter`: the registry's and the source's must both hold.
            match (&self.config.filter, &query.filter) {
                (Some(a), Some(b)) => {
                    pairs.append_pair("filter", &format!("({a}) and ({b})"));
                }
                (Some(f), None) | (None, Some(f)) => {
                    pairs.append_pair("filter", f);
                }
                (None, None) => {}
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
        if query.filter.as_deref().is_some_and(|f| f.trim().is_empty()) {
            issues.push(ConfigIssue::new("filter", "must not be empty"));
        }
        if issues.is_empty() {
            Ok(())
        } else {
            Err(issues)
        }
    }

    /// With no token configured, asks the agent (`GET /v1/status/leader`, which needs no ACL
    /// rights: `/v1/agent/self` needs `agent:read`) for its ACL default policy; `deny` means
    /// every service will answer `[]` to us, and Consul will not say why
    /// (`maskResultsFilteredByACLs`, agent/consul/rpc.go). An unreachable agent: no warning.
    async fn warnings(&self, queries: &[ServiceQuery]) -> Vec<String> {
        if self.config.token != TokenSource::None {
            return Vec::new();
        }
        let mut url = self.config.address.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().extend(["v1", "status", "leader"]);
        }
        let Ok(response) = self
            .shared
            .client
            .get(url)
            .timeout(Duration::from_secs(2))
            .send()
            .await
        else {
            return Vec::new();
        };
        let deny = response
            .headers()
            .get("X-Consul-Default-ACL-Policy")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("deny"));
        if !deny {
            return Vec::new();
        }
        let services: Vec<&str> = queries.iter().map(|q| q.service.as_str()).collect();
        vec![format!(
            "the consul agent at {} has ACL default policy deny (X-Consul-Default-ACL-Policy) and no token is configured: {} will answer no instances; set token or token_file",
            self.config.address.as_str().trim_end_matches('/'),
            if services.is_empty() {
                "every service".to_owned()
            } else {
                format!("services {}", services.join(", "))
            },
        )]
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
            "http://127.0.0.1:8500/v1/health/service/web?passing=true&stale=",
        );
        check(
            json!({"only_passing": false, "address": "https://c:8501/consul", "allow_stale": false}),
            ServiceQuery::new("my web"),
            "https://c:8501/consul/v1/health/service/my%20web",
        );
        check(
            json!({"consistent": true, "filter": "Service.Meta.v == \"2\""}),
            ServiceQuery::new("web"),
            "http://127.0.0.1:8500/v1/health/service/web?passing=true&consistent=&filter=Service.Meta.v+%3D%3D+%222%22",
        );
        let mut filtered = ServiceQuery::new("web");
        filtered.filter = Some("\"v2\" in Service.Tags".into());
        check(
            json!({"allow_stale": false, "filter": "Node.Meta.rack == a"}),
            filtered.clone(),
            "http://127.0.0.1:8500/v1/health/service/web?passing=true&filter=%28Node.Meta.rack+%3D%3D+a%29+and+%28%22v2%22+in+Service.Tags%29",
        );
        check(
            json!({"allow_stale": false}),
            filtered,
            "http://127.0.0.1:8500/v1/health/service/web?passing=true&filter=%22v2%22+in+Service.Tags",
        );
        check(
            json!({"datacenter": "dc1", "namespace": "n", "partition": "p"}),
            tagged,
            "http://127.0.0.1:8500/v1/health/service/web?passing=true&tag=v1&tag=a+b&dc=dc1&ns=n&partition=p&stale=",
        );
        check(
            json!({"datacenter": "dc1"}),
            dc2,
            "http://127.0.0.1:8500/v1/health/service/web?passing=true&dc=dc2&stale=",
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
        q.filter = Some(" ".into());
        check(q, &["filter"]);
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
