//! The real `switchyard` binary routing to backends discovered through a real bind9
//! `named`: SRV weights split traffic, priority failover, records added with `nsupdate`
//! routed to after their TTL, A/AAAA sources, a stopped DNS server (last good set served,
//! reported stale), NXDOMAIN (503), and `config/dns.toml` itself.
//!
//! Needs the Debian packages bind9 and bind9-dnsutils, and `cargo build -p switchyard`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use switchyard_integration_tests::bind::NamedServer;
use switchyard_integration_tests::{eventually, gateway, Backend, Gateway};

const ZONE: &str = "example.test";

/// Gateway config with a `dns` registry asking `named`, then `rest` (upstreams, routes).
fn config(named: &NamedServer, rest: &str) -> String {
    format!(
        r#"[log]
access = false
level = "info"

[registries.dns]
type = "dns"
nameservers = ["{}"]
min_ttl = "1s"
max_ttl = "5s"
timeout = "300ms"
attempts = 2

{rest}"#,
        named.addr()
    )
}

/// One upstream `orders` from `service`, routed at `/`.
fn orders(named: &NamedServer, service: &str) -> String {
    config(
        named,
        &format!(
            r#"[upstreams.orders]
[[upstreams.orders.sources]]
registry = "dns"
service = "{service}"

[[routes]]
name = "orders"
path_prefix = "/"
upstream = "orders"
"#
        ),
    )
}

/// Zone records for SRV `orders` → backends `(priority, weight, backend)` and each backend's
/// target name `<backend name>.orders` with A 127.0.0.1.
fn srv_records(targets: &[(u16, u16, &Backend)]) -> String {
    let mut records = String::new();
    for (priority, weight, backend) in targets {
        let name = backend.name();
        let port = backend.address().port();
        records.push_str(&format!(
            "_http._tcp.orders IN SRV {priority} {weight} {port} {name}.orders\n{name}.orders IN A 127.0.0.1\n"
        ));
    }
    records
}

#[tokio::test]
async fn srv_weights_1_to_3_split_traffic_1_to_3() {
    let (a, b, c) = (
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    );
    let named = NamedServer::launch(ZONE, &srv_records(&[(0, 1, &a), (0, 3, &b), (1, 1, &c)]));
    let gateway = Gateway::start(&orders(&named, "_http._tcp.orders.example.test")).await;
    eventually("orders routed", Duration::from_secs(25), || async {
        gateway.get("/").await.status == 200
    })
    .await;

    let upstreams = gateway.admin_json("/api/upstreams").await;
    let mut seen: Vec<String> = upstreams[0]["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .map(|e| {
            format!(
                "{} w{} p{}",
                e["metadata"]["target"].as_str().unwrap_or("?"),
                e["weight"],
                e["endpoint_priority"]
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            "a.orders.example.test w1 p0",
            "b.orders.example.test w3 p0",
            "c.orders.example.test w1 p1"
        ]
    );

    let counts = gateway.spread("/", 2000).await;
    println!("2000 requests, SRV weights 1:3 (+ a priority-1 backup): {counts:?}");
    let share = |name: &str| counts.get(name).copied().unwrap_or(0) as f64 / 2000.0;
    assert!(
        (share("a") - 0.25).abs() <= 0.05,
        "a got {:.3}: {counts:?}",
        share("a")
    );
    assert!(
        (share("b") - 0.75).abs() <= 0.05,
        "b got {:.3}: {counts:?}",
        share("b")
    );
    assert_eq!(
        counts.get("c"),
        None,
        "the priority-1 backup got traffic: {counts:?}"
    );
}

#[tokio::test]
async fn priority_1_serves_when_the_priority_0_targets_go_away() {
    let (a, b, c) = (
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    );
    let named = NamedServer::launch(ZONE, &srv_records(&[(0, 1, &a), (0, 1, &b), (1, 1, &c)]));
    let gateway = Gateway::start(&orders(&named, "_http._tcp.orders.example.test")).await;
    eventually("priority 0 serves", Duration::from_secs(25), || {
        gateway.all_reach("/", &["a", "b"])
    })
    .await;

    named.nsupdate(&format!(
        "update delete _http._tcp.orders.example.test SRV 0 1 {} a.orders.example.test
         update delete _http._tcp.orders.example.test SRV 0 1 {} b.orders.example.test",
        a.address().port(),
        b.address().port()
    ));
    // TTL 1 s: within 5 × (TTL + min_ttl).
    eventually(
        "priority-0 targets removed from DNS: all traffic on priority 1",
        Duration::from_secs(10),
        || gateway.all_reach("/", &["c"]),
    )
    .await;
}

#[tokio::test]
async fn record_added_by_nsupdate_is_routed_to_after_its_ttl() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let named = NamedServer::launch(ZONE, &srv_records(&[(0, 1, &a)]));
    let gateway = Gateway::start(&orders(&named, "_http._tcp.orders.example.test")).await;
    eventually("a serves", Duration::from_secs(25), || {
        gateway.all_reach("/", &["a"])
    })
    .await;

    named.nsupdate(&format!(
        "update add b.orders.example.test 1 A 127.0.0.1
         update add _http._tcp.orders.example.test 1 SRV 0 1 {} b.orders.example.test",
        b.address().port()
    ));
    eventually(
        "SRV record added with TTL 1s: routed to",
        Duration::from_secs(10),
        || async { gateway.spread("/", 20).await.contains_key("b") },
    )
    .await;
}

#[tokio::test]
async fn host_port_source_routes_to_the_a_records() {
    let web = Backend::start("web");
    let named = NamedServer::launch(ZONE, "web IN A 127.0.0.1");
    let service = format!("web.example.test:{}", web.address().port());
    let gateway = Gateway::start(&orders(&named, &service)).await;
    eventually("A/AAAA source routed", Duration::from_secs(25), || {
        gateway.all_reach("/", &["web"])
    })
    .await;
}

#[tokio::test]
async fn stopped_dns_server_keeps_the_last_good_set_served_and_stale() {
    let a = Backend::start("a");
    let mut named = NamedServer::launch(ZONE, &srv_records(&[(0, 1, &a)]));
    let gateway = Gateway::start(&orders(&named, "_http._tcp.orders.example.test")).await;
    eventually("a serves", Duration::from_secs(25), || {
        gateway.all_reach("/", &["a"])
    })
    .await;

    named.stop();
    let stale = || async {
        let upstreams = gateway.admin_json("/api/upstreams").await;
        upstreams[0]["endpoints"][0]["stale"] == true
    };
    eventually(
        "DNS server stopped: endpoint reported stale",
        Duration::from_secs(10),
        stale,
    )
    .await;
    let registries = gateway.admin_json("/api/registries").await;
    println!("/api/registries with the DNS server down: {registries}");
    assert_ne!(registries[0]["state"], "ok", "{registries}");
    assert!(registries[0]["last_error"].is_string(), "{registries}");
    let counts = gateway.spread("/", 50).await;
    assert_eq!(
        counts.get("a"),
        Some(&50),
        "last good set not served: {counts:?}"
    );

    named.start();
    eventually(
        "DNS server back: fresh again",
        Duration::from_secs(40),
        || async {
            let upstreams = gateway.admin_json("/api/upstreams").await;
            let registries = gateway.admin_json("/api/registries").await;
            upstreams[0]["endpoints"][0]["stale"] == false && registries[0]["state"] == "ok"
        },
    )
    .await;
}

#[tokio::test]
async fn nxdomain_gives_503_until_the_service_exists() {
    let a = Backend::start("a");
    let named = NamedServer::launch(ZONE, "a.orders IN A 127.0.0.1");
    let gateway = Gateway::start(&orders(&named, "_http._tcp.orders.example.test")).await;
    eventually("NXDOMAIN: 503", Duration::from_secs(25), || async {
        gateway.get("/").await.status == 503
    })
    .await;
    let reply = gateway.get("/").await;
    assert_eq!(reply.status, 503, "{reply:?}");

    named.nsupdate(&format!(
        "update add _http._tcp.orders.example.test 1 SRV 0 1 {} a.orders.example.test",
        a.address().port()
    ));
    eventually("service created: routed", Duration::from_secs(10), || {
        gateway.all_reach("/", &["a"])
    })
    .await;
}

#[tokio::test]
async fn a_name_that_never_resolved_is_reported_degraded_and_check_warns_about_short_names() {
    // One good name and one that has never existed: the registry is degraded, and
    // last_error names the missing one, while the good one serves.
    let a = Backend::start("a");
    let named = NamedServer::launch(ZONE, &srv_records(&[(0, 1, &a)]));
    let text = config(
        &named,
        r#"[upstreams.orders]
[[upstreams.orders.sources]]
registry = "dns"
service = "_http._tcp.orders.example.test"

[upstreams.typo]
[[upstreams.typo.sources]]
registry = "dns"
service = "_http._tcp.ordrs.example.test"

[[routes]]
name = "orders"
path_prefix = "/"
upstream = "orders"
"#,
    );
    let gateway = Gateway::start(&text).await;
    eventually("a serves", Duration::from_secs(25), || {
        gateway.all_reach("/", &["a"])
    })
    .await;
    eventually(
        "the never-resolved name reported",
        Duration::from_secs(25),
        || async {
            let registries = gateway.admin_json("/api/registries").await;
            registries[0]["state"] == "degraded"
                && registries[0]["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("_http._tcp.ordrs.example.test"))
        },
    )
    .await;
    println!(
        "/api/registries: {}",
        gateway.admin_json("/api/registries").await
    );

    // `switchyard check`: single-label names are looked up at the root (names are absolute).
    let short = config(
        &named,
        r#"[upstreams.orders]
[[upstreams.orders.sources]]
registry = "dns"
service = "orders:8080"
"#,
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("short.toml");
    std::fs::write(&path, short).unwrap();
    let (code, stderr) = gateway::check(&path);
    println!("switchyard check: {code}\n{stderr}");
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("warning: registries.dns") && stderr.contains("single-label"),
        "{stderr}"
    );
}

/// `config/dns.toml` as shipped, against the zone its comments describe (ports moved to
/// the test's backends and servers).
#[tokio::test]
async fn config_dns_toml_example_runs() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/dns.toml");
    let (code, stderr) = gateway::check(&path);
    assert_eq!(code, 0, "switchyard check {}: {stderr}", path.display());
    let example = std::fs::read_to_string(&path).expect("read config/dns.toml");

    let backends: Vec<Backend> = ["orders-a", "orders-b", "orders-c", "web"]
        .into_iter()
        .map(Backend::start)
        .collect();
    // The zone from the comments, without its SOA/NS/ns lines (the launcher writes those).
    let mut records = String::new();
    for line in example.lines() {
        let line = line.trim_start_matches('#').trim();
        if (line.contains(" IN SRV ") || line.contains(" IN A ")) && !line.starts_with("ns ") {
            records.push_str(line);
            records.push('\n');
        }
    }
    for (i, backend) in backends.iter().take(3).enumerate() {
        let port = backend.address().port().to_string();
        records = records.replace(
            &format!(" {} orders-", 9001 + i),
            &format!(" {port} orders-"),
        );
    }
    assert_eq!(records.matches(" IN SRV ").count(), 3, "{records}");
    let named = NamedServer::launch(ZONE, &records);

    let config = example
        .replace("127.0.0.1:5353", &named.addr().to_string())
        .replace("listen = \"127.0.0.1:8080\"", "listen = \"{listen}\"")
        .replace("listen = \"127.0.0.1:9901\"", "listen = \"{admin}\"")
        .replace(":9004\"", &format!(":{}\"", backends[3].address().port()));
    let gateway = Gateway::start(&config).await;
    let start = Instant::now();
    eventually(
        "example: /orders/ served by priority 0",
        Duration::from_secs(25),
        || async {
            let counts = {
                let mut counts = BTreeMap::<String, usize>::new();
                for _ in 0..20 {
                    let reply = gateway.get("/orders/").await;
                    *counts.entry(reply.body).or_default() += 1;
                }
                counts
            };
            counts
                .keys()
                .all(|name| name == "orders-a" || name == "orders-b")
        },
    )
    .await;
    eventually("example: / served by web", Duration::from_secs(10), || {
        gateway.all_reach("/", &["web"])
    })
    .await;
    println!("example config served after {:?}", start.elapsed());
}
