//! The double's wire behaviour, checked through HTTP the way a Consul client sees it: status
//! codes and text bodies, `X-Consul-Index` and blocking, `passing`, TTL expiry, token
//! sources and ACL filtering.

use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use serde_json::{json, Value};
use switchyard_consul_double::client::{AgentClient, ApiResponse};
use switchyard_consul_double::{AclOptions, ConsulDouble, Options};

fn body(response: &ApiResponse) -> String {
    String::from_utf8_lossy(&response.body).into_owned()
}

async fn get(agent: &AgentClient, path: &str) -> ApiResponse {
    agent.call(Method::GET, path, None).await.expect("answer")
}

#[tokio::test]
async fn unknown_service_is_an_empty_array_with_an_index() {
    let double = ConsulDouble::start(Options::default()).unwrap();
    let agent = AgentClient::new(&double.address());
    let response = get(&agent, "/v1/health/service/nothing").await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(body(&response).trim(), "[]");
    assert!(response.index.is_some_and(|i| i >= 1), "{response:?}");
}

#[tokio::test]
async fn blocking_queries_wait_for_a_change_or_the_wait() {
    let double = ConsulDouble::start(Options::default()).unwrap();
    let agent = AgentClient::new(&double.address());
    let (index, _) = agent.health("web", "").await.unwrap();

    // Nothing changes: the answer comes after `wait` (plus at most wait/16), same index.
    let started = Instant::now();
    let (same, _) = agent
        .health("web", &format!("index={index}&wait=300ms"))
        .await
        .unwrap();
    let took = started.elapsed();
    println!("blocked {took:?} for wait=300ms");
    assert_eq!(same, index);
    assert!(took >= Duration::from_millis(290), "{took:?}");

    // A registration wakes it with a higher index.
    let waiter = {
        let agent = agent.clone();
        tokio::spawn(async move {
            agent
                .health("web", &format!("index={index}&wait=30s"))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    agent
        .register(&json!({"Name": "web", "Port": 80, "Check": {"TTL": "1m"}}))
        .await
        .unwrap();
    let (woken, entries) = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("woken within 5 s")
        .unwrap()
        .unwrap();
    assert!(woken > index);
    assert_eq!(entries.len(), 1);
    // Field names and casing of real Consul.
    let entry = &entries[0];
    assert_eq!(entry["Service"]["Service"], "web");
    assert_eq!(entry["Service"]["ID"], "web");
    assert_eq!(
        entry["Service"]["Weights"],
        json!({"Passing": 1, "Warning": 1})
    );
    assert_eq!(entry["Service"]["Tags"], json!([]));
    assert_eq!(entry["Node"]["Address"], "127.0.0.1");
    let checks: Vec<(&str, &str)> = entry["Checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["CheckID"].as_str().unwrap(),
                c["Status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        checks,
        [("serfHealth", "passing"), ("service:web", "critical")]
    );

    // Bad parameters, as Consul words them.
    let bad = get(&agent, "/v1/health/service/web?index=x").await;
    assert_eq!(
        (bad.status, body(&bad).as_str()),
        (StatusCode::BAD_REQUEST, "Invalid index")
    );
    let bad = get(&agent, "/v1/health/service/web?index=1&wait=soon").await;
    assert_eq!(
        (bad.status, body(&bad).as_str()),
        (StatusCode::BAD_REQUEST, "Invalid wait time")
    );
    let bad = get(&agent, "/v1/health/service/web?dc=nowhere").await;
    assert_eq!(
        (bad.status, body(&bad).as_str()),
        (StatusCode::INTERNAL_SERVER_ERROR, "No path to datacenter")
    );
}

#[tokio::test]
async fn ttl_checks_pass_warn_fail_and_expire() {
    let double = ConsulDouble::start(Options::default()).unwrap();
    let agent = AgentClient::new(&double.address());
    agent
        .register(&json!({"ID": "w1", "Name": "web", "Port": 80,
                          "Checks": [{"TTL": "1s"}, {"TTL": "1m", "CheckID": "extra"}]}))
        .await
        .unwrap();
    let passing = |entries: &[Value]| entries.len();
    assert_eq!(passing(&agent.health("web", "passing").await.unwrap().1), 0);
    agent.pass("service:w1:1").await.unwrap();
    agent.pass("extra").await.unwrap();
    assert_eq!(passing(&agent.health("web", "passing").await.unwrap().1), 1);
    agent.warn("extra").await.unwrap();
    assert_eq!(passing(&agent.health("web", "passing").await.unwrap().1), 0);
    assert_eq!(
        passing(&agent.health("web", "passing=false").await.unwrap().1),
        1
    );
    agent.pass("extra").await.unwrap();

    // The 1 s TTL runs out: critical.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, entries) = agent.health("web", "").await.unwrap();
    let status = entries[0]["Checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["CheckID"] == "service:w1:1")
        .map(|c| c["Status"].clone());
    assert_eq!(status, Some(json!("critical")));

    let unknown = agent.pass("service:nope").await.unwrap_err();
    assert_eq!(unknown.status, Some(StatusCode::NOT_FOUND));
    assert!(
        unknown
            .body
            .starts_with("Unknown check ID \"service:nope\""),
        "{unknown}"
    );
    let unknown = agent.deregister("nope").await.unwrap_err();
    assert_eq!(unknown.status, Some(StatusCode::NOT_FOUND));
    let wrong_method = get(&agent, "/v1/agent/check/pass/extra").await;
    assert_eq!(
        (wrong_method.status, body(&wrong_method).as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, "method GET not allowed")
    );
    let services = get(&agent, "/v1/agent/services").await;
    let services: Value = serde_json::from_slice(&services.body).unwrap();
    assert_eq!(services["w1"]["Service"], "web", "{services}");
}

#[tokio::test]
async fn tokens_from_every_source_and_acl_filtering() {
    let double = ConsulDouble::start(Options {
        acl: Some(AclOptions::deny_with("w", "r")),
        ..Options::default()
    })
    .unwrap();
    let writer = AgentClient::new(&double.address()).with_token("w");
    writer
        .register(&json!({"Name": "web", "Port": 80}))
        .await
        .unwrap();
    let anonymous = AgentClient::new(&double.address());

    // No token under default deny: filtered, but never flagged — Consul masks the flag for
    // blank tokens (maskResultsFilteredByACLs in agent/consul/rpc.go) — while every answer
    // carries the default policy (setACLDefaultPolicy in agent/http.go).
    let response = get(&anonymous, "/v1/health/service/web").await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(body(&response).trim(), "[]");
    assert!(!response.filtered_by_acls);
    assert_eq!(response.default_acl_policy.as_deref(), Some("deny"));
    let catalog = get(&anonymous, "/v1/catalog/services").await;
    assert_eq!(body(&catalog).trim(), "{}");
    assert!(!catalog.filtered_by_acls);
    assert_eq!(catalog.default_acl_policy.as_deref(), Some("deny"));
    // Errors carry it too.
    let missing = get(&anonymous, "/v1/nope").await;
    assert_eq!(missing.default_acl_policy.as_deref(), Some("deny"));

    // The read token, by header, by ?token=, by Bearer.
    let by_header = get(
        &AgentClient::new(&double.address()).with_token("r"),
        "/v1/health/service/web",
    )
    .await;
    assert!(!by_header.filtered_by_acls);
    assert_eq!(
        serde_json::from_slice::<Vec<Value>>(&by_header.body)
            .unwrap()
            .len(),
        1
    );
    let by_query = get(&anonymous, "/v1/health/service/web?token=r").await;
    assert_eq!(
        serde_json::from_slice::<Vec<Value>>(&by_query.body)
            .unwrap()
            .len(),
        1
    );
    let client = hyper_client();
    let request = http::Request::get(format!("{}/v1/catalog/services", double.address()))
        .header("Authorization", "Bearer r")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response
        .headers()
        .get("X-Consul-Results-Filtered-By-ACLs")
        .is_none());

    // A token the agent does not know: 403 "ACL not found", everywhere.
    let wrong = AgentClient::new(&double.address()).with_token("nope");
    let response = get(&wrong, "/v1/health/service/web").await;
    assert_eq!(
        (response.status, body(&response).as_str()),
        (StatusCode::FORBIDDEN, "ACL not found")
    );
    // A read token cannot write.
    let reader = AgentClient::new(&double.address()).with_token("r");
    let denied = reader.deregister("web").await.unwrap_err();
    assert_eq!(denied.status, Some(StatusCode::FORBIDDEN));
    assert!(
        denied
            .body
            .contains("lacks permission 'service:write' on \"web\""),
        "{denied}"
    );
}

#[tokio::test]
async fn stop_drops_connections_and_resume_serves_the_same_state() {
    let double = ConsulDouble::start(Options::default()).unwrap();
    let agent = AgentClient::new(&double.address());
    agent
        .register(&json!({"Name": "web", "Port": 80}))
        .await
        .unwrap();
    let (index, _) = agent.health("web", "").await.unwrap();
    let blocked = {
        let agent = agent.clone();
        tokio::spawn(async move { agent.health("web", &format!("index={index}&wait=1m")).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    double.stop();
    let result = tokio::time::timeout(Duration::from_secs(5), blocked)
        .await
        .expect("dropped")
        .unwrap();
    assert!(
        result.unwrap_err().status.is_none(),
        "the blocked query must fail"
    );
    assert!(AgentClient::new(&double.address())
        .health("web", "")
        .await
        .is_err());
    double.resume().unwrap();
    let (again, entries) = AgentClient::new(&double.address())
        .health("web", "")
        .await
        .unwrap();
    assert_eq!((again, entries.len()), (index, 1));
}

fn hyper_client() -> hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Full<bytes::Bytes>,
> {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

#[tokio::test]
async fn tags_match_case_insensitively_as_consul_does() {
    // agent/consul/state/catalog.go serviceTagFilter: strings.ToLower on both sides.
    let double = ConsulDouble::start(Options::default()).unwrap();
    let agent = AgentClient::new(&double.address());
    agent
        .register(&json!({"ID": "w1", "Name": "web", "Port": 80, "Tags": ["Primary", "EU"]}))
        .await
        .unwrap();
    for query in ["tag=primary", "tag=PRIMARY&tag=eu", "tag=Primary"] {
        let response = get(&agent, &format!("/v1/health/service/web?{query}")).await;
        let entries: Vec<Value> = serde_json::from_slice(&response.body).unwrap();
        assert_eq!(entries.len(), 1, "{query}: {}", body(&response));
    }
    let none = get(&agent, "/v1/health/service/web?tag=primar").await;
    assert_eq!(body(&none).trim(), "[]");
    // ACLs off: the default policy Consul reports is "allow".
    assert_eq!(none.default_acl_policy.as_deref(), Some("allow"));
}

#[tokio::test]
async fn filter_expressions_and_consistency_modes() {
    let double = ConsulDouble::start(Options::default()).unwrap();
    let agent = AgentClient::new(&double.address());
    for (id, version, tags) in [("w1", "1", vec!["a"]), ("w2", "2", vec!["b", "canary"])] {
        agent
            .register(&json!({"ID": id, "Name": "web", "Port": 80, "Tags": tags,
                "Meta": {"version": version}}))
            .await
            .unwrap();
    }
    let ids = |response: &ApiResponse| -> Vec<String> {
        let entries: Vec<Value> = serde_json::from_slice(&response.body).unwrap();
        entries
            .iter()
            .map(|e| e["Service"]["ID"].as_str().unwrap().to_owned())
            .collect()
    };
    let filtered = |expr: &str| {
        let mut path = String::from("/v1/health/service/web?filter=");
        for byte in expr.bytes() {
            if byte.is_ascii_alphanumeric() || byte == b'.' {
                path.push(char::from(byte));
            } else {
                path.push_str(&format!("%{byte:02X}"));
            }
        }
        path
    };
    let r = get(&agent, &filtered(r#"Service.Meta.version == "2""#)).await;
    assert_eq!(ids(&r), ["w2"]);
    let r = get(&agent, &filtered(r#""canary" not in Service.Tags"#)).await;
    assert_eq!(ids(&r), ["w1"]);
    let r = get(&agent, &filtered("Service.Meta.version ==")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", body(&r));
    assert!(body(&r).contains("Failed to create boolean expression evaluator"));

    let r = get(&agent, "/v1/health/service/web?stale").await;
    assert_eq!(r.consistency.as_deref(), Some("stale"));
    let r = get(&agent, "/v1/health/service/web?consistent=").await;
    assert_eq!(r.consistency.as_deref(), Some("consistent"));
    let r = get(&agent, "/v1/health/service/web").await;
    assert_eq!(r.consistency.as_deref(), Some("leader"));
    let r = get(&agent, "/v1/health/service/web?stale&consistent").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(body(&r).contains("Cannot specify ?stale with ?consistent"));
}
