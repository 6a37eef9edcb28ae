//! The response cache through the real binary, in front of an origin that speaks HTTP
//! caching: HIT after MISS (and HEAD from a stored GET), `no-store` and `private` never
//! stored, `Vary` respected, 304 revalidation with the origin and 304s answered from the
//! cache, 100 concurrent requests on a cold key making one origin request, purge through
//! the admin API, invalidation by a POST, and a stale answer when the origin fails.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use switchyard_integration_tests::gateway::Reply;
use switchyard_integration_tests::Gateway;

/// Header pairs an origin request carried.
type Headers = Vec<(String, String)>;

/// An origin whose answers depend on the path:
/// - `/fresh/...`: `max-age=60`, `ETag: "m1"`, body `<path> #<n>` (n = its hit count);
/// - `/no-store`, `/private`: the same with `no-store` / `private`;
/// - `/vary`: `max-age=60`, `Vary: Accept-Language`, body `<lang> #<n>`;
/// - `/etag`: `max-age=0`, `ETag: "v1"`, 304 to `If-None-Match: "v1"`;
/// - `/slow/...`: like `/fresh` after 300 ms;
/// - `/flaky`: `max-age=1`, or 500 while `fail` is set.
#[derive(Default)]
struct Origin {
    hits: Mutex<HashMap<String, usize>>,
    seen: Mutex<Vec<(String, Headers)>>,
    fail: AtomicBool,
}

impl Origin {
    async fn start() -> (Arc<Origin>, SocketAddr) {
        let origin = Arc::new(Origin::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let state = origin.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = state.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(state.answer(request).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (origin, address)
    }

    fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    fn last_headers(&self, path: &str) -> Headers {
        let seen = self.seen.lock().unwrap();
        seen.iter()
            .rev()
            .find(|(p, _)| p == path)
            .map(|(_, h)| h.clone())
            .unwrap_or_default()
    }

    async fn answer(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = request
            .uri()
            .path_and_query()
            .map_or("/".into(), |p| p.to_string());
        let header = |name: &str| {
            request
                .headers()
                .get(name)
                .map(|v| v.to_str().unwrap_or("").to_owned())
        };
        let n = {
            let mut hits = self.hits.lock().unwrap();
            let n = hits.entry(path.clone()).or_default();
            *n += 1;
            *n
        };
        self.seen.lock().unwrap().push((
            path.clone(),
            request
                .headers()
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
                .collect(),
        ));
        let mut builder = Response::builder();
        let body;
        if request.method() == hyper::Method::POST {
            body = "posted".to_owned();
        } else if path.starts_with("/fresh") || path.starts_with("/slow") {
            if path.starts_with("/slow") {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            builder = builder
                .header("cache-control", "max-age=60")
                .header("etag", "\"m1\"");
            body = format!("{path} #{n}");
        } else if path == "/no-store" {
            builder = builder.header("cache-control", "no-store, max-age=60");
            body = format!("{path} #{n}");
        } else if path == "/private" {
            builder = builder.header("cache-control", "private, max-age=60");
            body = format!("{path} #{n}");
        } else if path == "/vary" {
            builder = builder
                .header("cache-control", "max-age=60")
                .header("vary", "Accept-Language");
            body = format!("{} #{n}", header("accept-language").unwrap_or_default());
        } else if path == "/etag" {
            builder = builder
                .header("cache-control", "max-age=0")
                .header("etag", "\"v1\"");
            if header("if-none-match").as_deref() == Some("\"v1\"") {
                return builder.status(304).body(Full::new(Bytes::new())).unwrap();
            }
            body = format!("etag body #{n}");
        } else if path == "/flaky" {
            if self.fail.load(Ordering::SeqCst) {
                return builder
                    .status(500)
                    .body(Full::new(Bytes::from("down")))
                    .unwrap();
            }
            builder = builder.header("cache-control", "max-age=1");
            body = format!("flaky #{n}");
        } else {
            body = format!("{path} #{n}");
        }
        builder.body(Full::new(Bytes::from(body))).unwrap()
    }
}

async fn setup() -> (Arc<Origin>, Gateway) {
    let (origin, address) = Origin::start().await;
    let gw = Gateway::start(&format!(
        r#"
[registries.local]
type = "static"
services.origin = ["{address}"]

[upstreams.origin]
[[upstreams.origin.sources]]
registry = "local"
service = "origin"

[[routes]]
name = "cached"
path_prefix = "/"
upstream = "origin"
cache = {{ max_ttl = "5m", stale_if_error = "1m", max_bytes = "8MiB", max_entries = 1000 }}
"#
    ))
    .await;
    (origin, gw)
}

fn x_cache(reply: &Reply) -> &str {
    reply
        .headers
        .get("x-cache")
        .map_or("-", |v| v.to_str().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hit_after_miss_and_no_store_never_cached() {
    let (origin, gw) = setup().await;
    let first = gw.get("/fresh/a").await;
    assert_eq!(
        (first.status, x_cache(&first), first.body.as_str()),
        (200, "MISS", "/fresh/a #1")
    );
    let second = gw.get("/fresh/a").await;
    assert_eq!(
        (second.status, x_cache(&second), second.body.as_str()),
        (200, "HIT", "/fresh/a #1")
    );
    assert!(second.headers.contains_key("age"), "{second:?}");
    assert_ne!(
        first.headers.get("x-request-id"),
        second.headers.get("x-request-id"),
        "a HIT carries its own request id"
    );
    assert_eq!(origin.hits("/fresh/a"), 1);

    let head = gw.send(gw.client().head(gw.url("/fresh/a"))).await;
    assert_eq!((head.status, x_cache(&head)), (200, "HIT"));
    assert_eq!(head.headers.get("content-length").unwrap(), "11");
    assert_eq!(
        origin.hits("/fresh/a"),
        1,
        "HEAD answered from the stored GET"
    );

    let other = gw.get("/fresh/a?page=2").await;
    assert_eq!(x_cache(&other), "MISS", "the query is part of the key");

    for path in ["/no-store", "/private"] {
        for i in 1..=3 {
            let reply = gw.get(path).await;
            assert_eq!(
                (x_cache(&reply), reply.body.clone()),
                ("MISS", format!("{path} #{i}"))
            );
        }
        assert_eq!(origin.hits(path), 3, "{path} never stored");
    }

    // A client's own no-store bypasses the cache.
    let bypass = gw
        .send(
            gw.client()
                .get(gw.url("/fresh/a"))
                .header("cache-control", "no-store"),
        )
        .await;
    assert_eq!(
        (x_cache(&bypass), bypass.body.as_str()),
        ("MISS", "/fresh/a #2")
    );

    let metrics = gw
        .send(gw.client().get(gw.admin_url("/metrics")))
        .await
        .body;
    assert!(
        metrics.contains("switchyard_cache_total{route=\"cached\",result=\"hit\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("switchyard_cache_entries{route=\"cached\"} 2"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vary_is_respected() {
    let (origin, gw) = setup().await;
    let lang = |l: &str| {
        gw.client()
            .get(gw.url("/vary"))
            .header("accept-language", l.to_owned())
    };
    let mut seen = Vec::new();
    for l in ["en", "fr", "en", "fr", "de"] {
        let reply = gw.send(lang(l)).await;
        seen.push(format!("{} {}", x_cache(&reply), reply.body));
    }
    assert_eq!(
        seen,
        [
            "MISS en #1",
            "MISS fr #2",
            "HIT en #1",
            "HIT fr #2",
            "MISS de #3"
        ]
    );
    assert_eq!(origin.hits("/vary"), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revalidation_with_304() {
    let (origin, gw) = setup().await;
    let first = gw.get("/etag").await;
    assert_eq!(
        (x_cache(&first), first.body.as_str()),
        ("MISS", "etag body #1")
    );
    // Stale at once (max-age=0) but it has an ETag: the gateway asks the origin.
    let second = gw.get("/etag").await;
    assert_eq!(
        (second.status, x_cache(&second), second.body.as_str()),
        (200, "HIT", "etag body #1")
    );
    assert_eq!(origin.hits("/etag"), 2);
    let asked = origin.last_headers("/etag");
    assert!(
        asked
            .iter()
            .any(|(k, v)| k == "if-none-match" && v == "\"v1\""),
        "the gateway revalidated with the stored ETag: {asked:?}"
    );

    // A client's conditional request on a fresh entry: 304 from the cache itself.
    gw.get("/fresh/c").await;
    let conditional = gw
        .send(
            gw.client()
                .get(gw.url("/fresh/c"))
                .header("if-none-match", "\"m1\""),
        )
        .await;
    assert_eq!(
        (conditional.status, x_cache(&conditional)),
        (304, "HIT"),
        "{conditional:?}"
    );
    assert!(conditional.body.is_empty());
    let changed = gw
        .send(
            gw.client()
                .get(gw.url("/fresh/c"))
                .header("if-none-match", "\"old\""),
        )
        .await;
    assert_eq!(
        (changed.status, changed.body.as_str()),
        (200, "/fresh/c #1")
    );
    assert_eq!(origin.hits("/fresh/c"), 1);

    let metrics = gw
        .send(gw.client().get(gw.admin_url("/metrics")))
        .await
        .body;
    assert!(
        metrics.contains("switchyard_cache_total{route=\"cached\",result=\"revalidated\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_cold_requests_make_one_upstream_request() {
    let (origin, gw) = setup().await;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(200)
        .build()
        .unwrap();
    let url = gw.url("/slow/cold");
    let replies = futures::future::join_all((0..100).map(|_| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let r = client.get(url).send().await.expect("request");
            let cache = r
                .headers()
                .get("x-cache")
                .map(|v| v.to_str().unwrap().to_owned());
            (
                r.status().as_u16(),
                cache.unwrap_or_default(),
                r.text().await.unwrap(),
            )
        }
    }))
    .await;
    let misses = replies.iter().filter(|(_, c, _)| c == "MISS").count();
    let hits = replies.iter().filter(|(_, c, _)| c == "HIT").count();
    println!(
        "100 concurrent: origin requests {}, MISS {misses}, HIT {hits}",
        origin.hits("/slow/cold")
    );
    assert!(
        replies
            .iter()
            .all(|(s, _, b)| *s == 200 && b == "/slow/cold #1"),
        "{replies:?}"
    );
    assert_eq!(origin.hits("/slow/cold"), 1);
    assert_eq!((misses, hits), (1, 99));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_and_invalidation() {
    let (origin, gw) = setup().await;
    for path in ["/fresh/p/1", "/fresh/p/2", "/fresh/q"] {
        gw.get(path).await;
        assert_eq!(x_cache(&gw.get(path).await), "HIT");
    }
    let purge = |query: &str| {
        gw.client()
            .post(gw.admin_url(&format!("/api/cache/purge{query}")))
    };
    let reply = gw.send(purge("?prefix=/fresh/p/")).await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (200, r#"{"purged":2}"#)
    );
    assert_eq!(x_cache(&gw.get("/fresh/p/1").await), "MISS");
    assert_eq!(
        x_cache(&gw.get("/fresh/q").await),
        "HIT",
        "outside the prefix"
    );
    let reply = gw.send(purge("?route=cached&path=/fresh/q")).await;
    assert_eq!(reply.body, r#"{"purged":1}"#);
    assert_eq!(x_cache(&gw.get("/fresh/q").await), "MISS");
    let reply = gw.send(purge("?route=nope")).await;
    assert_eq!(reply.body, r#"{"purged":0}"#);
    assert_eq!(gw.send(purge("?colour=red")).await.status, 400);
    assert_eq!(origin.hits("/fresh/q"), 2);

    // A successful POST to a URL forgets what was stored for it.
    assert_eq!(x_cache(&gw.get("/fresh/q").await), "HIT");
    let posted = gw
        .send(gw.client().post(gw.url("/fresh/q")).body("x"))
        .await;
    assert_eq!(posted.status, 200);
    let after = gw.get("/fresh/q").await;
    assert_eq!(
        (x_cache(&after), after.body.as_str()),
        ("MISS", "/fresh/q #4")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_served_when_the_origin_fails() {
    let (origin, gw) = setup().await;
    let first = gw.get("/flaky").await;
    assert_eq!((x_cache(&first), first.body.as_str()), ("MISS", "flaky #1"));
    origin.fail.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let stale = gw.get("/flaky").await;
    assert_eq!(
        (stale.status, x_cache(&stale), stale.body.as_str()),
        (200, "STALE", "flaky #1")
    );
    assert_eq!(origin.hits("/flaky"), 2, "the origin was asked first");
    origin.fail.store(false, Ordering::SeqCst);
    // A HEAD on a stale entry goes upstream; its (bodiless) answer is not stored.
    let head = gw.send(gw.client().head(gw.url("/flaky"))).await;
    assert_eq!((head.status, x_cache(&head)), (200, "MISS"));
    let fresh = gw.get("/flaky").await;
    assert_eq!((x_cache(&fresh), fresh.body.as_str()), ("MISS", "flaky #4"));
    let again = gw.get("/flaky").await;
    assert_eq!((x_cache(&again), again.body.as_str()), ("HIT", "flaky #4"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_the_cache_when_its_settings_are_unchanged() {
    let (origin, address) = Origin::start().await;
    let config = |cache: &str| {
        format!(
            r#"
[registries.local]
type = "static"
services.origin = ["{address}"]

[upstreams.origin]
[[upstreams.origin.sources]]
registry = "local"
service = "origin"

[[routes]]
name = "cached"
path_prefix = "/"
upstream = "origin"
cache = {cache}
"#
        )
    };
    let gw = Gateway::start(&config("{ max_entries = 100 }")).await;
    gw.get("/fresh/r").await;
    // Same cache settings, another route key changed: the store is kept.
    gw.write_config(
        &config("{ max_entries = 100 }").replace("[[routes]]", "[[routes]]\ntimeout = \"10s\""),
    );
    assert_eq!(
        gw.send(gw.client().post(gw.admin_url("/api/reload")))
            .await
            .status,
        200
    );
    assert_eq!(x_cache(&gw.get("/fresh/r").await), "HIT");
    // Other limits: a new, empty store.
    gw.write_config(&config("{ max_entries = 200 }"));
    assert_eq!(
        gw.send(gw.client().post(gw.admin_url("/api/reload")))
            .await
            .status,
        200
    );
    assert_eq!(x_cache(&gw.get("/fresh/r").await), "MISS");
    assert_eq!(origin.hits("/fresh/r"), 2);
    let stats = gw.admin_json("/api/stats").await;
    assert_eq!(
        stats["routes"][0]["requests"], 3,
        "usage survives reloads: {stats}"
    );
}
