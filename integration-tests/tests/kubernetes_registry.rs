//! The Kubernetes registry against the API-server double, through the real API only.
//!
//! Each test starts its own double (an in-process HTTP server on a free loopback port),
//! writes a kubeconfig for it, and changes the "cluster" with kube's own client (create,
//! replace, delete of EndpointSlices), exactly as it would against a real API server. The
//! registry is watched through the shared recover wrapper, as the gateway does, and every
//! "within N s" check polls with a deadline of 5×N and prints the time it took.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use serde_json::json;
use switchyard_kube_double::{KubeDouble, KubeDoubleOptions};
use switchyard_kubernetes::KubernetesFactory;
use switchyard_registry::{
    recover, Backoff, Endpoint, ErrorKind, Registry, RegistryContext, RegistryFactory,
    ServiceQuery, SourceEvent, Update,
};

// === harness ===

/// One double ("cluster"), its kubeconfig, and a client to change it.
struct Cluster {
    double: KubeDouble,
    _dir: tempfile::TempDir,
    kubeconfig: PathBuf,
    client: Client,
}

async fn cluster() -> Cluster {
    cluster_with(KubeDoubleOptions::default()).await
}

async fn cluster_with(options: KubeDoubleOptions) -> Cluster {
    let double = KubeDouble::start(options)
        .await
        .expect("start the API-server double");
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    double.write_kubeconfig(&kubeconfig).unwrap();
    let client = client_for(&kubeconfig).await;
    Cluster {
        double,
        _dir: dir,
        kubeconfig,
        client,
    }
}

async fn client_for(kubeconfig: &PathBuf) -> Client {
    let config = kube::Config::from_custom_kubeconfig(
        Kubeconfig::read_from(kubeconfig).unwrap(),
        &KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    Client::try_from(config).unwrap()
}

impl Cluster {
    fn registry(&self, name: &str) -> (Arc<dyn Registry>, RegistryContext) {
        let ctx = RegistryContext::new(name);
        let settings = json!({"kubeconfig": self.kubeconfig.to_str().unwrap()});
        let registry = KubernetesFactory
            .build(ctx.clone(), &settings)
            .unwrap_or_else(|issues| panic!("{issues:?}"));
        (registry, ctx)
    }

    fn slices(&self, namespace: &str) -> Api<EndpointSlice> {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// Creates or replaces a slice (replace carries the current resourceVersion).
    async fn put(&self, namespace: &str, slice: EndpointSlice) {
        let api = self.slices(namespace);
        let name = slice.metadata.name.clone().unwrap();
        match api.get_opt(&name).await.unwrap() {
            Some(current) => {
                let mut slice = slice;
                slice.metadata.resource_version = current.metadata.resource_version;
                api.replace(&name, &PostParams::default(), &slice)
                    .await
                    .unwrap();
            }
            None => {
                api.create(&PostParams::default(), &slice).await.unwrap();
            }
        }
    }

    async fn delete(&self, namespace: &str, name: &str) {
        self.slices(namespace)
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
    }

    fn verbs(&self) -> Vec<String> {
        self.double
            .requests()
            .iter()
            .map(|r| r.verb.clone())
            .collect()
    }
}

/// An endpoint of a slice: address, ready, serving, terminating, zone.
type Ep<'a> = (
    &'a str,
    Option<bool>,
    Option<bool>,
    Option<bool>,
    Option<&'a str>,
);

fn ready(ip: &str) -> Ep<'_> {
    (ip, None, None, None, None)
}

fn slice(name: &str, service: &str, ports: &[(&str, i32)], endpoints: &[Ep<'_>]) -> EndpointSlice {
    let address_type = if endpoints.iter().any(|e| e.0.contains(':')) {
        "IPv6"
    } else {
        "IPv4"
    };
    serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": name, "labels": {
            "kubernetes.io/service-name": service,
            "endpointslice.kubernetes.io/managed-by": "switchyard-tests"}},
        "addressType": address_type,
        "ports": ports.iter().map(|(n, p)| json!({"name": n, "port": p, "protocol": "TCP"})).collect::<Vec<_>>(),
        "endpoints": endpoints.iter().map(|(ip, r, s, t, zone)| json!({
            "addresses": [ip],
            "conditions": {"ready": r, "serving": s, "terminating": t},
            "zone": zone,
            "targetRef": {"kind": "Pod", "namespace": "shop", "name": format!("pod-{ip}")},
        })).collect::<Vec<_>>(),
    }))
    .unwrap()
}

/// What a recovered watch has applied so far.
#[derive(Debug, Default)]
struct Seen {
    set: BTreeMap<SocketAddr, Endpoint>,
    exists: Option<bool>,
    updates: Vec<String>,
    errors: Vec<(ErrorKind, String)>,
}

struct Watched {
    seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn fast_backoff() -> Backoff {
    Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(500),
        slow_retry: Duration::from_millis(500),
    }
}

fn watch(registry: &Arc<dyn Registry>, service: &str, port: Option<&str>) -> Watched {
    let mut query = ServiceQuery::new(service);
    query.port = port.map(str::to_owned);
    registry
        .check_query(&query)
        .expect("query passes check_query");
    let mut events = recover(registry.clone(), query, fast_backoff());
    let seen = Arc::new(Mutex::new(Seen::default()));
    let writer = seen.clone();
    let task = tokio::spawn(async move {
        while let Some(event) = events.next().await {
            let mut seen = writer.lock().unwrap();
            match event {
                SourceEvent::Update(update) => {
                    seen.updates.push(match &update {
                        Update::Reset(v) => format!("Reset({})", v.len()),
                        Update::Add(v) => format!("Add({})", v.len()),
                        Update::Remove(v) => format!("Remove({})", v.len()),
                        Update::DoesNotExist => "DoesNotExist".to_owned(),
                    });
                    match update {
                        Update::Reset(endpoints) => {
                            seen.exists = Some(true);
                            seen.set = endpoints
                                .into_iter()
                                .map(|e| (e.address, (*e).clone()))
                                .collect();
                        }
                        Update::Add(endpoints) => {
                            seen.set
                                .extend(endpoints.into_iter().map(|e| (e.address, (*e).clone())));
                        }
                        Update::Remove(addresses) => {
                            for address in addresses {
                                seen.set.remove(&address);
                            }
                        }
                        Update::DoesNotExist => {
                            seen.exists = Some(false);
                            seen.set.clear();
                        }
                    }
                }
                SourceEvent::Error(error) => {
                    seen.errors.push((error.kind(), error.message().to_owned()))
                }
            }
        }
    });
    Watched { seen, task }
}

impl Watched {
    fn addresses(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .set
            .keys()
            .map(ToString::to_string)
            .collect()
    }

    /// Polls until `check` holds; panics after `5 × within`. Returns the time it took.
    async fn wait(&self, what: &str, within: Duration, check: impl Fn(&Seen) -> bool) -> Duration {
        let start = Instant::now();
        let deadline = start + within * 5;
        loop {
            if check(&self.seen.lock().unwrap()) {
                let took = start.elapsed();
                println!("{what}: {took:?} (expected within {within:?})");
                return took;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not seen within {:?}; state: {:?}",
                within * 5,
                self.seen.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn wait_for(&self, what: &str, within: Duration, expected: &[&str]) -> Duration {
        let expected: Vec<String> = expected.iter().map(|s| (*s).to_owned()).collect();
        self.wait(what, within, |seen| {
            seen.exists.is_some()
                && seen.set.keys().map(ToString::to_string).collect::<Vec<_>>() == expected
        })
        .await
    }
}

const HTTP: &[(&str, i32)] = &[("http", 8080)];
const SECOND: Duration = Duration::from_secs(1);

// === tests ===

#[tokio::test]
async fn endpoints_of_a_service_and_rbac_verbs() {
    let cluster = cluster().await;
    let (registry, _) = cluster.registry("k8s");
    let web = watch(&registry, "shop/web", Some("http"));
    // No slice yet: the service does not exist.
    web.wait("DoesNotExist first", SECOND, |s| s.exists == Some(false))
        .await;

    let zoned = (
        "10.1.0.1",
        Some(true),
        Some(true),
        Some(false),
        Some("zone-a"),
    );
    cluster
        .put(
            "shop",
            slice("web-abc", "web", HTTP, &[zoned, ready("10.1.0.2")]),
        )
        .await;
    web.wait_for("two endpoints", SECOND, &["10.1.0.1:8080", "10.1.0.2:8080"])
        .await;
    {
        let seen = web.seen.lock().unwrap();
        let first = &seen.set[&"10.1.0.1:8080".parse().unwrap()];
        assert_eq!(first.zone(), Some("zone-a"));
        assert_eq!(
            first.metadata().get("pod").map(String::as_str),
            Some("pod-10.1.0.1")
        );
        assert_eq!(seen.updates[0], "DoesNotExist");
        assert_eq!(seen.updates[1], "Reset(2)");
    }

    // The gateway's requests need only list and watch on endpointslices in its namespace.
    let gateway_requests: Vec<_> = cluster
        .double
        .requests()
        .into_iter()
        .filter(|r| r.verb == "list" || r.verb == "watch")
        .collect();
    assert!(
        gateway_requests.iter().any(|r| r.verb == "list"),
        "{gateway_requests:?}"
    );
    assert!(
        gateway_requests.iter().any(|r| r.verb == "watch"),
        "{gateway_requests:?}"
    );
    for r in &gateway_requests {
        assert!(
            r.path == "/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices",
            "unexpected request {r:?}"
        );
        assert!(
            r.query
                .contains("labelSelector=kubernetes.io%2Fservice-name"),
            "{r:?}"
        );
    }
    println!("verbs seen: {:?}", cluster.verbs());
}

#[tokio::test]
async fn a_pod_going_not_ready_is_dropped_within_a_second() {
    let cluster = cluster().await;
    let (registry, _) = cluster.registry("k8s");
    let web = watch(&registry, "shop/web", None);
    cluster
        .put(
            "shop",
            slice(
                "web-abc",
                "web",
                HTTP,
                &[ready("10.1.0.1"), ready("10.1.0.2")],
            ),
        )
        .await;
    web.wait_for("initial", SECOND, &["10.1.0.1:8080", "10.1.0.2:8080"])
        .await;
    let not_ready = ("10.1.0.2", Some(false), Some(false), Some(false), None);
    let changed = Instant::now();
    cluster
        .put(
            "shop",
            slice("web-abc", "web", HTTP, &[ready("10.1.0.1"), not_ready]),
        )
        .await;
    web.wait_for("not-ready pod dropped", SECOND, &["10.1.0.1:8080"])
        .await;
    println!(
        "not-ready pod dropped {:?} after the API call began (expected within 1 s)",
        changed.elapsed()
    );
    assert!(web
        .seen
        .lock()
        .unwrap()
        .updates
        .iter()
        .any(|u| u == "Remove(1)"));
}

#[tokio::test]
async fn terminating_endpoints_serve_only_when_none_is_ready() {
    let cluster = cluster().await;
    let (registry, _) = cluster.registry("k8s");
    let web = watch(&registry, "shop/web", Some("http"));
    let terminating = ("10.1.0.1", Some(false), Some(true), Some(true), None);
    let gone = ("10.1.0.2", Some(false), Some(false), Some(true), None);
    cluster
        .put("shop", slice("web-abc", "web", HTTP, &[terminating, gone]))
        .await;
    web.wait_for("serving+terminating fallback", SECOND, &["10.1.0.1:8080"])
        .await;
    let terminating_flag = web.seen.lock().unwrap().set[&"10.1.0.1:8080".parse().unwrap()]
        .metadata()
        .get("terminating")
        .cloned();
    assert_eq!(terminating_flag.as_deref(), Some("true"));
    // A ready endpoint appears: the terminating one stops serving.
    cluster
        .put(
            "shop",
            slice(
                "web-abc",
                "web",
                HTTP,
                &[terminating, gone, ready("10.1.0.3")],
            ),
        )
        .await;
    web.wait_for(
        "ready endpoint replaces the fallback",
        SECOND,
        &["10.1.0.3:8080"],
    )
    .await;
}

#[tokio::test]
async fn slices_of_a_service_merge_and_other_services_are_ignored() {
    let cluster = cluster().await;
    let (registry, _) = cluster.registry("k8s");
    let web = watch(&registry, "shop/web", None);
    let api = watch(&registry, "shop/api", None);
    cluster
        .put("shop", slice("web-1", "web", HTTP, &[ready("10.1.0.1")]))
        .await;
    cluster
        .put("shop", slice("web-2", "web", HTTP, &[ready("10.1.0.2")]))
        .await;
    cluster
        .put(
            "shop",
            slice("api-1", "api", &[("grpc", 9000)], &[ready("10.2.0.1")]),
        )
        .await;
    // Same service name, other namespace: ignored too.
    cluster
        .put("other", slice("web-x", "web", HTTP, &[ready("10.9.0.1")]))
        .await;
    web.wait_for(
        "two slices merged",
        SECOND,
        &["10.1.0.1:8080", "10.1.0.2:8080"],
    )
    .await;
    api.wait_for("the other service", SECOND, &["10.2.0.1:9000"])
        .await;

    // Changing api's slice publishes nothing for web.
    let web_updates = web.seen.lock().unwrap().updates.len();
    cluster
        .put(
            "shop",
            slice(
                "api-1",
                "api",
                &[("grpc", 9000)],
                &[ready("10.2.0.1"), ready("10.2.0.2")],
            ),
        )
        .await;
    api.wait_for("api grows", SECOND, &["10.2.0.1:9000", "10.2.0.2:9000"])
        .await;
    cluster.delete("shop", "web-2").await;
    web.wait_for("a deleted slice's endpoints go", SECOND, &["10.1.0.1:8080"])
        .await;
    {
        let seen = web.seen.lock().unwrap();
        assert_eq!(
            seen.updates[web_updates..],
            ["Remove(1)"],
            "{:?}",
            seen.updates
        );
    }
    // One watcher for the namespace, not one per service.
    let watches = cluster
        .double
        .requests()
        .iter()
        .filter(|r| r.verb == "watch" && r.path.contains("/namespaces/shop/"))
        .count();
    assert_eq!(watches, 1, "{:?}", cluster.double.requests());
}

#[tokio::test]
async fn named_and_numeric_ports() {
    let cluster = cluster().await;
    let (registry, ctx) = cluster.registry("k8s");
    let ports = &[("http", 8080), ("metrics", 9090)];
    // A slice holds one address family: a dual-stack service has one slice for each, and
    // the IPv4 one serves (kube-proxy serves one family; `address_family` picks another).
    cluster
        .put("shop", slice("web-1", "web", ports, &[ready("10.1.0.1")]))
        .await;
    cluster
        .put("shop", slice("web-v6", "web", ports, &[ready("fd00::1")]))
        .await;
    let by_name = watch(&registry, "shop/web", Some("metrics"));
    let by_number = watch(&registry, "shop/web", Some("8080"));
    let service_port = watch(&registry, "shop/web", Some("80"));
    let unspecified = watch(&registry, "shop/web", None);
    by_name
        .wait_for("port by name", SECOND, &["10.1.0.1:9090"])
        .await;
    by_number
        .wait_for("port by number", SECOND, &["10.1.0.1:8080"])
        .await;
    service_port
        .wait_for("no such endpoint port", SECOND, &[])
        .await;
    unspecified
        .wait_for("several ports, none chosen", SECOND, &[])
        .await;
    // The skipped slice is counted as malformed (the log says to set `port`).
    assert!(
        ctx.metrics.errors() >= 1,
        "errors: {}",
        ctx.metrics.errors()
    );
    assert_eq!(by_name.addresses().len(), 1);
    // address_family = "any": both slices (they name different pods).
    let any = KubernetesFactory
        .build(
            RegistryContext::new("k8s-any"),
            &json!({"kubeconfig": cluster.kubeconfig.to_str().unwrap(), "address_family": "any"}),
        )
        .unwrap_or_else(|issues| panic!("{issues:?}"));
    watch(&any, "shop/web", Some("metrics"))
        .wait_for("any family", SECOND, &["10.1.0.1:9090", "[fd00::1]:9090"])
        .await;
}

#[tokio::test]
async fn a_watch_ended_with_410_relists_and_replaces_the_set() {
    let cluster = cluster().await;
    let (registry, _) = cluster.registry("k8s");
    let web = watch(&registry, "shop/web", None);
    cluster
        .put("shop", slice("web-1", "web", HTTP, &[ready("10.1.0.1")]))
        .await;
    cluster
        .put("shop", slice("web-2", "web", HTTP, &[ready("10.1.0.2")]))
        .await;
    web.wait_for("initial", SECOND, &["10.1.0.1:8080", "10.1.0.2:8080"])
        .await;
    let lists_before = cluster.verbs().iter().filter(|v| *v == "list").count();

    // The watch stalls; the cluster changes; the history is compacted past the watch.
    cluster.double.pause_watches();
    cluster.delete("shop", "web-1").await;
    cluster
        .put("shop", slice("web-3", "web", HTTP, &[ready("10.1.0.3")]))
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        web.addresses(),
        ["10.1.0.1:8080", "10.1.0.2:8080"],
        "changes leaked through a paused watch"
    );
    cluster.double.expire();
    web.wait_for("relisted set", SECOND, &["10.1.0.2:8080", "10.1.0.3:8080"])
        .await;
    cluster.double.resume_watches();
    let lists_after = cluster.verbs().iter().filter(|v| *v == "list").count();
    assert!(
        lists_after > lists_before,
        "no relist: {:?}",
        cluster.verbs()
    );
    {
        let seen = web.seen.lock().unwrap();
        assert!(
            seen.updates.last().is_some_and(|u| u.starts_with("Reset")),
            "{:?}",
            seen.updates
        );
        println!("errors reported on 410: {:?}", seen.errors);
    }
    // Watching goes on after the relist.
    cluster
        .put("shop", slice("web-4", "web", HTTP, &[ready("10.1.0.4")]))
        .await;
    web.wait_for(
        "after relist",
        SECOND,
        &["10.1.0.2:8080", "10.1.0.3:8080", "10.1.0.4:8080"],
    )
    .await;
}

#[tokio::test]
async fn dropped_watches_recover() {
    let cluster = cluster().await;
    let (registry, _) = cluster.registry("k8s");
    let web = watch(&registry, "shop/web", None);
    cluster
        .put("shop", slice("web-1", "web", HTTP, &[ready("10.1.0.1")]))
        .await;
    web.wait_for("initial", SECOND, &["10.1.0.1:8080"]).await;
    for round in 2..=4 {
        let watches_before = cluster.verbs().iter().filter(|v| *v == "watch").count();
        cluster.double.drop_watches();
        // Wait until a new watch is open before changing the cluster: what matters is
        // that the change arrives, whether the client resumed or relisted.
        let deadline = Instant::now() + Duration::from_secs(10);
        while cluster.verbs().iter().filter(|v| *v == "watch").count() <= watches_before {
            assert!(
                Instant::now() < deadline,
                "no new watch after the drop: {:?}",
                cluster.verbs()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let ip = format!("10.1.0.{round}");
        cluster
            .put(
                "shop",
                slice(&format!("web-{round}"), "web", HTTP, &[ready(&ip)]),
            )
            .await;
        let expected: Vec<String> = (1..=round).map(|i| format!("10.1.0.{i}:8080")).collect();
        let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
        web.wait_for(&format!("change after drop {round}"), SECOND, &expected)
            .await;
    }
}

#[tokio::test]
async fn api_server_down_reports_an_error_keeps_nothing_stale_and_recovers() {
    let cluster = cluster().await;
    let (registry, _) = cluster.registry("k8s");
    let web = watch(&registry, "shop/web", None);
    cluster
        .put("shop", slice("web-1", "web", HTTP, &[ready("10.1.0.1")]))
        .await;
    web.wait_for("initial", SECOND, &["10.1.0.1:8080"]).await;
    let updates_before = web.seen.lock().unwrap().updates.len();

    cluster.double.stop().await;
    web.wait("an error while the API server is down", SECOND, |s| {
        !s.errors.is_empty()
    })
    .await;
    {
        let seen = web.seen.lock().unwrap();
        assert_eq!(
            seen.errors[0].0,
            ErrorKind::Unavailable,
            "{:?}",
            seen.errors
        );
        // The stream never emptied the set because of the outage.
        assert_eq!(seen.set.len(), 1);
        assert_eq!(seen.updates.len(), updates_before, "{:?}", seen.updates);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    cluster.double.start_again().await.unwrap();
    // The cluster changed while the gateway could not see it (the state survives the
    // restart, like etcd behind an API server).
    cluster
        .put("shop", slice("web-2", "web", HTTP, &[ready("10.1.0.2")]))
        .await;
    web.wait_for("recovered", 2 * SECOND, &["10.1.0.1:8080", "10.1.0.2:8080"])
        .await;
}

#[tokio::test]
async fn refused_credentials_are_unauthorized() {
    let cluster = cluster_with(KubeDoubleOptions {
        token: Some("right-token".into()),
        ..KubeDoubleOptions::default()
    })
    .await;
    let text = std::fs::read_to_string(&cluster.kubeconfig).unwrap();
    std::fs::write(
        &cluster.kubeconfig,
        text.replace("right-token", "wrong-token"),
    )
    .unwrap();
    let (registry, _) = cluster.registry("k8s");
    let web = watch(&registry, "shop/web", None);
    web.wait("an unauthorized error", SECOND, |s| !s.errors.is_empty())
        .await;
    let seen = web.seen.lock().unwrap();
    assert_eq!(
        seen.errors[0].0,
        ErrorKind::Unauthorized,
        "{:?}",
        seen.errors
    );
    assert!(seen.exists.is_none());
    assert!(cluster.double.requests().iter().all(|r| r.status == 401));
}

#[tokio::test]
async fn two_clusters_at_once() {
    let east = cluster_with(KubeDoubleOptions {
        context: "east".into(),
        ..KubeDoubleOptions::default()
    })
    .await;
    let west = cluster_with(KubeDoubleOptions {
        context: "west".into(),
        token: Some("west-token".into()),
        ..KubeDoubleOptions::default()
    })
    .await;
    let (east_registry, _) = east.registry("east");
    let (west_registry, _) = west.registry("west");
    east.put("shop", slice("web-e", "web", HTTP, &[ready("10.10.0.1")]))
        .await;
    west.put(
        "shop",
        slice(
            "web-w",
            "web",
            HTTP,
            &[ready("10.20.0.1"), ready("10.20.0.2")],
        ),
    )
    .await;
    let in_east = watch(&east_registry, "shop/web", None);
    let in_west = watch(&west_registry, "shop/web", None);
    in_east.wait_for("east", SECOND, &["10.10.0.1:8080"]).await;
    in_west
        .wait_for("west", SECOND, &["10.20.0.1:8080", "10.20.0.2:8080"])
        .await;
    // A change in one cluster shows in that cluster's registry only.
    west.delete("shop", "web-w").await;
    in_west
        .wait("west emptied", SECOND, |s| s.exists == Some(false))
        .await;
    assert_eq!(in_east.addresses(), ["10.10.0.1:8080"]);
}
