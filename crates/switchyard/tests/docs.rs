//! The user reference stays true:
//! - docs/configuration.md documents every key of `switchyard config schema` (the schema is
//!   derived from the config structs, so a key added to a struct fails here, by name, until
//!   it is documented), and no key the schema does not have;
//! - every relative link in README.md, ARCHITECTURE.md, SECURITY.md, docs/ and
//!   registries/*/README.md resolves (the file, and the heading of a `#fragment`);
//! - no file of the repository sends readers to a document outside it.
//!
//! `SWITCHYARD_BLESS_DOCS=1 cargo nextest run -p switchyard --test docs` rewrites the
//! generated reference of docs/configuration.md (between its `reference:begin` and
//! `reference:end` markers) from the schema.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const BEGIN: &str = "<!-- reference:begin (generated from `switchyard config schema`; see crates/switchyard/tests/docs.rs) -->";
const END: &str = "<!-- reference:end -->";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn schema() -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["config", "schema"])
        .output()
        .expect("run switchyard config schema");
    assert!(output.status.success());
    serde_json::from_slice(&output.stdout).expect("JSON")
}

// === the reference, generated from the schema ===

/// One documented key: its table (as a TOML header), name, type, default, meaning.
#[derive(Debug)]
struct Row {
    table: String,
    key: String,
    kind: String,
    default: String,
    meaning: String,
}

/// `schema` without its `null` alternative (an `Option`).
fn unwrap_null(schema: &Value) -> &Value {
    for combinator in ["anyOf", "oneOf"] {
        if let Some(list) = schema.get(combinator).and_then(Value::as_array) {
            let non_null: Vec<&Value> = list
                .iter()
                .filter(|s| s.get("type") != Some(&Value::from("null")))
                .collect();
            if non_null.len() == 1 && list.len() == 2 {
                return non_null[0];
            }
        }
    }
    schema
}

fn is_table(schema: &Value) -> bool {
    schema.get("properties").is_some_and(Value::is_object)
}

fn describe_type(schema: &Value) -> String {
    let schema = unwrap_null(schema);
    if let Some(value) = schema.get("const") {
        return format!("`{value}`");
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        let values: Vec<String> = values
            .iter()
            .filter(|v| !v.is_null())
            .map(|v| format!("`{}`", v.as_str().map_or(v.to_string(), str::to_owned)))
            .collect();
        return values.join(" \\| ");
    }
    for combinator in ["anyOf", "oneOf"] {
        if let Some(list) = schema.get(combinator).and_then(Value::as_array) {
            let kinds: BTreeSet<String> = list
                .iter()
                .filter(|s| s.get("type") != Some(&Value::from("null")))
                .map(describe_type)
                .collect();
            return kinds.into_iter().collect::<Vec<_>>().join(" or ");
        }
    }
    let names: Vec<&str> = match schema.get("type") {
        Some(Value::String(name)) => vec![name.as_str()],
        Some(Value::Array(names)) => names
            .iter()
            .filter_map(Value::as_str)
            .filter(|n| *n != "null")
            .collect(),
        _ => return "any".into(),
    };
    names
        .iter()
        .map(|name| match *name {
            "array" => {
                let items = schema.get("items").map_or("any".into(), describe_type);
                format!("array of {items}")
            }
            "object" if is_table(schema) => "table".into(),
            "object" => match schema.get("additionalProperties") {
                Some(Value::Object(values)) if !values.is_empty() => {
                    format!("table of {}", describe_type(&Value::Object(values.clone())))
                }
                _ => "table".into(),
            },
            other => other.into(),
        })
        .collect::<Vec<_>>()
        .join(" or ")
}

/// The default: the schema's own, else the doc comment's "Default ..." sentence.
fn describe_default(schema: &Value, meaning: &str) -> String {
    if let Some(value) = schema.get("default").filter(|v| !v.is_null()) {
        if !(value.as_object().is_some_and(|o| !o.is_empty())
            || value.is_array() && value.as_array().is_some_and(|a| !a.is_empty()))
        {
            return format!(
                "`{}`",
                value.as_str().map_or(value.to_string(), str::to_owned)
            );
        }
    }
    if let Some(at) = meaning.find("Default") {
        let rest = &meaning[at + "Default".len()..];
        let rest = rest.trim_start_matches([':', ' ']);
        let end = rest.find(". ").unwrap_or(rest.len());
        return rest[..end].trim_end_matches('.').to_owned();
    }
    "—".into()
}

fn one_line(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

/// Walks one table's properties, adding a row per key and recursing into sub-tables.
fn walk(table: &str, schema: &Value, rows: &mut Vec<Row>) {
    let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
        return;
    };
    // A table whose schema allows any key beyond its properties (e.g. a registry type
    // without a settings schema) is documented by hand.
    for (key, property) in properties {
        let meaning = one_line(
            property
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or(""),
        );
        let inner = unwrap_null(property);
        rows.push(Row {
            table: table.to_owned(),
            key: key.clone(),
            kind: describe_type(property),
            default: describe_default(property, &meaning),
            meaning,
        });
        let child = |header: String| header;
        let plain = table
            .trim_start_matches('[')
            .trim_end_matches(']')
            .trim_start_matches('[');
        let plain = plain.split(']').next().unwrap_or(plain);
        let path = if plain.is_empty() {
            key.clone()
        } else {
            format!("{plain}.{key}")
        };
        if is_table(inner) {
            walk(&child(format!("[{path}]")), inner, rows);
        } else if let Some(items) = inner.get("items").map(unwrap_null).filter(|s| is_table(s)) {
            walk(&format!("[[{path}]]"), items, rows);
        } else if let Some(values) = inner.get("additionalProperties") {
            let values = unwrap_null(values);
            if is_table(values) {
                walk(&format!("[{path}.<name>]"), values, rows);
            } else if let Some(variants) = values.get("oneOf").and_then(Value::as_array) {
                for variant in variants {
                    let kind = variant["properties"]["type"]["const"]
                        .as_str()
                        .unwrap_or("?");
                    walk(&format!("[{path}.<name>] type = \"{kind}\""), variant, rows);
                }
            }
        }
    }
}

fn rows(schema: &Value) -> Vec<Row> {
    let mut rows = Vec::new();
    walk("", schema, &mut rows);
    rows
}

/// The generated reference: a heading and a table per config table.
fn reference(rows: &[Row]) -> String {
    let mut by_table: BTreeMap<&str, Vec<&Row>> = BTreeMap::new();
    let mut order = Vec::new();
    for row in rows {
        if !by_table.contains_key(row.table.as_str()) {
            order.push(row.table.as_str());
        }
        by_table.entry(&row.table).or_default().push(row);
    }
    let mut out = String::new();
    for table in order {
        let title = if table.is_empty() { "Top level" } else { table };
        out.push_str(&format!(
            "\n### `{title}`\n\n| key | type | default | meaning |\n| --- | --- | --- | --- |\n"
        ));
        for row in &by_table[table] {
            out.push_str(&format!(
                "| `{}` | {} | {} | {} |\n",
                row.key, row.kind, row.default, row.meaning
            ));
        }
    }
    out
}

/// (table, key) pairs documented in a reference text.
fn documented(text: &str) -> BTreeSet<(String, String)> {
    let mut keys = BTreeSet::new();
    let mut table = None;
    for line in text.lines() {
        if let Some(title) = line.strip_prefix("### `").and_then(|l| l.strip_suffix('`')) {
            table = Some(if title == "Top level" {
                String::new()
            } else {
                title.to_owned()
            });
        } else if let (Some(table), Some(rest)) = (&table, line.strip_prefix("| `")) {
            if let Some((key, _)) = rest.split_once("` |") {
                keys.insert((table.clone(), key.to_owned()));
            }
        }
    }
    keys
}

#[test]
fn configuration_md_documents_every_key() {
    let path = repo().join("docs/configuration.md");
    let text = std::fs::read_to_string(&path).expect("docs/configuration.md");
    let (Some(begin), Some(end)) = (text.find(BEGIN), text.find(END)) else {
        panic!("docs/configuration.md lacks the markers {BEGIN} ... {END}");
    };
    let rows = rows(&schema());
    assert!(rows.len() > 50, "the schema walk found {} keys", rows.len());
    let generated = reference(&rows);
    if std::env::var_os("SWITCHYARD_BLESS_DOCS").is_some() {
        let updated = format!("{}{BEGIN}\n{generated}\n{}", &text[..begin], &text[end..]);
        std::fs::write(&path, updated).unwrap();
        println!(
            "docs/configuration.md: reference rewritten ({} keys)",
            rows.len()
        );
        return;
    }
    let have = documented(&text[begin..end]);
    let want: BTreeSet<(String, String)> = rows
        .iter()
        .map(|r| (r.table.clone(), r.key.clone()))
        .collect();
    let mut problems = Vec::new();
    for (table, key) in want.difference(&have) {
        problems.push(format!("undocumented: `{key}` of `{table}`"));
    }
    for (table, key) in have.difference(&want) {
        problems.push(format!(
            "documented but not in the schema: `{key}` of `{table}`"
        ));
    }
    for row in &rows {
        if row.meaning.is_empty() {
            problems.push(format!(
                "no meaning: `{}` of `{}` (give its struct field a doc comment)",
                row.key, row.table
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "docs/configuration.md is out of date with the config structs:\n  {}\n\
         Document the key (a doc comment on its field states meaning and default), then run\n  \
         SWITCHYARD_BLESS_DOCS=1 cargo nextest run -p switchyard --test docs\n\
         to regenerate the reference section.",
        problems.join("\n  ")
    );
    println!("docs/configuration.md documents all {} keys", rows.len());
}

#[test]
fn schema_describes_every_section() {
    let schema = schema();
    let undescribed: Vec<&String> = schema["properties"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, s)| s.get("x-undescribed").is_some())
        .map(|(name, _)| name)
        .collect();
    assert!(
        undescribed.is_empty(),
        "sections without a typed schema (add them to crates/switchyard/src/schema.rs): {undescribed:?}"
    );
    // Every registry type describes its keys (else its table would accept anything and its
    // keys would be missing from docs/configuration.md without the docs test noticing).
    let variants = schema["properties"]["registries"]["additionalProperties"]["oneOf"]
        .as_array()
        .expect("one variant per registry type");
    assert!(variants.len() >= 6, "{variants:?}");
    let bare: Vec<&str> = variants
        .iter()
        .filter(|v| {
            v["properties"].as_object().map_or(0, |p| p.len()) <= 1
                || v["additionalProperties"] != Value::Bool(false)
        })
        .map(|v| v["properties"]["type"]["const"].as_str().unwrap_or("?"))
        .collect();
    assert!(
        bare.is_empty(),
        "registry types without a settings schema (implement RegistryFactory::settings_schema \
         with a JsonSchema derive on the settings struct): {bare:?}"
    );
}

// === links ===

/// The markdown files whose links must resolve.
fn markdown_files() -> Vec<PathBuf> {
    let root = repo();
    let mut files: Vec<PathBuf> = ["README.md", "ARCHITECTURE.md", "SECURITY.md"]
        .iter()
        .map(|f| root.join(f))
        .filter(|p| p.exists())
        .collect();
    let mut dirs = vec![root.join("docs")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                files.push(path);
            }
        }
    }
    for entry in std::fs::read_dir(root.join("registries")).unwrap() {
        let readme = entry.unwrap().path().join("README.md");
        if readme.exists() {
            files.push(readme);
        }
    }
    files.sort();
    files
}

/// Link targets in markdown text, outside code blocks and code spans.
fn links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        // Drop code spans.
        let mut plain = String::new();
        for (i, part) in line.split('`').enumerate() {
            if i % 2 == 0 {
                plain.push_str(part);
            }
        }
        let mut rest = plain.as_str();
        while let Some(at) = rest.find("](") {
            rest = &rest[at + 2..];
            let Some(end) = rest.find(')') else { break };
            out.push(rest[..end].trim().to_owned());
            rest = &rest[end..];
        }
    }
    out
}

/// GitHub's anchor of a heading: lower case, punctuation dropped, spaces to `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(text: &str) -> BTreeSet<String> {
    let mut fenced = false;
    let mut out = BTreeSet::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced && line.starts_with('#') {
            out.insert(slug(line.trim_start_matches('#')));
        }
    }
    out
}

#[test]
fn relative_links_resolve() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in markdown_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        for link in links(&text) {
            if link.contains("://") || link.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            let (target, fragment) = match link.split_once('#') {
                Some((target, fragment)) => (target, Some(fragment)),
                None => (link.as_str(), None),
            };
            let path = if target.is_empty() {
                file.clone()
            } else {
                file.parent().unwrap().join(target)
            };
            let shown = file
                .strip_prefix(repo())
                .unwrap_or(&file)
                .display()
                .to_string();
            if !path.exists() {
                broken.push(format!("{shown}: ({link}): no such file"));
                continue;
            }
            if let Some(fragment) = fragment {
                if path.extension().is_some_and(|e| e == "md") {
                    let target_text = std::fs::read_to_string(&path).unwrap();
                    if !anchors(&target_text).contains(fragment) {
                        broken.push(format!("{shown}: ({link}): no heading #{fragment}"));
                    }
                }
            }
        }
    }
    assert!(
        broken.is_empty(),
        "broken links:\n  {}",
        broken.join("\n  ")
    );
    assert!(checked > 10, "only {checked} links found");
    println!("{checked} relative links resolve");
}

#[test]
fn no_file_points_outside_the_repository() {
    // Spelled in pieces so that this file does not match itself.
    let needles = [
        ["..", "/shared"].concat(),
        ["DESIGN", ".md"].concat(),
        ["shared", " docs"].concat(),
    ];
    let output = Command::new("git")
        .args(["ls-files", "--cached", "--others", "--exclude-standard"])
        .current_dir(repo())
        .output()
        .expect("git ls-files");
    let mut found = Vec::new();
    for name in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(text) = std::fs::read_to_string(repo().join(name)) else {
            continue; // binary or gone
        };
        for needle in &needles {
            if text.contains(needle.as_str()) {
                found.push(format!("{name}: {needle}"));
            }
        }
    }
    assert!(
        found.is_empty(),
        "files pointing outside the repository:\n  {}",
        found.join("\n  ")
    );
}
