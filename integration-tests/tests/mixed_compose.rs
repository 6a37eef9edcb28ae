//! `docker-compose.yml` checked against `config/mixed.toml` without a Docker engine: the
//! compose file is parsed (yaml-rust2) and
//!
//! - every registry address the config names, once the gateway service's `SWITCHYARD__`
//!   variables are applied, is a compose service running that registry (the kubeconfig is
//!   exported by a service onto a volume the gateway mounts, pointing at the k3s service,
//!   `kubernetes`);
//! - every service a source names is seeded: registered by the Consul seed script, put by the
//!   etcd seed script, in the CoreDNS zone (SRV targets and A records on the fixed addresses
//!   of the sample containers), a Service in the k3s manifests applied by the Kubernetes seed;
//! - the gateway is built from the repository's Dockerfile (multi-stage, non-root);
//! - every image is pinned, every mounted file exists, every dependency is a service;
//! - the gateway's variables really override the file: `switchyard check` passes with them,
//!   and fails naming the key when one of them is made invalid;
//! - the seed scripts, run with `sh` against a real etcd and the Consul double, register
//!   what they say.
//!
//! Needs the Debian packages etcd-server and curl, and `cargo build -p switchyard`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use switchyard_consul_double::client::AgentClient;
use switchyard_consul_double::{ConsulDouble, Options};
use switchyard_integration_tests::etcd::EtcdServer;
use switchyard_integration_tests::gateway;
use yaml_rust2::{Yaml, YamlLoader};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

fn compose() -> Yaml {
    let mut docs =
        YamlLoader::load_from_str(&read("docker-compose.yml")).expect("docker-compose.yml parses");
    assert_eq!(docs.len(), 1, "one YAML document");
    docs.remove(0)
}

fn mixed() -> toml::Value {
    toml::from_str(&read("config/mixed.toml")).expect("config/mixed.toml parses")
}

/// The compose services by name.
fn services(compose: &Yaml) -> BTreeMap<String, Yaml> {
    compose["services"]
        .as_hash()
        .expect("services")
        .iter()
        .map(|(k, v)| (k.as_str().expect("service name").to_owned(), v.clone()))
        .collect()
}

/// A string or a list of strings (`command`, `entrypoint`).
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
        Yaml::BadValue | Yaml::Null => Vec::new(),
        other => panic!("not a string or list: {other:?}"),
    }
}

fn scalar(value: &Yaml) -> String {
    match value {
        Yaml::String(s) => s.clone(),
        Yaml::Integer(n) => n.to_string(),
        Yaml::Boolean(b) => b.to_string(),
        Yaml::Real(r) => r.clone(),
        other => panic!("not a scalar: {other:?}"),
    }
}

/// A service's environment: `environment` (map or `KEY=VALUE` list), plus `KEY=VALUE`
/// arguments an `env` entrypoint passes.
fn environment(service: &Yaml) -> Vec<(String, String)> {
    let mut vars = Vec::new();
    match &service["environment"] {
        Yaml::Hash(map) => {
            for (k, v) in map {
                vars.push((scalar(k), scalar(v)));
            }
        }
        Yaml::Array(_) => {
            for item in words(&service["environment"]) {
                let (k, v) = item.split_once('=').expect("KEY=VALUE");
                vars.push((k.to_owned(), v.to_owned()));
            }
        }
        _ => {}
    }
    let entrypoint = words(&service["entrypoint"]);
    if entrypoint.first().map(String::as_str) == Some("env") {
        for arg in &entrypoint[1..] {
            match arg.split_once('=') {
                Some((k, v)) => vars.push((k.to_owned(), v.to_owned())),
                None => break,
            }
        }
    }
    vars
}

/// Short-syntax volumes as `(source, target)`.
fn volumes(service: &Yaml) -> Vec<(String, String)> {
    words(&service["volumes"])
        .iter()
        .map(|v| {
            let mut parts = v.split(':');
            let source = parts.next().unwrap().to_owned();
            let target = parts
                .next()
                .unwrap_or_else(|| panic!("volume {v}"))
                .to_owned();
            (source, target)
        })
        .collect()
}

/// The fixed address of a service on the default network, if any.
fn fixed_ip(service: &Yaml) -> Option<String> {
    service["networks"]["default"]["ipv4_address"]
        .as_str()
        .map(str::to_owned)
}

/// `host` of `scheme://host:port/...`, `host:port` or `host`.
fn host_of(address: &str) -> (String, Option<u16>) {
    let rest = address.split_once("://").map_or(address, |(_, r)| r);
    let authority = rest.split('/').next().unwrap();
    match authority.rsplit_once(':') {
        Some((host, port)) => (host.to_owned(), Some(port.parse().expect("port"))),
        None => (authority.to_owned(), None),
    }
}

/// Applies `SWITCHYARD__A__B[0]=v` overrides to the config, as the loader does (keys
/// lowercased, `__` separating levels, `[i]` indexing a list); each must name a key the
/// file already has. Returns the keys applied.
fn apply_overrides(config: &mut toml::Value, vars: &[(String, String)]) -> Vec<String> {
    let mut applied = Vec::new();
    for (key, value) in vars {
        let Some(path) = key.strip_prefix("SWITCHYARD__") else {
            continue;
        };
        let mut node = &mut *config;
        let parts: Vec<String> = path.split("__").map(str::to_lowercase).collect();
        for part in &parts {
            let (name, index) = match part.split_once('[') {
                Some((name, i)) => (
                    name,
                    Some(i.trim_end_matches(']').parse::<usize>().unwrap()),
                ),
                None => (part.as_str(), None),
            };
            node = node
                .get_mut(name)
                .unwrap_or_else(|| panic!("{key}: config/mixed.toml has no key {name}"));
            if let Some(i) = index {
                node = node
                    .get_mut(i)
                    .unwrap_or_else(|| panic!("{key}: config/mixed.toml has no item {i}"));
            }
        }
        *node = toml::Value::String(value.clone());
        applied.push(parts.join("."));
    }
    applied
}

/// The gateway service, every service, the config as the gateway sees it, its variables.
struct GatewayView {
    gateway: Yaml,
    services: BTreeMap<String, Yaml>,
    config: toml::Value,
    vars: Vec<(String, String)>,
}

/// The gateway service and the config as the gateway in compose sees it.
fn gateway_view() -> GatewayView {
    let compose = compose();
    let services = services(&compose);
    let gateway = services.get("gateway").expect("a gateway service").clone();
    let vars = environment(&gateway);
    let mut config = mixed();
    let applied = apply_overrides(&mut config, &vars);
    println!("gateway overrides applied to config/mixed.toml: {applied:?}");
    GatewayView {
        gateway,
        services,
        config,
        vars,
    }
}

/// The registries of the config of `kind` (`type`).
fn registries_of<'a>(config: &'a toml::Value, kind: &str) -> Vec<(&'a String, &'a toml::Value)> {
    config["registries"]
        .as_table()
        .expect("registries")
        .iter()
        .filter(|(_, r)| r["type"].as_str() == Some(kind))
        .collect()
}

/// Asserts `host` is a compose service whose image is `image_prefix`.
fn assert_service(services: &BTreeMap<String, Yaml>, what: &str, host: &str, image_prefix: &str) {
    assert!(
        !matches!(host, "127.0.0.1" | "localhost" | "::1" | "[::1]"),
        "{what}: {host} is the gateway container itself in compose"
    );
    let service = services
        .get(host)
        .unwrap_or_else(|| panic!("{what}: {host} is not a compose service"));
    let image = service["image"].as_str().unwrap_or_default();
    assert!(
        image.starts_with(image_prefix),
        "{what}: service {host} runs {image}, not {image_prefix}"
    );
    println!("{what}: compose service {host} ({image})");
}

#[test]
fn every_registry_address_of_config_mixed_toml_is_a_compose_service() {
    let GatewayView {
        gateway,
        services,
        config,
        vars,
    } = gateway_view();

    for (name, registry) in registries_of(&config, "consul") {
        let (host, _) = host_of(registry["address"].as_str().expect("address"));
        assert_service(
            &services,
            &format!("registries.{name}.address"),
            &host,
            "hashicorp/consul:",
        );
    }
    for (name, registry) in registries_of(&config, "etcd") {
        for (i, endpoint) in registry["endpoints"]
            .as_array()
            .expect("endpoints")
            .iter()
            .enumerate()
        {
            let (host, _) = host_of(endpoint.as_str().unwrap());
            assert_service(
                &services,
                &format!("registries.{name}.endpoints[{i}]"),
                &host,
                "quay.io/coreos/etcd:",
            );
        }
    }
    for (name, registry) in registries_of(&config, "dns") {
        for (i, server) in registry["nameservers"]
            .as_array()
            .expect("nameservers")
            .iter()
            .enumerate()
        {
            let (host, port) = host_of(server.as_str().unwrap());
            assert_service(
                &services,
                &format!("registries.{name}.nameservers[{i}]"),
                &host,
                "coredns/coredns:",
            );
            assert_eq!(
                port.unwrap_or(53),
                53,
                "CoreDNS listens on 53 in its container"
            );
        }
    }

    // Kubernetes: the kubeconfig ($KUBECONFIG, or the registry's `kubeconfig`) is on a volume
    // the gateway mounts, written by a service that points it at the k3s service.
    for (name, registry) in registries_of(&config, "kubernetes") {
        let path = registry
            .get("kubeconfig")
            .and_then(|k| k.as_str())
            .map(str::to_owned)
            .or_else(|| {
                vars.iter()
                    .find(|(k, _)| k == "KUBECONFIG")
                    .map(|(_, v)| v.clone())
            })
            .unwrap_or_else(|| panic!("registries.{name}: no kubeconfig and no KUBECONFIG"));
        let (volume, mount) = volumes(&gateway)
            .into_iter()
            .find(|(_, target)| path.starts_with(&format!("{target}/")))
            .unwrap_or_else(|| panic!("{path} is on no volume of the gateway"));
        let file_in_volume = path.strip_prefix(&format!("{mount}/")).unwrap();
        let (writer, writer_mount) = services
            .iter()
            .filter(|(n, _)| n.as_str() != "gateway")
            .find_map(|(n, s)| {
                let writable = words(&s["volumes"])
                    .iter()
                    .any(|v| v.starts_with(&format!("{volume}:")) && !v.ends_with(":ro"));
                let runs_a_script = words(&s["command"]).iter().any(|w| w.ends_with(".sh"));
                volumes(s)
                    .into_iter()
                    .find(|(source, _)| source == &volume)
                    .filter(|_| writable && runs_a_script)
                    .map(|(_, target)| (n.clone(), target))
            })
            .unwrap_or_else(|| panic!("no service writes volume {volume}"));
        let script_path = volumes(&services[&writer])
            .into_iter()
            .find(|(source, _)| source.ends_with(".sh"))
            .map(|(source, _)| source)
            .expect("the writer mounts its script");
        let script = read(script_path.trim_start_matches("./"));
        let written = format!("{writer_mount}/{file_in_volume}");
        assert!(
            script.contains(&written),
            "{script_path} does not write {written}"
        );
        assert!(
            script.contains("https://kubernetes:6443"),
            "{script_path} does not point the kubeconfig at kubernetes:6443"
        );
        assert_service(
            &services,
            &format!("registries.{name} (kubeconfig {path}, written by {writer})"),
            "kubernetes",
            "rancher/k3s:",
        );
        let k3s = words(&services["kubernetes"]["command"]);
        assert!(
            k3s.contains(&"--tls-san=kubernetes".to_owned()),
            "k3s's certificate must name the service, kubernetes: {k3s:?}"
        );
        assert_eq!(
            services["kubernetes"]["privileged"].as_bool(),
            Some(true),
            "k3s runs privileged"
        );
    }

    // The gateway listens on every interface in its container, on the published ports.
    let ports = words(&gateway["ports"]);
    for (key, port) in [("server", "8080"), ("admin", "9901")] {
        let listen = config[key]["listen"].as_str().unwrap();
        assert_eq!(listen, format!("0.0.0.0:{port}"), "{key}.listen in compose");
        assert!(
            ports.contains(&format!("{port}:{port}")),
            "port {port} published: {ports:?}"
        );
    }
    assert_eq!(
        config["state"]["dir"].as_str(),
        Some("/var/lib/switchyard"),
        "state on the gateway-state volume"
    );
    assert!(volumes(&gateway).contains(&("gateway-state".into(), "/var/lib/switchyard".into())));
}

#[test]
fn the_gateway_is_built_from_the_repository_dockerfile() {
    let gateway = gateway_view().gateway;
    assert_eq!(
        gateway["build"]["context"].as_str(),
        Some("."),
        "built from the repository"
    );
    assert_eq!(gateway["build"]["dockerfile"].as_str(), Some("Dockerfile"));
    let command = words(&gateway["command"]);
    assert_eq!(command, ["--config", "/etc/switchyard/mixed.toml"]);
    assert!(
        volumes(&gateway).contains(&(
            "./config/mixed.toml".into(),
            "/etc/switchyard/mixed.toml".into()
        )),
        "the gateway runs the repository's config/mixed.toml"
    );
    assert_eq!(
        words(&gateway["entrypoint"]).last().map(String::as_str),
        Some("switchyard")
    );

    let dockerfile = read("Dockerfile");
    let froms: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert_eq!(
        froms,
        [
            "FROM ${BASE_IMAGE} AS base",
            "FROM base AS runtime",
            "FROM rust:1-bookworm AS build",
            "FROM base",
        ],
        "multi-stage: build on rust:1-bookworm, run on the base (debian:bookworm-slim by \
         default); stage runtime takes a binary built on the host"
    );
    assert!(dockerfile.contains("ARG BASE_IMAGE=debian:bookworm-slim"));
    assert!(dockerfile.contains("COPY --from=build /usr/local/bin/switchyard"));
    assert!(
        dockerfile.contains("scripts/with-protoc.sh cargo build --release --locked -p switchyard"),
        "protoc for etcd-client comes from scripts/with-protoc.sh (the vendored one when none is installed)"
    );
    let user = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("USER "))
        .next_back()
        .expect("a USER line");
    assert!(
        !user.starts_with("root") && !user.starts_with('0'),
        "non-root: USER {user}"
    );
    assert!(dockerfile.contains("COPY config/ /etc/switchyard/"));
    let ignore = read(".dockerignore");
    assert!(
        ignore.lines().any(|l| l.trim() == "target"),
        ".dockerignore leaves target/ out"
    );
}

#[test]
fn every_image_is_pinned_every_mounted_file_exists_every_dependency_is_a_service() {
    let compose = compose();
    let services = services(&compose);
    let named_volumes: Vec<String> = compose["volumes"]
        .as_hash()
        .map(|h| h.keys().map(|k| k.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default();
    for (name, service) in &services {
        match service["image"].as_str() {
            Some(image) => {
                let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or_default();
                assert!(
                    !tag.is_empty() && !tag.contains('/') && tag != "latest",
                    "{name}: image {image} is not pinned"
                );
            }
            None => panic!("{name}: no image"),
        }
        for (source, _) in volumes(service) {
            if source.starts_with('.') {
                let path = repo().join(&source);
                assert!(
                    path.exists(),
                    "{name}: mounts {source}, which does not exist"
                );
            } else {
                assert!(
                    named_volumes.contains(&source),
                    "{name}: volume {source} is not declared"
                );
            }
        }
        if let Some(deps) = service["depends_on"].as_hash() {
            for dep in deps.keys() {
                let dep = dep.as_str().unwrap();
                assert!(
                    services.contains_key(dep),
                    "{name} depends on unknown {dep}"
                );
            }
        }
    }
    println!("{} services, each image pinned", services.len());
}

/// `register ID NAME HOST PORT` lines of the Consul seed, `put SERVICE ID HOST PORT` lines of
/// the etcd one.
fn seed_calls(script: &str, verb: &str) -> Vec<Vec<String>> {
    script
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("{verb} ")))
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect()
}

/// Asserts `host:port` is a compose sample service answering on `port`.
fn assert_sample(services: &BTreeMap<String, Yaml>, what: &str, host: &str, port: &str) {
    let service = services
        .get(host)
        .unwrap_or_else(|| panic!("{what}: {host} is not a compose service"));
    let command = words(&service["command"]);
    assert!(
        command.contains(&format!("-listen=:{port}")),
        "{what}: {host} does not listen on {port}: {command:?}"
    );
}

/// Asserts that a compose service runs the seed script `script` (mounted under `/seed`).
fn assert_seed_runs(services: &BTreeMap<String, Yaml>, script: &str) {
    let runner = services.iter().find(|(_, s)| {
        words(&s["entrypoint"]).contains(&format!("/seed/{script}"))
            && volumes(s).contains(&("./deploy/compose/seed".into(), "/seed".into()))
    });
    let (name, _) = runner.unwrap_or_else(|| panic!("no compose service runs /seed/{script}"));
    println!("{script}: run by {name}");
}

#[test]
fn every_service_the_config_names_is_seeded_in_its_registry() {
    let compose = compose();
    let services = services(&compose);
    let config = mixed();
    let consul_seed = seed_calls(&read("deploy/compose/seed/consul.sh"), "register");
    let etcd_seed = seed_calls(&read("deploy/compose/seed/etcd.sh"), "put");
    assert_seed_runs(&services, "consul.sh");
    assert_seed_runs(&services, "etcd.sh");
    let zone = read("deploy/compose/coredns/example.test.db");
    let records: Vec<Vec<&str>> = zone
        .lines()
        .map(|l| l.split(';').next().unwrap())
        .filter(|l| !l.trim().is_empty() && !l.starts_with('$'))
        .map(|l| l.split_whitespace().collect())
        .collect();
    let corefile = read("deploy/compose/coredns/Corefile");
    assert!(corefile.contains("file /etc/coredns/example.test.db"));
    let manifests: Vec<Yaml> = std::fs::read_dir(repo().join("deploy/compose/k3s/manifests"))
        .unwrap()
        .flat_map(|e| {
            YamlLoader::load_from_str(&std::fs::read_to_string(e.unwrap().path()).unwrap()).unwrap()
        })
        .collect();
    let seed_k8s = &services["seed-kubernetes"];
    assert!(
        volumes(seed_k8s).contains(&("./deploy/compose/k3s/manifests".into(), "/manifests".into()))
    );
    assert!(words(&seed_k8s["command"])
        .windows(2)
        .any(|w| w == ["-f", "/manifests/"]));
    let by_ip: BTreeMap<String, (&String, &Yaml)> = services
        .iter()
        .filter_map(|(n, s)| fixed_ip(s).map(|ip| (ip, (n, s))))
        .collect();
    let a_record = |name: &str| -> String {
        let record = records
            .iter()
            .find(|r| r.len() == 4 && r[0] == name && r[1] == "IN" && r[2] == "A")
            .unwrap_or_else(|| panic!("zone: no A record for {name}"));
        record[3].to_owned()
    };

    let mut checked = 0;
    for (upstream, table) in config["upstreams"].as_table().unwrap() {
        for source in table["sources"].as_array().unwrap() {
            let registry = source["registry"].as_str().unwrap();
            let service = source["service"].as_str().unwrap();
            let kind = config["registries"][registry]["type"].as_str().unwrap();
            let what = format!("upstreams.{upstream}: {kind} {service}");
            match kind {
                "consul" => {
                    let instances: Vec<&Vec<String>> =
                        consul_seed.iter().filter(|c| c[1] == service).collect();
                    assert!(
                        !instances.is_empty(),
                        "{what}: not registered by seed/consul.sh"
                    );
                    for c in instances {
                        assert_sample(&services, &what, &c[2], &c[3]);
                    }
                }
                "etcd" => {
                    let prefix = config["registries"][registry]["prefix"]
                        .as_str()
                        .unwrap_or("/switchyard/services");
                    assert!(
                        read("deploy/compose/seed/etcd.sh")
                            .contains(&format!("prefix=${{SWITCHYARD_PREFIX:-{prefix}}}")),
                        "{what}: seed/etcd.sh writes under another prefix than {prefix}"
                    );
                    let instances: Vec<&Vec<String>> =
                        etcd_seed.iter().filter(|c| c[0] == service).collect();
                    assert!(!instances.is_empty(), "{what}: not put by seed/etcd.sh");
                    for c in instances {
                        assert_sample(&services, &what, &c[2], &c[3]);
                    }
                }
                "dns" => {
                    let name = service.trim_end_matches(".example.test");
                    if let Some((host, port)) = service.rsplit_once(':') {
                        let host = host.trim_end_matches(".example.test");
                        let ip = a_record(host);
                        let (sample, _) = by_ip.get(&ip).unwrap_or_else(|| {
                            panic!("{what}: {ip} is no service's fixed address")
                        });
                        assert_sample(&services, &what, sample, port);
                    } else {
                        let srv: Vec<&Vec<&str>> = records
                            .iter()
                            .filter(|r| r[0] == name && r.get(2) == Some(&"SRV"))
                            .collect();
                        assert!(!srv.is_empty(), "{what}: no SRV record {name} in the zone");
                        for r in srv {
                            let (port, target) = (r[5], r[6]);
                            let ip = a_record(target);
                            let (sample, _) = by_ip.get(&ip).unwrap_or_else(|| {
                                panic!("{what}: {ip} is no service's fixed address")
                            });
                            assert_sample(&services, &what, sample, port);
                        }
                    }
                    let coredns = &services["dns"];
                    assert!(volumes(coredns)
                        .contains(&("./deploy/compose/coredns".into(), "/etc/coredns".into())));
                }
                "kubernetes" => {
                    let (namespace, name) = service.split_once('/').unwrap();
                    let svc = manifests
                        .iter()
                        .find(|m| {
                            m["kind"].as_str() == Some("Service")
                                && m["metadata"]["name"].as_str() == Some(name)
                                && m["metadata"]["namespace"].as_str() == Some(namespace)
                        })
                        .unwrap_or_else(|| panic!("{what}: no Service {service} in the manifests"));
                    let port = source["port"].as_str().unwrap_or("http");
                    assert!(
                        svc["spec"]["ports"]
                            .as_vec()
                            .unwrap()
                            .iter()
                            .any(|p| p["name"].as_str() == Some(port)),
                        "{what}: Service has no port {port}"
                    );
                    let selector = &svc["spec"]["selector"];
                    assert!(
                        manifests.iter().any(|m| {
                            m["kind"].as_str() == Some("Deployment")
                                && m["metadata"]["namespace"].as_str() == Some(namespace)
                                && &m["spec"]["template"]["metadata"]["labels"] == selector
                        }),
                        "{what}: no Deployment in {namespace} behind the Service's selector"
                    );
                    let allowed = config["registries"][registry]
                        .get("namespaces")
                        .and_then(|n| n.as_array())
                        .map(|n| n.iter().any(|n| n.as_str() == Some(namespace)))
                        .unwrap_or(true);
                    assert!(
                        allowed,
                        "{what}: namespace {namespace} not in the registry's namespaces"
                    );
                }
                other => panic!("{what}: unexpected registry type {other}"),
            }
            println!("{what}: seeded");
            checked += 1;
        }
    }
    assert!(checked >= 6, "{checked} sources checked");
}

/// Runs `switchyard check --config config/mixed.toml` with `vars` set.
fn check_with(vars: &[(String, String)]) -> (i32, String) {
    let output = Command::new(gateway::switchyard_bin())
        .arg("check")
        .arg("--config")
        .arg(repo().join("config/mixed.toml"))
        .envs(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .expect("run switchyard check");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr),
    )
}

#[test]
fn the_gateway_variables_override_config_mixed_toml() {
    let vars = gateway_view().vars;
    let (code, output) = check_with(&vars);
    assert_eq!(
        code, 0,
        "switchyard check with the compose variables: {output}"
    );
    println!("with the compose variables: {}", output.trim());

    // Each registry override really lands: made invalid, check names its key.
    let mut tried = 0;
    for (i, (key, _)) in vars.iter().enumerate() {
        let Some(path) = key.strip_prefix("SWITCHYARD__REGISTRIES__") else {
            continue;
        };
        let mut broken = vars.clone();
        broken[i].1 = "not an address".to_owned();
        let (code, output) = check_with(&broken);
        let expected = format!("registries.{}", path.to_lowercase().replace("__", "."));
        assert_eq!(code, 2, "{key}=<invalid> accepted: {output}");
        assert!(
            output.contains(&expected),
            "{key}: error does not name {expected}: {output}"
        );
        println!(
            "{key} invalid -> {}",
            output.lines().next().unwrap_or_default()
        );
        tried += 1;
    }
    assert!(tried >= 3, "{tried} registry overrides");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_scripts_register_their_instances_in_real_registries() {
    let etcd = EtcdServer::start();
    let consul = ConsulDouble::start(Options::default()).expect("consul double");
    let run = |script: &str, vars: &[(&str, String)]| {
        let output = Command::new("sh")
            .arg(repo().join("deploy/compose/seed").join(script))
            .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .expect("run sh");
        let text = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "{script} failed (it needs curl: apt-get install curl): {text}"
        );
        println!("{script}:\n{}", text.trim());
    };
    let script_consul = read("deploy/compose/seed/consul.sh");
    let script_etcd = read("deploy/compose/seed/etcd.sh");
    tokio::task::block_in_place(|| {
        run("etcd.sh", &[("ETCD_URL", etcd.client_url())]);
        run(
            "consul.sh",
            &[
                ("CONSUL_HTTP_ADDR", consul.address()),
                ("SEED_CONSUL_CHECK", "ttl".to_owned()),
            ],
        );
    });

    // etcd: every put is there, in Switchyard's JSON format.
    let listed =
        tokio::task::block_in_place(|| etcd.etcdctl(&["get", "--prefix", "/switchyard/services/"]));
    for call in seed_calls(&script_etcd, "put") {
        let key = format!("/switchyard/services/{}/{}", call[0], call[1]);
        let value = format!("{{\"host\":\"{}\",\"port\":{}}}", call[2], call[3]);
        assert!(
            listed.contains(&format!("{key}\n{value}")),
            "{key} = {value} not in etcd:\n{listed}"
        );
    }

    // Consul: every registration is a passing instance of its service.
    let agent = AgentClient::new(&consul.address());
    for call in seed_calls(&script_consul, "register") {
        let (_, entries) = agent.health(&call[1], "passing").await.expect("health");
        assert!(
            entries
                .iter()
                .any(|e| e["Service"]["ID"] == call[0].as_str()
                    && e["Service"]["Address"] == call[2].as_str()
                    && e["Service"]["Port"]
                        .as_u64()
                        .map(|p| p.to_string())
                        .as_deref()
                        == Some(call[3].as_str())),
            "{} not a passing instance of {}: {entries:?}",
            call[0],
            call[1]
        );
    }
}
