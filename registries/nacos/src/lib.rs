//! The `nacos` registry: service instances from Nacos's naming Open API.
//!
//! ```toml
//! [registries.nacos]
//! type = "nacos"
//! servers = ["http://127.0.0.1:8848"]   # tried in turn; the context path defaults to /nacos
//! namespace = "public"                  # default
//! # username = "nacos"  password = "..."  fetch_interval = "5s"  clusters = ["DEFAULT"]
//!
//! [[upstreams.orders.sources]]
//! registry = "nacos"
//! service = "DEFAULT_GROUP@@orders"     # or "orders" (group DEFAULT_GROUP)
//! ```
//!
//! Each watched service is read every `fetch_interval` with the instance-list API (see
//! [`client`] for failover, login and the v2/v1 choice); only differences are published,
//! and an empty list empties the set (authoritatively). See [`decode`] for the mapping.
//!
//! **Push.** Nacos 2 clients subscribe over gRPC (port 8848 + 1000) and receive
//! `NotifySubscriberRequest` pushes; Nacos 1 pushed over UDP to a `udpPort` given in the
//! list request. Neither is used here: the gRPC channel's messages are defined only by the
//! Nacos Java source (a `Payload` wrapping JSON bodies typed by class name), need a
//! connection-setup handshake and server checks of their own, and do not pass through the
//! HTTP proxies and auth setups that the Open API does; UDP push is gone in Nacos 2. The
//! Open API is documented and stable, and a 5 s poll bounds the lag by the Nacos heartbeat
//! period. A push channel can come later behind the same stream without changing users'
//! config.

pub mod client;
pub mod config;
pub mod decode;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use switchyard_registry::{
    answer_updates, resolve_host, ConfigIssue, Endpoint, MalformedEntries, Registry,
    RegistryContext, RegistryError, RegistryFactory, RegistryMetrics, ServiceQuery, Update,
    UpdateStream,
};

use client::Client;
use config::DEFAULT_GROUP;
use decode::{decode_host, hosts, Decoded};

/// How long one request (connect included) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds `type = "nacos"` registries.
#[derive(Debug, Default)]
pub struct NacosFactory;

impl RegistryFactory for NacosFactory {
    fn kind(&self) -> &'static str {
        "nacos"
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
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(3))
            .tcp_nodelay(true)
            .user_agent(concat!("switchyard/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| {
                vec![ConfigIssue::new(
                    "",
                    format!("cannot build the HTTP client: {e}"),
                )]
            })?;
        Ok(Arc::new(NacosRegistry {
            name: ctx.name,
            metrics: ctx.metrics,
            client: Arc::new(Client::new(http, config)),
        }))
    }
}

/// A configured Nacos registry.
#[derive(Debug)]
pub struct NacosRegistry {
    name: String,
    metrics: Arc<RegistryMetrics>,
    client: Arc<Client>,
}

/// Splits a source `service` into group and name: `GROUP@@name`, or `name` in
/// `DEFAULT_GROUP`.
pub fn split_service(service: &str) -> (&str, &str) {
    match service.split_once("@@") {
        Some((group, name)) => (group, name),
        None => (DEFAULT_GROUP, service),
    }
}

#[async_trait]
impl Registry for NacosRegistry {
    fn kind(&self) -> &'static str {
        "nacos"
    }

    fn check_query(&self, query: &ServiceQuery) -> Result<(), Vec<ConfigIssue>> {
        let mut issues = Vec::new();
        let (group, name) = split_service(&query.service);
        if group.trim().is_empty() || name.trim().is_empty() || name.contains("@@") {
            issues.push(ConfigIssue::new(
                "service",
                format!(
                    "{:?} is not a Nacos service: write \"name\" or \"GROUP@@name\"",
                    query.service
                ),
            ));
        }
        for (key, set) in [
            ("port", query.port.is_some()),
            ("tags", !query.tags.is_empty()),
            ("datacenter", query.datacenter.is_some()),
        ] {
            if set {
                issues.push(ConfigIssue::new(
                    key,
                    format!("nacos sources do not take `{key}` (use the registry's `clusters`)"),
                ));
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
        let (group, name) = split_service(&query.service);
        let poll = Poll {
            client: self.client.clone(),
            registry: self.name.clone(),
            metrics: self.metrics.clone(),
            group: group.to_owned(),
            service: name.to_owned(),
            known: None,
            pending: Vec::new(),
            malformed: MalformedEntries::default(),
            failed: false,
        };
        Ok(futures::stream::unfold(poll, |mut poll| async move {
            poll.next().await.map(|item| (item, poll))
        })
        .boxed())
    }
}

/// One service's refresh loop.
struct Poll {
    client: Arc<Client>,
    registry: String,
    metrics: Arc<RegistryMetrics>,
    group: String,
    service: String,
    /// The last set published, sorted; `None` before the first answer.
    known: Option<Vec<Arc<Endpoint>>>,
    /// Updates to hand out, last first.
    pending: Vec<Update>,
    /// Malformed entries, each counted once while it stays malformed.
    malformed: MalformedEntries,
    failed: bool,
}

impl Poll {
    async fn next(&mut self) -> Option<Result<Update, RegistryError>> {
        loop {
            if let Some(update) = self.pending.pop() {
                return Some(Ok(update));
            }
            if self.failed {
                return None;
            }
            if self.known.is_some() {
                let interval = self.client.config().fetch_interval;
                // Up to a tenth of jitter, so many services do not poll in lockstep.
                tokio::time::sleep(interval + interval.mul_f64(fastrand::f64() / 10.0)).await;
            }
            let answer = match self.client.instances(&self.group, &self.service).await {
                Ok(answer) => answer,
                Err(error) => {
                    self.failed = true;
                    return Some(Err(error));
                }
            };
            let list = match hosts(&answer) {
                Ok(list) => list,
                Err(why) => {
                    self.failed = true;
                    return Some(Err(RegistryError::protocol(format!(
                        "nacos answered the list of {}@@{} with {why}",
                        self.group, self.service
                    ))));
                }
            };
            let set = self.decode(list).await;
            let mut updates = answer_updates(self.known.as_deref(), &set);
            updates.reverse();
            self.pending = updates;
            self.known = Some(set);
        }
    }

    async fn decode(&mut self, list: &[serde_json::Value]) -> Vec<Arc<Endpoint>> {
        let mut set = Vec::new();
        for value in list {
            let candidate = match decode_host(value) {
                Decoded::Serve(candidate) => candidate,
                Decoded::Skip => continue,
                Decoded::Malformed(key, why) => {
                    self.report(&key, &why);
                    continue;
                }
            };
            match resolve_host(&candidate.host, candidate.port).await {
                Ok(address) => {
                    let mut endpoint = Endpoint::new(address).with_weight(candidate.weight);
                    endpoint.set_zone(candidate.zone);
                    endpoint.set_metadata(candidate.metadata);
                    set.push(Arc::new(endpoint));
                }
                Err(why) => self.report(&candidate.key, &why),
            }
        }
        self.malformed.end_answer();
        set.sort_by_key(|e| e.address);
        set.dedup_by_key(|e| e.address);
        set
    }

    fn report(&mut self, key: &str, why: &str) {
        let what = format!(
            "nacos service {}@@{} instance {key}: {why}",
            self.group, self.service
        );
        self.malformed.report(&self.metrics, &self.registry, what);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn registry(settings: serde_json::Value) -> NacosRegistry {
        let config = config::decode(&settings).unwrap();
        NacosRegistry {
            name: "nacos".into(),
            metrics: Arc::default(),
            client: Arc::new(Client::new(reqwest::Client::new(), config)),
        }
    }

    #[test]
    fn services_split_into_group_and_name() {
        assert_eq!(split_service("orders"), ("DEFAULT_GROUP", "orders"));
        assert_eq!(split_service("G@@orders"), ("G", "orders"));
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
        check(ServiceQuery::new("orders"), &[]);
        check(ServiceQuery::new("G@@orders"), &[]);
        check(ServiceQuery::new("@@orders"), &["service"]);
        check(ServiceQuery::new("G@@"), &["service"]);
        let mut q = ServiceQuery::new("x");
        q.port = Some("80".into());
        q.tags = vec!["t".into()];
        check(q, &["port", "tags"]);
    }

    #[test]
    fn list_urls() {
        let r = registry(json!({"namespace": "dev", "clusters": ["A", "B"]}));
        let base = &r.client.config().servers[0];
        assert_eq!(
            r.client.list_url(base, false, "G", "orders", Some("t")).as_str(),
            "http://127.0.0.1:8848/nacos/v2/ns/instance/list?namespaceId=dev&groupName=G&serviceName=orders&clusterName=A%2CB&healthyOnly=true&accessToken=t"
        );
        assert_eq!(
            r.client.list_url(base, true, "G", "orders", None).as_str(),
            "http://127.0.0.1:8848/nacos/v1/ns/instance/list?namespaceId=dev&serviceName=G%40%40orders&clusters=A%2CB&healthyOnly=true"
        );
    }
}
