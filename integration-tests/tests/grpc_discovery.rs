//! gRPC and discovery through the real binary: `protocol = "auto"` picking h2c from what
//! the registry says (a Kubernetes EndpointSlice port's `appProtocol`, through the
//! Kubernetes double; a Consul service's `Meta.protocol`, through the Consul double), and the
//! `grpc` health check (`grpc.health.v1.Health/Check`) taking a NOT_SERVING instance out of
//! rotation and back. The instances are Python grpcio servers, which speak only HTTP/2: a
//! call succeeds only when the gateway chose h2c.

use std::time::Duration;

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::PostParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use serde_json::json;
use switchyard_consul_double::client::AgentClient;
use switchyard_consul_double::{ConsulDouble, Options};
use switchyard_integration_tests::grpc::{client, try_client, GrpcServer};
use switchyard_integration_tests::{eventually, Gateway};
use switchyard_kube_double::{KubeDouble, KubeDoubleOptions};

const ROUTE: &str = r#"
[[routes]]
name = "grpc"
path_prefix = "/test.Echo/"
upstream = "echo"
"#;

fn target(gateway: &Gateway) -> String {
    format!("127.0.0.1:{}", gateway.port)
}

/// The `protocol` `/api/upstreams` shows for each endpoint of `echo`.
async fn protocols(gateway: &Gateway) -> Vec<String> {
    let upstreams = gateway.admin_json("/api/upstreams").await;
    upstreams
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "echo")
        .map(|u| {
            u["endpoints"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["protocol"].as_str().unwrap_or("?").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn auto_picks_h2c_from_a_kubernetes_app_protocol() {
    let server = GrpcServer::start("pod-a");
    let double = KubeDouble::start(KubeDoubleOptions::default())
        .await
        .expect("start the API-server double");
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    double.write_kubeconfig(&kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(
        Kubeconfig::read_from(&kubeconfig).unwrap(),
        &KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    let kube = Client::try_from(config).unwrap();
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": "orders-1", "labels": {"kubernetes.io/service-name": "orders"}},
        "addressType": "IPv4",
        "ports": [{"name": "grpc", "port": server.port, "protocol": "TCP",
                   "appProtocol": "kubernetes.io/h2c"}],
        "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}],
    }))
    .unwrap();
    Api::<EndpointSlice>::namespaced(kube, "shop")
        .create(&PostParams::default(), &slice)
        .await
        .unwrap();
    let gateway = Gateway::start(&format!(
        r#"
[registries.k8s]
type = "kubernetes"
kubeconfig = "{}"

[upstreams.echo]
protocol = "auto"
[[upstreams.echo.sources]]
registry = "k8s"
service = "shop/orders"
port = "grpc"
{ROUTE}"#,
        kubeconfig.display()
    ))
    .await;
    eventually("the slice synced", Duration::from_secs(30), || async {
        protocols(&gateway).await == ["h2c"]
    })
    .await;
    let target = target(&gateway);
    let reply = tokio::task::spawn_blocking(move || client(&target, &["call", "test.Echo/Unary"]))
        .await
        .unwrap();
    assert_eq!(reply["code"], "OK", "{reply}");
    assert_eq!(reply["reply"], "pod-a:hello");
}

#[tokio::test(flavor = "multi_thread")]
async fn auto_picks_h2c_from_consul_meta_protocol_and_http1_without_it() {
    let server = GrpcServer::start("consul-a");
    let double = ConsulDouble::start(Options::default()).expect("consul double");
    let agent = AgentClient::new(&double.address());
    agent
        .register(&json!({
            "ID": "grpc-a", "Name": "echo", "Address": "127.0.0.1", "Port": server.port,
            "Meta": {"protocol": "grpc"},
            "Check": {"TTL": "10m", "Status": "passing"},
        }))
        .await
        .unwrap();
    agent
        .register(&json!({
            "ID": "web-b", "Name": "web", "Address": "127.0.0.1", "Port": 9,
            "Check": {"TTL": "10m", "Status": "passing"},
        }))
        .await
        .unwrap();
    let gateway = Gateway::start(&format!(
        r#"
[registries.consul]
type = "consul"
address = "{}"

[upstreams.echo]
protocol = "auto"
[[upstreams.echo.sources]]
registry = "consul"
service = "echo"

[upstreams.web]
protocol = "auto"
[[upstreams.web.sources]]
registry = "consul"
service = "web"

[[routes]]
name = "web"
path_prefix = "/web/"
upstream = "web"
{ROUTE}"#,
        double.address()
    ))
    .await;
    eventually("the service synced", Duration::from_secs(30), || async {
        protocols(&gateway).await == ["h2c"]
    })
    .await;
    let upstreams = gateway.admin_json("/api/upstreams").await;
    let web = upstreams
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "web")
        .unwrap()
        .clone();
    assert_eq!(web["endpoints"][0]["protocol"], "http1", "{web}");
    let target = target(&gateway);
    let reply = tokio::task::spawn_blocking(move || client(&target, &["call", "test.Echo/Unary"]))
        .await
        .unwrap();
    assert_eq!(reply["code"], "OK", "{reply}");
    assert_eq!(reply["reply"], "consul-a:hello");
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_health_check_takes_a_not_serving_instance_out_and_back() {
    // Robust under a loaded machine (it once failed under parallel load): a slow check of
    // the SERVING instance must not flap it out (two failures in a row needed, 5 s allowed
    // per check), the admin state is polled rather than read once right after the traffic
    // moved, a client run that fails is tried again, and every wait is generous.
    let (mut a, b) = (GrpcServer::start("a"), GrpcServer::start("b"));
    let gateway = Gateway::start(&format!(
        r#"
[registries.local]
type = "static"
services.echo = ["{}", "{}"]

[upstreams.echo]
protocol = "h2c"
[[upstreams.echo.sources]]
registry = "local"
service = "echo"
[upstreams.echo.health_check]
type = "grpc"
service = "test.Echo"
interval = "200ms"
timeout = "5s"
unhealthy_threshold = 2
healthy_threshold = 1
{ROUTE}"#,
        a.address(),
        b.address()
    ))
    .await;
    let target = target(&gateway);
    const DEADLINE: Duration = Duration::from_secs(90);
    // 20 calls on one channel: the calls each instance answered, `None` if the run failed.
    let spread = |target: String| async move {
        tokio::task::spawn_blocking(move || try_client(&target, &["spread", "20"]))
            .await
            .unwrap()
            .map_err(|e| println!("client.py spread failed, trying again: {e}"))
            .ok()
            .map(|s| s["counts"].clone())
    };
    // Whether /api/upstreams shows each endpoint's health as `want` (address → healthy).
    let gw = &gateway;
    let health_is = move |want: [(String, bool); 2]| async move {
        let upstreams = gw.admin_json("/api/upstreams").await;
        let endpoints = upstreams[0]["endpoints"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        want.iter().all(|(address, healthy)| {
            endpoints
                .iter()
                .any(|e| e["address"] == address.as_str() && e["healthy"] == *healthy)
        })
    };
    eventually("both serve", DEADLINE, || {
        let target = target.clone();
        async move {
            spread(target)
                .await
                .is_some_and(|c| c["a"].as_u64().is_some() && c["b"].as_u64().is_some())
        }
    })
    .await;
    a.set_health("NOT_SERVING");
    eventually("a marked unhealthy, b healthy", DEADLINE, || {
        health_is([(a.address(), false), (b.address(), true)])
    })
    .await;
    eventually("a out of rotation", DEADLINE, || {
        let target = target.clone();
        async move { spread(target).await == Some(json!({"b": 20})) }
    })
    .await;
    a.set_health("SERVING");
    eventually("a healthy again", DEADLINE, || {
        health_is([(a.address(), true), (b.address(), true)])
    })
    .await;
    eventually("a back in rotation", DEADLINE, || {
        let target = target.clone();
        async move {
            spread(target)
                .await
                .is_some_and(|c| c["a"].as_u64().is_some())
        }
    })
    .await;
    drop(b);
}
