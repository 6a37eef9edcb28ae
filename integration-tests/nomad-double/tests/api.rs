//! The double through its HTTP API: jobs place registrations, blocking queries wait for a
//! change and answer with `X-Nomad-Index`, stops and deletes remove registrations, ACLs
//! refuse, the no-leader knob fails blocked and new queries.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use switchyard_nomad_double::{NomadDouble, Options};

fn job(id: &str, port: u16) -> Value {
    json!({"Job": {"ID": id, "TaskGroups": [{"Name": "g",
        "Networks": [{"ReservedPorts": [{"Label": "http", "Value": port}]}],
        "Services": [{"Name": "web", "PortLabel": "http", "Tags": ["t"], "Provider": "nomad"},
                     {"Name": "web", "PortLabel": "http"}]}]}})
}

async fn get(url: &str) -> (u16, Option<u64>, String) {
    let response = reqwest::get(url).await.unwrap();
    let index = response
        .headers()
        .get("X-Nomad-Index")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    (
        response.status().as_u16(),
        index,
        response.text().await.unwrap(),
    )
}

#[tokio::test]
async fn jobs_register_and_blocking_queries_wake() {
    let double = NomadDouble::start(Options::default()).unwrap();
    let base = double.address();
    let client = reqwest::Client::new();
    client
        .put(format!("{base}/v1/jobs"))
        .json(&job("a", 9001))
        .send()
        .await
        .unwrap();
    let (status, index, body) = get(&format!("{base}/v1/service/web")).await;
    let list: Vec<Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (status, list.len()),
        (200, 1),
        "consul-provider service not registered: {body}"
    );
    assert_eq!(list[0]["Port"], 9001);
    assert_eq!(list[0]["Tags"], json!(["t"]));
    let index = index.unwrap();

    // Blocks until the job is stopped.
    let started = Instant::now();
    let blocked = tokio::spawn(get(
        format!("{base}/v1/service/web?index={index}&wait=10s").leak()
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    client
        .delete(format!("{base}/v1/job/a"))
        .send()
        .await
        .unwrap();
    let (_, after, body) = blocked.await.unwrap();
    assert!(after.unwrap() > index);
    assert_eq!(body, "[]");
    assert!(started.elapsed() < Duration::from_secs(5));

    // Times out with the same index.
    let started = Instant::now();
    let (_, same, _) = get(&format!(
        "{base}/v1/service/web?index={}&wait=500ms",
        after.unwrap()
    ))
    .await;
    assert_eq!(same, after);
    assert!(started.elapsed() >= Duration::from_millis(500));

    // The no-leader knob ends a blocked query and fails the next.
    let blocked = tokio::spawn(get(format!(
        "{base}/v1/service/web?index={}&wait=10s",
        after.unwrap()
    )
    .leak()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    double.set_no_leader(true);
    let (status, _, body) = tokio::time::timeout(Duration::from_secs(5), blocked)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((status, body.as_str()), (500, "No cluster leader"));
    double.set_no_leader(false);
    assert_eq!(get(&format!("{base}/v1/service/web")).await.0, 200);
}

#[tokio::test]
async fn acl_tokens_are_checked() {
    let double = NomadDouble::start(Options {
        acl_tokens: vec!["s".into()],
        ..Options::default()
    })
    .unwrap();
    let base = double.address();
    let client = reqwest::Client::new();
    let text = |r: reqwest::Response| async move { (r.status().as_u16(), r.text().await.unwrap()) };
    assert_eq!(
        text(
            client
                .get(format!("{base}/v1/service/web"))
                .send()
                .await
                .unwrap()
        )
        .await,
        (403, "Permission denied".into())
    );
    assert_eq!(
        text(
            client
                .get(format!("{base}/v1/service/web"))
                .header("X-Nomad-Token", "x")
                .send()
                .await
                .unwrap()
        )
        .await,
        (403, "ACL token not found".into())
    );
    assert_eq!(
        text(
            client
                .get(format!("{base}/v1/service/web"))
                .header("X-Nomad-Token", "s")
                .send()
                .await
                .unwrap()
        )
        .await
        .0,
        200
    );
}
