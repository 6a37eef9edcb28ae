//! The double's wire protocol, checked with a plain HTTP client against what the
//! Kubernetes API concepts documentation says: lists with resourceVersion and consistent
//! pagination, watches as newline-delimited events, bookmarks, streaming lists, 410 Gone as
//! an `ERROR` event in a `200` stream, selectors, and bearer-token auth.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{json, Value};
use switchyard_kube_double::{KubeDouble, KubeDoubleOptions};

const SLICES: &str = "/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices";

struct Api {
    double: KubeDouble,
    http: reqwest::Client,
}

async fn api() -> Api {
    let double = KubeDouble::start(KubeDoubleOptions {
        bookmark_interval: Duration::from_millis(200),
        ..KubeDoubleOptions::default()
    })
    .await
    .unwrap();
    Api {
        double,
        http: reqwest::Client::new(),
    }
}

fn slice(name: &str, service: &str, ip: &str) -> Value {
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4", "ports": [{"name": "http", "port": 80}],
        "endpoints": [{"addresses": [ip]}]})
}

impl Api {
    fn request(&self, method: reqwest::Method, path_and_query: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path_and_query}", self.double.url()))
            .bearer_auth("kube-double-token")
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut request = self.request(method, path);
        if let Some(body) = body {
            request = request.json(body);
        }
        let reply = request.send().await.unwrap();
        let status = reply.status().as_u16();
        (status, reply.json().await.unwrap_or(Value::Null))
    }

    async fn create(&self, object: &Value) -> Value {
        let (status, created) = self.send(reqwest::Method::POST, SLICES, Some(object)).await;
        assert_eq!(status, 201, "{created}");
        created
    }

    /// Opens a watch and returns a reader of its events.
    async fn watch(&self, query: &str) -> Events {
        let reply = self
            .request(
                reqwest::Method::GET,
                &format!("{SLICES}?watch=true&{query}"),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 200);
        Events {
            stream: reply.bytes_stream().boxed(),
            buffer: Vec::new(),
        }
    }
}

struct Events {
    stream: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: Vec<u8>,
}

impl Events {
    /// The next event, `None` when the stream ended; panics after 5 s.
    async fn next(&mut self) -> Option<Value> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(newline) = self.buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=newline).collect();
                return Some(serde_json::from_slice(&line).expect("one JSON event per line"));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.stream.next()).await {
                Ok(Some(Ok(bytes))) => self.buffer.extend_from_slice(&bytes),
                Ok(Some(Err(_)) | None) => return None,
                Err(_) => panic!("no watch event within 5 s"),
            }
        }
    }

    /// The next event that is not a bookmark.
    async fn next_change(&mut self) -> Option<Value> {
        loop {
            let event = self.next().await?;
            if event["type"] != "BOOKMARK" {
                return Some(event);
            }
        }
    }
}

fn rv(object: &Value) -> u64 {
    object["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn auth_is_required() {
    let api = api().await;
    let reply = api
        .http
        .get(format!("{}{SLICES}", api.double.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 401);
    let status: Value = reply.json().await.unwrap();
    assert_eq!(
        (status["kind"].as_str(), status["code"].as_u64()),
        (Some("Status"), Some(401))
    );
}

#[tokio::test]
async fn lists_carry_versions_and_paginate_consistently() {
    let api = api().await;
    for i in 1..=3 {
        api.create(&slice(&format!("web-{i}"), "web", &format!("10.0.0.{i}")))
            .await;
    }
    api.create(&slice("api-1", "api", "10.0.1.1")).await;
    let (status, list) = api.send(reqwest::Method::GET, SLICES, None).await;
    assert_eq!(status, 200);
    assert_eq!(list["kind"], "EndpointSliceList");
    assert_eq!(list["items"].as_array().unwrap().len(), 4);
    let list_rv = rv(&list);
    assert_eq!(list_rv, api.double.resource_version());

    // Selector forms kube's watcher and kubectl send.
    for (selector, expected) in [
        ("kubernetes.io%2Fservice-name%3Dweb", 3),
        ("kubernetes.io%2Fservice-name+in+%28api%2Cdb%29", 1),
        ("kubernetes.io%2Fservice-name", 4),
        ("kubernetes.io%2Fservice-name%21%3Dweb", 1),
    ] {
        let (_, list) = api
            .send(
                reqwest::Method::GET,
                &format!("{SLICES}?labelSelector={selector}"),
                None,
            )
            .await;
        assert_eq!(
            list["items"].as_array().unwrap().len(),
            expected,
            "{selector}"
        );
    }

    // Pages: the second is served at the first one's version, even after a delete.
    let (_, page1) = api
        .send(reqwest::Method::GET, &format!("{SLICES}?limit=2"), None)
        .await;
    assert_eq!(page1["items"].as_array().unwrap().len(), 2);
    assert_eq!(page1["metadata"]["remainingItemCount"], 2);
    let token = page1["metadata"]["continue"].as_str().unwrap().to_owned();
    let (status, _) = api
        .send(reqwest::Method::DELETE, &format!("{SLICES}/web-3"), None)
        .await;
    assert_eq!(status, 200);
    let (_, page2) = api
        .send(
            reqwest::Method::GET,
            &format!("{SLICES}?limit=2&continue={token}"),
            None,
        )
        .await;
    let names: Vec<&str> = page2["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["web-2", "web-3"], "{page2}");
    assert_eq!(rv(&page2), rv(&page1));

    // Once the history is compacted, the token is too old: 410 Expired.
    api.double.expire();
    let (status, gone) = api
        .send(
            reqwest::Method::GET,
            &format!("{SLICES}?limit=2&continue={token}"),
            None,
        )
        .await;
    assert_eq!(
        (status, gone["reason"].as_str()),
        (410, Some("Expired")),
        "{gone}"
    );
    let (status, gone) = api
        .send(
            reqwest::Method::GET,
            &format!("{SLICES}?resourceVersion={list_rv}&resourceVersionMatch=Exact"),
            None,
        )
        .await;
    assert_eq!((status, gone["code"].as_u64()), (410, Some(410)), "{gone}");
}

#[tokio::test]
async fn watches_stream_changes_bookmarks_and_410() {
    let api = api().await;
    let web1 = api.create(&slice("web-1", "web", "10.0.0.1")).await;
    let (_, list) = api.send(reqwest::Method::GET, SLICES, None).await;
    let from = rv(&list);
    let mut events = api
        .watch(&format!(
            "resourceVersion={from}&allowWatchBookmarks=true&timeoutSeconds=30&labelSelector=kubernetes.io%2Fservice-name%3Dweb"
        ))
        .await;

    // Another service's slice is filtered out; a bookmark still moves the version on.
    api.create(&slice("api-1", "api", "10.0.1.1")).await;
    let bookmark = events.next().await.unwrap();
    assert_eq!(bookmark["type"], "BOOKMARK", "{bookmark}");
    assert_eq!(rv(&bookmark["object"]), api.double.resource_version());

    let mut changed = web1.clone();
    changed["endpoints"][0]["addresses"][0] = json!("10.0.0.9");
    let (status, _) = api
        .send(
            reqwest::Method::PUT,
            &format!("{SLICES}/web-1"),
            Some(&changed),
        )
        .await;
    assert_eq!(status, 200);
    let modified = events.next_change().await.unwrap();
    assert_eq!(modified["type"], "MODIFIED");
    assert_eq!(
        modified["object"]["endpoints"][0]["addresses"][0],
        "10.0.0.9"
    );
    // The stale resourceVersion of `changed` now conflicts.
    let (status, _) = api
        .send(
            reqwest::Method::PUT,
            &format!("{SLICES}/web-1"),
            Some(&changed),
        )
        .await;
    assert_eq!(status, 409);

    // Relabelled out of the selection: DELETED for this watch.
    let mut relabelled = modified["object"].clone();
    relabelled["metadata"]["labels"]["kubernetes.io/service-name"] = json!("other");
    api.send(
        reqwest::Method::PUT,
        &format!("{SLICES}/web-1"),
        Some(&relabelled),
    )
    .await;
    let left = events.next_change().await.unwrap();
    assert_eq!(
        (
            left["type"].as_str(),
            left["object"]["metadata"]["name"].as_str()
        ),
        (Some("DELETED"), Some("web-1"))
    );

    // Compaction: the open watch gets an ERROR event with a 410 Status, then the end.
    api.double.expire();
    let error = events.next_change().await.unwrap();
    assert_eq!(error["type"], "ERROR", "{error}");
    assert_eq!(
        (
            error["object"]["code"].as_u64(),
            error["object"]["reason"].as_str()
        ),
        (Some(410), Some("Expired"))
    );
    assert!(
        events.next().await.is_none(),
        "the stream goes on after a 410"
    );
    // Resuming from the old version: the same, in a 200 stream.
    let mut again = api.watch(&format!("resourceVersion={from}")).await;
    let error = again.next().await.unwrap();
    assert_eq!(
        (error["type"].as_str(), error["object"]["code"].as_u64()),
        (Some("ERROR"), Some(410))
    );
}

#[tokio::test]
async fn streaming_lists_and_timeouts() {
    let api = api().await;
    api.create(&slice("web-1", "web", "10.0.0.1")).await;
    api.create(&slice("web-2", "web", "10.0.0.2")).await;
    let mut events = api
        .watch("sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&resourceVersion=0&timeoutSeconds=1")
        .await;
    for name in ["web-1", "web-2"] {
        let added = events.next().await.unwrap();
        assert_eq!(
            (
                added["type"].as_str(),
                added["object"]["metadata"]["name"].as_str()
            ),
            (Some("ADDED"), Some(name))
        );
    }
    let end = events.next().await.unwrap();
    assert_eq!(end["type"], "BOOKMARK");
    assert_eq!(
        end["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
    let started = Instant::now();
    while events.next().await.is_some() {}
    println!(
        "watch with timeoutSeconds=1 ended after {:?}",
        started.elapsed()
    );

    // sendInitialEvents without resourceVersionMatch=NotOlderThan is invalid.
    let (status, _) = api
        .send(
            reqwest::Method::GET,
            &format!("{SLICES}?watch=true&sendInitialEvents=true&allowWatchBookmarks=true"),
            None,
        )
        .await;
    assert_eq!(status, 422);
}
