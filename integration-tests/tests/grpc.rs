//! gRPC through the real binary, with peers this project did not write: Python's grpcio
//! servers (`integration-tests/grpc/server.py`) behind a gateway whose upstream speaks
//! h2c, and grpcio clients (`client.py`) on one channel each.

use std::time::{Duration, Instant};

use switchyard_integration_tests::grpc::{client, spawn_client, GrpcServer};
use switchyard_integration_tests::Gateway;

/// A config routing `/test.Echo/` to upstream `echo` (h2c) over `servers` with `weights`.
fn config(servers: &[(&GrpcServer, u32)], extra_upstream: &str, extra_route: &str) -> String {
    let endpoints: Vec<String> = servers
        .iter()
        .map(|(s, w)| format!("{{ address = \"{}\", weight = {w} }}", s.address()))
        .collect();
    format!(
        r#"
[log]
access = true

[registries.local]
type = "static"
services.echo = [{}]

[upstreams.echo]
protocol = "h2c"
{extra_upstream}
[[upstreams.echo.sources]]
registry = "local"
service = "echo"

[[routes]]
name = "grpc"
path_prefix = "/test.Echo/"
upstream = "echo"
{extra_route}
"#,
        endpoints.join(", ")
    )
}

fn target(gateway: &Gateway) -> String {
    format!("127.0.0.1:{}", gateway.port)
}

#[tokio::test(flavor = "multi_thread")]
async fn unary_calls_on_one_channel_spread_by_weight_and_statuses_pass_through() {
    let (a, b, c) = (
        GrpcServer::start("a"),
        GrpcServer::start("b"),
        GrpcServer::start("c"),
    );
    let gateway = Gateway::start(&config(&[(&a, 1), (&b, 2), (&c, 3)], "", "")).await;
    let target = target(&gateway);

    // 3,000 calls on one channel (one HTTP/2 connection to the gateway).
    let started = Instant::now();
    let spread = tokio::task::spawn_blocking({
        let target = target.clone();
        move || client(&target, &["spread", "3000"])
    })
    .await
    .unwrap();
    println!("3,000 calls in {:?}: {spread}", started.elapsed());
    let total = 3000.0;
    for (name, weight) in [("a", 1.0), ("b", 2.0), ("c", 3.0)] {
        let got = spread["counts"][name].as_f64().unwrap_or(0.0);
        let expected = total * weight / 6.0;
        assert!(
            (got - expected).abs() <= expected * 0.05,
            "{name}: {got} calls, expected {expected} ± 5% ({spread})"
        );
    }

    // A status, its message and custom trailing metadata reach the client unchanged.
    let failed = client(&target, &["call", "test.Echo/Fail"]);
    assert_eq!(failed["code"], "NOT_FOUND", "{failed}");
    assert_eq!(failed["details"], "no such order");
    assert_eq!(failed["trailing"]["x-order-id"], "42");

    // A method no route serves: UNIMPLEMENTED from the gateway, not a transport error.
    let unknown = client(&target, &["call", "other.Service/Method"]);
    assert_eq!(unknown["code"], "UNIMPLEMENTED", "{unknown}");

    // A 50 ms deadline to a method that takes 3 s.
    let started = Instant::now();
    let slow = client(&target, &["call", "test.Echo/Slow", "0.05"]);
    assert_eq!(slow["code"], "DEADLINE_EXCEEDED", "{slow}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    // Counted by final status, and logged.
    let metrics = reqwest::get(gateway.admin_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "switchyard_grpc_responses_total{route=\"grpc\",code=\"0\"} 3000",
        "switchyard_grpc_responses_total{route=\"grpc\",code=\"5\"} 1",
        "switchyard_grpc_responses_total{route=\"\",code=\"12\"} 1",
    ] {
        assert!(metrics.contains(line), "no {line} in\n{metrics}");
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = gateway.stdout();
        if log
            .lines()
            .any(|l| l.contains("/test.Echo/Fail") && l.contains("\"grpc_status\":5"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "no grpc_status 5 line in\n{log}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn no_endpoint_is_unavailable() {
    // An endpoint nobody listens on: connect failure.
    let port = switchyard_integration_tests::free_port();
    let gateway = Gateway::start(&format!(
        r#"
[registries.local]
type = "static"
services.echo = ["127.0.0.1:{port}"]
services.none = []

[upstreams.echo]
protocol = "h2c"
[[upstreams.echo.sources]]
registry = "local"
service = "echo"

[upstreams.none]
protocol = "h2c"
[[upstreams.none.sources]]
registry = "local"
service = "none"

[[routes]]
path_prefix = "/test.Echo/"
upstream = "echo"

[[routes]]
path_prefix = "/empty.Service/"
upstream = "none"
"#
    ))
    .await;
    let target = target(&gateway);
    let refused = client(&target, &["call", "test.Echo/Unary"]);
    assert_eq!(refused["code"], "UNAVAILABLE", "{refused}");
    let empty = client(&target, &["call", "empty.Service/Unary"]);
    assert_eq!(empty["code"], "UNAVAILABLE", "{empty}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bidirectional_stream_of_ten_thousand_messages_arrives_in_order() {
    let server = GrpcServer::start("a");
    let gateway = Gateway::start(&config(&[(&server, 1)], "", "")).await;
    let target = target(&gateway);
    let started = Instant::now();
    let result = tokio::task::spawn_blocking(move || client(&target, &["bidi", "10000"]))
        .await
        .unwrap();
    println!("10,000 messages each way in {:?}", started.elapsed());
    assert_eq!(result["received"], 10000, "{result}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_stops_reading_holds_bounded_gateway_memory() {
    // The server streams 64 KiB messages as fast as it may; the client reads one and
    // stops. Flow control must stop the server: the gateway holds at most its windows
    // (1 MiB a stream, 4 MiB a connection upstream; hyper's toward the client).
    const BOUND_KIB: u64 = 32 * 1024;
    let server = GrpcServer::start("a");
    let gateway = Gateway::start(&config(&[(&server, 1)], "", "")).await;
    let before = gateway.rss_kib();
    let mut flood = spawn_client(&target(&gateway), &["flood", "8"]);
    let mut peak = before;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(6) {
        peak = peak.max(gateway.rss_kib());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = flood.wait();
    println!(
        "gateway RSS {before} KiB before, peak {peak} KiB while the client did not read (bound +{BOUND_KIB} KiB)"
    );
    assert!(
        peak.saturating_sub(before) < BOUND_KIB,
        "gateway grew by {} KiB",
        peak - before
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn graceful_goaway_and_a_killed_instance_cost_no_call_of_a_retrying_client() {
    let (mut a, mut b, c) = (
        GrpcServer::start("a"),
        GrpcServer::start("b"),
        GrpcServer::start("c"),
    );
    let gateway = Gateway::start(&config(
        &[(&a, 1), (&b, 1), (&c, 1)],
        "[upstreams.echo.outlier]\nconsecutive_failures = 1\nbase_ejection = \"30s\"\n",
        "",
    ))
    .await;
    let target = target(&gateway);
    let calls = tokio::task::spawn_blocking(move || client(&target, &["retrying", "600"]));
    tokio::time::sleep(Duration::from_secs(2)).await;
    // a leaves gracefully (GOAWAY, calls in flight finish), b dies.
    a.terminate();
    tokio::time::sleep(Duration::from_secs(1)).await;
    b.kill();
    let result = calls.await.unwrap();
    println!("{result}");
    assert_eq!(result["failed"], 0, "{result}");
    assert!(result["counts"]["c"].as_u64().unwrap() > 0, "{result}");
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_on_unavailable_sends_the_call_to_another_instance() {
    let (bad, good) = (GrpcServer::start("bad"), GrpcServer::start("good"));
    // Without retry_on, the bad instance's UNAVAILABLE reaches the client...
    let plain = Gateway::start(&config(&[(&bad, 1), (&good, 1)], "", "")).await;
    let plain_target = target(&plain);
    let codes = tokio::task::spawn_blocking(move || {
        client(&plain_target, &["codes", "test.Echo/Flaky", "20"])
    })
    .await
    .unwrap();
    assert_eq!(codes["codes"]["UNAVAILABLE"], 10, "{codes}");
    // ...with it, the gateway sends those calls to the other instance.
    let retrying = Gateway::start(&config(
        &[(&bad, 1), (&good, 1)],
        "",
        "retry_on = [\"unavailable\", \"connect_failure\"]\nretries = 1\n",
    ))
    .await;
    let target = target(&retrying);
    let codes =
        tokio::task::spawn_blocking(move || client(&target, &["codes", "test.Echo/Flaky", "20"]))
            .await
            .unwrap();
    assert_eq!(codes["codes"], serde_json::json!({"OK": 20}), "{codes}");
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_on_retries_a_client_stream_that_ends_within_the_buffer_and_not_a_slow_one() {
    // docs/grpc.md, `retry_on`: a client-streaming call whose messages all arrive within
    // 100 ms and 64 KiB is kept and retried; one still sending after 100 ms is not.
    let (bad, good) = (GrpcServer::start("bad"), GrpcServer::start("good"));
    let gateway = Gateway::start(&config(
        &[(&bad, 1), (&good, 1)],
        "",
        "retry_on = [\"unavailable\"]\nretries = 1\n",
    ))
    .await;
    let collect = |args: [&'static str; 3]| {
        let target = target(&gateway);
        tokio::task::spawn_blocking(move || {
            client(&target, &["collect", args[0], args[1], args[2]])
        })
    };
    // Three messages at once: every call answered by `good`, with all three messages.
    let fast = collect(["10", "3", "0"]).await.unwrap();
    assert_eq!(fast["codes"], serde_json::json!({"OK": 10}), "{fast}");
    for (i, reply) in fast["replies"].as_array().unwrap().iter().enumerate() {
        assert_eq!(reply, &format!("good:3:{i}.0,{i}.1,{i}.2"), "{fast}");
    }
    // Three messages 300 ms apart: streamed, not kept, so the calls that meet `bad` fail.
    let slow = collect(["6", "3", "0.3"]).await.unwrap();
    println!("{slow}");
    assert!(
        slow["codes"]["UNAVAILABLE"].as_u64().unwrap_or(0) >= 1
            && slow["codes"]["OK"].as_u64().unwrap_or(0) >= 1,
        "{slow}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_web_from_a_plain_http1_client_text_and_binary_statuses_counted() {
    use base64::Engine as _;
    let server = GrpcServer::start("web-a");
    let gateway = Gateway::start(&config(&[(&server, 1)], "", "grpc_web = true\n")).await;
    // One message frame: uncompressed, 5 bytes, "hello"; base64 as grpc-web-text sends it.
    let body = base64::engine::general_purpose::STANDARD.encode(b"\x00\x00\x00\x00\x05hello");
    let http1 = reqwest::Client::builder().http1_only().build().unwrap();
    let response = http1
        .post(gateway.url("/test.Echo/Unary"))
        .header("content-type", "application/grpc-web-text")
        .header("x-grpc-web", "1")
        .header("accept", "application/grpc-web-text")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), reqwest::Version::HTTP_11);
    assert_eq!(
        response.headers()["content-type"],
        "application/grpc-web-text+proto"
    );
    let text = response.text().await.unwrap();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .unwrap_or_else(|e| panic!("{text:?}: {e}"));
    // The answer's message frame, then the trailers frame (flag 0x80).
    let reply = b"web-a:hello";
    assert_eq!(raw[0], 0);
    assert_eq!(
        u32::from_be_bytes(raw[1..5].try_into().unwrap()) as usize,
        reply.len()
    );
    assert_eq!(&raw[5..5 + reply.len()], reply);
    let trailers = &raw[5 + reply.len()..];
    assert_eq!(trailers[0], 0x80, "{raw:?}");
    let block = String::from_utf8_lossy(&trailers[5..]);
    assert!(block.contains("grpc-status:0\r\n"), "{block}");

    // A status after data (binary mode): DATA_LOSS in the trailers frame of the body.
    let response = http1
        .post(gateway.url("/test.Echo/Partial"))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .body(&b"\x00\x00\x00\x00\x01x"[..])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        !response.headers().contains_key("grpc-status"),
        "the status must come in the body's trailers frame, not trailers-only: {:?}",
        response.headers()
    );
    let raw = response.bytes().await.unwrap();
    let text = String::from_utf8_lossy(&raw);
    assert!(text.contains("web-a:partial"), "{text:?}");
    assert!(text.contains("grpc-status:15\r\n"), "{text:?}");

    // Both counted and logged with the trailers' codes, not UNKNOWN (2).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let metrics = reqwest::get(gateway.admin_url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let log = gateway.stdout();
        let logged = |path: &str, code: u16| {
            log.lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .any(|l| l["path"] == path && l["grpc_status"] == code)
        };
        let counted = [
            "switchyard_grpc_responses_total{route=\"grpc\",code=\"0\"} 1",
            "switchyard_grpc_responses_total{route=\"grpc\",code=\"15\"} 1",
        ]
        .iter()
        .all(|line| metrics.contains(line));
        if counted && logged("/test.Echo/Unary", 0) && logged("/test.Echo/Partial", 15) {
            assert!(!metrics.contains("code=\"2\""), "{metrics}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "grpc-web statuses not counted/logged with their codes:\n{metrics}\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_http2_client_reaches_an_http1_upstream() {
    // Protocol translation the other way: HTTP/2 (prior knowledge) in, HTTP/1.1 out.
    let backend = switchyard_integration_tests::Backend::start("h1");
    let gateway = Gateway::start(&format!(
        r#"
[registries.local]
type = "static"
services.web = ["{}"]

[upstreams.web]
[[upstreams.web.sources]]
registry = "local"
service = "web"

[[routes]]
path_prefix = "/"
upstream = "web"
"#,
        backend.address()
    ))
    .await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let response = h2
        .post(gateway.url("/orders?x=1"))
        .body("payload")
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "h1");
    let seen = backend.seen();
    let last = seen.last().expect("the backend saw the request");
    assert_eq!(last.method, "POST");
    assert_eq!(last.path, "/orders?x=1");
    assert_eq!(last.body, b"payload");
    // The client's :authority became the HTTP/1.1 Host.
    assert_eq!(
        last.header("host"),
        [format!("127.0.0.1:{}", gateway.port).as_str()]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn route_policies_answer_grpc_calls_in_grpc_terms() {
    let server = GrpcServer::start("a");
    let base = config(&[(&server, 1)], "", "");
    // Route `grpc` needs an API key; route `limited` allows one call a minute.
    let gateway = Gateway::start(&format!(
        r#"{base}auth = ["key"]

[consumers.alice]
keys = ["alice-key"]

[[routes]]
name = "limited"
path_prefix = "/limited.Echo/"
upstream = "echo"
rate_limit = {{ rate = 1, per = "1m", burst = 1, key = "client_ip" }}
"#
    ))
    .await;
    let target = target(&gateway);
    let unauthenticated = client(&target, &["call", "test.Echo/Unary"]);
    assert_eq!(
        unauthenticated["code"], "UNAUTHENTICATED",
        "{unauthenticated}"
    );
    let codes =
        tokio::task::spawn_blocking(move || client(&target, &["codes", "limited.Echo/Unary", "3"]))
            .await
            .unwrap();
    // The first call reaches the server (which has no such service: UNIMPLEMENTED from
    // grpcio itself); the next two are rate limited.
    assert_eq!(codes["codes"]["RESOURCE_EXHAUSTED"], 2, "{codes}");
    assert_eq!(codes["codes"]["UNIMPLEMENTED"], 1, "{codes}");
}

#[tokio::test(flavor = "multi_thread")]
async fn protocol_h2_speaks_tls_with_alpn_h2_to_the_instance() {
    // A certificate for orders.test, made by openssl; grpcio serves it with ALPN h2.
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=orders.test"])
        .args(["-addext", "subjectAltName=DNS:orders.test"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl is needed (apt-get install openssl)");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let server = GrpcServer::start_tls("tls-a", &cert, &key);
    let gateway = Gateway::start(&format!(
        r#"
[registries.local]
type = "static"
services.echo = ["{}"]

[upstreams.echo]
protocol = "h2"
[upstreams.echo.tls]
ca_file = "{}"
server_name = "orders.test"
[[upstreams.echo.sources]]
registry = "local"
service = "echo"

[[routes]]
path_prefix = "/test.Echo/"
upstream = "echo"
"#,
        server.address(),
        cert.display()
    ))
    .await;
    let target = target(&gateway);
    let reply = tokio::task::spawn_blocking(move || client(&target, &["call", "test.Echo/Unary"]))
        .await
        .unwrap();
    assert_eq!(reply["code"], "OK", "{reply}");
    assert_eq!(reply["reply"], "tls-a:hello");
    let upstreams = gateway.admin_json("/api/upstreams").await;
    assert_eq!(
        upstreams[0]["endpoints"][0]["protocol"], "h2",
        "{upstreams}"
    );
}
