//! The real `switchyard` binary routing to backends discovered through a real ZooKeeper,
//! with instances registered by a client that is not ours (Python kazoo): Curator
//! x-discovery instances registered, re-weighted, removed and malformed; a service node
//! deleted (authoritatively empty) and created again; a kazoo session killed (its ephemeral
//! instance goes within the session timeout plus a second); ZooKeeper stopped (last set
//! kept, stale, registry down), restarted (read again in full) and replaced by an empty
//! server (a new session, everything read again); Dubbo providers with weights and
//! `enabled=false`; digest authentication. Plus a benchmark (ignored by default) printing
//! the registration-to-routed propagation latency.
//!
//! Needs the Debian package zookeeper, Python kazoo (scripts/install-deps.sh installs both),
//! and `cargo build -p switchyard`.

use std::time::{Duration, Instant};

use switchyard_integration_tests::zookeeper::{
    curator_instance, dubbo_node, Kazoo, ZooKeeperServer,
};
use switchyard_integration_tests::{eventually, Backend, Gateway};

/// kazoo's session timeout in these tests.
const KAZOO_SESSION: Duration = Duration::from_secs(4);

/// Gateway config with a `zookeeper` registry `zk` (extra keys in `extra`) and one upstream
/// `echo` (service `service`) at `/`.
fn config(zk: &ZooKeeperServer, extra: &str, service: &str) -> String {
    format!(
        r#"[log]
access = false
level = "info"

[registries.zk]
type = "zookeeper"
servers = ["{}"]
session_timeout = "4s"
{extra}

[upstreams.echo]
[[upstreams.echo.sources]]
registry = "zk"
service = "{service}"

[[routes]]
name = "echo"
path_prefix = "/"
upstream = "echo"
"#,
        zk.address()
    )
}

/// The weight of the endpoint at `backend`'s address in `/api/upstreams`, if listed.
async fn weight_of(gateway: &Gateway, backend: &Backend) -> Option<u64> {
    let upstreams = gateway.admin_json("/api/upstreams").await;
    let address = backend.address().to_string();
    upstreams[0]["endpoints"]
        .as_array()?
        .iter()
        .find(|e| e["address"] == address.as_str())
        .and_then(|e| e["weight"].as_u64())
}

#[tokio::test]
async fn curator_instances_registered_with_kazoo_are_routed_reweighted_and_dropped() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let zk = ZooKeeperServer::start();
    let mut kazoo = Kazoo::connect(&zk.address(), KAZOO_SESSION);
    kazoo.register(
        "/services/echo/id-a",
        &curator_instance("echo", "id-a", a.address(), "null"),
    );
    let gateway = Gateway::start(&config(&zk, "", "echo")).await;
    eventually("first sync: a routed", Duration::from_secs(30), || {
        gateway.all_reach("/", &["a"])
    })
    .await;
    let registries = gateway.admin_json("/api/registries").await;
    assert_eq!(registries[0]["type"], "zookeeper", "{registries}");

    // Added.
    kazoo.register(
        "/services/echo/id-b",
        &curator_instance("echo", "id-b", b.address(), "null"),
    );
    eventually("b added", Duration::from_secs(10), || async {
        let counts = gateway.spread("/", 40).await;
        counts.contains_key("a") && counts.contains_key("b")
    })
    .await;

    // Weight changed in place (the data watch): Spring Cloud Zookeeper keeps it in the
    // payload's metadata.
    kazoo.set(
        "/services/echo/id-b",
        &curator_instance(
            "echo",
            "id-b",
            b.address(),
            r#"{"@class":"org.springframework.cloud.zookeeper.discovery.ZookeeperInstance","metadata":{"weight":"3"}}"#,
        ),
    );
    eventually("b re-weighted to 3", Duration::from_secs(10), || async {
        weight_of(&gateway, &b).await == Some(3)
    })
    .await;
    let counts = gateway.spread("/", 80).await;
    println!("weights 1:3 -> {counts:?}");
    assert!(counts.get("b") > counts.get("a"), "{counts:?}");

    // Malformed instances are skipped and counted; the others stay.
    let errors_before = gateway.registry_errors("zk").await;
    kazoo.register("/services/echo/broken", "not json");
    kazoo.register(
        "/services/echo/no-port",
        r#"{"name":"echo","address":"127.0.0.1"}"#,
    );
    // Sync point: a later change to a is seen, so both were processed.
    kazoo.set(
        "/services/echo/id-a",
        &curator_instance("echo", "id-a", a.address(), r#"{"weight":2}"#),
    );
    eventually("a re-weighted to 2", Duration::from_secs(10), || async {
        weight_of(&gateway, &a).await == Some(2)
    })
    .await;
    let errors = gateway.registry_errors("zk").await;
    println!("switchyard_registry_errors_total{{registry=\"zk\"}}: {errors_before} -> {errors}");
    assert!(
        errors >= errors_before + 2.0,
        "two malformed, {errors_before} -> {errors}"
    );
    let upstreams = gateway.admin_json("/api/upstreams").await;
    assert_eq!(
        upstreams[0]["endpoints"].as_array().map(Vec::len),
        Some(2),
        "{upstreams}"
    );

    // Removed.
    kazoo.delete("/services/echo/id-a");
    eventually("a removed", Duration::from_secs(10), || {
        gateway.all_reach("/", &["b"])
    })
    .await;

    // The service deleted: authoritatively empty, 503, and the registry is fine.
    kazoo.delete("/services/echo");
    eventually("service deleted: 503", Duration::from_secs(10), || async {
        gateway.get("/").await.status == 503
    })
    .await;
    let registries = gateway.admin_json("/api/registries").await;
    assert_eq!(registries[0]["state"], "ok", "{registries}");

    // Created again: the exists watch sees it.
    kazoo.register(
        "/services/echo/id-a",
        &curator_instance("echo", "id-a", a.address(), "null"),
    );
    eventually("service back: a routed", Duration::from_secs(10), || {
        gateway.all_reach("/", &["a"])
    })
    .await;
}

#[tokio::test]
async fn a_killed_kazoo_session_takes_its_instance_away_within_the_session_timeout() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let zk = ZooKeeperServer::start();
    let mut doomed = Kazoo::connect(&zk.address(), KAZOO_SESSION);
    let mut alive = Kazoo::connect(&zk.address(), KAZOO_SESSION);
    doomed.register(
        "/services/echo/a",
        &curator_instance("echo", "a", a.address(), "null"),
    );
    alive.register(
        "/services/echo/b",
        &curator_instance("echo", "b", b.address(), "null"),
    );
    let gateway = Gateway::start(&config(&zk, "", "echo")).await;
    eventually("a and b routed", Duration::from_secs(30), || async {
        let counts = gateway.spread("/", 40).await;
        counts.contains_key("a") && counts.contains_key("b") && counts.len() == 2
    })
    .await;

    doomed.kill();
    let killed = Instant::now();
    let bound = KAZOO_SESSION + Duration::from_secs(1);
    eventually("a gone with its session", bound, || async {
        let upstreams = gateway.admin_json("/api/upstreams").await;
        upstreams[0]["endpoints"].as_array().map(Vec::len) == Some(1)
    })
    .await;
    println!(
        "kazoo session ({KAZOO_SESSION:?}) killed -> instance removed after {:?}",
        killed.elapsed()
    );
    assert!(gateway.all_reach("/", &["b"]).await);
}

#[tokio::test]
async fn a_stopped_zookeeper_keeps_the_last_set_and_its_return_is_read_in_full() {
    let (a, b, c) = (
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    );
    let mut zk = ZooKeeperServer::start();
    {
        // Persistent nodes: they survive the restart whatever kazoo's session does.
        let mut kazoo = Kazoo::connect(&zk.address(), KAZOO_SESSION);
        kazoo.create(
            "/services/echo/a",
            &curator_instance("echo", "a", a.address(), "null"),
        );
    }
    let gateway = Gateway::start(&config(&zk, "", "echo")).await;
    eventually("a routed", Duration::from_secs(30), || {
        gateway.all_reach("/", &["a"])
    })
    .await;

    // Down: the last set serves, stale; the registry says down, with the error.
    zk.stop();
    eventually(
        "ZooKeeper stopped: registry down, endpoint stale",
        Duration::from_secs(30),
        || async {
            let registries = gateway.admin_json("/api/registries").await;
            let upstreams = gateway.admin_json("/api/upstreams").await;
            registries[0]["state"] == "down" && upstreams[0]["endpoints"][0]["stale"] == true
        },
    )
    .await;
    let registries = gateway.admin_json("/api/registries").await;
    println!("/api/registries with ZooKeeper down: {registries}");
    assert!(registries[0]["last_error"].is_string(), "{registries}");
    let counts = gateway.spread("/", 40).await;
    assert_eq!(
        counts.get("a"),
        Some(&40),
        "last set not served: {counts:?}"
    );

    // Back with the same data: read again, fresh, and watched again.
    zk.restart();
    eventually(
        "ZooKeeper back: registry ok, not stale",
        Duration::from_secs(60),
        || async {
            let registries = gateway.admin_json("/api/registries").await;
            let upstreams = gateway.admin_json("/api/upstreams").await;
            registries[0]["state"] == "ok" && upstreams[0]["endpoints"][0]["stale"] == false
        },
    )
    .await;
    let mut kazoo = Kazoo::connect(&zk.address(), KAZOO_SESSION);
    kazoo.register(
        "/services/echo/b",
        &curator_instance("echo", "b", b.address(), "null"),
    );
    eventually(
        "b added after the restart",
        Duration::from_secs(15),
        || async { gateway.spread("/", 40).await.contains_key("b") },
    )
    .await;
    drop(kazoo);

    // Replaced by an empty server holding only c: the gateway's session is unknown there,
    // so it opens a new one and reads everything again; a and b were never deleted by any
    // event, yet they go.
    zk.wipe();
    zk.restart();
    let mut kazoo = Kazoo::connect(&zk.address(), KAZOO_SESSION);
    kazoo.register(
        "/services/echo/c",
        &curator_instance("echo", "c", c.address(), "null"),
    );
    eventually("replaced server: only c", Duration::from_secs(60), || {
        gateway.all_reach("/", &["c"])
    })
    .await;
    let upstreams = gateway.admin_json("/api/upstreams").await;
    assert_eq!(
        upstreams[0]["endpoints"].as_array().map(Vec::len),
        Some(1),
        "{upstreams}"
    );
}

#[tokio::test]
async fn dubbo_providers_are_routed_by_weight_and_disabled_or_malformed_ones_left_out() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let zk = ZooKeeperServer::start();
    let mut kazoo = Kazoo::connect(&zk.address(), KAZOO_SESSION);
    let iface = "org.demo.Greeter";
    let providers = format!("/dubbo/{iface}/providers");
    let a_node = format!(
        "{providers}/{}",
        dubbo_node(iface, a.address(), "weight=100")
    );
    kazoo.register(&a_node, &a.address().ip().to_string());
    kazoo.register(
        &format!(
            "{providers}/{}",
            dubbo_node(iface, b.address(), "weight=300&version=1.0")
        ),
        "",
    );
    // Consumers register beside providers; only providers are read.
    kazoo.ensure(&format!("/dubbo/{iface}/consumers"));
    let gateway =
        Gateway::start(&config(&zk, "root = \"/dubbo\"\nformat = \"dubbo\"", iface)).await;
    eventually("a and b routed", Duration::from_secs(30), || async {
        let counts = gateway.spread("/", 40).await;
        counts.contains_key("a") && counts.contains_key("b")
    })
    .await;
    assert_eq!(weight_of(&gateway, &b).await, Some(300));
    let upstreams = gateway.admin_json("/api/upstreams").await;
    println!("dubbo endpoints: {}", upstreams[0]["endpoints"]);
    let counts = gateway.spread("/", 80).await;
    assert!(
        counts.get("b") > counts.get("a"),
        "weights 100:300 -> {counts:?}"
    );

    // A malformed provider is counted; a disabled one replaces a.
    let errors_before = gateway.registry_errors("zk").await;
    kazoo.register(&format!("{providers}/not-a-url"), "");
    kazoo.delete(&a_node);
    kazoo.register(
        &format!(
            "{providers}/{}",
            dubbo_node(iface, a.address(), "enabled=false")
        ),
        "",
    );
    eventually("a disabled: only b", Duration::from_secs(10), || {
        gateway.all_reach("/", &["b"])
    })
    .await;
    let errors = gateway.registry_errors("zk").await;
    assert!(
        errors > errors_before,
        "malformed provider not counted: {errors_before} -> {errors}"
    );
}

#[tokio::test]
async fn digest_credentials_read_protected_nodes_and_wrong_ones_are_reported() {
    let a = Backend::start("a");
    let zk = ZooKeeperServer::start();
    let mut kazoo = Kazoo::connect_with(&zk.address(), KAZOO_SESSION, Some("svc:secret"));
    kazoo.create_protected(
        "/protected/echo/a",
        &curator_instance("echo", "a", a.address(), "null"),
        "svc:secret",
    );
    let good = Gateway::start(&config(
        &zk,
        "root = \"/protected\"\nusername = \"svc\"\npassword = \"secret\"",
        "echo",
    ))
    .await;
    eventually("a routed with digest auth", Duration::from_secs(30), || {
        good.all_reach("/", &["a"])
    })
    .await;

    let bad = Gateway::start(&config(
        &zk,
        "root = \"/protected\"\nusername = \"svc\"\npassword = \"wrong\"",
        "echo",
    ))
    .await;
    eventually(
        "wrong password reported",
        Duration::from_secs(30),
        || async {
            let registries = bad.admin_json("/api/registries").await;
            registries[0]["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("reading /protected/echo"))
        },
    )
    .await;
    let registries = bad.admin_json("/api/registries").await;
    println!("wrong digest: {registries}");
    assert_eq!(bad.get("/").await.status, 503);
}

/// Propagation latency: from kazoo's `create` returning to the first request routed to
/// the instance it registered, over 40 registrations. A benchmark, not a test: it prints
/// p50/p99 and asserts nothing about time. Run with
/// `cargo nextest run -p switchyard-integration-tests --test zookeeper_gateway --run-ignored only --no-capture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: prints the registration-to-routed latency"]
async fn propagation_latency_benchmark() {
    let backends = [Backend::start("a"), Backend::start("b")];
    let zk = ZooKeeperServer::start();
    let mut kazoo = Kazoo::connect(&zk.address(), Duration::from_secs(10));
    kazoo.register(
        "/services/echo/0",
        &curator_instance("echo", "0", backends[0].address(), "null"),
    );
    let gateway = Gateway::start(&config(&zk, "", "echo")).await;
    eventually("a routed", Duration::from_secs(30), || {
        gateway.all_reach("/", &["a"])
    })
    .await;

    let changes = 40;
    let mut latencies = Vec::with_capacity(changes);
    for i in 1..=changes {
        // The instance moves between the two backends: register the new one, time it,
        // then drop the old one.
        let target = &backends[i % 2];
        let path = format!("/services/echo/{i}");
        kazoo.register(
            &path,
            &curator_instance("echo", &i.to_string(), target.address(), "null"),
        );
        let registered = Instant::now();
        latencies.push(gateway.time_until_routed(target.name(), registered).await);
        kazoo.delete(&format!("/services/echo/{}", i - 1));
        // Wait until the old one is gone too, so the next change starts from one instance.
        let only = [target.name()];
        eventually("old instance gone", Duration::from_secs(10), || {
            gateway.all_reach("/", &only)
        })
        .await;
    }
    latencies.sort();
    let pick = |q: f64| switchyard_integration_tests::percentile(&latencies, q);
    println!(
        "kazoo create -> first request routed to the new instance, {changes} changes: p50 {:?}, p99 {:?}, max {:?}",
        pick(0.50),
        pick(0.99),
        latencies[latencies.len() - 1]
    );
}

#[test]
fn check_names_every_bad_key_of_zookeeper_and_http_registries() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        r#"[registries.zk]
type = "zookeeper"
servers = ["127.0.0.1", "zk:2181/chroot"]
root = "services"
format = "eureka"

[registries.inventory]
type = "http"
url = "ftp://inventory/targets"
refresh_interval = "10ms"
bearer_token = "a"
bearer_token_file = "/nonexistent/token"

[upstreams.echo]
[[upstreams.echo.sources]]
registry = "zk"
service = "a/b"
port = "http"
[[upstreams.echo.sources]]
registry = "inventory"
service = ""
priority = 1

[[routes]]
name = "echo"
path_prefix = "/"
upstream = "echo"
"#,
    )
    .unwrap();
    let (code, stderr) = switchyard_integration_tests::gateway::check(&path);
    println!("{stderr}");
    assert_eq!(code, 2, "{stderr}");
    // A bad enum value stops the typed decode, so `format` is reported alone for zk.
    for key in [
        "registries.zk.format",
        "registries.inventory.url",
        "registries.inventory.refresh_interval",
        "registries.inventory.bearer_token_file",
    ] {
        assert!(
            stderr.contains(&format!("{key}:")),
            "{key} not named:\n{stderr}"
        );
    }

    std::fs::write(
        &path,
        std::fs::read_to_string(&path)
            .unwrap()
            .replace("format = \"eureka\"\n", ""),
    )
    .unwrap();
    let (code, stderr) = switchyard_integration_tests::gateway::check(&path);
    println!("{stderr}");
    assert_eq!(code, 2, "{stderr}");
    for key in [
        "registries.zk.servers[0]",
        "registries.zk.servers[1]",
        "registries.zk.root",
    ] {
        assert!(
            stderr.contains(&format!("{key}:")),
            "{key} not named:\n{stderr}"
        );
    }
}
