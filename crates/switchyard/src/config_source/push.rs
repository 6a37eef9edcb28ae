//! `switchyard config push|diff`: the comparison of a file's objects with what etcd holds
//! (values compared after parsing), its rendering for the terminal, and the writes of a push.
//! The command itself (its arguments, reading and checking the file) is `crate::config_cmd`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use etcd_client::{Client, Txn, TxnOp};
use serde_json::Value;

use super::etcd::REQUEST_TIMEOUT;
use super::merge::parse_document;

/// etcd's default limit of operations in one transaction (`--max-txn-ops`).
const MAX_TXN_OPS: usize = 128;

/// One object's fate in a push.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Not in etcd yet.
    Add(String),
    /// In etcd with another value: the line diff of the pretty JSON.
    Change(String, Vec<String>),
    /// In etcd only (deleted by `--prune`).
    Extra(String),
    /// The same in both.
    Same(String),
}

/// Compares a file's objects with etcd's (values compared after parsing, so a TOML
/// document equal to the JSON one is unchanged).
pub fn compare(file: &BTreeMap<String, Value>, etcd: &BTreeMap<String, Vec<u8>>) -> Vec<Change> {
    let mut changes = Vec::new();
    for (key, value) in file {
        match etcd.get(key) {
            None => changes.push(Change::Add(key.clone())),
            Some(raw) => match parse_document(raw) {
                Ok(current) if current == *value => changes.push(Change::Same(key.clone())),
                Ok(current) => changes.push(Change::Change(
                    key.clone(),
                    line_diff(&pretty(&current), &pretty(value)),
                )),
                Err(_) => changes.push(Change::Change(
                    key.clone(),
                    vec![
                        format!("- {}", String::from_utf8_lossy(raw)),
                        format!("+ {}", pretty(value)),
                    ],
                )),
            },
        }
    }
    for key in etcd.keys() {
        if !file.contains_key(key) {
            changes.push(Change::Extra(key.clone()));
        }
    }
    changes
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

/// A line diff (longest common subsequence): `- old`, `+ new` lines, unchanged lines left out.
fn line_diff(old: &str, new: &str) -> Vec<String> {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            i += 1;
            j += 1;
        } else if j < b.len() && (i == a.len() || lcs[i][j + 1] > lcs[i + 1][j]) {
            out.push(format!("+ {}", b[j].trim()));
            j += 1;
        } else {
            out.push(format!("- {}", a[i].trim()));
            i += 1;
        }
    }
    out
}

/// Renders a comparison for the terminal.
pub fn render_changes(prefix: &str, changes: &[Change], prune: bool) -> String {
    let mut out = String::new();
    let mut same = 0;
    for change in changes {
        match change {
            Change::Add(key) => {
                let _ = writeln!(out, "+ {prefix}/{key}");
            }
            Change::Change(key, lines) => {
                let _ = writeln!(out, "~ {prefix}/{key}");
                for line in lines {
                    let _ = writeln!(out, "    {line}");
                }
            }
            Change::Extra(key) if prune => {
                let _ = writeln!(out, "- {prefix}/{key}");
            }
            Change::Extra(key) => {
                let _ = writeln!(
                    out,
                    "  {prefix}/{key} (only in etcd: kept; --prune deletes it)"
                );
            }
            Change::Same(_) => same += 1,
        }
    }
    let _ = writeln!(out, "{same} unchanged");
    out
}

/// Writes the changes: one transaction when they fit, else definitions first (upstreams,
/// consumers, policies), then routes, then deletions, so that watchers see as few
/// half-applied states as possible.
pub async fn push_changes(
    client: &mut Client,
    prefix: &str,
    objects: &BTreeMap<String, Value>,
    changes: &[Change],
    prune: bool,
) -> Result<usize, String> {
    let mut puts_first = Vec::new();
    let mut puts_routes = Vec::new();
    let mut deletes = Vec::new();
    for change in changes {
        match change {
            Change::Add(key) | Change::Change(key, _) => {
                let op = TxnOp::put(format!("{prefix}/{key}"), pretty(&objects[key]), None);
                if key.starts_with("routes/") {
                    puts_routes.push(op);
                } else {
                    puts_first.push(op);
                }
            }
            Change::Extra(key) if prune => {
                deletes.push(TxnOp::delete(format!("{prefix}/{key}"), None));
            }
            _ => {}
        }
    }
    let ops: Vec<TxnOp> = puts_first
        .into_iter()
        .chain(puts_routes)
        .chain(deletes)
        .collect();
    let written = ops.len();
    let mut ops = ops.into_iter().peekable();
    while ops.peek().is_some() {
        let chunk: Vec<TxnOp> = ops.by_ref().take(MAX_TXN_OPS).collect();
        let txn = client.txn(Txn::new().and_then(chunk));
        match tokio::time::timeout(REQUEST_TIMEOUT, txn).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => return Err(format!("writing to etcd: {error}")),
            Err(_) => return Err("writing to etcd: timed out".into()),
        }
    }
    Ok(written)
}
#[cfg(test)]
mod tests {
    use super::super::merge::objects_of;
    use super::*;
    use serde_json::json;
    #[test]
    fn file_objects_and_diff() {
        let file = json!({"server": {"listen": "0.0.0.0:1"}, "registries": {"r": {}},
            "upstreams": {"a": {"balancer": "random"}},
            "routes": [{"name": "one", "upstream": "a"}, {"upstream": "a"}],
            "auth": {"jwt": {"secret": "s"}}});
        let objects = objects_of(&file).unwrap();
        let keys: Vec<&str> = objects.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["auth/jwt", "routes/one", "routes/route-1", "upstreams/a"]
        );

        let etcd: BTreeMap<String, Vec<u8>> = [
            ("upstreams/a", "balancer = \"random\""),
            ("routes/one", r#"{"name": "one", "upstream": "b"}"#),
            ("routes/old", "{}"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
        .collect();
        let changes = compare(&objects, &etcd);
        assert_eq!(
            changes,
            [
                Change::Add("auth/jwt".into()),
                Change::Change(
                    "routes/one".into(),
                    vec![
                        "- \"upstream\": \"b\"".into(),
                        "+ \"upstream\": \"a\"".into()
                    ]
                ),
                Change::Add("routes/route-1".into()),
                Change::Same("upstreams/a".into()),
                Change::Extra("routes/old".into()),
            ]
        );
        let text = render_changes("/p", &changes, true);
        assert!(
            text.contains("+ /p/auth/jwt\n~ /p/routes/one\n    - \"upstream\": \"b\"\n"),
            "{text}"
        );
        assert!(text.contains("- /p/routes/old\n1 unchanged\n"), "{text}");

        let bad = json!({"routes": [{"name": "a"}, {"name": "a"}, {"name": 3}], "upstreams": []});
        let issues: Vec<String> = objects_of(&bad)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            issues,
            [
                "routes[1].name: \"a\" names two routes",
                "routes[2].name: must be a string",
                "upstreams: must be a table"
            ]
        );
    }
}
