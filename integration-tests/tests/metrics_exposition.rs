//! `/metrics` as Prometheus reads it: `promtool check metrics` (Debian package
//! `prometheus`, installed by scripts/install-deps.sh) accepts the Prometheus text
//! exposition of a gateway that served traffic through every family's writer (routes,
//! policies with usage analytics, upstreams, registries, tracing), and the metric names
//! users depend on are there. The OpenMetrics exposition (`Accept:
//! application/openmetrics-text`) passes the strict parser of the official Prometheus
//! Python client (`integration-tests/openmetrics/check.py`, in `target/metrics-venv`), and
//! carries the trace id of a sampled request as an exemplar of its duration bucket.

use std::io::Write;
use std::path::{Path, PathBuf};
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
    promtool_check(&text);

    let (content_type, open) = openmetrics(&gw).await;
    assert_eq!(
        content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(open.ends_with("\n# EOF\n"), "{open}");
    let parsed = openmetrics_check(&open);
    for family in [
        "family switchyard_requests counter",
        "family switchyard_request_duration_seconds histogram",
        "family switchyard_usage_duration_seconds histogram",
        "family switchyard_upstream_apply_seconds histogram",
        "family switchyard_registry_up gauge",
        "family switchyard_tracing_spans_dropped counter",
    ] {
        assert!(parsed.contains(family), "{family} not in:\n{parsed}");
    }
}

/// The OpenMetrics page: its content type and text.
async fn openmetrics(gw: &Gateway) -> (String, String) {
    let response = gw
        .client()
        .get(gw.admin_url("/metrics"))
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )
        .send()
        .await
        .expect("metrics");
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    (content_type, response.text().await.expect("body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampled_requests_are_exemplars_in_openmetrics_only() {
    let backend = Backend::start("b");
    let base = format!(
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
"#,
        backend.address()
    );
    // Tracing on, every request sampled; the collector is unreachable (spans are dropped,
    // their ids exist).
    let gw = Gateway::start(&format!(
        "{base}\n[tracing]\notlp_endpoint = \"http://127.0.0.1:9\"\nsampler = \"always_on\"\n"
    ))
    .await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let reply = gw
        .send(
            gw.client()
                .get(gw.url("/orders/1"))
                .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01")),
        )
        .await;
    assert_eq!(reply.status, 200);
    let (_, open) = openmetrics(&gw).await;
    let line = open
        .lines()
        .find(|l| l.contains(&format!("# {{trace_id=\"{trace_id}\"}}")))
        .unwrap_or_else(|| panic!("no exemplar of trace {trace_id} in:\n{open}"));
    assert!(
        line.starts_with("switchyard_request_duration_seconds_bucket{")
            && line.contains("route=\"orders\""),
        "{line}"
    );
    let parsed = openmetrics_check(&open);
    assert!(
        parsed.lines().any(|l| l
            .starts_with("exemplar switchyard_request_duration_seconds_bucket ")
            && l.contains("route=orders")
            && l.contains(trace_id)),
        "the parser saw no exemplar of {trace_id}:\n{parsed}"
    );
    let text = gw
        .client()
        .get(gw.admin_url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body");
    assert!(
        !text.contains("trace_id") && !text.contains("# EOF"),
        "{text}"
    );
    promtool_check(&text);
    drop(gw);

    // Tracing off: no exemplars.
    let gw = Gateway::start(&base).await;
    assert_eq!(gw.get("/orders/1").await.status, 200);
    let (_, open) = openmetrics(&gw).await;
    assert!(
        open.contains("switchyard_request_duration_seconds_bucket{"),
        "{open}"
    );
    assert!(!open.contains("trace_id"), "{open}");
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The python of `target/metrics-venv` (made under a lock when missing).
fn metrics_python() -> PathBuf {
    let venv = workspace().join("target/metrics-venv");
    let python = venv.join("bin/python");
    let marker = venv.join(".installed");
    if marker.exists() {
        return python;
    }
    let requirements = workspace().join("integration-tests/openmetrics/requirements.txt");
    let script = format!(
        "set -e; [ -e '{marker}' ] && exit 0; rm -rf '{venv}'; python3 -m venv '{venv}'; \
         '{venv}/bin/pip' install -q --disable-pip-version-check -r '{req}'; touch '{marker}'",
        marker = marker.display(),
        venv = venv.display(),
        req = requirements.display(),
    );
    std::fs::create_dir_all(workspace().join("target")).expect("target dir");
    let status = Command::new("flock")
        .arg(venv.with_extension("lock"))
        .args(["sh", "-c", &script])
        .status()
        .expect("run flock (util-linux) to set up target/metrics-venv");
    assert!(
        status.success(),
        "could not make {}: needs python3 with venv and pip (Debian: apt-get install \
         python3-venv) and PyPI's prometheus-client; or run scripts/install-deps.sh",
        venv.display()
    );
    python
}

/// Runs the OpenMetrics parser over `text`; its summary (families and exemplars).
fn openmetrics_check(text: &str) -> String {
    let mut child = Command::new(metrics_python())
        .arg(workspace().join("integration-tests/openmetrics/check.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the OpenMetrics parser");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the OpenMetrics parser refused the page:\n{}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `promtool check metrics` over a Prometheus text page.
fn promtool_check(text: &str) {
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
