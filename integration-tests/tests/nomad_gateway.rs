//! The real `switchyard` binary routing to backends discovered through Nomad's native
//! service discovery, here the Nomad agent double driven only through Nomad's HTTP API
//! (jobs registered and stopped, allocations stopped, registrations deleted): instances
//! appear and are dropped within a second; tags filter; a malformed registration is skipped
//! and counted while the others serve; an agent that is down or has lost its leader leaves
//! the last set serving (stale), retried with bounded backoff, and its return resyncs; an
//! index going backwards is survived; a wrong token is reported without a request loop;
//! `config/nomad.toml` itself runs. Plus a benchmark (ignored by default) printing the
//! register-to-routed propagation latency.
//!
//! Needs `cargo build -p switchyard`; the double is built with the tests.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use switchyard_integration_tests::{eventually, free_port, gateway, Backend, Gateway};
use switchyard_nomad_double::{NomadDouble, Options};

/// "Within 1 s" checks wait up to five times that.
const WITHIN_1S: Duration = Duration::from_secs(5);
/// First sync of a freshly started gateway.
const START: Duration = Duration::from_secs(25);

/// Gateway config: registry `nomad` at `double` with `extra` lines, one upstream `echo`
/// (Nomad service `echo`, with `source_extra` lines) at `/`.
fn config(double: &NomadDouble, extra: &str, source_extra: &str) -> String {
    format!(
        r#"[log]
access = false
level = "info"

[registries.nomad]
type = "nomad"
address = "{}"
{extra}

[upstreams.echo]
[[upstreams.echo.sources]]
registry = "nomad"
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

/// A job `id` with one group whose static port `http` is `backend`'s, registering service
/// `echo` with `tags` in Nomad's service provider.
fn job(id: &str, backend: &Backend, tags: &[&str]) -> Value {
    json!({"Job": {"ID": id, "Name": id, "Type": "service", "Datacenters": ["dc1"],
        "TaskGroups": [{"Name": "web", "Count": 1,
            "Networks": [{"ReservedPorts": [{"Label": "http", "Value": backend.address().port()}]}],
            "Services": [{"Name": "echo", "PortLabel": "http", "Tags": tags, "Provider": "nomad"}],
            "Tasks": [{"Name": "server", "Driver": "raw_exec"}]}]}})
}

/// A plain HTTP client of the Nomad API.
struct Api {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Api {
    fn new(double: &NomadDouble) -> Api {
        Api {
            http: reqwest::Client::new(),
            base: double.address(),
            token: None,
        }
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> Value {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.header("X-Nomad-Token", token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.expect("nomad API");
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        assert!(status.is_success(), "{path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    async fn register(&self, job: &Value) {
        self.send(reqwest::Method::PUT, "/v1/jobs", Some(job)).await;
    }

    async fn stop_job(&self, id: &str) {
        self.send(reqwest::Method::DELETE, &format!("/v1/job/{id}"), None)
            .await;
    }

    async fn registrations(&self) -> Vec<Value> {
        let list = self
            .send(reqwest::Method::GET, "/v1/service/echo", None)
            .await;
        list.as_array().cloned().unwrap_or_default()
    }

    /// The registration of `echo` on `backend`'s port.
    async fn registration_of(&self, backend: &Backend) -> Value {
        self.registrations()
            .await
            .into_iter()
            .find(|r| r["Port"] == backend.address().port())
            .unwrap_or_else(|| panic!("no registration for {}", backend.name()))
    }
}

fn listen_on_free_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

#[tokio::test]
async fn registered_stopped_and_deleted_instances_are_routed_and_dropped() {
    let (a, b, c) = (
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    );
    let double = NomadDouble::start(Options::default()).expect("nomad double");
    let api = Api::new(&double);
    api.register(&job("a", &a, &[])).await;
    let gateway = Gateway::start(&config(&double, "", "")).await;
    eventually("first sync: a routed", START, || {
        gateway.all_reach("/", &["a"])
    })
    .await;

    api.register(&job("b", &b, &[])).await;
    api.register(&job("c", &c, &[])).await;
    eventually("b and c placed: routed within 1 s", WITHIN_1S, || async {
        gateway.spread("/", 30).await.len() == 3
    })
    .await;

    // An allocation stopped (or failed): the Nomad client deregisters its services.
    let alloc = api.registration_of(&b).await["AllocID"]
        .as_str()
        .unwrap()
        .to_owned();
    api.send(
        reqwest::Method::POST,
        &format!("/v1/allocation/{alloc}/stop"),
        None,
    )
    .await;
    eventually(
        "b's allocation stopped: dropped within 1 s",
        WITHIN_1S,
        || gateway.all_reach("/", &["a", "c"]),
    )
    .await;

    // A registration deleted through the service API.
    let id = api.registration_of(&c).await["ID"]
        .as_str()
        .unwrap()
        .to_owned();
    api.send(
        reqwest::Method::DELETE,
        &format!("/v1/service/echo/{id}"),
        None,
    )
    .await;
    eventually(
        "c's registration deleted: dropped within 1 s",
        WITHIN_1S,
        || gateway.all_reach("/", &["a"]),
    )
    .await;
    let upstreams = gateway.admin_json("/api/upstreams").await;
    let endpoints = upstreams[0]["endpoints"].as_array().expect("endpoints");
    assert_eq!(endpoints.len(), 1, "{upstreams}");
    assert_eq!(endpoints[0]["address"], a.address().to_string());

    // The last job stopped: Nomad answers `[]`, an authoritative empty set.
    api.stop_job("a").await;
    eventually("all stopped: 503", WITHIN_1S, || async {
        gateway.get("/").await.status == 503
    })
    .await;
    let requests = double.requests("/v1/service/echo");
    println!("service requests the agent saw: {requests}");
    assert!(
        requests <= 30,
        "blocking queries, not polling: {requests} requests"
    );
}

#[tokio::test]
async fn tags_filter_and_a_malformed_registration_is_skipped_and_counted() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let double = NomadDouble::start(Options::default()).expect("nomad double");
    let api = Api::new(&double);
    api.register(&job("a", &a, &["v2", "eu"])).await;
    api.register(&job("b", &b, &["v1"])).await;
    let gateway = Gateway::start(&config(&double, "", r#"tags = ["v2"]"#)).await;
    eventually("only a (v2) routed", START, || {
        gateway.all_reach("/", &["a"])
    })
    .await;
    assert_eq!(gateway.spread("/", 40).await.get("a"), Some(&40));
    let before = gateway.registry_errors("nomad").await;

    double.inject_registration(json!({"ID": "_nomad-task-broken", "ServiceName": "echo",
        "Address": "127.0.0.1", "Port": "not-a-port", "Tags": ["v2"]}));
    eventually("the malformed registration counted", WITHIN_1S, || async {
        gateway.registry_errors("nomad").await > before
    })
    .await;
    let counts = gateway.spread("/", 40).await;
    assert_eq!(counts.get("a"), Some(&40), "neighbours kept: {counts:?}");
    // Counted once while it stays, not once per answer.
    api.register(&job("b", &b, &["v2"])).await;
    eventually("b retagged v2: routed", WITHIN_1S, || async {
        gateway.spread("/", 30).await.contains_key("b")
    })
    .await;
    let after = gateway.registry_errors("nomad").await;
    println!("registry errors: {before} before, {after} after");
    assert_eq!(after, before + 1.0);
}

#[tokio::test]
async fn an_agent_down_keeps_the_last_set_and_its_return_resyncs() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let double = NomadDouble::start(Options {
        listen: listen_on_free_port(),
        ..Options::default()
    })
    .expect("nomad double");
    let api = Api::new(&double);
    api.register(&job("a", &a, &[])).await;
    let gateway = Gateway::start(&config(&double, "", "")).await;
    eventually("a routed", START, || gateway.all_reach("/", &["a"])).await;

    // No leader: 500s, retried with backoff, not hot; the last set serves, stale.
    double.set_no_leader(true);
    eventually("no leader: registry degraded, stale", START, || async {
        let upstreams = gateway.admin_json("/api/upstreams").await;
        gateway.first_registry().await["state"] != "ok"
            && upstreams[0]["endpoints"][0]["stale"] == true
    })
    .await;
    let registry = gateway.first_registry().await;
    println!("/api/registries without a leader: {registry}");
    assert!(
        registry["last_error"]
            .as_str()
            .unwrap()
            .contains("No cluster leader"),
        "{registry}"
    );
    let before = double.requests("/v1/service/echo");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let during = double.requests("/v1/service/echo") - before;
    println!("requests in 4 s without a leader: {during}");
    // Backoff from 250 ms doubling (half jittered): at most ~6 attempts in 4 s.
    assert!(during <= 8, "retried hot: {during} in 4 s");
    assert_eq!(gateway.spread("/", 30).await.get("a"), Some(&30));
    double.set_no_leader(false);
    eventually("leader back: ok", Duration::from_secs(40), || async {
        gateway.first_registry().await["state"] == "ok"
    })
    .await;

    // Down: connections refused; the last set serves, stale.
    double.stop();
    eventually("agent down: stale", START, || async {
        let upstreams = gateway.admin_json("/api/upstreams").await;
        gateway.first_registry().await["state"] != "ok"
            && upstreams[0]["endpoints"][0]["stale"] == true
    })
    .await;
    assert_eq!(
        gateway.spread("/", 30).await.get("a"),
        Some(&30),
        "last set not served"
    );

    double.resume().expect("resume");
    api.register(&job("b", &b, &[])).await;
    api.stop_job("a").await;
    eventually(
        "back and changed: b only, fresh",
        Duration::from_secs(50),
        || async {
            gateway.first_registry().await["state"] == "ok" && gateway.all_reach("/", &["b"]).await
        },
    )
    .await;
    let upstreams = gateway.admin_json("/api/upstreams").await;
    assert_eq!(
        upstreams[0]["endpoints"].as_array().unwrap().len(),
        1,
        "{upstreams}"
    );
    assert_eq!(upstreams[0]["endpoints"][0]["stale"], false, "{upstreams}");
}

#[tokio::test]
async fn an_index_going_backwards_is_reset_and_resynced() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let double = NomadDouble::start(Options::default()).expect("nomad double");
    let api = Api::new(&double);
    for i in 0..5 {
        api.register(&job(&format!("old-{i}"), &a, &[])).await;
        api.stop_job(&format!("old-{i}")).await;
    }
    api.register(&job("a", &a, &[])).await;
    let gateway = Gateway::start(&config(&double, "", "")).await;
    eventually("a routed", START, || gateway.all_reach("/", &["a"])).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = double.index();
    double.rewind_index(2);
    api.register(&job("b", &b, &[])).await;
    println!("index rewound from {before} to 2, now {}", double.index());
    assert!(double.index() < before);
    eventually("b routed after the rewind", WITHIN_1S, || async {
        gateway.spread("/", 20).await.contains_key("b")
    })
    .await;
}

#[tokio::test]
async fn a_wrong_token_is_reported_and_not_retried_hot() {
    let a = Backend::start("a");
    let double = NomadDouble::start(Options {
        acl_tokens: vec!["secret".into()],
        ..Options::default()
    })
    .expect("nomad double");
    let mut api = Api::new(&double);
    api.token = Some("secret".into());
    api.register(&job("a", &a, &[])).await;
    let good = Gateway::start(&config(&double, r#"token = "secret""#, "")).await;
    eventually("token: a routed", START, || good.all_reach("/", &["a"])).await;
    drop(good);

    let before = double.requests("/v1/service/echo");
    let wrong = Gateway::start(&config(&double, r#"token = "nope""#, "")).await;
    eventually("wrong token reported", START, || async {
        wrong.first_registry().await["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("ACL token not found"))
    })
    .await;
    assert_eq!(wrong.get("/").await.status, 503);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let made = double.requests("/v1/service/echo") - before;
    println!("requests with a wrong token over ~3 s: {made}");
    assert!(made <= 3, "retried hot: {made}");
}

/// `config/nomad.toml` as shipped, with the jobs its comments submit (ports moved).
#[tokio::test]
async fn config_nomad_toml_example_runs() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/nomad.toml");
    let (code, stderr) = gateway::check(&path);
    assert_eq!(code, 0, "switchyard check {}: {stderr}", path.display());
    let example = std::fs::read_to_string(&path).expect("read config/nomad.toml");
    let backends = [Backend::start("orders-a"), Backend::start("orders-b")];
    let double = NomadDouble::start(Options::default()).expect("nomad double");
    let api = Api::new(&double);
    let mut jobs = 0;
    for line in example.lines() {
        let line = line.trim_start_matches('#').trim();
        let Some(rest) = line.strip_prefix("curl -X PUT http://127.0.0.1:4646/v1/jobs -d ") else {
            continue;
        };
        let mut body = rest.trim_matches('\'').to_owned();
        for (i, backend) in backends.iter().enumerate() {
            body = body.replace(
                &format!("\"Value\":{}", 9001 + i),
                &format!("\"Value\":{}", backend.address().port()),
            );
        }
        api.register(&serde_json::from_str(&body).expect("the example's JSON"))
            .await;
        jobs += 1;
    }
    assert_eq!(jobs, 2, "the example's curl lines changed");
    let config = example
        .replace("http://127.0.0.1:4646", &double.address())
        .replace("listen = \"127.0.0.1:8080\"", "listen = \"{listen}\"")
        .replace("listen = \"127.0.0.1:9901\"", "listen = \"{admin}\"");
    let gateway = Gateway::start(&config).await;
    eventually(
        "example: /orders/ routed to orders-a (v2)",
        START,
        || async { gateway.get("/orders/").await.body == "orders-a" },
    )
    .await;
    assert_eq!(
        gateway.spread("/orders/", 30).await.get("orders-a"),
        Some(&30)
    );
}

/// Propagation latency: from `PUT /v1/jobs` returning to the first request routed to the
/// instance it placed, over 60 changes. A benchmark: prints p50/p99, asserts nothing about
/// time. `cargo nextest run -p switchyard-integration-tests --test nomad_gateway
/// --run-ignored only --no-capture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: prints the register-to-routed latency"]
async fn propagation_latency_benchmark() {
    let backends = [Backend::start("a"), Backend::start("b")];
    let double = NomadDouble::start(Options::default()).expect("nomad double");
    let api = Api::new(&double);
    api.register(&job("moving", &backends[0], &[])).await;
    let gateway = Gateway::start(&config(&double, "", "")).await;
    eventually("a routed", START, || gateway.all_reach("/", &["a"])).await;
    let mut latencies = Vec::new();
    for i in 1..=60 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let target = &backends[i % 2];
        api.register(&job("moving", target, &[])).await;
        let registered = Instant::now();
        latencies.push(gateway.time_until_routed(target.name(), registered).await);
    }
    latencies.sort();
    let pick = |q: f64| switchyard_integration_tests::percentile(&latencies, q);
    println!(
        "nomad job registered -> first request routed to its instance, 60 changes spaced 200 ms: p50 {:?}, p99 {:?}",
        pick(0.50),
        pick(0.99)
    );
}
