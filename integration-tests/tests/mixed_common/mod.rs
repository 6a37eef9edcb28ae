//! Shared by the `mixed_*` and `chaos_*` tests: the four registries (real etcd and bind9 and
//! the Consul and Kubernetes doubles, or the servers of `docker-compose.yml` named by
//! `SWITCHYARD_TEST_*` variables), test backends with a switchable health endpoint, and a
//! steady load of GETs through the gateway with request-level accounting.
//!
//! Registries are driven only through their real APIs (Consul's agent API, the Kubernetes
//! API through kube's client, etcd's KV API, `nsupdate`), so the same code runs against the
//! real servers. Targets, when set:
//!
//! - `SWITCHYARD_TEST_CONSUL=http://127.0.0.1:8500`: a Consul agent instead of the double;
//! - `SWITCHYARD_TEST_KUBECONFIG=path`: a Kubernetes cluster (its current context) instead of
//!   the double; slices are made in namespace `default`. A real API server refuses loopback
//!   addresses in EndpointSlices: set `SWITCHYARD_TEST_BACKEND_IP` too;
//! - `SWITCHYARD_TEST_ETCD=http://127.0.0.1:2379`: an etcd instead of a local one;
//! - `SWITCHYARD_TEST_DNS=127.0.0.1:1053`: a DNS server serving the compose zone
//!   `example.test` (read-only: the DNS tier then is whatever its SRV record names);
//! - `SWITCHYARD_TEST_BACKEND_IP=172.28.0.1`: the address the test backends listen on
//!   (default 127.0.0.1).
//!
//! Names (services, instance ids, slices, keys) carry a per-test random suffix so that
//! tests sharing one real server do not see each other.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::{json, Value};
use switchyard_consul_double::client::AgentClient;
use switchyard_consul_double::{ConsulDouble, Options};
use switchyard_integration_tests::bind::NamedServer;
use switchyard_integration_tests::etcd::EtcdServer;
use switchyard_integration_tests::Gateway;
use switchyard_kube_double::{KubeDouble, KubeDoubleOptions};

/// The zone of the DNS tier (the compose CoreDNS zone has the same name).
pub const ZONE: &str = "example.test";

/// A short random suffix for names on shared servers.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{:06x}", fastrand::u32(..0x00ff_ffff))
}

fn target(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The address test backends listen on: `$SWITCHYARD_TEST_BACKEND_IP`, else 127.0.0.1.
pub fn backend_ip() -> IpAddr {
    target("SWITCHYARD_TEST_BACKEND_IP")
        .map(|ip| {
            ip.parse()
                .unwrap_or_else(|e| panic!("SWITCHYARD_TEST_BACKEND_IP={ip}: {e}"))
        })
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

// === test backends ===

struct AppState {
    name: String,
    health_status: AtomicU16,
    hits: AtomicUsize,
    health_checks: AtomicUsize,
}

/// A real HTTP backend: `GET /healthz` answers with a switchable status (200 at first), any
/// other request 200 with the backend's name. [`App::kill`] shuts its runtime down, so its
/// listener and every connection close at once, as when a process dies.
pub struct App {
    state: Arc<AppState>,
    address: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
}

impl App {
    /// Starts `name` on a free port of [`backend_ip`].
    pub fn start(name: &str) -> App {
        Self::start_on(name, SocketAddr::new(backend_ip(), 0))
    }

    /// Starts `name` on `address` (to bring a killed one back on its port).
    pub fn start_on(name: &str, address: SocketAddr) -> App {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("backend runtime");
        let mut attempts = 0;
        let listener = loop {
            match std::net::TcpListener::bind(address) {
                Ok(listener) => break listener,
                // A port just released by a killed backend can take a moment.
                Err(_) if attempts < 100 => {
                    attempts += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("backend {name}: bind {address}: {e}"),
            }
        };
        listener.set_nonblocking(true).expect("non-blocking");
        let address = listener.local_addr().expect("local address");
        let listener = {
            let _entered = runtime.enter();
            tokio::net::TcpListener::from_std(listener).expect("tokio listener")
        };
        let state = Arc::new(AppState {
            name: name.to_owned(),
            health_status: AtomicU16::new(200),
            hits: AtomicUsize::new(0),
            health_checks: AtomicUsize::new(0),
        });
        let task_state = state.clone();
        runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = task_state.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<Incoming>| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(answer(&state, &request)) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        App {
            state,
            address,
            runtime: Some(runtime),
        }
    }

    /// Its name (the body of its answers).
    pub fn name(&self) -> &str {
        &self.state.name
    }

    /// Its address.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// Requests answered, health checks excluded.
    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }

    /// Health checks answered.
    pub fn health_checks(&self) -> usize {
        self.state.health_checks.load(Ordering::SeqCst)
    }

    /// `/healthz` answers `status` from now on.
    pub fn set_health(&self, status: u16) {
        self.state.health_status.store(status, Ordering::SeqCst);
    }

    /// Kills it: the listener and every connection close at once.
    pub fn kill(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }

    /// Whether it is running.
    pub fn is_running(&self) -> bool {
        self.runtime.is_some()
    }

    /// Starts it again on the same address, after [`App::kill`].
    pub fn revive(&mut self) {
        assert!(self.runtime.is_none(), "{} is running", self.name());
        let mut again = App::start_on(&self.state.name, self.address);
        self.runtime = again.runtime.take();
        self.state = again.state.clone();
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.kill();
    }
}

fn answer(state: &AppState, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let mut response = if request.uri().path() == "/healthz" {
        state.health_checks.fetch_add(1, Ordering::SeqCst);
        let mut response = Response::new(Full::new(Bytes::from_static(b"health\n")));
        *response.status_mut() =
            hyper::StatusCode::from_u16(state.health_status.load(Ordering::SeqCst))
                .unwrap_or_default();
        response
    } else {
        state.hits.fetch_add(1, Ordering::SeqCst);
        Response::new(Full::new(Bytes::from(state.name.clone())))
    };
    response
        .headers_mut()
        .insert("x-backend", state.name.parse().expect("header value"));
    response
}

/// Backends named `names`.
pub fn apps(names: &[&str]) -> Vec<App> {
    names.iter().map(|name| App::start(name)).collect()
}

// === Consul ===

/// A Consul agent: the double, or the one `$SWITCHYARD_TEST_CONSUL` names.
pub struct Consul {
    /// The double, when local.
    pub double: Option<ConsulDouble>,
    address: String,
    /// The agent API client.
    pub agent: AgentClient,
    registered: Mutex<Vec<String>>,
}

impl Consul {
    /// The double, or `$SWITCHYARD_TEST_CONSUL` when set.
    pub fn start() -> Consul {
        match target("SWITCHYARD_TEST_CONSUL") {
            Some(address) => Self::remote(&address),
            None => Self::double(),
        }
    }

    /// Always the local double (for tests that stop and restart it).
    pub fn double() -> Consul {
        let double = ConsulDouble::start(Options::default()).expect("start the Consul double");
        let address = double.address();
        Consul {
            agent: AgentClient::new(&address),
            double: Some(double),
            address,
            registered: Mutex::new(Vec::new()),
        }
    }

    fn remote(address: &str) -> Consul {
        println!("Consul: using {address} (SWITCHYARD_TEST_CONSUL)");
        Consul {
            agent: AgentClient::new(address),
            double: None,
            address: address.to_owned(),
            registered: Mutex::new(Vec::new()),
        }
    }

    /// The agent's URL, for the gateway's `address`.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The double (panics when targeting a real agent).
    pub fn knobs(&self) -> &ConsulDouble {
        self.double
            .as_ref()
            .expect("this test needs the Consul double (it stops and restarts the agent)")
    }

    /// Registers `app` as an instance of `service` (ID `<service>-<app name>`), passing.
    pub async fn register(&self, service: &str, app: &App) {
        let id = format!("{service}-{}", app.name());
        self.agent
            .register(&json!({
                "ID": id,
                "Name": service,
                "Address": app.address().ip().to_string(),
                "Port": app.port(),
                "Check": {"TTL": "10m", "Status": "passing"},
            }))
            .await
            .unwrap_or_else(|e| panic!("register {id}: {e}"));
        self.registered.lock().unwrap().push(id);
    }

    /// Deregisters the instance `app` of `service`.
    pub async fn deregister(&self, service: &str, app: &App) {
        let id = format!("{service}-{}", app.name());
        self.agent
            .deregister(&id)
            .await
            .unwrap_or_else(|e| panic!("deregister {id}: {e}"));
        self.registered.lock().unwrap().retain(|r| r != &id);
    }

    /// Deregisters everything this test registered (on a real agent; a double just goes).
    pub async fn cleanup(&self) {
        if self.double.is_some() {
            return;
        }
        let ids = std::mem::take(&mut *self.registered.lock().unwrap());
        for id in ids {
            let _ = self.agent.deregister(&id).await;
        }
    }

    /// The `[registries.NAME]` table.
    pub fn registry(&self, name: &str) -> String {
        format!(
            "[registries.{name}]\ntype = \"consul\"\naddress = \"{}\"\n\n",
            self.address
        )
    }
}

// === Kubernetes ===

/// A Kubernetes API: the double, or the cluster of `$SWITCHYARD_TEST_KUBECONFIG`.
pub struct Kube {
    /// The double, when local.
    pub double: Option<KubeDouble>,
    _dir: Option<tempfile::TempDir>,
    kubeconfig: PathBuf,
    client: kube::Client,
    /// The namespace slices are made in.
    pub namespace: String,
    made: Mutex<Vec<(String, String)>>,
}

impl Kube {
    /// The double, or `$SWITCHYARD_TEST_KUBECONFIG` when set.
    pub async fn start() -> Kube {
        match target("SWITCHYARD_TEST_KUBECONFIG") {
            Some(path) => {
                println!("Kubernetes: using {path} (SWITCHYARD_TEST_KUBECONFIG)");
                Self::with_kubeconfig(PathBuf::from(path), None, None).await
            }
            None => Self::double().await,
        }
    }

    /// Always the local double (for tests that stop and restart it).
    pub async fn double() -> Kube {
        let double = KubeDouble::start(KubeDoubleOptions::default())
            .await
            .expect("start the API-server double");
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("kubeconfig");
        double.write_kubeconfig(&path).expect("write kubeconfig");
        Self::with_kubeconfig(path, Some(double), Some(dir)).await
    }

    async fn with_kubeconfig(
        kubeconfig: PathBuf,
        double: Option<KubeDouble>,
        dir: Option<tempfile::TempDir>,
    ) -> Kube {
        let config = kube::Config::from_custom_kubeconfig(
            Kubeconfig::read_from(&kubeconfig)
                .unwrap_or_else(|e| panic!("read {}: {e}", kubeconfig.display())),
            &KubeConfigOptions::default(),
        )
        .await
        .expect("kubeconfig");
        Kube {
            double,
            _dir: dir,
            kubeconfig,
            client: kube::Client::try_from(config).expect("kube client"),
            namespace: "default".to_owned(),
            made: Mutex::new(Vec::new()),
        }
    }

    /// The kubeconfig the gateway reads.
    pub fn kubeconfig(&self) -> &std::path::Path {
        &self.kubeconfig
    }

    /// The double (panics when targeting a real cluster).
    pub fn knobs(&self) -> &KubeDouble {
        self.double
            .as_ref()
            .expect("this test needs the API-server double (it stops and restarts it)")
    }

    fn api(&self, namespace: &str) -> kube::Api<EndpointSlice> {
        kube::Api::namespaced(self.client.clone(), namespace)
    }

    /// Adds `app` to Service `service` of [`Kube::namespace`]: see [`Kube::add_in`].
    pub async fn add(&self, service: &str, app: &App) {
        self.add_in(&self.namespace, service, app).await;
    }

    /// Removes `app` from `service` of [`Kube::namespace`]: see [`Kube::remove_in`].
    pub async fn remove(&self, service: &str, app: &App) {
        self.remove_in(&self.namespace, service, app).await;
    }

    /// Adds `app` to Service `namespace/service`: one EndpointSlice `<service>-<app name>`
    /// with one ready endpoint and port `http` = its port.
    pub async fn add_in(&self, namespace: &str, service: &str, app: &App) {
        let name = format!("{service}-{}", app.name());
        let slice: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {
                "kubernetes.io/service-name": service,
                "endpointslice.kubernetes.io/managed-by": "switchyard-tests",
            }},
            "addressType": if app.address().is_ipv4() { "IPv4" } else { "IPv6" },
            "ports": [{"name": "http", "port": app.port(), "protocol": "TCP"}],
            "endpoints": [{
                "addresses": [app.address().ip().to_string()],
                "conditions": {"ready": true},
            }],
        }))
        .expect("slice");
        let api = self.api(namespace);
        match api.get_opt(&name).await.expect("get slice") {
            Some(current) => {
                let mut slice = slice;
                slice.metadata.resource_version = current.metadata.resource_version;
                api.replace(&name, &PostParams::default(), &slice)
                    .await
                    .unwrap_or_else(|e| panic!("replace {name}: {e}"));
            }
            None => {
                api.create(&PostParams::default(), &slice)
                    .await
                    .unwrap_or_else(|e| panic!("create {name}: {e}"));
                self.made.lock().unwrap().push((namespace.to_owned(), name));
            }
        }
    }

    /// Removes `app` from `namespace/service` (deletes its slice).
    pub async fn remove_in(&self, namespace: &str, service: &str, app: &App) {
        let name = format!("{service}-{}", app.name());
        self.api(namespace)
            .delete(&name, &DeleteParams::default())
            .await
            .unwrap_or_else(|e| panic!("delete {name}: {e}"));
        self.made
            .lock()
            .unwrap()
            .retain(|(ns, made)| ns != namespace || made != &name);
    }

    /// Deletes the slices this test made (on a real cluster; a double just goes).
    pub async fn cleanup(&self) {
        if self.double.is_some() {
            return;
        }
        let made = std::mem::take(&mut *self.made.lock().unwrap());
        for (namespace, name) in made {
            let _ = self
                .api(&namespace)
                .delete(&name, &DeleteParams::default())
                .await;
        }
    }

    /// The `[registries.NAME]` table.
    pub fn registry(&self, name: &str) -> String {
        format!(
            "[registries.{name}]\ntype = \"kubernetes\"\nkubeconfig = \"{}\"\n\n",
            self.kubeconfig.display()
        )
    }

    /// A source's `service` for `service`.
    pub fn service(&self, service: &str) -> String {
        format!("{}/{service}", self.namespace)
    }
}

// === etcd ===

/// An etcd: a local server, or the one `$SWITCHYARD_TEST_ETCD` names.
pub struct Etcd {
    /// The local server.
    pub server: Option<EtcdServer>,
    url: String,
    /// The key prefix (`/switchyard/services` on a local server, a unique one on a shared one).
    pub prefix: String,
}

impl Etcd {
    /// A local etcd, or `$SWITCHYARD_TEST_ETCD` when set.
    pub fn start() -> Etcd {
        match target("SWITCHYARD_TEST_ETCD") {
            Some(url) => {
                println!("etcd: using {url} (SWITCHYARD_TEST_ETCD)");
                Etcd {
                    server: None,
                    url,
                    prefix: format!("/{}", unique("switchyard-test")),
                }
            }
            None => Self::local(),
        }
    }

    /// Always a local server (for tests that stop and restart it).
    pub fn local() -> Etcd {
        let server = EtcdServer::start();
        Etcd {
            url: server.client_url(),
            server: Some(server),
            prefix: "/switchyard/services".to_owned(),
        }
    }

    /// The client URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The local server (panics when targeting a shared one).
    pub fn knobs(&mut self) -> &mut EtcdServer {
        self.server
            .as_mut()
            .expect("this test needs a local etcd (it stops and restarts it)")
    }

    async fn client(&self) -> etcd_client::Client {
        etcd_client::Client::connect([self.url.as_str()], None)
            .await
            .unwrap_or_else(|e| panic!("connect to etcd at {}: {e}", self.url))
    }

    fn key(&self, service: &str, app: &App) -> String {
        format!("{}/{service}/{}", self.prefix, app.name())
    }

    /// Puts `app` as an instance of `service`.
    pub async fn put(&self, service: &str, app: &App) {
        let value = json!({"host": app.address().ip().to_string(), "port": app.port()});
        self.client()
            .await
            .put(self.key(service, app), value.to_string(), None)
            .await
            .expect("etcd put");
    }

    /// Deletes the instance `app` of `service`.
    pub async fn delete(&self, service: &str, app: &App) {
        self.client()
            .await
            .delete(self.key(service, app), None)
            .await
            .expect("etcd delete");
    }

    /// Deletes this test's keys on a shared etcd.
    pub async fn cleanup(&self) {
        if self.server.is_some() {
            return;
        }
        let options = etcd_client::DeleteOptions::new().with_prefix();
        let _ = self
            .client()
            .await
            .delete(format!("{}/", self.prefix), Some(options))
            .await;
    }

    /// The `[registries.NAME]` table.
    pub fn registry(&self, name: &str) -> String {
        format!(
            "[registries.{name}]\ntype = \"etcd\"\nendpoints = [\"{}\"]\nprefix = \"{}\"\n\n",
            self.url, self.prefix
        )
    }
}

// === DNS ===

/// A DNS server for zone [`ZONE`]: a local bind9, or the read-only one `$SWITCHYARD_TEST_DNS`
/// names.
pub struct Dns {
    /// The local server.
    pub server: Option<NamedServer>,
    address: String,
}

impl Dns {
    /// A local bind9 whose zone has, for each `(service, apps)`, SRV records
    /// `_http._tcp.<service>.example.test` (priority 0, weight 1) to `<app>.<service>` with
    /// A records of the apps' addresses. With `$SWITCHYARD_TEST_DNS` set, that server instead
    /// (its zone is not changed).
    pub fn start(services: &[(&str, &[&App])]) -> Dns {
        match target("SWITCHYARD_TEST_DNS") {
            Some(address) => {
                println!("DNS: using {address} (SWITCHYARD_TEST_DNS), its zone unchanged");
                Dns {
                    server: None,
                    address,
                }
            }
            None => Self::local(services),
        }
    }

    /// Always a local bind9 (for tests that stop and restart it).
    pub fn local(services: &[(&str, &[&App])]) -> Dns {
        let server = NamedServer::launch(ZONE, &srv_records(services));
        Dns {
            address: server.addr().to_string(),
            server: Some(server),
        }
    }

    /// Whether the zone is the test's own (local) rather than the compose one.
    pub fn is_local(&self) -> bool {
        self.server.is_some()
    }

    /// The local server (panics when targeting a shared one).
    pub fn knobs(&mut self) -> &mut NamedServer {
        self.server
            .as_mut()
            .expect("this test needs a local bind9 (it changes or stops it)")
    }

    /// Adds `app` to `service` with nsupdate (local server only).
    pub fn add(&self, service: &str, app: &App) {
        let server = self.server.as_ref().expect("a local bind9");
        let (name, ip, port) = (app.name(), app.address().ip(), app.port());
        server.nsupdate(&format!(
            "update add {name}.{service}.{ZONE} 1 A {ip}\nupdate add _http._tcp.{service}.{ZONE} 1 SRV 0 1 {port} {name}.{service}.{ZONE}"
        ));
    }

    /// Removes `app` from `service` with nsupdate (local server only).
    pub fn remove(&self, service: &str, app: &App) {
        let server = self.server.as_ref().expect("a local bind9");
        let (name, port) = (app.name(), app.port());
        server.nsupdate(&format!(
            "update delete _http._tcp.{service}.{ZONE} SRV 0 1 {port} {name}.{service}.{ZONE}"
        ));
    }

    /// The `[registries.NAME]` table (TTLs clamped to 1–2 s so changes show fast).
    pub fn registry(&self, name: &str) -> String {
        format!(
            "[registries.{name}]\ntype = \"dns\"\nnameservers = [\"{}\"]\nmin_ttl = \"1s\"\nmax_ttl = \"2s\"\ntimeout = \"300ms\"\nattempts = 2\n\n",
            self.address
        )
    }

    /// A source's `service` for `service`: its SRV name. On a shared server, whose zone the
    /// test does not change: `$SWITCHYARD_TEST_DNS_SERVICE`, default
    /// `_http._tcp.orders.example.test` (the compose zone's).
    pub fn service(&self, service: &str) -> String {
        if self.server.is_none() {
            return target("SWITCHYARD_TEST_DNS_SERVICE")
                .unwrap_or_else(|| format!("_http._tcp.orders.{ZONE}"));
        }
        format!("_http._tcp.{service}.{ZONE}")
    }
}

/// Zone lines for `services` (see [`Dns::start`]).
pub fn srv_records(services: &[(&str, &[&App])]) -> String {
    let mut records = String::new();
    for (service, apps) in services {
        for app in *apps {
            let (name, ip, port) = (app.name(), app.address().ip(), app.port());
            let _ = writeln!(
                records,
                "_http._tcp.{service} IN SRV 0 1 {port} {name}.{service}\n{name}.{service} IN A {ip}"
            );
        }
    }
    records
}

// === the gateway ===

/// One `[upstreams.NAME]` with `sources` (`(registry, service, priority, weight)`) and
/// `extra` lines, routed at `/NAME` (prefix kept: the backends answer any path).
pub fn upstream(
    name: &str,
    sources: &[(&str, &str, u32, Option<u32>)],
    extra: &str,
    source_extra: &str,
) -> String {
    let mut text = format!("[upstreams.{name}]\n{extra}\n");
    for (registry, service, priority, weight) in sources {
        let _ = write!(
            text,
            "[[upstreams.{name}.sources]]\nregistry = \"{registry}\"\nservice = \"{service}\"\npriority = {priority}\n"
        );
        if let Some(weight) = weight {
            let _ = writeln!(text, "weight = {weight}");
        }
        if *registry == "k8s" {
            text.push_str("port = \"http\"\n");
        }
        text.push_str(source_extra);
        text.push('\n');
    }
    let _ = write!(
        text,
        "[[routes]]\nname = \"{name}\"\npath_prefix = \"/{name}\"\nupstream = \"{name}\"\nretries = 2\ntimeout = \"5s\"\n\n"
    );
    text
}

/// The upstream `name` of `/api/upstreams`.
pub async fn upstream_json(gateway: &Gateway, name: &str) -> Value {
    let all = gateway.admin_json("/api/upstreams").await;
    all.as_array()
        .and_then(|list| list.iter().find(|u| u["name"] == name).cloned())
        .unwrap_or_else(|| panic!("no upstream {name} in {all}"))
}

/// The serving tier's source priority of upstream `name` (`None`: nothing serves).
pub async fn serving_tier(gateway: &Gateway, name: &str) -> Option<u64> {
    upstream_json(gateway, name).await["serving_tier"]["priority"].as_u64()
}

/// Sends `n` GETs to `path` (16 at a time), counting answers by body (status if not 200).
pub async fn spread(gateway: &Gateway, path: &str, n: usize) -> BTreeMap<String, usize> {
    use futures::StreamExt;
    let replies: Vec<String> = futures::stream::iter(0..n)
        .map(|_| async {
            match gateway.client().get(gateway.url(path)).send().await {
                Ok(r) if r.status() == 200 => r.text().await.unwrap_or_default(),
                Ok(r) => r.status().as_u16().to_string(),
                Err(e) => format!("error: {e}"),
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let mut counts = BTreeMap::new();
    for reply in replies {
        *counts.entry(reply).or_default() += 1;
    }
    counts
}

/// Whether 30 GETs on `path` reach exactly the bodies `names`, each at least once.
pub async fn reaches(gateway: &Gateway, path: &str, names: &[&str]) -> bool {
    let counts = spread(gateway, path, 30).await;
    counts.len() == names.len() && names.iter().all(|n| counts.contains_key(*n))
}

/// Whether 30 GETs on `path` all reach one of `names`.
pub async fn only(gateway: &Gateway, path: &str, names: &[&str]) -> bool {
    let counts = spread(gateway, path, 30).await;
    !counts.is_empty() && counts.keys().all(|k| names.contains(&k.as_str()))
}

/// The names of apps.
pub fn names(apps: &[&App]) -> Vec<String> {
    apps.iter().map(|a| a.name().to_owned()).collect()
}

// === load with request-level accounting ===

/// What one phase of a load saw.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    /// Requests sent in the phase.
    pub sent: usize,
    /// 200 answers.
    pub ok: usize,
    /// Everything else: other statuses and transport errors.
    pub failed: usize,
    /// 200 answers by body (the backend's name), for requests that started and finished
    /// within the phase (one that straddles a phase change could have been routed in either).
    pub by_body: BTreeMap<String, usize>,
    /// Failures by kind (`503`, `error: ...`).
    pub failures: BTreeMap<String, usize>,
    /// How long the phase lasted.
    pub duration: Duration,
}

impl Tally {
    /// Whether every 200 came from one of `names`.
    pub fn only_from(&self, names: &[&str]) -> bool {
        self.by_body.keys().all(|b| names.contains(&b.as_str()))
    }
}

struct LoadShared {
    stop: AtomicBool,
    /// Lock order: `phases`, then `phase`.
    phase: Mutex<CurrentPhase>,
    phases: Mutex<Vec<(String, Tally)>>,
    sent: AtomicUsize,
    limit: usize,
    deadline: Instant,
}

/// The phase requests count in now, and the ones asked for while it had none yet.
struct CurrentPhase {
    index: usize,
    since: Instant,
    /// Whether a request was sent in it.
    sent: bool,
    /// Phases asked for before this one carried a request, in order.
    queued: std::collections::VecDeque<usize>,
}

impl CurrentPhase {
    /// Moves on to phase `next`, closing the current one's duration.
    fn switch(&mut self, phases: &mut [(String, Tally)], next: usize) {
        phases[self.index].1.duration = self.since.elapsed();
        self.index = next;
        self.since = Instant::now();
        self.sent = false;
    }
}

/// A steady load of GETs on one path through the gateway: `workers` loops, each sending one
/// request at a time with a short pause, until stopped, `limit` requests in all, or
/// `max` time (bounded either way). Every answer is counted in the phase that was current
/// when its request was sent. Every phase carries at least one request, however quickly
/// the test moves on (a failover can take a millisecond): a phase asked for while the
/// current one has sent nothing yet starts right after the current one's first request.
pub struct Load {
    path: String,
    shared: Arc<LoadShared>,
    workers: Vec<tokio::task::JoinHandle<()>>,
    started: Instant,
}

impl Load {
    /// Starts the load on `gateway`'s `path` in phase `first`.
    pub fn start(gateway: &Gateway, path: &str, first: &str, limit: usize, max: Duration) -> Load {
        let workers = 4;
        let shared = Arc::new(LoadShared {
            stop: AtomicBool::new(false),
            phase: Mutex::new(CurrentPhase {
                index: 0,
                since: Instant::now(),
                sent: false,
                queued: std::collections::VecDeque::new(),
            }),
            phases: Mutex::new(vec![(first.to_owned(), Tally::default())]),
            sent: AtomicUsize::new(0),
            limit,
            deadline: Instant::now() + max,
        });
        let url = gateway.url(path);
        let workers = (0..workers)
            .map(|_| {
                let (shared, url) = (shared.clone(), url.clone());
                tokio::spawn(async move {
                    let client = reqwest::Client::builder()
                        .timeout(Duration::from_secs(10))
                        .build()
                        .expect("client");
                    while !shared.stop.load(Ordering::SeqCst)
                        && Instant::now() < shared.deadline
                        && shared.sent.fetch_add(1, Ordering::SeqCst) < shared.limit
                    {
                        let phase = {
                            let mut phases = shared.phases.lock().unwrap();
                            let mut current = shared.phase.lock().unwrap();
                            let phase = current.index;
                            current.sent = true;
                            if let Some(next) = current.queued.pop_front() {
                                current.switch(&mut phases, next);
                            }
                            phase
                        };
                        let outcome = match client.get(&url).send().await {
                            Ok(r) if r.status() == 200 => Ok(r.text().await.unwrap_or_default()),
                            Ok(r) => Err(r.status().as_u16().to_string()),
                            Err(e) => Err(format!("error: {}", kind_of(&e))),
                        };
                        // A request that spans a phase change may have been routed in
                        // either phase: it counts for failures but not for who answered.
                        let straddled = shared.phase.lock().unwrap().index != phase;
                        {
                            let mut phases = shared.phases.lock().unwrap();
                            let tally = &mut phases[phase].1;
                            tally.sent += 1;
                            match outcome {
                                Ok(body) => {
                                    tally.ok += 1;
                                    if !straddled {
                                        *tally.by_body.entry(body).or_default() += 1;
                                    }
                                }
                                Err(kind) => {
                                    tally.failed += 1;
                                    *tally.failures.entry(kind).or_default() += 1;
                                }
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(3)).await;
                    }
                })
            })
            .collect();
        Load {
            path: path.to_owned(),
            shared,
            workers,
            started: Instant::now(),
        }
    }

    /// Starts phase `name`: requests sent from now on count there (or from just after the
    /// current phase's first request, if it has not sent one yet).
    pub fn phase(&self, name: &str) {
        let mut phases = self.shared.phases.lock().unwrap();
        let mut current = self.shared.phase.lock().unwrap();
        phases.push((name.to_owned(), Tally::default()));
        let next = phases.len() - 1;
        if current.sent && current.queued.is_empty() {
            current.switch(&mut phases, next);
        } else {
            current.queued.push_back(next);
        }
    }

    /// The tally of phase `name` so far.
    pub fn tally(&self, name: &str) -> Tally {
        let phases = self.shared.phases.lock().unwrap();
        phases
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.clone())
            .unwrap_or_else(|| panic!("no phase {name}"))
    }

    /// Stops, waits for the requests in flight, prints the accounting and returns it.
    pub async fn finish(self) -> Report {
        self.shared.stop.store(true, Ordering::SeqCst);
        for worker in self.workers {
            worker.await.expect("load worker");
        }
        let mut phases = std::mem::take(&mut *self.shared.phases.lock().unwrap());
        let current = self.shared.phase.lock().unwrap();
        phases[current.index].1.duration = current.since.elapsed();
        let report = Report {
            path: self.path,
            phases,
            duration: self.started.elapsed(),
            hit_limit: self.shared.sent.load(Ordering::SeqCst) >= self.shared.limit,
        };
        report.print();
        report
    }
}

fn kind_of(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        "timeout".into()
    } else if error.is_connect() {
        "connect".into()
    } else {
        let text = error.to_string();
        text.chars().take(60).collect()
    }
}

/// The accounting of a finished [`Load`].
#[derive(Debug)]
pub struct Report {
    /// The path loaded.
    pub path: String,
    /// Each phase, in order.
    pub phases: Vec<(String, Tally)>,
    /// The whole run.
    pub duration: Duration,
    /// Whether the load stopped at its request limit (later phases may then be empty).
    pub hit_limit: bool,
}

impl Report {
    /// Phase `name`.
    pub fn phase(&self, name: &str) -> &Tally {
        self.phases
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t)
            .unwrap_or_else(|| panic!("no phase {name}"))
    }

    /// Requests sent in all.
    pub fn sent(&self) -> usize {
        self.phases.iter().map(|(_, t)| t.sent).sum()
    }

    /// Failed requests in all.
    pub fn failed(&self) -> usize {
        self.phases.iter().map(|(_, t)| t.failed).sum()
    }

    /// Prints one line per phase.
    pub fn print(&self) {
        println!(
            "load on {}: {} requests, {} failed, in {:.1?}{}",
            self.path,
            self.sent(),
            self.failed(),
            self.duration,
            if self.hit_limit {
                " (stopped at its request limit)"
            } else {
                ""
            }
        );
        for (name, t) in &self.phases {
            println!(
                "  {name:<44} {:>6} sent {:>6} ok {:>5} failed  {:>7.1?}  {:?}{}",
                t.sent,
                t.ok,
                t.failed,
                t.duration,
                t.by_body,
                if t.failures.is_empty() {
                    String::new()
                } else {
                    format!("  failures: {:?}", t.failures)
                }
            );
        }
    }

    /// Asserts that phase `name` had requests and none failed.
    pub fn assert_no_failures(&self, name: &str) {
        let t = self.phase(name);
        assert!(t.sent > 0, "{}: phase {name:?} sent no request", self.path);
        assert_eq!(
            t.failed, 0,
            "{}: phase {name:?}: {} of {} requests failed: {:?}",
            self.path, t.failed, t.sent, t.failures
        );
    }

    /// Asserts that no phase had a failure and every phase had requests.
    pub fn assert_all_ok(&self) {
        for (name, _) in &self.phases {
            self.assert_no_failures(name);
        }
    }
}

/// A `/readyz` answer: status and body.
pub async fn readyz(gateway: &Gateway) -> (u16, String) {
    let reply = gateway
        .send(gateway.client().get(gateway.admin_url("/readyz")))
        .await;
    (reply.status, reply.body)
}

/// The `state` of registry `name` in `/api/registries`.
pub async fn registry_state(gateway: &Gateway, name: &str) -> String {
    let all = gateway.admin_json("/api/registries").await;
    all.as_array()
        .and_then(|list| list.iter().find(|r| r["name"] == name))
        .and_then(|r| r["state"].as_str())
        .unwrap_or("?")
        .to_owned()
}
