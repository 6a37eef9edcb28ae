//! One kube-runtime watcher per namespace, shared by every watched service there.
//!
//! The watcher lists and watches the namespace's EndpointSlices that carry the label
//! `kubernetes.io/service-name` (an existence selector: one watch, however many services
//! are watched there). It keeps the slices grouped by service and publishes the grouping
//! through a `tokio::sync::watch` channel that each service's stream reads.
//!
//! Relists are bracketed as kube-runtime's reflector does: `Init` starts a buffer,
//! `InitApply` fills it, and only `InitDone` swaps it in, so a consumer never sees a
//! half-built set. A 410 Gone (`resourceVersion` too old, or an expired `continue` token)
//! and a watch stream cut mid-way are left to the watcher, which relists or resumes on its
//! own; any other error (API server unreachable, credentials refused) ends this watcher:
//! every service stream reports it and ends, and the shared recover wrapper watches again
//! after its backoff, which starts a new watcher for the namespace.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher;
use kube::Api;
use switchyard_registry::{ErrorKind, RegistryError};
use tokio::sync::watch as channel;
use tokio::task::JoinHandle;

/// The label joining EndpointSlices to their Service.
pub const SERVICE_LABEL: &str = "kubernetes.io/service-name";

/// Errors tolerated in a row (410s, cut watch streams) before the watcher gives up.
const TOLERATED_ERRORS: u32 = 3;

/// A service's slices, by slice name.
pub type Slices = Arc<BTreeMap<String, EndpointSlice>>;

/// What a namespace watcher publishes.
#[derive(Clone, Debug, Default)]
pub struct NamespaceState {
    /// Whether a first list completed (`InitDone`).
    pub synced: bool,
    /// How many relists completed; a change means the sets were replaced wholesale.
    pub relists: u64,
    /// Slices by service name. A service's `Arc` changes only when its slices do.
    pub services: Arc<BTreeMap<String, Slices>>,
    /// Set when the watcher stopped for good.
    pub failed: Option<(ErrorKind, String)>,
}

/// A running watcher for one namespace. Dropping the last handle stops it.
#[derive(Debug)]
pub struct NamespaceWatch {
    state: channel::Sender<NamespaceState>,
    task: JoinHandle<()>,
}

impl Drop for NamespaceWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl NamespaceWatch {
    /// Starts watching the EndpointSlices of `api`'s namespace.
    pub fn start(api: Api<EndpointSlice>, namespace: String) -> Arc<NamespaceWatch> {
        let state = channel::Sender::new(NamespaceState::default());
        let task = tokio::spawn(run(api, namespace, state.clone()));
        Arc::new(NamespaceWatch { state, task })
    }

    /// A receiver of the published state.
    pub fn subscribe(&self) -> channel::Receiver<NamespaceState> {
        self.state.subscribe()
    }

    /// Whether the watcher stopped for good (a new one must be started).
    pub fn has_failed(&self) -> bool {
        self.state.borrow().failed.is_some() || self.task.is_finished()
    }
}

/// The service a slice belongs to, if labelled.
fn service_of(slice: &EndpointSlice) -> Option<&str> {
    slice
        .metadata
        .labels
        .as_ref()?
        .get(SERVICE_LABEL)
        .map(String::as_str)
        .filter(|s| !s.is_empty())
}

fn group(slices: impl IntoIterator<Item = EndpointSlice>) -> BTreeMap<String, Slices> {
    let mut grouped: BTreeMap<String, BTreeMap<String, EndpointSlice>> = BTreeMap::new();
    for slice in slices {
        if let (Some(service), Some(name)) = (service_of(&slice), slice.metadata.name.clone()) {
            grouped
                .entry(service.to_owned())
                .or_default()
                .insert(name, slice);
        }
    }
    grouped.into_iter().map(|(k, v)| (k, Arc::new(v))).collect()
}

/// Applies one added/changed (`Some`) or deleted (`None`) slice to the grouping.
fn apply(services: &mut BTreeMap<String, Slices>, name: &str, slice: Option<EndpointSlice>) {
    // Remove it from wherever it was (its service label may have changed).
    let holders: Vec<String> = services
        .iter()
        .filter(|(_, slices)| slices.contains_key(name))
        .map(|(service, _)| service.clone())
        .collect();
    for service in holders {
        if let Some(slices) = services.get_mut(&service) {
            Arc::make_mut(slices).remove(name);
            if slices.is_empty() {
                services.remove(&service);
            }
        }
    }
    if let Some(slice) = slice {
        if let Some(service) = service_of(&slice).map(str::to_owned) {
            let slices = services.entry(service).or_default();
            Arc::make_mut(slices).insert(name.to_owned(), slice);
        }
    }
}

/// Maps a watcher error to a registry error, or `None` when the watcher recovers from it
/// on its own (410 Gone: it relists; a cut watch stream: it resumes).
fn classify(error: &watcher::Error) -> Option<RegistryError> {
    use watcher::Error as W;
    let status_error = |code: u16, message: String| {
        let err = match code {
            401 | 403 => RegistryError::unauthorized(message),
            _ => RegistryError::protocol(message),
        };
        Some(err)
    };
    match error {
        W::WatchError(status) if status.code == 410 => None,
        W::InitialListFailed(kube::Error::Api(status)) if status.code == 410 => None,
        W::WatchFailed(_) => None,
        W::WatchError(status) => status_error(
            status.code,
            format!("watch error from the API server: {error}"),
        ),
        W::InitialListFailed(kube::Error::Api(status))
        | W::WatchStartFailed(kube::Error::Api(status)) => {
            status_error(status.code, error.to_string())
        }
        W::InitialListFailed(kube::Error::SerdeError(_)) | W::NoResourceVersion => {
            Some(RegistryError::protocol(error.to_string()))
        }
        W::InitialListFailed(_) | W::WatchStartFailed(_) => {
            Some(RegistryError::unavailable(error.to_string()))
        }
    }
}

async fn run(api: Api<EndpointSlice>, namespace: String, state: channel::Sender<NamespaceState>) {
    let config = watcher::Config::default().labels(SERVICE_LABEL);
    let mut events = watcher(api, config).boxed();
    let mut services: BTreeMap<String, Slices> = BTreeMap::new();
    let mut buffer: Option<Vec<EndpointSlice>> = None;
    let mut tolerated = 0u32;
    let failure = loop {
        let Some(event) = events.next().await else {
            break RegistryError::unavailable("the EndpointSlice watcher ended");
        };
        match event {
            Ok(watcher::Event::Init) => buffer = Some(Vec::new()),
            Ok(watcher::Event::InitApply(slice)) => buffer.get_or_insert_with(Vec::new).push(slice),
            Ok(watcher::Event::InitDone) => {
                tolerated = 0;
                services = group(buffer.take().unwrap_or_default());
                let snapshot = Arc::new(services.clone());
                state.send_modify(|s| {
                    s.synced = true;
                    s.relists += 1;
                    s.services = snapshot;
                });
            }
            Ok(watcher::Event::Apply(slice)) => {
                tolerated = 0;
                let name = slice.metadata.name.clone().unwrap_or_default();
                apply(&mut services, &name, Some(slice));
                let snapshot = Arc::new(services.clone());
                state.send_modify(|s| s.services = snapshot);
            }
            Ok(watcher::Event::Delete(slice)) => {
                tolerated = 0;
                let name = slice.metadata.name.clone().unwrap_or_default();
                apply(&mut services, &name, None);
                let snapshot = Arc::new(services.clone());
                state.send_modify(|s| s.services = snapshot);
            }
            Err(error) => match classify(&error) {
                None if tolerated < TOLERATED_ERRORS => {
                    tolerated += 1;
                    tracing::debug!(%namespace, "EndpointSlice watch interrupted, kube-runtime recovers: {error}");
                }
                None => break RegistryError::unavailable(error.to_string()),
                Some(failure) => break failure,
            },
        }
    };
    tracing::debug!(%namespace, "EndpointSlice watcher stopped: {failure}");
    state.send_modify(|s| {
        s.failed = Some((
            failure.kind(),
            format!("namespace {namespace}: {}", failure.message()),
        ));
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn slice(name: &str, service: &str) -> EndpointSlice {
        serde_json::from_value(
            json!({"metadata": {"name": name, "labels": {SERVICE_LABEL: service}},
            "addressType": "IPv4", "endpoints": []}),
        )
        .unwrap()
    }

    fn names(services: &BTreeMap<String, Slices>) -> Vec<String> {
        services
            .iter()
            .flat_map(|(svc, slices)| slices.keys().map(move |s| format!("{svc}/{s}")))
            .collect()
    }

    #[test]
    fn grouping_follows_the_service_label() {
        let mut services = group([
            slice("web-1", "web"),
            slice("web-2", "web"),
            slice("api-1", "api"),
        ]);
        assert_eq!(names(&services), ["api/api-1", "web/web-1", "web/web-2"]);
        let web_before = services["web"].clone();
        let api_before = services["api"].clone();
        // A relabelled slice moves; the untouched service keeps its Arc.
        apply(&mut services, "web-2", Some(slice("web-2", "api")));
        assert_eq!(names(&services), ["api/api-1", "api/web-2", "web/web-1"]);
        assert!(!Arc::ptr_eq(&web_before, &services["web"]));
        assert!(!Arc::ptr_eq(&api_before, &services["api"]));
        let web_now = services["web"].clone();
        apply(&mut services, "api-1", None);
        assert!(Arc::ptr_eq(&web_now, &services["web"]));
        apply(&mut services, "web-1", None);
        assert_eq!(names(&services), ["api/web-2"]);
    }
}
