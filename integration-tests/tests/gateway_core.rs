//! The foundation end to end: the real `switchyard` binary and real backends on loopback.
//! Routing, balancing, live file discovery, retries and ejection, reload, check, the
//! admin API, forwarding hygiene, error statuses and graceful shutdown.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard::api;
use switchyard_integration_tests::{eventually, gateway, Backend, Gateway};

/// An admin answer as its `switchyard::api` type.
fn typed<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value.clone())
        .unwrap_or_else(|e| panic!("not a {}: {e}: {value}", std::any::type_name::<T>()))
}

fn static_registry(services: &[(&str, &[(&Backend, u32)])]) -> String {
    let mut out = String::from("[registries.local]\ntype = \"static\"\n");
    for (name, backends) in services {
        let list: Vec<String> = backends
            .iter()
            .map(|(b, w)| format!("{{ address = \"{}\", weight = {w} }}", b.address()))
            .collect();
        out.push_str(&format!("services.{name} = [{}]\n", list.join(", ")));
    }
    out
}

async fn count_bodies(gw: &Gateway, path: &str, n: usize) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for _ in 0..n {
        let reply = gw.get(path).await;
        assert_eq!(reply.status, 200, "{reply:?}");
        *counts.entry(reply.body).or_default() += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_host_path_and_method() {
    let (a, b, c, d) = (
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
        Backend::start("d"),
    );
    let config = format!(
        r#"{}
[upstreams.a]
[[upstreams.a.sources]]
registry = "local"
service = "a"
[upstreams.b]
[[upstreams.b.sources]]
registry = "local"
service = "b"
[upstreams.c]
[[upstreams.c.sources]]
registry = "local"
service = "c"
[upstreams.d]
[[upstreams.d.sources]]
registry = "local"
service = "d"

[[routes]]
name = "default"
upstream = "a"
[[routes]]
name = "api-host"
host = "api.example.com"
path_prefix = "/orders"
upstream = "b"
strip_prefix = true
[[routes]]
name = "writes"
path_prefix = "/orders"
methods = ["POST"]
upstream = "c"
[[routes]]
name = "wildcard"
host = "*.example.org"
path = "/exact"
upstream = "d"
[[routes]]
name = "canary"
path_prefix = "/orders"
headers = {{ x-canary = "1" }}
upstream = "d"
"#,
        static_registry(&[
            ("a", &[(&a, 1)]),
            ("b", &[(&b, 1)]),
            ("c", &[(&c, 1)]),
            ("d", &[(&d, 1)])
        ])
    );
    let gw = Gateway::start(&config).await;
    gw.wait_ready().await;
    // (method, host, path, headers, expected backend)
    type Case<'a> = (
        &'a str,
        Option<&'a str>,
        &'a str,
        &'a [(&'a str, &'a str)],
        &'a str,
    );
    let cases: &[Case<'_>] = &[
        ("GET", None, "/anything", &[], "a"),
        ("GET", Some("api.example.com"), "/orders/7", &[], "b"),
        ("GET", Some("API.example.com:8080"), "/orders", &[], "b"),
        ("POST", None, "/orders/7", &[], "c"),
        ("GET", None, "/orders/7", &[], "a"),
        ("GET", Some("www.example.org"), "/exact", &[], "d"),
        ("GET", Some("www.example.org"), "/exact/no", &[], "a"),
        ("GET", None, "/orders", &[("x-canary", "1")], "d"),
    ];
    for (method, host, path, headers, expected) in cases {
        let mut request = gw.client().request(method.parse().unwrap(), gw.url(path));
        if let Some(host) = host {
            request = request.header("host", *host);
        }
        for (name, value) in *headers {
            request = request.header(*name, *value);
        }
        let reply = gw.send(request).await;
        assert_eq!(
            reply.body, *expected,
            "{method} {host:?} {path} {headers:?}"
        );
    }
    // strip_prefix: the backend saw the path without /orders.
    assert!(b.seen().iter().any(|s| s.path == "/7"), "{:?}", b.seen());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_round_robin_follows_weights() {
    let (a, b, c) = (
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    );
    let config = format!(
        "{}\n[upstreams.u]\n[[upstreams.u.sources]]\nregistry = \"local\"\nservice = \"s\"\n[[routes]]\nupstream = \"u\"\n",
        static_registry(&[("s", &[(&a, 1), (&b, 3), (&c, 6)])])
    );
    let gw = Gateway::start(&config).await;
    gw.wait_ready().await;
    let counts = count_bodies(&gw, "/", 1000).await;
    println!("round_robin 1:3:6 over 1000: {counts:?}");
    for (name, weight) in [("a", 1.0), ("b", 3.0), ("c", 6.0)] {
        let share = *counts.get(name).unwrap_or(&0) as f64 / 1000.0;
        let expected = weight / 10.0;
        assert!(
            (share - expected).abs() <= 0.05 * expected.max(0.1),
            "{name}: {share} vs {expected}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_is_sticky_and_moves_few_keys() {
    let backends: Vec<Backend> = (0..5).map(|i| Backend::start(&format!("b{i}"))).collect();
    let write_file = |gw: &Gateway, live: &[&Backend]| {
        let targets: Vec<String> = live
            .iter()
            .map(|b| format!("\"{}\"", b.address()))
            .collect();
        std::fs::write(
            gw.dir().join("services.json"),
            format!(
                r#"[{{"targets":[{}],"labels":{{"__service__":"s"}}}}]"#,
                targets.join(",")
            ),
        )
        .unwrap();
    };
    let config = r#"
[registries.files]
type = "file"
path = "services.json"
[upstreams.u]
balancer = "consistent_hash"
hash_on = "header:x-user"
[[upstreams.u.sources]]
registry = "files"
service = "s"
[[routes]]
upstream = "u"
"#;
    let gw = Gateway::spawn(config);
    write_file(&gw, &backends.iter().collect::<Vec<_>>());
    gw.wait_healthy().await;
    gw.wait_ready().await;
    let owners = |gw: &Gateway| {
        let gw_client = gw.client().clone();
        let url = gw.url("/");
        async move {
            let mut owners = Vec::new();
            for user in 0..200 {
                let reply = gw_client
                    .get(&url)
                    .header("x-user", format!("user-{user}"))
                    .send()
                    .await
                    .unwrap();
                owners.push(reply.text().await.unwrap());
            }
            owners
        }
    };
    let before = owners(&gw).await;
    assert_eq!(
        before,
        owners(&gw).await,
        "the same key goes to the same endpoint"
    );
    // One of five leaves: only its keys move.
    write_file(&gw, &backends[..4].iter().collect::<Vec<_>>());
    eventually(
        "b4 removed from the upstream",
        Duration::from_secs(5),
        || async {
            let v = gw.admin_json("/api/upstreams").await;
            v[0]["endpoints"].as_array().unwrap().len() == 4
        },
    )
    .await;
    let after = owners(&gw).await;
    let moved = before.iter().zip(&after).filter(|(x, y)| x != y).count();
    let owned_by_leaver = before.iter().filter(|o| *o == "b4").count();
    println!("consistent_hash: {moved} of 200 keys moved; b4 owned {owned_by_leaver}");
    assert_eq!(
        moved, owned_by_leaver,
        "only the leaving endpoint's keys move"
    );
    assert!(moved < 200 / 5 * 2, "about 1/5 of keys move, not {moved}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_registry_changes_apply_within_a_second() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let config = r#"
[registries.files]
type = "file"
path = "services.json"
[upstreams.u]
[[upstreams.u.sources]]
registry = "files"
service = "echo"
[[routes]]
upstream = "u"
"#;
    let gw = Gateway::spawn(config);
    let write = |list: &[&Backend]| {
        let targets: Vec<String> = list
            .iter()
            .map(|b| format!("\"{}\"", b.address()))
            .collect();
        std::fs::write(
            gw.dir().join("services.json"),
            format!(
                r#"[{{"targets":[{}],"labels":{{"__service__":"echo"}}}}]"#,
                targets.join(",")
            ),
        )
        .unwrap();
    };
    write(&[&a]);
    gw.wait_healthy().await;
    gw.wait_ready().await;
    assert_eq!(gw.get("/").await.body, "a");

    write(&[&a, &b]);
    let took = eventually(
        "added instance receives traffic",
        Duration::from_secs(5),
        || async { gw.get("/").await.body == "b" },
    )
    .await;
    assert!(took < Duration::from_secs(5));

    write(&[&b]);
    eventually(
        "removed instance leaves the upstream",
        Duration::from_secs(5),
        || async {
            let v = gw.admin_json("/api/upstreams").await;
            v[0]["endpoints"].as_array().unwrap().len() == 1
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let hits_before = a.hits();
    count_bodies(&gw, "/", 20).await;
    assert_eq!(a.hits(), hits_before, "a removed instance receives nothing");

    // A broken file keeps the last good set, and the registry reports the error.
    std::fs::write(gw.dir().join("services.json"), "[{ broken").unwrap();
    eventually(
        "registry reports the broken file",
        Duration::from_secs(5),
        || async {
            let v = gw.admin_json("/api/registries").await;
            v[0]["last_error"].is_string()
        },
    )
    .await;
    let counts = count_bodies(&gw, "/", 10).await;
    assert_eq!(
        counts.get("b"),
        Some(&10),
        "still served from the last good set"
    );
    let v = gw.admin_json("/api/upstreams").await;
    assert_eq!(v[0]["endpoints"][0]["stale"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_instance_costs_no_failed_idempotent_request() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let mut c = Backend::start("c");
    let config = format!(
        "{}\n[upstreams.u]\n[upstreams.u.outlier]\nconsecutive_failures = 2\nbase_ejection = \"30s\"\n[[upstreams.u.sources]]\nregistry = \"local\"\nservice = \"s\"\n[[routes]]\nupstream = \"u\"\nretries = 2\n",
        static_registry(&[("s", &[(&a, 1), (&b, 1), (&c, 1)])])
    );
    let gw = Gateway::start(&config).await;
    gw.wait_ready().await;
    let mut failures = 0;
    let mut served_by_c_after_kill = 0;
    for i in 0..600 {
        if i == 150 {
            c.kill();
        }
        let reply = gw.get("/").await;
        if reply.status != 200 {
            failures += 1;
        } else if i > 150 && reply.body == "c" {
            served_by_c_after_kill += 1;
        }
    }
    println!("600 GETs, instance killed at 150: {failures} failed");
    assert_eq!(failures, 0);
    assert_eq!(served_by_c_after_kill, 0);
    let v = gw.admin_json("/api/upstreams").await;
    let dead = v[0]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["address"] == c.address().to_string())
        .unwrap()
        .clone();
    assert_eq!(dead["health"]["ejected"], true, "{dead}");
}

/// An endpoint that accepts each connection and closes it at once, counting them: every
/// attempt on it fails after the request went out.
struct Slammer {
    address: std::net::SocketAddr,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Slammer {
    fn start() -> Slammer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let address = listener.local_addr().unwrap();
        let (accepted, stop) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let (count, stopped) = (accepted.clone(), stop.clone());
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(120);
            while !stopped.load(Ordering::Relaxed) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((stream, _)) => {
                        count.fetch_add(1, Ordering::SeqCst);
                        drop(stream);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Slammer {
            address,
            accepted,
            stop,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Slammer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Sends a raw HTTP/1.0 request without a Host header; returns the status line.
fn http10_without_host(gateway: &Gateway, path: &str) -> String {
    use std::io::{Read, Write};
    let address = gateway
        .url("/")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nx-test: keep-me\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer.lines().next().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_request_reaches_the_next_endpoint_with_the_same_headers() {
    let live = Backend::start("live");
    let slammer = Slammer::start();
    let config = format!(
        "[registries.local]\ntype = \"static\"\nservices.s = [\"{}\", \"{}\"]\n[upstreams.u]\n[upstreams.u.outlier]\nconsecutive_failures = 0\n[[upstreams.u.sources]]\nregistry = \"local\"\nservice = \"s\"\n[[routes]]\nupstream = \"u\"\nretries = 1\n",
        live.address(),
        slammer.address
    );
    let gw = Gateway::start(&config).await;
    gw.wait_ready().await;

    // HTTP/1.0 without Host: each attempt names its own endpoint, so the retry carries
    // the live endpoint's address, not the failed one's.
    for i in 0..4 {
        let status = tokio::task::block_in_place(|| http10_without_host(&gw, &format!("/old/{i}")));
        assert!(status.contains(" 200 "), "{status}");
    }
    let slammed_old = slammer.accepted();
    println!("HTTP/1.0 requests: {slammed_old} attempts on the failing endpoint");
    assert!(slammed_old >= 1, "no request was retried");

    for i in 0..10 {
        let reply = gw
            .send(
                gw.client()
                    .get(gw.url(&format!("/new/{i}")))
                    .header("x-test", "keep-me")
                    .header("x-request-id", format!("rid-{i}")),
            )
            .await;
        assert_eq!(reply.status, 200);
    }
    let slammed_new = slammer.accepted() - slammed_old;
    println!("HTTP/1.1 requests: {slammed_new} attempts on the failing endpoint");
    assert!(slammed_new >= 1, "no request was retried");

    let seen = live.seen();
    assert_eq!(
        seen.len(),
        14,
        "each request reached the live endpoint once"
    );
    let live_host = live.address().to_string();
    for request in &seen {
        let what = &request.path;
        assert_eq!(request.header("x-test"), vec!["keep-me"], "{what}");
        assert_eq!(
            request.header("x-forwarded-for"),
            vec!["127.0.0.1"],
            "{what}"
        );
        assert_eq!(request.header("x-request-id").len(), 1, "{what}");
        assert_eq!(request.header("host").len(), 1, "{what}");
        if let Some(i) = what.strip_prefix("/new/") {
            assert_eq!(request.header("x-request-id"), vec![format!("rid-{i}")]);
            assert_ne!(
                request.header("host"),
                vec![live_host.as_str()],
                "the client's Host is kept"
            );
        } else {
            assert_eq!(request.header("host"), vec![live_host.as_str()], "{what}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_every_bad_key_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        r#"
[server]
listen = "not an address"
[registries.consul]
type = "consul"
address = "http://127.0.0.1:8500"
[registries.local]
type = "static"
services.s = ["127.0.0.1:1"]
colour = "blue"
[upstreams.orders]
balancer = "fastest"
[[upstreams.orders.sources]]
registry = "consull"
service = "orders"
[[routes]]
path_prefix = "orders"
upstream = "nowhere"
[[routes]]
upstream = "orders"
timeuot = "1s"
[extra]
x = 1
"#,
    )
    .unwrap();
    let (code, stderr) = gateway::check(&path);
    println!("{stderr}");
    assert_eq!(code, 2);
    for expected in [
        "server.listen",
        "registries.local.colour: unknown field `colour`",
        "upstreams.orders.balancer: unknown balancer \"fastest\"",
        "upstreams.orders.sources[0].registry: unknown registry \"consull\" (known: consul, local)",
        "routes[0].path_prefix",
        "routes[0].upstream: unknown upstream \"nowhere\"",
        "extra: unknown section",
        "routes[1].timeuot: unknown field `timeuot`",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_reload_keeps_the_old_routes_and_good_reload_applies() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let good = |backend: &Backend, path: &str| {
        format!(
            "[registries.local]\ntype = \"static\"\nservices.s = [\"{}\"]\n[upstreams.u]\n[[upstreams.u.sources]]\nregistry = \"local\"\nservice = \"s\"\n[[routes]]\npath_prefix = \"{path}\"\nupstream = \"u\"\n",
            backend.address()
        )
    };
    let gw = Gateway::start(&good(&a, "/old")).await;
    gw.wait_ready().await;
    assert_eq!(gw.get("/old").await.body, "a");

    gw.write_config("[upstreams.u]\nbalancer = \"nope\"\n");
    let reply = gw.send(gw.client().post(gw.admin_url("/api/reload"))).await;
    assert_eq!(reply.status, 422, "{reply:?}");
    assert!(reply.body.contains("upstreams.u"), "{}", reply.body);
    gw.signal("HUP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(gw.get("/old").await.body, "a", "old routes keep serving");

    gw.write_config(&good(&b, "/new"));
    gw.signal("HUP");
    eventually(
        "SIGHUP applies the new config",
        Duration::from_secs(5),
        || async { gw.get("/new").await.body == "b" },
    )
    .await;
    assert_eq!(gw.get("/old").await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_the_counters_of_routes_it_keeps() {
    let a = Backend::start("a");
    let config = |extra: &str| {
        format!(
            "[registries.local]\ntype = \"static\"\nservices.s = [\"{}\"]\n[upstreams.u]\n[[upstreams.u.sources]]\nregistry = \"local\"\nservice = \"s\"\n[[routes]]\nname = \"kept\"\npath_prefix = \"/kept\"\nupstream = \"u\"\n{extra}",
            a.address()
        )
    };
    let gw = Gateway::start(&config("")).await;
    gw.wait_ready().await;
    for _ in 0..3 {
        assert_eq!(gw.get("/kept").await.body, "a");
    }
    gw.write_config(&config(
        "[[routes]]\nname = \"added\"\npath_prefix = \"/added\"\nupstream = \"u\"\n",
    ));
    gw.signal("HUP");
    eventually("SIGHUP adds the route", Duration::from_secs(5), || async {
        gw.get("/added").await.body == "a"
    })
    .await;
    assert_eq!(gw.get("/kept").await.body, "a");
    let metrics = gw
        .send(gw.client().get(gw.admin_url("/metrics")))
        .await
        .body;
    assert!(
        metrics.contains("switchyard_requests_total{route=\"kept\",upstream=\"u\",code=\"200\"} 4"),
        "the kept route counts on from 3:\n{metrics}"
    );
    assert!(
        metrics.contains("switchyard_requests_total{route=\"added\",upstream=\"u\",code=\"200\"}"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_shows_sources_and_forwarding_is_clean() {
    let a = Backend::start("a");
    let fallback = Backend::start("fallback");
    let config = format!(
        "{}\n[upstreams.u]\n[[upstreams.u.sources]]\nregistry = \"local\"\nservice = \"main\"\n[[upstreams.u.sources]]\nregistry = \"local\"\nservice = \"fallback\"\npriority = 1\n[[routes]]\nname = \"r\"\nupstream = \"u\"\n",
        static_registry(&[("main", &[(&a, 2)]), ("fallback", &[(&fallback, 1)])])
    );
    let gw = Gateway::start(&config).await;
    gw.wait_ready().await;
    // Read through the types the gateway writes them with (`switchyard::api`).
    let v: Vec<api::Upstream> = typed(gw.admin_json("/api/upstreams").await);
    let endpoints = &v[0].endpoints;
    assert_eq!(endpoints.len(), 2);
    assert_eq!(endpoints[0].address, a.address().to_string());
    assert_eq!(endpoints[0].source.registry, "local");
    assert_eq!(endpoints[0].source.service, "main");
    assert_eq!(endpoints[0].weight, 2);
    assert!(endpoints[0].serving);
    assert_eq!(endpoints[1].priority, 1);
    assert!(
        !endpoints[1].serving,
        "tier 1 waits while tier 0 is healthy"
    );
    // One upstream by name: the same object as its entry in the list; unknown names 404.
    let one: api::Upstream = typed(gw.admin_json("/api/upstreams/u").await);
    assert_eq!(one, v[0]);
    let missing = gw
        .send(gw.client().get(gw.admin_url("/api/upstreams/nope")))
        .await;
    assert_eq!(missing.status, 404, "{}", missing.body);
    let regs: Vec<api::Registry> = typed(gw.admin_json("/api/registries").await);
    assert_eq!(regs[0].name, "local");
    assert_eq!(regs[0].state, "ok");
    let routes: Vec<api::RouteEntry> = typed(gw.admin_json("/api/routes").await);
    assert_eq!(routes[0].name, "r");

    let reply = gw
        .send(
            gw.client()
                .get(gw.url("/x"))
                .header("connection", "x-private")
                .header("x-private", "secret")
                .header("x-forwarded-for", "203.0.113.9")
                .header("x-request-id", "req-123"),
        )
        .await;
    assert_eq!(reply.headers["x-request-id"], "req-123");
    let seen = a.seen().pop().unwrap();
    assert!(
        seen.header("x-private").is_empty(),
        "headers named in Connection are stripped"
    );
    // The client is not a trusted proxy: its X-Forwarded-For is replaced, not appended to.
    assert_eq!(seen.header("x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(seen.header("x-forwarded-proto"), vec!["http"]);
    assert_eq!(seen.header("x-request-id"), vec!["req-123"]);
    let reply = gw.get("/y").await;
    let generated = reply.headers["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(generated.len(), 16);
    assert_eq!(
        a.seen().pop().unwrap().header("x-request-id"),
        vec![generated.as_str()]
    );

    let metrics = gw
        .send(gw.client().get(gw.admin_url("/metrics")))
        .await
        .body;
    assert!(
        metrics.contains("switchyard_requests_total{route=\"r\",upstream=\"u\",code=\"200\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("switchyard_upstream_endpoints{upstream=\"u\",state=\"healthy\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("switchyard_registry_up{registry=\"local\"} 1"),
        "{metrics}"
    );
    // The access log writes in batches (up to 20 ms late).
    switchyard_integration_tests::eventually("access log line", Duration::from_secs(5), || async {
        gw.stdout().contains("req-123")
    })
    .await;
    let log = gw.stdout();
    let line: serde_json::Value =
        serde_json::from_str(log.lines().find(|l| l.contains("req-123")).unwrap()).unwrap();
    assert_eq!(line["route"], "r");
    assert_eq!(line["status"], 200);
    assert_eq!(line["endpoint"], a.address().to_string());
    assert_eq!(line["bytes_out"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_statuses_have_json_bodies() {
    let slow = Backend::start("slow");
    slow.set_delay(Duration::from_secs(3));
    let dead_port = switchyard_integration_tests::free_port();
    let config = format!(
        r#"[registries.local]
type = "static"
services.slow = ["{}"]
services.dead = ["127.0.0.1:{dead_port}"]
[registries.files]
type = "file"
path = "empty.json"
[upstreams.slow]
[[upstreams.slow.sources]]
registry = "local"
service = "slow"
[upstreams.dead]
[[upstreams.dead.sources]]
registry = "local"
service = "dead"
[upstreams.empty]
[[upstreams.empty.sources]]
registry = "files"
service = "nothing"
[[routes]]
path_prefix = "/slow"
upstream = "slow"
timeout = "300ms"
[[routes]]
path_prefix = "/dead"
upstream = "dead"
[[routes]]
path_prefix = "/empty"
upstream = "empty"
"#,
        slow.address()
    );
    let gw = Gateway::spawn(&config);
    std::fs::write(gw.dir().join("empty.json"), "[]").unwrap();
    gw.wait_healthy().await;
    gw.wait_ready().await;
    for (path, status) in [
        ("/nowhere", 404),
        ("/empty", 503),
        ("/dead", 502),
        ("/slow", 504),
    ] {
        let reply = gw.get(path).await;
        assert_eq!(reply.status, status, "{path}: {reply:?}");
        let body: serde_json::Value = serde_json::from_str(&reply.body).expect("JSON error body");
        assert!(body["error"].is_string());
        assert_eq!(
            body["request_id"],
            reply.headers["x-request-id"].to_str().unwrap()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_then_exits_0() {
    let slow = Backend::start("slow");
    slow.set_delay(Duration::from_millis(800));
    let config = format!(
        "[registries.local]\ntype = \"static\"\nservices.s = [\"{}\"]\n[upstreams.u]\n[[upstreams.u.sources]]\nregistry = \"local\"\nservice = \"s\"\n[[routes]]\nupstream = \"u\"\n",
        slow.address()
    );
    let mut gw = Gateway::start(&config).await;
    gw.wait_ready().await;
    let client = gw.client().clone();
    let url = gw.url("/");
    let in_flight =
        tokio::spawn(async move { client.get(url).send().await.map(|r| r.status().as_u16()) });
    // A connection that never sends a byte (a client pool's spare, a browser's
    // preconnect) holds no request: the drain closes it instead of waiting for it
    // (header_read_timeout and drain_timeout are both 30 s, terminate() waits 20 s).
    let silent_address = gw.url("").trim_start_matches("http://").to_owned();
    let silent = std::net::TcpStream::connect(silent_address).expect("silent connection");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let start = Instant::now();
    let status = tokio::task::spawn_blocking(move || gw.terminate())
        .await
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
    assert_eq!(
        in_flight
            .await
            .unwrap()
            .expect("in-flight request completed"),
        200
    );
    println!("drained and exited after {:?}", start.elapsed());
    drop(silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_writes_every_pending_access_log_line_before_exit() {
    let a = Backend::start("a");
    let config = format!(
        "{}\n[upstreams.u]\n[[upstreams.u.sources]]\nregistry = \"local\"\nservice = \"s\"\n[[routes]]\nupstream = \"u\"\n",
        static_registry(&[("s", &[(&a, 1)])])
    );
    let mut gw = Gateway::start(&config).await;
    gw.wait_ready().await;
    let ids: Vec<String> = (0..200).map(|i| format!("exit-{i}")).collect();
    let sends = ids.iter().map(|id| {
        gw.send(
            gw.client()
                .get(gw.url("/"))
                .header("x-request-id", id.as_str()),
        )
    });
    for reply in futures::future::join_all(sends).await {
        assert_eq!(reply.status, 200);
    }
    // At once: lines wait up to 20 ms for their batch, and the exit must not lose them.
    let status = tokio::task::spawn_blocking(move || (gw.terminate(), gw))
        .await
        .unwrap();
    let (status, gw) = status;
    assert!(status.success(), "exit status {status:?}");
    let log = gw.stdout();
    let logged: std::collections::HashSet<String> = log
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
            v["request_id"].as_str().unwrap_or_default().to_owned()
        })
        .collect();
    let missing: Vec<&String> = ids.iter().filter(|id| !logged.contains(*id)).collect();
    assert!(missing.is_empty(), "not logged: {missing:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_kept_alive_and_reused() {
    let a = Backend::start("a");
    let config = format!(
        "{}\n[upstreams.u]\n[[upstreams.u.sources]]\nregistry = \"local\"\nservice = \"s\"\n[[routes]]\nupstream = \"u\"\n",
        static_registry(&[("s", &[(&a, 1)])])
    );
    let gw = Gateway::start(&config).await;
    gw.wait_ready().await;

    // Sequential requests share one pooled connection.
    for _ in 0..100 {
        assert_eq!(gw.get("/").await.body, "a");
    }
    let after_sequential = a.connections();
    println!("100 sequential GETs: {after_sequential} upstream connection(s)");
    assert!(after_sequential <= 2, "{after_sequential} connections");

    // A large body streams through the connection that the response itself drives, and
    // the connection is reused afterwards.
    let big = gw.get("/bytes/3000000").await;
    assert_eq!((big.status, big.body.len()), (200, 3_000_000));
    assert_eq!(gw.get("/").await.body, "a");
    let posted = gw
        .send(
            gw.client()
                .post(gw.url("/upload"))
                .body(vec![b'y'; 300_000]),
        )
        .await;
    assert_eq!(posted.status, 200);
    assert_eq!(a.seen().last().unwrap().body.len(), 300_000);
    let after_bodies = a.connections();
    println!("+ a 3 MB response and a 300 kB upload: {after_bodies} connection(s)");
    assert_eq!(after_bodies, after_sequential);

    // An endpoint that closes its side: the next request takes a new connection, no error.
    for _ in 0..20 {
        assert_eq!(gw.get("/close").await.status, 200);
        assert_eq!(gw.get("/").await.status, 200);
    }
    println!("after 20 closes: {} connection(s)", a.connections());
    assert!(a.connections() >= after_bodies + 20);
}
