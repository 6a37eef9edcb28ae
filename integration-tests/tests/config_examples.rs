//! Every example in config/ is valid, and every table of every example refuses a key it
//! does not know (hickory-dns's approach: inject an unknown field into each table).
//! Also: ARCHITECTURE.md names only crates that exist.

use std::path::{Path, PathBuf};

use switchyard_integration_tests::gateway;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn examples() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("config"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    files.sort();
    assert!(files.len() >= 2, "config/ has examples");
    files
}

#[test]
fn every_example_passes_check() {
    for file in examples() {
        let (code, stderr) = gateway::check(&file);
        assert_eq!(code, 0, "{}:\n{stderr}", file.display());
    }
}

/// Paths (as `check` prints them) of every table in a TOML document.
fn tables(value: &toml::Value, path: String, out: &mut Vec<String>) {
    match value {
        toml::Value::Table(table) => {
            out.push(path.clone());
            for (key, child) in table {
                let child_path = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                tables(child, child_path, out);
            }
        }
        toml::Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                tables(item, format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

fn insert(value: &mut toml::Value, path: &str, key: &str) {
    let mut node = value;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (name, index) = match part.split_once('[') {
            Some((name, rest)) => (
                name,
                Some(rest.trim_end_matches(']').parse::<usize>().unwrap()),
            ),
            None => (part, None),
        };
        node = node.get_mut(name).unwrap();
        if let Some(i) = index {
            node = node.get_mut(i).unwrap();
        }
    }
    node.as_table_mut()
        .unwrap()
        .insert(key.into(), toml::Value::Integer(1));
}

#[test]
fn every_table_of_every_example_refuses_an_unknown_key() {
    for file in examples() {
        let text = std::fs::read_to_string(&file).unwrap();
        let doc: toml::Value = toml::from_str(&text).unwrap();
        let mut paths = Vec::new();
        tables(&doc, String::new(), &mut paths);
        for path in paths {
            let mut changed = doc.clone();
            insert(&mut changed, &path, "zz_unknown_key");
            // Written next to the original so relative paths (file registries) resolve alike.
            let copy = repo().join("config").join(format!(
                ".unknown-key-{}",
                file.file_name().unwrap().to_string_lossy()
            ));
            std::fs::write(&copy, toml::to_string(&changed).unwrap()).unwrap();
            let (code, stderr) = gateway::check(&copy);
            let _ = std::fs::remove_file(&copy);
            assert_eq!(
                code,
                2,
                "{} with an unknown key in [{path}] was accepted",
                file.display()
            );
            let expected = if path.is_empty() {
                "zz_unknown_key".to_owned()
            } else {
                format!("{path}.zz_unknown_key")
            };
            assert!(
                stderr.contains(&expected),
                "{}: [{path}]: error does not name {expected}:\n{stderr}",
                file.display()
            );
        }
    }
}

#[test]
fn architecture_names_only_existing_crates() {
    let text = std::fs::read_to_string(repo().join("ARCHITECTURE.md")).unwrap();
    let mut named = 0;
    for word in
        text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '/' || c == '-' || c == '_'))
    {
        if let Some(rest) = word
            .strip_prefix("crates/")
            .or_else(|| word.strip_prefix("registries/"))
        {
            let dir = word.split('/').take(2).collect::<Vec<_>>().join("/");
            if !rest.is_empty() {
                assert!(
                    repo().join(&dir).join("Cargo.toml").exists(),
                    "ARCHITECTURE.md names {dir}, which does not exist"
                );
                named += 1;
            }
        }
    }
    assert!(
        named >= 8,
        "ARCHITECTURE.md should map every crate ({named} named)"
    );
}
