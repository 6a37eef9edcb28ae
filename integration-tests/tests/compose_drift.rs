//! The two compose files stay one project: `docker-compose.yml` (upstream images, for users
//! with internet) and `deploy/local/compose.yml` (local images, host network, what
//! `make compose-up` and the compose tests run). Checked without an engine:
//!
//! - the same project name, registries (`consul`, `etcd`, `dns`, `kubernetes`), gateway,
//!   seeds and sample services; the local file adds only what k3s would run as pods
//!   (`k8s-*`) and the scale drill's `inventory-scaled`;
//! - the same gateway: command, config file, volumes, and environment, where each upstream
//!   address `SERVICE:PORT` is, locally, the loopback address that service listens on
//!   (`x-loopback`, itself checked against each service's command);
//! - the same seeds: Consul registrations, etcd keys, the DNS zone's records and the
//!   Kubernetes Services, each local instance at its service's loopback address;
//! - local images only, every one built by scripts/docker/images.sh; every local service on
//!   the host network;
//! - `switchyard check` passes config/mixed.toml with the local gateway's variables.
//!
//! Needs `cargo build -p switchyard`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use switchyard_integration_tests::gateway;
use yaml_rust2::{Yaml, YamlLoader};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

fn load(path: &str) -> Yaml {
    YamlLoader::load_from_str(&read(path))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .remove(0)
}

fn services(compose: &Yaml) -> BTreeMap<String, Yaml> {
    compose["services"]
        .as_hash()
        .expect("services")
        .iter()
        .map(|(k, v)| (k.as_str().unwrap().to_owned(), v.clone()))
        .collect()
}

/// A string or list of strings.
fn words(value: &Yaml) -> Vec<String> {
    match value {
        Yaml::String(s) => s.split_whitespace().map(str::to_owned).collect(),
        Yaml::Array(items) => items
            .iter()
            .map(|i| match i {
                Yaml::String(s) => s.clone(),
                Yaml::Integer(n) => n.to_string(),
                other => panic!("not a string: {other:?}"),
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// `environment` plus the `KEY=VALUE` arguments of an `env` entrypoint.
fn environment(service: &Yaml) -> BTreeMap<String, String> {
    let mut vars = BTreeMap::new();
    if let Some(map) = service["environment"].as_hash() {
        for (k, v) in map {
            let v = match v {
                Yaml::String(s) => s.clone(),
                Yaml::Integer(n) => n.to_string(),
                other => panic!("{other:?}"),
            };
            vars.insert(k.as_str().unwrap().to_owned(), v);
        }
    }
    let entrypoint = words(&service["entrypoint"]);
    if entrypoint.first().map(String::as_str) == Some("env") {
        for arg in &entrypoint[1..] {
            match arg.split_once('=') {
                Some((k, v)) => vars.insert(k.to_owned(), v.to_owned()),
                None => break,
            };
        }
    }
    vars
}

/// Volume targets by source (`./x` sources resolved against the compose file's folder).
fn volumes(service: &Yaml, base: &str) -> BTreeMap<String, String> {
    words(&service["volumes"])
        .iter()
        .map(|v| {
            let mut parts = v.split(':');
            let source = parts.next().unwrap();
            let target = parts.next().unwrap().to_owned();
            let source = if source.starts_with('.') {
                let path = repo().join(base).join(source);
                std::fs::canonicalize(&path)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
                    .display()
                    .to_string()
            } else {
                source.to_owned()
            };
            (source, target)
        })
        .collect()
}

struct Both {
    upstream: BTreeMap<String, Yaml>,
    local: BTreeMap<String, Yaml>,
    /// `x-loopback` of the local file: where each service listens.
    loopback: BTreeMap<String, String>,
}

fn both() -> Both {
    let upstream = load("docker-compose.yml");
    let local = load("deploy/local/compose.yml");
    assert_eq!(upstream["name"].as_str(), Some("switchyard-demo"));
    assert_eq!(
        local["name"].as_str(),
        upstream["name"].as_str(),
        "one project name"
    );
    let loopback = local["x-loopback"]
        .as_hash()
        .expect("x-loopback in deploy/local/compose.yml")
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().unwrap().to_owned(),
                v.as_str().unwrap().to_owned(),
            )
        })
        .collect();
    Both {
        upstream: services(&upstream),
        local: services(&local),
        loopback,
    }
}

/// Services that run an instance answering HTTP (the samples).
fn is_sample(name: &str) -> bool {
    ["consul-", "etcd-", "dns-", "k8s-"]
        .iter()
        .any(|p| name.starts_with(p))
}

#[test]
fn the_same_services_in_both_files() {
    let Both {
        upstream, local, ..
    } = both();
    for name in ["consul", "etcd", "dns", "kubernetes", "gateway"] {
        assert!(upstream.contains_key(name), "docker-compose.yml: no {name}");
        assert!(
            local.contains_key(name),
            "deploy/local/compose.yml: no {name}"
        );
    }
    // Upstream-only helpers of k3s: its kubeconfig export (the double writes its own).
    let upstream_only: BTreeSet<&str> = ["kubeconfig-export"].into();
    for name in upstream.keys() {
        if !upstream_only.contains(name.as_str()) {
            assert!(
                local.contains_key(name),
                "{name} is in docker-compose.yml, not in deploy/local/compose.yml"
            );
        }
    }
    for name in local.keys() {
        let allowed =
            upstream.contains_key(name) || name.starts_with("k8s-") || name == "inventory-scaled";
        assert!(
            allowed,
            "{name} is in deploy/local/compose.yml only (allowed: k8s-* pods, inventory-scaled)"
        );
    }
    println!(
        "{} services upstream, {} local; samples: {:?}",
        upstream.len(),
        local.len(),
        local.keys().filter(|n| is_sample(n)).collect::<Vec<_>>()
    );
}

#[test]
fn local_services_use_local_images_on_the_host_network_where_x_loopback_says() {
    let Both {
        local, loopback, ..
    } = both();
    let images_script = read("scripts/docker/images.sh");
    for (name, service) in &local {
        let image = service["image"].as_str().unwrap_or_default();
        assert!(
            image.starts_with("switchyard-local/") && image.ends_with(":local"),
            "{name}: {image} is not a local image"
        );
        assert!(
            images_script.contains(&format!("build {image}")),
            "{name}: scripts/docker/images.sh does not build {image}"
        );
        assert_eq!(
            service["network_mode"].as_str(),
            Some("host"),
            "{name}: host network, loopback only"
        );
        assert!(
            service["ports"].is_badvalue(),
            "{name}: host network publishes nothing"
        );
    }
    for (name, address) in &loopback {
        let service = local
            .get(name)
            .unwrap_or_else(|| panic!("x-loopback names {name}, no such service"));
        let ip = address.rsplit_once(':').unwrap().0;
        assert!(
            ip.starts_with("127."),
            "{name}: {address} is not a loopback address"
        );
        let listens = match name.as_str() {
            "dns" => read("deploy/local/dns/named.conf").contains(&format!(
                "listen-on port {} {{ {ip}; }};",
                address.rsplit_once(':').unwrap().1
            )),
            "gateway" => environment(service)
                .get("SWITCHYARD__SERVER__LISTEN")
                .is_some_and(|v| v == address),
            "etcd" => words(&service["command"])
                .contains(&format!("--listen-client-urls=http://{address}")),
            _ => {
                let command = words(&service["command"]);
                command
                    .windows(2)
                    .any(|w| w[0] == "--listen" && &w[1] == address)
            }
        };
        assert!(listens, "{name} does not listen on {address} (x-loopback)");
    }
    for name in local.keys().filter(|n| is_sample(n)) {
        assert!(loopback.contains_key(name), "{name}: not in x-loopback");
    }
}

/// The local counterpart of an upstream value: `http://SERVICE:PORT` and `SERVICE:PORT`
/// become the service's loopback address, `0.0.0.0:PORT` becomes `127.0.0.1:PORT`.
fn localize(value: &str, loopback: &BTreeMap<String, String>) -> String {
    let (scheme, rest) = match value.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), value),
    };
    if let Some((host, port)) = rest.split_once(':') {
        if host == "0.0.0.0" {
            return format!("{scheme}127.0.0.1:{port}");
        }
        if let Some(address) = loopback.get(host) {
            return format!("{scheme}{address}");
        }
    }
    value.to_owned()
}

#[test]
fn the_same_gateway_config_and_environment() {
    let Both {
        upstream,
        local,
        loopback,
    } = both();
    let (up, lo) = (&upstream["gateway"], &local["gateway"]);
    assert_eq!(words(&up["command"]), words(&lo["command"]), "command");
    let last = |s: &Yaml| words(&s["entrypoint"]).last().cloned();
    assert_eq!(last(up), last(lo), "entrypoint");
    assert_eq!(
        volumes(up, "."),
        volumes(lo, "deploy/local"),
        "the same config file and volumes, at the same places"
    );
    let (up_env, lo_env) = (environment(up), environment(lo));
    assert_eq!(
        up_env.keys().collect::<Vec<_>>(),
        lo_env.keys().collect::<Vec<_>>(),
        "the same variables"
    );
    for (key, value) in &up_env {
        let expected = localize(value, &loopback);
        assert_eq!(
            &lo_env[key], &expected,
            "{key}: upstream {value}, so locally {expected}"
        );
        println!("{key}: {value} -> {}", lo_env[key]);
    }
    // The config as the local gateway sees it is valid.
    let output = Command::new(gateway::switchyard_bin())
        .arg("check")
        .arg("--config")
        .arg(repo().join("config/mixed.toml"))
        .envs(&lo_env)
        .output()
        .expect("run switchyard check");
    assert!(
        output.status.success(),
        "switchyard check with the local gateway's variables: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `VERB ARGS...` lines of a seed script.
fn calls(script: &str, verb: &str) -> Vec<Vec<String>> {
    script
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("{verb} ")))
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect()
}

#[test]
fn the_same_seeds_at_the_local_addresses() {
    let Both {
        upstream, loopback, ..
    } = both();
    let at = |name: &str| -> (String, String) {
        let address = loopback
            .get(name)
            .unwrap_or_else(|| panic!("{name}: not in x-loopback"));
        let (ip, port) = address.rsplit_once(':').unwrap();
        (ip.to_owned(), port.to_owned())
    };
    // Consul: register ID NAME HOST PORT.
    let up = calls(&read("deploy/compose/seed/consul.sh"), "register");
    let lo = calls(&read("deploy/local/seed/consul.sh"), "register");
    let ids = |c: &[Vec<String>]| {
        c.iter()
            .map(|c| (c[0].clone(), c[1].clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&up), ids(&lo), "the same Consul registrations");
    for c in &lo {
        assert_eq!((c[2].clone(), c[3].clone()), at(&c[0]), "consul {}", c[0]);
    }
    // etcd: put SERVICE INSTANCE HOST PORT.
    let up = calls(&read("deploy/compose/seed/etcd.sh"), "put");
    let lo = calls(&read("deploy/local/seed/etcd.sh"), "put");
    assert_eq!(ids(&up), ids(&lo), "the same etcd keys");
    for c in &lo {
        assert_eq!((c[2].clone(), c[3].clone()), at(&c[1]), "etcd {}", c[1]);
    }
    // DNS: the same records; SRV ports and A addresses are the samples'.
    let records = |path: &str| -> Vec<Vec<String>> {
        read(path)
            .lines()
            .map(|l| l.split(';').next().unwrap())
            .filter(|l| !l.trim().is_empty() && !l.starts_with('$'))
            .map(|l| l.split_whitespace().map(str::to_owned).collect())
            .collect()
    };
    let up = records("deploy/compose/coredns/example.test.db");
    let lo = records("deploy/local/dns/example.test.db");
    let shape = |r: &[Vec<String>]| {
        r.iter()
            .map(|r| (r[0].clone(), r[2].clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(shape(&up), shape(&lo), "the same DNS records");
    let fixed_ip = |ip: &str| -> Option<String> {
        upstream.iter().find_map(|(n, s)| {
            (s["networks"]["default"]["ipv4_address"].as_str() == Some(ip)).then(|| n.clone())
        })
    };
    for (u, l) in up.iter().zip(&lo) {
        if u[2] == "A" {
            if let Some(sample) = fixed_ip(&u[3]) {
                if is_sample(&sample) {
                    assert_eq!(l[3], at(&sample).0, "A {} ({sample})", u[0]);
                }
            }
        }
        if u[2] == "SRV" {
            assert_eq!(u[3..], l[3..], "SRV {}", u[0]);
            assert_eq!(l[5], at(&l[6]).1, "SRV {} port", u[0]);
        }
    }
    // Kubernetes: a slice per Service of the k3s manifests, at its pod's stand-in.
    let manifests: Vec<Yaml> = std::fs::read_dir(repo().join("deploy/compose/k3s/manifests"))
        .unwrap()
        .flat_map(|e| {
            YamlLoader::load_from_str(&std::fs::read_to_string(e.unwrap().path()).unwrap()).unwrap()
        })
        .collect();
    let mut services: Vec<(String, String)> = manifests
        .iter()
        .filter(|m| m["kind"].as_str() == Some("Service"))
        .map(|m| {
            (
                m["metadata"]["namespace"].as_str().unwrap().to_owned(),
                m["metadata"]["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    services.sort();
    let lo = calls(&read("deploy/local/seed/kubernetes.sh"), "slice");
    let mut local_services: Vec<(String, String)> =
        lo.iter().map(|c| (c[0].clone(), c[1].clone())).collect();
    local_services.sort();
    assert_eq!(services, local_services, "the same Kubernetes Services");
    for c in &lo {
        assert_eq!(
            (c[3].clone(), c[4].clone()),
            at(&c[2]),
            "slice {}/{}",
            c[0],
            c[1]
        );
    }
}
