//! The `http` registry: Prometheus HTTP service discovery (`http_sd_config`), the plug for
//! every inventory system Switchyard does not speak natively.
//!
//! ```toml
//! [registries.inventory]
//! type = "http"
//! url = "http://127.0.0.1:9000/targets"
//! refresh_interval = "30s"            # default 60s, as Prometheus
//! # basic_auth = { username = "u", password = "p" }   (or password_file)
//! # bearer_token = "..." | bearer_token_file = "path"
//! # ca = "ca.pem"                     # https only
//! ```
//!
//! A GET of `url` answers the Prometheus file_sd JSON list,
//! `[{"targets":["10.0.0.5:8080"],"labels":{"__service__":"orders","__weight__":"3"}}]`,
//! decoded by the `file` registry's decoder ([`switchyard_file::parse_file_sd`]): a source's
//! `service` is the `__service__` label. One poller per registry ([`poll`]) serves every
//! watched service; `If-None-Match`/`ETag` make an unchanged list cheap.
//!
//! Failure behaviour, as Prometheus's: a non-200 answer, a body that is not a JSON list, or
//! an unreachable server keeps the last good set (stale) and shows the error in
//! `/api/registries`; `200 []` is an authoritative "no targets". A malformed group or target
//! inside a good list is skipped and counted; the others stay.

pub mod answer;
pub mod config;
pub mod fetch;
pub mod poll;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use switchyard_registry::{
    ConfigIssue, Endpoint, Registry, RegistryContext, RegistryError, RegistryFactory, ServiceQuery,
    Update, UpdateStream,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use config::Config;
use poll::State;

/// How long a TCP (and TLS) connection to the inventory server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Builds `type = "http"` registries.
#[derive(Debug, Default)]
pub struct HttpSdFactory;

impl RegistryFactory for HttpSdFactory {
    fn kind(&self) -> &'static str {
        "http"
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
        Ok(Arc::new(HttpSdRegistry {
            ctx,
            config,
            client,
            poller: Mutex::new(None),
        }))
    }
}

/// A configured HTTP SD registry. Nothing is fetched until the first `watch`.
pub struct HttpSdRegistry {
    ctx: RegistryContext,
    config: Config,
    client: reqwest::Client,
    poller: Mutex<Option<(watch::Receiver<State>, JoinHandle<()>)>>,
}

impl Drop for HttpSdRegistry {
    fn drop(&mut self) {
        if let Some((_, task)) = self.poller.lock().unwrap_or_else(|p| p.into_inner()).take() {
            task.abort();
        }
    }
}

impl HttpSdRegistry {
    /// The shared poller's channel, started by the first `watch`.
    fn subscribe(&self) -> watch::Receiver<State> {
        let mut slot = self.poller.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((rx, task)) = slot.as_ref() {
            if !task.is_finished() {
                return rx.clone();
            }
        }
        let (tx, rx) = watch::channel(State::Pending);
        let task = tokio::spawn(poll::run(
            self.config.clone(),
            self.client.clone(),
            self.ctx.clone(),
            tx,
        ));
        *slot = Some((rx.clone(), task));
        rx
    }
}

#[async_trait]
impl Registry for HttpSdRegistry {
    fn kind(&self) -> &'static str {
        "http"
    }

    fn check_query(&self, query: &ServiceQuery) -> Result<(), Vec<ConfigIssue>> {
        let mut issues = Vec::new();
        if query.service.trim().is_empty() {
            issues.push(ConfigIssue::new(
                "service",
                "must name a service: the __service__ label of the targets",
            ));
        }
        if query.port.is_some() {
            issues.push(ConfigIssue::new(
                "port",
                "not used by http registries: each target carries its port",
            ));
        }
        if !query.tags.is_empty() {
            issues.push(ConfigIssue::new("tags", "not supported by http registries"));
        }
        if query.datacenter.is_some() {
            issues.push(ConfigIssue::new(
                "datacenter",
                "not supported by http registries",
            ));
        }
        if issues.is_empty() {
            Ok(())
        } else {
            Err(issues)
        }
    }

    async fn watch(&self, query: &ServiceQuery) -> Result<UpdateStream, RegistryError> {
        let subscription = Subscription {
            rx: self.subscribe(),
            service: query.service.clone(),
            started: false,
            done: false,
            last: None,
        };
        Ok(futures::stream::unfold(subscription, |mut s| async move {
            s.next().await.map(|item| (item, s))
        })
        .boxed())
    }
}

/// One watched service reading the poller's channel.
struct Subscription {
    rx: watch::Receiver<State>,
    service: String,
    /// Whether the state current at subscription was looked at.
    started: bool,
    /// Whether the stream ended with an error.
    done: bool,
    /// The set last sent (`None` inside: the service was absent).
    last: Option<Option<Vec<Endpoint>>>,
}

impl Subscription {
    /// The next update or error; `None` after an error (the recover wrapper watches again).
    async fn next(&mut self) -> Option<Result<Update, RegistryError>> {
        if self.done {
            return None;
        }
        loop {
            let state = if self.started {
                if self.rx.changed().await.is_err() {
                    self.done = true;
                    return Some(Err(RegistryError::unavailable(
                        "the http_sd poller stopped",
                    )));
                }
                self.rx.borrow_and_update().clone()
            } else {
                self.started = true;
                let state = self.rx.borrow_and_update().clone();
                // A watch started while the server is failing (the recover wrapper's, after
                // the error was reported) waits for the next fetch instead of failing at once.
                if matches!(state, State::Failed { .. }) {
                    continue;
                }
                state
            };
            match state {
                State::Pending => {}
                State::Failed { .. } => {
                    self.done = true;
                    return state.error().map(Err);
                }
                State::Loaded(services) => {
                    let set = services.get(&self.service).cloned();
                    if self.last.as_ref() == Some(&set) {
                        continue;
                    }
                    self.last = Some(set.clone());
                    return Some(Ok(match set {
                        Some(endpoints) => Update::reset(endpoints),
                        None => Update::DoesNotExist,
                    }));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn queries() {
        let registry = HttpSdFactory
            .build(
                RegistryContext::new("http"),
                &json!({"url": "http://127.0.0.1:1/targets"}),
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
        check(ServiceQuery::new(" "), &["service"]);
        let query = ServiceQuery {
            port: Some("http".into()),
            tags: vec!["a".into()],
            datacenter: Some("dc".into()),
            ..ServiceQuery::new("orders")
        };
        check(query, &["port", "tags", "datacenter"]);
    }

    fn services(text: &str) -> State {
        let ctx = RegistryContext::new("http");
        State::Loaded(Arc::new(
            switchyard_file::parse_file_sd(text, &ctx).unwrap(),
        ))
    }

    fn subscription(rx: watch::Receiver<State>) -> Subscription {
        Subscription {
            rx,
            service: "a".into(),
            started: false,
            done: false,
            last: None,
        }
    }

    /// The next item in short form, or "nothing" when none comes within 100 ms.
    async fn next(s: &mut Subscription) -> String {
        let item = tokio::time::timeout(std::time::Duration::from_millis(100), s.next()).await;
        match item {
            Err(_) => "nothing".into(),
            Ok(None) => "end".into(),
            Ok(Some(Err(e))) => format!("error {}", e.message()),
            Ok(Some(Ok(Update::Reset(e)))) => format!("reset {}", e.len()),
            Ok(Some(Ok(other))) => format!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn subscriptions_send_changes_once_and_end_on_errors() {
        let one = r#"[{"targets":["127.0.0.1:1"],"labels":{"__service__":"a"}}]"#;
        let two = r#"[{"targets":["127.0.0.1:1","127.0.0.1:2"],"labels":{"__service__":"a"}}]"#;
        let (tx, rx) = watch::channel(State::Pending);
        let mut s = subscription(rx.clone());
        assert_eq!(next(&mut s).await, "nothing");
        tx.send_replace(services(one));
        assert_eq!(next(&mut s).await, "reset 1");
        // The same set again (another service changed): nothing.
        tx.send_replace(services(one));
        assert_eq!(next(&mut s).await, "nothing");
        tx.send_replace(services(two));
        assert_eq!(next(&mut s).await, "reset 2");
        tx.send_replace(services("[]"));
        assert_eq!(next(&mut s).await, "DoesNotExist");
        tx.send_replace(State::Failed {
            kind: switchyard_registry::ErrorKind::Unavailable,
            message: "down".into(),
        });
        assert_eq!(next(&mut s).await, "error down");
        assert_eq!(next(&mut s).await, "end");
        // Watching again while failing waits for the next result instead of failing at once.
        let mut again = subscription(rx);
        assert_eq!(next(&mut again).await, "nothing");
        tx.send_replace(services(one));
        assert_eq!(next(&mut again).await, "reset 1");
    }

    #[test]
    fn factory_refuses_bad_settings_without_connecting() {
        let err = HttpSdFactory
            .build(
                RegistryContext::new("h"),
                &json!({"url": "ftp://x", "refresh_interval": "1ms"}),
            )
            .err()
            .unwrap();
        let paths: Vec<&str> = err.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(paths, ["url", "refresh_interval"]);
    }
}
