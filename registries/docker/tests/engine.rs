//! The docker registry against a real engine (a private `dockerd`, see `support`): the cases
//! every registry must get right — first sync, add, remove, weight change, a malformed label
//! skipped, unhealthy out of rotation, service gone, engine down keeps the last set, engine
//! back resyncs in full. Each wait prints how long the registry took to see the change.
//!
//! Needs root and the Debian package docker.io (scripts/install-deps.sh).

mod support;

use std::time::Duration;

use support::{Engine, Watcher};

const P1: &str = "127.0.0.1:17101";
const P2: &str = "127.0.0.1:17102";
const P3: &str = "127.0.0.1:17103";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_are_followed_as_they_start_stop_change_and_fail_health_checks() {
    let engine = Engine::start();
    // One container before the registry starts: the first sync lists it.
    engine.run(
        "web-1",
        &[("switchyard.service", "web"), ("switchyard.port", "17101")],
        &[],
    );
    // Not ours: another service, and an unlabelled container.
    engine.run(
        "api-1",
        &[("switchyard.service", "api"), ("switchyard.port", "17109")],
        &[],
    );
    engine.run("plain", &[], &[]);
    let watcher = Watcher::start(serde_json::json!({"host": engine.host()}), "web");
    watcher
        .wait_set("first sync", &[&format!("{P1}/1/0")])
        .await;

    // Add: a second container, with weight, priority and zone labels.
    engine.run(
        "web-2",
        &[
            ("switchyard.service", "web"),
            ("switchyard.port", "17102"),
            ("switchyard.weight", "5"),
            ("switchyard.priority", "1"),
            ("switchyard.zone", "eu-1a"),
        ],
        &[],
    );
    let took = watcher
        .wait_set(
            "started container added",
            &[&format!("{P1}/1/0"), &format!("{P2}/5/1")],
        )
        .await;
    println!(
        "add seen {:.0} ms after `docker run` returned",
        took.as_secs_f64() * 1000.0
    );
    let zone = watcher.seen().set[&P2.parse().unwrap()]
        .zone()
        .map(str::to_owned);
    assert_eq!(zone.as_deref(), Some("eu-1a"));

    // Weight change: labels are fixed per container, so it is replaced on the same port.
    engine.ok(&["rm", "-f", "web-2"]);
    engine.run(
        "web-2b",
        &[
            ("switchyard.service", "web"),
            ("switchyard.port", "17102"),
            ("switchyard.weight", "9"),
        ],
        &[],
    );
    watcher
        .wait_set(
            "replaced with weight 9",
            &[&format!("{P1}/1/0"), &format!("{P2}/9/0")],
        )
        .await;

    // Malformed labels are skipped (and counted); the service's other instances stay.
    let errors_before = watcher.ctx.metrics.errors();
    engine.run(
        "web-bad",
        &[
            ("switchyard.service", "web"),
            ("switchyard.port", "17103"),
            ("switchyard.weight", "heavy"),
        ],
        &[],
    );
    engine.run("web-noport", &[("switchyard.service", "web")], &[]);
    let started = std::time::Instant::now();
    while watcher.ctx.metrics.errors() < errors_before + 2 {
        assert!(
            started.elapsed() < support::DEADLINE,
            "malformed containers not counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        watcher.seen().describe(),
        [format!("{P1}/1/0"), format!("{P2}/9/0")],
        "a malformed container changes nothing"
    );
    println!(
        "malformed: {} skipped and counted, the set unchanged",
        watcher.ctx.metrics.errors() - errors_before
    );
    engine.ok(&["rm", "-f", "web-bad", "web-noport"]);

    // Unhealthy: a failing Docker health check takes it out of rotation; starting counts
    // as not yet healthy; a passing one is healthy.
    engine.run(
        "web-3",
        &[("switchyard.service", "web"), ("switchyard.port", "17103")],
        &[
            "--health-cmd",
            "/usr/bin/false",
            "--health-interval",
            "1s",
            "--health-retries",
            "1",
        ],
    );
    watcher
        .wait_set(
            "failing health check: unhealthy",
            &[
                &format!("{P1}/1/0"),
                &format!("{P2}/9/0"),
                &format!("{P3}/1/0/unhealthy"),
            ],
        )
        .await;
    assert!(
        engine
            .ok(&["inspect", "--format", "{{.State.Health.Status}}", "web-3"])
            .contains("unhealthy")
            || engine
                .ok(&["inspect", "--format", "{{.State.Health.Status}}", "web-3"])
                .contains("starting"),
        "the engine agrees"
    );
    engine.ok(&["rm", "-f", "web-3"]);
    engine.run(
        "web-3b",
        &[("switchyard.service", "web"), ("switchyard.port", "17103")],
        &["--health-cmd", "/usr/bin/true", "--health-interval", "1s"],
    );
    watcher
        .wait_set(
            "passing health check: healthy",
            &[
                &format!("{P1}/1/0"),
                &format!("{P2}/9/0"),
                &format!("{P3}/1/0"),
            ],
        )
        .await;

    // Remove: stopped (die), and removed (destroy).
    engine.ok(&["stop", "-t", "0", "web-1"]);
    let took = watcher
        .wait_set(
            "stopped container removed",
            &[&format!("{P2}/9/0"), &format!("{P3}/1/0")],
        )
        .await;
    println!(
        "remove seen {:.0} ms after `docker stop` returned",
        took.as_secs_f64() * 1000.0
    );
    engine.ok(&["rm", "-f", "web-2b"]);
    watcher
        .wait_set("removed container gone", &[&format!("{P3}/1/0")])
        .await;

    // Service gone: its last container stops, the set empties (an authoritative answer).
    engine.ok(&["rm", "-f", "web-3b"]);
    watcher
        .wait("service gone: empty", |s| s.set.is_empty() && s.gone > 0)
        .await;
    assert_eq!(watcher.seen().errors, 0, "the engine never failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_down_keeps_the_last_set_and_engine_back_resyncs_in_full() {
    let mut engine = Engine::start();
    // web-1 comes back with the engine (restart policy); web-2 does not.
    engine.run(
        "web-1",
        &[("switchyard.service", "web"), ("switchyard.port", "17201")],
        &["--restart", "always"],
    );
    engine.run(
        "web-2",
        &[("switchyard.service", "web"), ("switchyard.port", "17202")],
        &[],
    );
    let watcher = Watcher::start(serde_json::json!({"host": engine.host()}), "web");
    watcher
        .wait_set(
            "first sync",
            &["127.0.0.1:17201/1/0", "127.0.0.1:17202/1/0"],
        )
        .await;

    // Engine down: the stream fails, the consumer keeps its last set.
    engine.stop_daemon();
    watcher
        .wait("engine down: an error", |s| s.errors > 0)
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let seen = watcher.seen();
    assert_eq!(
        seen.describe(),
        ["127.0.0.1:17201/1/0", "127.0.0.1:17202/1/0"],
        "engine down: the last set stays ({} errors so far)",
        seen.errors
    );
    println!(
        "engine down for 2 s: {} errors, the last set kept",
        seen.errors
    );
    let resets = seen.resets;

    // Engine back: a full list replaces the set (web-2 did not come back; no event said so).
    engine.start_daemon();
    let took = watcher
        .wait("engine back: resynced", |s| {
            s.resets > resets && s.describe() == ["127.0.0.1:17201/1/0"]
        })
        .await;
    println!(
        "resync {:.1} s after the engine answered",
        took.as_secs_f64()
    );

    // And events are followed again after the resync.
    engine.run(
        "web-3",
        &[("switchyard.service", "web"), ("switchyard.port", "17203")],
        &[],
    );
    watcher
        .wait_set(
            "after the resync, events again",
            &["127.0.0.1:17201/1/0", "127.0.0.1:17203/1/0"],
        )
        .await;
}
