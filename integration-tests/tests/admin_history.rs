//! The admin's history: `GET /api/routes?window=60s` carries each route's requests per
//! second, p50/p90/p99 and 5xx ratio computed by the server, and `GET /api/history` the
//! per-second samples and the event timeline the dashboard charts; `GET /api/openapi.json`
//! describes exactly the fields the gateway answers with: every endpoint's live answer
//! deserializes into its `switchyard::api` type and validates (JSON Schema, `jsonschema`)
//! against the schema the document gives it.

use std::time::Duration;

use serde_json::Value;
use switchyard::api;
use switchyard_integration_tests::gateway::Reply;
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

/// The validator of the schema `doc` gives the answer `status` of `method path`.
fn response_schema(doc: &Value, method: &str, path: &str, status: u16) -> jsonschema::Validator {
    let response = &doc["paths"][path][method]["responses"][status.to_string()];
    let mut schema = response["content"]["application/json"]["schema"].clone();
    assert!(
        schema.is_object(),
        "{method} {path} {status}: no JSON schema in the document: {response}"
    );
    schema["components"] = doc["components"].clone();
    jsonschema::validator_for(&schema)
        .unwrap_or_else(|e| panic!("{method} {path} {status}: {e}: {schema}"))
}

/// Checks a live answer: its status, that it deserializes into `T` (the type the gateway
/// wrote it with) and that it validates against the document's schema for it.
fn check_answer<T: serde::de::DeserializeOwned>(
    doc: &Value,
    (method, path): (&str, &str),
    reply: &Reply,
    status: u16,
) -> T {
    assert_eq!(
        reply.status, status,
        "{method} {path}: {} {}",
        reply.status, reply.body
    );
    let value: Value = serde_json::from_str(&reply.body)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}: {}", reply.body));
    let validator = response_schema(doc, method, path, status);
    let errors: Vec<String> = validator
        .iter_errors(&value)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{method} {path} {status} does not match its schema: {errors:?}\n{value:#}"
    );
    serde_json::from_value(value)
        .unwrap_or_else(|e| panic!("{method} {path}: not a {}: {e}", std::any::type_name::<T>()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_answers_its_type_and_its_documented_schema() {
    let ok = Backend::start("ok");
    let closed = switchyard_integration_tests::free_port();
    let config = format!(
        r#"[server]
listen = "{{listen}}"
startup_grace = "3s"

[admin]
listen = "{{admin}}"
token = "s3cret"

[registries.local]
type = "static"
services.ok = ["{}"]

[registries.gone]
type = "consul"
address = "http://127.0.0.1:{closed}"

[upstreams.ok]
[[upstreams.ok.sources]]
registry = "local"
service = "ok"
[[upstreams.ok.sources]]
registry = "gone"
service = "ok"
priority = 1

[consumers.alice]
keys = ["alice-key"]

[[routes]]
name = "ok"
path_prefix = "/ok"
upstream = "ok"
auth = ["key"]
"#,
        ok.address()
    );
    let gw = Gateway::start(&config).await;
    let send = |method: reqwest::Method, path: &str, token: Option<&str>| {
        let mut request = gw.client().request(method, gw.admin_url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        gw.send(request)
    };
    let get = |path: &'static str| send(reqwest::Method::GET, path, Some("s3cret"));
    let doc = serde_json::from_str::<Value>(&get("/api/openapi.json").await.body).unwrap();
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "{doc}"
    );

    // Every route of the router is in the document.
    let documented: Vec<String> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |m| format!("{} {path}", m.to_uppercase()))
        })
        .collect();
    println!("documented: {documented:?}");
    for operation in [
        "GET /",
        "GET /healthz",
        "GET /readyz",
        "GET /metrics",
        "GET /api/upstreams",
        "GET /api/upstreams/{name}",
        "GET /api/registries",
        "GET /api/routes",
        "GET /api/history",
        "GET /api/config_source",
        "GET /api/stats",
        "POST /api/cache/purge",
        "POST /api/reload",
        "GET /api/openapi.json",
    ] {
        assert!(
            documented.iter().any(|d| d == operation),
            "{operation} not documented"
        );
    }

    // While the consul source cannot answer: 503 `starting`, then 200 once the grace ran
    // out, both JSON naming it.
    let started = std::time::Instant::now();
    let mut seen = Vec::new();
    loop {
        let reply = get("/readyz").await;
        if reply.status == 503 {
            let starting: api::Readiness = check_answer(&doc, ("get", "/readyz"), &reply, 503);
            assert_eq!(starting.status, "starting");
            assert!(
                starting.pending.iter().any(|p| p.contains("gone")),
                "{starting:?}"
            );
        } else {
            let ready: api::Readiness = check_answer(&doc, ("get", "/readyz"), &reply, 200);
            assert_eq!(ready.startup_grace_expired, Some(true), "{ready:?}");
            break;
        }
        seen.push(reply.status);
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "/readyz still {seen:?} after {:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "readyz 503 x{} then 200 after {:?}",
        seen.len(),
        started.elapsed()
    );

    for _ in 0..3 {
        let reply = gw
            .send(
                gw.client()
                    .get(gw.url("/ok/x"))
                    .header("apikey", "alice-key"),
            )
            .await;
        assert_eq!(reply.status, 200, "{reply:?}");
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let upstreams: Vec<api::Upstream> = check_answer(
        &doc,
        ("get", "/api/upstreams"),
        &get("/api/upstreams").await,
        200,
    );
    assert_eq!(upstreams[0].name, "ok");
    // The validator is not vacuous: an upstream without its balancer is refused.
    let mut broken = serde_json::to_value(&upstreams).unwrap();
    broken[0].as_object_mut().unwrap().remove("balancer");
    assert!(!response_schema(&doc, "get", "/api/upstreams", 200).is_valid(&broken));
    assert_eq!(upstreams[0].sources.len(), 2);
    let one: api::Upstream = check_answer(
        &doc,
        ("get", "/api/upstreams/{name}"),
        &get("/api/upstreams/ok").await,
        200,
    );
    assert_eq!(one.endpoints[0].address, ok.address().to_string());
    let missing: api::ErrorBody = check_answer(
        &doc,
        ("get", "/api/upstreams/{name}"),
        &get("/api/upstreams/nope").await,
        404,
    );
    assert_eq!(missing.error, "no such upstream");
    let registries: Vec<api::Registry> = check_answer(
        &doc,
        ("get", "/api/registries"),
        &get("/api/registries").await,
        200,
    );
    assert!(registries
        .iter()
        .any(|r| r.name == "gone" && r.kind == "consul"));
    let routes: Vec<api::RouteEntry> = check_answer(
        &doc,
        ("get", "/api/routes"),
        &get("/api/routes?window=60s").await,
        200,
    );
    assert!(routes[0].figures.requests_per_second > 0.0, "{routes:?}");
    let _: api::ErrorBody = check_answer(
        &doc,
        ("get", "/api/routes"),
        &get("/api/routes?window=soon").await,
        400,
    );
    let history: api::HistoryDocument = check_answer(
        &doc,
        ("get", "/api/history"),
        &get("/api/history?window=15m").await,
        200,
    );
    let last = history.samples.last().expect("samples");
    assert!(last.registries.contains_key("gone"), "{last:?}");
    assert_eq!(last.registries["local"].state, "ok");
    let source: api::ConfigSourceStatus = check_answer(
        &doc,
        ("get", "/api/config_source"),
        &get("/api/config_source").await,
        200,
    );
    assert_eq!(source.state, "off");
    let stats: api::Stats = check_answer(
        &doc,
        ("get", "/api/stats"),
        &get("/api/stats?window=5m").await,
        200,
    );
    assert_eq!(stats.routes[0].usage.requests, 3, "{stats:?}");
    let _: api::ErrorBody = check_answer(
        &doc,
        ("get", "/api/stats"),
        &get("/api/stats?windw=5m").await,
        400,
    );
    let purged: api::Purged = check_answer(
        &doc,
        ("post", "/api/cache/purge"),
        &send(reqwest::Method::POST, "/api/cache/purge", Some("s3cret")).await,
        200,
    );
    assert_eq!(purged.purged, 0);
    let reloaded: api::ReloadOutcome = check_answer(
        &doc,
        ("post", "/api/reload"),
        &send(reqwest::Method::POST, "/api/reload", Some("s3cret")).await,
        200,
    );
    assert_eq!(reloaded.status, "reloaded");
    gw.write_config(&config.replace("upstream = \"ok\"\nauth", "upstream = \"missing\"\nauth"));
    let refused: api::ReloadOutcome = check_answer(
        &doc,
        ("post", "/api/reload"),
        &send(reqwest::Method::POST, "/api/reload", Some("s3cret")).await,
        422,
    );
    assert!(
        refused
            .errors
            .as_ref()
            .is_some_and(|e| e.iter().any(|e| e.contains("missing"))),
        "{refused:?}"
    );

    // The token: 401 with WWW-Authenticate and the error body; the dashboard's login form.
    let denied = send(reqwest::Method::GET, "/api/routes", None).await;
    assert_eq!(denied.status, 401);
    assert_eq!(denied.headers["www-authenticate"], "Bearer");
    let body: api::ErrorBody = serde_json::from_str(&denied.body).unwrap();
    assert_eq!(body.error, "admin token required");
    let wrong = send(reqwest::Method::GET, "/api/routes", Some("s3creT")).await;
    assert_eq!(wrong.status, 401);
    let login = send(reqwest::Method::GET, "/", None).await;
    assert_eq!(login.status, 401);
    assert!(login.body.contains("<form"), "{}", login.body);
    let page = send(reqwest::Method::GET, "/?token=s3cret", None).await;
    assert_eq!(page.status, 200);
    assert!(page.headers["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("default-src"));
    // Health and metrics stay open.
    assert_eq!(
        send(reqwest::Method::GET, "/healthz", None).await.body,
        "ok\n"
    );
    assert_eq!(
        send(reqwest::Method::GET, "/metrics", None).await.status,
        200
    );

    // Wrong methods and unknown paths: 405 and 404 with the error body.
    for (method, path) in [
        (reqwest::Method::DELETE, "/api/routes"),
        (reqwest::Method::GET, "/api/reload"),
        (reqwest::Method::PUT, "/api/upstreams/ok"),
        (reqwest::Method::POST, "/metrics"),
    ] {
        let reply = send(method.clone(), path, Some("s3cret")).await;
        assert_eq!(reply.status, 405, "{method} {path}: {reply:?}");
        let body: api::ErrorBody = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(body.error, "method not allowed");
    }
    let unknown = get("/api/nothing").await;
    assert_eq!(unknown.status, 404);
    let body: api::ErrorBody = serde_json::from_str(&unknown.body).unwrap();
    assert_eq!(body.error, "not found");
    // Unknown /api paths still need the token.
    assert_eq!(
        send(reqwest::Method::GET, "/api/nothing", None)
            .await
            .status,
        401
    );
}
