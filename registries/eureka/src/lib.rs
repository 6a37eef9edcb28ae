//! The `eureka` registry: service instances from a Eureka server, fetched as Eureka
//! clients do.
//!
//! ```toml
//! [registries.eureka]
//! type = "eureka"
//! servers = ["http://127.0.0.1:8761/eureka"]   # tried in turn; http://user:pass@... for basic auth
//! fetch_interval = "30s"                        # default
//! prefer = "ip"                                 # ip (ipAddr, default) | hostname (hostName)
//!
//! [[upstreams.orders.sources]]
//! registry = "eureka"
//! service = "ORDERS"                            # the application name (case-insensitive)
//! ```
//!
//! Each watched service follows the client's `DiscoveryClient` cycle: a full `GET /apps`,
//! then every `fetch_interval` a `GET /apps/delta` applied to the local copy, whose
//! reconcile hash code must equal the delta's `apps__hashcode`; when it does not (a delta
//! missed, the server's delta window passed), a full `GET /apps` replaces the copy. Only
//! `UP` instances serve (see [`decode`]). Servers are tried in turn from the last one that
//! answered; the watch fails, and the last set stays (stale), only when all fail.

pub mod config;
pub mod decode;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use reqwest::StatusCode;
use switchyard_registry::{
    answer_updates, resolve_host, ConfigIssue, Endpoint, MalformedEntries, Registry,
    RegistryContext, RegistryError, RegistryFactory, RegistryMetrics, ServiceQuery, Update,
    UpdateStream,
};

use config::Config;
use decode::{apply_delta, decode_instance, hash_code, parse_apps, Apps, Decoded};

/// How long one request (connect included) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds `type = "eureka"` registries.
#[derive(Debug, Default)]
pub struct EurekaFactory;

impl RegistryFactory for EurekaFactory {
    fn kind(&self) -> &'static str {
        "eureka"
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
        Ok(Arc::new(EurekaRegistry {
            shared: Arc::new(Shared {
                name: ctx.name,
                metrics: ctx.metrics,
                http,
                config,
                current: AtomicUsize::new(0),
            }),
        }))
    }
}

/// A configured Eureka registry.
#[derive(Debug)]
pub struct EurekaRegistry {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    name: String,
    metrics: Arc<RegistryMetrics>,
    http: reqwest::Client,
    config: Config,
    /// The server to try first.
    current: AtomicUsize,
}

impl Shared {
    /// `GET <server>/<path>` as JSON from the first server that answers.
    async fn get(&self, path: &str) -> Result<serde_json::Value, RegistryError> {
        let servers = &self.config.servers;
        let start = self.current.load(Ordering::Relaxed);
        let mut errors = Vec::new();
        for attempt in 0..servers.len() {
            let index = (start + attempt) % servers.len();
            let server = &servers[index];
            let url = server.url.join(path).expect("a relative path joins");
            let mut request = self
                .http
                .get(url)
                .header(reqwest::header::ACCEPT, "application/json");
            if let Some((user, password)) = &server.basic_auth {
                request = request.basic_auth(user, Some(password));
            }
            let base = server.url.as_str();
            let response = match request.send().await {
                Ok(response) => response,
                Err(err) => {
                    errors.push(RegistryError::unavailable(format!(
                        "eureka at {base} unreachable: {err}"
                    )));
                    continue;
                }
            };
            let status = response.status();
            let body = response.bytes().await.unwrap_or_default();
            let text = String::from_utf8_lossy(&body);
            if status.is_success() {
                match serde_json::from_slice(&body) {
                    Ok(value) => {
                        self.current.store(index, Ordering::Relaxed);
                        return Ok(value);
                    }
                    Err(e) => errors.push(RegistryError::protocol(format!(
                        "eureka at {base} answered {path} with something other than JSON: {e}"
                    ))),
                }
            } else if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                return Err(RegistryError::unauthorized(format!(
                    "eureka at {base} refused {path}: {} {} (check the credentials in the server URL)",
                    status.as_u16(),
                    text.trim()
                )));
            } else {
                errors.push(RegistryError::unavailable(format!(
                    "eureka at {base} failed {path}: {} {}",
                    status.as_u16(),
                    text.chars().take(300).collect::<String>().trim()
                )));
            }
        }
        let kind = errors
            .last()
            .map_or(switchyard_registry::ErrorKind::Unavailable, |e| e.kind());
        let text: Vec<&str> = errors.iter().map(RegistryError::message).collect();
        Err(RegistryError::new(
            kind,
            format!("every eureka server failed: {}", text.join("; ")),
        ))
    }
}

#[async_trait]
impl Registry for EurekaRegistry {
    fn kind(&self) -> &'static str {
        "eureka"
    }

    fn check_query(&self, query: &ServiceQuery) -> Result<(), Vec<ConfigIssue>> {
        let mut issues = Vec::new();
        if query.service.trim().is_empty() || query.service.contains('/') {
            issues.push(ConfigIssue::new(
                "service",
                format!(
                    "{:?} is not a Eureka application name (not empty, no '/')",
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
                    format!("eureka sources do not take `{key}`"),
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
        let poll = Poll {
            shared: self.shared.clone(),
            app: query.service.to_ascii_uppercase(),
            apps: None,
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

/// One watched application's fetch cycle.
struct Poll {
    shared: Arc<Shared>,
    app: String,
    /// The local copy of the whole registry; `None` before the first full fetch.
    apps: Option<Apps>,
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
                let interval = self.shared.config.fetch_interval;
                tokio::time::sleep(interval + interval.mul_f64(fastrand::f64() / 10.0)).await;
            }
            if let Err(error) = self.refresh().await {
                self.failed = true;
                return Some(Err(error));
            }
            let set = self.decode().await;
            let mut updates = answer_updates(self.known.as_deref(), &set);
            updates.reverse();
            self.pending = updates;
            self.known = Some(set);
        }
    }

    /// A full fetch the first time (and, as `DiscoveryClient.fetchRegistry`, while the local
    /// copy holds no application), a delta after; a full fetch again when the delta's hash
    /// code disagrees with the local copy's.
    async fn refresh(&mut self) -> Result<(), RegistryError> {
        if let Some(apps) = self.apps.as_mut().filter(|apps| !apps.is_empty()) {
            let delta = self.shared.get("apps/delta").await?;
            let announced = apply_delta(apps, &delta).map_err(|why| {
                RegistryError::protocol(format!("eureka answered /apps/delta with {why}"))
            })?;
            let local = hash_code(apps);
            if announced.as_deref() == Some(local.as_str()) {
                return Ok(());
            }
            tracing::info!(registry = %self.shared.name, app = %self.app, local, announced = ?announced,
                "eureka apps__hashcode differs after the delta; fetching the full registry");
        }
        let full = self.shared.get("apps").await?;
        let (apps, _) = parse_apps(&full)
            .map_err(|why| RegistryError::protocol(format!("eureka answered /apps with {why}")))?;
        self.apps = Some(apps);
        Ok(())
    }

    async fn decode(&mut self) -> Vec<Arc<Endpoint>> {
        let instances: Vec<serde_json::Value> = self
            .apps
            .as_ref()
            .and_then(|apps| apps.get(&self.app))
            .map(|app| app.values().cloned().collect())
            .unwrap_or_default();
        let mut set = Vec::new();
        for instance in &instances {
            let candidate = match decode_instance(instance, self.shared.config.prefer) {
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
        let what = format!("eureka app {} instance {key}: {why}", self.app);
        let shared = &self.shared;
        self.malformed.report(&shared.metrics, &shared.name, what);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn queries() {
        let registry = EurekaFactory
            .build(RegistryContext::new("e"), &json!({}))
            .unwrap();
        assert!(registry.check_query(&ServiceQuery::new("orders")).is_ok());
        let mut q = ServiceQuery::new("a/b");
        q.tags = vec!["x".into()];
        let paths: Vec<String> = registry
            .check_query(&q)
            .unwrap_err()
            .into_iter()
            .map(|i| i.path)
            .collect();
        assert_eq!(paths, ["service", "tags"]);
        let err = EurekaFactory
            .build(RegistryContext::new("e"), &json!({"servers": ["x"]}))
            .err()
            .unwrap();
        assert_eq!(err[0].path, "servers[0]");
    }
}
