//! The real `switchyard` binary routing to backends discovered through Consul, here the
//! Consul agent double driven only through Consul's HTTP API: instances registered, failed
//! and deregistered are routed to and dropped within a second; tags filter; warning
//! instances serve at `Weights.Warning` when `only_passing = false`; `datacenter` picks the
//! catalog; a wrong token shows in `/api/registries` without a request loop; an index going
//! backwards is survived; a stopped agent leaves the last set serving (stale) and a resumed
//! one is picked up; `config/consul.toml` itself runs. Plus a benchmark (ignored by default)
//! printing the register-to-routed propagation latency.
//!
//! Needs `cargo build -p switchyard`; the double is built with the tests.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use switchyard_consul_double::client::AgentClient;
use switchyard_consul_double::{AclOptions, ConsulDouble, Options};
use switchyard_integration_tests::{eventually, gateway, Backend, Gateway};

/// "Within 1 s" checks wait up to five times that.
const WITHIN_1S: Duration = Duration::from_secs(5);
/// First sync of a freshly started gateway.
const START: Duration = Duration::from_secs(25);

/// Gateway config: registry `consul` at `double` with `extra` settings lines, and one
/// upstream `echo` (Consul service `echo`, with `source_extra` lines) at `/`.
fn config(double: &ConsulDouble, extra: &str, source_extra: &str) -> String {
    format!(
        r#"[log]
access = false
level = "info"

[registries.consul]
type = "consul"
address = "{}"
{extra}

[upstreams.echo]
[[upstreams.echo.sources]]
registry = "consul"
service = "echo"
{source_extra}

[[routes]]
name = "echo"
path_prefix = "/"
upstream = "echo"
"#,
        double.address()
    )
}

/// Registers `backend` as an instance of `echo` (ID = its name) with a passing TTL check.
async fn register(agent: &AgentClient, backend: &Backend, tags: &[&str]) {
    register_with(agent, backend, json!({"Tags": tags})).await;
}

/// Registers `backend` as `echo` with extra definition fields, its TTL check passing.
async fn register_with(agent: &AgentClient, backend: &Backend, extra: Value) {
    let mut definition = json!({
        "ID": backend.name(),
        "Name": "echo",
        "Address": "127.0.0.1",
        "Port": backend.address().port(),
        "Check": {"TTL": "10m", "Status": "passing"},
    });
    for (key, value) in extra.as_object().expect("object") {
        definition[key] = value.clone();
    }
    agent
        .register(&definition)
        .await
        .unwrap_or_else(|e| panic!("register {}: {e}", backend.name()));
}

#[tokio::test]
async fn registered_failed_and_deregistered_instances_are_routed_and_dropped() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let double = ConsulDouble::start(Options::default()).expect("consul double");
    let agent = AgentClient::new(&double.address());
    register(&agent, &a, &[]).await;
    let gateway = Gateway::start(&config(&double, "", "")).await;
    eventually("a routed", START, || gateway.all_reach("/", &["a"])).await;

    // A new instance whose TTL check starts critical is not routed until it passes.
    agent
        .register(&json!({"ID": "b", "Name": "echo", "Address": "127.0.0.1",
                          "Port": b.address().port(), "Check": {"TTL": "10m"}}))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(gateway.all_reach("/", &["a"]).await, "critical b routed");
    agent.pass("service:b").await.unwrap();
    eventually("b passes: routed within 1 s", WITHIN_1S, || async {
        gateway.spread("/", 20).await.contains_key("b")
    })
    .await;

    agent.fail("service:a").await.unwrap();
    eventually("a fails: dropped within 1 s", WITHIN_1S, || {
        gateway.all_reach("/", &["b"])
    })
    .await;
    agent.pass("service:a").await.unwrap();
    eventually("a passes again: routed within 1 s", WITHIN_1S, || async {
        gateway.spread("/", 20).await.contains_key("a")
    })
    .await;

    agent.deregister("b").await.unwrap();
    eventually("b deregistered: dropped within 1 s", WITHIN_1S, || {
        gateway.all_reach("/", &["a"])
    })
    .await;
    let upstreams = gateway.admin_json("/api/upstreams").await;
    let endpoints = upstreams[0]["endpoints"].as_array().expect("endpoints");
    assert_eq!(endpoints.len(), 1, "{upstreams}");
    assert_eq!(
        endpoints[0]["address"],
        a.address().to_string(),
        "{upstreams}"
    );

    agent.deregister("a").await.unwrap();
    eventually("all deregistered: 503", WITHIN_1S, || async {
        gateway.get("/").await.status == 503
    })
    .await;
    // Blocking queries, not polling: a handful of requests per change.
    let requests = double.requests("/v1/health/service/echo");
    println!("health requests the agent saw: {requests}");
    assert!(requests <= 30, "{requests} requests for 6 changes");
}

#[tokio::test]
async fn tags_filter_and_warning_instances_serve_at_their_warning_weight() {
    let (a, b, c) = (
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    );
    let double = ConsulDouble::start(Options::default()).expect("consul double");
    let agent = AgentClient::new(&double.address());
    register(&agent, &a, &["v2", "eu"]).await;
    register(&agent, &b, &["v1"]).await;
    register(&agent, &c, &["v2"]).await;
    let tagged = Gateway::start(&config(&double, "", r#"tags = ["v2", "eu"]"#)).await;
    eventually("only a (v2 + eu) routed", START, || {
        tagged.all_reach("/", &["a"])
    })
    .await;
    assert_eq!(tagged.spread("/", 50).await.get("a"), Some(&50));
    drop(tagged);

    // a passing (weight 1), c warning with Weights.Warning 3: c takes three in four.
    agent.deregister("b").await.unwrap();
    register_with(&agent, &a, json!({"Weights": {"Passing": 1, "Warning": 1}})).await;
    register_with(&agent, &c, json!({"Weights": {"Passing": 1, "Warning": 3}})).await;
    agent.warn("service:c").await.unwrap();
    let lenient = Gateway::start(&config(&double, "only_passing = false", "")).await;
    eventually("a and c routed", START, || async {
        lenient.spread("/", 40).await.len() == 2
    })
    .await;
    let counts = lenient.spread("/", 400).await;
    println!("400 requests, a passing (1), c warning (Warning 3): {counts:?}");
    let (na, nc) = (
        counts.get("a").copied().unwrap_or(0),
        counts.get("c").copied().unwrap_or(0),
    );
    assert_eq!(na + nc, 400, "{counts:?}");
    assert!(
        nc >= 2 * na && na > 0,
        "Weights.Warning not honoured: {counts:?}"
    );

    // The default (only passing) leaves the warning instance out.
    let strict = Gateway::start(&config(&double, "", "")).await;
    eventually("only passing: a alone", START, || {
        strict.all_reach("/", &["a"])
    })
    .await;
}

#[tokio::test]
async fn datacenter_setting_and_source_override_pick_the_catalog() {
    let (one, two) = (Backend::start("dc1"), Backend::start("dc2"));
    let dc1 = ConsulDouble::start(Options::default()).expect("dc1 agent");
    let dc2 = ConsulDouble::start(Options {
        join: Some(dc1.cluster()),
        ..Options::datacenter("dc2")
    })
    .expect("dc2 agent");
    register(&AgentClient::new(&dc1.address()), &one, &[]).await;
    register(&AgentClient::new(&dc2.address()), &two, &[]).await;

    // All through the dc1 agent.
    let remote = Gateway::start(&config(&dc1, r#"datacenter = "dc2""#, "")).await;
    eventually("datacenter = dc2", START, || {
        remote.all_reach("/", &["dc2"])
    })
    .await;
    let back = Gateway::start(&config(
        &dc1,
        r#"datacenter = "dc2""#,
        r#"datacenter = "dc1""#,
    ))
    .await;
    eventually("source datacenter = dc1", START, || {
        back.all_reach("/", &["dc1"])
    })
    .await;
    let unknown = Gateway::start(&config(&dc1, r#"datacenter = "dc9""#, "")).await;
    eventually("unknown datacenter reported", START, || async {
        let registry = unknown.first_registry().await;
        registry["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("No path to datacenter"))
    })
    .await;
    println!("unknown datacenter: {}", unknown.first_registry().await);
}

#[tokio::test]
async fn a_wrong_token_is_reported_and_not_retried_hot() {
    let a = Backend::start("a");
    let double = ConsulDouble::start(Options {
        acl: Some(AclOptions::deny_with("writer-secret", "reader-secret")),
        ..Options::default()
    })
    .expect("consul double");
    let agent = AgentClient::new(&double.address()).with_token("writer-secret");
    register(&agent, &a, &[]).await;

    let good = Gateway::start(&config(&double, r#"token = "reader-secret""#, "")).await;
    eventually("read token: a routed", START, || {
        good.all_reach("/", &["a"])
    })
    .await;
    drop(good);

    double.reset_requests();
    let wrong = Gateway::start(&config(&double, r#"token = "not-the-token""#, "")).await;
    eventually("wrong token reported in /api/registries", START, || async {
        let registry = wrong.first_registry().await;
        registry["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("ACL not found"))
    })
    .await;
    let registry = wrong.first_registry().await;
    println!("/api/registries with a wrong token: {registry}");
    assert_ne!(registry["state"], "ok", "{registry}");
    assert_eq!(wrong.get("/").await.status, 503);
    let before = double.requests("/v1/health/service/echo");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = double.requests("/v1/health/service/echo") - before;
    println!("requests with the wrong token: {before} to report it, {during} in the next 3 s");
    assert!(
        before + during <= 3,
        "retried hot: {before} + {during} requests"
    );
}

#[tokio::test]
async fn default_deny_without_a_token_is_reported_not_served_as_empty() {
    // Real Consul answers a token-less request under default-deny ACLs with `[]` and hides
    // that ACLs filtered it (maskResultsFilteredByACLs, agent/consul/rpc.go); only the
    // X-Consul-Default-ACL-Policy header (setACLDefaultPolicy, agent/http.go) tells.
    let a = Backend::start("a");
    let double = ConsulDouble::start(Options {
        acl: Some(AclOptions::deny_with("writer-secret", "reader-secret")),
        ..Options::default()
    })
    .expect("consul double");
    let agent = AgentClient::new(&double.address()).with_token("writer-secret");
    register(&agent, &a, &[]).await;

    let text = config(&double, "", "");
    let gateway = Gateway::start(&text).await;
    eventually("the missing token in /api/registries", START, || async {
        let registry = gateway.first_registry().await;
        registry["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("no token configured"))
    })
    .await;
    let registry = gateway.first_registry().await;
    println!("/api/registries without a token: {registry}");
    assert_ne!(registry["state"], "ok", "{registry}");
    assert_eq!(gateway.get("/").await.status, 503);
    eventually("a start-up warning naming the token", START, || async {
        gateway.stderr().contains("ACL default policy deny")
    })
    .await;

    // `switchyard check` says so too, when the agent can be reached; the config stays valid.
    let (code, stderr) = gateway::check(&gateway.config_path());
    println!("switchyard check: {code}\n{stderr}");
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("warning: registries.consul") && stderr.contains("no token is configured"),
        "{stderr}"
    );
    // With a token: no warning, and a served.
    let with_token = Gateway::start(&config(&double, r#"token = "reader-secret""#, "")).await;
    eventually("read token: a routed", START, || {
        with_token.all_reach("/", &["a"])
    })
    .await;
    let (code, stderr) = gateway::check(&with_token.config_path());
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
}

#[tokio::test]
async fn mixed_case_tags_route_as_consul_matches_them() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let double = ConsulDouble::start(Options::default()).expect("consul double");
    let agent = AgentClient::new(&double.address());
    register(&agent, &a, &["Primary"]).await;
    register(&agent, &b, &["secondary"]).await;
    let gateway = Gateway::start(&config(&double, "", r#"tags = ["PRIMARY"]"#)).await;
    eventually("a routed by a tag of another case", START, || {
        gateway.all_reach("/", &["a"])
    })
    .await;
    let spread = gateway.spread("/", 20).await;
    assert_eq!(spread.keys().collect::<Vec<_>>(), ["a"], "{spread:?}");
}

#[tokio::test]
async fn an_index_going_backwards_is_reset_and_resynced() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let double = ConsulDouble::start(Options::default()).expect("consul double");
    let agent = AgentClient::new(&double.address());
    for i in 0..5 {
        agent
            .register_passing(&format!("old-{i}"), "echo", "127.0.0.1", 1, &[])
            .await
            .unwrap();
        agent.deregister(&format!("old-{i}")).await.unwrap();
    }
    register(&agent, &a, &[]).await;
    let gateway = Gateway::start(&config(&double, "", "")).await;
    eventually("a routed", START, || gateway.all_reach("/", &["a"])).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let before = double.index();
    double.rewind_index(2);
    println!("index rewound from {before} to 2");
    register(&agent, &b, &[]).await;
    eventually(
        "b routed after the rewind, within 1 s",
        WITHIN_1S,
        || async { gateway.spread("/", 20).await.contains_key("b") },
    )
    .await;
    assert!(
        double.index() < before,
        "the change happened below the old index"
    );
}

#[tokio::test]
async fn a_stopped_agent_keeps_the_last_set_serving_and_a_resumed_one_is_picked_up() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let double = ConsulDouble::start(Options::default()).expect("consul double");
    let agent = AgentClient::new(&double.address());
    register(&agent, &a, &[]).await;
    let gateway = Gateway::start(&config(&double, "", "")).await;
    eventually("a routed", START, || gateway.all_reach("/", &["a"])).await;

    double.stop();
    eventually(
        "agent down: registry down, endpoint stale",
        START,
        || async {
            let registry = gateway.first_registry().await;
            let upstreams = gateway.admin_json("/api/upstreams").await;
            registry["state"] != "ok" && upstreams[0]["endpoints"][0]["stale"] == true
        },
    )
    .await;
    let registry = gateway.first_registry().await;
    println!("/api/registries with the agent down: {registry}");
    assert!(registry["last_error"].is_string(), "{registry}");
    assert_eq!(
        gateway.spread("/", 50).await.get("a"),
        Some(&50),
        "last set not served"
    );

    double.resume().expect("resume the agent");
    register(&agent, &b, &[]).await;
    agent.deregister("a").await.unwrap();
    eventually(
        "agent back and changed: b routed, registry ok",
        Duration::from_secs(50),
        || async {
            gateway.first_registry().await["state"] == "ok" && gateway.all_reach("/", &["b"]).await
        },
    )
    .await;
    let upstreams = gateway.admin_json("/api/upstreams").await;
    assert_eq!(upstreams[0]["endpoints"][0]["stale"], false, "{upstreams}");
}

/// `config/consul.toml` as shipped, with the registrations its comments make (ports moved
/// to the test's backends).
#[tokio::test]
async fn config_consul_toml_example_runs() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/consul.toml");
    let (code, stderr) = gateway::check(&path);
    assert_eq!(code, 0, "switchyard check {}: {stderr}", path.display());
    let example = std::fs::read_to_string(&path).expect("read config/consul.toml");

    let backends: Vec<Backend> = ["orders-a", "orders-b", "web"]
        .into_iter()
        .map(Backend::start)
        .collect();
    let double = ConsulDouble::start(Options::default()).expect("consul double");
    let agent = AgentClient::new(&double.address());
    // The `curl -X PUT .../register -d '...'` lines of the comments, with the ports moved.
    let mut registrations = 0;
    for line in example.lines() {
        let line = line.trim_start_matches('#').trim();
        let Some(rest) =
            line.strip_prefix("curl -X PUT http://127.0.0.1:8500/v1/agent/service/register -d ")
        else {
            continue;
        };
        let mut body = rest.trim_matches('\'').to_owned();
        for (i, backend) in backends.iter().enumerate() {
            let port = backend.address().port().to_string();
            body = body.replace(
                &format!("\"Port\":{}", 9001 + i),
                &format!("\"Port\":{port}"),
            );
        }
        let definition: Value = serde_json::from_str(&body).expect("the example's JSON");
        agent
            .register(&definition)
            .await
            .expect("register the example's instance");
        registrations += 1;
    }
    assert_eq!(registrations, 3, "the example's curl lines changed");

    let config = example
        .replace("http://127.0.0.1:8500", &double.address())
        .replace("listen = \"127.0.0.1:8080\"", "listen = \"{listen}\"")
        .replace("listen = \"127.0.0.1:9901\"", "listen = \"{admin}\"");
    let gateway = Gateway::start(&config).await;
    eventually("example: /orders/ routed", START, || async {
        gateway.get("/orders/").await.status == 200
    })
    .await;
    let mut orders = BTreeMap::<String, usize>::new();
    for _ in 0..200 {
        let reply = gateway.get("/orders/").await;
        *orders.entry(reply.body).or_default() += 1;
    }
    println!("example /orders/ x200 (Weights.Passing 3:1): {orders:?}");
    let (na, nb) = (
        orders.get("orders-a").copied().unwrap_or(0),
        orders.get("orders-b").copied().unwrap_or(0),
    );
    assert_eq!(na + nb, 200, "{orders:?}");
    assert!(na >= 2 * nb && nb > 0, "{orders:?}");
    let web = gateway.get("/").await;
    assert_eq!(
        (web.status, web.body.as_str()),
        (200, "web"),
        "web-1 has no Address: Node.Address"
    );
}

/// Propagation latency: from a `PUT /v1/agent/service/register` returning to the first
/// request routed to the instance it names, over 60 changes. A benchmark, not a test: it
/// prints p50/p99 and asserts nothing about time. Run with
/// `cargo nextest run -p switchyard-integration-tests --test consul_gateway --run-ignored only --no-capture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: prints the register-to-routed latency"]
async fn propagation_latency_benchmark() {
    let backends = [Backend::start("a"), Backend::start("b")];
    let double = ConsulDouble::start(Options::default()).expect("consul double");
    let agent = AgentClient::new(&double.address());
    let moving = |backend: &Backend| {
        json!({"ID": "moving", "Name": "echo", "Address": "127.0.0.1", "Port": backend.address().port(),
               "Check": {"TTL": "10m", "Status": "passing"}})
    };
    agent.register(&moving(&backends[0])).await.unwrap();
    let gateway = Gateway::start(&config(&double, "", "")).await;
    eventually("a routed", START, || gateway.all_reach("/", &["a"])).await;

    // Spaced changes (200 ms apart, slower than the watch's pacing of one re-query per
    // 100 ms) measure the propagation of an isolated change; back-to-back changes show the
    // pacing at work.
    let mut moves = 0;
    for (label, pause) in [
        ("spaced 200 ms", Duration::from_millis(200)),
        ("back-to-back", Duration::ZERO),
    ] {
        let changes = 60;
        let mut latencies = Vec::with_capacity(changes);
        for _ in 0..changes {
            tokio::time::sleep(pause).await;
            // One instance moving between the two backends: each registration is a new port.
            moves += 1;
            let target = &backends[moves % 2];
            agent.register(&moving(target)).await.unwrap();
            let registered = Instant::now();
            latencies.push(gateway.time_until_routed(target.name(), registered).await);
        }
        latencies.sort();
        let pick = |q: f64| switchyard_integration_tests::percentile(&latencies, q);
        println!(
            "consul register -> first request routed to the new instance, {changes} changes {label}: p50 {:?}, p99 {:?}, max {:?}",
            pick(0.50),
            pick(0.99),
            latencies[latencies.len() - 1]
        );
    }
    println!(
        "health requests the agent saw: {}",
        double.requests("/v1/health/service/echo")
    );
}
