//! One watched service: read its instances, then follow them with ZooKeeper watches.
//!
//! ZooKeeper watches fire once (programmer's guide, "ZooKeeper Watches"), so each one is
//! armed again with the read that follows its event, the way Curator's `ServiceCache`
//! does it:
//!
//! - a child watch on the service node (`getChildren(path, watch)`), re-armed by listing
//!   the children again on every event: an instance registered, or an ephemeral node gone
//!   with its owner's session;
//! - a data watch on each Curator instance node (`getData(path, watch)`), re-armed by
//!   reading the node again on every event: an instance re-registered with a new weight;
//! - when the service node does not exist, an exists watch (`exists(path, watch)`) that
//!   fires when it is created; meanwhile the service is authoritatively empty
//!   ([`Update::DoesNotExist`]).
//!
//! Dubbo providers carry everything in the node name, so only the child watch is needed.
//!
//! The session state is watched too: a disconnect ends the stream with an error (the set
//! goes stale; the recover wrapper backs off and watches again, which reads everything
//! afresh once the session is connected again or replaced after expiry). Every change is
//! published as the difference to the set last sent; the first send is a full `Reset`.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use switchyard_registry::{
    diff_sorted, Endpoint, RegistryContext, RegistryError, Update, UpdateStream,
};
use tokio::sync::mpsc;
use zookeeper_client as zk;

use crate::config::{Config, Format};
use crate::decode::{decode_curator, decode_dubbo, Decoded, Instance};
use crate::session::{classify, Sessions};

/// How long resolving one instance's host name may take before it counts as malformed.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

type Item = Result<Update, RegistryError>;

/// What a registry's watches share.
pub(crate) struct Shared {
    pub(crate) ctx: RegistryContext,
    pub(crate) config: Config,
    pub(crate) sessions: Sessions,
}

/// Starts watching `service`; the task stops when the stream is dropped.
pub(crate) fn watch_service(shared: Arc<Shared>, service: String) -> UpdateStream {
    let (tx, rx) = mpsc::channel::<Item>(8);
    let task = tokio::spawn(async move {
        let mut watch = ServiceWatch::new(&shared, &service);
        if let Err(error) = watch.run(&tx).await {
            tracing::debug!(registry = %shared.ctx.name, service, "watch broke: {error}");
            let _ = tx.send(Err(error)).await;
        }
    });
    let guard = AbortOnDrop(task);
    futures::stream::unfold((rx, guard), |(mut rx, guard)| async move {
        rx.recv().await.map(|item| (item, (rx, guard)))
    })
    .boxed()
}

/// Stops a service's task when its stream is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What was last sent.
#[derive(PartialEq)]
enum Published {
    /// The service node does not exist.
    Missing,
    /// The set, sorted by address.
    Set(Vec<Arc<Endpoint>>),
}

/// A data watch that fired: the child's name and the event.
type DataEvent = (String, zk::WatchedEvent);
/// The armed data watches.
type DataEvents = FuturesUnordered<BoxFuture<'static, DataEvent>>;

struct ServiceWatch<'a> {
    shared: &'a Shared,
    service: &'a str,
    path: String,
    /// Child name → its endpoint (`None`: disabled or malformed, already counted).
    nodes: BTreeMap<String, Option<Arc<Endpoint>>>,
    /// Data watches armed (Curator), by child name.
    armed: HashSet<String>,
    published: Option<Published>,
}

impl<'a> ServiceWatch<'a> {
    fn new(shared: &'a Shared, service: &'a str) -> Self {
        ServiceWatch {
            shared,
            service,
            path: shared.config.service_path(service),
            nodes: BTreeMap::new(),
            armed: HashSet::new(),
            published: None,
        }
    }

    /// Reads and follows the service until the stream is dropped (`Ok`) or the session
    /// breaks (`Err`).
    async fn run(&mut self, tx: &mpsc::Sender<Item>) -> Result<(), RegistryError> {
        let client = self.shared.sessions.client().await?;
        let mut states = client.state_watcher();
        // Kept out of `self`: the set of pending watches is `Send` but not `Sync`.
        let mut data_events: DataEvents = FuturesUnordered::new();
        loop {
            // (Re)list the children, arming the child watch, or arm an exists watch.
            let (watcher, exists) = match self
                .request(client.get_and_watch_children(&self.path))
                .await
            {
                Ok((children, _stat, watcher)) => {
                    self.sync_children(&client, children, &mut data_events)
                        .await?;
                    (watcher, true)
                }
                Err(zk::Error::NoNode) => {
                    self.nodes.clear();
                    let (stat, watcher) = self
                        .request(client.check_and_watch_stat(&self.path))
                        .await
                        .map_err(|e| self.error(&e))?;
                    if stat.is_some() {
                        continue; // created meanwhile: list it
                    }
                    (watcher, false)
                }
                Err(error) => return Err(self.error(&error)),
            };
            if !self.publish(tx, exists).await {
                return Ok(());
            }
            let mut child_event = watcher.changed().boxed();
            // Follow data events until the child (or exists) watch fires.
            loop {
                tokio::select! {
                    event = &mut child_event => {
                        check_session_event(&event)?;
                        break;
                    }
                    Some((name, event)) = data_events.next(), if !data_events.is_empty() => {
                        self.armed.remove(&name);
                        check_session_event(&event)?;
                        if self.nodes.contains_key(&name) {
                            self.read_instances(&client, vec![name], &mut data_events).await?;
                            if !self.publish(tx, true).await {
                                return Ok(());
                            }
                        }
                    }
                    state = states.changed() => {
                        if !matches!(state, zk::SessionState::SyncConnected | zk::SessionState::ConnectedReadOnly) {
                            return Err(RegistryError::unavailable(format!(
                                "ZooKeeper session {} {state}; reading {} again once connected",
                                client.session_id(),
                                self.path
                            )));
                        }
                    }
                    () = tx.closed() => return Ok(()),
                }
            }
        }
    }

    /// Applies a fresh listing: forgets children that are gone, reads the new ones.
    async fn sync_children(
        &mut self,
        client: &zk::Client,
        children: Vec<String>,
        data_events: &mut DataEvents,
    ) -> Result<(), RegistryError> {
        let listed: HashSet<&String> = children.iter().collect();
        self.nodes.retain(|name, _| listed.contains(name));
        let new: Vec<String> = children
            .iter()
            .filter(|name| !self.nodes.contains_key(*name))
            .cloned()
            .collect();
        match self.shared.config.format {
            Format::Curator => self.read_instances(client, new, data_events).await,
            Format::Dubbo => {
                for name in new {
                    let endpoint = self.endpoint(&name, decode_dubbo(&name)).await;
                    self.nodes.insert(name, endpoint);
                }
                Ok(())
            }
        }
    }

    /// Reads (and watches) the data of Curator instance nodes, all requests pipelined.
    async fn read_instances(
        &mut self,
        client: &zk::Client,
        names: Vec<String>,
        data_events: &mut DataEvents,
    ) -> Result<(), RegistryError> {
        let paths: Vec<String> = names.iter().map(|n| format!("{}/{n}", self.path)).collect();
        let reads =
            futures::future::join_all(paths.iter().map(|path| client.get_and_watch_data(path)));
        let results = tokio::time::timeout(self.shared.sessions.request_timeout(), reads)
            .await
            .map_err(|_| self.timeout())?;
        for (name, result) in names.into_iter().zip(results) {
            match result {
                Ok((data, _stat, watcher)) => {
                    if self.armed.insert(name.clone()) {
                        let key = name.clone();
                        data_events.push(watcher.changed().map(move |event| (key, event)).boxed());
                    }
                    let endpoint = self.endpoint(&name, decode_curator(&data)).await;
                    self.nodes.insert(name, endpoint);
                }
                // Deleted since the listing: the child watch fires and lists again.
                Err(zk::Error::NoNode) => {
                    self.nodes.remove(&name);
                }
                Err(error) => return Err(self.error(&error)),
            }
        }
        Ok(())
    }

    /// The endpoint of a decoded node; malformed ones are counted and give `None`.
    async fn endpoint(&self, name: &str, decoded: Decoded) -> Option<Arc<Endpoint>> {
        let registry = &self.shared.ctx.name;
        let instance = match decoded {
            Decoded::Instance(instance) => instance,
            Decoded::Disabled => return None,
            Decoded::Malformed(why) => {
                self.shared
                    .ctx
                    .metrics
                    .malformed(registry, format!("{}/{name}: {why}", self.path));
                return None;
            }
        };
        match resolve(&instance).await {
            Ok(address) => Some(Arc::new(endpoint_of(address, instance))),
            Err(why) => {
                self.shared
                    .ctx
                    .metrics
                    .malformed(registry, format!("{}/{name}: {why}", self.path));
                None
            }
        }
    }

    /// Sends what changed since the last send. `exists: false` means the service node is
    /// gone. Returns false when nobody listens any more.
    async fn publish(&mut self, tx: &mpsc::Sender<Item>, exists: bool) -> bool {
        let now = if exists {
            let mut set: Vec<Arc<Endpoint>> = self.nodes.values().flatten().cloned().collect();
            set.sort_by_key(|e| e.address);
            // Two nodes for one address (a re-registration racing its old node): keep one.
            set.dedup_by_key(|e| e.address);
            Published::Set(set)
        } else {
            Published::Missing
        };
        if self.published.as_ref() == Some(&now) {
            return true;
        }
        let updates = match (&self.published, &now) {
            (_, Published::Missing) => vec![Update::DoesNotExist],
            (Some(Published::Set(old)), Published::Set(new)) => diff_sorted(old, new),
            (_, Published::Set(new)) => vec![Update::Reset(new.clone())],
        };
        tracing::debug!(
            registry = %self.shared.ctx.name,
            service = self.service,
            "{} update(s)",
            updates.len()
        );
        self.published = Some(now);
        for update in updates {
            if tx.send(Ok(update)).await.is_err() {
                return false;
            }
        }
        true
    }

    /// Runs one request with the request timeout.
    async fn request<T>(
        &self,
        request: impl std::future::Future<Output = Result<T, zk::Error>>,
    ) -> Result<T, zk::Error> {
        tokio::time::timeout(self.shared.sessions.request_timeout(), request)
            .await
            .unwrap_or(Err(zk::Error::Timeout))
    }

    fn error(&self, error: &zk::Error) -> RegistryError {
        classify(error, &format!("reading {}", self.path))
    }

    fn timeout(&self) -> RegistryError {
        RegistryError::unavailable(format!(
            "reading {}: no answer within {:?}",
            self.path,
            self.shared.sessions.request_timeout()
        ))
    }
}

/// A watch event that reports the session's end rather than a node's change.
fn check_session_event(event: &zk::WatchedEvent) -> Result<(), RegistryError> {
    if event.event_type == zk::EventType::Session {
        return Err(RegistryError::unavailable(format!(
            "ZooKeeper session {}",
            event.session_state
        )));
    }
    Ok(())
}

/// The instance's address: its IP, or its host name resolved (the first address).
async fn resolve(instance: &Instance) -> Result<SocketAddr, String> {
    if let Some(ip) = instance.ip() {
        return Ok(SocketAddr::new(ip, instance.port));
    }
    let lookup = tokio::net::lookup_host((instance.host.as_str(), instance.port));
    match tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
        Ok(Ok(mut addresses)) => addresses
            .next()
            .ok_or_else(|| format!("{} has no address", instance.host)),
        Ok(Err(error)) => Err(format!("cannot resolve {}: {error}", instance.host)),
        Err(_) => Err(format!("resolving {} timed out", instance.host)),
    }
}

/// The endpoint for a decoded instance at `address`.
fn endpoint_of(address: SocketAddr, instance: Instance) -> Endpoint {
    let mut endpoint = Endpoint::new(address)
        .with_weight(instance.weight)
        .with_metadata(instance.metadata);
    endpoint.set_zone(instance.zone);
    endpoint
}
