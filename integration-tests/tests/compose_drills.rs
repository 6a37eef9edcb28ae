//! Drills on the local compose project (deploy/local/compose.yml), as a user would run them
//! against `docker compose`: a registry stopped, an instance killed under load, the gateway
//! restarted while a registry is down, a service scaled up. Every drill counts its requests
//! and prints the counts; none may fail where a healthy instance existed.
//!
//! Run by `make compose-test` (scripts/docker/compose-test.sh), which builds the images,
//! brings the project up, sets `SWITCHYARD_COMPOSE=1` and runs these one at a time: they
//! stop and restart the project's services, and each leaves the project as it found it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

const GATEWAY: &str = "http://127.0.0.1:8080";
const ADMIN: &str = "http://127.0.0.1:9901";
/// How long a drill waits for the project to react (the machine may be loaded).
const DEADLINE: Duration = Duration::from_secs(90);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Fails unless the compose project is up for us.
fn require_project() {
    assert!(
        std::env::var("SWITCHYARD_COMPOSE").as_deref() == Ok("1"),
        "these drills need the local compose project: run `make compose-test`"
    );
}

/// `docker compose ARGS` on the local project; fails the test when it fails.
fn compose(args: &[&str]) -> String {
    let started = Instant::now();
    let output = Command::new(repo().join("scripts/docker/compose.sh"))
        .args(args)
        .output()
        .expect("run scripts/docker/compose.sh");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "docker compose {args:?}: {text}");
    println!(
        "docker compose {} ({:.1} s)",
        args.join(" "),
        started.elapsed().as_secs_f64()
    );
    text
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// One GET through the gateway: the answering instance, or what went wrong.
async fn get(client: &reqwest::Client, path: &str) -> Result<String, String> {
    let response = client
        .get(format!("{GATEWAY}{path}"))
        .send()
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    let status = response.status();
    let body = response.text().await.map_err(|e| format!("body: {e}"))?;
    if !status.is_success() {
        return Err(format!("{status}: {body}"));
    }
    let json: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
    Ok(json["instance"].as_str().unwrap_or("?").to_owned())
}

async fn admin(path: &str) -> Value {
    client()
        .get(format!("{ADMIN}{path}"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
        .json()
        .await
        .unwrap()
}

/// A registry's entry in `/api/registries`.
async fn registry_state(name: &str) -> String {
    let registries = admin("/api/registries").await;
    registries
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .map(|r| r["state"].as_str().unwrap_or_default().to_owned())
        .unwrap_or_else(|| panic!("no registry {name}: {registries}"))
}

/// Polls `check` until it holds; prints and returns how long that took.
async fn eventually<F, Fut>(what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(
            started.elapsed() < DEADLINE,
            "{what}: not within {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = started.elapsed();
    println!("{what}: after {:.1} s", took.as_secs_f64());
    took
}

/// Sends GETs to `path` until enough distinct instances answered to cover `names` (each a
/// prefix of an instance name).
async fn reaches(path: &str, names: &[&str]) -> bool {
    let client = client();
    let mut seen = Vec::new();
    for _ in 0..40 {
        if let Ok(instance) = get(&client, path).await {
            seen.push(instance);
        }
        if names.iter().all(|n| seen.iter().any(|s| s.starts_with(n))) {
            return true;
        }
    }
    false
}

/// What a load run saw.
#[derive(Debug, Default)]
struct Counts {
    ok: BTreeMap<String, usize>,
    failed: Vec<String>,
}

impl Counts {
    fn total_ok(&self) -> usize {
        self.ok.values().sum()
    }
}

/// Concurrent GETs to `path` until stopped, counted.
struct Load {
    stop: Arc<AtomicBool>,
    counts: Arc<Mutex<Counts>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(path: &'static str, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(Mutex::new(Counts::default()));
        let tasks = (0..clients)
            .map(|_| {
                let (stop, counts) = (Arc::clone(&stop), Arc::clone(&counts));
                tokio::spawn(async move {
                    let client = client();
                    while !stop.load(Ordering::Relaxed) {
                        let result = get(&client, path).await;
                        {
                            let mut counts = counts.lock().unwrap();
                            match result {
                                Ok(instance) => *counts.ok.entry(instance).or_default() += 1,
                                Err(error) => counts.failed.push(error),
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                })
            })
            .collect();
        Load {
            stop,
            counts,
            tasks,
        }
    }

    /// Requests answered so far by instances whose name starts with `prefix`.
    fn ok_from(&self, prefix: &str) -> usize {
        let counts = self.counts.lock().unwrap();
        counts
            .ok
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, n)| n)
            .sum()
    }

    async fn finish(self, what: &str) -> Counts {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.unwrap();
        }
        let counts = std::mem::take(&mut *self.counts.lock().unwrap());
        println!(
            "{what}: {} requests answered {:?}, {} failed {:?}",
            counts.total_ok(),
            counts.ok,
            counts.failed.len(),
            counts.failed.iter().take(5).collect::<Vec<_>>()
        );
        counts
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn consul_stopped_requests_keep_succeeding_on_the_last_known_set() {
    require_project();
    eventually("web reaches both consul instances", || {
        reaches("/web", &["consul-web-1", "consul-web-2"])
    })
    .await;
    let load = Load::start("/web", 4);
    tokio::time::sleep(Duration::from_secs(1)).await;
    compose(&["stop", "-t", "1", "consul"]);
    eventually("/api/registries says consul is down", || async {
        registry_state("consul").await == "down"
    })
    .await;
    let before = load.ok_from("consul-web");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let served_while_down = load.ok_from("consul-web") - before;
    let counts = load.finish("web with consul stopped").await;
    assert!(
        counts.failed.is_empty(),
        "failed requests: {:?}",
        counts.failed
    );
    assert!(
        served_while_down > 0,
        "the consul instances (last known set) kept serving while consul was down"
    );
    println!("{served_while_down} requests served by the last known consul set while it was down");

    // Back: the agent starts empty, as `consul agent -dev` does; the seed registers again.
    compose(&["start", "consul"]);
    compose(&["up", "-d", "--no-deps", "seed-consul"]);
    eventually("consul ok again, web reaches its instances", || async {
        registry_state("consul").await == "ok"
            && reaches("/web", &["consul-web-1", "consul-web-2"]).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_instance_killed_under_load_fails_no_idempotent_request() {
    require_project();
    eventually("web reaches its instances", || {
        reaches("/web", &["consul-web-1", "consul-web-2"])
    })
    .await;
    let load = Load::start("/web", 8);
    tokio::time::sleep(Duration::from_secs(1)).await;
    compose(&["kill", "consul-web-1"]);
    let killed_at = load.ok_from("");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let after = load.ok_from("") - killed_at;
    let counts = load.finish("web with consul-web-1 killed").await;
    assert!(
        counts.failed.is_empty(),
        "GET is idempotent: every request must be retried onto a live instance: {:?}",
        counts.failed
    );
    assert!(after > 0, "requests were sent after the kill");
    println!("{after} requests after the kill, none failed");
    compose(&["start", "consul-web-1"]);
    eventually("consul-web-1 back in rotation", || {
        reaches("/web", &["consul-web-1"])
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_gateway_restarted_while_etcd_is_down_routes_at_once_from_its_state_dir() {
    require_project();
    eventually("inventory reaches both etcd instances", || {
        reaches("/inventory", &["etcd-inventory-1", "etcd-inventory-2"])
    })
    .await;
    compose(&["stop", "-t", "1", "etcd"]);
    eventually("/api/registries says etcd is down", || async {
        registry_state("etcd").await == "down"
    })
    .await;

    let restarted = Instant::now();
    compose(&["restart", "-t", "5", "gateway"]);
    // From the first request the new gateway accepts, every one is answered by the etcd
    // instances it restored from [state] dir (the named volume gateway-state), though etcd
    // is still down: not by the DNS tier, not with an error.
    let client = client();
    let mut counts = Counts::default();
    let first = loop {
        assert!(
            restarted.elapsed() < DEADLINE,
            "the gateway did not come back"
        );
        match get(&client, "/inventory").await {
            Err(e) if e.starts_with("request failed") => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(instance) => {
                *counts.ok.entry(instance).or_default() += 1;
                break restarted.elapsed();
            }
            Err(e) => {
                counts.failed.push(e);
                break restarted.elapsed();
            }
        }
    };
    for _ in 0..200 {
        match get(&client, "/inventory").await {
            Ok(instance) => *counts.ok.entry(instance).or_default() += 1,
            Err(e) => counts.failed.push(e),
        }
    }
    println!(
        "gateway restarted with etcd down: first answer {:.1} s after the restart began; {} answered {:?}, {} failed {:?}",
        first.as_secs_f64(),
        counts.total_ok(),
        counts.ok,
        counts.failed.len(),
        counts.failed.iter().take(5).collect::<Vec<_>>()
    );
    assert!(counts.failed.is_empty(), "failed: {:?}", counts.failed);
    assert!(
        counts.ok.keys().all(|k| k.starts_with("etcd-inventory")),
        "answered by the restored etcd set only: {:?}",
        counts.ok
    );
    assert_eq!(
        registry_state("etcd").await,
        "down",
        "etcd was down all along"
    );
    let upstreams = admin("/api/upstreams").await;
    let inventory = upstreams
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "inventory")
        .unwrap();
    println!("inventory after the restart: {}", inventory["sources"]);
    let etcd_source = inventory["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["registry"] == "etcd")
        .unwrap();
    assert_eq!(
        etcd_source["restored"], true,
        "the etcd set came from [state] dir: {etcd_source}"
    );

    compose(&["start", "etcd"]);
    eventually("etcd ok again", || async {
        registry_state("etcd").await == "ok"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn instances_scaled_up_and_registered_through_etcd_receive_traffic() {
    require_project();
    eventually("inventory reaches both etcd instances", || {
        reaches("/inventory", &["etcd-inventory-1", "etcd-inventory-2"])
    })
    .await;
    let load = Load::start("/inventory", 4);
    compose(&[
        "up",
        "-d",
        "--no-deps",
        "--scale",
        "inventory-scaled=3",
        "inventory-scaled",
    ]);
    let started = Instant::now();
    loop {
        let scaled: Vec<String> = {
            let counts = load.counts.lock().unwrap();
            counts
                .ok
                .keys()
                .filter(|k| k.starts_with("inventory-scaled@"))
                .cloned()
                .collect()
        };
        if scaled.len() >= 3 {
            println!(
                "3 scaled instances receive traffic after {:.1} s: {scaled:?}",
                started.elapsed().as_secs_f64()
            );
            break;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "scaled instances seen so far: {scaled:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Scaled back down: each deregisters (SIGTERM ends its `switchyard register`).
    compose(&[
        "up",
        "-d",
        "--no-deps",
        "--scale",
        "inventory-scaled=0",
        "inventory-scaled",
    ]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let counts = load.finish("inventory scaled to 3 and back to 0").await;
    assert!(counts.failed.is_empty(), "failed: {:?}", counts.failed);
}
