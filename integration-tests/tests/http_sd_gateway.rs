//! The real `switchyard` binary routing to targets listed by an inventory server speaking
//! Prometheus HTTP SD (`type = "http"`): targets added, re-weighted, removed and malformed;
//! `200 []` as an authoritative empty list; `ETag`/`If-None-Match` answered with `304`
//! keeping the set; a 500, a body that is not a list, a wrong content type and a stopped
//! server each keeping the last good set (stale, registry down) until a good answer
//! resyncs; the poller's retries bounded while the server fails; bearer and basic
//! credentials; an HTTPS server trusted through `ca` only; and the README's Python example
//! inventory server itself. Plus a benchmark
//! (ignored by default) printing the change-to-routed propagation latency.
//!
//! Needs `cargo build -p switchyard`, python3 (the README example, the HTTPS server) and openssl.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use switchyard_integration_tests::inventory::Inventory;
use switchyard_integration_tests::{eventually, free_port, Backend, Gateway};

/// Gateway config with an `http` registry `inventory` (extra keys in `extra`) and one
/// upstream `echo` (service `echo`) at `/`.
fn config(url: &str, extra: &str) -> String {
    format!(
        r#"[log]
access = false
level = "info"

[registries.inventory]
type = "http"
url = "{url}"
{extra}

[upstreams.echo]
[[upstreams.echo.sources]]
registry = "inventory"
service = "echo"

[[routes]]
name = "echo"
path_prefix = "/"
upstream = "echo"
"#
    )
}

/// A file_sd group of `backends` for service `echo` with `labels` (JSON members) added.
fn group(backends: &[&Backend], labels: &str) -> String {
    let targets: Vec<String> = backends
        .iter()
        .map(|b| format!("\"{}\"", b.address()))
        .collect();
    let sep = if labels.is_empty() { "" } else { "," };
    format!(
        r#"{{"targets":[{}],"labels":{{"__service__":"echo"{sep}{labels}}}}}"#,
        targets.join(",")
    )
}

fn list(groups: &[String]) -> String {
    format!("[{}]", groups.join(","))
}

/// The weight of `backend`'s endpoint in `/api/upstreams`, if listed.
async fn weight_of(gateway: &Gateway, backend: &Backend) -> Option<u64> {
    let upstreams = gateway.admin_json("/api/upstreams").await;
    let address = backend.address().to_string();
    upstreams[0]["endpoints"]
        .as_array()?
        .iter()
        .find(|e| e["address"] == address.as_str())
        .and_then(|e| e["weight"].as_u64())
}

/// Waits until the registry is down and the endpoint stale, with `what` in the error.
async fn wait_stale(gateway: &Gateway, what: &str) {
    eventually(
        &format!("{what}: registry down, endpoint stale"),
        Duration::from_secs(20),
        || async {
            let registries = gateway.admin_json("/api/registries").await;
            let upstreams = gateway.admin_json("/api/upstreams").await;
            registries[0]["state"] == "down"
                && upstreams[0]["endpoints"][0]["stale"] == true
                && registries[0]["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains(what))
        },
    )
    .await;
}

#[tokio::test]
async fn targets_listed_by_the_inventory_are_routed_reweighted_and_dropped() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let inventory = Inventory::start(&list(&[group(&[&a], "")]));
    let gateway = Gateway::start(&config(&inventory.url(), "refresh_interval = \"200ms\"")).await;
    eventually("first sync: a routed", Duration::from_secs(20), || {
        gateway.all_reach("/", &["a"])
    })
    .await;
    let registries = gateway.admin_json("/api/registries").await;
    assert_eq!(registries[0]["type"], "http", "{registries}");

    inventory.set(&list(&[group(&[&a, &b], "")]));
    eventually("b added", Duration::from_secs(10), || async {
        let counts = gateway.spread("/", 40).await;
        counts.contains_key("a") && counts.contains_key("b")
    })
    .await;

    inventory.set(&list(&[
        group(&[&a], ""),
        group(&[&b], r#""__weight__":"3","zone":"z1""#),
    ]));
    eventually("b re-weighted to 3", Duration::from_secs(10), || async {
        weight_of(&gateway, &b).await == Some(3)
    })
    .await;
    let counts = gateway.spread("/", 80).await;
    println!("weights 1:3 -> {counts:?}");
    assert!(counts.get("b") > counts.get("a"), "{counts:?}");

    // Malformed entries: skipped and counted, the others stay.
    let errors_before = gateway.registry_errors("inventory").await;
    inventory.set(&format!(
        r#"[{},{},{{"targets":["127.0.0.1:1"]}},{{"targets":["nope", 7],"labels":{{"__service__":"echo"}}}}]"#,
        group(&[&a], r#""__weight__":"2""#),
        group(&[&b], r#""__weight__":"3""#),
    ));
    eventually("a re-weighted to 2", Duration::from_secs(10), || async {
        weight_of(&gateway, &a).await == Some(2)
    })
    .await;
    let errors = gateway.registry_errors("inventory").await;
    println!("registry_errors_total: {errors_before} -> {errors}");
    assert!(
        errors >= errors_before + 3.0,
        "three malformed, {errors_before} -> {errors}"
    );
    let upstreams = gateway.admin_json("/api/upstreams").await;
    assert_eq!(
        upstreams[0]["endpoints"].as_array().map(Vec::len),
        Some(2),
        "{upstreams}"
    );

    inventory.set(&list(&[group(&[&b], "")]));
    eventually("a removed", Duration::from_secs(10), || {
        gateway.all_reach("/", &["b"])
    })
    .await;

    // `200 []`: no targets, authoritatively; the registry is fine.
    inventory.set("[]");
    eventually("empty list: 503", Duration::from_secs(10), || async {
        gateway.get("/").await.status == 503
    })
    .await;
    let registries = gateway.admin_json("/api/registries").await;
    assert_eq!(registries[0]["state"], "ok", "{registries}");
}

#[tokio::test]
async fn etags_are_sent_back_and_304_keeps_the_set() {
    let a = Backend::start("a");
    let inventory = Inventory::start(&list(&[group(&[&a], "")]));
    let gateway = Gateway::start(&config(&inventory.url(), "refresh_interval = \"200ms\"")).await;
    eventually("a routed", Duration::from_secs(20), || {
        gateway.all_reach("/", &["a"])
    })
    .await;
    eventually("five 304 answers", Duration::from_secs(20), || async {
        inventory.not_modified() >= 5
    })
    .await;
    let upstreams = gateway.admin_json("/api/upstreams").await;
    assert_eq!(upstreams[0]["endpoints"][0]["stale"], false, "{upstreams}");
    assert_eq!(
        upstreams[0]["endpoints"].as_array().map(Vec::len),
        Some(1),
        "{upstreams}"
    );
    assert!(gateway.all_reach("/", &["a"]).await);
    let registries = gateway.admin_json("/api/registries").await;
    assert_eq!(registries[0]["state"], "ok", "{registries}");
}

#[tokio::test]
async fn failures_keep_the_last_good_set_stale_until_a_good_answer_resyncs() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let mut inventory = Inventory::start(&list(&[group(&[&a], "")]));
    let gateway = Gateway::start(&config(&inventory.url(), "refresh_interval = \"200ms\"")).await;
    eventually("a routed", Duration::from_secs(20), || {
        gateway.all_reach("/", &["a"])
    })
    .await;

    for (status, content_type, body, what) in [
        (500, "application/json", "[]", "500"),
        (
            200,
            "application/json",
            "{\"not\":\"a list\"}",
            "not a file_sd JSON array",
        ),
        (200, "text/plain", "[]", "Content-Type"),
    ] {
        inventory.answer(status, content_type, body);
        wait_stale(&gateway, what).await;
        let counts = gateway.spread("/", 30).await;
        assert_eq!(
            counts.get("a"),
            Some(&30),
            "{what}: last set not served: {counts:?}"
        );
    }
    inventory.stop();
    wait_stale(&gateway, "GET").await;
    assert!(gateway.all_reach("/", &["a"]).await);

    // Back with a new list: read in full, fresh again.
    inventory.restart();
    inventory.set(&list(&[group(&[&b], "")]));
    eventually(
        "inventory back: only b, registry ok",
        Duration::from_secs(30),
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
async fn a_failing_inventory_is_retried_with_a_bounded_backoff() {
    let a = Backend::start("a");
    let inventory = Inventory::start("[]");
    inventory.answer(503, "text/plain", "maintenance");
    // A long refresh interval: only the failure retries (1 s, 2 s, 4 s, ...) ask again.
    let gateway = Gateway::start(&config(&inventory.url(), "refresh_interval = \"60s\"")).await;
    let start = Instant::now();
    eventually("first failed fetch", Duration::from_secs(10), || async {
        inventory.requests() >= 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(7_500).saturating_sub(start.elapsed())).await;
    let requests = inventory.requests();
    println!("requests in 7.5 s of failures: {requests} (retries at 1, 2, 4 s: expect 4)");
    assert!((3..=5).contains(&requests), "{requests} requests in 7.5 s");
    let registries = gateway.admin_json("/api/registries").await;
    assert!(
        registries[0]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("503")),
        "{registries}"
    );

    inventory.set(&list(&[group(&[&a], "")]));
    eventually(
        "next retry picks up the list",
        Duration::from_secs(30),
        || gateway.all_reach("/", &["a"]),
    )
    .await;
}

#[tokio::test]
async fn bearer_and_basic_credentials_are_sent_and_refusals_reported() {
    let a = Backend::start("a");
    let inventory = Inventory::start(&list(&[group(&[&a], "")]));
    inventory.require_authorization("Bearer s3cret");
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s3cret\n").unwrap();
    let bearer = Gateway::start(&config(
        &inventory.url(),
        &format!(
            "refresh_interval = \"200ms\"\nbearer_token_file = \"{}\"",
            token_file.display()
        ),
    ))
    .await;
    eventually(
        "a routed with a bearer token",
        Duration::from_secs(20),
        || bearer.all_reach("/", &["a"]),
    )
    .await;

    let wrong = Gateway::start(&config(&inventory.url(), "bearer_token = \"nope\"")).await;
    eventually("401 reported", Duration::from_secs(20), || async {
        let registries = wrong.admin_json("/api/registries").await;
        registries[0]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("401"))
    })
    .await;
    assert_eq!(wrong.get("/").await.status, 503);
    drop(bearer);
    drop(wrong);

    // Basic credentials: "u:p" is dTpw in base64.
    inventory.require_authorization("Basic dTpw");
    let basic = Gateway::start(&config(
        &inventory.url(),
        "refresh_interval = \"200ms\"\nbasic_auth = { username = \"u\", password = \"p\" }",
    ))
    .await;
    eventually(
        "a routed with basic credentials",
        Duration::from_secs(20),
        || basic.all_reach("/", &["a"]),
    )
    .await;
    assert_eq!(
        inventory.last_authorization().as_deref(),
        Some("Basic dTpw")
    );
}

#[tokio::test]
async fn the_readme_example_inventory_server_is_routed_to() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../registries/http/examples/inventory.py");
    let dir = tempfile::tempdir().unwrap();
    let targets = dir.path().join("inventory.json");
    std::fs::write(
        &targets,
        format!(r#"{{"echo": ["{}", "{}"]}}"#, a.address(), b.address()),
    )
    .unwrap();
    let port = free_port();
    let log = dir.path().join("inventory.log");
    let mut server = Command::new("python3")
        .arg(&script)
        .arg(port.to_string())
        .arg(&targets)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("python3 (apt-get install python3) runs the example inventory server");
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the example inventory server did not listen on {port}: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let gateway = Gateway::start(&config(
        &format!("http://127.0.0.1:{port}/targets"),
        "refresh_interval = \"200ms\"",
    ))
    .await;
    eventually("a and b routed", Duration::from_secs(30), || async {
        let counts = gateway.spread("/", 40).await;
        counts.contains_key("a") && counts.contains_key("b")
    })
    .await;
    std::fs::write(&targets, format!(r#"{{"echo": ["{}"]}}"#, b.address())).unwrap();
    eventually("a gone from the inventory", Duration::from_secs(10), || {
        gateway.all_reach("/", &["b"])
    })
    .await;
    let _ = server.kill();
    let _ = server.wait();
}

/// A Python HTTPS server (standard library `ssl`) answering `body` as HTTP SD JSON with the
/// certificate `cert` and key `key`.
const HTTPS_INVENTORY: &str = r#"
import http.server, ssl, sys
port, cert, key, body = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4].encode()
class Targets(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Targets)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server.socket = context.wrap_socket(server.socket, server_side=True)
server.serve_forever()
"#;

#[tokio::test]
async fn an_https_inventory_is_trusted_through_the_configured_ca_only() {
    let a = Backend::start("a");
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let openssl = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=inventory"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .args(["-addext", "extendedKeyUsage=serverAuth"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl is needed for this test (apt-get install openssl)");
    assert!(
        openssl.status.success(),
        "{}",
        String::from_utf8_lossy(&openssl.stderr)
    );
    let port = free_port();
    let log = dir.path().join("https.log");
    let mut server = Command::new("python3")
        .args(["-c", HTTPS_INVENTORY, &port.to_string()])
        .arg(&cert)
        .arg(&key)
        .arg(list(&[group(&[&a], "")]))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("python3 runs the HTTPS inventory server");
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the HTTPS inventory server did not listen: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let url = format!("https://127.0.0.1:{port}/targets");
    let trusted = Gateway::start(&config(
        &url,
        &format!("refresh_interval = \"200ms\"\nca = \"{}\"", cert.display()),
    ))
    .await;
    eventually(
        "a routed over https with the CA",
        Duration::from_secs(20),
        || trusted.all_reach("/", &["a"]),
    )
    .await;
    let untrusted = Gateway::start(&config(&url, "refresh_interval = \"200ms\"")).await;
    eventually(
        "unknown issuer reported",
        Duration::from_secs(20),
        || async {
            let registries = untrusted.admin_json("/api/registries").await;
            registries[0]["state"] == "down" && registries[0]["last_error"].is_string()
        },
    )
    .await;
    let registries = untrusted.admin_json("/api/registries").await;
    println!("without the CA: {}", registries[0]["last_error"]);
    assert_eq!(untrusted.get("/").await.status, 503);
    let _ = server.kill();
    let _ = server.wait();
}

/// Propagation latency: from the inventory's list changing to the first request routed to
/// the target it added, over 30 changes, with `refresh_interval = "1s"` (so about half a
/// second on average is the poll's own wait). A benchmark, not a test: it prints p50/p99
/// and asserts nothing about time. Run with
/// `cargo nextest run -p switchyard-integration-tests --test http_sd_gateway --run-ignored only --no-capture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: prints the change-to-routed latency"]
async fn propagation_latency_benchmark() {
    let backends = [Backend::start("a"), Backend::start("b")];
    let inventory = Inventory::start(&list(&[group(&[&backends[0]], "")]));
    let gateway = Gateway::start(&config(&inventory.url(), "refresh_interval = \"1s\"")).await;
    eventually("a routed", Duration::from_secs(20), || {
        gateway.all_reach("/", &["a"])
    })
    .await;
    let changes = 30;
    let mut latencies = Vec::with_capacity(changes);
    for i in 1..=changes {
        let target = &backends[i % 2];
        // A change lands at a random point of the poll cycle, as real ones do (right after
        // a routed request, it would always wait one full interval).
        tokio::time::sleep(Duration::from_millis(fastrand::u64(0..1_000))).await;
        inventory.set(&list(&[group(&[target], "")]));
        let changed = Instant::now();
        latencies.push(gateway.time_until_routed(target.name(), changed).await);
    }
    latencies.sort();
    let pick = |q: f64| switchyard_integration_tests::percentile(&latencies, q);
    println!(
        "http_sd list changed -> first request routed to the new target, {changes} changes, refresh 1s: p50 {:?}, p99 {:?}, max {:?}",
        pick(0.50),
        pick(0.99),
        latencies[latencies.len() - 1]
    );
}
