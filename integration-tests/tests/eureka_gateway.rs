//! The real `switchyard` binary routing to backends discovered through Eureka, here the
//! Eureka server double driven only through Eureka's REST operations: instances registered
//! appear (through deltas, not full fetches); one taken OUT_OF_SERVICE or cancelled stops
//! getting traffic; a delta the gateway missed is caught by the `apps__hashcode` check and
//! repaired by a full fetch; a malformed instance is skipped and counted; basic auth in the
//! server URL; with several servers one down fails over, all down keeps the last set
//! (stale) and their return resyncs. Plus a benchmark (ignored) printing the
//! register-to-routed propagation latency.
//!
//! Needs `cargo build -p switchyard`; the double is built with the tests.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use switchyard_eureka_double::{EurekaDouble, Options};
use switchyard_integration_tests::{eventually, free_port, gateway, Backend, Gateway};

/// A change shows within a fetch interval (200 ms here) plus slack.
const SOON: Duration = Duration::from_secs(5);
/// First sync of a freshly started gateway.
const START: Duration = Duration::from_secs(25);

/// Gateway config: registry `eureka` over `servers` (URLs), upstream `echo` from app `ECHO`.
fn config(servers: &[String], extra: &str) -> String {
    let servers: Vec<String> = servers.iter().map(|s| format!("{s:?}")).collect();
    format!(
        r#"[log]
access = false
level = "info"

[registries.eureka]
type = "eureka"
servers = [{}]
fetch_interval = "200ms"
{extra}

[upstreams.echo]
[[upstreams.echo.sources]]
registry = "eureka"
service = "echo"

[[routes]]
name = "echo"
path_prefix = "/"
upstream = "echo"
"#,
        servers.join(", ")
    )
}

/// An instance of `ECHO` on `backend`, as a Spring Cloud client registers it.
fn instance(backend: &Backend) -> Value {
    json!({"instance": {"instanceId": backend.name(), "hostName": "localhost", "app": "ECHO",
        "ipAddr": "127.0.0.1", "status": "UP", "overriddenStatus": "UNKNOWN",
        "port": {"$": backend.address().port(), "@enabled": "true"},
        "securePort": {"$": 443, "@enabled": "false"}, "countryId": 1,
        "dataCenterInfo": {"@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo", "name": "MyOwn"},
        "leaseInfo": {"renewalIntervalInSecs": 30, "durationInSecs": 90},
        "metadata": {"management.port": backend.address().port().to_string()},
        "vipAddress": "echo", "secureVipAddress": "echo"}})
}

/// A REST call on `base` (`http://host:port/eureka`); panics unless it succeeds.
async fn call(base: &str, method: reqwest::Method, path: &str, body: Option<&Value>) {
    let mut request = reqwest::Client::new().request(method, format!("{base}{path}"));
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.expect("eureka API");
    assert!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
}

async fn register(double: &EurekaDouble, backend: &Backend) {
    call(
        &double.address(),
        reqwest::Method::POST,
        "/apps/ECHO",
        Some(&instance(backend)),
    )
    .await;
}

fn on_free_port() -> Options {
    Options {
        listen: SocketAddr::from(([127, 0, 0, 1], free_port())),
        ..Options::default()
    }
}

#[tokio::test]
async fn registered_out_of_service_and_cancelled_instances() {
    let (a, b, c) = (
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    );
    let double = EurekaDouble::start(Options::default()).expect("eureka double");
    register(&double, &a).await;
    let gateway = Gateway::start(&config(&[double.address()], "")).await;
    eventually("first sync: a routed", START, || {
        gateway.all_reach("/", &["a"])
    })
    .await;

    register(&double, &b).await;
    register(&double, &c).await;
    eventually("b and c registered: routed", SOON, || async {
        gateway.spread("/", 30).await.len() == 3
    })
    .await;
    let base = double.address();
    call(
        &base,
        reqwest::Method::PUT,
        "/apps/ECHO/b/status?value=OUT_OF_SERVICE",
        None,
    )
    .await;
    eventually("b OUT_OF_SERVICE: dropped", SOON, || {
        gateway.all_reach("/", &["a", "c"])
    })
    .await;
    call(
        &base,
        reqwest::Method::DELETE,
        "/apps/ECHO/b/status?value=UP",
        None,
    )
    .await;
    eventually("b UP again: routed", SOON, || async {
        gateway.spread("/", 30).await.contains_key("b")
    })
    .await;
    call(&base, reqwest::Method::DELETE, "/apps/ECHO/c", None).await;
    eventually("c cancelled: dropped", SOON, || {
        gateway.all_reach("/", &["a", "b"])
    })
    .await;

    // Changes came through deltas: one full fetch at the start.
    let (full, deltas) = (
        double.requests("/eureka/apps"),
        double.requests("/eureka/apps/delta"),
    );
    println!("full fetches {full}, delta fetches {deltas}");
    assert_eq!(full, 1, "hash codes agreed: no full fetch after the first");
    assert!(deltas >= 3, "the changes came in deltas");

    call(&base, reqwest::Method::DELETE, "/apps/ECHO/a", None).await;
    call(&base, reqwest::Method::DELETE, "/apps/ECHO/b", None).await;
    eventually("all cancelled: 503", SOON, || async {
        gateway.get("/").await.status == 503
    })
    .await;
}

#[tokio::test]
async fn a_missed_delta_is_caught_by_the_hash_code_and_fetched_in_full() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let double = EurekaDouble::start(Options::default()).expect("eureka double");
    register(&double, &a).await;
    let gateway = Gateway::start(&config(&[double.address()], "")).await;
    eventually("a routed", START, || gateway.all_reach("/", &["a"])).await;
    let before = double.requests("/eureka/apps");
    // Deltas forget at once: the gateway never sees b in a delta, only in the hash code.
    double.set_delta_retention(Duration::ZERO);
    register(&double, &b).await;
    eventually(
        "b routed after the reconciling full fetch",
        SOON,
        || async { gateway.spread("/", 30).await.contains_key("b") },
    )
    .await;
    let full = double.requests("/eureka/apps") - before;
    println!("full fetches after the missed delta: {full}");
    assert!(full >= 1);
}

#[tokio::test]
async fn a_malformed_instance_is_skipped_and_counted_and_hostnames_resolve() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let double = EurekaDouble::start(Options::default()).expect("eureka double");
    register(&double, &a).await;
    let gateway = Gateway::start(&config(&[double.address()], r#"prefer = "hostname""#)).await;
    eventually("a routed by hostName localhost", START, || {
        gateway.all_reach("/", &["a"])
    })
    .await;
    let before = gateway.registry_errors("eureka").await;
    double.inject_raw_instance(
        "echo",
        json!({"instanceId": "broken", "ipAddr": "127.0.0.1",
        "hostName": "localhost", "status": "UP", "port": {"$": "not-a-port", "@enabled": "true"}}),
    );
    eventually("malformed counted", SOON, || async {
        gateway.registry_errors("eureka").await > before
    })
    .await;
    register(&double, &b).await;
    eventually("b routed beside it", SOON, || async {
        gateway.spread("/", 30).await.len() == 2
    })
    .await;
    let after = gateway.registry_errors("eureka").await;
    println!("registry errors {before} -> {after}");
    assert_eq!(after, before + 1.0, "counted once while it stays");
}

#[tokio::test]
async fn basic_auth_failover_stale_when_all_are_down_and_resync() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let auth = Some(("user".to_owned(), "p@ss".to_owned()));
    let first = EurekaDouble::start(Options {
        basic_auth: auth.clone(),
        ..on_free_port()
    })
    .expect("eureka");
    let second = EurekaDouble::start(Options {
        basic_auth: auth,
        ..on_free_port()
    })
    .expect("eureka");
    let with_auth = |d: &EurekaDouble| d.address().replace("http://", "http://user:p%40ss@");
    for double in [&first, &second] {
        call(
            &with_auth(double),
            reqwest::Method::POST,
            "/apps/ECHO",
            Some(&instance(&a)),
        )
        .await;
    }
    let wrong = Gateway::start(&config(&[first.address()], "")).await;
    eventually("no credentials: 401 reported", START, || async {
        wrong.first_registry().await["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("401"))
    })
    .await;
    drop(wrong);

    let gateway = Gateway::start(&config(&[with_auth(&first), with_auth(&second)], "")).await;
    eventually("a routed", START, || gateway.all_reach("/", &["a"])).await;
    first.stop();
    call(
        &with_auth(&second),
        reqwest::Method::POST,
        "/apps/ECHO",
        Some(&instance(&b)),
    )
    .await;
    eventually("first down: second read, b routed", SOON, || async {
        gateway.spread("/", 30).await.len() == 2
    })
    .await;

    second.stop();
    eventually("all down: stale", START, || async {
        let upstreams = gateway.admin_json("/api/upstreams").await;
        gateway.first_registry().await["state"] != "ok"
            && upstreams[0]["endpoints"][0]["stale"] == true
    })
    .await;
    let registry = gateway.first_registry().await;
    println!("/api/registries with every server down: {registry}");
    assert!(
        registry["last_error"]
            .as_str()
            .unwrap()
            .contains("every eureka server failed"),
        "{registry}"
    );
    assert_eq!(gateway.spread("/", 30).await.len(), 2, "last set served");

    second.resume().expect("resume");
    call(
        &with_auth(&second),
        reqwest::Method::DELETE,
        "/apps/ECHO/a",
        None,
    )
    .await;
    eventually(
        "back: full reset, b only, fresh",
        Duration::from_secs(40),
        || async {
            gateway.first_registry().await["state"] == "ok" && gateway.all_reach("/", &["b"]).await
        },
    )
    .await;
    let upstreams = gateway.admin_json("/api/upstreams").await;
    assert_eq!(upstreams[0]["endpoints"][0]["stale"], false, "{upstreams}");
}

/// `config/eureka.toml` as shipped, with the registrations its comments make.
#[tokio::test]
async fn config_eureka_toml_example_runs() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/eureka.toml");
    let (code, stderr) = gateway::check(&path);
    assert_eq!(code, 0, "switchyard check {}: {stderr}", path.display());
    let example = std::fs::read_to_string(&path).unwrap();
    let backends = [Backend::start("orders-a"), Backend::start("orders-b")];
    let double = EurekaDouble::start(Options::default()).expect("eureka double");
    let mut registered = 0;
    for line in example.lines() {
        let line = line.trim_start_matches('#').trim();
        let Some(rest) = line.strip_prefix("curl -X POST http://127.0.0.1:8761/eureka/apps/ORDERS -H 'Content-Type: application/json' -d ") else {
            continue;
        };
        let mut body = rest.trim_matches('\'').to_owned();
        for (i, backend) in backends.iter().enumerate() {
            body = body.replace(
                &format!("\"$\":{}", 9001 + i),
                &format!("\"$\":{}", backend.address().port()),
            );
        }
        let body: Value = serde_json::from_str(&body).expect("the example's JSON");
        call(
            &double.address(),
            reqwest::Method::POST,
            "/apps/ORDERS",
            Some(&body),
        )
        .await;
        registered += 1;
    }
    assert_eq!(registered, 2, "the example's curl lines changed");
    let config = example
        .replace("http://127.0.0.1:8761/eureka", &double.address())
        .replace("fetch_interval = \"30s\"", "fetch_interval = \"200ms\"")
        .replace("listen = \"127.0.0.1:8080\"", "listen = \"{listen}\"")
        .replace("listen = \"127.0.0.1:9901\"", "listen = \"{admin}\"");
    let gateway = Gateway::start(&config).await;
    eventually("example: both routed", START, || async {
        gateway.spread("/orders/", 40).await.len() == 2
    })
    .await;
    call(
        &double.address(),
        reqwest::Method::PUT,
        "/apps/ORDERS/orders-a/status?value=OUT_OF_SERVICE",
        None,
    )
    .await;
    eventually("orders-a out of service", SOON, || {
        gateway.all_reach("/orders/", &["orders-b"])
    })
    .await;
}

/// Propagation latency: from the register call returning to the first request routed to
/// the instance, over 40 changes, with `fetch_interval = "200ms"`. A benchmark: prints
/// p50/p99, asserts nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: prints the register-to-routed latency"]
async fn propagation_latency_benchmark() {
    let backends = [Backend::start("a"), Backend::start("b")];
    let double = EurekaDouble::start(Options::default()).expect("eureka double");
    register(&double, &backends[0]).await;
    let gateway = Gateway::start(&config(&[double.address()], "")).await;
    eventually("a routed", START, || gateway.all_reach("/", &["a"])).await;
    let mut latencies = Vec::new();
    for i in 1..=40 {
        let (target, old) = (&backends[i % 2], &backends[(i + 1) % 2]);
        register(&double, target).await;
        call(
            &double.address(),
            reqwest::Method::DELETE,
            &format!("/apps/ECHO/{}", old.name()),
            None,
        )
        .await;
        let registered = Instant::now();
        latencies.push(gateway.time_until_routed(target.name(), registered).await);
    }
    latencies.sort();
    let pick = |q: f64| switchyard_integration_tests::percentile(&latencies, q);
    println!(
        "eureka register -> first request routed to the instance, 40 changes, fetch_interval 200ms: p50 {:?}, p99 {:?}",
        pick(0.50),
        pick(0.99)
    );
}

/// A change of weight: `metadata.weight` changed through the metadata operation.
#[tokio::test]
async fn a_metadata_weight_change_shifts_traffic() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let double = EurekaDouble::start(Options::default()).expect("eureka double");
    register(&double, &a).await;
    register(&double, &b).await;
    let gateway = Gateway::start(&config(&[double.address()], "")).await;
    eventually("a and b routed", START, || async {
        gateway.spread("/", 30).await.len() == 2
    })
    .await;
    call(
        &double.address(),
        reqwest::Method::PUT,
        "/apps/ECHO/a/metadata?weight=4",
        None,
    )
    .await;
    eventually("a weighs 4 in /api/upstreams", SOON, || async {
        let upstreams = gateway.admin_json("/api/upstreams").await;
        upstreams[0]["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["weight"] == 4)
    })
    .await;
    let counts = gateway.spread("/", 400).await;
    println!("400 requests, a weight 4, b weight 1: {counts:?}");
    let (na, nb) = (
        counts.get("a").copied().unwrap_or(0),
        counts.get("b").copied().unwrap_or(0),
    );
    assert_eq!(na + nb, 400, "{counts:?}");
    assert!(na >= 2 * nb && nb > 0, "weight not honoured: {counts:?}");
}
