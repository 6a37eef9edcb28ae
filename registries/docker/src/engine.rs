//! Talking to the engine (bollard): connecting to `host`, listing the labelled containers,
//! and the watcher task that lists once, follows `/events`, and lists again after every
//! reconnect.
//!
//! The watcher re-lists on every relevant event (start, die, health_status, destroy, pause,
//! unpause of a container labelled `switchyard.service`) rather than patching its set from
//! the event: a list is one cheap call, always complete, and cannot drift from the engine.
//! The event stream is opened with `since` a second before the list, so nothing that
//! happens between the list and the stream is missed (at worst it causes one more list).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::models::ContainerSummary;
use bollard::query_parameters::{EventsOptions, ListContainersOptions};
use bollard::Docker;
use futures::{FutureExt, StreamExt};
use switchyard_registry::{Endpoint, RegistryContext};
use tokio::sync::watch;

use crate::labels::{self, Container, PortMapping};

/// Seconds the engine may take to answer one call (not the event stream). Default 10.
const CALL_TIMEOUT_SECS: u64 = 10;

/// The endpoints of each labelled service, sorted by address.
pub type Services = BTreeMap<String, Vec<Arc<Endpoint>>>;

/// What the watcher last knew.
#[derive(Clone, Debug)]
pub enum EngineState {
    /// Not listed yet.
    Pending,
    /// The engine's current set.
    Loaded(Arc<Services>),
    /// The engine cannot be reached now; watchers keep their last set (stale).
    Failed {
        /// Why, for `/api/registries`.
        error: String,
    },
}

/// Connects to `host`: `unix:///path`, `tcp://host:port` or `http://host:port`. Nothing is
/// sent until the first call.
pub fn connect(host: &str) -> Result<Docker, String> {
    let result = if let Some(path) = host.strip_prefix("unix://") {
        Docker::connect_with_unix(path, CALL_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
    } else if host.starts_with("tcp://") || host.starts_with("http://") {
        Docker::connect_with_http(host, CALL_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
    } else {
        return Err(format!(
            "{host:?}: expected unix:///path/to/docker.sock or tcp://HOST:PORT"
        ));
    };
    result.map_err(|e| format!("{host}: {e}"))
}

/// Lists the running labelled containers and makes the services of them; malformed ones
/// are skipped and counted.
pub async fn list(
    docker: &Docker,
    network: Option<&str>,
    ctx: &RegistryContext,
) -> Result<Services, bollard::errors::Error> {
    let filters = |extra: Option<(&str, Vec<String>)>| {
        let mut filters: HashMap<String, Vec<String>> =
            [("label".to_owned(), vec![labels::SERVICE.to_owned()])].into();
        if let Some((key, values)) = extra {
            filters.insert(key.to_owned(), values);
        }
        Some(ListContainersOptions {
            filters: Some(filters),
            ..ListContainersOptions::default()
        })
    };
    let running = docker.list_containers(filters(None)).await?;
    // Health from a filtered list: older engines (API < 1.50) do not put it in the summary.
    let unhealthy: Vec<String> = docker
        .list_containers(filters(Some((
            "health",
            vec!["unhealthy".to_owned(), "starting".to_owned()],
        ))))
        .await?
        .into_iter()
        .filter_map(|c| c.id)
        .collect();
    let mut services = Services::new();
    for summary in running {
        let container = container_of(summary, &unhealthy);
        match labels::endpoint_of(&container, network) {
            Ok((service, endpoint)) => services
                .entry(service)
                .or_default()
                .push(Arc::new(endpoint)),
            Err(skip) => ctx.metrics.malformed(&ctx.name, skip),
        }
    }
    for endpoints in services.values_mut() {
        endpoints.sort_by_key(|e| e.address);
        endpoints.dedup_by_key(|e| e.address);
    }
    Ok(services)
}

/// The parts of a list entry the label rules read.
fn container_of(summary: ContainerSummary, unhealthy: &[String]) -> Container {
    let id = summary.id.unwrap_or_default();
    let name = summary
        .names
        .and_then(|n| n.into_iter().next())
        .map(|n| n.trim_start_matches('/').to_owned())
        .unwrap_or_else(|| id.chars().take(12).collect());
    let networks = summary
        .network_settings
        .and_then(|s| s.networks)
        .unwrap_or_default()
        .into_iter()
        .map(|(name, settings)| {
            let ip = settings
                .ip_address
                .filter(|ip| !ip.is_empty())
                .or(settings.global_ipv6_address)
                .unwrap_or_default();
            (name, ip)
        })
        .collect();
    let ports = summary
        .ports
        .unwrap_or_default()
        .into_iter()
        .map(|p| PortMapping {
            private: p.private_port,
            public: p.public_port,
            host_ip: p.ip,
            protocol: p
                .typ
                .map(|t| t.to_string())
                .unwrap_or_else(|| "tcp".to_owned()),
        })
        .collect();
    Container {
        unhealthy: unhealthy.contains(&id),
        id,
        name,
        labels: summary.labels.unwrap_or_default(),
        network_mode: summary
            .host_config
            .and_then(|h| h.network_mode)
            .unwrap_or_default(),
        networks,
        ports,
    }
}

/// The container events that can change a service's set.
const EVENTS: [&str; 6] = [
    "start",
    "die",
    "health_status",
    "destroy",
    "pause",
    "unpause",
];

/// The pause before the list that follows every list made for an event. Default 250 ms.
const SETTLE: Duration = Duration::from_millis(250);

/// Reconnect delays: 250 ms doubling to 5 s, so an engine back from a restart is seen
/// within seconds.
const RETRY_INITIAL: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// The watcher task: connects, lists, follows events, publishes every changed set to `tx`;
/// on any failure publishes [`EngineState::Failed`] (watchers keep their last set) and
/// starts again after a backoff. Ends when every receiver is gone.
pub async fn run(
    host: String,
    network: Option<String>,
    ctx: RegistryContext,
    tx: watch::Sender<EngineState>,
) {
    let mut delay = RETRY_INITIAL;
    loop {
        let (error, synced) = match follow(&host, network.as_deref(), &ctx, &tx).await {
            Ok(()) => return,
            Err(failure) => failure,
        };
        // A connection that listed before it broke was healthy: retry quickly.
        if synced {
            delay = RETRY_INITIAL;
        }
        tracing::warn!(registry = %ctx.name, "docker engine at {host}: {error}; keeping the last set");
        ctx.metrics.record_error();
        if tx.send(EngineState::Failed { error }).is_err() {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = tx.closed() => return,
        }
        delay = (delay * 2).min(RETRY_MAX);
    }
}

/// One connection: list, then follow events until they end. `Ok` only when no one listens;
/// an error says whether the connection had listed (synced) before it failed.
async fn follow(
    host: &str,
    network: Option<&str>,
    ctx: &RegistryContext,
    tx: &watch::Sender<EngineState>,
) -> Result<(), (String, bool)> {
    let docker = connect(host)
        .map_err(|e| (e, false))?
        .negotiate_version()
        .await
        .map_err(|e| (format!("cannot reach the engine: {e}"), false))?;
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs().saturating_sub(1));
    let filters: HashMap<String, Vec<String>> = [
        ("type".to_owned(), vec!["container".to_owned()]),
        ("label".to_owned(), vec![labels::SERVICE.to_owned()]),
        (
            "event".to_owned(),
            EVENTS.iter().map(|e| (*e).to_owned()).collect(),
        ),
    ]
    .into();
    let mut events = docker
        .events(Some(EventsOptions {
            since: Some(since.to_string()),
            until: None,
            filters: Some(filters),
        }))
        .boxed();
    let mut current = list(&docker, network, ctx)
        .await
        .map_err(|e| (format!("listing containers: {e}"), false))?;
    tracing::info!(registry = %ctx.name, services = current.len(), "docker: listed the labelled containers");
    if tx
        .send(EngineState::Loaded(Arc::new(current.clone())))
        .is_err()
    {
        return Ok(());
    }
    // A list made at once after `die` may still show the container running (the engine logs
    // the event before its list view catches up): one more list follows after a pause.
    let mut settle: Option<tokio::time::Instant> = None;
    loop {
        let settle_at = settle.unwrap_or_else(|| tokio::time::Instant::now() + SETTLE * 1000);
        let event = tokio::select! {
            event = events.next() => Some(event),
            () = tokio::time::sleep_until(settle_at), if settle.is_some() => None,
            () = tx.closed() => return Ok(()),
        };
        match event {
            None => settle = None,
            Some(None) => return Err(("the event stream ended".to_owned(), true)),
            Some(Some(Err(error))) => {
                return Err((format!("the event stream broke: {error}"), true))
            }
            Some(Some(Ok(event))) => {
                tracing::debug!(registry = %ctx.name, action = ?event.action, "docker event");
                // Several events at once (a compose project stopping) make one list.
                while let Some(Some(more)) = events.next().now_or_never() {
                    if let Err(error) = more {
                        return Err((format!("the event stream broke: {error}"), true));
                    }
                }
                settle = Some(tokio::time::Instant::now() + SETTLE);
            }
        }
        let services = list(&docker, network, ctx)
            .await
            .map_err(|e| (format!("listing containers: {e}"), true))?;
        if services != current {
            current = services;
            if tx
                .send(EngineState::Loaded(Arc::new(current.clone())))
                .is_err()
            {
                return Ok(());
            }
        }
    }
}
