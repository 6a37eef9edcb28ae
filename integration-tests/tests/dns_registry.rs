//! The DNS registry (`switchyard-dns`) against a real bind9 `named`, changed during the
//! tests with `nsupdate`: SRV priorities and weights, TTL-driven refresh, A/AAAA mode,
//! NXDOMAIN/NODATA/"." answers, and failures (server stopped, SERVFAIL, REFUSED).
//!
//! Needs the Debian packages bind9 and bind9-dnsutils; without them the tests fail with
//! the install command.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;
use switchyard_dns::DnsFactory;
use switchyard_integration_tests::bind::NamedServer;
use switchyard_integration_tests::driven;
use switchyard_registry::{
    recover, Backoff, Endpoint, ErrorKind, Registry, RegistryContext, RegistryError,
    RegistryFactory, ServiceQuery, SourceEvent, Update, UpdateStream,
};

const ZONE: &str = "example.test";

/// Two priority-0 targets weighted 1:3, a priority-1 target with A and AAAA, and a
/// priority of weight-0 and weight-2 records.
const ORDERS: &str = "
_http._tcp.orders IN SRV 0 1 8001 a.orders
_http._tcp.orders IN SRV 0 3 8002 b.orders
_http._tcp.orders IN SRV 1 1 8003 c.orders
_http._tcp.zero IN SRV 0 0 9000 a.orders
_http._tcp.zero IN SRV 0 2 9000 b.orders
a.orders IN A 127.0.0.11
b.orders IN A 127.0.0.12
c.orders IN A 127.0.0.13
c.orders IN AAAA ::1
";

/// A DNS registry asking only `server`, with short timeouts and both address families
/// (`address_family = "any"`); `extra` keys override (a null removes the key: the default).
fn registry(
    server: &NamedServer,
    extra: serde_json::Value,
) -> (Arc<dyn Registry>, RegistryContext) {
    let mut settings = json!({
        "nameservers": [server.addr().to_string()],
        "timeout": "300ms",
        "attempts": 2,
        "min_ttl": "1s",
        "max_ttl": "5s",
        "address_family": "any",
    });
    for (key, value) in extra.as_object().expect("extra settings table") {
        if value.is_null() {
            settings.as_object_mut().unwrap().remove(key);
        } else {
            settings[key] = value.clone();
        }
    }
    let ctx = RegistryContext::new("dns");
    let registry = DnsFactory
        .build(ctx.clone(), &settings)
        .unwrap_or_else(|issues| panic!("settings refused: {issues:?}"));
    (registry, ctx)
}

async fn watch(registry: &Arc<dyn Registry>, service: &str) -> UpdateStream {
    let query = ServiceQuery::new(service);
    registry.check_query(&query).expect("query accepted");
    registry.watch(&query).await.expect("watch starts")
}

/// The next item, within `limit`.
async fn next(stream: &mut UpdateStream, limit: Duration) -> Result<Update, RegistryError> {
    tokio::time::timeout(limit, stream.next())
        .await
        .unwrap_or_else(|_| panic!("no update within {limit:?}"))
        .expect("stream ended without an error")
}

/// Endpoints by address, as a consumer applying the updates would hold them.
#[derive(Default, Debug)]
struct View {
    endpoints: BTreeMap<SocketAddr, Endpoint>,
    exists: bool,
}

impl View {
    fn apply(&mut self, update: Update) {
        match update {
            Update::Reset(endpoints) => {
                self.exists = true;
                self.endpoints = endpoints
                    .into_iter()
                    .map(|e| (e.address, (*e).clone()))
                    .collect();
            }
            Update::Add(endpoints) => {
                self.endpoints
                    .extend(endpoints.into_iter().map(|e| (e.address, (*e).clone())));
            }
            Update::Remove(addresses) => {
                for address in addresses {
                    self.endpoints.remove(&address);
                }
            }
            Update::DoesNotExist => {
                self.exists = false;
                self.endpoints.clear();
            }
        }
    }

    /// `address weight priority`, one string per endpoint, sorted by address.
    fn summary(&self) -> Vec<String> {
        self.endpoints
            .values()
            .map(|e| format!("{} w{} p{}", e.address, e.weight, e.priority))
            .collect()
    }
}

/// Applies updates until `done(view)` holds; returns how long it took. Fails after `limit`.
async fn wait_until(
    stream: &mut UpdateStream,
    view: &mut View,
    limit: Duration,
    what: &str,
    done: impl Fn(&View) -> bool,
) -> Duration {
    let start = Instant::now();
    while !done(view) {
        let left = limit.saturating_sub(start.elapsed());
        assert!(
            !left.is_zero(),
            "{what}: not seen within {limit:?}; have {view:?}"
        );
        match tokio::time::timeout(left, stream.next()).await {
            Ok(Some(Ok(update))) => view.apply(update),
            Ok(Some(Err(error))) => panic!("{what}: error {error}"),
            Ok(None) => panic!("{what}: stream ended"),
            Err(_) => panic!(
                "{what}: not seen within {limit:?}; have {:?}",
                view.summary()
            ),
        }
    }
    let took = start.elapsed();
    println!("{what}: seen after {took:?}");
    took
}

async fn check_orders(server: &NamedServer) {
    let (registry, ctx) = registry(server, json!({}));
    let mut orders = watch(&registry, "_http._tcp.orders.example.test").await;
    let mut view = View::default();
    view.apply(
        next(&mut orders, Duration::from_secs(5))
            .await
            .expect("first update"),
    );
    assert_eq!(
        view.summary(),
        [
            "127.0.0.11:8001 w1 p0",
            "127.0.0.12:8002 w3 p0",
            "127.0.0.13:8003 w1 p1",
            "[::1]:8003 w1 p1",
        ]
    );
    let a = &view.endpoints[&"127.0.0.11:8001".parse().unwrap()];
    assert_eq!(a.metadata()["target"], "a.orders.example.test");
    assert_eq!(a.metadata()["srv_weight"], "1");

    // RFC 2782 weight 0 next to weight 2: a tiny share (1 against 2 × 100).
    let mut zero = watch(&registry, "_http._tcp.zero.example.test").await;
    let mut view = View::default();
    view.apply(
        next(&mut zero, Duration::from_secs(5))
            .await
            .expect("first update"),
    );
    assert_eq!(
        view.summary(),
        ["127.0.0.11:9000 w1 p0", "127.0.0.12:9000 w200 p0"]
    );
    assert_eq!(ctx.metrics.errors(), 0);
}

#[tokio::test]
async fn srv_weights_and_priorities_become_endpoints() {
    // bind puts the targets' A/AAAA records in the additional section.
    let server = NamedServer::launch(ZONE, ORDERS);
    check_orders(&server).await;
}

#[tokio::test]
async fn srv_targets_are_resolved_when_the_additional_section_is_empty() {
    let server = NamedServer::builder(ZONE)
        .records(ORDERS)
        .minimal_responses(true)
        .launch();
    check_orders(&server).await;
}

#[tokio::test]
async fn priority_and_weight_changes_are_seen() {
    let server = NamedServer::launch(ZONE, ORDERS);
    let (registry, _) = registry(&server, json!({}));
    let mut orders = watch(&registry, "_http._tcp.orders.example.test").await;
    let mut view = View::default();
    view.apply(
        next(&mut orders, Duration::from_secs(5))
            .await
            .expect("first update"),
    );

    // The priority-0 targets go away: only the priority-1 target is left.
    server.nsupdate(
        "update delete _http._tcp.orders.example.test SRV 0 1 8001 a.orders.example.test
         update delete _http._tcp.orders.example.test SRV 0 3 8002 b.orders.example.test",
    );
    wait_until(
        &mut orders,
        &mut view,
        Duration::from_secs(10),
        "priority-0 targets removed",
        |v| v.summary() == ["127.0.0.13:8003 w1 p1", "[::1]:8003 w1 p1"],
    )
    .await;

    // a comes back at priority 0 with weight 5; c moves to priority 2.
    server.nsupdate(
        "update add _http._tcp.orders.example.test 1 SRV 0 5 8001 a.orders.example.test
         update delete _http._tcp.orders.example.test SRV 1 1 8003 c.orders.example.test
         update add _http._tcp.orders.example.test 1 SRV 2 1 8003 c.orders.example.test",
    );
    wait_until(
        &mut orders,
        &mut view,
        Duration::from_secs(10),
        "priority change",
        |v| {
            v.summary()
                == [
                    "127.0.0.11:8001 w5 p0",
                    "127.0.0.13:8003 w1 p2",
                    "[::1]:8003 w1 p2",
                ]
        },
    )
    .await;
}

#[tokio::test]
async fn record_added_by_nsupdate_is_seen_after_its_ttl_and_nothing_else_is_published() {
    const TTL: u64 = 2;
    let server = NamedServer::builder(ZONE)
        .ttl(TTL as u32)
        .records(
            "_http._tcp.orders IN SRV 0 1 8001 a.orders
             a.orders IN A 127.0.0.11",
        )
        .launch();
    let (registry, _) = registry(&server, json!({}));
    let mut orders = watch(&registry, "_http._tcp.orders.example.test").await;
    let mut view = View::default();
    view.apply(
        next(&mut orders, Duration::from_secs(5))
            .await
            .expect("first update"),
    );
    assert_eq!(view.summary(), ["127.0.0.11:8001 w1 p0"]);

    // Refreshes happen every TTL; while nothing changes, nothing is published.
    let quiet = tokio::time::timeout(Duration::from_secs(3 * TTL), orders.next()).await;
    assert!(quiet.is_err(), "published without a change: {quiet:?}");

    server.nsupdate(&format!(
        "update add b.orders.example.test {TTL} A 127.0.0.12
         update add _http._tcp.orders.example.test {TTL} SRV 0 3 8002 b.orders.example.test"
    ));
    let start = Instant::now();
    let update = next(&mut orders, Duration::from_secs(5 * TTL))
        .await
        .expect("update");
    println!(
        "record added with TTL {TTL}s: seen after {:?}",
        start.elapsed()
    );
    let Update::Add(added) = &update else {
        panic!("expected only the new endpoint, got {update:?}");
    };
    assert_eq!(added.len(), 1);
    assert_eq!(added[0].address, "127.0.0.12:8002".parse().unwrap());
    assert_eq!(added[0].weight, 3);
    view.apply(update);
    assert_eq!(
        view.summary(),
        ["127.0.0.11:8001 w1 p0", "127.0.0.12:8002 w3 p0"]
    );
}

#[tokio::test]
async fn host_port_mode_uses_a_and_aaaa() {
    let server = NamedServer::launch(
        ZONE,
        "web IN A 127.0.0.21
         web IN AAAA ::1",
    );
    let (registry, _) = registry(&server, json!({"address_family": "any"}));
    let mut web = watch(&registry, "web.example.test:8080").await;
    let mut view = View::default();
    view.apply(
        next(&mut web, Duration::from_secs(5))
            .await
            .expect("first update"),
    );
    assert_eq!(
        view.summary(),
        ["127.0.0.21:8080 w1 p0", "[::1]:8080 w1 p0"]
    );

    server.nsupdate("update add web.example.test 1 A 127.0.0.22");
    wait_until(
        &mut web,
        &mut view,
        Duration::from_secs(10),
        "A record added",
        |v| {
            v.endpoints
                .contains_key(&"127.0.0.22:8080".parse().unwrap())
        },
    )
    .await;

    // All its records gone: the name no longer exists.
    server.nsupdate("update delete web.example.test");
    let update = next(&mut web, Duration::from_secs(10))
        .await
        .expect("update");
    assert_eq!(update, Update::DoesNotExist);
}

#[tokio::test]
async fn nxdomain_nodata_and_dot_target_are_authoritative_empties() {
    let server = NamedServer::launch(
        ZONE,
        "_http._tcp.down IN SRV 0 0 0 .
         _http._tcp.nodata IN TXT \"no srv here\"
         a.orders IN A 127.0.0.11",
    );
    let (registry, ctx) = registry(&server, json!({}));
    let limit = Duration::from_secs(5);

    // NXDOMAIN for a name that never resolved since start: an error naming it, not a
    // healthy empty service (a typo, or a name that needs a search domain).
    let mut missing = watch(&registry, "_http._tcp.missing.example.test").await;
    let error = next(&mut missing, limit).await.unwrap_err();
    println!("never resolved: {error}");
    assert!(
        error.message().contains("_http._tcp.missing.example.test")
            && error.message().contains("NXDOMAIN"),
        "{error}"
    );
    let mut nodata = watch(&registry, "_http._tcp.nodata.example.test").await;
    assert_eq!(
        next(&mut nodata, limit).await.unwrap(),
        Update::reset(vec![])
    );
    let mut down = watch(&registry, "_http._tcp.down.example.test").await;
    assert_eq!(next(&mut down, limit).await.unwrap(), Update::reset(vec![]));
    let mut host = watch(&registry, "nohost.example.test:80").await;
    assert!(next(&mut host, limit).await.is_err());

    // The missing service, once created, is seen by the next watch; once it has resolved,
    // its NXDOMAIN is an authoritative "does not exist" again.
    server
        .nsupdate("update add _http._tcp.missing.example.test 1 SRV 0 1 80 a.orders.example.test");
    let start = Instant::now();
    let mut missing = watch(&registry, "_http._tcp.missing.example.test").await;
    let update = next(&mut missing, Duration::from_secs(10)).await.unwrap();
    println!(
        "service created after NXDOMAIN: seen after {:?}",
        start.elapsed()
    );
    assert_eq!(
        update,
        Update::reset(vec![endpoint_with_meta(
            "127.0.0.11:80",
            "a.orders.example.test",
            0,
            1
        )])
    );
    server.nsupdate("update delete _http._tcp.missing.example.test");
    assert_eq!(
        next(&mut missing, Duration::from_secs(10)).await.unwrap(),
        Update::DoesNotExist
    );
    assert_eq!(ctx.metrics.errors(), 0);
}

#[tokio::test]
async fn address_families_pick_a_and_aaaa_as_configured() {
    let server = NamedServer::launch(
        ZONE,
        "both IN A 127.0.0.31
         both IN AAAA ::1
         v6only IN AAAA ::1
         _http._tcp.svc IN SRV 0 1 8081 both",
    );
    let limit = Duration::from_secs(5);
    let first = |family: &'static str, service: &'static str| {
        let server = &server;
        async move {
            let settings = if family.is_empty() {
                json!({ "address_family": null })
            } else {
                json!({ "address_family": family })
            };
            let (registry, _) = registry(server, settings);
            let mut stream = watch(&registry, service).await;
            let mut view = View::default();
            view.apply(next(&mut stream, limit).await.expect("first update"));
            println!("{family:?} {service}: {:?}", view.summary());
            view.summary()
        }
    };
    // Default prefer_ipv4: an IPv4-only host keeps working; an AAAA-only name still resolves.
    assert_eq!(
        first("", "both.example.test:80").await,
        ["127.0.0.31:80 w1 p0"]
    );
    assert_eq!(
        first("", "v6only.example.test:80").await,
        ["[::1]:80 w1 p0"]
    );
    assert_eq!(
        first("ipv4", "both.example.test:80").await,
        ["127.0.0.31:80 w1 p0"]
    );
    assert_eq!(
        first("ipv6", "both.example.test:80").await,
        ["[::1]:80 w1 p0"]
    );
    assert_eq!(
        first("prefer_ipv6", "both.example.test:80").await,
        ["[::1]:80 w1 p0"]
    );
    assert_eq!(
        first("any", "both.example.test:80").await,
        ["127.0.0.31:80 w1 p0", "[::1]:80 w1 p0"]
    );
    assert_eq!(
        first("prefer_ipv4", "v6only.example.test:80").await,
        ["[::1]:80 w1 p0"]
    );
    // ipv4 only, and the name has no A record: an existing name with no address (NODATA).
    assert!(first("ipv4", "v6only.example.test:80").await.is_empty());
    // SRV targets follow the same rule.
    assert_eq!(first("ipv6", "_http._tcp.svc.example.test").await.len(), 1);
}

#[tokio::test]
async fn an_nxdomain_with_a_cname_is_not_found_not_a_protocol_error() {
    // `alias` is a CNAME to a name that does not exist: BIND answers NXDOMAIN with the CNAME
    // in the answer section (RFC 6604: the RCODE is for the chain's last name).
    let server = NamedServer::launch(
        ZONE,
        "alias IN CNAME gone.example.test.
         real IN A 127.0.0.41
         good IN CNAME real.example.test.",
    );
    let (registry, _) = registry(&server, json!({}));
    let limit = Duration::from_secs(5);
    let mut good = watch(&registry, "good.example.test:80").await;
    let mut view = View::default();
    view.apply(next(&mut good, limit).await.expect("CNAME to a host"));
    assert_eq!(view.summary(), ["127.0.0.41:80 w1 p0"]);
    let mut alias = watch(&registry, "alias.example.test:80").await;
    let error = next(&mut alias, limit).await.unwrap_err();
    println!("CNAME to nothing: {error}");
    // Not "server answered NXDOMAIN" (a protocol error): the name does not resolve.
    assert!(
        error.message().contains("NXDOMAIN for") && !error.message().contains("server answered"),
        "{error}"
    );
}

fn endpoint_with_meta(address: &str, target: &str, priority: u16, weight: u16) -> Endpoint {
    let mut endpoint = Endpoint::new(address.parse().unwrap())
        .with_priority(u32::from(priority))
        .with_weight(u32::from(weight.max(1)));
    endpoint
        .metadata_mut()
        .insert("target".into(), target.into());
    endpoint
        .metadata_mut()
        .insert("srv_priority".into(), priority.to_string());
    endpoint
        .metadata_mut()
        .insert("srv_weight".into(), weight.to_string());
    endpoint
}

#[tokio::test]
async fn target_without_address_is_skipped_and_counted_once() {
    let server = NamedServer::launch(
        ZONE,
        "_http._tcp.orders IN SRV 0 1 8001 a.orders
         _http._tcp.orders IN SRV 0 1 8002 ghost.orders
         a.orders IN A 127.0.0.11",
    );
    let (registry, ctx) = registry(&server, json!({}));
    let mut orders = watch(&registry, "_http._tcp.orders.example.test").await;
    let mut view = View::default();
    view.apply(
        next(&mut orders, Duration::from_secs(5))
            .await
            .expect("first update"),
    );
    assert_eq!(view.summary(), ["127.0.0.11:8001 w1 p0"]);
    // Several refreshes later the same bad target is still counted once.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(ctx.metrics.errors(), 1);
}

fn fast_backoff() -> Backoff {
    Backoff {
        initial: Duration::from_millis(100),
        max: Duration::from_millis(500),
        slow_retry: Duration::from_secs(1),
    }
}

/// Stops the server under a recovered watch: an error (the consumer keeps its set,
/// stale), then, once the server is back, a full reset.
async fn check_stop_and_start(protocol: &str) {
    let mut server = NamedServer::launch(ZONE, ORDERS);
    let (registry, _) = registry(&server, json!({"protocol": protocol}));
    let mut events = driven(recover(
        registry,
        ServiceQuery::new("_http._tcp.orders.example.test"),
        fast_backoff(),
    ));
    let limit = Duration::from_secs(10);
    let event = tokio::time::timeout(limit, events.next())
        .await
        .expect("first event");
    let Some(SourceEvent::Update(Update::Reset(first))) = event else {
        panic!("expected a reset first, got {event:?}");
    };
    assert_eq!(first.len(), 4);

    server.stop();
    let start = Instant::now();
    let event = tokio::time::timeout(limit, events.next())
        .await
        .expect("an event after stop");
    let Some(SourceEvent::Error(error)) = event else {
        panic!("expected an error after the server stopped, got {event:?}");
    };
    println!(
        "{protocol}: server stopped: error after {:?}: {error}",
        start.elapsed()
    );
    assert_eq!(error.kind(), ErrorKind::Unavailable, "{error}");

    server.start();
    let start = Instant::now();
    loop {
        let event = tokio::time::timeout(limit, events.next())
            .await
            .expect("an event after start");
        match event {
            Some(SourceEvent::Error(_)) => continue,
            Some(SourceEvent::Update(Update::Reset(again))) => {
                assert_eq!(again, first);
                break;
            }
            other => panic!("expected a reset after restart, got {other:?}"),
        }
    }
    println!(
        "{protocol}: server restarted: reset after {:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn stopped_server_gives_an_error_then_a_reset_after_restart_udp() {
    check_stop_and_start("udp").await;
}

#[tokio::test]
async fn stopped_server_gives_an_error_then_a_reset_after_restart_tcp() {
    check_stop_and_start("tcp").await;
}

#[tokio::test]
async fn servfail_and_refused_are_errors_not_empties() {
    let server = NamedServer::builder(ZONE)
        .records(ORDERS)
        .broken_zone("broken.test")
        .launch();
    let (registry, _) = registry(&server, json!({}));
    for (service, code) in [
        ("_http._tcp.orders.broken.test", "SERVFAIL"),
        ("_http._tcp.orders.elsewhere.test", "REFUSED"),
    ] {
        let mut stream = watch(&registry, service).await;
        let error = next(&mut stream, Duration::from_secs(5))
            .await
            .expect_err("a failure, not an update");
        assert_eq!(error.kind(), ErrorKind::Protocol, "{error}");
        assert!(error.message().contains(code), "{error}");
        assert!(
            stream.next().await.is_none(),
            "the stream ends after its error"
        );
    }
}

#[tokio::test]
async fn tsig_signed_updates_are_seen() {
    let secret = "c3dpdGNoeWFyZC10ZXN0LWtleS0zMi1ieXRlcy1sb25nIQ==";
    let server = NamedServer::builder(ZONE)
        .records(ORDERS)
        .tsig("switchyard-test", secret)
        .launch();
    let (registry, _) = registry(&server, json!({"protocol": "tcp"}));
    let mut web = watch(&registry, "web.example.test:80").await;
    // Never resolved yet: reported, not an empty service.
    assert!(next(&mut web, Duration::from_secs(5)).await.is_err());
    server.nsupdate("update add web.example.test 1 A 127.0.0.31");
    let mut web = watch(&registry, "web.example.test:80").await;
    let update = next(&mut web, Duration::from_secs(10)).await.unwrap();
    assert_eq!(
        update,
        Update::reset(vec![Endpoint::new("127.0.0.31:80".parse().unwrap())])
    );
}
