//! The etcd registry against a real etcd (Debian package `etcd-server`): each test starts its
//! own server on free loopback ports, writes keys with the etcd client or `etcdctl`, and
//! reads the update stream of `switchyard_etcd::EtcdFactory`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Client, CompactionOptions, GetOptions};
use futures::StreamExt;
use switchyard_etcd::register::{self, RegisterOptions};
use switchyard_etcd::EtcdFactory;
use switchyard_integration_tests::driven;
use switchyard_integration_tests::etcd::EtcdServer;
use switchyard_registry::{
    recover, Backoff, Endpoint, Registry, RegistryContext, RegistryFactory, ServiceQuery,
    SourceEvent, Update, UpdateStream,
};

const PREFIX: &str = "/switchyard/services";
/// Generous bound for anything that should take milliseconds.
const WAIT: Duration = Duration::from_secs(10);

// === helpers ===

fn build(server_urls: &[String]) -> (Arc<dyn Registry>, RegistryContext) {
    let ctx = RegistryContext::new("etcd-test");
    let registry = EtcdFactory
        .build(
            ctx.clone(),
            &serde_json::json!({ "endpoints": server_urls }),
        )
        .unwrap_or_else(|issues| panic!("{issues:?}"));
    (registry, ctx)
}

async fn client(server: &EtcdServer) -> Client {
    Client::connect([server.client_url()], None)
        .await
        .expect("etcd client")
}

async fn put(client: &mut Client, key: &str, value: &str) {
    client.put(key, value, None).await.expect("put");
}

fn key(service: &str, instance: &str) -> String {
    format!("{PREFIX}/{service}/{instance}")
}

fn json(port: u16, weight: u32) -> String {
    format!(
        r#"{{"host":"127.0.0.1","port":{port},"weight":{weight},"metadata":{{"zone":"z{port}"}}}}"#
    )
}

/// An update in a short, comparable form: `Reset 127.0.0.1:9001w1`, `Remove 127.0.0.1:9002`.
fn show(update: &Update) -> String {
    let endpoints = |endpoints: &[std::sync::Arc<Endpoint>]| {
        endpoints
            .iter()
            .map(|e| format!(" {}w{}", e.address, e.weight))
            .collect::<String>()
    };
    match update {
        Update::Reset(e) => format!("Reset{}", endpoints(e)),
        Update::Add(e) => format!("Add{}", endpoints(e)),
        Update::Remove(a) => format!(
            "Remove{}",
            a.iter().map(|a| format!(" {a}")).collect::<String>()
        ),
        Update::DoesNotExist => "DoesNotExist".into(),
    }
}

/// The next update of `stream`, shown; panics on an error, an end, or nothing within 10 s.
async fn next(stream: &mut UpdateStream) -> String {
    match tokio::time::timeout(WAIT, stream.next()).await {
        Ok(Some(Ok(update))) => show(&update),
        Ok(Some(Err(err))) => panic!("stream error: {err}"),
        Ok(None) => panic!("stream ended"),
        Err(_) => panic!("no update within {WAIT:?}"),
    }
}

/// Applies an update to a set kept by address, as the upstream cache does.
fn apply(set: &mut BTreeMap<SocketAddr, Endpoint>, update: &Update) {
    match update {
        Update::Reset(endpoints) => {
            set.clear();
            set.extend(endpoints.iter().map(|e| (e.address, Endpoint::clone(e))));
        }
        Update::Add(endpoints) => {
            set.extend(endpoints.iter().map(|e| (e.address, Endpoint::clone(e))))
        }
        Update::Remove(addresses) => addresses.iter().for_each(|a| drop(set.remove(a))),
        Update::DoesNotExist => set.clear(),
    }
}

fn ports(set: &BTreeMap<SocketAddr, Endpoint>) -> Vec<u16> {
    set.keys().map(SocketAddr::port).collect()
}

// === tests ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puts_deletes_and_changes_are_streamed() {
    let server = EtcdServer::start();
    let mut etcd = client(&server).await;
    put(&mut etcd, &key("echo", "a"), &json(9001, 1)).await;
    let (registry, _) = build(&[server.client_url()]);

    let mut echo = registry.watch(&ServiceQuery::new("echo")).await.unwrap();
    assert_eq!(next(&mut echo).await, "Reset 127.0.0.1:9001w1");

    // A plain host:port written by etcdctl, as a user would.
    server.etcdctl(&["put", &key("echo", "b"), "127.0.0.1:9002"]);
    assert_eq!(next(&mut echo).await, "Add 127.0.0.1:9002w1");

    // Re-weighted in place.
    put(&mut etcd, &key("echo", "a"), &json(9001, 5)).await;
    assert_eq!(next(&mut echo).await, "Add 127.0.0.1:9001w5");

    // Moved: the new address comes before the old one goes.
    put(&mut etcd, &key("echo", "a"), &json(9003, 5)).await;
    assert_eq!(next(&mut echo).await, "Add 127.0.0.1:9003w5");
    assert_eq!(next(&mut echo).await, "Remove 127.0.0.1:9001");

    // Rewriting the same value is no change: the next update is the delete.
    put(&mut etcd, &key("echo", "a"), &json(9003, 5)).await;
    server.etcdctl(&["del", &key("echo", "b")]);
    assert_eq!(next(&mut echo).await, "Remove 127.0.0.1:9002");

    // A service with no keys at all is an authoritative empty set.
    let mut empty = registry.watch(&ServiceQuery::new("nothing")).await.unwrap();
    assert_eq!(next(&mut empty).await, "Reset");
    // A second subscriber of a watched service starts from the current set.
    let mut again = registry.watch(&ServiceQuery::new("echo")).await.unwrap();
    assert_eq!(next(&mut again).await, "Reset 127.0.0.1:9003w5");

    server.etcdctl(&["del", "--prefix", &format!("{PREFIX}/echo/")]);
    assert_eq!(next(&mut echo).await, "Remove 127.0.0.1:9003");
    assert_eq!(next(&mut again).await, "Remove 127.0.0.1:9003");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_watched_again_starts_from_its_current_set() {
    let server = EtcdServer::start();
    let mut etcd = client(&server).await;
    put(&mut etcd, &key("echo", "a"), &json(9001, 1)).await;
    put(&mut etcd, &key("echo", "b"), &json(9002, 1)).await;
    put(&mut etcd, &key("keep", "a"), &json(9100, 1)).await;
    let (registry, _) = build(&[server.client_url()]);
    // `keep` holds the one watch open while `echo` has no subscriber.
    let mut keep = registry.watch(&ServiceQuery::new("keep")).await.unwrap();
    assert_eq!(next(&mut keep).await, "Reset 127.0.0.1:9100w1");
    let mut echo = registry.watch(&ServiceQuery::new("echo")).await.unwrap();
    assert_eq!(
        next(&mut echo).await,
        "Reset 127.0.0.1:9001w1 127.0.0.1:9002w1"
    );
    drop(echo);

    // Changes while nobody watches `echo`: a re-weight, a delete, a new key.
    put(&mut etcd, &key("echo", "a"), &json(9001, 7)).await;
    server.etcdctl(&["del", &key("echo", "b")]);
    put(&mut etcd, &key("echo", "c"), &json(9003, 1)).await;
    // Events arrive in revision order: once `keep` sees this one, the hub has applied the above.
    put(&mut etcd, &key("keep", "b"), &json(9101, 1)).await;
    assert_eq!(next(&mut keep).await, "Add 127.0.0.1:9101w1");

    let mut echo = registry.watch(&ServiceQuery::new("echo")).await.unwrap();
    assert_eq!(
        next(&mut echo).await,
        "Reset 127.0.0.1:9001w7 127.0.0.1:9003w1"
    );
    put(&mut etcd, &key("echo", "d"), &json(9004, 1)).await;
    assert_eq!(next(&mut echo).await, "Add 127.0.0.1:9004w1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_keys_for_one_address_count_once_and_the_first_instance_id_wins() {
    let server = EtcdServer::start();
    let mut etcd = client(&server).await;
    put(&mut etcd, &key("echo", "a"), &json(9001, 2)).await;
    put(&mut etcd, &key("echo", "b"), &json(9001, 7)).await;
    put(&mut etcd, &key("echo", "c"), &json(9000, 1)).await;
    let (registry, _) = build(&[server.client_url()]);
    let mut echo = registry.watch(&ServiceQuery::new("echo")).await.unwrap();
    assert_eq!(
        next(&mut echo).await,
        "Reset 127.0.0.1:9000w1 127.0.0.1:9001w2"
    );
    // With `a` gone, `b` is what remains at that address.
    server.etcdctl(&["del", &key("echo", "a")]);
    assert_eq!(next(&mut echo).await, "Add 127.0.0.1:9001w7");
    server.etcdctl(&["del", &key("echo", "b")]);
    assert_eq!(next(&mut echo).await, "Remove 127.0.0.1:9001");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_of_other_services_or_outside_the_prefix_change_nothing() {
    let server = EtcdServer::start();
    let mut etcd = client(&server).await;
    put(&mut etcd, &key("echo", "a"), "127.0.0.1:9001").await;
    let (registry, _) = build(&[server.client_url()]);
    let mut echo = registry.watch(&ServiceQuery::new("echo")).await.unwrap();
    assert_eq!(next(&mut echo).await, "Reset 127.0.0.1:9001w1");

    put(&mut etcd, &key("other", "a"), "127.0.0.1:9100").await;
    put(&mut etcd, &key("echo-2", "a"), "127.0.0.1:9101").await;
    put(&mut etcd, "/switchyard/servicesX/echo/a", "127.0.0.1:9102").await;
    put(&mut etcd, "/elsewhere/echo/a", "127.0.0.1:9103").await;
    etcd.delete(key("other", "a"), None).await.unwrap();
    // Events arrive in revision order: had any of the keys above produced an update, it
    // would come before this one.
    put(&mut etcd, &key("echo", "sync"), "127.0.0.1:9002").await;
    assert_eq!(next(&mut echo).await, "Add 127.0.0.1:9002w1");

    // The other service is served by the same watch when somebody asks for it.
    let mut other = registry.watch(&ServiceQuery::new("echo-2")).await.unwrap();
    assert_eq!(next(&mut other).await, "Reset 127.0.0.1:9101w1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_values_are_skipped_counted_and_leave_the_others() {
    let server = EtcdServer::start();
    let mut etcd = client(&server).await;
    put(&mut etcd, &key("echo", "good"), &json(9001, 2)).await;
    put(&mut etcd, &key("echo", "bad"), "not an address").await;
    let (registry, ctx) = build(&[server.client_url()]);
    let mut echo = registry.watch(&ServiceQuery::new("echo")).await.unwrap();
    assert_eq!(next(&mut echo).await, "Reset 127.0.0.1:9001w2");
    assert_eq!(ctx.metrics.errors(), 1);

    put(
        &mut etcd,
        &key("echo", "json"),
        r#"{"host":"127.0.0.1","port":"x"}"#,
    )
    .await;
    put(
        &mut etcd,
        &key("echo", "nohost"),
        r#"{"host":"no-such-host.invalid","port":80}"#,
    )
    .await;
    put(&mut etcd, &format!("{PREFIX}/echo"), "127.0.0.1:9009").await;
    // A good instance turning bad is dropped; the others stay.
    put(&mut etcd, &key("echo", "next"), "127.0.0.1:9002").await;
    assert_eq!(next(&mut echo).await, "Add 127.0.0.1:9002w1");
    assert_eq!(
        ctx.metrics.errors(),
        4,
        "json, nohost and the key without instance id"
    );
    put(&mut etcd, &key("echo", "good"), "127.0.0.1:0").await;
    assert_eq!(next(&mut echo).await, "Remove 127.0.0.1:9001");
    assert_eq!(ctx.metrics.errors(), 5);
    // Malformed keys of services nobody watches are not read, so not counted.
    put(&mut etcd, &key("unwatched", "x"), "garbage").await;
    put(&mut etcd, &key("echo", "last"), "127.0.0.1:9003").await;
    assert_eq!(next(&mut echo).await, "Add 127.0.0.1:9003w1");
    assert_eq!(ctx.metrics.errors(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_watch_serves_all_services_and_stops_with_the_last_subscriber() {
    let server = EtcdServer::start();
    let (registry, _) = build(&[server.client_url()]);
    let watchers = || {
        server
            .metric("etcd_debugging_mvcc_watcher_total")
            .expect("metric")
    };
    assert_eq!(watchers(), 0.0);
    let mut streams = Vec::new();
    for service in ["a", "b", "c"] {
        let mut stream = registry.watch(&ServiceQuery::new(service)).await.unwrap();
        assert_eq!(next(&mut stream).await, "Reset");
        streams.push(stream);
    }
    assert_eq!(watchers(), 1.0, "one etcd watcher for three services");
    let mut etcd = client(&server).await;
    put(&mut etcd, &key("b", "1"), "127.0.0.1:9001").await;
    assert_eq!(next(&mut streams[1]).await, "Add 127.0.0.1:9001w1");
    drop(streams);
    let started = Instant::now();
    while watchers() != 0.0 {
        assert!(
            started.elapsed() < WAIT,
            "the watch outlived its subscribers"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "watch closed {:?} after the last subscriber left",
        started.elapsed()
    );
    // A new subscriber starts a new watch (opened right after its first read).
    let mut b = registry.watch(&ServiceQuery::new("b")).await.unwrap();
    assert_eq!(next(&mut b).await, "Reset 127.0.0.1:9001w1");
    let started = Instant::now();
    while watchers() != 1.0 {
        assert!(started.elapsed() < WAIT, "no new watch: {}", watchers());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_endpoint_fails_over_to_a_live_one() {
    let server = EtcdServer::start();
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let mut etcd = client(&server).await;
    put(&mut etcd, &key("echo", "a"), "127.0.0.1:9001").await;
    let (registry, _) = build(&[dead, server.client_url()]);
    let mut echo = registry.watch(&ServiceQuery::new("echo")).await.unwrap();
    assert_eq!(next(&mut echo).await, "Reset 127.0.0.1:9001w1");
    put(&mut etcd, &key("echo", "b"), "127.0.0.1:9002").await;
    assert_eq!(next(&mut echo).await, "Add 127.0.0.1:9002w1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_stopped_breaks_the_stream_and_a_restart_resyncs_with_a_reset() {
    let mut server = EtcdServer::start();
    let mut etcd = client(&server).await;
    put(&mut etcd, &key("echo", "a"), "127.0.0.1:9001").await;
    let (registry, _) = build(&[server.client_url()]);
    let backoff = Backoff {
        initial: Duration::from_millis(100),
        max: Duration::from_millis(500),
        slow_retry: Duration::from_secs(1),
    };
    let mut events = driven(recover(registry, ServiceQuery::new("echo"), backoff));
    let event = tokio::time::timeout(WAIT, events.next())
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(&event, SourceEvent::Update(u) if show(u) == "Reset 127.0.0.1:9001w1"),
        "{event:?}"
    );
    // The watch is running once a change comes through it.
    put(&mut etcd, &key("echo", "c"), "127.0.0.1:9003").await;
    let event = tokio::time::timeout(WAIT, events.next())
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(&event, SourceEvent::Update(u) if show(u) == "Add 127.0.0.1:9003w1"),
        "{event:?}"
    );

    server.stop();
    let stopped = Instant::now();
    let event = tokio::time::timeout(WAIT * 5, events.next())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(event, SourceEvent::Error(_)), "{event:?}");
    println!(
        "stream error {:?} after etcd stopped: {event:?}",
        stopped.elapsed()
    );

    server.restart();
    let mut etcd = client(&server).await;
    put(&mut etcd, &key("echo", "b"), "127.0.0.1:9002").await;
    etcd.delete(key("echo", "a"), None).await.unwrap();
    etcd.delete(key("echo", "c"), None).await.unwrap();
    // Errors may repeat until the reconnect; the first update after them is a Reset, and
    // the set ends as etcd has it.
    let restarted = Instant::now();
    let mut set = BTreeMap::new();
    let mut first_update = None;
    while ports(&set) != [9002] {
        let event = tokio::time::timeout(WAIT * 5, events.next())
            .await
            .unwrap()
            .unwrap();
        if let SourceEvent::Update(update) = event {
            first_update.get_or_insert_with(|| show(&update));
            apply(&mut set, &update);
        }
    }
    let first = first_update.unwrap();
    assert!(
        first.starts_with("Reset"),
        "first update after the restart: {first}"
    );
    // The stale set is never emptied by the outage: an empty Reset would be a lie.
    assert_ne!(first, "Reset", "an empty set was published");
    println!(
        "resynced {:?} after the restart; first update {first}",
        restarted.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compaction_past_the_watch_revision_resyncs_with_a_reset() {
    let server = EtcdServer::start();
    let mut etcd = client(&server).await;
    put(&mut etcd, &key("echo", "a"), "127.0.0.1:9001").await;
    let (registry, _) = build(&[server.client_url()]);
    let mut echo = registry.watch(&ServiceQuery::new("echo")).await.unwrap();
    assert_eq!(next(&mut echo).await, "Reset 127.0.0.1:9001w1");

    // The stream is not read now: the registry waits for its reader, stops reading its
    // watch, and etcd's buffers for it fill up, so etcd leaves the watcher behind.
    // Every write changes the watched service.
    let pad = "x".repeat(8 * 1024);
    let writes = 1200;
    for chunk in (0..writes).collect::<Vec<u32>>().chunks(50) {
        let puts = chunk.iter().map(|i| {
            let mut etcd = etcd.clone();
            let value = format!(
                r#"{{"host":"127.0.0.1","port":9001,"metadata":{{"n":"{i}","pad":"{pad}"}}}}"#
            );
            async move { etcd.put(key("echo", "a"), value, None).await.map(drop) }
        });
        for result in futures::future::join_all(puts).await {
            result.expect("put");
        }
    }
    put(&mut etcd, &key("echo", "b"), "127.0.0.1:9002").await;
    etcd.delete(key("echo", "a"), None).await.unwrap();
    let revision = etcd
        .get("x", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    etcd.compact(revision, Some(CompactionOptions::new().with_physical()))
        .await
        .unwrap();

    // Reading again: the buffered changes, then etcd cancels the watch for the compaction
    // and the registry re-reads and replaces the set.
    let mut set = BTreeMap::new();
    let mut resets = 0;
    let mut updates = 0;
    let started = Instant::now();
    while ports(&set) != [9002] || resets == 0 {
        let update = match tokio::time::timeout(WAIT * 3, echo.next()).await {
            Ok(Some(Ok(update))) => update,
            other => panic!("after {updates} updates ({resets} resets): {other:?}"),
        };
        updates += 1;
        if matches!(update, Update::Reset(_)) {
            resets += 1;
        }
        apply(&mut set, &update);
    }
    assert_eq!(resets, 1, "exactly one resync");
    println!(
        "{updates} updates read, resynced in {:?}; final set {:?}",
        started.elapsed(),
        ports(&set)
    );
    // The new watch runs from the re-read revision.
    put(&mut etcd, &key("echo", "c"), "127.0.0.1:9003").await;
    assert_eq!(next(&mut echo).await, "Add 127.0.0.1:9003w1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_puts_the_key_and_revokes_it_on_shutdown() {
    let server = EtcdServer::start();
    let (registry, _) = build(&[server.client_url()]);
    let mut echo = registry.watch(&ServiceQuery::new("echo")).await.unwrap();
    assert_eq!(next(&mut echo).await, "Reset");

    let mut options = RegisterOptions::new(server.client_url(), "echo", "127.0.0.1:9005");
    options.weight = 3;
    options.ttl = Duration::from_secs(3);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(register::run(options, async move {
        let _ = stopped.await;
    }));
    assert_eq!(next(&mut echo).await, "Add 127.0.0.1:9005w3");
    let value = server.etcdctl(&["get", "--print-value-only", &key("echo", "127.0.0.1:9005")]);
    assert_eq!(
        value.trim(),
        r#"{"host":"127.0.0.1","port":9005,"priority":0,"weight":3}"#
    );

    stop.send(()).unwrap();
    tokio::time::timeout(WAIT, task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    // Revoked, not expired: the delete is seen well before the 3 s TTL could run out.
    let revoked = Instant::now();
    assert_eq!(next(&mut echo).await, "Remove 127.0.0.1:9005");
    println!("removed {:?} after shutdown", revoked.elapsed());
    let mut etcd = client(&server).await;
    let left = etcd
        .get(PREFIX, Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    assert!(left.kvs().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_that_dies_without_revoking_expires_with_its_lease() {
    let server = EtcdServer::start();
    let (registry, _) = build(&[server.client_url()]);
    let mut echo = registry.watch(&ServiceQuery::new("echo")).await.unwrap();
    assert_eq!(next(&mut echo).await, "Reset");

    let ttl = Duration::from_secs(3);
    let mut options = RegisterOptions::new(server.client_url(), "echo", "127.0.0.1:9006");
    options.ttl = ttl;
    let task = tokio::spawn(register::run(options, futures::future::pending()));
    assert_eq!(next(&mut echo).await, "Add 127.0.0.1:9006w1");

    // Kept alive well past its TTL.
    tokio::time::sleep(ttl * 2).await;
    let mut etcd = client(&server).await;
    let kept = etcd.get(key("echo", "127.0.0.1:9006"), None).await.unwrap();
    assert_eq!(kept.kvs().len(), 1, "the lease was not kept alive");

    // Dies without revoking (its future is dropped mid-flight, as by SIGKILL): the key
    // is still there right after, and goes only when the lease runs out.
    task.abort();
    let died = Instant::now();
    let still = etcd.get(key("echo", "127.0.0.1:9006"), None).await.unwrap();
    assert_eq!(
        still.kvs().len(),
        1,
        "the key went at once: revoked, not expired"
    );
    let update = match tokio::time::timeout(ttl * 5, echo.next()).await {
        Ok(Some(Ok(update))) => show(&update),
        other => panic!("no removal within {:?}: {other:?}", ttl * 5),
    };
    assert_eq!(update, "Remove 127.0.0.1:9006");
    let gone_after = died.elapsed();
    println!("key expired {gone_after:?} after the registration died (TTL {ttl:?})");
}

/// A TCP relay to etcd that can go silent: while frozen it forwards nothing in either
/// direction but keeps the connections open, like a dead link without a reset.
struct FreezingRelay {
    address: SocketAddr,
    frozen: Arc<std::sync::atomic::AtomicBool>,
}

impl FreezingRelay {
    async fn start(target: SocketAddr) -> FreezingRelay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let frozen = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = frozen.clone();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(outbound) = tokio::net::TcpStream::connect(target).await else {
                    continue;
                };
                let (in_read, in_write) = inbound.into_split();
                let (out_read, out_write) = outbound.into_split();
                tokio::spawn(pipe(in_read, out_write, flag.clone()));
                tokio::spawn(pipe(out_read, in_write, flag.clone()));
            }
        });
        FreezingRelay { address, frozen }
    }

    fn freeze(&self) {
        self.frozen.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Copies bytes until either side closes, holding them while `frozen` is set.
async fn pipe(
    mut from: impl tokio::io::AsyncRead + Unpin,
    mut to: impl tokio::io::AsyncWrite + Unpin,
    frozen: Arc<std::sync::atomic::AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while frozen.load(std::sync::atomic::Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silently_dead_connection_is_noticed() {
    let server = EtcdServer::start();
    let relay = FreezingRelay::start(server.client_address()).await;
    let mut etcd = client(&server).await;
    put(&mut etcd, &key("echo", "a"), "127.0.0.1:9001").await;
    let (registry, _) = build(&[format!("http://{}", relay.address)]);
    let mut echo = registry.watch(&ServiceQuery::new("echo")).await.unwrap();
    assert_eq!(next(&mut echo).await, "Reset 127.0.0.1:9001w1");
    put(&mut etcd, &key("echo", "b"), "127.0.0.1:9002").await;
    assert_eq!(next(&mut echo).await, "Add 127.0.0.1:9002w1");

    relay.freeze();
    let frozen = Instant::now();
    // Nothing closes the connection: only the registry's own checks (HTTP/2 pings, watch
    // progress requests) can tell. Expected within ~20 s; allowed 5x.
    let item = tokio::time::timeout(Duration::from_secs(100), echo.next()).await;
    match item {
        Ok(Some(Err(err))) => {
            println!("noticed {:?} after the link froze: {err}", frozen.elapsed())
        }
        other => panic!("expected a stream error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn username_and_password_are_used_and_a_wrong_password_is_unauthorized() {
    let server = EtcdServer::start();
    let mut etcd = client(&server).await;
    put(&mut etcd, &key("echo", "a"), "127.0.0.1:9001").await;
    server.etcdctl(&["user", "add", "root:root-pw"]);
    server.etcdctl(&["user", "grant-role", "root", "root"]);
    server.etcdctl(&["auth", "enable"]);

    let settings = |password: &str| {
        serde_json::json!({
            "endpoints": [server.client_url()], "username": "root", "password": password,
        })
    };
    let ctx = RegistryContext::new("etcd-auth");
    let registry = EtcdFactory
        .build(ctx.clone(), &settings("root-pw"))
        .unwrap();
    let mut echo = registry.watch(&ServiceQuery::new("echo")).await.unwrap();
    assert_eq!(next(&mut echo).await, "Reset 127.0.0.1:9001w1");

    let wrong = EtcdFactory.build(ctx, &settings("nope")).unwrap();
    let mut refused = wrong.watch(&ServiceQuery::new("echo")).await.unwrap();
    match tokio::time::timeout(WAIT, refused.next()).await {
        Ok(Some(Err(err))) => {
            assert_eq!(
                err.kind(),
                switchyard_registry::ErrorKind::Unauthorized,
                "{err}"
            );
            println!("refused: {err}");
        }
        other => panic!("expected an unauthorized error, got {other:?}"),
    }
    // Without credentials etcd refuses the read too.
    let (anonymous, _) = build(&[server.client_url()]);
    let mut anonymous = anonymous.watch(&ServiceQuery::new("echo")).await.unwrap();
    match tokio::time::timeout(WAIT, anonymous.next()).await {
        Ok(Some(Err(err))) => {
            assert_eq!(
                err.kind(),
                switchyard_registry::ErrorKind::Unauthorized,
                "{err}"
            );
            println!("anonymous: {err}");
        }
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_ca_and_a_client_certificate() {
    let server = EtcdServer::start_tls();
    let tls = server.tls_files().unwrap().clone();
    server.etcdctl(&["put", &key("echo", "a"), "127.0.0.1:9001"]);
    let ctx = RegistryContext::new("etcd-tls");
    let settings = serde_json::json!({
        "endpoints": [server.client_url()],
        "ca": tls.ca, "cert": tls.cert, "key": tls.key,
    });
    let registry = EtcdFactory.build(ctx.clone(), &settings).unwrap();
    let mut echo = registry.watch(&ServiceQuery::new("echo")).await.unwrap();
    assert_eq!(next(&mut echo).await, "Reset 127.0.0.1:9001w1");
    server.etcdctl(&["put", &key("echo", "b"), "127.0.0.1:9002"]);
    assert_eq!(next(&mut echo).await, "Add 127.0.0.1:9002w1");

    // Without a client certificate the server refuses the connection.
    let settings = serde_json::json!({ "endpoints": [server.client_url()], "ca": tls.ca });
    let registry = EtcdFactory.build(ctx, &settings).unwrap();
    let mut refused = registry.watch(&ServiceQuery::new("echo")).await.unwrap();
    match tokio::time::timeout(WAIT * 3, refused.next()).await {
        Ok(Some(Err(err))) => println!("without a client certificate: {err}"),
        other => panic!("expected an error, got {other:?}"),
    }
}

/// Values near etcd's default request limit (`--max-request-bytes`, 1.5 MiB): six of them
/// are ~8 MiB in one page of the initial read, past tonic's default 4 MiB decode limit that
/// the read used while the watch had 64 MiB. Both now take the same limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_initial_read_of_values_near_the_request_limit_succeeds() {
    let server = EtcdServer::start();
    let mut etcd = client(&server).await;
    // 1.5 MiB is etcd's limit on a whole request; leave room for the key and framing.
    let blob = "x".repeat(1_400_000);
    for i in 0..6u16 {
        let value = format!(
            r#"{{"host":"127.0.0.1","port":{},"metadata":{{"blob":"{blob}"}}}}"#,
            9100 + i
        );
        put(&mut etcd, &key("big", &format!("i{i}")), &value).await;
    }
    let (registry, _) = build(&[server.client_url()]);
    let started = Instant::now();
    let mut big = registry.watch(&ServiceQuery::new("big")).await.unwrap();
    let first = match tokio::time::timeout(WAIT * 3, big.next()).await {
        Ok(Some(Ok(update))) => update,
        Ok(Some(Err(err))) => panic!("the initial read failed: {err}"),
        Ok(None) => panic!("stream ended"),
        Err(_) => panic!("no update within {:?}", WAIT * 3),
    };
    println!("first update after {:?}", started.elapsed());
    let mut set = BTreeMap::new();
    apply(&mut set, &first);
    assert_eq!(ports(&set), [9100, 9101, 9102, 9103, 9104, 9105]);
    assert!(set
        .values()
        .all(|e| e.metadata().get("blob").map(String::len) == Some(1_400_000)));
    // And a seventh large value arrives through the watch.
    let value = format!(r#"{{"host":"127.0.0.1","port":9106,"metadata":{{"blob":"{blob}"}}}}"#);
    put(&mut etcd, &key("big", "i6"), &value).await;
    assert_eq!(next(&mut big).await, "Add 127.0.0.1:9106w1");
}
