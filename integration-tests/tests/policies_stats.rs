//! Usage analytics through the real binary: `/api/stats?window=...` per route and per
//! consumer matches what the test sent (requests, status classes, bytes in and out,
//! latency percentiles against a backend that takes 50 ms), the same numbers in
//! `/metrics` with bounded labels, and nothing recorded for a route without policies.

use std::time::Duration;

use serde_json::Value;
use switchyard_integration_tests::{Backend, Gateway};

fn find<'a>(list: &'a Value, key: &str, name: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|v| v[key] == name)
        .unwrap_or_else(|| panic!("no {key} {name} in {list}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_match_what_was_sent() {
    let backend = Backend::start("api");
    let slow = Backend::start("slow");
    slow.set_delay(Duration::from_millis(50));
    let gw = Gateway::start(&format!(
        r#"
[registries.local]
type = "static"
services.api = ["{}"]
services.slow = ["{}"]

[upstreams.api]
[[upstreams.api.sources]]
registry = "local"
service = "api"
[upstreams.slow]
[[upstreams.slow.sources]]
registry = "local"
service = "slow"

[consumers.alice]
keys = ["alice-key"]
[consumers.bob]
keys = ["bob-key"]

[[routes]]
name = "orders"
path_prefix = "/orders"
upstream = "api"
auth = ["key"]

[[routes]]
name = "slow"
path_prefix = "/slow"
upstream = "slow"
analytics = true

[[routes]]
name = "plain"
path_prefix = "/"
upstream = "api"
"#,
        backend.address(),
        slow.address()
    ))
    .await;

    let mut bytes_out = 0;
    let mut send = |reply: switchyard_integration_tests::gateway::Reply, status: u16| {
        assert_eq!(reply.status, status, "{reply:?}");
        bytes_out += reply.body.len();
    };
    for _ in 0..5 {
        send(
            gw.send(
                gw.client()
                    .get(gw.url("/orders/1"))
                    .header("apikey", "alice-key"),
            )
            .await,
            200,
        );
    }
    send(
        gw.send(
            gw.client()
                .post(gw.url("/orders"))
                .header("apikey", "alice-key")
                .body(vec![b'x'; 100]),
        )
        .await,
        200,
    );
    for _ in 0..3 {
        send(gw.get("/orders/1?apikey=bob-key").await, 200);
    }
    for _ in 0..2 {
        send(gw.get("/orders/1").await, 401);
    }
    backend.set_status(503);
    send(
        gw.send(
            gw.client()
                .get(gw.url("/orders/1"))
                .header("apikey", "alice-key"),
        )
        .await,
        503,
    );
    backend.set_status(200);
    for _ in 0..10 {
        gw.get("/slow").await;
    }
    for _ in 0..4 {
        gw.get("/plain").await;
    }

    // Bodies are counted when they end: give the last one a moment.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stats = gw.admin_json("/api/stats?window=5m").await;
    println!("{stats:#}");
    assert_eq!(stats["window_seconds"], 300);
    let orders = find(&stats["routes"], "route", "orders");
    assert_eq!(orders["requests"], 12);
    assert_eq!(orders["status"]["2xx"], 9);
    assert_eq!(orders["status"]["4xx"], 2);
    assert_eq!(orders["status"]["5xx"], 1);
    assert_eq!(orders["bytes_in"], 100);
    assert_eq!(orders["bytes_out"], bytes_out as u64);
    let alice = find(&orders["consumers"], "consumer", "alice");
    assert_eq!(
        (alice["requests"].as_u64(), alice["status"]["5xx"].as_u64()),
        (Some(7), Some(1))
    );
    let bob = find(&stats["consumers"], "consumer", "bob");
    assert_eq!(bob["requests"], 3);
    assert_eq!(bob["bytes_out"], 9, "three bodies of \"api\"");

    let slow_route = find(&stats["routes"], "route", "slow");
    assert_eq!(slow_route["requests"], 10);
    let p50 = slow_route["latency_ms"]["p50"].as_f64().unwrap();
    let p99 = slow_route["latency_ms"]["p99"].as_f64().unwrap();
    println!("slow route: p50 {p50} ms, p99 {p99} ms");
    assert!((40.0..=150.0).contains(&p50), "50 ms backend, p50 {p50}");
    assert!(p99 >= p50);
    assert!(
        stats["routes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["route"] != "plain"),
        "a route without policies has no filter and no usage record"
    );

    let short = gw.admin_json("/api/stats?window=30s").await;
    assert_eq!(find(&short["routes"], "route", "orders")["requests"], 12);
    let bad = gw
        .send(gw.client().get(gw.admin_url("/api/stats?window=3h")))
        .await;
    assert_eq!(bad.status, 400, "{bad:?}");

    let metrics = gw
        .send(gw.client().get(gw.admin_url("/metrics")))
        .await
        .body;
    for line in [
        "switchyard_usage_requests_total{route=\"orders\",consumer=\"alice\",class=\"2xx\"} 6",
        "switchyard_usage_requests_total{route=\"orders\",consumer=\"alice\",class=\"5xx\"} 1",
        "switchyard_usage_requests_total{route=\"orders\",consumer=\"bob\",class=\"2xx\"} 3",
        "switchyard_usage_requests_total{route=\"orders\",consumer=\"\",class=\"4xx\"} 2",
        "switchyard_usage_request_bytes_total{route=\"orders\",consumer=\"alice\"} 100",
        "switchyard_usage_duration_seconds_count{route=\"slow\",consumer=\"\"} 10",
        "switchyard_auth_total{route=\"orders\",result=\"unauthorized\"} 2",
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }
    assert!(!metrics.contains("switchyard_usage_requests_total{route=\"plain\""));
    let dashboard = gw.send(gw.client().get(gw.admin_url("/"))).await.body;
    assert!(
        dashboard.contains("/api/stats?window=5m"),
        "the dashboard shows usage"
    );
}
