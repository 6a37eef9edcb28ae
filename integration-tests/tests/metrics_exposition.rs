//! `/metrics` as Prometheus reads it: `promtool check metrics` (Debian package
//! `prometheus`, installed by scripts/install-deps.sh) accepts the exposition of a gateway
//! that served traffic through every family's writer (routes, policies with usage
//! analytics, upstreams, registries, tracing), and the metric names users depend on are
//! there.

use std::io::Write;
use std::process::{Command, Stdio};

use switchyard_integration_tests::{Backend, Gateway};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_accepts_the_metrics() {
    let backend = Backend::start("b");
    let config = format!(
        r#"[registries.local]
type = "static"
services.orders = ["{}"]

[upstreams.orders]
[[upstreams.orders.sources]]
registry = "local"
service = "orders"

[[routes]]
name = "orders"
path_prefix = "/orders"
upstream = "orders"
analytics = true

[[routes]]
name = "plain"
path_prefix = "/"
upstream = "orders"

[tracing]
otlp_endpoint = "http://127.0.0.1:9"
sampler = "always_on"
"#,
        backend.address()
    );
    let gw = Gateway::start(&config).await;
    for path in ["/orders/1", "/x", "/orders/2"] {
        assert_eq!(gw.get(path).await.status, 200);
    }
    let text = gw
        .client()
        .get(gw.admin_url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body");
    for name in [
        "switchyard_requests_total{",
        "switchyard_request_duration_seconds_bucket{",
        "switchyard_upstream_endpoints{",
        "switchyard_registry_updates_total{",
        "switchyard_registry_errors_total{",
        "switchyard_registry_up{",
        "switchyard_registry_last_update_timestamp_seconds{",
        "switchyard_tracing_spans_dropped_total ",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics:\n{text}");
    }
    let mut promtool = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => panic!(
            "promtool not found ({e}): run scripts/install-deps.sh (apt-get install prometheus)"
        ),
    };
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
