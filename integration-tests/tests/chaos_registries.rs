//! Chaos on the registries, through the real `switchyard` binary, with request-level
//! accounting: four registries — a real etcd, a real bind9, the Consul agent double and the
//! Kubernetes API-server double — each feed one upstream of two live instances, while a
//! steady load of idempotent GETs runs on every route and every answer is counted.
//!
//! - a registry lost mid-run and restored, one after the other: zero failed requests, the
//!   upstream reported stale while its registry is down, changes applied once it is back;
//! - all four registries flapping together, 10 down/up cycles: zero failed requests, and
//!   afterwards changes still apply;
//! - registries down when the gateway starts, with a state snapshot: ready and routing from
//!   the snapshot (zero failures), fresh again once the registries return;
//! - registries down at start without a snapshot: `/readyz` 503 naming every pending source,
//!   requests 503 (counted: no instance is known), then each registry's route and readiness
//!   recover as it returns, with zero failures from then on.
//!
//! These tests stop and restart the servers, so they always use local ones (127.0.0.1).
//! Needs the Debian packages etcd-server, bind9 and bind9-dnsutils, and
//! `cargo build -p switchyard`.

mod mixed_common;

use std::path::Path;
use std::time::{Duration, Instant};

use mixed_common::*;
use switchyard_integration_tests::{eventually, Gateway};

/// The registries, in the order the tests take them down.
const KINDS: [&str; 4] = ["etcd", "dns", "consul", "k8s"];
/// Service name in every registry.
const SERVICE: &str = "echo";
/// First sync of a freshly started gateway.
const START: Duration = Duration::from_secs(25);
/// A registry back: the gateway reconnects within its backoff (at most 30 s).
const RECONNECT: Duration = Duration::from_secs(60);

/// Four registries, each with instances `<kind>-a` and `<kind>-b` of [`SERVICE`].
struct Fleet {
    etcd: Etcd,
    dns: Dns,
    consul: Consul,
    kube: Kube,
    apps: Vec<(&'static str, Vec<App>)>,
}

impl Fleet {
    async fn start() -> Fleet {
        let apps: Vec<(&'static str, Vec<App>)> = KINDS
            .iter()
            .map(|kind| (*kind, apps(&[&format!("{kind}-a"), &format!("{kind}-b")])))
            .collect();
        let of = |kind: &str| &apps.iter().find(|(k, _)| *k == kind).unwrap().1;
        let etcd = Etcd::local();
        let dns_apps: Vec<&App> = of("dns").iter().collect();
        let dns = Dns::local(&[(SERVICE, &dns_apps)]);
        let consul = Consul::double();
        let kube = Kube::double().await;
        for app in of("etcd") {
            etcd.put(SERVICE, app).await;
        }
        for app in of("consul") {
            consul.register(SERVICE, app).await;
        }
        for app in of("k8s") {
            kube.add(SERVICE, app).await;
        }
        Fleet {
            etcd,
            dns,
            consul,
            kube,
            apps,
        }
    }

    fn names(&self, kind: &str) -> Vec<String> {
        self.apps
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, apps)| apps.iter().map(|a| a.name().to_owned()).collect())
            .unwrap_or_default()
    }

    /// The gateway config: one registry named after each kind, one upstream per registry
    /// routed at `/<kind>`, `extra` first.
    fn config(&self, extra: &str) -> String {
        let mut config = format!("[log]\naccess = false\nlevel = \"info\"\n\n{extra}\n");
        config += &self.etcd.registry("etcd");
        config += &self.dns.registry("dns");
        config += &self.consul.registry("consul");
        config += &self.kube.registry("k8s");
        for kind in KINDS {
            let service = match kind {
                "dns" => self.dns.service(SERVICE),
                "k8s" => self.kube.service(SERVICE),
                _ => SERVICE.to_owned(),
            };
            config += &upstream(kind, &[(kind, &service, 0, None)], "", "");
        }
        config
    }

    /// Takes registry `kind` down (its process or listener gone, state kept).
    async fn stop(&mut self, kind: &str) {
        match kind {
            "etcd" => tokio::task::block_in_place(|| self.etcd.knobs().stop()),
            "dns" => tokio::task::block_in_place(|| self.dns.knobs().stop()),
            "consul" => tokio::task::block_in_place(|| self.consul.knobs().stop()),
            "k8s" => self.kube.knobs().stop().await,
            other => panic!("unknown registry {other}"),
        }
    }

    /// Brings registry `kind` back on the same address with its data.
    async fn restart(&mut self, kind: &str) {
        match kind {
            "etcd" => tokio::task::block_in_place(|| self.etcd.knobs().restart()),
            "dns" => tokio::task::block_in_place(|| self.dns.knobs().start()),
            "consul" => tokio::task::block_in_place(|| self.consul.knobs().resume())
                .expect("resume the Consul double"),
            "k8s" => self
                .kube
                .knobs()
                .start_again()
                .await
                .expect("restart the API-server double"),
            other => panic!("unknown registry {other}"),
        }
    }

    /// Adds a new instance `<kind>-c` through the registry's API and returns it.
    async fn add_third(&self, kind: &str) -> App {
        let app = App::start(&format!("{kind}-c"));
        match kind {
            "etcd" => self.etcd.put(SERVICE, &app).await,
            "dns" => tokio::task::block_in_place(|| self.dns.add(SERVICE, &app)),
            "consul" => self.consul.register(SERVICE, &app).await,
            "k8s" => self.kube.add(SERVICE, &app).await,
            other => panic!("unknown registry {other}"),
        }
        app
    }

    /// Removes instance `<kind>-a` through the registry's API (the process stays up).
    async fn remove_first(&self, kind: &str) {
        let app = &self.apps.iter().find(|(k, _)| *k == kind).unwrap().1[0];
        match kind {
            "etcd" => self.etcd.delete(SERVICE, app).await,
            "dns" => tokio::task::block_in_place(|| self.dns.remove(SERVICE, app)),
            "consul" => self.consul.deregister(SERVICE, app).await,
            "k8s" => self.kube.remove(SERVICE, app).await,
            other => panic!("unknown registry {other}"),
        }
    }
}

/// One load per route, phases switched together.
struct Loads(Vec<Load>);

impl Loads {
    fn start(gateway: &Gateway, first: &str) -> Loads {
        Loads(
            KINDS
                .iter()
                .map(|kind| {
                    Load::start(
                        gateway,
                        &format!("/{kind}"),
                        first,
                        150_000,
                        Duration::from_secs(240),
                    )
                })
                .collect(),
        )
    }

    fn phase(&self, name: &str) {
        println!("--- phase: {name}");
        for load in &self.0 {
            load.phase(name);
        }
    }

    async fn finish(self) -> Vec<Report> {
        let mut reports = Vec::new();
        for load in self.0 {
            reports.push(load.finish().await);
        }
        let (sent, failed): (usize, usize) = reports
            .iter()
            .fold((0, 0), |(s, f), r| (s + r.sent(), f + r.failed()));
        println!("all routes: {sent} requests, {failed} failed");
        reports
    }
}

/// Whether every endpoint of upstream `kind` is reported stale (`want`) or fresh.
async fn all_stale(gateway: &Gateway, kind: &str, want: bool) -> bool {
    let view = upstream_json(gateway, kind).await;
    let endpoints = view["endpoints"].as_array().cloned().unwrap_or_default();
    !endpoints.is_empty() && endpoints.iter().all(|e| e["stale"] == want)
}

/// Whether the route of `kind` reaches exactly `names`.
async fn routed(gateway: &Gateway, kind: &str, names: &[String]) -> bool {
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    reaches(gateway, &format!("/{kind}"), &names).await
}

async fn all_routed(gateway: &Gateway, fleet: &Fleet) -> bool {
    for kind in KINDS {
        if !routed(gateway, kind, &fleet.names(kind)).await {
            return false;
        }
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn registry_lost_mid_run_and_restored_without_a_failed_request() {
    let mut fleet = Fleet::start().await;
    let gateway = Gateway::start(&fleet.config("")).await;
    eventually("every registry synced and routed", START, || {
        all_routed(&gateway, &fleet)
    })
    .await;

    let loads = Loads::start(&gateway, "all registries up");
    tokio::time::sleep(Duration::from_secs(1)).await;
    for kind in KINDS {
        loads.phase(&format!("{kind} down"));
        let lost = Instant::now();
        fleet.stop(kind).await;
        eventually(
            &format!("{kind} down: reported down, its endpoints stale"),
            Duration::from_secs(20),
            || async {
                registry_state(&gateway, kind).await == "down"
                    && all_stale(&gateway, kind, true).await
            },
        )
        .await;
        println!("{kind}: lost -> reported down in {:?}", lost.elapsed());
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            routed(&gateway, kind, &fleet.names(kind)).await,
            "{kind} down: the last good set still serves"
        );

        loads.phase(&format!("{kind} restored"));
        let back = Instant::now();
        fleet.restart(kind).await;
        eventually(
            &format!("{kind} restored: reported ok, endpoints fresh"),
            RECONNECT,
            || async {
                registry_state(&gateway, kind).await == "ok"
                    && all_stale(&gateway, kind, false).await
            },
        )
        .await;
        println!("{kind}: restored -> reported ok in {:?}", back.elapsed());
    }

    loads.phase("changes after the outages");
    let mut thirds = Vec::new();
    for kind in KINDS {
        let third = fleet.add_third(kind).await;
        let mut names = fleet.names(kind);
        names.push(third.name().to_owned());
        eventually(
            &format!("{kind}: a new instance is routed"),
            Duration::from_secs(15),
            || routed(&gateway, kind, &names),
        )
        .await;
        thirds.push(third);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    for report in loads.finish().await {
        report.assert_all_ok();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn registries_flapping_10_cycles_without_a_failed_request() {
    let mut fleet = Fleet::start().await;
    let gateway = Gateway::start(&fleet.config("")).await;
    eventually("every registry synced and routed", START, || {
        all_routed(&gateway, &fleet)
    })
    .await;

    let loads = Loads::start(&gateway, "steady");
    tokio::time::sleep(Duration::from_secs(1)).await;
    loads.phase("flapping: 10 down/up cycles");
    let flapping = Instant::now();
    for cycle in 1..=10 {
        for kind in KINDS {
            fleet.stop(kind).await;
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
        for kind in KINDS {
            fleet.restart(kind).await;
        }
        tokio::time::sleep(Duration::from_millis(600)).await;
        println!(
            "cycle {cycle}: down and up again ({:?})",
            flapping.elapsed()
        );
    }
    println!("10 cycles in {:?}", flapping.elapsed());

    loads.phase("after flapping: changes apply");
    let settled = Instant::now();
    for kind in KINDS {
        eventually(
            &format!("{kind}: reported ok again after flapping"),
            RECONNECT,
            || async { registry_state(&gateway, kind).await == "ok" },
        )
        .await;
    }
    println!(
        "every registry ok {:?} after the last cycle",
        settled.elapsed()
    );
    let mut thirds = Vec::new();
    for kind in KINDS {
        thirds.push(fleet.add_third(kind).await);
        fleet.remove_first(kind).await;
    }
    for (kind, third) in KINDS.iter().zip(&thirds) {
        let names = vec![fleet.names(kind)[1].clone(), third.name().to_owned()];
        eventually(
            &format!("{kind}: the change made after flapping is routed"),
            Duration::from_secs(15),
            || routed(&gateway, kind, &names),
        )
        .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    for report in loads.finish().await {
        report.assert_all_ok();
    }
}

/// Whether `dir` holds a saved set for each registry.
fn snapshots_saved(dir: &Path) -> bool {
    KINDS.iter().all(|kind| {
        std::fs::read_dir(dir.join(kind))
            .map(|mut entries| entries.next().is_some())
            .unwrap_or(false)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn registries_down_at_start_with_a_snapshot_route_from_it() {
    let mut fleet = Fleet::start().await;
    let state = tempfile::tempdir().unwrap();
    let extra = format!(
        "[server]\nlisten = \"{{listen}}\"\nstartup_grace = \"5m\"\n\n[state]\ndir = \"{}\"\n",
        state.path().display()
    );
    let config = fleet.config(&extra);
    {
        let mut first = Gateway::start(&config).await;
        eventually("first gateway: every registry routed", START, || {
            all_routed(&first, &fleet)
        })
        .await;
        eventually(
            "every source's set saved",
            Duration::from_secs(10),
            || async { snapshots_saved(state.path()) },
        )
        .await;
        assert!(first.terminate().success(), "first gateway exits 0");
    }
    for kind in KINDS {
        fleet.stop(kind).await;
    }

    let started = Instant::now();
    let gateway = Gateway::start(&config).await;
    eventually(
        "restarted with every registry down: ready from the snapshot",
        Duration::from_secs(10),
        || async { readyz(&gateway).await.0 == 200 },
    )
    .await;
    println!(
        "ready {:?} after start, every registry down",
        started.elapsed()
    );
    for kind in KINDS {
        let view = upstream_json(&gateway, kind).await;
        assert!(
            view["sources"][0]["restored"] == true
                && view["endpoints"]
                    .as_array()
                    .is_some_and(|e| e.len() == 2 && e.iter().all(|e| e["stale"] == true)),
            "{kind}: restored and stale: {view}"
        );
    }

    let loads = Loads::start(&gateway, "registries down, routed from the snapshot");
    tokio::time::sleep(Duration::from_secs(2)).await;
    loads.phase("registries back");
    for kind in KINDS {
        fleet.restart(kind).await;
    }
    for kind in KINDS {
        eventually(&format!("{kind} back: fresh"), RECONNECT, || async {
            registry_state(&gateway, kind).await == "ok" && all_stale(&gateway, kind, false).await
        })
        .await;
    }
    loads.phase("registries synced");
    tokio::time::sleep(Duration::from_secs(1)).await;

    let reports = loads.finish().await;
    for (kind, report) in KINDS.iter().zip(&reports) {
        report.assert_all_ok();
        let names = fleet.names(kind);
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let from_snapshot = report.phase("registries down, routed from the snapshot");
        assert!(
            from_snapshot.only_from(&names) && from_snapshot.by_body.len() == 2,
            "{kind}: both snapshot instances served: {:?}",
            from_snapshot.by_body
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn registries_down_at_start_without_a_snapshot_readiness_names_them_then_recovers() {
    let mut fleet = Fleet::start().await;
    for kind in KINDS {
        fleet.stop(kind).await;
    }
    let state = tempfile::tempdir().unwrap();
    let extra = format!(
        "[server]\nlisten = \"{{listen}}\"\nstartup_grace = \"5m\"\n\n[state]\ndir = \"{}\"\n",
        state.path().display()
    );
    let gateway = Gateway::start(&fleet.config(&extra)).await;
    let pending: Vec<(&str, String)> = KINDS
        .iter()
        .map(|kind| {
            let service = match *kind {
                "dns" => fleet.dns.service(SERVICE),
                "k8s" => fleet.kube.service(SERVICE),
                _ => SERVICE.to_owned(),
            };
            (*kind, format!("{kind}/{kind}/{service}"))
        })
        .collect();
    let pending_source = |kind: &str| {
        pending
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, p)| p.clone())
            .unwrap()
    };

    // Not ready, naming every source; nothing routes.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (status, body) = readyz(&gateway).await;
    println!("/readyz with every registry down and no snapshot: {status} {body}");
    assert_eq!(status, 503, "{body}");
    for kind in KINDS {
        assert!(
            body.contains(&pending_source(kind)),
            "{kind} not named: {body}"
        );
    }

    let loads = Loads::start(&gateway, "registries down, no snapshot");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut back = Vec::new();
    for kind in KINDS {
        let phase = format!("{kind} back");
        loads.phase(&phase);
        let restarted = Instant::now();
        fleet.restart(kind).await;
        let names = fleet.names(kind);
        eventually(&format!("{kind} back: routed"), RECONNECT, || {
            routed(&gateway, kind, &names)
        })
        .await;
        println!("{kind}: restarted -> routed in {:?}", restarted.elapsed());
        back.push(kind);
        let (status, body) = readyz(&gateway).await;
        println!("/readyz: {status} {body}");
        assert!(
            !body.contains(&pending_source(kind)),
            "{kind} still pending: {body}"
        );
        for still_down in KINDS.iter().filter(|k| !back.contains(k)) {
            assert_eq!(status, 503, "{body}");
            assert!(
                body.contains(&pending_source(still_down)),
                "{still_down} not named: {body}"
            );
        }
    }
    eventually(
        "every registry back: ready",
        Duration::from_secs(5),
        || async { readyz(&gateway).await.0 == 200 },
    )
    .await;
    loads.phase("all registries back");
    tokio::time::sleep(Duration::from_secs(1)).await;

    let reports = loads.finish().await;
    for (i, (kind, report)) in KINDS.iter().zip(&reports).enumerate() {
        // Before its registry returned, a route had no instance at all: every request
        // was a 503, counted. From the phase after its return on: none failed.
        let down = report.phase("registries down, no snapshot");
        assert_eq!(down.ok, 0, "{kind}: {down:?}");
        assert!(
            down.sent > 0 && down.failures.keys().all(|k| k == "503"),
            "{kind}: only 503s while nothing is known: {:?}",
            down.failures
        );
        for later in KINDS[i + 1..]
            .iter()
            .map(|k| format!("{k} back"))
            .chain(["all registries back".to_owned()])
        {
            report.assert_no_failures(&later);
        }
    }
}
