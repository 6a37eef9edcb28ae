//! Registry-level tests of the `consul` backend against the Consul agent double, driven only
//! through Consul's real HTTP API (agent register/deregister, TTL check pass/warn/fail), so
//! they would run unchanged against a real agent; the double's own knobs (stop/resume, index
//! rewind, request counters) stand in for what only an operator could do to a real cluster.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{json, Value};
use switchyard_consul::ConsulFactory;
use switchyard_consul_double::client::AgentClient;
use switchyard_consul_double::{AclOptions, ConsulDouble, Options};
use switchyard_integration_tests::driven;
use switchyard_registry::{
    recover, Backoff, Endpoint, ErrorKind, Registry, RegistryContext, RegistryFactory,
    RegistryMetrics, ServiceQuery, SourceEvent, Update, UpdateStream,
};

const HEALTH_WEB: &str = "/v1/health/service/web";
/// "Within 1 s" checks wait up to five times that.
const DEADLINE: Duration = Duration::from_secs(5);

fn double() -> ConsulDouble {
    ConsulDouble::start(Options::default()).expect("start the Consul double")
}

fn registry(double: &ConsulDouble, settings: Value) -> (Arc<dyn Registry>, Arc<RegistryMetrics>) {
    let mut settings = settings;
    settings["address"] = json!(double.address());
    let ctx = RegistryContext::new("consul");
    let metrics = ctx.metrics.clone();
    let registry = ConsulFactory.build(ctx, &settings).expect("valid settings");
    (registry, metrics)
}

fn query(service: &str, tags: &[&str], datacenter: Option<&str>) -> ServiceQuery {
    let mut query = ServiceQuery::new(service);
    query.tags = tags.iter().map(|t| (*t).to_owned()).collect();
    query.datacenter = datacenter.map(str::to_owned);
    query
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn ports(endpoints: &[std::sync::Arc<Endpoint>]) -> Vec<u16> {
    let mut ports: Vec<u16> = endpoints.iter().map(|e| e.address.port()).collect();
    ports.sort_unstable();
    ports
}

/// The next update, within [`DEADLINE`]; prints how long it took.
async fn next(stream: &mut UpdateStream, what: &str) -> Update {
    let started = Instant::now();
    let item = tokio::time::timeout(DEADLINE, stream.next())
        .await
        .unwrap_or_else(|_| panic!("{what}: no update within {DEADLINE:?}"))
        .unwrap_or_else(|| panic!("{what}: stream ended"))
        .unwrap_or_else(|e| panic!("{what}: stream error: {e}"));
    println!("{what}: {:?} after {:?}", summary(&item), started.elapsed());
    item
}

/// The next error of a stream, within [`DEADLINE`].
async fn next_error(stream: &mut UpdateStream, what: &str) -> switchyard_registry::RegistryError {
    let started = Instant::now();
    let item = tokio::time::timeout(DEADLINE, stream.next())
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing within {DEADLINE:?}"))
        .unwrap_or_else(|| panic!("{what}: stream ended without error"));
    match item {
        Err(err) => {
            println!("{what}: error after {:?}: {err}", started.elapsed());
            err
        }
        Ok(update) => panic!("{what}: expected an error, got {update:?}"),
    }
}

/// Asserts that no update arrives for `quiet`.
async fn quiet(stream: &mut UpdateStream, quiet: Duration, what: &str) {
    if let Ok(item) = tokio::time::timeout(quiet, stream.next()).await {
        panic!("{what}: expected no update, got {item:?}");
    }
}

fn summary(update: &Update) -> String {
    match update {
        Update::Reset(e) => format!("Reset{:?}", ports(e)),
        Update::Add(e) => format!("Add{:?}", ports(e)),
        Update::Remove(a) => format!(
            "Remove{:?}",
            a.iter().map(SocketAddr::port).collect::<Vec<_>>()
        ),
        Update::DoesNotExist => "DoesNotExist".into(),
    }
}

async fn register(agent: &AgentClient, id: &str, port: u16, tags: &[&str]) {
    agent
        .register_passing(id, "web", "127.0.0.1", port, tags)
        .await
        .unwrap_or_else(|e| panic!("register {id}: {e}"));
}

#[tokio::test]
async fn register_fail_deregister_reach_the_stream_quickly() {
    let double = double();
    let agent = AgentClient::new(&double.address());
    let (registry, _) = registry(&double, json!({}));
    let mut stream = registry.watch(&query("web", &[], None)).await.unwrap();

    // An unknown service is an authoritative empty set.
    assert_eq!(next(&mut stream, "initial").await, Update::reset(vec![]));

    // A TTL check starts critical: registered but not yet serving.
    agent
        .register(
            &json!({"ID": "web-1", "Name": "web", "Address": "127.0.0.1", "Port": 9001,
                          "Meta": {"version": "1"}, "Weights": {"Passing": 7, "Warning": 1},
                          "Check": {"TTL": "10m"}}),
        )
        .await
        .unwrap();
    quiet(&mut stream, Duration::from_millis(300), "critical instance").await;

    agent.pass("service:web-1").await.unwrap();
    let Update::Add(added) = next(&mut stream, "pass web-1").await else {
        panic!("expected Add")
    };
    assert_eq!(added.len(), 1);
    let web1 = &added[0];
    assert_eq!(web1.address, addr(9001));
    assert_eq!(web1.weight, 7, "Weights.Passing");
    assert_eq!(web1.metadata()["version"], "1", "Service.Meta kept");
    assert_eq!(web1.metadata()["consul.service_id"], "web-1");

    // No Service.Address: the node's address is used.
    agent
        .register(
            &json!({"ID": "web-2", "Name": "web", "Port": 9002, "Tags": ["v1"],
                          "Check": {"TTL": "10m", "Status": "passing"}}),
        )
        .await
        .unwrap();
    assert_eq!(
        summary(&next(&mut stream, "register web-2").await),
        "Add[9002]",
        "Node.Address fallback"
    );

    agent.fail("service:web-1").await.unwrap();
    assert_eq!(
        next(&mut stream, "fail web-1").await,
        Update::Remove(vec![addr(9001)])
    );

    agent.pass("service:web-1").await.unwrap();
    assert_eq!(
        summary(&next(&mut stream, "pass web-1 again").await),
        "Add[9001]"
    );

    agent.deregister("web-1").await.unwrap();
    assert_eq!(
        next(&mut stream, "deregister web-1").await,
        Update::Remove(vec![addr(9001)])
    );
    agent.deregister("web-2").await.unwrap();
    assert_eq!(
        next(&mut stream, "deregister web-2").await,
        Update::reset(vec![])
    );

    // Pushed, not polled: one blocking request per answer, not a request loop.
    let requests = double.requests(HEALTH_WEB);
    println!("health requests seen by the agent: {requests}");
    assert!(
        requests <= 20,
        "{requests} requests for 8 changes: the watch is polling"
    );
    let blocking = double
        .request_log()
        .iter()
        .filter(|r| r.path == HEALTH_WEB && r.param("index").is_some())
        .count();
    assert!(blocking >= 5, "only {blocking} blocking requests");
    assert!(
        double
            .request_log()
            .iter()
            .filter(|r| r.path == HEALTH_WEB)
            .all(|r| r
                .param("index")
                .is_none_or(|i| i.parse::<u64>().unwrap() >= 1)),
        "a blocking request carried an index below 1"
    );
}

#[tokio::test]
async fn tags_must_all_match() {
    let double = double();
    let agent = AgentClient::new(&double.address());
    register(&agent, "a", 9001, &["v1", "eu"]).await;
    register(&agent, "b", 9002, &["v1"]).await;
    register(&agent, "c", 9003, &["eu", "v2"]).await;
    let (registry, _) = registry(&double, json!({}));

    let mut both = registry
        .watch(&query("web", &["v1", "eu"], None))
        .await
        .unwrap();
    assert_eq!(summary(&next(&mut both, "v1+eu").await), "Reset[9001]");
    let mut v1 = registry.watch(&query("web", &["v1"], None)).await.unwrap();
    assert_eq!(summary(&next(&mut v1, "v1").await), "Reset[9001, 9002]");

    // Retagging an instance moves it in or out.
    agent
        .register(
            &json!({"ID": "b", "Name": "web", "Address": "127.0.0.1", "Port": 9002,
                          "Tags": ["v1", "eu"], "Check": {"TTL": "10m"}}),
        )
        .await
        .unwrap();
    assert_eq!(summary(&next(&mut both, "b gains eu").await), "Add[9002]");
    let log = double.request_log();
    let tagged = log
        .iter()
        .find(|r| r.path == HEALTH_WEB && r.query.contains("tag=eu"))
        .expect("a tagged request");
    assert!(tagged.query.contains("tag=v1&tag=eu"), "{}", tagged.query);
}

#[tokio::test]
async fn warning_instances_serve_at_warning_weight_when_not_only_passing() {
    let double = double();
    let agent = AgentClient::new(&double.address());
    for (id, port) in [("a", 9001), ("b", 9002)] {
        agent
            .register(
                &json!({"ID": id, "Name": "web", "Address": "127.0.0.1", "Port": port,
                              "Weights": {"Passing": 10, "Warning": 3},
                              "Check": {"TTL": "10m", "Status": "passing"}}),
            )
            .await
            .unwrap();
    }
    agent.warn("service:b").await.unwrap();

    let (lenient, _) = registry(&double, json!({"only_passing": false}));
    let (strict, _) = registry(&double, json!({}));
    let mut lenient = lenient.watch(&query("web", &[], None)).await.unwrap();
    let mut strict = strict.watch(&query("web", &[], None)).await.unwrap();

    let Update::Reset(set) = next(&mut lenient, "lenient initial").await else {
        panic!("expected Reset")
    };
    let weights: Vec<(u16, u32, &str)> = set
        .iter()
        .map(|e| {
            (
                e.address.port(),
                e.weight,
                e.metadata()["consul.health"].as_str(),
            )
        })
        .collect();
    assert_eq!(weights, [(9001, 10, "passing"), (9002, 3, "warning")]);
    assert_eq!(
        summary(&next(&mut strict, "strict initial").await),
        "Reset[9001]"
    );

    agent.warn("service:a").await.unwrap();
    let Update::Add(changed) = next(&mut lenient, "a warns").await else {
        panic!("expected Add")
    };
    assert_eq!((changed[0].address.port(), changed[0].weight), (9001, 3));
    assert_eq!(
        next(&mut strict, "a warns (strict)").await,
        Update::reset(vec![])
    );

    agent.fail("service:b").await.unwrap();
    assert_eq!(
        next(&mut lenient, "b fails").await,
        Update::Remove(vec![addr(9002)])
    );
}

#[tokio::test]
async fn datacenter_is_selected_by_registry_and_source() {
    let dc1 = double();
    let dc2 = ConsulDouble::start(Options {
        join: Some(dc1.cluster()),
        ..Options::datacenter("dc2")
    })
    .unwrap();
    register(&AgentClient::new(&dc1.address()), "web-dc1", 9001, &[]).await;
    register(&AgentClient::new(&dc2.address()), "web-dc2", 9002, &[]).await;

    // Every watch talks to the dc1 agent; `dc` picks the catalog.
    let (local, _) = registry(&dc1, json!({}));
    let (remote, _) = registry(&dc1, json!({"datacenter": "dc2"}));
    let mut s = local.watch(&query("web", &[], None)).await.unwrap();
    assert_eq!(summary(&next(&mut s, "agent's dc").await), "Reset[9001]");
    let mut s = remote.watch(&query("web", &[], None)).await.unwrap();
    assert_eq!(summary(&next(&mut s, "registry dc2").await), "Reset[9002]");
    let mut s = remote.watch(&query("web", &[], Some("dc1"))).await.unwrap();
    assert_eq!(
        summary(&next(&mut s, "source overrides to dc1").await),
        "Reset[9001]"
    );

    // Changes in the other datacenter reach the watch too.
    let mut s = local.watch(&query("web", &[], Some("dc2"))).await.unwrap();
    assert_eq!(summary(&next(&mut s, "source dc2").await), "Reset[9002]");
    register(&AgentClient::new(&dc2.address()), "web-dc2-b", 9003, &[]).await;
    assert_eq!(
        summary(&next(&mut s, "new dc2 instance").await),
        "Add[9003]"
    );

    let mut s = local.watch(&query("web", &[], Some("dc9"))).await.unwrap();
    let err = next_error(&mut s, "unknown dc").await;
    assert_eq!(err.kind(), ErrorKind::InvalidQuery);
    assert!(err.message().contains("No path to datacenter"), "{err}");
}

#[tokio::test]
async fn wrong_token_is_unauthorized_and_not_retried_hot() {
    let double = ConsulDouble::start(Options {
        acl: Some(AclOptions::deny_with("writer-secret", "reader-secret")),
        ..Options::default()
    })
    .unwrap();
    let writer = AgentClient::new(&double.address()).with_token("writer-secret");
    writer
        .register_passing("web-1", "web", "127.0.0.1", 9001, &[])
        .await
        .unwrap();

    // The agent enforces ACLs on the API the tests use, too.
    let anonymous = AgentClient::new(&double.address());
    let err = anonymous
        .register_passing("x", "web", "127.0.0.1", 1, &[])
        .await
        .unwrap_err();
    assert!(err.body.starts_with("Permission denied"), "{err}");

    // A good read token sees the instance.
    let (reader, _) = registry(&double, json!({"token": "reader-secret"}));
    let mut s = reader.watch(&query("web", &[], None)).await.unwrap();
    assert_eq!(summary(&next(&mut s, "read token").await), "Reset[9001]");

    // A wrong token: 403 "ACL not found", reported as unauthorized, retried at the slow pace.
    double.reset_requests();
    let (wrong, _) = registry(&double, json!({"token": "not-a-token"}));
    let mut events = driven(recover(wrong, query("web", &[], None), Backoff::default()));
    let started = Instant::now();
    let event = tokio::time::timeout(DEADLINE, events.next())
        .await
        .expect("an event")
        .unwrap();
    let SourceEvent::Error(err) = event else {
        panic!("expected an error, got {event:?}")
    };
    println!("wrong token: {err} after {:?}", started.elapsed());
    assert_eq!(err.kind(), ErrorKind::Unauthorized);
    assert!(err.message().contains("ACL not found"), "{err}");
    assert!(err.message().contains("token"), "{err}");
    // Nothing else for 3 s, and the agent saw (almost) nothing: no busy loop.
    assert!(tokio::time::timeout(Duration::from_secs(3), events.next())
        .await
        .is_err());
    let requests = double.requests(HEALTH_WEB);
    println!("requests with the wrong token over 3 s: {requests}");
    assert!(requests <= 2, "{requests} requests: retried hot");

    // No token under default deny: Consul answers `[]` and hides that ACLs filtered it
    // (maskResultsFilteredByACLs); only X-Consul-Default-ACL-Policy: deny tells. That is not
    // "zero instances": an error naming the missing token.
    let (anon, _) = registry(&double, json!({}));
    let mut s = anon.watch(&query("web", &[], None)).await.unwrap();
    let err = next_error(&mut s, "anonymous").await;
    assert_eq!(err.kind(), ErrorKind::Unauthorized);
    assert!(
        err.message().contains("X-Consul-Default-ACL-Policy")
            && err.message().contains("no token configured"),
        "{err}"
    );
}

#[tokio::test]
async fn tags_match_case_insensitively() {
    // Consul's serviceTagFilter lowercases both sides: `tags = ["PRIMARY"]` finds an instance
    // tagged "primary", and the backend must not drop what Consul returned.
    let double = double();
    let agent = AgentClient::new(&double.address());
    register(&agent, "a", 9001, &["primary", "EU"]).await;
    register(&agent, "b", 9002, &["secondary"]).await;
    let (tagged, _) = registry(&double, json!({}));
    let mut s = tagged
        .watch(&query("web", &["PRIMARY", "eu"], None))
        .await
        .unwrap();
    assert_eq!(
        summary(&next(&mut s, "mixed-case tags").await),
        "Reset[9001]"
    );
}

#[tokio::test]
async fn filter_and_consistency_are_passed_to_consul() {
    let double = double();
    let agent = AgentClient::new(&double.address());
    agent
        .register(
            &json!({"ID": "a", "Name": "web", "Address": "127.0.0.1", "Port": 9001,
            "Meta": {"version": "1"}, "Tags": ["canary"]}),
        )
        .await
        .unwrap();
    agent
        .register(
            &json!({"ID": "b", "Name": "web", "Address": "127.0.0.1", "Port": 9002,
            "Meta": {"version": "2"}}),
        )
        .await
        .unwrap();
    agent
        .register(
            &json!({"ID": "c", "Name": "web", "Address": "127.0.0.1", "Port": 9003,
            "Meta": {"version": "2"}, "Tags": ["canary"]}),
        )
        .await
        .unwrap();
    // The registry's filter and the source's, and-ed; stale reads by default.
    let (filtered, _) = registry(&double, json!({"filter": "Service.Meta.version == \"2\""}));
    let mut q = query("web", &[], None);
    q.filter = Some("\"canary\" not in Service.Tags".into());
    double.reset_requests();
    let mut s = filtered.watch(&q).await.unwrap();
    assert_eq!(summary(&next(&mut s, "filtered").await), "Reset[9002]");
    let log = double.request_log();
    let first = log
        .iter()
        .find(|r| r.path == HEALTH_WEB)
        .expect("a health request");
    println!("query sent: {}", first.query);
    assert!(first.query.contains("stale"), "{}", first.query);
    assert!(first.query.contains("filter="), "{}", first.query);

    // consistent = true: ?consistent, never ?stale.
    let (consistent, _) = registry(&double, json!({"consistent": true}));
    double.reset_requests();
    let mut s = consistent.watch(&query("web", &[], None)).await.unwrap();
    assert_eq!(
        summary(&next(&mut s, "consistent").await),
        "Reset[9001, 9002, 9003]"
    );
    let log = double.request_log();
    let first = log.iter().find(|r| r.path == HEALTH_WEB).unwrap();
    assert!(
        first.query.contains("consistent") && !first.query.contains("stale"),
        "{}",
        first.query
    );
}

#[tokio::test]
async fn token_file_is_sent() {
    let double = ConsulDouble::start(Options {
        acl: Some(AclOptions::deny_with("writer-secret", "reader-secret")),
        ..Options::default()
    })
    .unwrap();
    AgentClient::new(&double.address())
        .with_token("writer-secret")
        .register_passing("web-1", "web", "127.0.0.1", 9001, &[])
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("consul-token");
    std::fs::write(&path, "reader-secret\n").unwrap();
    let (registry, _) = registry(&double, json!({"token_file": path.to_str().unwrap()}));
    let mut s = registry.watch(&query("web", &[], None)).await.unwrap();
    assert_eq!(summary(&next(&mut s, "token_file").await), "Reset[9001]");
}

/// The next update of a recovered source (errors are not expected), within [`DEADLINE`].
async fn next_event_update(
    events: &mut (impl futures::Stream<Item = SourceEvent> + Unpin),
    what: &str,
) -> Update {
    let started = Instant::now();
    match tokio::time::timeout(DEADLINE, events.next()).await {
        Ok(Some(SourceEvent::Update(update))) => {
            println!("{what}: {} after {:?}", summary(&update), started.elapsed());
            update
        }
        other => panic!("{what}: expected an update within {DEADLINE:?}, got {other:?}"),
    }
}

#[tokio::test]
async fn index_going_backwards_resets_and_resyncs() {
    let double = double();
    let agent = AgentClient::new(&double.address());
    // Some history, so that the index is well above where it will be rewound to.
    for i in 0..5 {
        register(&agent, &format!("old-{i}"), 9100 + i, &[]).await;
        agent.deregister(&format!("old-{i}")).await.unwrap();
    }
    register(&agent, "a", 9001, &[]).await;
    let (registry, _) = registry(&double, json!({}));
    // Driven by its own task, as the gateway drives it: the watch blocks between changes.
    let mut events = driven(recover(
        registry,
        query("web", &[], None),
        Backoff::default(),
    ));
    assert_eq!(
        summary(&next_event_update(&mut events, "initial").await),
        "Reset[9001]"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = double.index();
    let rewound_at = Instant::now();
    double.rewind_index(2);
    println!("index rewound from {before} to 2");
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The next change (index 3 and 4) must reach the watch: a client that kept blocking on
    // the old, higher index would not see it for the whole wait (5 min).
    register(&agent, "b", 9002, &[]).await;
    assert_eq!(
        summary(&next_event_update(&mut events, "after rewind").await),
        "Add[9002]"
    );
    assert!(
        double.index() < before,
        "the test needs the index still below {before}"
    );

    let log = double.request_log();
    let after: Vec<_> = log
        .iter()
        .filter(|r| r.path == HEALTH_WEB && r.at >= rewound_at)
        .map(|r| r.param("index"))
        .collect();
    println!("requests after the rewind, by index: {after:?}");
    assert!(
        after.first().is_some_and(Option::is_none),
        "the first request after the backwards index must start afresh (no index): {after:?}"
    );
    assert!(
        after
            .iter()
            .flatten()
            .all(|i| i.parse::<u64>().unwrap() < before),
        "a request still used the old index: {after:?}"
    );
}

#[tokio::test]
async fn agent_down_keeps_reporting_errors_and_back_resyncs() {
    let double = double();
    let agent = AgentClient::new(&double.address());
    register(&agent, "a", 9001, &[]).await;
    let (registry, _) = registry(&double, json!({}));
    let backoff = Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(400),
        slow_retry: Duration::from_secs(10),
    };
    let mut events = driven(recover(registry, query("web", &[], None), backoff));
    let first = tokio::time::timeout(DEADLINE, events.next())
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(&first, SourceEvent::Update(Update::Reset(e)) if ports(e) == [9001]),
        "{first:?}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;

    // The agent dies while the watch is blocked.
    let stopped = Instant::now();
    double.stop();
    let event = tokio::time::timeout(DEADLINE, events.next())
        .await
        .unwrap()
        .unwrap();
    let SourceEvent::Error(err) = event else {
        panic!("expected an error, got {event:?}")
    };
    println!("agent down: {err} after {:?}", stopped.elapsed());
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    // While it is down: only errors, never an (empty) update.
    let until = Instant::now() + Duration::from_secs(1);
    while let Ok(Some(event)) = tokio::time::timeout_at(until.into(), events.next()).await {
        assert!(
            matches!(event, SourceEvent::Error(_)),
            "while down: {event:?}"
        );
    }

    // Back on the same port: the first update is a full Reset, then changes flow again.
    let resumed = Instant::now();
    double.resume().unwrap();
    let update = loop {
        match tokio::time::timeout(DEADLINE, events.next())
            .await
            .unwrap()
            .unwrap()
        {
            SourceEvent::Error(_) => continue,
            SourceEvent::Update(update) => break update,
        }
    };
    println!(
        "agent back: {} after {:?}",
        summary(&update),
        resumed.elapsed()
    );
    assert_eq!(summary(&update), "Reset[9001]");
    register(&agent, "b", 9002, &[]).await;
    let event = tokio::time::timeout(DEADLINE, events.next())
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(&event, SourceEvent::Update(Update::Add(e)) if ports(e) == [9002]),
        "{event:?}"
    );
}

#[tokio::test]
async fn malformed_entries_are_skipped_and_counted_once() {
    let double = double();
    let agent = AgentClient::new(&double.address());
    register(&agent, "good", 9001, &[]).await;
    // No port, and an address that cannot resolve: both are registered fine by Consul.
    agent
        .register(
            &json!({"ID": "no-port", "Name": "web", "Address": "127.0.0.1",
                          "Check": {"TTL": "10m", "Status": "passing"}}),
        )
        .await
        .unwrap();
    agent
        .register(&json!({"ID": "bad-host", "Name": "web", "Address": "no-such-host.invalid", "Port": 9003,
                          "Check": {"TTL": "10m", "Status": "passing"}}))
        .await
        .unwrap();
    let (registry, metrics) = registry(&double, json!({}));
    let mut s = registry.watch(&query("web", &[], None)).await.unwrap();
    assert_eq!(summary(&next(&mut s, "initial").await), "Reset[9001]");
    assert_eq!(metrics.errors(), 2, "two malformed entries counted");

    register(&agent, "good-2", 9002, &[]).await;
    assert_eq!(
        summary(&next(&mut s, "another instance").await),
        "Add[9002]"
    );
    assert_eq!(metrics.errors(), 2, "still malformed, not counted again");
}

#[tokio::test]
async fn a_server_answering_at_once_cannot_make_the_watch_spin() {
    let double = double();
    let agent = AgentClient::new(&double.address());
    register(&agent, "a", 9001, &[]).await;
    let (registry, _) = registry(&double, json!({}));
    // Driven by its own task, as the gateway drives it.
    let mut events = driven(recover(
        registry,
        query("web", &[], None),
        Backoff::default(),
    ));
    assert_eq!(
        summary(&next_event_update(&mut events, "initial").await),
        "Reset[9001]"
    );
    double.reset_requests();
    double.set_ignore_index(true);
    let window = Duration::from_secs(3);
    // Same answer every time: nothing is published.
    assert!(tokio::time::timeout(window, events.next()).await.is_err());
    let requests = double.requests(HEALTH_WEB);
    println!("requests in {window:?} from a server answering at once: {requests}");
    // The token bucket: a burst of 10, then one per 100 ms (plus jitter).
    assert!(requests <= 45, "{requests} requests in 3 s: spinning");
    assert!(requests >= 10, "{requests} requests: the watch stopped");
    // Changes still get through.
    register(&agent, "b", 9002, &[]).await;
    assert_eq!(
        summary(&next_event_update(&mut events, "change while spinning").await),
        "Add[9002]"
    );
}

#[tokio::test]
async fn a_server_without_index_headers_is_polled_slowly() {
    let double = double();
    double.set_omit_index_header(true);
    let agent = AgentClient::new(&double.address());
    register(&agent, "a", 9001, &[]).await;
    let (registry, _) = registry(&double, json!({}));
    let mut events = driven(recover(
        registry,
        query("web", &[], None),
        Backoff::default(),
    ));
    assert_eq!(
        summary(&next_event_update(&mut events, "initial").await),
        "Reset[9001]"
    );
    register(&agent, "b", 9002, &[]).await;
    assert_eq!(
        summary(&next_event_update(&mut events, "polled change").await),
        "Add[9002]"
    );
    double.reset_requests();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let requests = double.requests(HEALTH_WEB);
    println!("requests in 3 s without X-Consul-Index: {requests}");
    assert!((1..=5).contains(&requests), "{requests} requests in 3 s");
}

#[tokio::test]
async fn service_locality_is_the_endpoint_zone() {
    // Consul 1.17+ `Service.Locality` (structs.Locality {Region, Zone}) gives zone-aware
    // routing its zone.
    let double = double();
    let agent = AgentClient::new(&double.address());
    agent
        .register(
            &json!({"ID": "a", "Name": "web", "Address": "127.0.0.1", "Port": 9001,
            "Locality": {"Region": "eu-west-1", "Zone": "eu-west-1a"}}),
        )
        .await
        .unwrap();
    register(&agent, "b", 9002, &[]).await;
    let (zoned, _) = registry(&double, json!({}));
    let mut s = zoned.watch(&query("web", &[], None)).await.unwrap();
    let Update::Reset(endpoints) = next(&mut s, "locality").await else {
        panic!("expected a reset")
    };
    let zones: Vec<(u16, Option<&str>)> = endpoints
        .iter()
        .map(|e| (e.address.port(), e.zone()))
        .collect();
    let mut zones = zones;
    zones.sort_unstable();
    assert_eq!(zones, [(9001, Some("eu-west-1a")), (9002, None)]);
}
