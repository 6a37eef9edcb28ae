//! The cache itself: one [`Upstream`] per configured upstream, each kept current by an
//! actor task that owns its sources' sets and publishes snapshots.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use arc_swap::{ArcSwap, Guard};
use futures::stream::{SelectAll, StreamExt};
use switchyard_registry::{recover, Backoff, RegistryMetrics, SourceEvent};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;

use crate::source::SourceSet;
use crate::{
    health_check, OutlierSpec, Snapshot, SourceRef, SourceStatus, StateStore, UpstreamSpec,
    UpstreamState,
};

// === impl Upstream ===

/// One upstream: its current snapshot and the status of its sources.
///
/// Dropping the last `Arc<Upstream>` stops its actor and its registry watches.
pub struct Upstream {
    /// A copy kept inline for the request path (one pointer less to follow).
    outlier: OutlierSpec,
    shared: Arc<Shared>,
    /// Shared with the actor: one copy per upstream (1,000 upstreams: ~0.5 MiB).
    spec: Arc<UpstreamSpec>,
    task: JoinHandle<()>,
    health_task: Option<JoinHandle<()>>,
}

/// What the actor and the handles share.
struct Shared {
    snapshot: ArcSwap<Snapshot>,
    statuses: Vec<Mutex<SourceStatus>>,
    /// Woken when passive or active health changed and the snapshot must be rebuilt.
    health_changed: Notify,
}

impl Upstream {
    /// The upstream's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The balancer's name.
    pub fn balancer(&self) -> &str {
        &self.spec.balancer
    }

    /// Passive health settings, for the request path to record failures with.
    pub fn outlier(&self) -> &OutlierSpec {
        &self.outlier
    }

    /// The current snapshot: one atomic load, no lock.
    #[inline]
    pub fn snapshot(&self) -> Guard<Arc<Snapshot>> {
        self.shared.snapshot.load()
    }

    /// The current snapshot as an owned `Arc`, for callers that keep it across awaits.
    pub fn snapshot_full(&self) -> Arc<Snapshot> {
        self.shared.snapshot.load_full()
    }

    /// Tells the actor that an endpoint's health changed (an ejection, an active check), so
    /// it rebuilds the snapshot.
    pub fn health_changed(&self) {
        self.shared.health_changed.notify_one();
    }

    /// The status of each source, in config order.
    pub fn sources(&self) -> Vec<SourceStatus> {
        self.shared
            .statuses
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).clone())
            .collect()
    }

    /// Whether every source has delivered its first complete answer.
    pub fn synced(&self) -> bool {
        self.sources().iter().all(|s| s.synced)
    }

    /// Whether `spec` watches exactly what this upstream watches, so a reload can keep it.
    fn same_spec(&self, spec: &UpstreamSpec) -> bool {
        let a = &self.spec;
        a.name == spec.name
            && a.balancer == spec.balancer
            && Arc::ptr_eq(&a.selector, &spec.selector)
            && a.outlier == spec.outlier
            && a.health_check == spec.health_check
            && a.panic_mode == spec.panic_mode
            && a.shrink_guard == spec.shrink_guard
            && a.sources.len() == spec.sources.len()
            && a.sources.iter().zip(&spec.sources).all(|(x, y)| {
                x.registry_name == y.registry_name
                    && Arc::ptr_eq(&x.registry, &y.registry)
                    && x.query == y.query
                    && x.priority == y.priority
                    && x.weight == y.weight
            })
    }

    fn start(spec: UpstreamSpec, state: Option<StateStore>) -> Arc<Upstream> {
        let spec = Arc::new(spec);
        let statuses = spec
            .sources
            .iter()
            .map(|s| {
                Mutex::new(SourceStatus {
                    registry: s.registry_name.clone(),
                    registry_kind: s.registry_kind,
                    service: s.query.service.clone(),
                    synced: false,
                    restored: false,
                    guarded: false,
                    stale: false,
                    endpoints: 0,
                    last_update: None,
                    last_error: None,
                })
            })
            .collect();
        let shared = Arc::new(Shared {
            snapshot: ArcSwap::from_pointee(Snapshot::empty(spec.selector.as_ref())),
            statuses,
            health_changed: Notify::new(),
        });
        // The channel only exists with active checks: an idle one costs a kilobyte.
        let (flips_tx, flips) = match spec.health_check {
            Some(_) => {
                let (tx, rx) = mpsc::unbounded_channel();
                (Some(tx), Some(rx))
            }
            None => (None, None),
        };
        let task = tokio::spawn(Actor::new(&spec, shared.clone(), state, flips).run());
        let health_task = spec
            .health_check
            .clone()
            .zip(flips_tx)
            .map(|(check, flips_tx)| {
                let reader = shared.clone();
                tokio::spawn(health_check::run(
                    check,
                    move || {
                        reader
                            .snapshot
                            .load()
                            .endpoints
                            .iter()
                            .map(|e| (e.address(), e.stats.clone()))
                            .collect()
                    },
                    move |flipped| {
                        let _ = flips_tx.send(flipped);
                    },
                ))
            });
        Arc::new(Upstream {
            outlier: spec.outlier.clone(),
            shared,
            spec,
            task,
            health_task,
        })
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
        if let Some(task) = &self.health_task {
            task.abort();
        }
    }
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.spec.name)
            .finish()
    }
}

// === impl Actor ===

/// Owns an upstream's [`UpstreamState`]; the only writer of its snapshot.
struct Actor {
    spec: Arc<UpstreamSpec>,
    shared: Arc<Shared>,
    refs: Vec<Arc<SourceRef>>,
    metrics: Vec<Arc<RegistryMetrics>>,
    upstream: UpstreamState,
    /// A shrunken set held back by the shrink guard, with when it applies anyway.
    held: Vec<Option<(SourceSet, Instant)>>,
    state: Option<StateStore>,
    /// Addresses whose active health check flipped, from the health-check task (when
    /// active checks are configured).
    flips: Option<mpsc::UnboundedReceiver<Vec<SocketAddr>>>,
}

impl Actor {
    fn new(
        spec: &Arc<UpstreamSpec>,
        shared: Arc<Shared>,
        state: Option<StateStore>,
        flips: Option<mpsc::UnboundedReceiver<Vec<SocketAddr>>>,
    ) -> Self {
        let n = spec.sources.len();
        Actor {
            refs: spec
                .sources
                .iter()
                .map(|s| {
                    Arc::new(SourceRef {
                        registry: s.registry_name.clone(),
                        service: s.query.service.clone(),
                    })
                })
                .collect(),
            metrics: spec.sources.iter().map(|s| s.metrics.clone()).collect(),
            upstream: UpstreamState::new(spec),
            spec: spec.clone(),
            shared,
            held: (0..n).map(|_| None).collect(),
            state,
            flips,
        }
    }

    /// Loads each source's last good set from the state directory, stale, before the
    /// first sync.
    fn restore(&mut self) {
        let Some(state) = self.state.clone() else {
            return;
        };
        for index in 0..self.refs.len() {
            let source = &self.refs[index];
            if let Some((endpoints, saved_at)) = state.load(&source.registry, &source.service) {
                tracing::info!(
                    upstream = %self.spec.name,
                    registry = %source.registry,
                    service = %source.service,
                    endpoints = endpoints.len(),
                    age = ?SystemTime::now().duration_since(saved_at).unwrap_or_default(),
                    "serving the saved last good set until the registry answers"
                );
                self.upstream.set_stale(index, true);
                self.upstream
                    .apply(index, switchyard_registry::Update::reset(endpoints));
                let mut status = self.status(index);
                status.restored = true;
                status.stale = true;
                status.endpoints = self.upstream.source_len(index);
                status.last_update = Some(saved_at);
            }
        }
        self.publish();
    }

    fn status(&self, index: usize) -> std::sync::MutexGuard<'_, SourceStatus> {
        self.shared.statuses[index]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Stores the state's snapshot for the request path if it is not the published one;
    /// returns whether it was new.
    fn publish(&self) -> bool {
        let snapshot = self.upstream.snapshot();
        if Arc::ptr_eq(&self.shared.snapshot.load(), snapshot) {
            return false;
        }
        tracing::debug!(upstream = %self.spec.name, ?snapshot, "new snapshot");
        self.shared.snapshot.store(snapshot.clone());
        true
    }

    /// The actor's loop. Written as a function returning an `async move` block rather than
    /// an `async fn`: an `async fn` keeps its argument twice in its future (the captured
    /// value and the local it is moved into): 1,416 bytes a task instead of 864.
    #[allow(clippy::manual_async_fn)] // the point: see above
    fn run(mut self) -> impl std::future::Future<Output = ()> + Send {
        async move {
            self.restore();
            let mut events = SelectAll::new();
            for (index, source) in self.spec.sources.iter().enumerate() {
                let stream = recover(
                    source.registry.clone(),
                    source.query.clone(),
                    Backoff::default(),
                );
                events.push(stream.map(move |event| (index, event)).boxed());
            }
            let shared = self.shared.clone();
            loop {
                let next_expiry = self
                    .upstream
                    .next_ejection_expiry()
                    .into_iter()
                    .chain(self.held.iter().flatten().map(|(_, at)| *at))
                    .min();
                let expiry = async {
                    match next_expiry {
                        Some(at) => tokio::time::sleep_until(at.into()).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    Some((index, event)) = events.next() => self.on_event(index, event),
                    () = shared.health_changed.notified() => {
                        self.upstream.refresh_health();
                        self.publish();
                    }
                    Some(addresses) = next_flips(&mut self.flips) => {
                        self.upstream.refresh(&addresses);
                        self.publish();
                    }
                    () = expiry => {
                        self.release_held();
                        self.upstream.expire_ejections();
                        self.publish();
                    }
                    else => return,
                }
            }
        }
    }

    fn on_event(&mut self, index: usize, event: SourceEvent) {
        let now = SystemTime::now();
        match event {
            SourceEvent::Update(update) => {
                let started = Instant::now();
                self.metrics[index].record_update();
                let first = self.upstream.snapshot().version == 0;
                let before = self.upstream.snapshot().clone();
                let set_changes = self.upstream.set_changes(index);
                self.apply(index, update);
                let changed = self.upstream.set_changes(index) != set_changes;
                self.upstream.set_stale(index, false);
                if first && Arc::ptr_eq(self.upstream.snapshot(), &before) {
                    self.upstream.republish();
                }
                if self.publish() {
                    crate::metrics::observe_apply(started.elapsed());
                }
                let mut status = self.status(index);
                status.synced = true;
                status.restored = false;
                status.stale = false;
                status.last_error = None;
                status.last_update = Some(now);
                status.guarded = self.held[index].is_some();
                status.endpoints = self.upstream.source_len(index);
                drop(status);
                if changed {
                    self.save(index);
                }
            }
            SourceEvent::Error(error) => {
                self.metrics[index].record_error();
                tracing::warn!(
                    upstream = %self.spec.name,
                    registry = %self.refs[index].registry,
                    service = %self.refs[index].service,
                    "registry error, keeping the last good set: {error}"
                );
                let mut status = self.status(index);
                status.stale = true;
                status.last_error = Some(error.message().to_owned());
                drop(status);
                self.upstream.set_stale(index, true);
                self.publish();
            }
        }
    }

    /// Applies an update to a source's set, through the shrink guard when one is set.
    fn apply(&mut self, index: usize, update: switchyard_registry::Update) {
        let Some(guard) = self.spec.shrink_guard.clone() else {
            self.upstream.apply(index, update);
            return;
        };
        let before = self.upstream.source_len(index);
        let partial = |after: usize| after > 0 && (after as f64) < guard.min_ratio * before as f64;
        // Deltas apply on top of the newest view: a held set if there is one.
        if let Some((mut held, deadline)) = self.held[index].take() {
            held.apply(update);
            if partial(held.len()) {
                self.held[index] = Some((held, deadline));
            } else {
                self.upstream.replace_set(index, &held);
            }
            return;
        }
        let after = self.upstream.source_set(index).len_after(&update);
        if !partial(after) {
            self.upstream.apply(index, update);
            return;
        }
        tracing::warn!(
            upstream = %self.spec.name,
            registry = %self.refs[index].registry,
            service = %self.refs[index].service,
            before,
            after,
            grace = ?guard.grace,
            "the registry's answer shrank below min_healthy_ratio: keeping the previous set for the grace period"
        );
        let mut next = self.upstream.source_set(index).clone();
        next.apply(update);
        self.held[index] = Some((next, Instant::now() + guard.grace));
    }

    /// Applies held sets whose grace ran out.
    fn release_held(&mut self) {
        let now = Instant::now();
        for index in 0..self.held.len() {
            if self.held[index].as_ref().is_some_and(|(_, at)| *at <= now) {
                let (set, _) = self.held[index].take().expect("checked");
                tracing::warn!(
                    upstream = %self.spec.name,
                    registry = %self.refs[index].registry,
                    service = %self.refs[index].service,
                    endpoints = set.len(),
                    "shrink grace over: applying the smaller set"
                );
                self.upstream.replace_set(index, &set);
                let mut status = self.status(index);
                status.guarded = false;
                status.endpoints = self.upstream.source_len(index);
                drop(status);
                self.save(index);
            }
        }
    }

    /// Writes a source's set to the state directory, if one is configured (serialized
    /// and written by the store's writer task, off this task).
    fn save(&self, index: usize) {
        if let Some(state) = &self.state {
            let source = &self.refs[index];
            let endpoints = self.upstream.source_endpoints(index);
            state.save(&source.registry, &source.service, endpoints);
        }
    }
}

/// The next flips from the health-check task; never, without one.
async fn next_flips(
    flips: &mut Option<mpsc::UnboundedReceiver<Vec<SocketAddr>>>,
) -> Option<Vec<SocketAddr>> {
    match flips {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

// === impl UpstreamCache ===

/// Every upstream of the running config.
#[derive(Default, Debug)]
pub struct UpstreamCache {
    upstreams: BTreeMap<String, Arc<Upstream>>,
}

impl UpstreamCache {
    /// Starts watching every upstream of `specs`. Upstreams of `previous` (the config
    /// before a reload) whose spec is unchanged are kept as they are, with their sets and
    /// watches, so a reload does not resync what did not change.
    ///
    /// With a `state` store, each source's last good set is saved on change and loaded at
    /// start (see [`StateStore`]).
    pub fn start(
        specs: Vec<UpstreamSpec>,
        previous: Option<&UpstreamCache>,
        state: Option<&StateStore>,
    ) -> Self {
        let upstreams = specs
            .into_iter()
            .map(|spec| {
                let kept = previous
                    .and_then(|p| p.upstreams.get(&spec.name))
                    .filter(|u| u.same_spec(&spec));
                let upstream = match kept {
                    Some(upstream) => upstream.clone(),
                    None => Upstream::start(spec, state.cloned()),
                };
                (upstream.spec.name.clone(), upstream)
            })
            .collect();
        UpstreamCache { upstreams }
    }

    /// The upstream called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Upstream>> {
        self.upstreams.get(name)
    }

    /// Every upstream, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Upstream>> {
        self.upstreams.values()
    }

    /// Sources that have not delivered their first answer yet, as `upstream/registry/service`.
    pub fn pending(&self) -> Vec<String> {
        self.iter()
            .flat_map(|u| {
                u.sources()
                    .into_iter()
                    .filter(|s| !s.synced && !s.restored)
                    .map(move |s| format!("{}/{}/{}", u.name(), s.registry, s.service))
            })
            .collect()
    }

    /// The state of registry `name` of type `kind`, aggregated over every source that uses it.
    pub fn registry_status(&self, name: &str, kind: &'static str) -> RegistryStatus {
        let sources: Vec<SourceStatus> = self
            .iter()
            .flat_map(|u| u.sources())
            .filter(|s| s.registry == name)
            .collect();
        let mut services: Vec<&str> = sources.iter().map(|s| s.service.as_str()).collect();
        services.sort_unstable();
        services.dedup();
        let failing = sources.iter().filter(|s| s.stale).count();
        let state = if failing > 0 && failing == sources.len() {
            RegistryState::Down
        } else if failing > 0 {
            RegistryState::Degraded
        } else if sources.iter().any(|s| !s.synced) {
            RegistryState::Syncing
        } else {
            RegistryState::Ok
        };
        RegistryStatus {
            name: name.to_owned(),
            kind,
            state,
            services: services.len(),
            endpoints: {
                // A service watched by several upstreams counts once.
                let mut per_service: Vec<(&str, usize)> = sources
                    .iter()
                    .map(|s| (s.service.as_str(), s.endpoints))
                    .collect();
                per_service.sort_unstable();
                per_service.dedup_by_key(|(service, _)| *service);
                per_service.iter().map(|(_, n)| n).sum()
            },
            last_update: sources.iter().filter_map(|s| s.last_update).max(),
            last_error: sources.iter().find_map(|s| s.last_error.clone()),
        }
    }
}

/// The state of one registry, as `/api/registries` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegistryState {
    /// Some watched service has not had its first answer yet.
    Syncing,
    /// Every watched service is current.
    Ok,
    /// Some watched services are failing and serve their last good set.
    Degraded,
    /// Every watched service is failing.
    Down,
}

impl RegistryState {
    /// The lowercase name used in the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            RegistryState::Syncing => "syncing",
            RegistryState::Ok => "ok",
            RegistryState::Degraded => "degraded",
            RegistryState::Down => "down",
        }
    }
}

/// One registry's aggregated status.
#[derive(Clone, Debug)]
pub struct RegistryStatus {
    /// The registry's name in config.
    pub name: String,
    /// Its `type`.
    pub kind: &'static str,
    /// Its state.
    pub state: RegistryState,
    /// Distinct services watched in it.
    pub services: usize,
    /// Endpoints it currently provides, over all watched services.
    pub endpoints: usize,
    /// The newest update from it.
    pub last_update: Option<SystemTime>,
    /// The error of a failing service, if any.
    pub last_error: Option<String>,
}
