//! The `docker` registry: running containers labelled `switchyard.service=NAME` are the
//! endpoints of service NAME, read from a Docker engine and followed through its event
//! stream.
//!
//! ```toml
//! [registries.docker]
//! type = "docker"
//! host = "unix:///var/run/docker.sock"   # or tcp://HOST:PORT; default $DOCKER_HOST, else this
//! network = "switchyard-demo"            # optional: address containers on this network
//! ```
//!
//! Labels and the address rule: [`labels`]. One watcher task per registry ([`engine::run`])
//! lists the labelled containers, then follows `/events` (start, die, health_status,
//! destroy, pause, unpause) and lists again on each; when the engine cannot be reached, the
//! watchers' streams fail (the last set stays, stale) and the task reconnects with a
//! backoff of 250 ms to 5 s, listing again in full. A container whose Docker health check is
//! `unhealthy` (or still `starting`) is reported unhealthy; a service with no running
//! labelled container does not exist (its set empties). Swarm services are out of scope:
//! only the containers of the one engine `host` names are read.

pub mod engine;
pub mod labels;

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::StreamExt;
use serde::Deserialize;
use switchyard_registry::{
    decode_settings, ConfigIssue, Endpoint, Registry, RegistryContext, RegistryError,
    RegistryFactory, ServiceQuery, Update, UpdateStream,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use engine::EngineState;

/// The engine used when neither `host` nor `$DOCKER_HOST` is set.
pub const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

/// Builds `type = "docker"` registries.
#[derive(Debug, Default)]
pub struct DockerFactory;

/// `[registries.NAME]` with `type = "docker"`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// The engine: `unix:///path` or `tcp://HOST:PORT`. Default: `$DOCKER_HOST`, else
    /// [`DEFAULT_HOST`].
    #[serde(default)]
    host: Option<String>,
    /// The network whose container IPs are the addresses. Default: none (see the address
    /// rule in [`labels`]).
    #[serde(default)]
    network: Option<String>,
}

impl RegistryFactory for DockerFactory {
    fn kind(&self) -> &'static str {
        "docker"
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
        let host = settings
            .host
            .or_else(|| std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()))
            .unwrap_or_else(|| DEFAULT_HOST.to_owned());
        let valid_host = host
            .strip_prefix("unix://")
            .is_some_and(|p| p.starts_with('/'))
            || ["tcp://", "http://"]
                .iter()
                .any(|s| host.strip_prefix(s).is_some_and(|a| a.contains(':')));
        if !valid_host {
            issues.push(ConfigIssue::new(
                "host",
                format!("{host:?}: expected unix:///path/to/docker.sock or tcp://HOST:PORT"),
            ));
        }
        if settings.network.as_deref().is_some_and(str::is_empty) {
            issues.push(ConfigIssue::new(
                "network",
                "must not be empty (leave it out instead)",
            ));
        }
        if !issues.is_empty() {
            return Err(issues);
        }
        Ok(Arc::new(DockerRegistry {
            ctx,
            host,
            network: settings.network,
            watcher: Mutex::new(None),
        }))
    }
}

/// A registry reading one Docker engine.
pub struct DockerRegistry {
    ctx: RegistryContext,
    host: String,
    network: Option<String>,
    watcher: Mutex<Option<(watch::Receiver<EngineState>, JoinHandle<()>)>>,
}

impl Drop for DockerRegistry {
    fn drop(&mut self) {
        if let Some((_, task)) = self
            .watcher
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            task.abort();
        }
    }
}

impl DockerRegistry {
    /// The engine this registry reads.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The shared watcher, started by the first `watch`.
    fn subscribe(&self) -> watch::Receiver<EngineState> {
        let mut slot = self.watcher.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((rx, _)) = slot.as_ref() {
            return rx.clone();
        }
        let (tx, rx) = watch::channel(EngineState::Pending);
        let task = tokio::spawn(engine::run(
            self.host.clone(),
            self.network.clone(),
            self.ctx.clone(),
            tx,
        ));
        *slot = Some((rx.clone(), task));
        rx
    }
}

#[async_trait]
impl Registry for DockerRegistry {
    fn kind(&self) -> &'static str {
        "docker"
    }

    fn check_query(&self, query: &ServiceQuery) -> Result<(), Vec<ConfigIssue>> {
        if query.service.trim().is_empty() {
            return Err(vec![ConfigIssue::new(
                "service",
                "must name the switchyard.service label's value",
            )]);
        }
        Ok(())
    }

    async fn watch(&self, query: &ServiceQuery) -> Result<UpdateStream, RegistryError> {
        let rx = self.subscribe();
        let service = query.service.clone();
        let stream = tokio_stream::wrappers::WatchStream::new(rx)
            // Each item: Some(Ok(set)) when loaded (None = no such service), Some(Err) when
            // the engine is down, None while pending.
            .filter_map(move |state| {
                let item = match state {
                    EngineState::Pending => None,
                    EngineState::Failed { error } => Some(Err(RegistryError::unavailable(error))),
                    EngineState::Loaded(services) => Some(Ok(services.get(&service).cloned())),
                };
                futures::future::ready(item)
            })
            // Only changes of this service go out; an error ends the stream (the recover
            // wrapper watches again after a backoff, and the first answer is a reset).
            .scan(
                (false, None::<Option<Vec<Arc<Endpoint>>>>),
                |(failed, last), item| {
                    if *failed {
                        return futures::future::ready(None);
                    }
                    let out = match item {
                        Err(error) => {
                            *failed = true;
                            Some(Err(error))
                        }
                        Ok(set) if last.as_ref() == Some(&set) => None,
                        Ok(set) => {
                            *last = Some(set.clone());
                            Some(Ok(match set {
                                Some(endpoints) => Update::Reset(endpoints),
                                None => Update::DoesNotExist,
                            }))
                        }
                    };
                    futures::future::ready(Some(out))
                },
            )
            .filter_map(futures::future::ready);
        Ok(stream.boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(settings: serde_json::Value) -> Result<Arc<dyn Registry>, Vec<ConfigIssue>> {
        DockerFactory.build(RegistryContext::new("docker"), &settings)
    }

    #[test]
    fn settings() {
        assert!(build(serde_json::json!({})).is_ok());
        assert!(build(serde_json::json!({"host": "tcp://127.0.0.1:2375"})).is_ok());
        assert!(
            build(serde_json::json!({"host": "unix:///run/docker.sock", "network": "demo"}))
                .is_ok()
        );
        let issues = build(serde_json::json!({"host": "/var/run/docker.sock", "network": ""}))
            .err()
            .unwrap();
        let paths: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(paths, ["host", "network"], "{issues:?}");
        let issues = build(serde_json::json!({"hosts": "x"})).err().unwrap();
        assert!(
            issues[0].message.contains("unknown field `hosts`"),
            "{issues:?}"
        );
    }
}
