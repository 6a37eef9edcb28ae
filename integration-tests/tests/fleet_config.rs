//! Fleet config in a real etcd (`[config_source] type = "etcd"`), through the real binary:
//! three gateway processes on one etcd converge on the same routing table after each change
//! (the time each one took is printed; the issue asks for 1 s, the deadline is 5 s); an
//! invalid object is refused by every gateway (named by its key in `/api/config_source`,
//! the metrics and the log) while they keep serving the last good config; the local file
//! still reloads on SIGHUP with the etcd objects merged in; a gateway started while etcd is
//! down runs on its file and picks the fleet config up when etcd returns; and
//! `switchyard config push|diff` (including `--prune`, a refused invalid file, and
//! `config/mixed.toml` itself).
//!
//! Needs the Debian packages etcd-server and etcd-client, and `cargo build -p switchyard`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use switchyard_integration_tests::etcd::EtcdServer;
use switchyard_integration_tests::{eventually, gateway, Backend, Gateway};

const PREFIX: &str = "/fleet";

/// The local file of each gateway: its registry and the config source; no route.
fn local_config(etcd: &EtcdServer, blue: &Backend, green: &Backend, extra: &str) -> String {
    format!(
        r#"[log]
access = false

[config_source]
type = "etcd"
endpoints = ["{}"]
prefix = "{PREFIX}"

[registries.local]
type = "static"
services.blue = ["{}"]
services.green = ["{}"]
{extra}"#,
        etcd.client_url(),
        blue.address(),
        green.address()
    )
}

/// The fleet's objects as a file for `config push`: two upstreams and a route. Its
/// registries table only makes it pass `switchyard check`; push leaves it out.
fn objects_file(dir: &Path, app_upstream: &str, balancer: &str) -> PathBuf {
    let path = dir.join("fleet.toml");
    std::fs::write(
        &path,
        format!(
            r#"[registries.local]
type = "static"
services.blue = ["127.0.0.1:1"]
services.green = ["127.0.0.1:2"]

[upstreams.blue]
balancer = "{balancer}"
[[upstreams.blue.sources]]
registry = "local"
service = "blue"

[upstreams.green]
[[upstreams.green.sources]]
registry = "local"
service = "green"

[[routes]]
name = "app"
path_prefix = "/app"
upstream = "{app_upstream}"
"#
        ),
    )
    .unwrap();
    path
}

/// Runs the real `switchyard ARGS`; returns (exit code, stdout, stderr).
fn cli(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(gateway::switchyard_bin())
        .args(args)
        .output()
        .expect("run switchyard");
    let result = (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    );
    println!(
        "switchyard {}: exit {}\n{}{}",
        args.join(" "),
        result.0,
        result.1,
        result.2
    );
    result
}

fn push(etcd: &EtcdServer, file: &Path, extra: &[&str]) -> (i32, String, String) {
    let url = etcd.client_url();
    let mut args = vec!["config", "push", "--etcd", &url, "--prefix", PREFIX];
    let from = file.to_str().unwrap();
    args.extend(["--from", from]);
    args.extend(extra);
    cli(&args)
}

fn route_names(routes: &Value) -> Vec<String> {
    routes
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|r| r["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// A gateway's `/api/routes` without its live figures (rates and quantiles over the window,
/// which differ from gateway to gateway): the route table itself.
async fn route_table(gateway: &Gateway) -> Value {
    let mut routes = gateway.admin_json("/api/routes").await;
    for route in routes.as_array_mut().into_iter().flatten() {
        if let Some(route) = route.as_object_mut() {
            for live in [
                "requests_per_second",
                "p50_ms",
                "p90_ms",
                "p99_ms",
                "error_ratio",
                "window_seconds",
            ] {
                route.remove(live);
            }
        }
    }
    routes
}

/// Polls every gateway until `check` holds for its `/api/routes`; returns (and prints)
/// when each first did. Panics after `deadline`.
async fn converge(
    what: &str,
    gateways: &[Gateway],
    deadline: Duration,
    check: impl Fn(&Value) -> bool,
) -> Vec<Duration> {
    let start = Instant::now();
    let mut seen: Vec<Option<Duration>> = vec![None; gateways.len()];
    while seen.iter().any(Option::is_none) {
        for (i, gateway) in gateways.iter().enumerate() {
            if seen[i].is_none() && check(&gateway.admin_json("/api/routes").await) {
                seen[i] = Some(start.elapsed());
            }
        }
        if start.elapsed() > deadline {
            panic!("{what}: not every gateway within {deadline:?}: {seen:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let times: Vec<Duration> = seen.into_iter().flatten().collect();
    println!(
        "{what}: converged on {} gateways after {:?} (each: {times:?})",
        gateways.len(),
        times.iter().max().unwrap()
    );
    times
}

async fn start_fleet(etcd: &EtcdServer, blue: &Backend, green: &Backend, n: usize) -> Vec<Gateway> {
    let mut gateways = Vec::new();
    for _ in 0..n {
        gateways.push(Gateway::start(&local_config(etcd, blue, green, "")).await);
    }
    gateways
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_gateways_converge_on_every_change() {
    let etcd = EtcdServer::start();
    let (blue, green) = (Backend::start("blue"), Backend::start("green"));
    let dir = tempfile::tempdir().unwrap();
    let (code, _, _) = push(&etcd, &objects_file(dir.path(), "blue", "round_robin"), &[]);
    assert_eq!(code, 0);

    let gateways = start_fleet(&etcd, &blue, &green, 3).await;
    // Start-up waited for the first read: the fleet's route is there from the start.
    for gateway in &gateways {
        assert_eq!(
            route_names(&gateway.admin_json("/api/routes").await),
            ["app"]
        );
        let reply = gateway.get("/app").await;
        assert_eq!(
            (reply.status, reply.body.contains("blue")),
            (200, true),
            "{reply:?}"
        );
        let stderr = gateway.stderr();
        assert!(
            stderr.contains(&format!(
                "config: etcd {}{PREFIX}: 3 objects at revision",
                etcd.client_url()
            )),
            "{stderr}"
        );
        let source: switchyard::api::ConfigSourceStatus =
            serde_json::from_value(gateway.admin_json("/api/config_source").await).unwrap();
        assert_eq!(source.state, "ok", "{source:?}");
        assert_eq!(source.kind.as_deref(), Some("etcd"));
        assert_eq!(source.objects, Some(3), "{source:?}");
    }

    let mut worst = Duration::ZERO;
    // Routes added one by one with etcdctl (JSON and TOML documents)...
    for i in 0..5 {
        let name = format!("r{i}");
        let document = if i % 2 == 0 {
            format!(r#"{{"path_prefix": "/r{i}", "upstream": "green"}}"#)
        } else {
            format!("path_prefix = \"/r{i}\"\nupstream = \"green\"\n")
        };
        etcd.etcdctl(&["put", &format!("{PREFIX}/routes/{name}"), &document]);
        let times = converge(
            &format!("put routes/{name}"),
            &gateways,
            Duration::from_secs(5),
            |routes| route_names(routes).contains(&name),
        )
        .await;
        worst = worst.max(times.into_iter().max().unwrap());
    }
    for gateway in &gateways {
        let reply = gateway.get("/r3").await;
        assert_eq!(
            (reply.status, reply.body.contains("green")),
            (200, true),
            "{reply:?}"
        );
    }

    // ... a route moved to another upstream by `config push` ...
    let (code, stdout, _) = push(
        &etcd,
        &objects_file(dir.path(), "green", "round_robin"),
        &[],
    );
    assert_eq!(code, 0);
    assert!(
        stdout.contains(&format!("~ {PREFIX}/routes/app")),
        "{stdout}"
    );
    let times = converge(
        "push routes/app -> green",
        &gateways,
        Duration::from_secs(5),
        |routes| {
            routes
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["name"] == "app" && r["upstream"] == "green")
        },
    )
    .await;
    worst = worst.max(times.into_iter().max().unwrap());
    for gateway in &gateways {
        let reply = gateway.get("/app").await;
        assert!(reply.body.contains("green"), "{reply:?}");
    }

    // ... and a route deleted.
    etcd.etcdctl(&["del", &format!("{PREFIX}/routes/r0")]);
    let times = converge(
        "del routes/r0",
        &gateways,
        Duration::from_secs(5),
        |routes| !route_names(routes).contains(&"r0".to_owned()),
    )
    .await;
    worst = worst.max(times.into_iter().max().unwrap());
    println!("slowest gateway over all changes: {worst:?}");

    // The same table everywhere, at the same revision.
    let tables: Vec<Value> = futures::future::join_all(gateways.iter().map(route_table)).await;
    assert!(tables.windows(2).all(|w| w[0] == w[1]), "{tables:?}");
    let revisions: Vec<Value> =
        futures::future::join_all(gateways.iter().map(|g| g.admin_json("/api/config_source")))
            .await
            .into_iter()
            .map(|s| s["applied_revision"].clone())
            .collect();
    assert!(revisions.windows(2).all(|w| w[0] == w[1]), "{revisions:?}");

    // A SIGHUP reload of one gateway's own file keeps the fleet's objects merged in.
    let first = &gateways[0];
    first.write_config(&local_config(
        &etcd,
        &blue,
        &green,
        "\n[[routes]]\nname = \"local\"\npath = \"/local\"\nupstream = \"blue\"\n",
    ));
    first.signal("HUP");
    eventually(
        "SIGHUP adds the file's route next to etcd's",
        Duration::from_secs(5),
        || async {
            let names = route_names(&first.admin_json("/api/routes").await);
            names.contains(&"local".to_owned())
                && names.contains(&"app".to_owned())
                && names.contains(&"r4".to_owned())
        },
    )
    .await;
    assert!(first.get("/local").await.body.contains("blue"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_object_is_refused_without_disturbing_the_fleet() {
    let etcd = EtcdServer::start();
    let (blue, green) = (Backend::start("blue"), Backend::start("green"));
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        push(&etcd, &objects_file(dir.path(), "blue", "round_robin"), &[]).0,
        0
    );
    let gateways = start_fleet(&etcd, &blue, &green, 3).await;
    let before: Vec<Value> = futures::future::join_all(gateways.iter().map(route_table)).await;

    // Traffic keeps flowing through every gateway while bad objects arrive.
    let client = reqwest::Client::new();
    let urls: Vec<String> = gateways.iter().map(|g| g.url("/app")).collect();
    let traffic = tokio::spawn(async move {
        let mut answers = Vec::new();
        for round in 0..150 {
            let reply = client
                .get(&urls[round % urls.len()])
                .send()
                .await
                .expect("request");
            answers.push(reply.status().as_u16());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        answers
    });

    // A route to an upstream nobody has.
    etcd.etcdctl(&[
        "put",
        &format!("{PREFIX}/routes/bad"),
        r#"{"path_prefix": "/bad", "upstream": "nope"}"#,
    ]);
    for gateway in &gateways {
        eventually(
            "the bad route is refused",
            Duration::from_secs(5),
            || async {
                let source = gateway.admin_json("/api/config_source").await;
                source["state"] == "refused"
                    && source["refused"]["errors"]
                        .to_string()
                        .contains(&format!("etcd:{PREFIX}/routes/bad: upstream"))
            },
        )
        .await;
    }
    // Then a document that is neither JSON nor TOML, next to it: both are named.
    etcd.etcdctl(&["put", &format!("{PREFIX}/upstreams/garbage"), "{oops"]);
    for gateway in &gateways {
        eventually(
            "the garbage upstream is refused",
            Duration::from_secs(5),
            || async {
                let errors =
                    gateway.admin_json("/api/config_source").await["refused"]["errors"].to_string();
                errors.contains(&format!("etcd:{PREFIX}/upstreams/garbage: invalid JSON"))
                    && errors.contains("routes/bad")
            },
        )
        .await;
    }
    for (gateway, before) in gateways.iter().zip(&before) {
        assert_eq!(
            &route_table(gateway).await,
            before,
            "the running table stays"
        );
        let metrics = gateway
            .send(gateway.client().get(gateway.admin_url("/metrics")))
            .await
            .body;
        assert!(
            metrics.contains("switchyard_config_source_changes_total{result=\"refused\"} 2"),
            "{metrics}"
        );
        assert!(
            metrics.contains("switchyard_config_source_up 1"),
            "{metrics}"
        );
        assert!(
            gateway
                .stderr()
                .contains(&format!("etcd:{PREFIX}/routes/bad")),
            "{}",
            gateway.stderr()
        );
        let status = cli(&["status", "--admin", &gateway.admin_url("")]);
        assert!(
            status.1.contains("Config source: etcd") && status.1.contains("refused revision"),
            "{}",
            status.1
        );
        // `status` reads the same typed documents: the refusal as the gateway wrote it.
        let snapshot = switchyard::status::fetch_snapshot(&gateway.admin_url(""), None)
            .await
            .unwrap();
        let source = snapshot.source.expect("a config source");
        assert_eq!(source.state, "refused", "{source:?}");
        let refused = source.refused.flatten().expect("the refusal");
        assert!(
            refused.errors.iter().any(|e| e.contains("routes/bad")),
            "{refused:?}"
        );
        for error in &refused.errors {
            assert!(
                status.1.contains(error.as_str()),
                "{error} not in\n{}",
                status.1
            );
        }
        assert_eq!(
            snapshot.routes.len(),
            route_table(gateway).await.as_array().map_or(0, Vec::len)
        );
    }
    let answers = traffic.await.unwrap();
    assert!(answers.iter().all(|&s| s == 200), "{answers:?}");
    println!("{} requests during the refusals, all 200", answers.len());

    // Fixing the objects lets the next change through everywhere.
    etcd.etcdctl(&["del", &format!("{PREFIX}/upstreams/garbage")]);
    etcd.etcdctl(&[
        "put",
        &format!("{PREFIX}/routes/bad"),
        r#"{"path_prefix": "/bad", "upstream": "green"}"#,
    ]);
    converge(
        "fixed routes/bad",
        &gateways,
        Duration::from_secs(5),
        |routes| route_names(routes).contains(&"bad".to_owned()),
    )
    .await;
    for gateway in &gateways {
        let source = gateway.admin_json("/api/config_source").await;
        assert_eq!(source["state"], "ok", "{source}");
        assert!(gateway.get("/bad").await.body.contains("green"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_down_at_start_then_back() {
    let mut etcd = EtcdServer::start();
    let (blue, green) = (Backend::start("blue"), Backend::start("green"));
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        push(&etcd, &objects_file(dir.path(), "blue", "round_robin"), &[]).0,
        0
    );
    etcd.stop();
    let file_route = "\n[[routes]]\nname = \"local\"\npath = \"/local\"\nupstream = \"local-blue\"\n\n[upstreams.local-blue]\n[[upstreams.local-blue.sources]]\nregistry = \"local\"\nservice = \"blue\"\n";
    let config = local_config(&etcd, &blue, &green, file_route).replace(
        "[config_source]",
        "[config_source]\nstartup_timeout = \"1s\"\ndial_timeout = \"500ms\"",
    );
    let gateway = Gateway::start(&config).await;
    assert!(
        gateway.stderr().contains("starting on the file alone"),
        "{}",
        gateway.stderr()
    );
    assert_eq!(
        route_names(&gateway.admin_json("/api/routes").await),
        ["local"]
    );
    eventually(
        "config source reported down",
        Duration::from_secs(10),
        || async { gateway.admin_json("/api/config_source").await["state"] == "down" },
    )
    .await;
    etcd.restart();
    eventually(
        "the fleet's route arrives once etcd is back",
        Duration::from_secs(30),
        || async {
            route_names(&gateway.admin_json("/api/routes").await).contains(&"app".to_owned())
        },
    )
    .await;
    assert!(gateway.get("/app").await.body.contains("blue"));
    assert!(gateway.get("/local").await.body.contains("blue"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_push_and_diff() {
    let etcd = EtcdServer::start();
    let dir = tempfile::tempdir().unwrap();
    let url = etcd.client_url();
    let diff = |file: &Path| {
        cli(&[
            "config",
            "diff",
            "--etcd",
            &url,
            "--prefix",
            PREFIX,
            "--from",
            file.to_str().unwrap(),
        ])
    };

    let file = objects_file(dir.path(), "blue", "round_robin");
    let (code, stdout, _) = diff(&file);
    assert_eq!(code, 1, "differences: exit 1");
    for key in ["routes/app", "upstreams/blue", "upstreams/green"] {
        assert!(stdout.contains(&format!("+ {PREFIX}/{key}\n")), "{stdout}");
    }
    assert!(
        !stdout.contains("registries"),
        "registries stay local: {stdout}"
    );

    let (code, stdout, _) = push(&etcd, &file, &[]);
    assert_eq!(code, 0);
    assert!(stdout.contains("pushed 3 change(s)"), "{stdout}");
    let stored = etcd.etcdctl(&["get", "--prefix", "--keys-only", PREFIX]);
    let keys: Vec<&str> = stored.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(
        keys,
        [
            format!("{PREFIX}/routes/app"),
            format!("{PREFIX}/upstreams/blue"),
            format!("{PREFIX}/upstreams/green")
        ]
    );
    let (code, stdout, _) = diff(&file);
    assert_eq!((code, stdout.trim()), (0, "3 unchanged"));

    // A changed balancer is shown line by line; an object only in etcd is kept unless --prune.
    let file = objects_file(dir.path(), "blue", "ewma");
    etcd.etcdctl(&[
        "put",
        &format!("{PREFIX}/routes/old"),
        r#"{"path": "/old", "upstream": "blue"}"#,
    ]);
    let (code, stdout, _) = diff(&file);
    assert_eq!(code, 1);
    assert!(
        stdout.contains(&format!("~ {PREFIX}/upstreams/blue\n    - \"balancer\": \"round_robin\",\n    + \"balancer\": \"ewma\",")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("{PREFIX}/routes/old (only in etcd")),
        "{stdout}"
    );
    let (code, stdout, _) = push(&etcd, &file, &["--prune"]);
    assert_eq!(code, 0);
    assert!(
        stdout.contains(&format!("- {PREFIX}/routes/old")),
        "{stdout}"
    );
    assert!(etcd
        .etcdctl(&["get", &format!("{PREFIX}/routes/old")])
        .is_empty());
    assert_eq!(diff(&file).0, 0);

    // An invalid file is refused whole, naming the problem; nothing is written.
    let revision_before = etcd.etcdctl(&["get", "--prefix", PREFIX, "-w", "json"]);
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[[routes]]\nname = \"x\"\npath = \"/x\"\nupstream = \"nope\"\n",
    )
    .unwrap();
    let (code, _, stderr) = push(&etcd, &bad, &[]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("routes[0].upstream") && stderr.contains("nothing written"),
        "{stderr}"
    );
    let after = etcd.etcdctl(&["get", "--prefix", PREFIX, "-w", "json"]);
    let revision =
        |json: &str| serde_json::from_str::<Value>(json).unwrap()["header"]["revision"].clone();
    assert_eq!(revision(&revision_before), revision(&after));

    // The repository's mixed example pushes as it is.
    let mixed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/mixed.toml");
    let (code, stdout, stderr) = cli(&[
        "config",
        "push",
        "--etcd",
        &url,
        "--prefix",
        "/mixed",
        "--from",
        mixed.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let written = etcd.etcdctl(&["get", "--prefix", "--keys-only", "/mixed"]);
    assert!(
        written.contains("/mixed/routes/") && written.contains("/mixed/upstreams/"),
        "{written}\n{stdout}"
    );
    assert!(!written.contains("registries"), "{written}");
}
