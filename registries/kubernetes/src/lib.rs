//! Switchyard's Kubernetes registry (`type = "kubernetes"`): the endpoints of a Service,
//! from its `discovery.k8s.io/v1` EndpointSlices, watched with kube-runtime.
//!
//! A source names `service = "namespace/name"` and optionally `port` (a port name or
//! number). The registry runs one kube-runtime [`watcher`](kube::runtime::watcher) per
//! namespace, over the slices labelled `kubernetes.io/service-name`, shared by every
//! watched service of that namespace ([`shared`]); each service's stream picks its own
//! slices out of it and turns them into endpoints as kube-proxy would ([`slices`]).
//!
//! Several registries of this type are several clusters: each has its own kubeconfig
//! and/or context.
//!
//! Failure handling: a 410 Gone makes the watcher relist, and the relisted set replaces the
//! old one at `InitDone` (a `Reset`, sent only if the set changed). A watch cut mid-stream
//! is resumed from the last resourceVersion. An unreachable API server or refused
//! credentials end the namespace's watcher: its service streams yield the error and end,
//! and the shared recover wrapper keeps the last set (stale) and watches again after a
//! backoff.

mod settings;
mod shared;
pub mod slices;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};

use async_trait::async_trait;
use futures::StreamExt;
/// The k8s-openapi type that [`slices::resolve`] reads, re-exported for callers (fuzzers,
/// tools) that decode slices themselves.
pub use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use switchyard_registry::{
    decode_settings, ConfigIssue, Registry, RegistryContext, RegistryError, RegistryFactory,
    ServiceQuery, Update, UpdateStream,
};

use settings::{parse_query, Target};
pub use settings::{AddressFamily, PortSpec, Settings};
use shared::{NamespaceState, NamespaceWatch};
use slices::{diff, resolve_family, Published};

/// Builds Kubernetes registries from `[registries.NAME]` tables with `type = "kubernetes"`.
#[derive(Clone, Copy, Debug, Default)]
pub struct KubernetesFactory;

impl RegistryFactory for KubernetesFactory {
    fn kind(&self) -> &'static str {
        "kubernetes"
    }

    fn settings_schema(&self, generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        generator.subschema_for::<Settings>()
    }

    fn build(
        &self,
        ctx: RegistryContext,
        settings: &serde_json::Value,
    ) -> Result<Arc<dyn Registry>, Vec<ConfigIssue>> {
        let settings: Settings = decode_settings(settings).map_err(|issue| vec![issue])?;
        let kubeconfig = settings
            .kubeconfig
            .as_deref()
            .map(|p| ctx.resolve_path(&expand_home(p)));
        let issues = settings.check(kubeconfig.as_ref());
        if !issues.is_empty() {
            return Err(issues);
        }
        Ok(Arc::new(KubernetesRegistry {
            ctx,
            settings,
            kubeconfig,
            client: tokio::sync::Mutex::new(None),
            namespaces: Mutex::new(HashMap::new()),
        }))
    }
}

/// `~/x` to `$HOME/x`, as kubectl users write it.
fn expand_home(path: &str) -> String {
    match (path.strip_prefix("~/"), std::env::var("HOME")) {
        (Some(rest), Ok(home)) => format!("{home}/{rest}"),
        _ => path.to_owned(),
    }
}

/// One cluster's EndpointSlices.
pub struct KubernetesRegistry {
    ctx: RegistryContext,
    settings: Settings,
    kubeconfig: Option<PathBuf>,
    /// Made on the first watch (building must not connect), then reused.
    client: tokio::sync::Mutex<Option<Client>>,
    /// The namespace watchers running, shared by the service streams holding them.
    namespaces: Mutex<HashMap<String, Weak<NamespaceWatch>>>,
}

impl std::fmt::Debug for KubernetesRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesRegistry")
            .field("name", &self.ctx.name)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl KubernetesRegistry {
    async fn client(&self) -> Result<Client, RegistryError> {
        let mut cached = self.client.lock().await;
        if let Some(client) = cached.as_ref() {
            return Ok(client.clone());
        }
        let config = self.load_config().await?;
        // Ignored when a provider is already installed (by us or by the binary).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = Client::try_from(config).map_err(|e| {
            RegistryError::unavailable(format!("building the Kubernetes client: {e}"))
        })?;
        *cached = Some(client.clone());
        Ok(client)
    }

    /// The explicit kubeconfig; else `$KUBECONFIG` or `~/.kube/config`; else in-cluster.
    async fn load_config(&self) -> Result<kube::Config, RegistryError> {
        let options = KubeConfigOptions {
            context: self.settings.context.clone(),
            ..KubeConfigOptions::default()
        };
        let unusable = |what: String| RegistryError::unavailable(what);
        if let Some(path) = &self.kubeconfig {
            let kubeconfig = Kubeconfig::read_from(path)
                .map_err(|e| unusable(format!("reading kubeconfig {}: {e}", path.display())))?;
            return kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|e| unusable(format!("kubeconfig {}: {e}", path.display())));
        }
        match kube::Config::from_kubeconfig(&options).await {
            Ok(config) => Ok(config),
            Err(kubeconfig_err) if self.settings.context.is_none() => kube::Config::incluster().map_err(|e| {
                unusable(format!(
                    "no usable kubeconfig ($KUBECONFIG, ~/.kube/config: {kubeconfig_err}) and not in a cluster ({e})"
                ))
            }),
            Err(e) => Err(unusable(format!("kubeconfig ($KUBECONFIG or ~/.kube/config): {e}"))),
        }
    }

    /// The namespace's running watcher, or a new one if none runs or it failed.
    fn namespace_watch(&self, client: &Client, namespace: &str) -> Arc<NamespaceWatch> {
        let mut namespaces = self
            .namespaces
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        namespaces.retain(|_, weak| weak.strong_count() > 0);
        if let Some(existing) = namespaces.get(namespace).and_then(Weak::upgrade) {
            if !existing.has_failed() {
                return existing;
            }
        }
        let api: Api<EndpointSlice> = Api::namespaced(client.clone(), namespace);
        let started = NamespaceWatch::start(api, namespace.to_owned());
        namespaces.insert(namespace.to_owned(), Arc::downgrade(&started));
        started
    }
}

#[async_trait]
impl Registry for KubernetesRegistry {
    fn kind(&self) -> &'static str {
        "kubernetes"
    }

    fn check_query(&self, query: &ServiceQuery) -> Result<(), Vec<ConfigIssue>> {
        parse_query(query, &self.settings).map(|_| ())
    }

    async fn watch(&self, query: &ServiceQuery) -> Result<UpdateStream, RegistryError> {
        let target = parse_query(query, &self.settings).map_err(|issues| {
            let text: Vec<String> = issues.iter().map(ToString::to_string).collect();
            RegistryError::invalid_query(text.join("; "))
        })?;
        let client = self.client().await?;
        let namespace = self.namespace_watch(&client, &target.namespace);
        Ok(service_stream(self.ctx.clone(), namespace, target))
    }
}

// === one service's stream ===

struct ServiceStream {
    ctx: RegistryContext,
    /// Keeps the namespace watcher running while this stream lives.
    _namespace: Arc<NamespaceWatch>,
    state: tokio::sync::watch::Receiver<NamespaceState>,
    target: Target,
    published: Option<Published>,
    seen_slices: Option<Option<shared::Slices>>,
    seen_relists: u64,
    pending: std::collections::VecDeque<Update>,
    done: bool,
}

fn service_stream(
    ctx: RegistryContext,
    namespace: Arc<NamespaceWatch>,
    target: Target,
) -> UpdateStream {
    let state = namespace.subscribe();
    let stream = ServiceStream {
        ctx,
        _namespace: namespace,
        state,
        target,
        published: None,
        seen_slices: None,
        seen_relists: 0,
        pending: Default::default(),
        done: false,
    };
    futures::stream::unfold(stream, |mut s| async move {
        let item = s.next().await?;
        Some((item, s))
    })
    .boxed()
}

impl ServiceStream {
    async fn next(&mut self) -> Option<Result<Update, RegistryError>> {
        loop {
            if let Some(update) = self.pending.pop_front() {
                return Some(Ok(update));
            }
            if self.done {
                return None;
            }
            let state = self.state.borrow_and_update().clone();
            if let Some((kind, message)) = state.failed {
                self.done = true;
                return Some(Err(RegistryError::new(kind, message)));
            }
            if state.synced {
                self.refresh(&state);
                if !self.pending.is_empty() {
                    continue;
                }
            }
            if self.state.changed().await.is_err() {
                self.done = true;
                return Some(Err(RegistryError::unavailable(
                    "the EndpointSlice watcher stopped",
                )));
            }
        }
    }

    /// Recomputes the service's set if its slices changed, queueing the updates.
    fn refresh(&mut self, state: &NamespaceState) {
        let slices = state.services.get(&self.target.name).cloned();
        let relisted = state.relists != self.seen_relists;
        let unchanged = match (&self.seen_slices, &slices) {
            (Some(Some(a)), Some(b)) => Arc::ptr_eq(a, b),
            (Some(None), None) => true,
            _ => false,
        };
        self.seen_relists = state.relists;
        if unchanged && !relisted {
            return;
        }
        self.seen_slices = Some(slices.clone());
        let now = match &slices {
            None => Published::Missing,
            Some(slices) => {
                let resolved =
                    resolve_family(slices.values(), &self.target.port, self.target.family);
                for problem in &resolved.malformed {
                    self.ctx.metrics.malformed(
                        &self.ctx.name,
                        format_args!("{}/{}: {problem}", self.target.namespace, self.target.name),
                    );
                }
                for note in &resolved.skipped {
                    tracing::debug!(registry = %self.ctx.name, service = %self.target.name, "{note}");
                }
                if resolved.endpoints.is_empty()
                    && !resolved.skipped.is_empty()
                    && matches!(self.target.port, PortSpec::Number(_) | PortSpec::Name(_))
                {
                    tracing::warn!(
                        registry = %self.ctx.name,
                        "{}/{}: no endpoint: {}",
                        self.target.namespace,
                        self.target.name,
                        resolved.skipped.join("; ")
                    );
                }
                Published::set(self.published.as_ref(), resolved.endpoints)
            }
        };
        let updates = diff(self.published.as_ref(), &now, relisted);
        self.pending.extend(updates);
        self.published = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(settings: serde_json::Value) -> Result<Arc<dyn Registry>, Vec<String>> {
        KubernetesFactory
            .build(RegistryContext::new("k8s"), &settings)
            .map_err(|issues| issues.into_iter().map(|i| i.path).collect())
    }

    fn issues(settings: serde_json::Value) -> Vec<String> {
        build(settings).err().unwrap_or_default()
    }

    #[test]
    fn settings_decode() {
        assert!(build(serde_json::json!({})).is_ok());
        assert!(build(serde_json::json!({"context": "prod", "namespaces": ["shop"]})).is_ok());
        assert_eq!(issues(serde_json::json!({"kubecfg": "x"})), ["kubecfg"]);
        for family in ["ipv4", "ipv6", "any"] {
            assert!(build(serde_json::json!({ "address_family": family })).is_ok());
        }
        assert_eq!(
            issues(serde_json::json!({"address_family": "dual"})),
            ["address_family"]
        );
        assert_eq!(
            issues(serde_json::json!({"namespaces": "shop"})),
            ["namespaces"]
        );
        assert_eq!(
            issues(serde_json::json!({"kubeconfig": "/nonexistent"})),
            ["kubeconfig"]
        );
        assert_eq!(
            issues(serde_json::json!({"context": "", "namespaces": ["A"]})),
            ["context", "namespaces[0]"]
        );
    }

    #[test]
    fn queries_are_checked_against_the_allow_list() {
        let registry = build(serde_json::json!({"namespaces": ["shop"]})).unwrap();
        assert!(registry.check_query(&ServiceQuery::new("shop/web")).is_ok());
        let issues = registry
            .check_query(&ServiceQuery::new("kube-system/dns"))
            .unwrap_err();
        assert_eq!(issues[0].path, "service");
        assert!(issues[0].message.contains("shop"), "{}", issues[0].message);
    }

    #[test]
    fn home_expands() {
        if let Ok(home) = std::env::var("HOME") {
            assert_eq!(
                expand_home("~/.kube/config"),
                format!("{home}/.kube/config")
            );
        }
        assert_eq!(expand_home("/etc/kubeconfig"), "/etc/kubeconfig");
    }
}
