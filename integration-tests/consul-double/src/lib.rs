//! A Consul agent double for machines where no Consul can be installed.
//!
//! It speaks the part of Consul's HTTP API that services, operators and Switchyard use, with
//! the field names, casing, status codes and text bodies of real Consul, so that tests
//! driving it only through that API would run unchanged against a real agent:
//!
//! - `PUT /v1/agent/service/register` (TTL checks, which start `critical` unless `Status`
//!   says otherwise; check ids `service:<id>` or `service:<id>:<n>`; `?replace-existing-checks`),
//!   `PUT /v1/agent/service/deregister/<id>`, `PUT /v1/agent/service/maintenance/<id>`,
//!   `PUT /v1/agent/check/{pass,warn,fail}/<check-id>` (`?note=`), `PUT /v1/agent/check/update/<id>`;
//! - `GET /v1/health/service/<name>` with `passing`, repeated `tag` (all must match), `dc`,
//!   and blocking `index`/`wait` with `X-Consul-Index` (default wait 5 min, at most 10, plus up
//!   to wait/16 of jitter); an unknown service is `[]` with 200;
//! - `GET /v1/catalog/services` (blocking too), `GET /v1/agent/services`,
//!   `GET /v1/agent/checks`, `GET /v1/agent/self`, `GET /v1/status/leader`;
//! - ACL tokens from `?token=`, `X-Consul-Token` or `Authorization: Bearer`: an unknown token
//!   is 403 `ACL not found`; without a token under a default-deny policy, reads come back
//!   filtered (empty, with `X-Consul-Results-Filtered-By-ACLs: true`) and writes get 403
//!   `Permission denied: ...`.
//!
//! Knobs real Consul has no API for, for tests: [`ConsulDouble::stop`] (the agent dies and
//! its connections drop) and [`ConsulDouble::resume`] (back on the same port, state kept),
//! [`ConsulDouble::rewind_index`] (the index goes backwards, as after a snapshot restore),
//! misbehaviour ([`ConsulDouble::set_ignore_index`], [`ConsulDouble::set_omit_index_header`]),
//! per-path request counters and a request log. Several doubles can form one cluster with
//! several datacenters ([`Options::join`]), so `?dc=` reaches another agent's catalog.
//!
//! Each double runs on a Tokio runtime of its own, so it serves even while a test blocks
//! its own thread, and its API is synchronous.

mod agent;
mod api;
pub mod client;
mod duration;
pub mod filter;
mod state;

use std::io;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::runtime::Runtime;
use tokio::task::{AbortHandle, JoinSet};

pub use agent::{AclOptions, DefaultPolicy, Rights};
pub use api::RecordedRequest;

use api::{Agent, Stats};
use state::Shared;

/// How to start a double.
#[derive(Clone, Debug)]
pub struct Options {
    /// The agent's datacenter. Default `dc1`.
    pub datacenter: String,
    /// The agent's node name. Default `consul-double-<dc>-<n>`.
    pub node_name: Option<String>,
    /// The node's address, which instances registered without `Address` inherit
    /// (`Node.Address`). Default `127.0.0.1`.
    pub node_address: String,
    /// Where to listen. Default `127.0.0.1:0` (a free port).
    pub listen: SocketAddr,
    /// ACL enforcement; `None` (the default) means ACLs are off and tokens are ignored.
    pub acl: Option<AclOptions>,
    /// Join the cluster of another double (WAN federation): the catalog of every datacenter
    /// is reachable from every agent with `?dc=`. Default: a cluster of its own.
    pub join: Option<Cluster>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            datacenter: "dc1".into(),
            node_name: None,
            node_address: "127.0.0.1".into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            acl: None,
            join: None,
        }
    }
}

impl Options {
    /// Default options in another datacenter.
    pub fn datacenter(dc: &str) -> Self {
        Options {
            datacenter: dc.into(),
            ..Options::default()
        }
    }
}

/// A handle on a cluster's shared state, to start more agents in it ([`Options::join`]).
#[derive(Clone, Debug)]
pub struct Cluster(Arc<Shared>);

/// A running Consul agent double. Dropping it stops it.
pub struct ConsulDouble {
    runtime: Option<Runtime>,
    agent: Arc<Agent>,
    listen: SocketAddr,
    server: Mutex<Option<Running>>,
    ttl_task: AbortHandle,
}

struct Running {
    task: AbortHandle,
    gone: mpsc::Receiver<()>,
}

/// Sends on drop: tells `stop` that the accept loop (and with it every connection) is gone.
struct DropSignal(mpsc::Sender<()>);

impl Drop for DropSignal {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

impl std::fmt::Debug for ConsulDouble {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsulDouble")
            .field("address", &self.address())
            .field("datacenter", &self.agent.datacenter)
            .field("node", &self.agent.node)
            .finish()
    }
}

impl ConsulDouble {
    /// Starts an agent and begins serving at once.
    pub fn start(options: Options) -> io::Result<ConsulDouble> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("consul-double")
            .enable_all()
            .build()?;
        let shared = options
            .join
            .map_or_else(Shared::new, |cluster| cluster.0.clone());
        let node = shared.write(|cluster| {
            cluster.add_agent(
                &options.datacenter,
                options.node_name.as_deref(),
                &options.node_address,
            )
        });
        let agent = Arc::new(Agent {
            shared: shared.clone(),
            datacenter: options.datacenter,
            node,
            acl: options.acl,
            stats: Stats::default(),
            ignore_index: AtomicBool::new(false),
            omit_index: AtomicBool::new(false),
        });
        let listener = StdListener::bind(options.listen)?;
        let listen = listener.local_addr()?;
        let ttl_task = runtime
            .spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(100));
                loop {
                    tick.tick().await;
                    let now = Instant::now();
                    let expired = shared.lock().expire_ttls_pending(now);
                    if expired {
                        shared.write(|cluster| cluster.expire_ttls(now));
                    }
                }
            })
            .abort_handle();
        let double = ConsulDouble {
            runtime: Some(runtime),
            agent,
            listen,
            server: Mutex::new(None),
            ttl_task,
        };
        double.serve(listener)?;
        Ok(double)
    }

    fn runtime(&self) -> &Runtime {
        self.runtime.as_ref().expect("runtime lives until drop")
    }

    fn serve(&self, listener: StdListener) -> io::Result<()> {
        listener.set_nonblocking(true)?;
        let agent = self.agent.clone();
        let (tx, gone) = mpsc::channel();
        let task = self
            .runtime()
            .spawn(async move {
                let _signal = DropSignal(tx);
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    return;
                };
                let mut connections = JoinSet::new();
                loop {
                    tokio::select! {
                        accepted = listener.accept() => {
                            let Ok((stream, _)) = accepted else {
                                tokio::time::sleep(Duration::from_millis(10)).await;
                                continue;
                            };
                            let _ = stream.set_nodelay(true);
                            let agent = agent.clone();
                            connections.spawn(async move {
                                let service = service_fn(move |request| {
                                    api::handle(agent.clone(), request)
                                });
                                let _ = hyper::server::conn::http1::Builder::new()
                                    .title_case_headers(true)
                                    .serve_connection(TokioIo::new(stream), service)
                                    .await;
                            });
                        }
                        Some(_) = connections.join_next(), if !connections.is_empty() => {}
                    }
                }
            })
            .abort_handle();
        *self.server.lock().unwrap_or_else(|p| p.into_inner()) = Some(Running { task, gone });
        Ok(())
    }

    /// `http://127.0.0.1:PORT`, what a client's `address` setting takes.
    pub fn address(&self) -> String {
        format!("http://{}", self.listen)
    }

    /// The listening socket address.
    pub fn socket_addr(&self) -> SocketAddr {
        self.listen
    }

    /// The agent's datacenter.
    pub fn datacenter(&self) -> &str {
        &self.agent.datacenter
    }

    /// The agent's node name (`Node.Node` in health answers).
    pub fn node_name(&self) -> &str {
        &self.agent.node
    }

    /// A handle to start more agents in this cluster.
    pub fn cluster(&self) -> Cluster {
        Cluster(self.agent.shared.clone())
    }

    /// Simulates the agent going down: the listener closes (new connections are refused)
    /// and every open connection, blocked queries included, is dropped. State is kept.
    pub fn stop(&self) {
        let running = self.server.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(running) = running {
            running.task.abort();
            let _ = running.gone.recv_timeout(Duration::from_secs(5));
        }
    }

    /// Brings a stopped agent back on the same port, with the state it had.
    pub fn resume(&self) -> io::Result<()> {
        if self.is_running() {
            return Ok(());
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match StdListener::bind(self.listen) {
                Ok(listener) => break listener,
                Err(err) if Instant::now() >= deadline => return Err(err),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        self.serve(listener)
    }

    /// Whether the agent is serving.
    pub fn is_running(&self) -> bool {
        self.server
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// The current index of the agent's datacenter.
    pub fn index(&self) -> u64 {
        let cluster = self.agent.shared.lock();
        cluster.dc(&self.agent.datacenter).map_or(0, |dc| dc.index)
    }

    /// Makes the datacenter's index go backwards to `to` (at least 1), as a snapshot
    /// restore does: every index in the catalog is capped at `to`, and every blocked query
    /// returns at once with the lower index.
    pub fn rewind_index(&self, to: u64) {
        self.agent.shared.write(|cluster| {
            if let Some(dc) = cluster.dc_mut(&self.agent.datacenter) {
                dc.rewind(to);
            }
        });
    }

    /// Knob: when on, blocking queries answer at once whatever their `index` (a
    /// misbehaving server, or one behind a proxy that cuts long polls). Default off.
    pub fn set_ignore_index(&self, on: bool) {
        self.agent.ignore_index.store(on, Ordering::Relaxed);
        // Wake the queries blocked now, so they see the knob.
        self.agent.shared.write(|_| ());
    }

    /// Knob: when on, answers carry no `X-Consul-Index` header. Default off.
    pub fn set_omit_index_header(&self, on: bool) {
        self.agent.omit_index.store(on, Ordering::Relaxed);
    }

    /// How many requests this agent received for `path` (without query string), e.g.
    /// `/v1/health/service/web`.
    pub fn requests(&self, path: &str) -> u64 {
        self.agent.stats.count(path)
    }

    /// Every request this agent received, in order (at most 100,000).
    pub fn request_log(&self) -> Vec<RecordedRequest> {
        self.agent.stats.log()
    }

    /// Clears the counters and the log.
    pub fn reset_requests(&self) {
        self.agent.stats.clear();
    }
}

impl Drop for ConsulDouble {
    fn drop(&mut self) {
        self.stop();
        self.ttl_task.abort();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
