//! The admin's history: `GET /api/routes?window=60s` carries each route's requests per
//! second, p50/p90/p99 and 5xx ratio computed by the server, and `GET /api/history` the
//! per-second samples and the event timeline the dashboard charts; `GET /api/openapi.json`
//! describes exactly the fields the gateway answers with.

use std::time::Duration;

use switchyard_integration_tests::{eventually, Backend, Gateway};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_carry_windowed_rates_quantiles_and_error_ratio() {
    let ok = Backend::start("ok");
    let failing = Backend::start("failing");
    failing.set_status(503);
    ok.set_delay(Duration::from_millis(20));
    let config = format!(
        r#"[registries.local]
type = "static"
services.ok = ["{}"]
services.failing = ["{}"]

[upstreams.ok]
[[upstreams.ok.sources]]
registry = "local"
service = "ok"
[upstreams.failing]
[[upstreams.failing.sources]]
registry = "local"
service = "failing"
[upstreams.failing.outlier]
consecutive_failures = 1000

[[routes]]
name = "slow"
path_prefix = "/slow"
upstream = "ok"
[[routes]]
name = "broken"
path_prefix = "/broken"
upstream = "failing"
"#,
        ok.address(),
        failing.address()
    );
    let gw = Gateway::start(&config).await;
    // The history needs a sample from before the requests.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for _ in 0..20 {
        assert_eq!(gw.get("/slow").await.status, 200);
        assert_eq!(gw.get("/broken").await.status, 503);
    }
    let routes = gw.admin_json("/api/routes?window=60s").await;
    println!("{routes:#}");
    let route = |name: &str| {
        routes
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap()
            .clone()
    };
    let (slow, broken) = (route("slow"), route("broken"));
    // Kept fields are still there.
    assert_eq!(slow["upstream"], "ok");
    assert_eq!(slow["path_prefix"], "/slow");
    let window = slow["window_seconds"].as_f64().unwrap();
    assert!((1.0..=61.0).contains(&window), "window {window}");
    let rps = slow["requests_per_second"].as_f64().unwrap();
    let expected = 20.0 / window;
    assert!(
        (expected * 0.5..=expected * 1.5).contains(&rps),
        "{rps} requests/s against 20 in {window} s"
    );
    let p50 = slow["p50_ms"].as_f64().unwrap();
    let p99 = slow["p99_ms"].as_f64().unwrap();
    assert!(
        p50 >= 10.0 && p99 >= p50,
        "p50 {p50} p99 {p99} with a 20 ms backend"
    );
    assert!(slow["p90_ms"].as_f64().unwrap() >= p50);
    assert_eq!(slow["error_ratio"], 0.0);
    assert_eq!(broken["error_ratio"], 1.0);

    let bad = gw
        .client()
        .get(gw.admin_url("/api/routes?window=soon"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    // The per-second samples behind the dashboard's charts.
    let took = eventually("samples with the requests", Duration::from_secs(10), || {
        let gw = &gw;
        async move {
            let history = gw.admin_json("/api/history?window=5m").await;
            history["samples"].as_array().is_some_and(|s| {
                s.iter()
                    .any(|p| p["routes"]["slow"]["rps"].as_f64().unwrap_or(0.0) > 0.0)
            })
        }
    })
    .await;
    println!("history showed the requests after {took:?}");
    let history = gw.admin_json("/api/history").await;
    assert_eq!(history["interval_seconds"], 1);
    let last = history["samples"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["upstreams"]["ok"]["healthy"], 1);
    assert!(history["events"].is_array());

    // The OpenAPI document names every field a route entry has, and nothing it lacks.
    let doc = gw.admin_json("/api/openapi.json").await;
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{doc}"
    );
    for path in [
        "/api/routes",
        "/api/history",
        "/api/upstreams",
        "/api/registries",
    ] {
        assert!(
            doc["paths"][path]["get"].is_object(),
            "{path} not documented"
        );
    }
    let schemas = &doc["components"]["schemas"];
    let mut documented = std::collections::BTreeSet::new();
    collect_properties(&schemas["RouteEntry"], &mut documented);
    let mut figures = std::collections::BTreeSet::new();
    collect_properties(&schemas["RouteWindow"], &mut figures);
    documented.extend(figures.iter().cloned());
    println!("documented route fields: {documented:?}");
    for entry in routes.as_array().unwrap() {
        for key in entry.as_object().unwrap().keys() {
            assert!(
                documented.contains(key),
                "{key} is not in the OpenAPI document"
            );
        }
        for key in &figures {
            assert!(
                entry.get(key).is_some(),
                "{key} documented but not answered: {entry}"
            );
        }
    }
    for key in [
        "requests_per_second",
        "p50_ms",
        "p90_ms",
        "p99_ms",
        "error_ratio",
    ] {
        assert!(figures.contains(key), "{key} not documented");
    }
}

/// The property names of a JSON Schema, through `allOf` and friends.
fn collect_properties(schema: &serde_json::Value, out: &mut std::collections::BTreeSet<String>) {
    match schema {
        serde_json::Value::Object(map) => {
            if let Some(serde_json::Value::Object(properties)) = map.get("properties") {
                out.extend(properties.keys().cloned());
            }
            for (key, value) in map {
                if key != "properties" {
                    collect_properties(value, out);
                }
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                collect_properties(item, out);
            }
        }
        _ => {}
    }
}
