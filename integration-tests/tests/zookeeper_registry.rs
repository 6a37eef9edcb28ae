//! The zookeeper registry against a real ZooKeeper (Debian package `zookeeper`), with nodes
//! written by Python kazoo, reading the update stream of
//! `switchyard_zookeeper::ZooKeeperFactory` directly: the exact updates of a first sync, an
//! add, a weight change, a removal, a malformed node and a deleted service; a dead server
//! listed first failing over to a live one; and the recover wrapper's retries staying
//! within their backoff bounds while no server answers, ending in a `Reset`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use switchyard_integration_tests::zookeeper::{curator_instance, Kazoo, ZooKeeperServer};
use switchyard_integration_tests::{driven, free_port};
use switchyard_registry::{
    recover, Backoff, Endpoint, Registry, RegistryContext, RegistryFactory, ServiceQuery,
    SourceEvent, Update, UpdateStream,
};
use switchyard_zookeeper::ZooKeeperFactory;

/// Generous bound for anything that should take milliseconds.
const WAIT: Duration = Duration::from_secs(15);

fn build(servers: &[String]) -> (Arc<dyn Registry>, RegistryContext) {
    let ctx = RegistryContext::new("zk-test");
    let registry = ZooKeeperFactory
        .build(
            ctx.clone(),
            &serde_json::json!({"servers": servers, "session_timeout": "4s", "connect_timeout": "1s"}),
        )
        .unwrap_or_else(|issues| panic!("{issues:?}"));
    (registry, ctx)
}

/// An update in a short, comparable form: `Reset 127.0.0.1:9001w1`, `Remove 127.0.0.1:9002`.
fn show(update: &Update) -> String {
    let endpoints = |endpoints: &[Arc<Endpoint>]| {
        endpoints
            .iter()
            .map(|e| format!("{}w{}", e.address, e.weight))
            .collect::<Vec<_>>()
            .join(" ")
    };
    match update {
        Update::Reset(e) => format!("Reset {}", endpoints(e)).trim_end().to_owned(),
        Update::Add(e) => format!("Add {}", endpoints(e)),
        Update::Remove(a) => format!(
            "Remove {}",
            a.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" ")
        ),
        Update::DoesNotExist => "DoesNotExist".into(),
    }
}

async fn next(stream: &mut UpdateStream) -> String {
    match tokio::time::timeout(WAIT, stream.next()).await {
        Ok(Some(Ok(update))) => show(&update),
        other => panic!("no update: {other:?}"),
    }
}

fn instance(port: u16, payload: &str) -> String {
    curator_instance(
        "echo",
        &port.to_string(),
        ([127, 0, 0, 1], port).into(),
        payload,
    )
}

#[tokio::test]
async fn first_sync_add_reweight_remove_malformed_and_deletion_are_streamed() {
    let zk = ZooKeeperServer::start();
    let mut kazoo = Kazoo::connect(&zk.address(), Duration::from_secs(10));
    kazoo.register("/services/echo/a", &instance(9001, "null"));
    let (registry, ctx) = build(&[zk.address()]);
    let mut stream = registry.watch(&ServiceQuery::new("echo")).await.unwrap();
    assert_eq!(next(&mut stream).await, "Reset 127.0.0.1:9001w1");

    kazoo.register("/services/echo/b", &instance(9002, "null"));
    assert_eq!(next(&mut stream).await, "Add 127.0.0.1:9002w1");

    kazoo.set("/services/echo/b", &instance(9002, r#"{"weight":4}"#));
    assert_eq!(next(&mut stream).await, "Add 127.0.0.1:9002w4");
    // Watches fire once: the data watch was armed again by the read its event caused.
    kazoo.set("/services/echo/b", &instance(9002, r#"{"weight":5}"#));
    assert_eq!(next(&mut stream).await, "Add 127.0.0.1:9002w5");

    // A malformed node: counted, and no update (the set did not change).
    kazoo.register("/services/echo/junk", "{");
    let start = Instant::now();
    while ctx.metrics.errors() == 0 {
        assert!(start.elapsed() < WAIT, "the malformed node was not counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    kazoo.delete("/services/echo/a");
    assert_eq!(next(&mut stream).await, "Remove 127.0.0.1:9001");

    // Emptied (the node stays): an authoritative empty set.
    kazoo.delete("/services/echo/b");
    kazoo.delete("/services/echo/junk");
    let mut seen = next(&mut stream).await;
    if seen != "Remove 127.0.0.1:9002" {
        panic!("expected b removed, got {seen}");
    }
    // Deleted: the service does not exist.
    kazoo.delete("/services/echo");
    seen = next(&mut stream).await;
    assert_eq!(seen, "DoesNotExist");
    // Created again: after "does not exist" comes a full set, whether the exists watch saw
    // the service node before its child (an empty set, then the add) or after.
    kazoo.register("/services/echo/c", &instance(9003, "null"));
    match next(&mut stream).await.as_str() {
        "Reset 127.0.0.1:9003w1" => {}
        "Reset" => assert_eq!(next(&mut stream).await, "Add 127.0.0.1:9003w1"),
        other => panic!("after DoesNotExist: {other}"),
    }

    // A second watch of the same service starts from the current set.
    let mut again = registry.watch(&ServiceQuery::new("echo")).await.unwrap();
    assert_eq!(next(&mut again).await, "Reset 127.0.0.1:9003w1");
    // A service that never existed.
    let mut missing = registry.watch(&ServiceQuery::new("nothing")).await.unwrap();
    assert_eq!(next(&mut missing).await, "DoesNotExist");
}

#[tokio::test]
async fn a_dead_server_listed_first_fails_over_to_a_live_one() {
    let zk = ZooKeeperServer::start();
    let mut kazoo = Kazoo::connect(&zk.address(), Duration::from_secs(10));
    kazoo.register("/services/echo/a", &instance(9001, "null"));
    let dead = format!("127.0.0.1:{}", free_port());
    let (registry, _) = build(&[dead, zk.address()]);
    let mut stream = registry.watch(&ServiceQuery::new("echo")).await.unwrap();
    assert_eq!(next(&mut stream).await, "Reset 127.0.0.1:9001w1");
}

#[tokio::test]
async fn retries_stay_within_the_backoff_bounds_and_the_first_answer_is_a_reset() {
    // A port nothing listens on yet; ZooKeeper starts there later.
    let mut zk = ZooKeeperServer::start();
    let address = zk.address();
    zk.stop();
    let (registry, _) = build(&[address]);
    let backoff = Backoff {
        initial: Duration::from_millis(100),
        max: Duration::from_millis(800),
        slow_retry: Duration::from_secs(1),
    };
    let mut events = driven(recover(registry, ServiceQuery::new("echo"), backoff));
    let start = Instant::now();
    let mut errors = 0;
    while start.elapsed() < Duration::from_secs(6) {
        match tokio::time::timeout(Duration::from_secs(6), events.next()).await {
            Ok(Some(SourceEvent::Error(error))) => {
                errors += 1;
                if errors == 1 {
                    println!("first error: {error}");
                }
            }
            Ok(other) => panic!("no server, yet {other:?}"),
            Err(_) => break,
        }
    }
    // Delays of 100 ms doubling to 800 ms, each jittered to between half and all of it:
    // at least 50+100+200+400+400+... and at most 100+200+400+800+800+... in 6 s, plus the
    // time each refused connection takes.
    println!("errors in 6 s with no server: {errors}");
    assert!((5..=20).contains(&errors), "{errors} retries in 6 s");

    zk.restart();
    let mut kazoo = Kazoo::connect(&zk.address(), Duration::from_secs(10));
    kazoo.register("/services/echo/a", &instance(9001, "null"));
    let deadline = Instant::now() + WAIT * 2;
    loop {
        match tokio::time::timeout(WAIT, events.next()).await {
            Ok(Some(SourceEvent::Update(update))) => {
                let shown = show(&update);
                assert!(
                    shown == "Reset 127.0.0.1:9001w1"
                        || shown == "DoesNotExist"
                        || shown == "Reset",
                    "{shown}"
                );
                if shown == "Reset 127.0.0.1:9001w1" {
                    break;
                }
            }
            Ok(Some(SourceEvent::Error(_))) => {}
            other => panic!("{other:?}"),
        }
        assert!(
            Instant::now() < deadline,
            "no Reset after the server came up"
        );
    }
}
