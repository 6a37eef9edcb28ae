//! `switchyard config schema` (the real binary) against the examples in config/: every
//! example validates, and a key no struct defines is refused — at the top level, in a
//! section, in a registry of each kind, in a route, in an upstream's source — as is an
//! unknown registry `type`.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The schema as `switchyard config schema` prints it.
fn schema() -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["config", "schema"])
        .output()
        .expect("run switchyard config schema");
    assert!(
        output.status.success(),
        "switchyard config schema: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the schema is JSON")
}

fn examples() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("config"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "config/ has the examples: {files:?}");
    files
}

/// The config value of a TOML file, as the gateway reads it.
fn read(path: &Path) -> Value {
    switchyard::config::read(path).unwrap_or_else(|e| panic!("{}: {e:?}", path.display()))
}

/// One edit of a valid config that must make it invalid.
type Change = Box<dyn Fn(&mut Value)>;

fn errors(validator: &jsonschema::Validator, value: &Value) -> Vec<String> {
    validator
        .iter_errors(value)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

#[test]
fn every_example_validates() {
    let schema = schema();
    let validator = jsonschema::validator_for(&schema).expect("a valid draft 2020-12 schema");
    for file in examples() {
        let value = read(&file);
        let errors = errors(&validator, &value);
        assert!(
            errors.is_empty(),
            "{}:\n{}",
            file.display(),
            errors.join("\n")
        );
        println!("{}: valid", file.display());
    }
}

#[test]
fn unknown_keys_and_types_are_refused() {
    let schema = schema();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let base = read(&repo().join("config/mixed.toml"));
    assert!(errors(&validator, &base).is_empty());
    let kinds: Vec<String> = base["registries"]
        .as_object()
        .unwrap()
        .values()
        .map(|r| r["type"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        kinds.len() >= 4,
        "mixed.toml has several registry kinds: {kinds:?}"
    );

    // (where, the change) — each must be refused on its own.
    let mut cases: Vec<(String, Change)> = vec![
        ("top level".into(), Box::new(|v| v["serverr"] = json!({}))),
        (
            "[server]".into(),
            Box::new(|v| v["server"]["listen_typo"] = json!("x")),
        ),
        (
            "[admin]".into(),
            Box::new(|v| v["admin"]["tokn"] = json!("x")),
        ),
        (
            "[[routes]]".into(),
            Box::new(|v| v["routes"][0]["upstreams"] = json!("x")),
        ),
        (
            "[[upstreams.*.sources]]".into(),
            Box::new(|v| {
                let upstream = v["upstreams"].as_object_mut().unwrap().values_mut().next();
                upstream.unwrap()["sources"][0]["servce"] = json!("x");
            }),
        ),
        (
            "registry type".into(),
            Box::new(|v| {
                let registry = v["registries"].as_object_mut().unwrap().values_mut().next();
                registry.unwrap()["type"] = json!("consull");
            }),
        ),
        (
            "a wrong type".into(),
            Box::new(|v| v["server"]["max_headers"] = json!("many")),
        ),
    ];
    for name in base["registries"].as_object().unwrap().keys() {
        let name = name.clone();
        let kind = base["registries"][&name]["type"]
            .as_str()
            .unwrap()
            .to_owned();
        cases.push((
            format!("[registries.{name}] (type {kind})"),
            Box::new(move |v| v["registries"][&name]["no_such_key"] = json!(1)),
        ));
    }
    for (place, change) in cases {
        let mut value = base.clone();
        change(&mut value);
        let errors = errors(&validator, &value);
        assert!(
            !errors.is_empty(),
            "{place}: an unknown key or type was accepted"
        );
        println!("{place}: refused: {}", errors.join("; "));
    }
}

#[test]
fn nomad_nacos_and_eureka_tables_are_described() {
    let schema = schema();
    let validator = jsonschema::validator_for(&schema).unwrap();
    // (example, registry type, a duration key of that type)
    for (file, kind, duration) in [
        ("config/nomad.toml", "nomad", "wait"),
        ("config/nacos.toml", "nacos", "fetch_interval"),
        ("config/eureka.toml", "eureka", "fetch_interval"),
    ] {
        let base = read(&repo().join(file));
        assert!(errors(&validator, &base).is_empty(), "{file}");
        let name = base["registries"]
            .as_object()
            .unwrap()
            .iter()
            .find(|(_, r)| r["type"] == kind)
            .map(|(name, _)| name.clone())
            .unwrap_or_else(|| panic!("{file} has no {kind} registry"));
        // An unknown key and a wrong type in the backend's own table are both refused:
        // the schema describes its keys, not "any table".
        for (key, value) in [("no_such_key", json!(1)), (duration, json!(5))] {
            let mut value_changed = base.clone();
            value_changed["registries"][&name][key] = value;
            let errors = errors(&validator, &value_changed);
            assert!(
                !errors.is_empty(),
                "{file}: [registries.{name}] {key}: accepted"
            );
            println!(
                "{file}: [registries.{name}] {key}: refused: {}",
                errors.join("; ")
            );
        }
    }
}
