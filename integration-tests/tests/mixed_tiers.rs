//! Mixed-registry upstreams through the real `switchyard` binary: one upstream whose tiers
//! come from three registries — Kubernetes (tier 0, the API-server double), Consul (tier 1,
//! the agent double) and DNS (tier 2, a real bind9) — fails over tier by tier as instances
//! leave their registries and comes back as they return, under a steady load with every
//! request counted (zero failures: a healthy instance existed all along); a union tier where
//! a Consul source (weight 9) and a Kubernetes source (weight 1) split traffic 90/10
//! whatever their instance counts; `/api/upstreams` naming each endpoint's source and the
//! serving tier; and `config/mixed.toml` itself, run against local servers with the
//! registry addresses moved.
//!
//! The registries can be the docker-compose ones instead (see `docs/mixed-registries.md`):
//! `SWITCHYARD_TEST_CONSUL`, `SWITCHYARD_TEST_KUBECONFIG` (with `SWITCHYARD_TEST_BACKEND_IP`),
//! `SWITCHYARD_TEST_ETCD`, `SWITCHYARD_TEST_DNS`.
//!
//! Needs the Debian packages bind9, bind9-dnsutils and etcd-server, and
//! `cargo build -p switchyard`.

mod mixed_common;

use std::path::Path;
use std::time::{Duration, Instant};

use mixed_common::*;
use serde_json::Value;
use switchyard_integration_tests::{eventually, gateway, Gateway};

/// First sync of a freshly started gateway.
const START: Duration = Duration::from_secs(25);
/// "Within 1 s" checks wait up to five times that.
const WITHIN_1S: Duration = Duration::from_secs(5);
/// DNS changes show after the TTL (1 s, refresh clamped to 2 s).
const WITHIN_DNS_TTL: Duration = Duration::from_secs(15);

fn header() -> String {
    "[log]\naccess = false\nlevel = \"info\"\n\n".to_owned()
}

/// One line per endpoint of `/api/upstreams`' upstream `name`: source, tier, flags.
fn describe(upstream: &Value) -> String {
    let mut lines = vec![format!(
        "upstream {}: serving_tier {} panic {}",
        upstream["name"], upstream["serving_tier"], upstream["panic"]
    )];
    for e in upstream["endpoints"].as_array().into_iter().flatten() {
        lines.push(format!(
            "  {:<22} source {}/{:<36} priority {} weight {:<3} healthy {:<5} serving {:<5} stale {}",
            e["address"].as_str().unwrap_or("?"),
            e["source"]["registry"].as_str().unwrap_or("?"),
            e["source"]["service"].as_str().unwrap_or("?"),
            e["priority"],
            e["weight"],
            e["healthy"],
            e["serving"],
            e["stale"],
        ));
    }
    lines.join("\n")
}

/// Endpoints of `upstream` as `(address, registry, priority, serving)`.
fn endpoints(upstream: &Value) -> Vec<(String, String, u64, bool)> {
    upstream["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["address"].as_str().unwrap_or_default().to_owned(),
                e["source"]["registry"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                e["priority"].as_u64().unwrap_or(u64::MAX),
                e["serving"].as_bool().unwrap_or(false),
            )
        })
        .collect()
}

/// Whether every source of `upstream` has synced.
fn all_synced(upstream: &Value) -> bool {
    let sources = upstream["sources"].as_array().cloned().unwrap_or_default();
    !sources.is_empty() && sources.iter().all(|s| s["synced"] == true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tiers_fail_over_kubernetes_consul_dns_and_come_back() {
    let k8s_apps = apps(&["k8s-a", "k8s-b"]);
    let consul_apps = apps(&["consul-a", "consul-b"]);
    let dns_apps = apps(&["dns-a", "dns-b"]);
    let service = unique("orders");
    let kube = Kube::start().await;
    let consul = Consul::start();
    let dns = Dns::start(&[(&service, &[&dns_apps[0], &dns_apps[1]])]);
    for app in &k8s_apps {
        kube.add(&service, app).await;
    }
    for app in &consul_apps {
        consul.register(&service, app).await;
    }

    let config = header()
        + &kube.registry("k8s")
        + &consul.registry("consul")
        + &dns.registry("dns")
        + &upstream(
            "orders",
            &[
                ("k8s", &kube.service(&service), 0, None),
                ("consul", &service, 1, None),
                ("dns", &dns.service(&service), 2, None),
            ],
            "",
            "",
        );
    let gateway = Gateway::start(&config).await;
    let k8s_names = ["k8s-a", "k8s-b"];
    let consul_names = ["consul-a", "consul-b"];
    eventually("every source synced, tier 0 serves", START, || async {
        all_synced(&upstream_json(&gateway, "orders").await)
            && reaches(&gateway, "/orders", &k8s_names).await
    })
    .await;

    // /api/upstreams: every endpoint with its source and tier; only tier 0 serving.
    let view = upstream_json(&gateway, "orders").await;
    println!("{}", describe(&view));
    assert_eq!(view["serving_tier"]["priority"], 0, "{view}");
    let listed = endpoints(&view);
    for (address, registry, priority, serving) in &listed {
        let expected = match registry.as_str() {
            "k8s" => 0,
            "consul" => 1,
            "dns" => 2,
            other => panic!("endpoint {address} from unknown registry {other}: {view}"),
        };
        assert_eq!(*priority, expected, "{address}: {view}");
        assert_eq!(*serving, registry == "k8s", "{address}: {view}");
    }
    for (registry, count) in [("k8s", 2), ("consul", 2)] {
        let seen = listed.iter().filter(|e| e.1 == registry).count();
        assert_eq!(seen, count, "{registry} endpoints: {view}");
    }
    assert!(
        listed.iter().any(|e| e.1 == "dns"),
        "no DNS endpoint: {view}"
    );
    let dns_names: Option<Vec<String>> = dns
        .is_local()
        .then(|| dns_apps.iter().map(|a| a.name().to_owned()).collect());

    let load = Load::start(
        &gateway,
        "/orders",
        "tier 0 (kubernetes) serving",
        200_000,
        Duration::from_secs(120),
    );
    tokio::time::sleep(Duration::from_secs(1)).await;

    load.phase("kubernetes instances leave");
    let left = Instant::now();
    kube.remove(&service, &k8s_apps[0]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    kube.remove(&service, &k8s_apps[1]).await;
    eventually("tier 1 (consul) serves", WITHIN_1S, || async {
        serving_tier(&gateway, "orders").await == Some(1)
            && only(&gateway, "/orders", &consul_names).await
    })
    .await;
    println!("kubernetes emptied -> consul serving: {:?}", left.elapsed());
    load.phase("tier 1 (consul) serving");
    let view = upstream_json(&gateway, "orders").await;
    println!("{}", describe(&view));
    assert!(
        endpoints(&view)
            .iter()
            .all(|(_, registry, _, serving)| *serving == (registry == "consul")),
        "{view}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;

    load.phase("consul instances leave");
    let left = Instant::now();
    consul.deregister(&service, &consul_apps[0]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    consul.deregister(&service, &consul_apps[1]).await;
    eventually("tier 2 (dns) serves", WITHIN_1S, || async {
        serving_tier(&gateway, "orders").await == Some(2)
    })
    .await;
    println!("consul emptied -> dns serving: {:?}", left.elapsed());
    load.phase("tier 2 (dns) serving");
    let view = upstream_json(&gateway, "orders").await;
    println!("{}", describe(&view));
    assert!(
        endpoints(&view)
            .iter()
            .all(|(_, registry, _, serving)| *serving == (registry == "dns")),
        "{view}"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;

    load.phase("consul instance returns");
    consul.register(&service, &consul_apps[1]).await;
    eventually("tier 1 (consul) serves again", WITHIN_1S, || async {
        serving_tier(&gateway, "orders").await == Some(1)
    })
    .await;
    load.phase("tier 1 (consul) serving again");
    tokio::time::sleep(Duration::from_secs(1)).await;

    load.phase("kubernetes instances return");
    for app in &k8s_apps {
        kube.add(&service, app).await;
    }
    eventually("tier 0 (kubernetes) serves again", WITHIN_1S, || async {
        serving_tier(&gateway, "orders").await == Some(0)
    })
    .await;
    load.phase("tier 0 (kubernetes) serving again");
    tokio::time::sleep(Duration::from_secs(1)).await;

    let report = load.finish().await;
    report.assert_all_ok();
    for (phase, allowed) in [
        ("tier 0 (kubernetes) serving", &k8s_names[..]),
        ("tier 1 (consul) serving", &consul_names[..]),
        ("tier 1 (consul) serving again", &["consul-b"][..]),
        ("tier 0 (kubernetes) serving again", &k8s_names[..]),
    ] {
        let tally = report.phase(phase);
        assert!(
            tally.only_from(allowed),
            "{phase}: answers from outside {allowed:?}: {:?}",
            tally.by_body
        );
    }
    let tier2 = report.phase("tier 2 (dns) serving");
    match &dns_names {
        Some(names) => {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            assert!(tier2.only_from(&names), "tier 2: {:?}", tier2.by_body);
            assert_eq!(
                tier2.by_body.len(),
                2,
                "both DNS instances: {:?}",
                tier2.by_body
            );
        }
        None => assert!(
            tier2
                .by_body
                .keys()
                .all(|b| !k8s_names.contains(&b.as_str()) && !consul_names.contains(&b.as_str())),
            "tier 2 answered by tier 0/1 backends: {:?}",
            tier2.by_body
        ),
    }
    kube.cleanup().await;
    consul.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn union_tier_splits_90_10_by_source_weight_whatever_the_instance_counts() {
    let consul_apps = apps(&["consul-1", "consul-2", "consul-3"]);
    let k8s_apps = apps(&["k8s-1", "k8s-2", "k8s-3"]);
    let service = unique("web");
    let kube = Kube::start().await;
    let consul = Consul::start();
    consul.register(&service, &consul_apps[0]).await;
    for app in &k8s_apps {
        kube.add(&service, app).await;
    }
    let config = header()
        + &kube.registry("k8s")
        + &consul.registry("consul")
        + &upstream(
            "web",
            &[
                ("consul", &service, 0, Some(9)),
                ("k8s", &kube.service(&service), 0, Some(1)),
            ],
            "balancer = \"round_robin\"",
            "",
        );
    let gateway = Gateway::start(&config).await;

    let share = |counts: &std::collections::BTreeMap<String, usize>| {
        let total: usize = counts.values().sum();
        let consul: usize = counts
            .iter()
            .filter(|(k, _)| k.starts_with("consul-"))
            .map(|(_, v)| v)
            .sum();
        consul as f64 / total as f64
    };

    // 1 Consul instance, 3 Kubernetes ones.
    eventually("1 consul + 3 k8s instances routed", START, || {
        reaches(&gateway, "/web", &["consul-1", "k8s-1", "k8s-2", "k8s-3"])
    })
    .await;
    let view = upstream_json(&gateway, "web").await;
    println!("{}", describe(&view));
    assert_eq!(view["serving_tier"]["priority"], 0, "{view}");
    assert!(
        endpoints(&view).iter().all(|e| e.3),
        "one tier: every endpoint serves: {view}"
    );
    let counts = spread(&gateway, "/web", 2000).await;
    let first = share(&counts);
    println!("2000 requests, consul (weight 9, 1 instance) vs k8s (weight 1, 3 instances): {counts:?}, consul share {first:.3}");
    assert!(
        (first - 0.9).abs() <= 0.03,
        "consul share {first:.3}: {counts:?}"
    );

    // 3 Consul instances, 1 Kubernetes one: still 90/10.
    consul.register(&service, &consul_apps[1]).await;
    consul.register(&service, &consul_apps[2]).await;
    kube.remove(&service, &k8s_apps[1]).await;
    kube.remove(&service, &k8s_apps[2]).await;
    eventually("3 consul + 1 k8s instances routed", WITHIN_1S, || {
        reaches(
            &gateway,
            "/web",
            &["consul-1", "consul-2", "consul-3", "k8s-1"],
        )
    })
    .await;
    println!("{}", describe(&upstream_json(&gateway, "web").await));
    let counts = spread(&gateway, "/web", 2000).await;
    let second = share(&counts);
    println!("2000 requests, consul (weight 9, 3 instances) vs k8s (weight 1, 1 instance): {counts:?}, consul share {second:.3}");
    assert!(
        (second - 0.9).abs() <= 0.03,
        "consul share {second:.3}: {counts:?}"
    );
    let per_consul: Vec<usize> = ["consul-1", "consul-2", "consul-3"]
        .iter()
        .map(|n| counts.get(*n).copied().unwrap_or(0))
        .collect();
    assert!(
        per_consul.iter().all(|n| (*n as f64 - 600.0).abs() <= 90.0),
        "consul's 90% spread evenly over its 3 instances: {per_consul:?}"
    );
    kube.cleanup().await;
    consul.cleanup().await;
}

/// `config/mixed.toml` as shipped: `switchyard check` passes, and run against local servers
/// (registry addresses moved to them, as the compose file moves them with `SWITCHYARD__`
/// variables) each upstream routes to its sources' instances.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn config_mixed_toml_runs_against_local_registries() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/mixed.toml");
    let (code, stderr) = gateway::check(&path);
    assert_eq!(code, 0, "switchyard check {}: {stderr}", path.display());
    let example = std::fs::read_to_string(&path).expect("read config/mixed.toml");
    let doc: toml::Value = toml::from_str(&example).expect("TOML");

    // Always local servers here: the example's service names are fixed, and the compose
    // servers already hold instances of them.
    let kube = Kube::double().await;
    let consul = Consul::double();
    let etcd = Etcd::local();
    let orders_k8s = apps(&["orders-k8s"]);
    let orders_consul = apps(&["orders-consul"]);
    let orders_dns = apps(&["orders-dns"]);
    let web_consul = apps(&["web-consul"]);
    let web_k8s = apps(&["web-k8s"]);
    let inventory_etcd = apps(&["inventory-etcd"]);
    let mut dns = Dns::local(&[("orders", &[&orders_dns[0]])]);
    // The inventory fallback's A record (its tier 1; nothing listens there). Without it the
    // name would never have resolved, which is reported as an error, not an empty service,
    // and would hold /readyz until startup_grace.
    dns.knobs()
        .nsupdate("update add inventory.example.test 1 A 127.0.0.1");

    // Instances of every service the example's sources name, in their registries.
    let mut seeded = 0;
    for (name, upstream) in doc["upstreams"].as_table().expect("upstreams") {
        for source in upstream["sources"].as_array().expect("sources") {
            let registry = source["registry"].as_str().unwrap();
            let service = source["service"].as_str().unwrap();
            let kind = doc["registries"][registry]["type"].as_str().unwrap();
            let app = match (name.as_str(), kind) {
                ("orders", "kubernetes") => &orders_k8s[0],
                ("orders", "consul") => &orders_consul[0],
                ("orders", "dns") => {
                    assert_eq!(service, "_http._tcp.orders.example.test");
                    seeded += 1;
                    continue;
                }
                ("inventory", "dns") => {
                    // A/AAAA fallback; its record is added to the test zone above.
                    seeded += 1;
                    continue;
                }
                ("web", "consul") => &web_consul[0],
                ("web", "kubernetes") => &web_k8s[0],
                ("inventory", "etcd") => &inventory_etcd[0],
                other => {
                    panic!("config/mixed.toml has a source this test does not know: {other:?}")
                }
            };
            match kind {
                "kubernetes" => {
                    let (namespace, name) = service.split_once('/').expect("namespace/name");
                    kube.add_in(namespace, name, app).await;
                }
                "consul" => consul.register(service, app).await,
                "etcd" => etcd.put(service, app).await,
                other => panic!("unexpected registry type {other}"),
            }
            seeded += 1;
        }
    }
    assert_eq!(seeded, 7, "config/mixed.toml's sources changed");

    let k8s_name = registry_named(&doc, "kubernetes");
    let consul_name = registry_named(&doc, "consul");
    let dns_name = registry_named(&doc, "dns");
    let etcd_name = registry_named(&doc, "etcd");
    let state = tempfile::tempdir().unwrap();
    let config = example
        .replace("listen = \"127.0.0.1:8080\"", "listen = \"{listen}\"")
        .replace("listen = \"127.0.0.1:9901\"", "listen = \"{admin}\"");
    let config = replace_registry(&config, &k8s_name, &kube.registry(&k8s_name));
    let config = replace_registry(&config, &consul_name, &consul.registry(&consul_name));
    let config = replace_registry(&config, &dns_name, &dns.registry(&dns_name));
    let config = replace_registry(&config, &etcd_name, &etcd.registry(&etcd_name));
    let config = config.replace(
        "dir = \"/tmp/switchyard-state\"",
        &format!("dir = \"{}\"", state.path().display()),
    );
    assert!(
        config.contains(&state.path().display().to_string()),
        "the example's [state] dir line changed"
    );
    let gateway = Gateway::start(&config).await;
    eventually("example: ready", START, || async {
        readyz(&gateway).await.0 == 200
    })
    .await;
    for (path, names) in [
        ("/orders", &["orders-k8s"][..]),
        ("/web", &["web-consul", "web-k8s"][..]),
        ("/inventory", &["inventory-etcd"][..]),
    ] {
        eventually(&format!("example: {path} reaches {names:?}"), START, || {
            reaches(&gateway, path, names)
        })
        .await;
    }
    for upstream in ["orders", "web", "inventory"] {
        println!("{}", describe(&upstream_json(&gateway, upstream).await));
    }
    // The orders tiers: k8s gone -> consul; consul gone -> dns.
    kube.remove_in("demo", "orders", &orders_k8s[0]).await;
    eventually("example: orders fails over to consul", WITHIN_1S, || {
        only(&gateway, "/orders", &["orders-consul"])
    })
    .await;
    consul.deregister("orders", &orders_consul[0]).await;
    eventually("example: orders fails over to dns", WITHIN_DNS_TTL, || {
        only(&gateway, "/orders", &["orders-dns"])
    })
    .await;
    drop(dns);
}

/// The name of the (only) registry of type `kind` in the example.
fn registry_named(doc: &toml::Value, kind: &str) -> String {
    let registries = doc["registries"].as_table().expect("registries");
    let named: Vec<&String> = registries
        .iter()
        .filter(|(_, r)| r["type"].as_str() == Some(kind))
        .map(|(n, _)| n)
        .collect();
    assert_eq!(named.len(), 1, "config/mixed.toml: one {kind} registry");
    named[0].clone()
}

/// `config` with the table `[registries.NAME]` (up to the next table header) replaced.
fn replace_registry(config: &str, name: &str, table: &str) -> String {
    let header = format!("[registries.{name}]");
    let start = config
        .find(&header)
        .unwrap_or_else(|| panic!("no {header}"));
    let rest = &config[start + header.len()..];
    let end = rest
        .find("\n[")
        .map_or(config.len(), |i| start + header.len() + i + 1);
    format!("{}{}{}", &config[..start], table, &config[end..])
}

/// A whole tier dies at once (its Kubernetes instances killed, still registered): health
/// checks and passive ejection move the upstream to the next tier (etcd); the revived
/// instances take tier 0 back. Every request is counted, and none may fail: a healthy
/// instance (tier 1) existed all along: a request whose serving tier is exhausted retries on
/// the next tier before health checks have moved it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_whole_tier_killed_at_once_fails_over_to_the_next_registry() {
    let mut k8s_apps = apps(&["k8s-a", "k8s-b"]);
    let etcd_apps = apps(&["etcd-a", "etcd-b"]);
    let service = unique("orders");
    let kube = Kube::start().await;
    let etcd = Etcd::start();
    for app in &k8s_apps {
        kube.add(&service, app).await;
    }
    for app in &etcd_apps {
        etcd.put(&service, app).await;
    }
    let config = header()
        + &kube.registry("k8s")
        + &etcd.registry("etcd")
        + &upstream(
            "orders",
            &[
                ("k8s", &kube.service(&service), 0, None),
                ("etcd", &service, 1, None),
            ],
            "",
            "",
        )
        + "[upstreams.orders.health_check]\npath = \"/healthz\"\ninterval = \"200ms\"\ntimeout = \"500ms\"\nunhealthy_threshold = 2\n"
        + "[upstreams.orders.outlier]\nconsecutive_failures = 2\nbase_ejection = \"2s\"\n";
    let gateway = Gateway::start(&config).await;
    eventually("tier 0 serves", START, || {
        reaches(&gateway, "/orders", &["k8s-a", "k8s-b"])
    })
    .await;
    let load = Load::start(
        &gateway,
        "/orders",
        "tier 0",
        100_000,
        Duration::from_secs(60),
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    load.phase("tier 0 killed");
    let killed = Instant::now();
    for app in &mut k8s_apps {
        app.kill();
    }
    eventually("tier 1 serves", Duration::from_secs(10), || async {
        serving_tier(&gateway, "orders").await == Some(1)
    })
    .await;
    println!("tier 0 killed -> tier 1 serving in {:?}", killed.elapsed());
    // The phase covers the half second after the kill even when failover is quicker (it
    // has taken 5 ms, in which the load sent nothing): requests just after a kill are the
    // ones that could still be sent to the dead tier.
    tokio::time::sleep_until((killed + Duration::from_millis(500)).into()).await;
    load.phase("tier 1 serving");
    tokio::time::sleep(Duration::from_secs(1)).await;
    load.phase("tier 0 revived");
    for app in &mut k8s_apps {
        app.revive();
    }
    eventually("tier 0 serves again", Duration::from_secs(15), || async {
        serving_tier(&gateway, "orders").await == Some(0)
    })
    .await;
    load.phase("tier 0 serving again");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let report = load.finish().await;
    report.assert_all_ok();
    kube.cleanup().await;
    etcd.cleanup().await;
}
