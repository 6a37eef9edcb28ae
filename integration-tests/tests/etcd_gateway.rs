//! The real `switchyard` binary routing to backends discovered through a real etcd: keys
//! put, deleted and re-weighted with `etcdctl` are routed to, dropped and re-balanced; keys
//! of other services, outside the prefix or malformed change nothing for the others; a
//! stopped etcd leaves the last set serving (stale, registry reported down) and a restarted
//! one is picked up; a `switchyard register` process killed with SIGKILL disappears after
//! its lease TTL; `config/etcd.toml` itself runs. Plus a benchmark (ignored by default)
//! printing the put-to-routed propagation latency.
//!
//! Needs the Debian packages etcd-server and etcd-client, and `cargo build -p switchyard`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use switchyard_integration_tests::etcd::EtcdServer;
use switchyard_integration_tests::{eventually, gateway, Backend, Gateway};

const PREFIX: &str = "/switchyard/services";

/// Gateway config with an `etcd` registry and one upstream `echo` (service `echo`) at `/`.
fn config(etcd: &EtcdServer) -> String {
    format!(
        r#"[log]
access = false
level = "info"

[registries.etcd]
type = "etcd"
endpoints = ["{}"]

[upstreams.echo]
[[upstreams.echo.sources]]
registry = "etcd"
service = "echo"

[[routes]]
name = "echo"
path_prefix = "/"
upstream = "echo"
"#,
        etcd.client_url()
    )
}

fn key(service: &str, instance: &str) -> String {
    format!("{PREFIX}/{service}/{instance}")
}

/// The JSON value for `backend` with `weight`.
fn value(backend: &Backend, weight: u32) -> String {
    format!(
        r#"{{"host":"127.0.0.1","port":{},"weight":{weight}}}"#,
        backend.address().port()
    )
}

/// Runs `switchyard register ARGS...` with its output in `dir`.
fn register(dir: &Path, args: &[&str]) -> Child {
    Command::new(gateway::switchyard_bin())
        .arg("register")
        .args(args)
        .env("SWITCHYARD_LOG", "info")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.join("register.out")).expect("log"))
        .stderr(std::fs::File::create(dir.join("register.err")).expect("log"))
        .spawn()
        .expect("start switchyard register")
}

#[tokio::test]
async fn keys_put_deleted_and_reweighted_are_routed_dropped_and_rebalanced() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let etcd = EtcdServer::start();
    etcd.etcdctl(&["put", &key("echo", "a"), &value(&a, 1)]);
    let gateway = Gateway::start(&config(&etcd)).await;
    eventually("a routed", Duration::from_secs(25), || {
        gateway.all_reach("/", &["a"])
    })
    .await;

    etcd.etcdctl(&["put", &key("echo", "b"), &value(&b, 3)]);
    eventually("b put: routed too", Duration::from_secs(5), || async {
        gateway.spread("/", 20).await.contains_key("b")
    })
    .await;
    let counts = gateway.spread("/", 400).await;
    println!("400 requests, weights a=1 b=3: {counts:?}");
    let (na, nb) = (
        counts.get("a").copied().unwrap_or(0),
        counts.get("b").copied().unwrap_or(0),
    );
    assert_eq!(na + nb, 400, "{counts:?}");
    assert!(
        nb >= 2 * na && na > 0,
        "weights 1:3 not honoured: {counts:?}"
    );

    // Re-weighted: a now takes the larger share.
    etcd.etcdctl(&["put", &key("echo", "a"), &value(&a, 3)]);
    etcd.etcdctl(&["put", &key("echo", "b"), &value(&b, 1)]);
    eventually("re-weighted 3:1", Duration::from_secs(5), || async {
        let counts = gateway.spread("/", 200).await;
        counts.get("a").copied().unwrap_or(0) >= 2 * counts.get("b").copied().unwrap_or(0)
    })
    .await;

    etcd.etcdctl(&["del", &key("echo", "a")]);
    eventually("a deleted: dropped", Duration::from_secs(5), || {
        gateway.all_reach("/", &["b"])
    })
    .await;
    let upstreams = gateway.admin_json("/api/upstreams").await;
    let endpoints = upstreams[0]["endpoints"].as_array().expect("endpoints");
    assert_eq!(endpoints.len(), 1, "{upstreams}");
    assert_eq!(
        endpoints[0]["address"],
        b.address().to_string(),
        "{upstreams}"
    );

    // The last key gone: the service has no instance, so no route to it.
    etcd.etcdctl(&["del", &key("echo", "b")]);
    eventually("all deleted: 503", Duration::from_secs(5), || async {
        gateway.get("/").await.status == 503
    })
    .await;
}

#[tokio::test]
async fn other_services_outside_keys_and_malformed_values_leave_the_set_alone() {
    let (a, c) = (Backend::start("a"), Backend::start("c"));
    let etcd = EtcdServer::start();
    etcd.etcdctl(&["put", &key("echo", "a"), &value(&a, 1)]);
    let gateway = Gateway::start(&config(&etcd)).await;
    eventually("a routed", Duration::from_secs(25), || {
        gateway.all_reach("/", &["a"])
    })
    .await;

    let c_value = value(&c, 1);
    etcd.etcdctl(&["put", &key("other", "c"), &c_value]);
    etcd.etcdctl(&["put", "/switchyard/servicesX/echo/c", &c_value]);
    etcd.etcdctl(&["put", "/elsewhere/echo/c", &c_value]);
    etcd.etcdctl(&["put", &key("echo", "broken"), "not-an-address"]);
    etcd.etcdctl(&["put", &key("echo", "json"), r#"{"host":"127.0.0.1"}"#]);
    // Sync point: a valid change to echo after them is seen, so they were all processed.
    etcd.etcdctl(&["put", &key("echo", "a"), &value(&a, 2)]);
    eventually("a re-weighted", Duration::from_secs(5), || async {
        let upstreams = gateway.admin_json("/api/upstreams").await;
        upstreams[0]["endpoints"][0]["weight"] == 2
    })
    .await;
    let counts = gateway.spread("/", 100).await;
    assert_eq!(counts.get("a"), Some(&100), "{counts:?}");
    let upstreams = gateway.admin_json("/api/upstreams").await;
    assert_eq!(
        upstreams[0]["endpoints"].as_array().map(Vec::len),
        Some(1),
        "{upstreams}"
    );

    let errors = gateway.registry_errors("etcd").await;
    println!("switchyard_registry_errors_total{{registry=\"etcd\"}} = {errors}");
    assert!(errors >= 2.0, "two malformed values, {errors} counted");
}

#[tokio::test]
async fn stopped_etcd_keeps_the_last_set_serving_and_a_restart_is_picked_up() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let mut etcd = EtcdServer::start();
    etcd.etcdctl(&["put", &key("echo", "a"), &value(&a, 1)]);
    let gateway = Gateway::start(&config(&etcd)).await;
    eventually("a routed", Duration::from_secs(25), || {
        gateway.all_reach("/", &["a"])
    })
    .await;

    etcd.stop();
    eventually(
        "etcd stopped: registry down, endpoint stale",
        Duration::from_secs(25),
        || async {
            let registries = gateway.admin_json("/api/registries").await;
            let upstreams = gateway.admin_json("/api/upstreams").await;
            registries[0]["state"] == "down" && upstreams[0]["endpoints"][0]["stale"] == true
        },
    )
    .await;
    let registries = gateway.admin_json("/api/registries").await;
    println!("/api/registries with etcd down: {registries}");
    assert!(registries[0]["last_error"].is_string(), "{registries}");
    let counts = gateway.spread("/", 50).await;
    assert_eq!(
        counts.get("a"),
        Some(&50),
        "last set not served: {counts:?}"
    );

    etcd.restart();
    etcd.etcdctl(&["put", &key("echo", "b"), &value(&b, 1)]);
    etcd.etcdctl(&["del", &key("echo", "a")]);
    eventually(
        "etcd back and changed: b routed, registry ok",
        Duration::from_secs(50),
        || async {
            let registries = gateway.admin_json("/api/registries").await;
            registries[0]["state"] == "ok" && gateway.all_reach("/", &["b"]).await
        },
    )
    .await;
    let upstreams = gateway.admin_json("/api/upstreams").await;
    assert_eq!(upstreams[0]["endpoints"][0]["stale"], false, "{upstreams}");
}

#[tokio::test]
async fn a_registered_process_killed_with_sigkill_disappears_after_its_ttl() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let etcd = EtcdServer::start();
    etcd.etcdctl(&["put", &key("echo", "a"), &value(&a, 1)]);
    let gateway = Gateway::start(&config(&etcd)).await;
    eventually("a routed", Duration::from_secs(25), || {
        gateway.all_reach("/", &["a"])
    })
    .await;

    let ttl = Duration::from_secs(3);
    let address = b.address().to_string();
    let mut registration = register(
        gateway.dir(),
        &[
            "--etcd",
            &etcd.client_url(),
            "--service",
            "echo",
            "--address",
            &address,
            "--ttl",
            "3s",
        ],
    );
    eventually("registered b routed", Duration::from_secs(10), || async {
        gateway.spread("/", 20).await.contains_key("b")
    })
    .await;
    // Still there after twice its TTL: the lease is kept alive.
    tokio::time::sleep(ttl * 2).await;
    assert!(
        gateway.spread("/", 20).await.contains_key("b"),
        "lease not kept alive"
    );

    registration.kill().expect("SIGKILL");
    registration.wait().expect("wait");
    let killed = Instant::now();
    let took = eventually("killed: b gone after the TTL", ttl * 5, || {
        gateway.all_reach("/", &["a"])
    })
    .await;
    println!(
        "b dropped {took:?} after SIGKILL (TTL {ttl:?}), {:?} in all",
        killed.elapsed()
    );

    // SIGTERM: revoked at once, no waiting for the TTL.
    let mut registration = register(
        gateway.dir(),
        &[
            "--etcd",
            &etcd.client_url(),
            "--service",
            "echo",
            "--address",
            &address,
            "--ttl",
            "30s",
        ],
    );
    eventually(
        "registered b routed again",
        Duration::from_secs(10),
        || async { gateway.spread("/", 20).await.contains_key("b") },
    )
    .await;
    let pid = registration.id().to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    let exit = registration.wait().expect("wait");
    assert!(exit.success(), "register exited with {exit}");
    let took = eventually(
        "SIGTERM: b gone (lease revoked)",
        Duration::from_secs(5),
        || gateway.all_reach("/", &["a"]),
    )
    .await;
    println!("b dropped {took:?} after SIGTERM (TTL 30s)");
}

/// `config/etcd.toml` as shipped, with the keys its comments put (ports moved to the test's
/// backends).
#[tokio::test]
async fn config_etcd_toml_example_runs() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/etcd.toml");
    let (code, stderr) = gateway::check(&path);
    assert_eq!(code, 0, "switchyard check {}: {stderr}", path.display());
    let example = std::fs::read_to_string(&path).expect("read config/etcd.toml");

    let backends: Vec<Backend> = ["orders-a", "orders-b", "web"]
        .into_iter()
        .map(Backend::start)
        .collect();
    let etcd = EtcdServer::start();
    // The `etcdctl put` lines of the comments, with the ports moved.
    let mut puts = 0;
    for line in example.lines() {
        let Some(command) = line
            .trim_start_matches('#')
            .trim()
            .strip_prefix("etcdctl put ")
        else {
            continue;
        };
        let (key, value) = command.split_once(' ').expect("key and value");
        let mut value = value.trim_matches('\'').to_owned();
        for (i, backend) in backends.iter().enumerate() {
            let port = backend.address().port().to_string();
            value = value.replace(&(9001 + i).to_string(), &port);
        }
        etcd.etcdctl(&["put", key, &value]);
        puts += 1;
    }
    assert_eq!(puts, 3, "the example's etcdctl lines changed");

    let config = example
        .replace("http://127.0.0.1:2379", &etcd.client_url())
        .replace("listen = \"127.0.0.1:8080\"", "listen = \"{listen}\"")
        .replace("listen = \"127.0.0.1:9901\"", "listen = \"{admin}\"");
    let gateway = Gateway::start(&config).await;
    eventually(
        "example: /orders/ routed",
        Duration::from_secs(25),
        || async { gateway.get("/orders/").await.status == 200 },
    )
    .await;
    let mut orders = BTreeMap::<String, usize>::new();
    for _ in 0..200 {
        let reply = gateway.get("/orders/").await;
        *orders.entry(reply.body).or_default() += 1;
    }
    println!("example /orders/ x200 (weights 3:1): {orders:?}");
    let (na, nb) = (
        orders.get("orders-a").copied().unwrap_or(0),
        orders.get("orders-b").copied().unwrap_or(0),
    );
    assert_eq!(na + nb, 200, "{orders:?}");
    assert!(na >= 2 * nb && nb > 0, "{orders:?}");
    let web = gateway.get("/").await;
    assert_eq!((web.status, web.body.as_str()), (200, "web"));
}

/// Propagation latency: from an `etcd put` returning to the first request routed to the
/// instance it names, over 60 changes. A benchmark, not a test: it prints p50/p99 and
/// asserts nothing about time. Run with
/// `cargo nextest run -p switchyard-integration-tests --test etcd_gateway --run-ignored only --no-capture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: prints the put-to-routed latency"]
async fn propagation_latency_benchmark() {
    let backends = [Backend::start("a"), Backend::start("b")];
    let etcd = EtcdServer::start();
    let mut client = etcd_client::Client::connect([etcd.client_url()], None)
        .await
        .expect("etcd client");
    let instance = key("echo", "moving");
    client
        .put(instance.as_str(), value(&backends[0], 1), None)
        .await
        .expect("put");
    let gateway = Gateway::start(&config(&etcd)).await;
    eventually("a routed", Duration::from_secs(25), || {
        gateway.all_reach("/", &["a"])
    })
    .await;

    let changes = 60;
    let mut latencies = Vec::with_capacity(changes);
    for i in 0..changes {
        // One instance key moving between the two backends: each put is a new address.
        let target = &backends[(i + 1) % 2];
        client
            .put(instance.as_str(), value(target, 1), None)
            .await
            .expect("put");
        let put_returned = Instant::now();
        latencies.push(gateway.time_until_routed(target.name(), put_returned).await);
    }
    latencies.sort();
    let pick = |q: f64| switchyard_integration_tests::percentile(&latencies, q);
    println!(
        "etcd put -> first request routed to the new instance, {changes} changes: p50 {:?}, p99 {:?}, max {:?}",
        pick(0.50),
        pick(0.99),
        latencies[latencies.len() - 1]
    );
}
