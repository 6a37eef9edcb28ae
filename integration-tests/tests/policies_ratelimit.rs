//! Rate limits through the real binary: the burst goes through, then 429 with
//! `Retry-After` and `RateLimit-*`; buckets per consumer and per header; two gateways
//! sharing one limit through a real Redis (`apt-get install redis-server`); Redis going
//! away with `fail = "open"` and `fail = "closed"`, counted in the metrics, and coming back.

use std::time::Duration;

use switchyard_integration_tests::redis::RedisServer;
use switchyard_integration_tests::{eventually, Backend, Gateway};

fn upstream(backend: &Backend) -> String {
    format!(
        r#"
[registries.local]
type = "static"
services.api = ["{}"]

[upstreams.api]
[[upstreams.api.sources]]
registry = "local"
service = "api"
"#,
        backend.address()
    )
}

fn header<'a>(reply: &'a switchyard_integration_tests::gateway::Reply, name: &str) -> &'a str {
    reply
        .headers
        .get(name)
        .map_or("", |v| v.to_str().unwrap_or(""))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_then_429_with_retry_after() {
    let backend = Backend::start("api");
    let gw = Gateway::start(&format!(
        r#"{}
[[routes]]
name = "limited"
path_prefix = "/"
upstream = "api"
rate_limit = {{ rate = 1, per = "1m", burst = 3 }}
"#,
        upstream(&backend)
    ))
    .await;
    for remaining in ["2", "1", "0"] {
        let reply = gw.get("/x").await;
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(header(&reply, "ratelimit-limit"), "3");
        assert_eq!(header(&reply, "ratelimit-remaining"), remaining);
    }
    let refused = gw.get("/x").await;
    assert_eq!(refused.status, 429, "{refused:?}");
    let retry: u64 = header(&refused, "retry-after")
        .parse()
        .expect("Retry-After in seconds");
    println!(
        "Retry-After: {retry} s, RateLimit-Reset: {}",
        header(&refused, "ratelimit-reset")
    );
    assert!((55..=60).contains(&retry), "one token per minute: {retry}");
    assert_eq!(header(&refused, "ratelimit-remaining"), "0");
    assert!(
        refused.body.contains("rate limit exceeded"),
        "{}",
        refused.body
    );
    assert_eq!(
        backend.hits(),
        3,
        "the refused request never reached the upstream"
    );

    let metrics = gw
        .send(gw.client().get(gw.admin_url("/metrics")))
        .await
        .body;
    for line in [
        "switchyard_rate_limit_total{route=\"limited\",result=\"allowed\"} 3",
        "switchyard_rate_limit_total{route=\"limited\",result=\"limited\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buckets_per_consumer_and_per_header() {
    let backend = Backend::start("api");
    let gw = Gateway::start(&format!(
        r#"{}
[consumers.alice]
keys = ["alice-key"]
[consumers.bob]
keys = ["bob-key"]

[[routes]]
name = "per-consumer"
path_prefix = "/c"
upstream = "api"
auth = ["key"]
rate_limit = {{ rate = 1, per = "1m", burst = 2, key = "consumer" }}

[[routes]]
name = "per-header"
path_prefix = "/h"
upstream = "api"
rate_limit = {{ rate = 1, per = "1m", burst = 1, key = "header:x-user" }}
"#,
        upstream(&backend)
    ))
    .await;
    let as_key = |key: &str| {
        gw.client()
            .get(gw.url("/c"))
            .header("apikey", key.to_owned())
    };
    let mut statuses = Vec::new();
    for key in [
        "alice-key",
        "alice-key",
        "alice-key",
        "bob-key",
        "bob-key",
        "bob-key",
    ] {
        statuses.push(gw.send(as_key(key)).await.status);
    }
    assert_eq!(statuses, [200, 200, 429, 200, 200, 429]);

    let as_user = |user: &str| {
        gw.client()
            .get(gw.url("/h"))
            .header("x-user", user.to_owned())
    };
    let mut statuses = Vec::new();
    for user in ["u1", "u1", "u2", "u2"] {
        statuses.push(gw.send(as_user(user)).await.status);
    }
    assert_eq!(statuses, [200, 429, 200, 429]);
}

fn redis_config(backend: &Backend, redis: &RedisServer) -> String {
    format!(
        r#"{}
[[routes]]
name = "shared"
path_prefix = "/shared"
upstream = "api"
rate_limit = {{ rate = 1, per = "1m", burst = 5, backend = "redis", redis_url = "{url}" }}

[[routes]]
name = "open"
path_prefix = "/open"
upstream = "api"
rate_limit = {{ rate = 100, burst = 100, backend = "redis", redis_url = "{url}", fail = "open" }}

[[routes]]
name = "closed"
path_prefix = "/closed"
upstream = "api"
rate_limit = {{ rate = 100, burst = 100, backend = "redis", redis_url = "{url}", fail = "closed" }}
"#,
        upstream(backend),
        url = redis.url()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_share_one_redis_limit() {
    let redis = RedisServer::start();
    let backend = Backend::start("api");
    let config = redis_config(&backend, &redis);
    let (one, two) = (Gateway::start(&config).await, Gateway::start(&config).await);
    let mut allowed = [0, 0];
    let mut refused = 0;
    for i in 0..10 {
        let gw = if i % 2 == 0 { &one } else { &two };
        let reply = gw.get("/shared").await;
        match reply.status {
            200 => allowed[i % 2] += 1,
            429 => {
                refused += 1;
                let retry: u64 = header(&reply, "retry-after").parse().unwrap();
                assert!((1..=60).contains(&retry), "{retry}");
            }
            other => panic!("unexpected {other}: {reply:?}"),
        }
    }
    println!(
        "allowed by gateway one {}, two {}; refused {refused}",
        allowed[0], allowed[1]
    );
    assert_eq!(allowed[0] + allowed[1], 5, "one shared burst of 5");
    assert_eq!(
        (allowed[0], allowed[1]),
        (3, 2),
        "both gateways drew from it"
    );
    assert_eq!(refused, 5);
    assert_eq!(backend.hits(), 5);
    assert_eq!(
        redis
            .command(&["EXISTS", "switchyard:ratelimit:shared:ip:127.0.0.1"])
            .unwrap(),
        ":1",
        "the bucket lives in Redis"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_fails_open_or_closed_as_configured() {
    let mut redis = RedisServer::start();
    let backend = Backend::start("api");
    let gw = Gateway::start(&redis_config(&backend, &redis)).await;
    assert_eq!(gw.get("/open").await.status, 200);
    assert_eq!(gw.get("/closed").await.status, 200);

    redis.stop();
    for _ in 0..3 {
        let open = gw.get("/open").await;
        assert_eq!(open.status, 200, "fail open: {open:?}");
        let closed = gw.get("/closed").await;
        assert_eq!(closed.status, 503, "fail closed: {closed:?}");
        assert!(
            closed.body.contains("rate limiter unavailable"),
            "{}",
            closed.body
        );
        assert_eq!(header(&closed, "retry-after"), "1");
    }
    let metrics = gw
        .send(gw.client().get(gw.admin_url("/metrics")))
        .await
        .body;
    for line in [
        "switchyard_rate_limit_total{route=\"open\",result=\"failed_open\"} 3",
        "switchyard_rate_limit_total{route=\"closed\",result=\"failed_closed\"} 3",
        "switchyard_rate_limit_backend_errors_total{route=\"open\"} 3",
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }

    redis.restart();
    eventually(
        "limits work again once Redis is back",
        Duration::from_secs(25),
        || async { gw.get("/closed").await.status == 200 },
    )
    .await;
    assert_eq!(
        redis
            .command(&["EXISTS", "switchyard:ratelimit:closed:ip:127.0.0.1"])
            .unwrap(),
        ":1"
    );
}
