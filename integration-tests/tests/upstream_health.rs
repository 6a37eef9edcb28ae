//! Health and resilience of the upstream cache through the real binary: active health
//! checks with tier failover, panic modes, the shrink guard, and last-known-good snapshots
//! in `[state] dir` serving a restarted gateway whose registry is unavailable.

use std::time::Duration;

use switchyard_integration_tests::{eventually, Backend, Gateway};

fn file_sd(gw: &Gateway, name: &str, backends: &[&Backend]) {
    let targets: Vec<String> = backends
        .iter()
        .map(|b| format!("\"{}\"", b.address()))
        .collect();
    std::fs::write(
        gw.dir().join(name),
        format!(
            r#"[{{"targets":[{}],"labels":{{"__service__":"s"}}}}]"#,
            targets.join(",")
        ),
    )
    .unwrap();
}

async fn serving(gw: &Gateway) -> Vec<String> {
    let v = gw.admin_json("/api/upstreams").await;
    v[0]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["serving"] == true)
        .map(|e| e["address"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_checks_drop_failing_endpoints_and_fail_over_tiers() {
    let (a, b, backup) = (
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("backup"),
    );
    let config = format!(
        r#"[registries.local]
type = "static"
services.main = ["{}", "{}"]
services.backup = ["{}"]
[upstreams.u]
[upstreams.u.health_check]
path = "/healthz"
interval = "100ms"
timeout = "500ms"
healthy_threshold = 1
unhealthy_threshold = 2
[[upstreams.u.sources]]
registry = "local"
service = "main"
[[upstreams.u.sources]]
registry = "local"
service = "backup"
priority = 1
[[routes]]
upstream = "u"
"#,
        a.address(),
        b.address(),
        backup.address()
    );
    let gw = Gateway::start(&config).await;
    gw.wait_ready().await;
    assert_eq!(serving(&gw).await.len(), 2);
    a.set_status(503);
    eventually(
        "a failing its checks leaves the serving set",
        Duration::from_secs(5),
        || async { serving(&gw).await == vec![b.address().to_string()] },
    )
    .await;
    b.set_status(500);
    eventually(
        "tier 1 takes over when tier 0 is all unhealthy",
        Duration::from_secs(5),
        || async { serving(&gw).await == vec![backup.address().to_string()] },
    )
    .await;
    assert!(a.seen().iter().any(|s| s.path == "/healthz"));
    let reply = gw.get("/x").await;
    assert_eq!(reply.body, "backup");
    a.set_status(200);
    eventually(
        "a recovered serves again, tier 0 back",
        Duration::from_secs(5),
        || async { serving(&gw).await == vec![a.address().to_string()] },
    )
    .await;
    let v = gw.admin_json("/api/upstreams").await;
    let b_entry = v[0]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["address"] == b.address().to_string())
        .unwrap()
        .clone();
    assert_eq!(b_entry["health"]["active"], false);
    assert_eq!(b_entry["healthy"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_modes_when_everything_is_unhealthy() {
    let a = Backend::start("a");
    a.set_status(503); // health checks fail, but requests still get an answer
    let config = |mode: &str| {
        format!(
            "[registries.local]\ntype = \"static\"\nservices.s = [\"{}\"]\n[upstreams.u]\npanic_mode = \"{mode}\"\n[upstreams.u.health_check]\ninterval = \"100ms\"\nunhealthy_threshold = 1\n[[upstreams.u.sources]]\nregistry = \"local\"\nservice = \"s\"\n[[routes]]\nupstream = \"u\"\n",
            a.address()
        )
    };
    let gw = Gateway::start(&config("serve_all")).await;
    eventually(
        "the only endpoint is marked unhealthy",
        Duration::from_secs(5),
        || async {
            let v = gw.admin_json("/api/upstreams").await;
            v[0]["panic"] == true
        },
    )
    .await;
    assert_eq!(gw.get("/").await.body, "a", "serve_all keeps serving");
    gw.write_config(&config("reject"));
    let reply = gw.send(gw.client().post(gw.admin_url("/api/reload"))).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    eventually("reject answers 503", Duration::from_secs(5), || async {
        gw.get("/").await.status == 503
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shrink_guard_holds_a_partial_answer_for_its_grace() {
    let backends: Vec<Backend> = (0..4).map(|i| Backend::start(&format!("b{i}"))).collect();
    let all: Vec<&Backend> = backends.iter().collect();
    let config = r#"
[registries.files]
type = "file"
path = "services.json"
[upstreams.u]
min_healthy_ratio = 0.5
shrink_grace = "1500ms"
[[upstreams.u.sources]]
registry = "files"
service = "s"
[[routes]]
upstream = "u"
"#;
    let gw = Gateway::spawn(config);
    file_sd(&gw, "services.json", &all);
    gw.wait_healthy().await;
    gw.wait_ready().await;
    assert_eq!(serving(&gw).await.len(), 4);
    // 4 -> 1 is below half: held.
    file_sd(&gw, "services.json", &all[..1]);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        serving(&gw).await.len(),
        4,
        "partial answer held during the grace"
    );
    let v = gw.admin_json("/api/upstreams").await;
    assert_eq!(v[0]["sources"][0]["guarded"], true);
    let took = eventually(
        "the smaller set applies after the grace",
        Duration::from_secs(8),
        || async { serving(&gw).await.len() == 1 },
    )
    .await;
    println!("shrink applied {took:?} after the check began (grace 1.5 s)");
    // 1 -> 2 grows: applies at once; 2 -> 1 is exactly half: not below the ratio.
    file_sd(&gw, "services.json", &all[..2]);
    eventually("growth applies at once", Duration::from_secs(3), || async {
        serving(&gw).await.len() == 2
    })
    .await;
    file_sd(&gw, "services.json", &all[..1]);
    eventually(
        "half is not below the ratio",
        Duration::from_secs(3),
        || async { serving(&gw).await.len() == 1 },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saved_snapshot_serves_a_restart_while_the_registry_is_unavailable() {
    let a = Backend::start("a");
    let state = tempfile::tempdir().unwrap();
    let config = format!(
        r#"
[state]
dir = "{}"
[registries.files]
type = "file"
path = "services.json"
[upstreams.u]
[[upstreams.u.sources]]
registry = "files"
service = "s"
[[routes]]
upstream = "u"
"#,
        state.path().display()
    );
    {
        let gw = Gateway::spawn(&config);
        file_sd(&gw, "services.json", &[&a]);
        gw.wait_healthy().await;
        gw.wait_ready().await;
        assert_eq!(gw.get("/").await.body, "a");
        eventually("the set is saved", Duration::from_secs(5), || async {
            std::fs::read_dir(state.path().join("files"))
                .map(|mut d| d.next().is_some())
                .unwrap_or(false)
        })
        .await;
    }
    // A new gateway whose registry file does not exist: the registry is unavailable.
    let gw = Gateway::start(&config).await;
    gw.wait_ready().await;
    let reply = gw.get("/").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body, "a");
    let v = gw.admin_json("/api/upstreams").await;
    assert_eq!(v[0]["endpoints"][0]["stale"], true);
    assert_eq!(v[0]["sources"][0]["restored"], true);

    // Without a snapshot (a fresh state dir) nothing serves and readiness names the source.
    let empty = tempfile::tempdir().unwrap();
    let config = config.replace(
        &state.path().display().to_string(),
        &empty.path().display().to_string(),
    );
    let gw = Gateway::start(&format!(
        "[server]\nlisten = \"{{listen}}\"\nstartup_grace = \"60s\"\n{config}"
    ))
    .await;
    let ready = gw.send(gw.client().get(gw.admin_url("/readyz"))).await;
    assert_eq!(ready.status, 503);
    assert!(ready.body.contains("u/files/s"), "{}", ready.body);
    assert_eq!(gw.get("/").await.status, 503);
}
