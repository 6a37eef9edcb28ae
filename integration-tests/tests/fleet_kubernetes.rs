//! The Kubernetes manifests in `deploy/kubernetes/`: every file parses (serde_yaml), the
//! kustomization lists them all, the Deployment, Service, PodDisruptionBudget and ConfigMap
//! fit together (replicas, probes on the admin port, grace period longer than preStop plus
//! drain, selectors, ports, the mounted config), the ConfigMap's config passes
//! `switchyard check` and uses in-cluster discovery; and the RBAC rules match exactly what
//! the gateway's Kubernetes client requested from the API-server double while the real
//! binary ran that very config (every request allowed, no rule unused).
//!
//! Needs `cargo build -p switchyard`; no Debian package.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::PostParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use serde_json::{json, Value};
use switchyard_integration_tests::{eventually, free_port, gateway, Backend};
use switchyard_kube_double::{KubeDouble, KubeDoubleOptions};

fn manifests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes")
}

/// Every YAML document of every file, with the file it came from.
fn manifests() -> Vec<(String, Value)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(manifests_dir())
        .expect("deploy/kubernetes")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    let mut documents = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        for document in serde_yaml::Deserializer::from_str(&text) {
            let value: Value =
                serde::Deserialize::deserialize(document).unwrap_or_else(|e| panic!("{name}: {e}"));
            if !value.is_null() {
                documents.push((name.clone(), value));
            }
        }
    }
    documents
}

fn by_kind<'a>(documents: &'a [(String, Value)], kind: &str) -> Vec<&'a Value> {
    documents
        .iter()
        .map(|(_, v)| v)
        .filter(|v| v["kind"] == kind)
        .collect()
}

fn one<'a>(documents: &'a [(String, Value)], kind: &str) -> &'a Value {
    let found = by_kind(documents, kind);
    assert_eq!(found.len(), 1, "one {kind} expected");
    found[0]
}

/// `"20s"` → 20.
fn seconds(text: &str) -> u64 {
    text.strip_suffix('s')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{text:?}: expected whole seconds like \"20s\""))
}

/// The ConfigMap's gateway config.
fn gateway_config(documents: &[(String, Value)]) -> String {
    one(documents, "ConfigMap")["data"]["switchyard.toml"]
        .as_str()
        .expect("data.switchyard.toml")
        .to_owned()
}

#[test]
fn manifests_fit_together() {
    let documents = manifests();
    for (file, document) in &documents {
        for key in ["apiVersion", "kind"] {
            assert!(document[key].is_string(), "{file}: {key}");
        }
        if document["kind"] != "Kustomization" {
            assert!(
                document["metadata"]["name"].is_string(),
                "{file}: metadata.name"
            );
        }
    }
    // The kustomization names every other file.
    let kustomization = one(&documents, "Kustomization");
    let listed: BTreeSet<&str> = kustomization["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    let files: BTreeSet<&str> = documents
        .iter()
        .map(|(f, _)| f.as_str())
        .filter(|f| *f != "kustomization.yaml")
        .collect();
    assert_eq!(listed, files);

    let deployment = one(&documents, "Deployment");
    let spec = &deployment["spec"];
    assert_eq!(spec["replicas"], 2);
    let pod = &spec["template"]["spec"];
    let labels = &spec["template"]["metadata"]["labels"];
    let matches = |selector: &Value| {
        selector
            .as_object()
            .unwrap()
            .iter()
            .all(|(k, v)| &labels[k] == v)
    };
    assert!(matches(&spec["selector"]["matchLabels"]));
    let container = &pod["containers"][0];
    let ports: BTreeMap<&str, u64> = container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap(),
                p["containerPort"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(container[probe]["httpGet"]["port"], "admin", "{probe}");
    }

    // The config the pod runs: its listeners are the container's ports; its drain fits in
    // the grace period after the preStop sleep.
    let config: toml::Value = toml::from_str(&gateway_config(&documents)).unwrap();
    let port_of = |listen: &toml::Value| -> u64 {
        listen
            .as_str()
            .unwrap()
            .rsplit_once(':')
            .unwrap()
            .1
            .parse()
            .unwrap()
    };
    assert_eq!(port_of(&config["server"]["listen"]), ports["http"]);
    assert_eq!(port_of(&config["admin"]["listen"]), ports["admin"]);
    let drain = seconds(config["server"]["drain_timeout"].as_str().unwrap());
    let command: Vec<&str> = container["lifecycle"]["preStop"]["exec"]["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(command[0], "sleep");
    let pre_stop: u64 = command[1].parse().unwrap();
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    println!("preStop {pre_stop} s + drain {drain} s < grace {grace} s");
    assert!(pre_stop + drain < grace);
    // In-cluster discovery: no kubeconfig anywhere.
    for (name, registry) in config["registries"].as_table().unwrap() {
        assert!(registry.get("kubeconfig").is_none(), "registries.{name}");
    }
    // The mounted ConfigMap is the file the container is told to run.
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let mount = container["volumeMounts"][0]["mountPath"].as_str().unwrap();
    assert_eq!(args, ["--config", &format!("{mount}/switchyard.toml")]);
    let volume = &pod["volumes"][0];
    assert_eq!(volume["name"], container["volumeMounts"][0]["name"]);
    assert_eq!(
        volume["configMap"]["name"],
        one(&documents, "ConfigMap")["metadata"]["name"]
    );

    // The Service and the PDB select these pods; the Service targets the data plane.
    let service = one(&documents, "Service");
    assert!(matches(&service["spec"]["selector"]));
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "http");
    let pdb = one(&documents, "PodDisruptionBudget");
    assert!(matches(&pdb["spec"]["selector"]["matchLabels"]));
    assert!(
        pdb["spec"]["minAvailable"].as_u64().unwrap() < 2,
        "a PDB must allow one eviction of 2 replicas"
    );

    // The account the pod runs as exists, in the Deployment's namespace.
    let account = one(&documents, "ServiceAccount");
    assert_eq!(pod["serviceAccountName"], account["metadata"]["name"]);
    assert_eq!(
        account["metadata"]["namespace"],
        deployment["metadata"]["namespace"]
    );

    // The config passes `switchyard check`.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchyard.toml");
    std::fs::write(&path, gateway_config(&documents)).unwrap();
    let (code, stderr) = gateway::check(&path);
    assert_eq!(code, 0, "{stderr}");
}

/// (namespace or "*", apiGroup, resource, verb) granted to the gateway's ServiceAccount.
fn granted(documents: &[(String, Value)]) -> BTreeSet<(String, String, String, String)> {
    let account = one(documents, "ServiceAccount");
    let (name, namespace) = (
        &account["metadata"]["name"],
        &account["metadata"]["namespace"],
    );
    let mut out = BTreeSet::new();
    for kind in ["RoleBinding", "ClusterRoleBinding"] {
        for binding in by_kind(documents, kind) {
            let subjects = binding["subjects"].as_array().unwrap();
            if !subjects.iter().any(|s| {
                s["kind"] == "ServiceAccount" && &s["name"] == name && &s["namespace"] == namespace
            }) {
                continue;
            }
            let scope = binding["metadata"]["namespace"]
                .as_str()
                .unwrap_or("*")
                .to_owned();
            let role_ref = &binding["roleRef"];
            let role = documents
                .iter()
                .map(|(_, v)| v)
                .find(|v| {
                    v["kind"] == role_ref["kind"]
                        && v["metadata"]["name"] == role_ref["name"]
                        && (v["kind"] == "ClusterRole"
                            || v["metadata"]["namespace"] == binding["metadata"]["namespace"])
                })
                .unwrap_or_else(|| {
                    panic!("{kind} {}: no role {role_ref}", binding["metadata"]["name"])
                });
            for rule in role["rules"].as_array().unwrap() {
                let list = |key: &str| -> Vec<String> {
                    rule[key]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|v| v.as_str().unwrap().to_owned())
                        .collect()
                };
                for group in list("apiGroups") {
                    for resource in list("resources") {
                        for verb in list("verbs") {
                            assert_ne!(verb, "*", "no wildcard verbs");
                            assert_ne!(resource, "*", "no wildcard resources");
                            out.insert((scope.clone(), group.clone(), resource.clone(), verb));
                        }
                    }
                }
            }
        }
    }
    out
}

/// (namespace, apiGroup, resource) of a resource URL.
fn resource_of(path: &str) -> Option<(String, String, String)> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match segments.as_slice() {
        ["api", "v1", rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => return None,
    };
    match rest {
        ["namespaces", ns, resource, ..] => {
            Some(((*ns).to_owned(), group.to_owned(), (*resource).to_owned()))
        }
        [resource, ..] => Some(("*".to_owned(), group.to_owned(), (*resource).to_owned())),
        _ => None,
    }
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_matches_the_requests_of_the_real_gateway() {
    let documents = manifests();
    let double = KubeDouble::start(KubeDoubleOptions::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    double.write_kubeconfig(&kubeconfig).unwrap();
    let client = Client::try_from(
        kube::Config::from_custom_kubeconfig(
            Kubeconfig::read_from(&kubeconfig).unwrap(),
            &KubeConfigOptions::default(),
        )
        .await
        .unwrap(),
    )
    .unwrap();

    // The Services of namespace `shop` that the ConfigMap's config routes to.
    let (orders, web) = (Backend::start("orders"), Backend::start("web"));
    let slices: Api<EndpointSlice> = Api::namespaced(client, "shop");
    for (service, backend) in [("orders", &orders), ("web", &web)] {
        let slice: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": format!("{service}-1"), "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": backend.address().port(), "protocol": "TCP"}],
            "endpoints": [{"addresses": [backend.address().ip().to_string()], "conditions": {"ready": true}}],
        }))
        .unwrap();
        slices.create(&PostParams::default(), &slice).await.unwrap();
    }
    let before = double.requests().len();

    // The real binary on the ConfigMap's config as it is; only the listeners are moved to
    // loopback (environment overrides, as a pod could set them) and the in-cluster
    // credentials replaced by $KUBECONFIG (the double has no TLS).
    let config = dir.path().join("switchyard.toml");
    std::fs::write(&config, gateway_config(&documents)).unwrap();
    let (port, admin) = (free_port(), free_port());
    let stderr = dir.path().join("stderr.log");
    let _gateway = Running(
        Command::new(gateway::switchyard_bin())
            .arg("--config")
            .arg(&config)
            .env("KUBECONFIG", &kubeconfig)
            .env("HOME", dir.path())
            .env("SWITCHYARD__SERVER__LISTEN", format!("127.0.0.1:{port}"))
            .env("SWITCHYARD__ADMIN__LISTEN", format!("127.0.0.1:{admin}"))
            .env("SWITCHYARD__LOG__ACCESS", "false")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("start switchyard"),
    );
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let get = |path: String| {
        let http = http.clone();
        async move {
            match http.get(path).send().await {
                Ok(r) if r.status().is_success() => r.text().await.ok(),
                _ => None,
            }
        }
    };
    eventually(
        "the gateway routes to both Services",
        Duration::from_secs(20),
        || async {
            get(format!("http://127.0.0.1:{port}/orders/1"))
                .await
                .is_some_and(|b| b.contains("orders"))
                && get(format!("http://127.0.0.1:{port}/"))
                    .await
                    .is_some_and(|b| b.contains("web"))
        },
    )
    .await;
    let start = Instant::now();
    while get(format!("http://127.0.0.1:{admin}/readyz"))
        .await
        .is_none()
        && start.elapsed() < Duration::from_secs(10)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Both watches open: the client has made every kind of request it makes in steady state.
    eventually(
        "both namespaces' watches are open",
        Duration::from_secs(10),
        || async {
            double.requests()[before..]
                .iter()
                .any(|r| r.verb == "watch")
        },
    )
    .await;
    // The start-up line of the registry's first sync (written once the sync lands, which
    // may be a moment after the watch opened).
    eventually(
        "the start-up sync line is printed",
        Duration::from_secs(10),
        || async {
            std::fs::read_to_string(&stderr)
                .unwrap_or_default()
                .contains("k8s: 2 services, 2 endpoints, synced in ")
        },
    )
    .await;
    let log = std::fs::read_to_string(&stderr).unwrap_or_default();
    println!("{log}");

    let requests = double.requests()[before..].to_vec();
    let mut used = BTreeSet::new();
    for request in &requests {
        println!(
            "{} {}?{} -> {} (verb {:?})",
            request.method, request.path, request.query, request.status, request.verb
        );
        if request.verb.is_empty() {
            // Non-resource URLs: only discovery, which every authenticated account may read.
            assert!(
                ["/api", "/apis", "/version"].contains(&request.path.trim_end_matches('/')),
                "unexpected non-resource request {}",
                request.path
            );
            continue;
        }
        let (namespace, group, resource) = resource_of(&request.path)
            .unwrap_or_else(|| panic!("not a resource URL: {}", request.path));
        assert_ne!(request.status, 401, "{}", request.path);
        used.insert((namespace, group, resource, request.verb.clone()));
    }
    let granted = granted(&documents);
    println!("requested: {used:?}\ngranted:   {granted:?}");
    for request in &used {
        let allowed = granted.contains(request)
            || granted.contains(&(
                "*".to_owned(),
                request.1.clone(),
                request.2.clone(),
                request.3.clone(),
            ));
        assert!(allowed, "the manifests do not allow {request:?}");
    }
    assert_eq!(granted, used, "every rule is used, none is missing");
}
