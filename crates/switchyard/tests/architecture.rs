//! The dependency rules ARCHITECTURE.md states, checked on the real graph (`cargo metadata`):
//! which of our crates each crate may depend on (normal and build dependencies; dev ones are
//! free), and that ARCHITECTURE.md's code map names every crate of the workspace.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Our packages: name → (folder relative to the repo, our crates it depends on outside dev).
fn workspace() -> BTreeMap<String, (String, BTreeSet<String>)> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(repo())
        .output()
        .expect("run cargo metadata");
    assert!(
        output.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: Value = serde_json::from_slice(&output.stdout).unwrap();
    let root = repo().canonicalize().unwrap();
    let packages = metadata["packages"].as_array().unwrap();
    let ours: BTreeSet<String> = packages
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect();
    packages
        .iter()
        .map(|p| {
            let manifest = Path::new(p["manifest_path"].as_str().unwrap());
            let folder = manifest
                .parent()
                .unwrap()
                .strip_prefix(&root)
                .unwrap()
                .display()
                .to_string();
            let deps = p["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| d["kind"].as_str() != Some("dev"))
                .map(|d| d["name"].as_str().unwrap().to_owned())
                .filter(|name| ours.contains(name))
                .collect();
            (p["name"].as_str().unwrap().to_owned(), (folder, deps))
        })
        .collect()
}

/// What a crate may depend on among ours, by rule; `None` for a crate no rule covers.
fn allowed(name: &str, folder: &str) -> Option<(&'static str, Vec<&'static str>)> {
    let production = [
        "switchyard-registry",
        "switchyard-upstream",
        "switchyard-proxy",
        "switchyard-policy",
        "switchyard-heap",
        "switchyard-metrics",
    ];
    if name == "switchyard-http-sd" {
        return Some((
            "the HTTP SD backend depends on switchyard-registry and, for the file_sd list it \
             shares, switchyard-file",
            vec!["switchyard-registry", "switchyard-file"],
        ));
    }
    if folder.starts_with("registries/") {
        return Some((
            "a registry backend depends only on switchyard-registry",
            vec!["switchyard-registry"],
        ));
    }
    Some(match name {
        "switchyard-registry" => ("the API boundary depends on none of ours", vec![]),
        "switchyard-heap" => ("the allocator helpers depend on none of ours", vec![]),
        "switchyard-metrics" => (
            "the metric types everything records into depend on none of ours",
            vec![],
        ),
        "switchyard-vendored-protoc" => (
            "builds before anything that needs protoc, so depends on none of ours",
            vec![],
        ),
        "switchyard-upstream" => (
            "the upstream cache sees registries only through the abstraction",
            vec!["switchyard-registry", "switchyard-metrics"],
        ),
        "switchyard-proxy" => (
            "the request path never depends on a backend, the policies or the binary",
            vec![
                "switchyard-registry",
                "switchyard-upstream",
                "switchyard-metrics",
            ],
        ),
        "switchyard-policy" => (
            "policies are filters of the proxy, and know no backend",
            vec![
                "switchyard-registry",
                "switchyard-proxy",
                "switchyard-metrics",
            ],
        ),
        // The binary wires everything but the development tools and the tests; backends
        // (every crate under registries/) are added by the caller.
        "switchyard" => (
            "the binary wires the production crates and the backends",
            production.to_vec(),
        ),
        "switchyard-devtools" => ("development tools reach the gateway like the binary", {
            let mut allowed = production.to_vec();
            allowed.push("switchyard");
            allowed
        }),
        _ if name == "switchyard-integration-tests"
            || name.ends_with("-double")
            || name == "switchyard-double-listener" =>
        {
            (
                "the test harness and doubles depend on ours only as dev dependencies (the \
                 doubles may share switchyard-double-listener)",
                vec!["switchyard-double-listener"],
            )
        }
        _ => return None,
    })
}

#[test]
fn dependency_rules_hold() {
    let packages = workspace();
    assert!(packages.len() >= 12, "{packages:?}");
    let backends: BTreeSet<&str> = packages
        .iter()
        .filter(|(_, (folder, _))| folder.starts_with("registries/"))
        .map(|(name, _)| name.as_str())
        .collect();
    let mut broken = Vec::new();
    for (name, (folder, deps)) in &packages {
        let Some((rule, mut allowed)) = allowed(name, folder) else {
            broken.push(format!(
                "{name} ({folder}): no dependency rule covers it; add one here and in ARCHITECTURE.md"
            ));
            continue;
        };
        if matches!(name.as_str(), "switchyard" | "switchyard-devtools") {
            allowed.extend(backends.iter().copied());
        }
        for dep in deps {
            if !allowed.contains(&dep.as_str()) {
                broken.push(format!("{name} depends on {dep}, but {rule}"));
            }
        }
        println!("{name}: {deps:?} (rule: {rule})");
    }
    assert!(
        broken.is_empty(),
        "dependency rules broken:\n  {}",
        broken.join("\n  ")
    );
}

#[test]
fn architecture_names_every_crate() {
    let text = std::fs::read_to_string(repo().join("ARCHITECTURE.md")).unwrap();
    let missing: Vec<String> = workspace()
        .into_iter()
        .filter(|(_, (folder, _))| !text.contains(&format!("`{folder}`")))
        .map(|(name, (folder, _))| format!("{name} (`{folder}`)"))
        .collect();
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md's code map does not name: {missing:?}"
    );
}

/// The top-level modules of the binary crate's library and the ones each refers to
/// (`crate::<module>` outside comments).
fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            let module = path.file_name().unwrap().to_string_lossy().into_owned();
            for inner in std::fs::read_dir(&path).unwrap() {
                files.push((module.clone(), inner.unwrap().path()));
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            let module = path.file_stem().unwrap().to_string_lossy().into_owned();
            files.push((module, path));
        }
    }
    for (module, path) in files {
        if matches!(module.as_str(), "lib" | "main" | "tools") {
            continue; // the roots, and the executable's own modules
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let uses = graph.entry(module.clone()).or_default();
        for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
            let mut rest = line;
            while let Some(at) = rest.find("crate::") {
                rest = &rest[at + "crate::".len()..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && name != module {
                    uses.insert(name);
                }
            }
            // `use crate::{a, b}`
            if let Some(group) = line.trim_start().strip_prefix("use crate::{") {
                for name in group.split(['}', ',', ' ', ';']).filter(|n| !n.is_empty()) {
                    let name = name.split("::").next().unwrap();
                    if name != module {
                        uses.insert(name.to_owned());
                    }
                }
            }
        }
    }
    graph
}

#[test]
fn binary_crate_modules_have_no_import_circle() {
    let graph = module_graph();
    for core in ["app", "config", "config_source", "plan", "load"] {
        assert!(
            graph.contains_key(core),
            "module {core} not found: {graph:?}"
        );
    }
    // Depth-first search for a cycle, printing the first one found.
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, stack, done) {
                return Some(cycle);
            }
        }
        stack.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        if let Some(cycle) = visit(node, &graph, &mut Vec::new(), &mut done) {
            panic!("import circle: {}\n{graph:#?}", cycle.join(" -> "));
        }
    }
    for (module, uses) in &graph {
        println!("{module} -> {uses:?}");
    }
}
