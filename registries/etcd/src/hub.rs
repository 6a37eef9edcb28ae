//! The one watch a registry keeps on etcd, fanned out to every subscribed service.
//!
//! A hub task reads the whole prefix once (paged, at one revision), then watches the prefix
//! from that revision + 1, and turns the events into per-service [`Update`]s for the
//! streams [`crate::EtcdRegistry::watch`] handed out. All watched services share this one
//! get and one watch; the task starts with the first subscriber and stops when the last one
//! is gone.
//!
//! - Only real changes are published: the set computed after each batch of events is
//!   compared with the one last sent (adds and changes first, then removals).
//! - A cancelled watch (a compaction past its revision, or any other cancel) is followed by
//!   a full re-read whose result *replaces* each service's set (`Reset`), never merged.
//! - When the watch has been quiet for [`PROGRESS_AFTER`], a progress request is sent; no
//!   answer within [`STALL_TIMEOUT`] counts as a broken connection.
//! - A broken connection ends every subscriber's stream with an `Err`; the shared recover
//!   wrapper reconnects and the next hub starts with a fresh read.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use compact_str::CompactString;
use etcd_client::{Client, EventType, GetOptions, WatchOptions, WatchStream};
use futures::channel::mpsc as updates;
use futures::{SinkExt, StreamExt};
use switchyard_registry::{
    diff_sorted, Endpoint, RegistryContext, RegistryError, Update, UpdateStream,
};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::config::Settings;
use crate::connect::{classify, connect, copy_error, REQUEST_TIMEOUT};
use crate::entry::{parse_value, split_key};
use crate::keys::prefix_end;

/// Quiet time after which the hub asks etcd for a progress notification.
pub(crate) const PROGRESS_AFTER: Duration = Duration::from_secs(10);
/// How long a progress request may go unanswered before the watch counts as stalled.
pub(crate) const STALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Keys per page of the initial read.
const PAGE: i64 = 1000;
/// Updates buffered per subscriber; a full buffer makes the hub wait (backpressure).
const SUBSCRIBER_BUFFER: usize = 16;
/// The largest gRPC response accepted, by the watch (one big transaction) and by each page
/// of the initial read alike (tonic's default, 4 MiB, is less than three values at etcd's
/// default `--max-request-bytes` of 1.5 MiB).
pub(crate) const MAX_MESSAGE: usize = 64 << 20;

type Item = Result<Update, RegistryError>;

// Subscriber channels are `futures`' rather than Tokio's: a Tokio channel allocates two
// cache-padded halves and a first block of 32 slots up front (~800 bytes each, 0.76 MiB at
// 1,000 upstreams), a `futures` one ~250 bytes, and a node per queued update (updates are
// rare next to subscribers).

/// What subscriber streams tell the hub task.
enum Command {
    Subscribe {
        id: u64,
        service: String,
        tx: updates::Sender<Item>,
    },
    Unsubscribe {
        id: u64,
    },
}

/// What the registry and its hub task share.
pub(crate) struct Shared {
    ctx: RegistryContext,
    settings: Settings,
    /// The prefix with its trailing `/`.
    key_prefix: String,
    /// The running hub's command channel; `None` when no hub runs.
    slot: Mutex<Option<mpsc::UnboundedSender<Command>>>,
    next_id: AtomicU64,
}

impl Shared {
    pub(crate) fn new(ctx: RegistryContext, settings: Settings) -> Self {
        let key_prefix = format!("{}/", settings.prefix);
        Shared {
            ctx,
            settings,
            key_prefix,
            slot: Mutex::new(None),
            next_id: AtomicU64::new(0),
        }
    }

    /// A stream of updates for `service`, served by the running hub (started if none runs).
    pub(crate) fn subscribe(self: &Arc<Self>, service: String) -> UpdateStream {
        let (tx, rx) = updates::channel(SUBSCRIBER_BUFFER);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let commands = {
            let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
            let commands = match slot.as_ref().filter(|commands| !commands.is_closed()) {
                Some(commands) => commands.clone(),
                None => {
                    let (commands, receiver) = mpsc::unbounded_channel();
                    tokio::spawn(run(self.clone(), receiver));
                    *slot = Some(commands.clone());
                    commands
                }
            };
            // Queued while the lock is held: a hub only exits under this lock, after
            // draining its queue, so a queued subscription is never lost.
            let _ = commands.send(Command::Subscribe { id, service, tx });
            commands
        };
        let guard = UnsubscribeOnDrop { id, commands };
        rx.map(move |item| {
            let _keep = &guard;
            item
        })
        .boxed()
    }

    /// Called by a hub with no subscriber left: under the slot lock, takes the commands
    /// still queued. When none subscribes, the slot is cleared and the hub must stop.
    fn drain_or_exit(&self, commands: &mut mpsc::UnboundedReceiver<Command>) -> Vec<Command> {
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        let mut pending = Vec::new();
        while let Ok(command) = commands.try_recv() {
            pending.push(command);
        }
        if !pending
            .iter()
            .any(|c| matches!(c, Command::Subscribe { .. }))
        {
            *slot = None;
            commands.close();
        }
        pending
    }
}

/// Tells the hub that a subscriber stream was dropped.
struct UnsubscribeOnDrop {
    id: u64,
    commands: mpsc::UnboundedSender<Command>,
}

impl Drop for UnsubscribeOnDrop {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Unsubscribe { id: self.id });
    }
}

// === the hub task ===

/// One value under the prefix, as last read.
struct Raw {
    value: Vec<u8>,
    mod_revision: i64,
}

/// One subscriber stream.
struct Subscriber {
    id: u64,
    tx: updates::Sender<Item>,
    /// Whether its first update (a `Reset`) was sent.
    started: bool,
}

/// A service somebody watches or has watched during this hub's life.
#[derive(Default)]
struct Service {
    subscribers: Vec<Subscriber>,
    /// Instance id → (mod revision it was parsed at, endpoint or `None` when malformed).
    /// The only copy of the service's keys: values are parsed as they arrive and not kept
    /// (at 100,000 endpoints the raw JSON cost ~8 MiB). The endpoint is shared with
    /// `published` and with the updates sent.
    /// A hash map rather than a B-tree (at 100,000 endpoints the B-tree's nodes alone were
    /// 5.9 MiB), its ids kept inline up to 24 bytes (a `Box<str>` of a short id was a
    /// 32-byte allocation each, 3 MiB at 100,000).
    parsed: HashMap<CompactString, (i64, Option<Arc<Endpoint>>)>,
    /// The set last sent, sorted by address; `None` before the first send. A vector of
    /// pointers rather than a map: 8 bytes an endpoint instead of a B-tree slot of ~50.
    published: Option<Vec<Arc<Endpoint>>>,
}

struct Hub {
    shared: Arc<Shared>,
    /// The keys of services not watched so far: service → instance id → value. A
    /// service's keys move to `services` (parsed) at its first subscription.
    raw: HashMap<String, BTreeMap<String, Raw>>,
    /// Services watched so far. One stays (and is kept up to date) after its last
    /// subscriber leaves, as its raw values are gone; all go when the hub stops.
    services: HashMap<String, Service>,
    /// Subscriber id → service.
    owners: HashMap<u64, String>,
}

async fn run(shared: Arc<Shared>, mut commands: mpsc::UnboundedReceiver<Command>) {
    let mut hub = Hub {
        shared,
        raw: HashMap::new(),
        services: HashMap::new(),
        owners: HashMap::new(),
    };
    loop {
        match hub.session(&mut commands).await {
            Ok(()) => return,
            Err(err) => {
                tracing::warn!(registry = %hub.shared.ctx.name, "etcd watch broke: {err}");
                hub.fail_all(&err);
            }
        }
        // Everybody got the error. Go on only if somebody subscribed meanwhile.
        if hub.idle(&mut commands) {
            return;
        }
    }
}

impl Hub {
    /// Connects, reads, watches and publishes until nobody watches (`Ok`) or the
    /// connection breaks.
    async fn session(
        &mut self,
        commands: &mut mpsc::UnboundedReceiver<Command>,
    ) -> Result<(), RegistryError> {
        // Subscribers that arrived before the session: queued commands are taken in order.
        while let Ok(command) = commands.try_recv() {
            self.command_without_publish(command);
        }
        if self.owners.is_empty() && self.idle(commands) {
            return Ok(());
        }
        let mut client = connect(&self.shared.settings.connect).await?;
        let revision = self.read_all(&mut client).await?;
        let mut watch = self.start_watch(&mut client, revision + 1).await?;
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_heard = Instant::now();
        let mut progress_asked: Option<Instant> = None;
        loop {
            // The last subscriber left (or its stream was found dropped while publishing).
            if self.owners.is_empty() {
                if self.idle(commands) {
                    return Ok(());
                }
                // Somebody subscribed meanwhile: their first update now.
                self.publish_to_new_subscribers().await;
            }
            tokio::select! {
                command = commands.recv() => {
                    let Some(command) = command else { return Ok(()) };
                    self.command(command).await;
                }
                message = watch.message() => {
                    last_heard = Instant::now();
                    progress_asked = None;
                    let response = match message {
                        Ok(Some(response)) => response,
                        Ok(None) => return Err(RegistryError::unavailable("etcd closed the watch stream")),
                        Err(err) => return Err(classify("etcd watch", &err)),
                    };
                    if response.canceled() {
                        tracing::info!(
                            registry = %self.shared.ctx.name,
                            compact_revision = response.compact_revision(),
                            reason = response.cancel_reason(),
                            "etcd cancelled the watch; re-reading the prefix"
                        );
                        let revision = self.read_all(&mut client).await?;
                        watch = self.start_watch(&mut client, revision + 1).await?;
                    } else {
                        self.apply(response.events()).await;
                    }
                }
                _ = ticker.tick() => {
                    if let Some(asked) = progress_asked {
                        if asked.elapsed() >= STALL_TIMEOUT {
                            return Err(RegistryError::unavailable(format!(
                                "etcd watch stalled: no answer to a progress request within {STALL_TIMEOUT:?}"
                            )));
                        }
                    } else if last_heard.elapsed() >= PROGRESS_AFTER {
                        watch
                            .request_progress()
                            .await
                            .map_err(|err| classify("etcd watch progress request", &err))?;
                        progress_asked = Some(Instant::now());
                    }
                }
            }
        }
    }

    /// With no subscriber left: takes the queued commands in order and says whether the
    /// hub may stop (nobody subscribed meanwhile). A new subscriber's first update follows
    /// once the set is known. When this says stop but the slot still names this hub (a
    /// subscription came and went in the queue), the dropped receiver marks it closed.
    fn idle(&mut self, commands: &mut mpsc::UnboundedReceiver<Command>) -> bool {
        for command in self.shared.drain_or_exit(commands) {
            self.command_without_publish(command);
        }
        self.owners.is_empty()
    }

    /// Registers or drops a subscriber without sending anything.
    fn command_without_publish(&mut self, command: Command) {
        match command {
            Command::Subscribe { id, service, tx } => self.add_subscriber(id, service, tx),
            Command::Unsubscribe { id } => self.remove_subscriber(id),
        }
    }

    /// Handles a command while watching: a new subscriber gets its `Reset` at once.
    async fn command(&mut self, command: Command) {
        let service = match &command {
            Command::Subscribe { service, .. } => Some(service.clone()),
            Command::Unsubscribe { .. } => None,
        };
        self.command_without_publish(command);
        if let Some(service) = service {
            self.refresh(&service).await;
            self.publish(&service, false).await;
        }
    }

    fn add_subscriber(&mut self, id: u64, service: String, tx: updates::Sender<Item>) {
        self.owners.insert(id, service.clone());
        self.services
            .entry(service)
            .or_default()
            .subscribers
            .push(Subscriber {
                id,
                tx,
                started: false,
            });
    }

    fn remove_subscriber(&mut self, id: u64) {
        let Some(service) = self.owners.remove(&id) else {
            return;
        };
        // The service itself stays: its keys live only in `parsed` now.
        if let Some(state) = self.services.get_mut(&service) {
            state.subscribers.retain(|s| s.id != id);
        }
    }

    /// Sends the first update to every subscriber still waiting for one.
    async fn publish_to_new_subscribers(&mut self) {
        let waiting: Vec<String> = self
            .services
            .iter()
            .filter(|(_, state)| state.subscribers.iter().any(|s| !s.started))
            .map(|(service, _)| service.clone())
            .collect();
        for service in waiting {
            self.refresh(&service).await;
            self.publish(&service, false).await;
        }
    }

    /// Sends `err` to every subscriber and forgets them and all state.
    fn fail_all(&mut self, err: &RegistryError) {
        for service in self.services.values_mut() {
            for subscriber in &mut service.subscribers {
                // A full buffer misses the error, but the stream still ends, which the
                // recover wrapper treats as a broken connection too.
                let _ = subscriber.tx.try_send(Err(copy_error(err)));
            }
        }
        self.services.clear();
        self.owners.clear();
        self.raw.clear();
    }

    /// Reads every key under the prefix at one revision (paged), replaces what was known,
    /// and publishes each watched service's set as a `Reset` where it changed. Returns the
    /// revision read.
    async fn read_all(&mut self, client: &mut Client) -> Result<i64, RegistryError> {
        let key_prefix = self.shared.key_prefix.clone();
        let range_end = prefix_end(&key_prefix);
        let mut raw: HashMap<String, BTreeMap<String, Raw>> = HashMap::new();
        let mut from = key_prefix.clone().into_bytes();
        let mut revision = 0;
        // The same message limit as the watch: a page of large values must not fail a read
        // whose values the watch would have taken one by one.
        let mut kv = client.kv_client().max_decoding_message_size(MAX_MESSAGE);
        let mut page = PAGE;
        loop {
            let mut options = GetOptions::new()
                .with_range(range_end.clone())
                .with_limit(page);
            if revision > 0 {
                options = options.with_revision(revision);
            }
            let get = kv.get(from.clone(), Some(options));
            let response = match tokio::time::timeout(REQUEST_TIMEOUT, get).await {
                Ok(Ok(response)) => response,
                // Still too large (1000 keys of ~1.5 MiB is 1.5 GiB): halve the page and read
                // the same keys again, down to one key a page.
                Ok(Err(err)) if page > 1 && too_large(&err) => {
                    page = (page / 2).max(1);
                    tracing::debug!(
                        page,
                        "an etcd page exceeded {MAX_MESSAGE} bytes; halving it"
                    );
                    continue;
                }
                Ok(Err(err)) => return Err(classify("reading the etcd prefix", &err)),
                Err(_) => {
                    return Err(RegistryError::unavailable(format!(
                        "reading the etcd prefix timed out after {REQUEST_TIMEOUT:?}"
                    )))
                }
            };
            if revision == 0 {
                revision = response.header().map_or(0, |h| h.revision());
            }
            for kv in response.kvs() {
                if let Some((service, instance)) = split_key(&key_prefix, kv.key()) {
                    raw.entry(service.to_owned()).or_default().insert(
                        instance.to_owned(),
                        Raw {
                            value: kv.value().to_vec(),
                            mod_revision: kv.mod_revision(),
                        },
                    );
                }
            }
            match response.kvs().last() {
                Some(last) if response.more() => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => break,
            }
        }
        // Watched services take their keys out of the read; the rest stay raw.
        for (service, state) in &mut self.services {
            let fresh = raw.remove(service).unwrap_or_default();
            reparse(&self.shared, service, state, fresh).await;
        }
        self.raw = raw;
        let services: Vec<String> = self.services.keys().cloned().collect();
        for service in services {
            self.publish(&service, true).await;
        }
        Ok(revision)
    }

    async fn start_watch(
        &mut self,
        client: &mut Client,
        from_revision: i64,
    ) -> Result<WatchStream, RegistryError> {
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(from_revision)
            .with_progress_notify();
        let mut watch_client = client.watch_client().max_decoding_message_size(MAX_MESSAGE);
        let watch = watch_client.watch(self.shared.key_prefix.clone(), Some(options));
        match tokio::time::timeout(REQUEST_TIMEOUT, watch).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(err)) => Err(classify("starting the etcd watch", &err)),
            Err(_) => Err(RegistryError::unavailable(
                "starting the etcd watch timed out",
            )),
        }
    }

    /// Applies one watch response: raw values first, then each touched watched service is
    /// re-parsed and its change published.
    async fn apply(&mut self, events: &[etcd_client::Event]) {
        let mut touched = BTreeSet::new();
        for event in events {
            let Some(kv) = event.kv() else { continue };
            let Some((service, instance)) = split_key(&self.shared.key_prefix, kv.key()) else {
                continue;
            };
            let revision = kv.mod_revision();
            match (event.event_type(), self.services.get_mut(service)) {
                (EventType::Put, Some(state)) => {
                    if !matches!(state.parsed.get(instance), Some((rev, _)) if *rev == revision) {
                        let endpoint = parse(&self.shared, service, instance, kv.value()).await;
                        state
                            .parsed
                            .insert(CompactString::new(instance), (revision, endpoint));
                    }
                    touched.insert(service.to_owned());
                }
                (EventType::Delete, Some(state)) => {
                    state.parsed.remove(instance);
                    touched.insert(service.to_owned());
                }
                (EventType::Put, None) => {
                    self.raw.entry(service.to_owned()).or_default().insert(
                        instance.to_owned(),
                        Raw {
                            value: kv.value().to_vec(),
                            mod_revision: revision,
                        },
                    );
                }
                (EventType::Delete, None) => {
                    if let Some(instances) = self.raw.get_mut(service) {
                        instances.remove(instance);
                        if instances.is_empty() {
                            self.raw.remove(service);
                        }
                    }
                }
            }
        }
        for service in touched {
            self.publish(&service, false).await;
        }
    }

    /// Moves a newly watched service's raw values into its parsed entries (parsing each,
    /// counting the malformed). A service watched before has no raw values left: nothing to do.
    async fn refresh(&mut self, service: &str) {
        let Some(state) = self.services.get_mut(service) else {
            return;
        };
        if let Some(fresh) = self.raw.remove(service) {
            reparse(&self.shared, service, state, fresh).await;
        }
    }

    /// Sends what changed for `service` since the last send: a `Reset` to new subscribers
    /// (and to all when `replace` is set, after a re-read), otherwise `Add` then `Remove`.
    async fn publish(&mut self, service: &str, replace: bool) {
        let Some(state) = self.services.get_mut(service) else {
            return;
        };
        let mut by_address: Vec<(&str, &Arc<Endpoint>)> = state
            .parsed
            .iter()
            .filter_map(|(instance, (_, endpoint))| Some((instance.as_str(), endpoint.as_ref()?)))
            .collect();
        // Two keys with the same address: the first instance id wins (sorted by address,
        // then id; dedup keeps the first of a run).
        by_address
            .sort_unstable_by(|(a_id, a), (b_id, b)| (a.address, a_id).cmp(&(b.address, b_id)));
        by_address.dedup_by_key(|(_, endpoint)| endpoint.address);
        // Collected into a vector of its own size: `collect` from `by_address.into_iter()`
        // would reuse its buffer (three times the size, grown by pushes) for the set kept in
        // `published`, 2.9 MiB at 100,000 endpoints.
        let mut current = Vec::with_capacity(by_address.len());
        current.extend(by_address.into_iter().map(|(_, endpoint)| endpoint.clone()));
        let changes = match &state.published {
            Some(published) if *published == current => Vec::new(),
            Some(_) if replace => vec![Update::Reset(current.clone())],
            Some(published) => diff_sorted(published, &current),
            None => Vec::new(),
        };
        // Only a subscriber that has not started needs the whole set.
        let mut reset = None;
        let mut gone = Vec::new();
        for subscriber in &mut state.subscribers {
            let updates = if subscriber.started {
                changes.clone()
            } else {
                vec![reset
                    .get_or_insert_with(|| Update::Reset(current.clone()))
                    .clone()]
            };
            subscriber.started = true;
            for update in updates {
                if subscriber.tx.send(Ok(update)).await.is_err() {
                    gone.push(subscriber.id);
                    break;
                }
            }
        }
        state.published = Some(current);
        for id in gone {
            self.remove_subscriber(id);
        }
    }
}

/// Brings `state`'s parsed entries in line with `fresh` (the service's keys as just read):
/// entries gone are dropped; new or changed ones are parsed.
async fn reparse(
    shared: &Shared,
    service: &str,
    state: &mut Service,
    fresh: BTreeMap<String, Raw>,
) {
    state
        .parsed
        .retain(|instance, _| fresh.contains_key(instance.as_str()));
    for (instance, value) in fresh {
        if matches!(state.parsed.get(instance.as_str()), Some((rev, _)) if *rev == value.mod_revision)
        {
            continue;
        }
        let endpoint = parse(shared, service, &instance, &value.value).await;
        state.parsed.insert(
            CompactString::from(instance),
            (value.mod_revision, endpoint),
        );
    }
}

/// Parses one instance's value; a malformed one is counted (and logged once) and `None`.
async fn parse(
    shared: &Shared,
    service: &str,
    instance: &str,
    value: &[u8],
) -> Option<Arc<Endpoint>> {
    let parsed = if instance.is_empty() {
        Err("the key has no instance id (expected <prefix>/<service>/<instance-id>)".into())
    } else {
        match parse_value(value) {
            Ok(entry) => entry.resolve().await,
            Err(err) => Err(err),
        }
    };
    match parsed {
        Ok(endpoint) => Some(Arc::new(endpoint)),
        Err(err) => {
            let key = format!("{}{service}/{instance}", shared.key_prefix);
            shared
                .ctx
                .metrics
                .malformed(&shared.ctx.name, format!("{key}: {err}"));
            None
        }
    }
}

/// Whether a read failed because its answer exceeded [`MAX_MESSAGE`] (tonic's
/// `OutOfRange` "decoded message length too large").
fn too_large(err: &etcd_client::Error) -> bool {
    matches!(err, etcd_client::Error::GRpcStatus(status)
        if status.code() == tonic::Code::OutOfRange && status.message().contains("too large"))
}
