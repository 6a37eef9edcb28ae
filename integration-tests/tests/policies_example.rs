//! `config/policies.toml` run as shipped (only its listen and backend addresses swapped
//! for test ones): every route behaves as its comments say.

use std::path::Path;

use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::json;
use switchyard_integration_tests::{Backend, Gateway};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policies_example_runs() {
    let orders = Backend::start("orders");
    let catalog = Backend::start("catalog");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/policies.toml");
    let text = std::fs::read_to_string(path)
        .unwrap()
        .replace("127.0.0.1:8080", "{listen}")
        .replace("127.0.0.1:9901", "{admin}")
        .replace(
            "\"127.0.0.1:9001\", \"127.0.0.1:9002\"",
            &format!("\"{}\"", orders.address()),
        )
        .replace("127.0.0.1:9003", &catalog.address().to_string());
    let gw = Gateway::start(&text).await;

    let anonymous = gw.get("/orders/1").await;
    assert_eq!(anonymous.status, 401, "{anonymous:?}");

    let alice = gw
        .send(
            gw.client()
                .get(gw.url("/orders/1"))
                .header("apikey", "alice-key-1")
                .header("x-debug", "1"),
        )
        .await;
    assert_eq!(alice.status, 200, "{alice:?}");
    assert_eq!(
        alice.headers.get("x-content-type-options").unwrap(),
        "nosniff"
    );
    assert_eq!(alice.headers.get("ratelimit-limit").unwrap(), "20");
    let seen = orders.seen().pop().unwrap();
    assert_eq!(seen.header("x-consumer"), ["alice"]);
    assert_eq!(seen.header("x-gateway"), ["switchyard"]);
    assert!(seen.header("x-debug").is_empty() && seen.header("apikey").is_empty());

    assert_eq!(gw.get("/orders/1?apikey=bob-key").await.status, 200);
    assert_eq!(gw.get("/orders/1?apikey=partner-key").await.status, 403);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let token = encode(
        &Header::default(),
        &json!({"sub": "bob", "exp": now + 300, "iss": "https://issuer.example", "aud": "orders-api"}),
        &EncodingKey::from_secret(b"change-me-to-a-long-random-secret"),
    )
    .unwrap();
    let jwt = gw
        .send(gw.client().get(gw.url("/orders/2")).bearer_auth(token))
        .await;
    assert_eq!(jwt.status, 200, "{jwt:?}");
    assert_eq!(orders.seen().pop().unwrap().header("x-consumer"), ["bob"]);

    let first = gw.get("/catalog/v1/items?page=1").await;
    let second = gw.get("/catalog/v1/items?page=1").await;
    assert_eq!(first.headers.get("x-cache").unwrap(), "MISS");
    assert_eq!(
        second.headers.get("x-cache").unwrap(),
        "HIT",
        "default_ttl = 10s stores it"
    );
    assert_eq!(catalog.hits(), 1);
    let seen = catalog.seen().pop().unwrap();
    assert_eq!(seen.path, "/api/items?page=1");
    assert_eq!(seen.header("host"), ["catalog.internal"]);

    let tools = gw
        .send(
            gw.client()
                .get(gw.url("/tools/x"))
                .basic_auth("alice", Some("wonderland")),
        )
        .await;
    assert_eq!(tools.status, 200, "{tools:?}");

    let health = gw.get("/healthz").await;
    assert_eq!(health.status, 200);
    assert!(
        health.headers.get("ratelimit-limit").is_none(),
        "no filter on /healthz"
    );

    let stats = gw.admin_json("/api/stats?window=5m").await;
    let routes: Vec<&str> = stats["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["route"].as_str().unwrap())
        .collect();
    assert_eq!(routes, ["catalog", "orders", "tools"], "{stats}");
}
