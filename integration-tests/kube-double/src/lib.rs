//! A Kubernetes API-server double for tests on machines where no API server can run.
//!
//! It serves `discovery.k8s.io/v1` EndpointSlices and core `v1` Services over plain HTTP
//! with the list/watch semantics of the Kubernetes API concepts documentation:
//!
//! - one resourceVersion counter for all writes; lists carry `metadata.resourceVersion`;
//!   `limit`/`continue` pagination is consistent (served at the first page's version);
//!   `resourceVersion` + `resourceVersionMatch` (`Exact`, `NotOlderThan`) on lists;
//! - `?watch=true&resourceVersion=N` streams newline-delimited `{"type","object"}` events
//!   after `N`; without a version (or `0`) it first replays the current state as `ADDED`;
//!   `sendInitialEvents=true&resourceVersionMatch=NotOlderThan` (streaming lists) replays
//!   and then sends a `BOOKMARK` annotated `k8s.io/initial-events-end: "true"`;
//!   `allowWatchBookmarks=true` adds periodic `BOOKMARK`s; `timeoutSeconds` ends the stream;
//! - a too-old resourceVersion is one `ERROR` event carrying a `Status` `{code: 410, reason:
//!   "Expired"}` inside a `200` watch stream, and a `410` answer to a list with an expired
//!   `continue` token or an `Exact` version;
//! - `labelSelector` (`k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (..)`, `k notin (..)`) and
//!   `fieldSelector` on `metadata.name`/`metadata.namespace`, with objects entering or
//!   leaving a watch's selection sent as `ADDED`/`DELETED`;
//! - create (`POST`), get, replace (`PUT`, with optimistic concurrency on
//!   `metadata.resourceVersion`), merge-patch and delete, each object decoded into and
//!   serialized from its k8s-openapi type;
//! - bearer-token auth (`401` Status otherwise).
//!
//! Tests drive the "cluster" only through that API (for instance with kube's own client,
//! using [`KubeDouble::write_kubeconfig`]), and use the knobs here to misbehave as a real
//! cluster sometimes does: [`KubeDouble::expire`], [`KubeDouble::drop_watches`],
//! [`KubeDouble::pause_watches`], [`KubeDouble::stop`] and [`KubeDouble::start_again`].
//! [`KubeDouble::requests`] is the request log (method, path, query, RBAC verb, status).
//!
//! Not served: TLS (the kubeconfig points at `http://`), other resources, strategic-merge
//! and JSON patches, `deletecollection`, server-side apply, protobuf.

pub mod controller;
mod selector;
mod server;
mod store;

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

pub use selector::{FieldSelector, LabelSelector};
use server::Shared;
pub use store::{ApiError, Kind};

/// How to start a [`KubeDouble`].
#[derive(Clone, Debug)]
pub struct KubeDoubleOptions {
    /// Address to listen on. Default `127.0.0.1:0` (a free port).
    pub listen: SocketAddr,
    /// The bearer token every API request must carry; `None` disables auth. Default
    /// `Some("kube-double-token")`.
    pub token: Option<String>,
    /// How often a watch with `allowWatchBookmarks=true` gets a `BOOKMARK` when the
    /// resourceVersion moved. Default 1 s (a real API server: about a minute).
    pub bookmark_interval: Duration,
    /// Caps every watch's duration below its `timeoutSeconds` (a real server's default is
    /// 30–60 min when none is given). Default `None`: no cap.
    pub max_watch_timeout: Option<Duration>,
    /// Events kept for watches; older versions are too old (410). Default 10,000.
    pub history_limit: usize,
    /// The name of the cluster, user and context in the kubeconfig. Default `kube-double`.
    pub context: String,
    /// The context's default namespace in the kubeconfig. Default `default`.
    pub namespace: String,
}

impl Default for KubeDoubleOptions {
    fn default() -> Self {
        KubeDoubleOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            token: Some("kube-double-token".to_owned()),
            bookmark_interval: Duration::from_secs(1),
            max_watch_timeout: None,
            history_limit: 10_000,
            context: "kube-double".to_owned(),
            namespace: "default".to_owned(),
        }
    }
}

/// One API request as the double saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestRecord {
    /// HTTP method.
    pub method: String,
    /// URL path.
    pub path: String,
    /// Raw query string (empty when none).
    pub query: String,
    /// The RBAC verb (`list`, `watch`, `get`, `create`, `update`, `patch`, `delete`), or
    /// empty for non-resource URLs.
    pub verb: String,
    /// The HTTP status answered (200 for a watch stream, whatever it later carries).
    pub status: u16,
}

/// A running API-server double. Dropping it stops serving.
pub struct KubeDouble {
    shared: Arc<Shared>,
    addr: SocketAddr,
    options: KubeDoubleOptions,
    server: Mutex<Option<JoinHandle<()>>>,
}

impl KubeDouble {
    /// Binds and starts serving on the current Tokio runtime.
    pub async fn start(options: KubeDoubleOptions) -> io::Result<KubeDouble> {
        let shared = Arc::new(Shared {
            store: Mutex::new(store::Store::new(options.history_limit)),
            changed: watch::Sender::new(0),
            drops: watch::Sender::new(0),
            paused: watch::Sender::new(false),
            requests: Mutex::new(Vec::new()),
            token: options.token.clone(),
            bookmark_interval: options.bookmark_interval,
            max_watch_timeout: options.max_watch_timeout,
        });
        let listener = bind(options.listen)?;
        let addr = listener.local_addr()?;
        let double = KubeDouble {
            shared,
            addr,
            options,
            server: Mutex::new(None),
        };
        double.serve(listener);
        Ok(double)
    }

    fn serve(&self, listener: TcpListener) {
        let shared = self.shared.clone();
        let task = tokio::spawn(async move {
            // Connections live in this set: aborting the accept task drops the set, which
            // aborts every connection (and so every watch) at once.
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let _ = stream.set_nodelay(true);
                        let shared = shared.clone();
                        connections.spawn(async move {
                            let service = hyper::service::service_fn(move |req| {
                                server::handle(shared.clone(), req)
                            });
                            let _ = auto::Builder::new(TokioExecutor::new())
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        });
                    }
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
        });
        *self
            .server
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(task);
    }

    /// The address served.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bearer token required, if any.
    pub fn token(&self) -> Option<&str> {
        self.options.token.as_deref()
    }

    /// A kubeconfig (YAML) with one cluster, user and context, all named
    /// [`KubeDoubleOptions::context`], and that context current.
    pub fn kubeconfig(&self) -> String {
        let name = &self.options.context;
        let user = match &self.options.token {
            Some(token) => format!("    token: {token}\n"),
            None => "    {}\n".to_owned(),
        };
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: {name}\n  cluster:\n    server: {url}\nusers:\n- name: {name}\n  user:\n{user}contexts:\n- name: {name}\n  context:\n    cluster: {name}\n    user: {name}\n    namespace: {ns}\ncurrent-context: {name}\n",
            url = self.url(),
            ns = self.options.namespace,
        )
    }

    /// Writes [`KubeDouble::kubeconfig`] to `path`.
    pub fn write_kubeconfig(&self, path: impl AsRef<Path>) -> io::Result<()> {
        std::fs::write(path, self.kubeconfig())
    }

    /// The requests served so far, oldest first (test knobs excluded).
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.store().resource_version()
    }

    /// Makes every resourceVersion handed out so far too old, as a compaction would: open
    /// watches get an `ERROR` event with a 410 `Status` and end; watches resumed from an
    /// old version get the same; lists with old `continue` tokens get 410.
    pub fn expire(&self) {
        self.shared.store().expire();
        self.shared.notify();
    }

    /// Aborts every open watch response mid-stream (the connection closes without the
    /// final chunk), as a load balancer or API-server restart would.
    pub fn drop_watches(&self) {
        self.shared.drops.send_modify(|n| *n += 1);
    }

    /// Open watches stop delivering events (they stay open and silent), as a stalled
    /// watch does. Writes still succeed. Combine with [`KubeDouble::expire`] to make a
    /// client miss changes that only a relist can show.
    pub fn pause_watches(&self) {
        self.shared.paused.send_replace(true);
    }

    /// Undoes [`KubeDouble::pause_watches`]: the held events are delivered.
    pub fn resume_watches(&self) {
        self.shared.paused.send_replace(false);
    }

    /// Stops serving: closes the listener and every connection. The objects, the
    /// resourceVersion counter and the history are kept for [`KubeDouble::start_again`].
    pub async fn stop(&self) {
        let task = self
            .server
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
    }

    /// Serves again on the same address after [`KubeDouble::stop`].
    pub async fn start_again(&self) -> io::Result<()> {
        self.stop().await;
        // The port was ours a moment ago; retry briefly in case the kernel lags.
        let mut attempt = 0;
        let listener = loop {
            match bind(self.addr) {
                Ok(listener) => break listener,
                Err(err) if attempt < 50 => {
                    attempt += 1;
                    tracing::debug!("rebinding {}: {err}", self.addr);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(err) => return Err(err),
            }
        };
        self.serve(listener);
        Ok(())
    }

    /// Whether the double is serving (not stopped).
    pub fn is_running(&self) -> bool {
        self.server
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some()
    }
}

impl Drop for KubeDouble {
    fn drop(&mut self) {
        if let Some(task) = self
            .server
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        {
            task.abort();
        }
    }
}

fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}
