//! The double through its HTTP API: register, status overrides, cancel, the full registry
//! and deltas with `apps__hashcode`, the delta window, basic auth.

use std::time::Duration;

use serde_json::{json, Value};
use switchyard_eureka_double::{EurekaDouble, Options};

fn instance(id: &str, port: u16) -> Value {
    json!({"instance": {"instanceId": id, "hostName": "h", "app": "web", "ipAddr": "10.0.0.1",
        "status": "UP", "port": {"$": port, "@enabled": "true"}}})
}

async fn get(url: String) -> Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

#[tokio::test]
async fn registry_deltas_and_hash_codes() {
    let double = EurekaDouble::start(Options::default()).unwrap();
    let base = double.address();
    let client = reqwest::Client::new();
    let status = client
        .post(format!("{base}/apps/WEB"))
        .json(&instance("a", 1))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 204);
    client
        .post(format!("{base}/apps/web"))
        .json(&instance("b", 2))
        .send()
        .await
        .unwrap();
    let full = get(format!("{base}/apps")).await;
    assert_eq!(full["applications"]["apps__hashcode"], "UP_2_");
    assert_eq!(
        full["applications"]["application"][0]["name"], "WEB",
        "app names upper-cased"
    );
    let status = client
        .put(format!("{base}/apps/WEB/b/status?value=OUT_OF_SERVICE"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    let delta = get(format!("{base}/apps/delta")).await;
    assert_eq!(
        delta["applications"]["apps__hashcode"],
        "OUT_OF_SERVICE_1_UP_1_"
    );
    let actions: Vec<&str> = delta["applications"]["application"][0]["instance"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["actionType"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["ADDED", "ADDED", "MODIFIED"]);
    assert_eq!(
        client
            .delete(format!("{base}/apps/WEB/zz"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        client
            .delete(format!("{base}/apps/WEB/a"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    double.set_delta_retention(Duration::ZERO);
    let delta = get(format!("{base}/apps/delta")).await;
    assert_eq!(delta["applications"]["application"], json!([]));
    assert_eq!(delta["applications"]["apps__hashcode"], "OUT_OF_SERVICE_1_");
}

#[tokio::test]
async fn basic_auth_is_required_when_set() {
    let double = EurekaDouble::start(Options {
        basic_auth: Some(("u".into(), "p".into())),
        ..Options::default()
    })
    .unwrap();
    let base = double.address();
    let client = reqwest::Client::new();
    assert_eq!(
        client
            .get(format!("{base}/apps"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let ok = client
        .get(format!("{base}/apps"))
        .basic_auth("u", Some("p"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(ok, 200);
}
