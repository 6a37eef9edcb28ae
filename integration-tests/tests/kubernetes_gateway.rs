//! The real `switchyard` binary routing to backends discovered from Kubernetes
//! EndpointSlices served by the API-server double, through a kubeconfig the double writes.
//! The tests change the "cluster" only through the Kubernetes API (kube's client: create,
//! replace, delete), so they would run the same against a real API server.
//!
//! Shown: endpoints of a service routed; a pod going not-ready dropped within 1 s; the
//! terminating fallback; two slices merged; a slice of another service ignored; named vs
//! numeric port; a watch ended by 410 relists to the right set; dropped watches recover;
//! an API server down keeps the last set (stale, registry down) and a restarted one is
//! picked up; two clusters feeding one upstream; `config/kubernetes.toml` runs. Plus a
//! benchmark (ignored by default) printing the change-to-routed propagation latency.
//!
//! Needs `cargo build -p switchyard`; no Debian package.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use serde_json::json;
use switchyard_integration_tests::{eventually, gateway, Backend, Gateway};
use switchyard_kube_double::{KubeDouble, KubeDoubleOptions};

// === harness ===

struct Cluster {
    double: KubeDouble,
    dir: tempfile::TempDir,
    client: Client,
}

async fn cluster(context: &str) -> Cluster {
    let double = KubeDouble::start(KubeDoubleOptions {
        context: context.to_owned(),
        token: Some(format!("{context}-token")),
        ..KubeDoubleOptions::default()
    })
    .await
    .expect("start the API-server double");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    double.write_kubeconfig(&path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(
        Kubeconfig::read_from(&path).unwrap(),
        &KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    let client = Client::try_from(config).unwrap();
    Cluster {
        double,
        dir,
        client,
    }
}

impl Cluster {
    fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    async fn put(&self, slice: EndpointSlice) {
        let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), "shop");
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

    async fn delete(&self, name: &str) {
        let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), "shop");
        api.delete(name, &DeleteParams::default()).await.unwrap();
    }
}

/// An endpoint: its backend and its (ready, serving, terminating) conditions.
struct Ep<'a>(&'a Backend, Option<bool>, Option<bool>, Option<bool>);

fn up(backend: &Backend) -> Ep<'_> {
    Ep(backend, None, None, None)
}

fn not_ready(backend: &Backend) -> Ep<'_> {
    Ep(backend, Some(false), Some(false), Some(false))
}

fn terminating(backend: &Backend) -> Ep<'_> {
    Ep(backend, Some(false), Some(true), Some(true))
}

/// A slice of service `service` in namespace `shop` whose port `http` is `port` (the
/// endpoints all listen on one port, on distinct loopback addresses).
fn slice(name: &str, service: &str, port: u16, endpoints: &[Ep<'_>]) -> EndpointSlice {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        "endpoints": endpoints.iter().map(|Ep(b, r, s, t)| json!({
            "addresses": [b.address().ip().to_string()],
            "conditions": {"ready": r, "serving": s, "terminating": t},
            "targetRef": {"kind": "Pod", "namespace": "shop", "name": b.name()},
        })).collect::<Vec<_>>(),
    }))
    .unwrap()
}

/// Backends named `names`, all on one port, on 127.0.0.1, 127.0.0.2, ...
fn backends_on_one_port(names: &[&str]) -> (Vec<Backend>, u16) {
    for _attempt in 0..20 {
        let port = switchyard_integration_tests::free_port();
        let free_everywhere = (0..names.len()).all(|i| {
            let ip = IpAddr::from([127, 0, 0, 1 + i as u8]);
            std::net::TcpListener::bind(SocketAddr::new(ip, port)).is_ok()
        });
        if free_everywhere {
            let backends = names
                .iter()
                .enumerate()
                .map(|(i, name)| {
                    Backend::start_on(
                        name,
                        SocketAddr::new(IpAddr::from([127, 0, 0, 1 + i as u8]), port),
                    )
                })
                .collect();
            return (backends, port);
        }
    }
    panic!("no port free on every loopback address");
}

/// A gateway config: one registry per cluster, then `extra` (upstreams and routes).
fn config(clusters: &[(&str, &Cluster)], extra: &str) -> String {
    let mut text = String::from("[log]\naccess = false\nlevel = \"info\"\n\n");
    for (name, cluster) in clusters {
        text.push_str(&format!(
            "[registries.{name}]\ntype = \"kubernetes\"\nkubeconfig = \"{}\"\n\n",
            cluster.kubeconfig().display()
        ));
    }
    text.push_str(extra);
    text
}

/// One upstream `web` from `service` (with `port`) on registry `k8s`, routed at `/`.
fn single(service: &str, port: &str) -> String {
    format!(
        r#"[upstreams.web]
[[upstreams.web.sources]]
registry = "k8s"
service = "{service}"
port = "{port}"

[[routes]]
name = "web"
path_prefix = "/"
upstream = "web"
"#
    )
}

/// Whether 20 GETs on `path` reach exactly the backends `names` (each at least once).
async fn reaches(gateway: &Gateway, path: &str, names: &[&str]) -> bool {
    let counts = gateway.spread(path, 20).await;
    counts.len() == names.len() && names.iter().all(|n| counts.contains_key(*n))
}

const START: Duration = Duration::from_secs(25);
const FIVE_TIMES_ONE_SECOND: Duration = Duration::from_secs(5);

// === tests ===

#[tokio::test]
async fn a_dual_stack_service_serves_each_pod_once() {
    // Pods a, b, c on 127.0.0.1-3 (IPv4); pod a also on [::1] (its IPv6 address; IPv6 test
    // traffic stays on ::1). The slices are what the EndpointSlice controller writes for a
    // dual-stack Service: an IPv4 slice and an IPv6 one naming the same pods.
    let (backends, port) = backends_on_one_port(&["a", "b", "c"]);
    let a6 = match std::net::TcpListener::bind(("::1", port)) {
        Ok(probe) => {
            drop(probe);
            Backend::start_on(
                "a-over-ipv6",
                SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)),
            )
        }
        Err(err) => panic!("[::1]:{port} is not bindable ({err}); the test needs IPv6 loopback"),
    };
    let pods: Vec<switchyard_kube_double::controller::Pod> = backends
        .iter()
        .map(|b| {
            let mut ips = vec![b.address().ip()];
            if b.name() == "a" {
                ips.push(a6.address().ip());
            }
            switchyard_kube_double::controller::Pod::ready(b.name(), &ips)
        })
        .collect();
    use switchyard_kube_double::controller::{endpoint_slices, IpFamily};
    let k8s = cluster("k8s").await;
    for value in endpoint_slices(
        "shop",
        "web",
        &[IpFamily::Ipv4, IpFamily::Ipv6],
        &[("http", port)],
        &pods,
    ) {
        k8s.put(serde_json::from_value(value).unwrap()).await;
    }
    let gateway = Gateway::start(&config(&[("k8s", &k8s)], &single("shop/web", "http"))).await;
    eventually("a, b and c routed", START, || {
        reaches(&gateway, "/", &["a", "b", "c"])
    })
    .await;
    let upstreams = gateway.admin_json("/api/upstreams").await;
    let endpoints = upstreams[0]["endpoints"].as_array().unwrap().len();
    println!("default family: {endpoints} endpoints");
    assert_eq!(endpoints, 3, "each pod once: {upstreams}");
    let counts = gateway.spread("/", 60).await;
    assert!(!counts.contains_key("a-over-ipv6"), "{counts:?}");

    // address_family = "ipv6": only the IPv6 slice (pod a on ::1).
    let ipv6 = config(&[("k8s", &k8s)], &single("shop/web", "http")).replace(
        "type = \"kubernetes\"\n",
        "type = \"kubernetes\"\naddress_family = \"ipv6\"\n",
    );
    let gateway6 = Gateway::start(&ipv6).await;
    eventually("ipv6: pod a over ::1", START, || {
        reaches(&gateway6, "/", &["a-over-ipv6"])
    })
    .await;
}

#[tokio::test]
async fn endpoints_routed_not_ready_dropped_and_terminating_fallback() {
    let (backends, port) = backends_on_one_port(&["a", "b"]);
    let (a, b) = (&backends[0], &backends[1]);
    let k8s = cluster("k8s").await;
    k8s.put(slice("web-1", "web", port, &[up(a), up(b)])).await;
    let gateway = Gateway::start(&config(&[("k8s", &k8s)], &single("shop/web", "http"))).await;
    eventually("a and b routed", START, || {
        reaches(&gateway, "/", &["a", "b"])
    })
    .await;

    // b's pod goes not-ready: dropped within 1 s (polled up to 5 s, time printed).
    let changed = Instant::now();
    k8s.put(slice("web-1", "web", port, &[up(a), not_ready(b)]))
        .await;
    eventually("not-ready b dropped", FIVE_TIMES_ONE_SECOND, || {
        reaches(&gateway, "/", &["a"])
    })
    .await;
    println!(
        "not-ready to dropped, from the API call: {:?} (expected within 1 s)",
        changed.elapsed()
    );

    // Nothing ready: the serving-and-terminating endpoint serves, the not-serving one not.
    k8s.put(slice("web-1", "web", port, &[not_ready(a), terminating(b)]))
        .await;
    eventually("terminating fallback to b", FIVE_TIMES_ONE_SECOND, || {
        reaches(&gateway, "/", &["b"])
    })
    .await;
    k8s.put(slice("web-1", "web", port, &[up(a), terminating(b)]))
        .await;
    eventually(
        "ready a replaces the fallback",
        FIVE_TIMES_ONE_SECOND,
        || reaches(&gateway, "/", &["a"]),
    )
    .await;

    // The last slice deleted: the service has no endpoints.
    k8s.delete("web-1").await;
    eventually("slice deleted: 503", FIVE_TIMES_ONE_SECOND, || async {
        gateway.get("/").await.status == 503
    })
    .await;

    // What the gateway asked the API server: list and watch of endpointslices in "shop".
    let gateway_requests: Vec<_> = k8s
        .double
        .requests()
        .into_iter()
        .filter(|r| r.query.contains("labelSelector"))
        .collect();
    assert!(!gateway_requests.is_empty());
    for r in &gateway_requests {
        assert!(r.verb == "list" || r.verb == "watch", "{r:?}");
        assert_eq!(
            r.path, "/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices",
            "{r:?}"
        );
    }
}

#[tokio::test]
async fn slices_merged_other_services_ignored_named_and_numeric_ports() {
    let (backends, port) = backends_on_one_port(&["a", "b", "c"]);
    let (a, b, c) = (&backends[0], &backends[1], &backends[2]);
    let k8s = cluster("k8s").await;
    k8s.put(slice("web-1", "web", port, &[up(a)])).await;
    k8s.put(slice("web-2", "web", port, &[up(b)])).await;
    k8s.put(slice("api-1", "api", port, &[up(c)])).await;
    let upstreams = format!(
        r#"[upstreams.named]
[[upstreams.named.sources]]
registry = "k8s"
service = "shop/web"
port = "http"

[upstreams.numeric]
[[upstreams.numeric.sources]]
registry = "k8s"
service = "shop/web"
port = "{port}"

[[routes]]
name = "named"
path_prefix = "/named"
upstream = "named"

[[routes]]
name = "numeric"
path_prefix = "/numeric"
upstream = "numeric"
"#
    );
    let gateway = Gateway::start(&config(&[("k8s", &k8s)], &upstreams)).await;
    eventually("two slices merged (named port)", START, || {
        reaches(&gateway, "/named", &["a", "b"])
    })
    .await;
    eventually("two slices merged (numeric port)", START, || {
        reaches(&gateway, "/numeric", &["a", "b"])
    })
    .await;

    // A change to another service's slice changes nothing here.
    k8s.put(slice("api-1", "api", port, &[up(c), up(a)])).await;
    k8s.put(slice("web-2", "web", port, &[])).await;
    eventually("web-2 emptied", FIVE_TIMES_ONE_SECOND, || {
        reaches(&gateway, "/named", &["a"])
    })
    .await;
    let counts = gateway.spread("/numeric", 40).await;
    assert_eq!(counts.get("a"), Some(&40), "{counts:?}");
}

#[tokio::test]
async fn relist_after_410_and_dropped_watches_recover() {
    let (backends, port) = backends_on_one_port(&["a", "b", "c"]);
    let (a, b, c) = (&backends[0], &backends[1], &backends[2]);
    let k8s = cluster("k8s").await;
    k8s.put(slice("web-1", "web", port, &[up(a)])).await;
    let gateway = Gateway::start(&config(&[("k8s", &k8s)], &single("shop/web", "http"))).await;
    eventually("a routed", START, || reaches(&gateway, "/", &["a"])).await;

    // The watch stalls while the cluster changes; then the history is compacted past it:
    // only a relist can show the new set.
    k8s.double.pause_watches();
    k8s.put(slice("web-1", "web", port, &[up(b)])).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        reaches(&gateway, "/", &["a"]).await,
        "a change leaked through a paused watch"
    );
    let lists = || {
        k8s.double
            .requests()
            .iter()
            .filter(|r| r.verb == "list")
            .count()
    };
    let lists_before = lists();
    k8s.double.expire();
    eventually("410: relisted, b routed", FIVE_TIMES_ONE_SECOND, || {
        reaches(&gateway, "/", &["b"])
    })
    .await;
    k8s.double.resume_watches();
    assert!(lists() > lists_before, "no relist after 410");

    // Watches cut mid-stream: changes after each cut still arrive.
    for (round, target) in [c, a, b].into_iter().enumerate() {
        let names = [target.name()];
        k8s.double.drop_watches();
        tokio::time::sleep(Duration::from_millis(100)).await;
        k8s.put(slice("web-1", "web", port, &[up(target)])).await;
        eventually(
            &format!("after drop {round}: {} routed", target.name()),
            FIVE_TIMES_ONE_SECOND,
            || reaches(&gateway, "/", &names),
        )
        .await;
    }
}

#[tokio::test]
async fn api_server_down_keeps_the_last_set_stale_and_recovers() {
    let (backends, port) = backends_on_one_port(&["a", "b"]);
    let (a, b) = (&backends[0], &backends[1]);
    let k8s = cluster("k8s").await;
    k8s.put(slice("web-1", "web", port, &[up(a)])).await;
    let gateway = Gateway::start(&config(&[("k8s", &k8s)], &single("shop/web", "http"))).await;
    eventually("a routed", START, || reaches(&gateway, "/", &["a"])).await;

    k8s.double.stop().await;
    eventually(
        "API server down: registry down, endpoint stale",
        Duration::from_secs(10),
        || async {
            let registries = gateway.admin_json("/api/registries").await;
            let upstreams = gateway.admin_json("/api/upstreams").await;
            registries[0]["state"] == "down" && upstreams[0]["endpoints"][0]["stale"] == true
        },
    )
    .await;
    let registries = gateway.admin_json("/api/registries").await;
    println!("/api/registries with the API server down: {registries}");
    assert!(registries[0]["last_error"].is_string(), "{registries}");
    // The last set still serves.
    assert!(reaches(&gateway, "/", &["a"]).await);

    k8s.double.start_again().await.unwrap();
    k8s.put(slice("web-1", "web", port, &[up(b)])).await;
    eventually(
        "API server back: b routed, fresh",
        Duration::from_secs(40),
        || async {
            let registries = gateway.admin_json("/api/registries").await;
            registries[0]["state"] == "ok" && reaches(&gateway, "/", &["b"]).await
        },
    )
    .await;
    let upstreams = gateway.admin_json("/api/upstreams").await;
    assert_eq!(upstreams[0]["endpoints"][0]["stale"], false, "{upstreams}");
}

#[tokio::test]
async fn two_clusters_feed_one_upstream() {
    let (east_backend, west_backend) = (Backend::start("east"), Backend::start("west"));
    let east = cluster("east").await;
    let west = cluster("west").await;
    east.put(slice(
        "web-e",
        "web",
        east_backend.address().port(),
        &[up(&east_backend)],
    ))
    .await;
    west.put(slice(
        "web-w",
        "web",
        west_backend.address().port(),
        &[up(&west_backend)],
    ))
    .await;
    let upstreams = r#"[upstreams.web]
[[upstreams.web.sources]]
registry = "east"
service = "shop/web"
[[upstreams.web.sources]]
registry = "west"
service = "shop/web"

[[routes]]
name = "web"
path_prefix = "/"
upstream = "web"
"#;
    let gateway = Gateway::start(&config(&[("east", &east), ("west", &west)], upstreams)).await;
    eventually("both clusters routed", START, || {
        reaches(&gateway, "/", &["east", "west"])
    })
    .await;
    let upstreams = gateway.admin_json("/api/upstreams").await;
    let registries: Vec<&str> = upstreams[0]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["source"]["registry"].as_str())
        .collect();
    assert_eq!(registries.len(), 2, "{upstreams}");
    assert!(
        registries.contains(&"east") && registries.contains(&"west"),
        "{upstreams}"
    );

    // One cluster loses its endpoints: the other still serves.
    west.delete("web-w").await;
    eventually("west gone, east serves", FIVE_TIMES_ONE_SECOND, || {
        reaches(&gateway, "/", &["east"])
    })
    .await;
}

/// `config/kubernetes.toml` as shipped: `switchyard check` passes, and with the slices its
/// comments create (through the double's API, ports moved to the test's backends) it routes.
#[tokio::test]
async fn config_kubernetes_toml_example_runs() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/kubernetes.toml");
    let (code, stderr) = gateway::check(&path);
    assert_eq!(code, 0, "switchyard check {}: {stderr}", path.display());
    let example = std::fs::read_to_string(&path).expect("read config/kubernetes.toml");

    let (orders, orders_port) = backends_on_one_port(&["orders-a", "orders-b"]);
    let web = Backend::start("web");
    let double = KubeDouble::start(KubeDoubleOptions::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    double.write_kubeconfig(&kubeconfig).unwrap();

    // The curl lines of the comments, sent as they are (URL and ports moved).
    let http = reqwest::Client::new();
    let mut posts = 0;
    for line in example.lines() {
        let Some(command) = line.trim_start_matches('#').trim().strip_prefix("curl ") else {
            continue;
        };
        let body = command
            .split_once("-d '")
            .and_then(|(_, rest)| rest.strip_suffix('\''))
            .expect("a -d '<json>' body");
        let url = command
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .expect("a URL")
            .replace("http://127.0.0.1:6443", &double.url());
        let body = body
            .replace("9001", &orders_port.to_string())
            .replace("9003", &web.address().port().to_string());
        let reply = http
            .post(url)
            .bearer_auth("kube-double-token")
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("POST");
        assert_eq!(
            reply.status(),
            201,
            "{}",
            reply.text().await.unwrap_or_default()
        );
        posts += 1;
    }
    assert_eq!(posts, 2, "the example's curl lines changed");

    let config = example
        .replace(
            "# kubeconfig = \"~/.kube/config\"",
            &format!("kubeconfig = \"{}\"", kubeconfig.display()),
        )
        .replace("listen = \"127.0.0.1:8080\"", "listen = \"{listen}\"")
        .replace("listen = \"127.0.0.1:9901\"", "listen = \"{admin}\"");
    assert!(
        config.contains(&kubeconfig.display().to_string()),
        "the example's kubeconfig line changed"
    );
    let gateway = Gateway::start(&config).await;
    eventually("example: /orders/ reaches both instances", START, || {
        reaches(&gateway, "/orders/", &["orders-a", "orders-b"])
    })
    .await;
    let reply = gateway.get("/").await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "web"));
    let upstreams = gateway.admin_json("/api/upstreams").await;
    println!("example /api/upstreams: {upstreams}");
    let zones: Vec<&str> = upstreams
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["name"] == "orders")
        .flat_map(|u| u["endpoints"].as_array().unwrap().iter())
        .filter_map(|e| e["zone"].as_str())
        .collect();
    assert_eq!(zones.len(), 2, "{upstreams}");
    drop(orders);
}

/// Propagation latency: from the API call that moves a service's only endpoint to the
/// first request routed to the new one, over 60 changes. A benchmark, not a test: it
/// prints p50/p99 and asserts nothing about time. Run with
/// `cargo nextest run -p switchyard-integration-tests --test kubernetes_gateway --run-ignored only --no-capture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: prints the change-to-routed latency"]
async fn propagation_latency_benchmark() {
    let (backends, port) = backends_on_one_port(&["a", "b"]);
    let k8s = cluster("k8s").await;
    k8s.put(slice("web-1", "web", port, &[up(&backends[0])]))
        .await;
    let gateway = Gateway::start(&config(&[("k8s", &k8s)], &single("shop/web", "http"))).await;
    eventually("a routed", START, || reaches(&gateway, "/", &["a"])).await;

    let changes = 60;
    let mut latencies = Vec::with_capacity(changes);
    for i in 0..changes {
        let target = &backends[(i + 1) % 2];
        k8s.put(slice("web-1", "web", port, &[up(target)])).await;
        let changed = Instant::now();
        latencies.push(gateway.time_until_routed(target.name(), changed).await);
    }
    latencies.sort();
    let pick = |q: f64| switchyard_integration_tests::percentile(&latencies, q);
    println!(
        "kubernetes EndpointSlice replace -> first request routed to the new endpoint, {changes} changes: p50 {:?}, p99 {:?}, max {:?}",
        pick(0.50),
        pick(0.99),
        latencies[latencies.len() - 1]
    );
}
