//! Zone-aware routing through the real binary: `[server] zone` plus `[upstreams.X]
//! zone_aware = true`. Three endpoints in the gateway's zone and three elsewhere: at least
//! 99 % of 1,000 requests stay local; when the local ones fail their active checks traffic
//! spills over to the other zone, and comes back when they recover. `/api/upstreams` shows
//! each endpoint's zone and whether it is local; `SWITCHYARD__SERVER__ZONE` sets the zone.
//!
//! Needs `cargo build -p switchyard`.

use std::collections::BTreeMap;
use std::time::Duration;

use switchyard_integration_tests::{eventually, gateway, Backend, Gateway};

const LOCAL: [&str; 3] = ["local-1", "local-2", "local-3"];
const REMOTE: [&str; 3] = ["remote-1", "remote-2", "remote-3"];

fn config(zone_line: &str, backends: &[(&Backend, &str)]) -> String {
    let entries: Vec<String> = backends
        .iter()
        .map(|(b, zone)| format!(r#"{{ address = "{}", zone = "{zone}" }}"#, b.address()))
        .collect();
    format!(
        r#"[log]
access = false
level = "info"

[server]
listen = "{{listen}}"
{zone_line}

[registries.local]
type = "static"
services.web = [{}]

[upstreams.web]
zone_aware = true
[upstreams.web.health_check]
path = "/healthz"
interval = "100ms"
timeout = "500ms"
healthy_threshold = 1
unhealthy_threshold = 2
[[upstreams.web.sources]]
registry = "local"
service = "web"

[[routes]]
upstream = "web"
"#,
        entries.join(", ")
    )
}

fn local_share(counts: &BTreeMap<String, usize>) -> f64 {
    let total: usize = counts.values().sum();
    let local: usize = LOCAL.iter().filter_map(|n| counts.get(*n)).sum();
    local as f64 / total as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_stay_in_the_gateways_zone_spill_over_and_come_back() {
    let local: Vec<Backend> = LOCAL.iter().map(|n| Backend::start(n)).collect();
    let remote: Vec<Backend> = REMOTE.iter().map(|n| Backend::start(n)).collect();
    let mut all: Vec<(&Backend, &str)> = local.iter().map(|b| (b, "eu-west-1a")).collect();
    all.extend(remote.iter().map(|b| (b, "eu-west-1b")));
    let gateway = Gateway::start(&config(r#"zone = "eu-west-1a""#, &all)).await;
    gateway.wait_ready().await;

    // /api/upstreams: each endpoint's zone, and whether it is local.
    let upstreams = gateway.admin_json("/api/upstreams").await;
    for endpoint in upstreams[0]["endpoints"].as_array().unwrap() {
        let zone = endpoint["zone"].as_str().unwrap();
        assert_eq!(endpoint["local"], zone == "eu-west-1a", "{endpoint}");
    }

    let counts = gateway.spread("/", 1000).await;
    let share = local_share(&counts);
    println!("all healthy: {counts:?} ({:.1} % local)", share * 100.0);
    assert!(share >= 0.99, "{counts:?}");
    assert!(LOCAL.iter().all(|n| counts.contains_key(*n)), "{counts:?}");

    // The local ones fail their checks: everything spills over to the other zone.
    for b in &local {
        b.set_status(503);
    }
    let spilled = eventually(
        "local endpoints failing: traffic spills over",
        Duration::from_secs(10),
        || async {
            let counts = gateway.spread("/", 50).await;
            REMOTE
                .iter()
                .map(|n| counts.get(*n).copied().unwrap_or(0))
                .sum::<usize>()
                == 50
        },
    )
    .await;
    println!("spilled over after {spilled:?}");

    // They recover: back to local.
    for b in &local {
        b.set_status(200);
    }
    let back = eventually(
        "local endpoints healthy again: traffic comes back",
        Duration::from_secs(10),
        || async { local_share(&gateway.spread("/", 200).await) >= 0.99 },
    )
    .await;
    println!("back local after {back:?}");
    let counts = gateway.spread("/", 1000).await;
    println!("recovered: {counts:?}");
    assert!(local_share(&counts) >= 0.99, "{counts:?}");
}

#[tokio::test]
async fn zone_aware_needs_a_zone_which_the_environment_can_give() {
    let backends: Vec<Backend> = LOCAL.iter().map(|n| Backend::start(n)).collect();
    let all: Vec<(&Backend, &str)> = backends.iter().map(|b| (b, "z1")).collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("zone.toml");
    let text = config("", &all).replace("{listen}", "127.0.0.1:0");
    std::fs::write(&path, text).unwrap();
    let (code, stderr) = gateway::check(&path);
    println!("without a zone: {code}\n{stderr}");
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("zone_aware"), "{stderr}");

    let output = std::process::Command::new(gateway::switchyard_bin())
        .args(["check", "--config"])
        .arg(&path)
        .env("SWITCHYARD__SERVER__ZONE", "z1")
        .output()
        .expect("run switchyard check");
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!(
        "with SWITCHYARD__SERVER__ZONE: {:?}\n{stderr}",
        output.status
    );
    assert!(output.status.success(), "{stderr}");
}
