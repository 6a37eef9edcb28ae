//! The double through its HTTP API: v2 and v1 answers, weights, health of persistent
//! instances only, login and token expiry, the v1-only knob.

use std::time::Duration;

use serde_json::Value;
use switchyard_nacos_double::{NacosDouble, Options};

async fn send(method: reqwest::Method, url: String, form: &[(&str, &str)]) -> (u16, String) {
    let response = reqwest::Client::new()
        .request(method, url)
        .form(form)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test]
async fn register_list_update_health_and_deregister() {
    let double = NacosDouble::start(Options::default()).unwrap();
    let base = double.address();
    let post = reqwest::Method::POST;
    let (status, body) = send(
        post.clone(),
        format!("{base}/nacos/v2/ns/instance"),
        &[
            ("serviceName", "web"),
            ("ip", "10.0.0.1"),
            ("port", "80"),
            ("weight", "2.5"),
        ],
    )
    .await;
    assert_eq!(
        (status, body.as_str()),
        (200, r#"{"code":0,"data":"ok","message":"success"}"#)
    );
    let (_, body) = send(
        reqwest::Method::GET,
        format!("{base}/nacos/v2/ns/instance/list?serviceName=web"),
        &[],
    )
    .await;
    let v2: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v2["data"]["name"], "DEFAULT_GROUP@@web");
    assert_eq!(v2["data"]["hosts"][0]["weight"], 2.5);
    let (_, body) = send(
        reqwest::Method::GET,
        format!("{base}/nacos/v1/ns/instance/list?serviceName=DEFAULT_GROUP%40%40web"),
        &[],
    )
    .await;
    let v1: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v1["hosts"][0]["ip"], "10.0.0.1",
        "v1 answers the data bare: {body}"
    );
    // Health is set by heartbeats for ephemeral instances: refused.
    let (status, _) = send(
        reqwest::Method::PUT,
        format!("{base}/nacos/v2/ns/health/instance"),
        &[
            ("serviceName", "web"),
            ("ip", "10.0.0.1"),
            ("port", "80"),
            ("healthy", "false"),
        ],
    )
    .await;
    assert_eq!(status, 400);
    let (status, body) = send(
        post,
        format!("{base}/nacos/v2/ns/instance"),
        &[
            ("serviceName", "web"),
            ("ip", "10.0.0.1"),
            ("port", "80"),
            ("weight", "-1"),
        ],
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("21001"), "{body}");
    send(
        reqwest::Method::DELETE,
        format!("{base}/nacos/v2/ns/instance"),
        &[("serviceName", "web"), ("ip", "10.0.0.1"), ("port", "80")],
    )
    .await;
    let (_, body) = send(
        reqwest::Method::GET,
        format!("{base}/nacos/v2/ns/instance/list?serviceName=web"),
        &[],
    )
    .await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["data"]["hosts"],
        serde_json::json!([])
    );
    double.set_v1_only(true);
    let (status, _) = send(
        reqwest::Method::GET,
        format!("{base}/nacos/v2/ns/instance/list?serviceName=web"),
        &[],
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn tokens_expire() {
    let double = NacosDouble::start(Options {
        user: Some(("nacos".into(), "pw".into())),
        token_ttl: Duration::from_secs(1),
        ..Options::default()
    })
    .unwrap();
    let base = double.address();
    let list = |token: &str| {
        format!("{base}/nacos/v2/ns/instance/list?serviceName=web&accessToken={token}")
    };
    assert_eq!(
        send(reqwest::Method::GET, list(""), &[]).await,
        (403, "token invalid!".into())
    );
    let (status, _) = send(
        reqwest::Method::POST,
        format!("{base}/nacos/v1/auth/login"),
        &[("username", "nacos"), ("password", "no")],
    )
    .await;
    assert_eq!(status, 403);
    let (_, body) = send(
        reqwest::Method::POST,
        format!("{base}/nacos/v1/auth/users/login"),
        &[("username", "nacos"), ("password", "pw")],
    )
    .await;
    let login: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(login["tokenTtl"], 1);
    let token = login["accessToken"].as_str().unwrap();
    assert_eq!(send(reqwest::Method::GET, list(token), &[]).await.0, 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        send(reqwest::Method::GET, list(token), &[]).await,
        (403, "token expired!".into())
    );
}
