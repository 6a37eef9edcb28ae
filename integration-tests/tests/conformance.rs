//! The registry conformance kit (`switchyard_registry::testkit`) run against every backend:
//! static and file on their own, etcd against a real etcd, dns against a real BIND 9
//! (`named`, changed with `nsupdate`), consul, kubernetes, nomad, nacos and eureka against
//! the project's doubles (changed through their real HTTP APIs), zookeeper against a real
//! ZooKeeper (changed with the Python kazoo client), http against a small Prometheus HTTP SD
//! inventory server. Each backend's [`Harness`] below is all it takes;
//! a new backend adds one.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::json;
use switchyard_registry::testkit::{self, Case, Harness, Instance, Outcome, Supports};
use switchyard_registry::{Registry, RegistryContext, RegistryFactory, ServiceQuery};

/// Runs the kit and checks which cases ran.
async fn conformance(harness: &mut dyn Harness, expected_to_run: &[Case]) {
    let report = testkit::run(harness).await;
    assert_eq!(report.passed(), expected_to_run, "{report:?}");
    for (case, outcome) in &report.cases {
        if let Outcome::NotApplicable(why) = outcome {
            println!("{case}: not applicable: {why}");
        }
    }
}

/// Instances by service, as a harness keeps them for backends it must rewrite whole.
type Book = BTreeMap<String, BTreeMap<SocketAddr, u32>>;

/// A Prometheus file_sd list kept whole, for the backends that read one (file, http): the
/// harness rewrites or serves it anew after every change, as config management or an
/// inventory system does.
#[derive(Default)]
struct FileSdList {
    book: Book,
    /// Services given an entry whose target is not an address.
    malformed: Vec<String>,
}

impl FileSdList {
    fn register(&mut self, service: &str, instance: Instance) {
        self.book
            .entry(service.to_owned())
            .or_default()
            .insert(instance.address, instance.weight);
    }
    fn deregister(&mut self, service: &str, address: SocketAddr) {
        if let Some(set) = self.book.get_mut(service) {
            set.remove(&address);
        }
    }
    fn write_malformed(&mut self, service: &str) {
        self.malformed.push(service.to_owned());
    }
    fn delete_service(&mut self, service: &str) {
        self.book.remove(service);
        self.malformed.retain(|s| s != service);
    }
    /// The list as JSON: a target group per instance, then a malformed one per service
    /// given one.
    fn to_json(&self) -> String {
        let mut groups = Vec::new();
        for (service, set) in &self.book {
            for (address, weight) in set {
                groups.push(json!({"targets": [address.to_string()],
                    "labels": {"__service__": service, "__weight__": weight.to_string()}}));
            }
        }
        for service in &self.malformed {
            groups.push(json!({"targets": ["not an address"], "labels": {"__service__": service}}));
        }
        serde_json::to_string_pretty(&groups).unwrap()
    }
}

// === static ===

struct StaticHarness {
    book: Book,
}

#[async_trait]
impl Harness for StaticHarness {
    fn supports(&self) -> Supports {
        Supports::FIXED
    }
    async fn registry(&mut self) -> Arc<dyn Registry> {
        let services: serde_json::Map<String, serde_json::Value> = self
            .book
            .iter()
            .map(|(service, set)| {
                let entries: Vec<_> = set
                    .iter()
                    .map(|(a, w)| json!({"address": a.to_string(), "weight": w}))
                    .collect();
                (service.clone(), json!(entries))
            })
            .collect();
        switchyard_static::StaticFactory
            .build(
                RegistryContext::new("static"),
                &json!({ "services": services }),
            )
            .unwrap_or_else(|issues| panic!("{issues:?}"))
    }
    async fn register(&mut self, service: &str, instance: Instance) {
        self.book
            .entry(service.to_owned())
            .or_default()
            .insert(instance.address, instance.weight);
    }
}

#[tokio::test]
async fn static_registry() {
    let mut harness = StaticHarness { book: Book::new() };
    conformance(&mut harness, &[Case::FirstSync]).await;
}

// === file ===

struct FileHarness {
    dir: tempfile::TempDir,
    list: FileSdList,
}

impl FileHarness {
    fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("services.json")
    }

    /// Rewrites the file whole, atomically (a rename), as config management does.
    fn write(&self) {
        let tmp = self.dir.path().join("services.json.tmp");
        std::fs::write(&tmp, self.list.to_json()).unwrap();
        std::fs::rename(&tmp, self.path()).unwrap();
    }
}

#[async_trait]
impl Harness for FileHarness {
    fn supports(&self) -> Supports {
        Supports {
            restart: false,
            ..Supports::ALL
        }
    }
    async fn registry(&mut self) -> Arc<dyn Registry> {
        self.write();
        switchyard_file::FileFactory
            .build(
                RegistryContext::new("file"),
                &json!({"path": self.path().to_str().unwrap()}),
            )
            .unwrap_or_else(|issues| panic!("{issues:?}"))
    }
    async fn register(&mut self, service: &str, instance: Instance) {
        self.list.register(service, instance);
        self.write();
    }
    async fn deregister(&mut self, service: &str, address: SocketAddr) {
        self.list.deregister(service, address);
        self.write();
    }
    async fn write_malformed(&mut self, service: &str) {
        self.list.write_malformed(service);
        self.write();
    }
    async fn delete_service(&mut self, service: &str) {
        self.list.delete_service(service);
        self.write();
    }
}

#[tokio::test]
async fn file_registry() {
    let mut harness = FileHarness {
        dir: tempfile::tempdir().unwrap(),
        list: FileSdList::default(),
    };
    conformance(
        &mut harness,
        &[
            Case::FirstSync,
            Case::Add,
            Case::Remove,
            Case::Weight,
            Case::Malformed,
            Case::Deleted,
        ],
    )
    .await;
}

// === etcd ===

const ETCD_PREFIX: &str = "/switchyard/services";

struct EtcdHarness {
    server: switchyard_integration_tests::etcd::EtcdServer,
}

impl EtcdHarness {
    async fn client(&self) -> etcd_client::Client {
        etcd_client::Client::connect([self.server.client_url()], None)
            .await
            .expect("etcd client")
    }
}

#[async_trait]
impl Harness for EtcdHarness {
    fn supports(&self) -> Supports {
        Supports::ALL
    }
    async fn registry(&mut self) -> Arc<dyn Registry> {
        switchyard_etcd::EtcdFactory
            .build(
                RegistryContext::new("etcd"),
                &json!({"endpoints": [self.server.client_url()]}),
            )
            .unwrap_or_else(|issues| panic!("{issues:?}"))
    }
    async fn register(&mut self, service: &str, instance: Instance) {
        let value = json!({"host": instance.address.ip().to_string(),
            "port": instance.address.port(), "weight": instance.weight});
        let key = format!("{ETCD_PREFIX}/{service}/{}", instance.address.port());
        self.client()
            .await
            .put(key, value.to_string(), None)
            .await
            .expect("put");
    }
    async fn deregister(&mut self, service: &str, address: SocketAddr) {
        let key = format!("{ETCD_PREFIX}/{service}/{}", address.port());
        self.client().await.delete(key, None).await.expect("delete");
    }
    async fn write_malformed(&mut self, service: &str) {
        let key = format!("{ETCD_PREFIX}/{service}/broken");
        self.client()
            .await
            .put(key, "{not json", None)
            .await
            .expect("put");
    }
    async fn delete_service(&mut self, service: &str) {
        let prefix = format!("{ETCD_PREFIX}/{service}/");
        self.client()
            .await
            .delete(
                prefix,
                Some(etcd_client::DeleteOptions::new().with_prefix()),
            )
            .await
            .expect("delete prefix");
    }
    async fn stop_server(&mut self) {
        self.server.stop();
    }
    async fn start_server(&mut self) {
        self.server.restart();
    }
}

#[tokio::test]
async fn etcd_registry() {
    let mut harness = EtcdHarness {
        server: switchyard_integration_tests::etcd::EtcdServer::start(),
    };
    conformance(&mut harness, &Case::ALL).await;
}

// === dns ===

const DNS_ZONE: &str = "kit.test";

struct DnsHarness {
    server: switchyard_integration_tests::bind::NamedServer,
    book: Book,
}

impl DnsHarness {
    fn srv_name(service: &str) -> String {
        format!("_http._tcp.{service}.{DNS_ZONE}.")
    }
    fn srv(service: &str, address: SocketAddr, weight: u32) -> String {
        format!(
            "{} 1 SRV 0 {weight} {} host.{DNS_ZONE}.",
            Self::srv_name(service),
            address.port()
        )
    }
}

#[async_trait]
impl Harness for DnsHarness {
    fn supports(&self) -> Supports {
        Supports::ALL
    }
    async fn registry(&mut self) -> Arc<dyn Registry> {
        switchyard_dns::DnsFactory
            .build(
                RegistryContext::new("dns"),
                &json!({"nameservers": [self.server.addr().to_string()],
                    "timeout": "300ms", "attempts": 2, "min_ttl": "1s", "max_ttl": "2s"}),
            )
            .unwrap_or_else(|issues| panic!("{issues:?}"))
    }
    fn query(&self, service: &str) -> ServiceQuery {
        ServiceQuery::new(Self::srv_name(service).trim_end_matches('.'))
    }
    async fn register(&mut self, service: &str, instance: Instance) {
        let set = self.book.entry(service.to_owned()).or_default();
        let mut script = String::new();
        if let Some(old) = set.insert(instance.address, instance.weight) {
            script.push_str(&format!(
                "update delete {}\n",
                Self::srv(service, instance.address, old)
            ));
        }
        script.push_str(&format!(
            "update add {}\n",
            Self::srv(service, instance.address, instance.weight)
        ));
        self.server.nsupdate(&script);
    }
    async fn deregister(&mut self, service: &str, address: SocketAddr) {
        let weight = self
            .book
            .get_mut(service)
            .and_then(|set| set.remove(&address))
            .expect("registered before");
        self.server.nsupdate(&format!(
            "update delete {}",
            Self::srv(service, address, weight)
        ));
    }
    async fn write_malformed(&mut self, service: &str) {
        // An SRV target with no address record: the resolver cannot use it.
        self.server.nsupdate(&format!(
            "update add {} 1 SRV 0 1 9 ghost.{DNS_ZONE}.",
            Self::srv_name(service)
        ));
    }
    async fn delete_service(&mut self, service: &str) {
        self.book.remove(service);
        self.server
            .nsupdate(&format!("update delete {} SRV", Self::srv_name(service)));
    }
    async fn stop_server(&mut self) {
        self.server.stop();
    }
    async fn start_server(&mut self) {
        self.server.start();
    }
}

#[tokio::test]
async fn dns_registry() {
    let server =
        switchyard_integration_tests::bind::NamedServer::launch(DNS_ZONE, "host IN A 127.0.0.1");
    let mut harness = DnsHarness {
        server,
        book: Book::new(),
    };
    conformance(&mut harness, &Case::ALL).await;
}

// === consul ===

struct ConsulHarness {
    double: switchyard_consul_double::ConsulDouble,
    agent: switchyard_consul_double::client::AgentClient,
    book: Book,
}

fn consul_id(service: &str, address: SocketAddr) -> String {
    format!("{service}-{}", address.port())
}

#[async_trait]
impl Harness for ConsulHarness {
    fn supports(&self) -> Supports {
        Supports::ALL
    }
    async fn registry(&mut self) -> Arc<dyn Registry> {
        switchyard_consul::ConsulFactory
            .build(
                RegistryContext::new("consul"),
                &json!({"address": self.double.address()}),
            )
            .unwrap_or_else(|issues| panic!("{issues:?}"))
    }
    async fn register(&mut self, service: &str, instance: Instance) {
        self.book
            .entry(service.to_owned())
            .or_default()
            .insert(instance.address, instance.weight);
        self.agent
            .register(
                &json!({"ID": consul_id(service, instance.address), "Name": service,
                "Address": instance.address.ip().to_string(), "Port": instance.address.port(),
                "Weights": {"Passing": instance.weight, "Warning": 1}}),
            )
            .await
            .expect("register");
    }
    async fn deregister(&mut self, service: &str, address: SocketAddr) {
        if let Some(set) = self.book.get_mut(service) {
            set.remove(&address);
        }
        self.agent
            .deregister(&consul_id(service, address))
            .await
            .expect("deregister");
    }
    async fn write_malformed(&mut self, service: &str) {
        // Consul stores port 0 (a service without a port); the backend cannot route to it.
        self.agent
            .register(&json!({"ID": format!("{service}-broken"), "Name": service,
                "Address": "127.0.0.1", "Port": 0}))
            .await
            .expect("register");
    }
    async fn delete_service(&mut self, service: &str) {
        let addresses: Vec<SocketAddr> = self
            .book
            .remove(service)
            .unwrap_or_default()
            .into_keys()
            .collect();
        for address in addresses {
            self.agent
                .deregister(&consul_id(service, address))
                .await
                .expect("deregister");
        }
    }
    async fn stop_server(&mut self) {
        self.double.stop();
    }
    async fn start_server(&mut self) {
        self.double.resume().expect("resume the double");
    }
}

#[tokio::test]
async fn consul_registry() {
    let double =
        switchyard_consul_double::ConsulDouble::start(switchyard_consul_double::Options::default())
            .expect("start the Consul double");
    let agent = switchyard_consul_double::client::AgentClient::new(&double.address());
    let mut harness = ConsulHarness {
        double,
        agent,
        book: Book::new(),
    };
    conformance(&mut harness, &Case::ALL).await;
}

// === kubernetes ===

struct KubeHarness {
    double: switchyard_kube_double::KubeDouble,
    _dir: tempfile::TempDir,
    kubeconfig: std::path::PathBuf,
    client: kube::Client,
    book: Book,
}

const KUBE_NAMESPACE: &str = "shop";

impl KubeHarness {
    fn slices(&self) -> kube::Api<k8s_openapi::api::discovery::v1::EndpointSlice> {
        kube::Api::namespaced(self.client.clone(), KUBE_NAMESPACE)
    }

    /// One slice per instance (each has its own port, as a slice per port would).
    fn slice_name(service: &str, address: SocketAddr) -> String {
        format!("{service}-{}", address.port())
    }
}

#[async_trait]
impl Harness for KubeHarness {
    fn supports(&self) -> Supports {
        Supports {
            // EndpointSlices carry no weights, and the API server validates addresses.
            weights: false,
            malformed: false,
            ..Supports::ALL
        }
    }
    async fn registry(&mut self) -> Arc<dyn Registry> {
        switchyard_kubernetes::KubernetesFactory
            .build(
                RegistryContext::new("k8s"),
                &json!({"kubeconfig": self.kubeconfig.to_str().unwrap()}),
            )
            .unwrap_or_else(|issues| panic!("{issues:?}"))
    }
    fn query(&self, service: &str) -> ServiceQuery {
        let mut query = ServiceQuery::new(format!("{KUBE_NAMESPACE}/{service}"));
        query.port = Some("http".into());
        query
    }
    async fn register(&mut self, service: &str, instance: Instance) {
        let name = Self::slice_name(service, instance.address);
        self.book
            .entry(service.to_owned())
            .or_default()
            .insert(instance.address, instance.weight);
        let slice: k8s_openapi::api::discovery::v1::EndpointSlice = serde_json::from_value(json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {"name": name, "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": instance.address.port(), "protocol": "TCP"}],
            "endpoints": [{"addresses": [instance.address.ip().to_string()],
                "conditions": {"ready": true}}],
        }))
        .unwrap();
        let api = self.slices();
        if api.get_opt(&name).await.unwrap().is_none() {
            api.create(&kube::api::PostParams::default(), &slice)
                .await
                .unwrap();
        }
    }
    async fn deregister(&mut self, service: &str, address: SocketAddr) {
        if let Some(set) = self.book.get_mut(service) {
            set.remove(&address);
        }
        self.slices()
            .delete(
                &Self::slice_name(service, address),
                &kube::api::DeleteParams::default(),
            )
            .await
            .unwrap();
    }
    async fn delete_service(&mut self, service: &str) {
        let addresses: Vec<SocketAddr> = self
            .book
            .remove(service)
            .unwrap_or_default()
            .into_keys()
            .collect();
        for address in addresses {
            self.slices()
                .delete(
                    &Self::slice_name(service, address),
                    &kube::api::DeleteParams::default(),
                )
                .await
                .unwrap();
        }
    }
    async fn stop_server(&mut self) {
        self.double.stop().await;
    }
    async fn start_server(&mut self) {
        self.double.start_again().await.expect("start the double");
    }
}

#[tokio::test]
async fn kubernetes_registry() {
    let double = switchyard_kube_double::KubeDouble::start(
        switchyard_kube_double::KubeDoubleOptions::default(),
    )
    .await
    .expect("start the API-server double");
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    double.write_kubeconfig(&kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(&kubeconfig).unwrap(),
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let mut harness = KubeHarness {
        double,
        _dir: dir,
        kubeconfig,
        client,
        book: Book::new(),
    };
    conformance(
        &mut harness,
        &[
            Case::FirstSync,
            Case::Add,
            Case::Remove,
            Case::ServerDown,
            Case::Backoff,
            Case::ServerBack,
            Case::Deleted,
        ],
    )
    .await;
}

// === nomad ===

/// A call on a double's HTTP API (`base` + `path`, a JSON or form body); panics unless it
/// succeeds.
async fn api_call(
    method: reqwest::Method,
    url: String,
    json_body: Option<&serde_json::Value>,
    form: &[(&str, String)],
) {
    let mut request = reqwest::Client::new().request(method, &url);
    if let Some(body) = json_body {
        request = request.json(body);
    }
    if !form.is_empty() {
        request = request.form(form);
    }
    let response = request.send().await.expect("the double's API");
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    assert!(status.is_success(), "{url}: {status} {text}");
}

struct NomadHarness {
    double: switchyard_nomad_double::NomadDouble,
    book: Book,
}

impl NomadHarness {
    /// One job per instance, so that stopping the job deregisters that instance alone.
    fn job_id(service: &str, address: SocketAddr) -> String {
        format!("{service}-{}", address.port())
    }

    /// A job `id` whose one group registers `service` with Nomad's service provider, on a
    /// static port `port` (none when `None`: Nomad registers a service without a port
    /// label with port 0) at `address`.
    fn job(id: &str, service: &str, address: &str, port: Option<u16>) -> serde_json::Value {
        let (networks, label) = match port {
            Some(port) => (
                json!([{"ReservedPorts": [{"Label": "http", "Value": port}]}]),
                "http",
            ),
            None => (json!([]), ""),
        };
        json!({"Job": {"ID": id, "Name": id, "Type": "service", "Datacenters": ["dc1"],
            "TaskGroups": [{"Name": "web", "Count": 1, "Networks": networks,
                "Services": [{"Name": service, "PortLabel": label, "Address": address,
                    "Provider": "nomad"}],
                "Tasks": [{"Name": "server", "Driver": "raw_exec"}]}]}})
    }

    async fn stop_job(&self, id: &str) {
        api_call(
            reqwest::Method::DELETE,
            format!("{}/v1/job/{id}?purge=true", self.double.address()),
            None,
            &[],
        )
        .await;
    }
}

#[async_trait]
impl Harness for NomadHarness {
    fn supports(&self) -> Supports {
        Supports {
            // Nomad keeps no weight in a service registration (`ServiceRegistration` in
            // nomad/structs/services.go has none; hashicorp/nomad#15603): every instance
            // serves at weight 1, so the `weight` case does not apply.
            weights: false,
            ..Supports::ALL
        }
    }
    async fn registry(&mut self) -> Arc<dyn Registry> {
        switchyard_nomad::NomadFactory
            .build(
                RegistryContext::new("nomad"),
                &json!({"address": self.double.address()}),
            )
            .unwrap_or_else(|issues| panic!("{issues:?}"))
    }
    async fn register(&mut self, service: &str, instance: Instance) {
        self.book
            .entry(service.to_owned())
            .or_default()
            .insert(instance.address, instance.weight);
        let id = Self::job_id(service, instance.address);
        let job = Self::job(
            &id,
            service,
            &instance.address.ip().to_string(),
            Some(instance.address.port()),
        );
        api_call(
            reqwest::Method::PUT,
            format!("{}/v1/jobs", self.double.address()),
            Some(&job),
            &[],
        )
        .await;
    }
    async fn deregister(&mut self, service: &str, address: SocketAddr) {
        if let Some(set) = self.book.get_mut(service) {
            set.remove(&address);
        }
        self.stop_job(&Self::job_id(service, address)).await;
    }
    async fn write_malformed(&mut self, service: &str) {
        // A service without a port label: Nomad registers it with port 0, which the backend
        // cannot route to.
        let id = format!("{service}-broken");
        let job = Self::job(&id, service, "127.0.0.1", None);
        api_call(
            reqwest::Method::PUT,
            format!("{}/v1/jobs", self.double.address()),
            Some(&job),
            &[],
        )
        .await;
    }
    async fn delete_service(&mut self, service: &str) {
        let addresses: Vec<SocketAddr> = self
            .book
            .remove(service)
            .unwrap_or_default()
            .into_keys()
            .collect();
        for address in addresses {
            self.stop_job(&Self::job_id(service, address)).await;
        }
    }
    async fn stop_server(&mut self) {
        self.double.stop();
    }
    async fn start_server(&mut self) {
        self.double.resume().expect("resume the double");
    }
}

#[tokio::test]
async fn nomad_registry() {
    let double =
        switchyard_nomad_double::NomadDouble::start(switchyard_nomad_double::Options::default())
            .expect("start the Nomad double");
    let mut harness = NomadHarness {
        double,
        book: Book::new(),
    };
    let all_but_weight: Vec<Case> = Case::ALL
        .into_iter()
        .filter(|case| *case != Case::Weight)
        .collect();
    conformance(&mut harness, &all_but_weight).await;
}

// === nacos ===

/// The refresh period the Nacos and Eureka harnesses configure (both backends poll): short,
/// so that each expectation holds well within the kit's deadline.
const POLL: &str = "200ms";

struct NacosHarness {
    double: switchyard_nacos_double::NacosDouble,
    book: Book,
}

impl NacosHarness {
    /// The form of one persistent instance of `service` at `address`.
    fn form(
        service: &str,
        address: SocketAddr,
        weight: Option<u32>,
    ) -> Vec<(&'static str, String)> {
        let mut form = vec![
            ("serviceName", service.to_owned()),
            ("ip", address.ip().to_string()),
            ("port", address.port().to_string()),
            ("ephemeral", "false".to_owned()),
        ];
        if let Some(weight) = weight {
            // Nacos weights are floats that the backend scales by 100 (registries/nacos
            // decode.rs): the kit's weight w is written as w / 100, so it reads back as w.
            form.push(("weight", format!("{}", f64::from(weight) / 100.0)));
        }
        form
    }

    async fn call(&self, method: reqwest::Method, form: &[(&str, String)]) {
        api_call(
            method,
            format!("{}/nacos/v2/ns/instance", self.double.address()),
            None,
            form,
        )
        .await;
    }
}

#[async_trait]
impl Harness for NacosHarness {
    fn supports(&self) -> Supports {
        Supports::ALL
    }
    async fn registry(&mut self) -> Arc<dyn Registry> {
        switchyard_nacos::NacosFactory
            .build(
                RegistryContext::new("nacos"),
                &json!({"servers": [self.double.address()], "fetch_interval": POLL}),
            )
            .unwrap_or_else(|issues| panic!("{issues:?}"))
    }
    async fn register(&mut self, service: &str, instance: Instance) {
        let known = self
            .book
            .entry(service.to_owned())
            .or_default()
            .insert(instance.address, instance.weight)
            .is_some();
        let form = Self::form(service, instance.address, Some(instance.weight));
        // A new instance is registered (POST), a known one updated (PUT), as the Open API
        // distinguishes them.
        let method = if known {
            reqwest::Method::PUT
        } else {
            reqwest::Method::POST
        };
        self.call(method, &form).await;
    }
    async fn deregister(&mut self, service: &str, address: SocketAddr) {
        if let Some(set) = self.book.get_mut(service) {
            set.remove(&address);
        }
        self.call(reqwest::Method::DELETE, &Self::form(service, address, None))
            .await;
    }
    async fn write_malformed(&mut self, service: &str) {
        // Port 0: Nacos stores it, the backend cannot route to it.
        let address = SocketAddr::from(([127, 0, 0, 1], 0));
        self.call(reqwest::Method::POST, &Self::form(service, address, None))
            .await;
    }
    async fn delete_service(&mut self, service: &str) {
        let addresses: Vec<SocketAddr> = self
            .book
            .remove(service)
            .unwrap_or_default()
            .into_keys()
            .collect();
        for address in addresses {
            self.call(reqwest::Method::DELETE, &Self::form(service, address, None))
                .await;
        }
    }
    async fn stop_server(&mut self) {
        self.double.stop();
    }
    async fn start_server(&mut self) {
        self.double.resume().expect("resume the double");
    }
}

#[tokio::test]
async fn nacos_registry() {
    let double =
        switchyard_nacos_double::NacosDouble::start(switchyard_nacos_double::Options::default())
            .expect("start the Nacos double");
    let mut harness = NacosHarness {
        double,
        book: Book::new(),
    };
    conformance(&mut harness, &Case::ALL).await;
}

// === eureka ===

struct EurekaHarness {
    double: switchyard_eureka_double::EurekaDouble,
    book: Book,
}

impl EurekaHarness {
    fn instance_id(address: SocketAddr) -> String {
        format!("{}:{}", address.ip(), address.port())
    }

    /// An instance as a Eureka client registers it (`POST /eureka/apps/<APP>`), its weight in
    /// `metadata.weight`, which the backend reads.
    fn instance(service: &str, id: &str, ip: &str, port: u16, weight: u32) -> serde_json::Value {
        let app = service.to_ascii_uppercase();
        json!({"instance": {"instanceId": id, "hostName": "localhost", "app": app,
            "ipAddr": ip, "status": "UP", "overriddenStatus": "UNKNOWN",
            "port": {"$": port, "@enabled": "true"},
            "securePort": {"$": 443, "@enabled": "false"}, "countryId": 1,
            "dataCenterInfo": {"@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo", "name": "MyOwn"},
            "leaseInfo": {"renewalIntervalInSecs": 30, "durationInSecs": 90},
            "metadata": {"weight": weight.to_string()},
            "vipAddress": service, "secureVipAddress": service}})
    }

    async fn cancel(&self, service: &str, address: SocketAddr) {
        api_call(
            reqwest::Method::DELETE,
            format!(
                "{}/apps/{}/{}",
                self.double.address(),
                service.to_ascii_uppercase(),
                Self::instance_id(address)
            ),
            None,
            &[],
        )
        .await;
    }
}

#[async_trait]
impl Harness for EurekaHarness {
    fn supports(&self) -> Supports {
        Supports::ALL
    }
    async fn registry(&mut self) -> Arc<dyn Registry> {
        switchyard_eureka::EurekaFactory
            .build(
                RegistryContext::new("eureka"),
                &json!({"servers": [self.double.address()], "fetch_interval": POLL}),
            )
            .unwrap_or_else(|issues| panic!("{issues:?}"))
    }
    async fn register(&mut self, service: &str, instance: Instance) {
        self.book
            .entry(service.to_owned())
            .or_default()
            .insert(instance.address, instance.weight);
        // Registering a known instance again replaces it, as Eureka does.
        let body = Self::instance(
            service,
            &Self::instance_id(instance.address),
            &instance.address.ip().to_string(),
            instance.address.port(),
            instance.weight,
        );
        api_call(
            reqwest::Method::POST,
            format!(
                "{}/apps/{}",
                self.double.address(),
                service.to_ascii_uppercase()
            ),
            Some(&body),
            &[],
        )
        .await;
    }
    async fn deregister(&mut self, service: &str, address: SocketAddr) {
        if let Some(set) = self.book.get_mut(service) {
            set.remove(&address);
        }
        self.cancel(service, address).await;
    }
    async fn write_malformed(&mut self, service: &str) {
        // Port 0 enabled: Eureka stores it, the backend cannot route to it.
        let body = Self::instance(service, "broken", "127.0.0.1", 0, 1);
        api_call(
            reqwest::Method::POST,
            format!(
                "{}/apps/{}",
                self.double.address(),
                service.to_ascii_uppercase()
            ),
            Some(&body),
            &[],
        )
        .await;
    }
    async fn delete_service(&mut self, service: &str) {
        let addresses: Vec<SocketAddr> = self
            .book
            .remove(service)
            .unwrap_or_default()
            .into_keys()
            .collect();
        for address in addresses {
            self.cancel(service, address).await;
        }
    }
    async fn stop_server(&mut self) {
        self.double.stop();
    }
    async fn start_server(&mut self) {
        self.double.resume().expect("resume the double");
    }
}

#[tokio::test]
async fn eureka_registry() {
    let double =
        switchyard_eureka_double::EurekaDouble::start(switchyard_eureka_double::Options::default())
            .expect("start the Eureka double");
    let mut harness = EurekaHarness {
        double,
        book: Book::new(),
    };
    conformance(&mut harness, &Case::ALL).await;
}

// === zookeeper ===

const ZK_ROOT: &str = "/services";

struct ZooKeeperHarness {
    server: switchyard_integration_tests::zookeeper::ZooKeeperServer,
    kazoo: Option<switchyard_integration_tests::zookeeper::Kazoo>,
    /// Dubbo's layout (`/dubbo/<interface>/providers/<URL>`) rather than Curator's.
    dubbo: bool,
    /// The node of each instance written so far, by service and port.
    written: BTreeMap<(String, u16), String>,
}

impl ZooKeeperHarness {
    fn root(&self) -> &'static str {
        if self.dubbo {
            "/dubbo"
        } else {
            ZK_ROOT
        }
    }

    /// The node and its data for `instance` of `service`: Curator keeps the weight in the
    /// data of `i-<port>`, Dubbo in the provider URL, which is the node's name.
    fn node(&self, service: &str, instance: Instance) -> (String, String) {
        let root = self.root();
        if self.dubbo {
            let name = switchyard_integration_tests::zookeeper::dubbo_node(
                service,
                instance.address,
                &format!("weight={}", instance.weight),
            );
            (format!("{root}/{service}/providers/{name}"), String::new())
        } else {
            let id = format!("i-{}", instance.address.port());
            let payload = format!(r#"{{"metadata":{{"weight":"{}"}}}}"#, instance.weight);
            let data = switchyard_integration_tests::zookeeper::curator_instance(
                service,
                &id,
                instance.address,
                &payload,
            );
            (format!("{root}/{service}/{id}"), data)
        }
    }

    /// Runs `change` with the kazoo session (blocking: kazoo answers over a pipe).
    fn kazoo(&mut self, change: impl FnOnce(&mut switchyard_integration_tests::zookeeper::Kazoo)) {
        let address = self.server.address();
        let kazoo = self.kazoo.get_or_insert_with(|| {
            tokio::task::block_in_place(|| {
                switchyard_integration_tests::zookeeper::Kazoo::connect(
                    &address,
                    std::time::Duration::from_secs(10),
                )
            })
        });
        tokio::task::block_in_place(|| change(kazoo));
    }
}

#[async_trait]
impl Harness for ZooKeeperHarness {
    fn supports(&self) -> Supports {
        Supports::ALL
    }
    async fn registry(&mut self) -> Arc<dyn Registry> {
        switchyard_zookeeper::ZooKeeperFactory
            .build(
                RegistryContext::new("zookeeper"),
                &json!({"servers": [self.server.address()], "root": self.root(),
                    "format": if self.dubbo { "dubbo" } else { "curator" },
                    "session_timeout": "4s", "connect_timeout": "1s"}),
            )
            .unwrap_or_else(|issues| panic!("{issues:?}"))
    }
    async fn register(&mut self, service: &str, instance: Instance) {
        let (node, data) = self.node(service, instance);
        // Persistent nodes, so that the data outlives the kazoo session across a restart.
        let old = self
            .written
            .insert((service.to_owned(), instance.address.port()), node.clone());
        self.kazoo(|kazoo| match old {
            Some(old) if old == node => kazoo.set(&node, &data),
            Some(old) => {
                // A new Dubbo weight is a new URL: the provider re-registers.
                kazoo.delete(&old);
                kazoo.create(&node, &data);
            }
            None => kazoo.create(&node, &data),
        });
    }
    async fn deregister(&mut self, service: &str, address: SocketAddr) {
        let node = self
            .written
            .remove(&(service.to_owned(), address.port()))
            .expect("deregistering an instance never registered");
        self.kazoo(|kazoo| kazoo.delete(&node));
    }
    async fn write_malformed(&mut self, service: &str) {
        let node = if self.dubbo {
            // A provider whose URL has no port.
            format!(
                "{}/{service}/providers/dubbo%3A%2F%2F127.0.0.1%2F{service}",
                self.root()
            )
        } else {
            format!("{}/{service}/broken", self.root())
        };
        self.kazoo(|kazoo| kazoo.create(&node, "{not json"));
    }
    async fn delete_service(&mut self, service: &str) {
        let path = format!("{}/{service}", self.root());
        self.written.retain(|(s, _), _| s != service);
        self.kazoo(|kazoo| kazoo.delete(&path));
    }
    async fn stop_server(&mut self) {
        // The session goes with the server's process; a new one is opened after the start.
        self.kazoo = None;
        tokio::task::block_in_place(|| self.server.stop());
    }
    async fn start_server(&mut self) {
        tokio::task::block_in_place(|| self.server.restart());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zookeeper_registry() {
    let server = tokio::task::block_in_place(
        switchyard_integration_tests::zookeeper::ZooKeeperServer::start,
    );
    let mut harness = ZooKeeperHarness {
        server,
        kazoo: None,
        dubbo: false,
        written: BTreeMap::new(),
    };
    conformance(&mut harness, &Case::ALL).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zookeeper_dubbo_registry() {
    let server = tokio::task::block_in_place(
        switchyard_integration_tests::zookeeper::ZooKeeperServer::start,
    );
    let mut harness = ZooKeeperHarness {
        server,
        kazoo: None,
        dubbo: true,
        written: BTreeMap::new(),
    };
    conformance(&mut harness, &Case::ALL).await;
}

// === http ===

struct HttpSdHarness {
    inventory: switchyard_integration_tests::inventory::Inventory,
    list: FileSdList,
}

impl HttpSdHarness {
    /// Serves the whole list anew, as an inventory system does after any change.
    fn publish(&self) {
        self.inventory.set(&self.list.to_json());
    }
}

#[async_trait]
impl Harness for HttpSdHarness {
    fn supports(&self) -> Supports {
        Supports::ALL
    }
    async fn registry(&mut self) -> Arc<dyn Registry> {
        self.publish();
        switchyard_http_sd::HttpSdFactory
            .build(
                RegistryContext::new("http"),
                &json!({"url": self.inventory.url(), "refresh_interval": "200ms"}),
            )
            .unwrap_or_else(|issues| panic!("{issues:?}"))
    }
    async fn register(&mut self, service: &str, instance: Instance) {
        self.list.register(service, instance);
        self.publish();
    }
    async fn deregister(&mut self, service: &str, address: SocketAddr) {
        self.list.deregister(service, address);
        self.publish();
    }
    async fn write_malformed(&mut self, service: &str) {
        self.list.write_malformed(service);
        self.publish();
    }
    async fn delete_service(&mut self, service: &str) {
        self.list.delete_service(service);
        self.publish();
    }
    async fn stop_server(&mut self) {
        self.inventory.stop();
    }
    async fn start_server(&mut self) {
        self.inventory.restart();
    }
}

#[tokio::test]
async fn http_registry() {
    let mut harness = HttpSdHarness {
        inventory: switchyard_integration_tests::inventory::Inventory::start("[]"),
        list: FileSdList::default(),
    };
    conformance(&mut harness, &Case::ALL).await;
}
