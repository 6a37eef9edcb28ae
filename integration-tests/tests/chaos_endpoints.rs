//! Chaos on the instances, through the real `switchyard` binary, with request-level
//! accounting (a steady load of idempotent GETs, every answer counted):
//!
//! - instances killed under load, one after another, until one is left (first killed
//!   without any registry change, then also removed from a real etcd), then brought back:
//!   zero failed requests, since a live instance always existed (retries move a request off
//!   a dead instance; active health checks take it out of the serving set);
//! - every endpoint failing its active health checks (the instances still answer
//!   requests): with `panic_mode = "serve_all"` the whole tier keeps serving (zero
//!   failures); with `panic_mode = "reject"` every request is answered 503 until the checks
//!   pass again, and none fails after that. Instances are registered in the Consul agent
//!   double.
//!
//! Needs the Debian package etcd-server and `cargo build -p switchyard`.

mod mixed_common;

use std::time::{Duration, Instant};

use mixed_common::*;
use switchyard_integration_tests::{eventually, Gateway};

/// First sync of a freshly started gateway.
const START: Duration = Duration::from_secs(25);

fn health_check(extra: &str) -> String {
    format!(
        "[upstreams.echo.health_check]\npath = \"/healthz\"\ninterval = \"200ms\"\ntimeout = \"500ms\"\nhealthy_threshold = 1\nunhealthy_threshold = 2\n{extra}\n"
    )
}

/// The addresses `/api/upstreams` marks serving in upstream `echo`.
async fn serving(gateway: &Gateway) -> Vec<String> {
    let view = upstream_json(gateway, "echo").await;
    let mut serving: Vec<String> = view["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["serving"] == true)
        .filter_map(|e| e["address"].as_str().map(str::to_owned))
        .collect();
    serving.sort();
    serving
}

fn addresses(apps: &[&App]) -> Vec<String> {
    let mut list: Vec<String> = apps.iter().map(|a| a.address().to_string()).collect();
    list.sort();
    list
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn instances_killed_under_load_without_a_failed_request() {
    let mut apps = apps(&["a", "b", "c", "d"]);
    let etcd = Etcd::local();
    for app in &apps {
        etcd.put("echo", app).await;
    }
    let config = format!(
        "[log]\naccess = false\nlevel = \"info\"\n\n{}{}",
        etcd.registry("etcd"),
        upstream("echo", &[("etcd", "echo", 0, None)], "", "")
    ) + &health_check("")
        // Passive ejection (5 connection failures in a row) lasts 30 s by default: shorter
        // here, so the killed instances return within the test once they are back.
        + "[upstreams.echo.outlier]\nbase_ejection = \"2s\"\n";
    let gateway = Gateway::start(&config).await;
    eventually("four instances routed", START, || {
        reaches(&gateway, "/echo", &["a", "b", "c", "d"])
    })
    .await;

    let load = Load::start(
        &gateway,
        "/echo",
        "4 instances",
        150_000,
        Duration::from_secs(120),
    );
    tokio::time::sleep(Duration::from_secs(1)).await;

    // a dies; the registry still lists it. Retries cover the requests that hit it until
    // the health checks take it out.
    load.phase("a killed (still registered)");
    let killed = Instant::now();
    apps[0].kill();
    eventually(
        "a out of the serving set",
        Duration::from_secs(10),
        || async { serving(&gateway).await == addresses(&[&apps[1], &apps[2], &apps[3]]) },
    )
    .await;
    println!(
        "a killed -> out of the serving set in {:?}",
        killed.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;

    // b dies, and a's key goes (as a lease would expire).
    load.phase("b killed, a's key deleted");
    apps[1].kill();
    etcd.delete("echo", &apps[0]).await;
    eventually("only c and d serve", Duration::from_secs(10), || async {
        serving(&gateway).await == addresses(&[&apps[2], &apps[3]])
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    // c dies and is deleted at once: d alone serves.
    load.phase("c killed and deleted: d alone");
    apps[2].kill();
    etcd.delete("echo", &apps[2]).await;
    eventually("only d serves", Duration::from_secs(10), || async {
        serving(&gateway).await == addresses(&[&apps[3]])
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    // They come back on their ports; a and c registered again, b never left the registry.
    load.phase("a, b, c back");
    for app in &mut apps[..3] {
        app.revive();
    }
    etcd.put("echo", &apps[0]).await;
    etcd.put("echo", &apps[2]).await;
    let back = Instant::now();
    eventually("all four serve again", Duration::from_secs(15), || async {
        serving(&gateway).await == addresses(&[&apps[0], &apps[1], &apps[2], &apps[3]])
    })
    .await;
    println!("revived -> all four serving in {:?}", back.elapsed());
    load.phase("4 instances again");
    tokio::time::sleep(Duration::from_secs(1)).await;

    let report = load.finish().await;
    report.assert_all_ok();
    let alone = report.phase("c killed and deleted: d alone");
    assert!(alone.sent > 0);
    let again = report.phase("4 instances again");
    assert_eq!(again.by_body.len(), 4, "all four back: {:?}", again.by_body);
}

/// Three instances in Consul, health-checked; all of them start failing their checks (while
/// still answering requests), then pass again. Returns the load report.
async fn every_endpoint_fails_health_checks(panic_mode: &str) -> (Report, Vec<App>) {
    let apps = apps(&["a", "b", "c"]);
    let consul = Consul::double();
    for app in &apps {
        consul.register("echo", app).await;
    }
    let config = format!(
        "[log]\naccess = false\nlevel = \"info\"\n\n{}{}",
        consul.registry("consul"),
        upstream(
            "echo",
            &[("consul", "echo", 0, None)],
            &format!("panic_mode = \"{panic_mode}\""),
            ""
        )
    ) + &health_check("");
    let gateway = Gateway::start(&config).await;
    eventually("three healthy instances routed", START, || {
        reaches(&gateway, "/echo", &["a", "b", "c"])
    })
    .await;

    let load = Load::start(
        &gateway,
        "/echo",
        "all healthy",
        150_000,
        Duration::from_secs(120),
    );
    tokio::time::sleep(Duration::from_secs(1)).await;

    load.phase("a fails its checks");
    apps[0].set_health(500);
    eventually(
        "a out of the serving set",
        Duration::from_secs(5),
        || async { serving(&gateway).await == addresses(&[&apps[1], &apps[2]]) },
    )
    .await;
    load.phase("b and c serve");
    tokio::time::sleep(Duration::from_secs(1)).await;

    load.phase("every endpoint fails its checks");
    let failing = Instant::now();
    for app in &apps {
        app.set_health(503);
    }
    eventually(
        "panic: no endpoint healthy",
        Duration::from_secs(5),
        || async {
            let view = upstream_json(&gateway, "echo").await;
            view["panic"] == true
                && view["endpoints"]
                    .as_array()
                    .is_some_and(|e| e.iter().all(|e| e["healthy"] == false))
        },
    )
    .await;
    println!(
        "every check failing -> panic ({panic_mode}) in {:?}",
        failing.elapsed()
    );
    let view = upstream_json(&gateway, "echo").await;
    println!(
        "/api/upstreams in panic ({panic_mode}): serving_tier {} panic {} serving {:?}",
        view["serving_tier"],
        view["panic"],
        serving(&gateway).await
    );
    load.phase("panic");
    tokio::time::sleep(Duration::from_millis(1500)).await;

    load.phase("checks pass again");
    for app in &apps {
        app.set_health(200);
    }
    eventually(
        "every endpoint healthy again",
        Duration::from_secs(5),
        || async {
            let view = upstream_json(&gateway, "echo").await;
            view["panic"] == false
                && view["endpoints"]
                    .as_array()
                    .is_some_and(|e| e.iter().all(|e| e["healthy"] == true))
        },
    )
    .await;
    load.phase("all healthy again");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let checks: Vec<usize> = apps.iter().map(App::health_checks).collect();
    println!("health checks answered by a, b, c: {checks:?}");
    assert!(checks.iter().all(|n| *n > 0), "{checks:?}");
    (load.finish().await, apps)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_endpoint_failing_health_checks_serve_all_keeps_serving() {
    let (report, _apps) = every_endpoint_fails_health_checks("serve_all").await;
    report.assert_all_ok();
    let partial = report.phase("b and c serve");
    assert!(partial.only_from(&["b", "c"]), "{:?}", partial.by_body);
    let panic = report.phase("panic");
    assert_eq!(
        panic.by_body.len(),
        3,
        "serve_all: the whole tier serves: {:?}",
        panic.by_body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_endpoint_failing_health_checks_reject_answers_503_then_recovers() {
    let (report, _apps) = every_endpoint_fails_health_checks("reject").await;
    for phase in [
        "all healthy",
        "a fails its checks",
        "b and c serve",
        "all healthy again",
    ] {
        report.assert_no_failures(phase);
    }
    let panic = report.phase("panic");
    println!(
        "reject: {} of {} requests answered 503 while every check failed",
        panic.failures.get("503").copied().unwrap_or(0),
        panic.sent
    );
    assert!(panic.sent > 0);
    assert_eq!(panic.ok, 0, "reject: nothing served in panic: {panic:?}");
    assert!(
        panic.failures.keys().all(|k| k == "503"),
        "reject answers 503: {:?}",
        panic.failures
    );
}
