//! Building backends from config: the factory trait, the catalog of factories by `type`,
//! and the helper that decodes a `[registries.NAME]` table naming the bad key on error.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::{Registry, RegistryMetrics};

/// One config problem: the key path it is about and what is wrong.
///
/// Paths are relative to the table the check was given; callers prefix them
/// (`registries.etcd.` + `endpoints[1]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigIssue {
    /// Dotted key path, with `[i]` for array elements. Empty means "the table itself".
    pub path: String,
    /// What is wrong, for a human.
    pub message: String,
}

impl ConfigIssue {
    /// An issue about `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigIssue {
            path: path.into(),
            message: message.into(),
        }
    }

    /// The same issue with `prefix` put before its path.
    #[must_use]
    pub fn under(mut self, prefix: &str) -> Self {
        self.path = join_path(prefix, &self.path);
        self
    }
}

impl std::fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

fn join_path(prefix: &str, path: &str) -> String {
    match (prefix.is_empty(), path.is_empty()) {
        (true, _) => path.to_owned(),
        (_, true) => prefix.to_owned(),
        _ if path.starts_with('[') => format!("{prefix}{path}"),
        _ => format!("{prefix}.{path}"),
    }
}

/// What a factory gets besides the settings table.
#[derive(Clone, Debug)]
pub struct RegistryContext {
    /// The user's name for this registry (`k8s` in `[registries.k8s]`).
    pub name: String,
    /// Counters shared with the cache and exported in `/metrics`.
    pub metrics: Arc<RegistryMetrics>,
    /// The directory of the config file, against which relative paths resolve.
    pub base_dir: PathBuf,
}

impl RegistryContext {
    /// A context for tests and tools: fresh counters, the current directory.
    pub fn new(name: impl Into<String>) -> Self {
        RegistryContext {
            name: name.into(),
            metrics: Arc::default(),
            base_dir: PathBuf::from("."),
        }
    }

    /// Resolves a path from config against [`RegistryContext::base_dir`].
    pub fn resolve_path(&self, path: &str) -> PathBuf {
        let path = PathBuf::from(path);
        if path.is_absolute() {
            path
        } else {
            self.base_dir.join(path)
        }
    }
}

/// Builds one kind of backend from its `[registries.NAME]` table.
pub trait RegistryFactory: Send + Sync + 'static {
    /// The `type` this factory answers to.
    fn kind(&self) -> &'static str;

    /// Builds a backend. `settings` is the table without its `type` key. Every problem is
    /// reported, with its key path relative to the table. Building must not connect to
    /// anything: connections start on the first `watch`.
    fn build(
        &self,
        ctx: RegistryContext,
        settings: &serde_json::Value,
    ) -> Result<Arc<dyn Registry>, Vec<ConfigIssue>>;

    /// The JSON Schema of the settings table (without its `type` key), for
    /// `switchyard config schema`: derive `schemars::JsonSchema` on the struct the table
    /// decodes into and return `generator.subschema_for::<ThatStruct>()`, so that a key added
    /// to the struct shows in the schema and the docs test. Default: any table (a backend
    /// that describes nothing is not checked by the schema, only by `build`).
    fn settings_schema(&self, generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let _ = generator;
        schemars::json_schema!({"type": "object"})
    }
}

/// The factories the binary knows, by `type`.
#[derive(Default)]
pub struct Catalog {
    factories: BTreeMap<&'static str, Arc<dyn RegistryFactory>>,
}

impl Catalog {
    /// An empty catalog.
    pub fn new() -> Self {
        Catalog::default()
    }

    /// Adds a factory; a later one of the same kind replaces an earlier one.
    pub fn register(&mut self, factory: impl RegistryFactory) -> &mut Self {
        self.factories.insert(factory.kind(), Arc::new(factory));
        self
    }

    /// The factory for `kind`, if known.
    pub fn get(&self, kind: &str) -> Option<&Arc<dyn RegistryFactory>> {
        self.factories.get(kind)
    }

    /// The known kinds, sorted, for error messages.
    pub fn kinds(&self) -> Vec<&'static str> {
        self.factories.keys().copied().collect()
    }
}

/// Decodes a settings table into a typed config, reporting the key path of the first
/// error serde meets (`endpoints[1]`, `min_ttl`).
///
/// Use `#[serde(deny_unknown_fields)]` on the target type so that typos are refused.
pub fn decode_settings<T: DeserializeOwned>(value: &serde_json::Value) -> Result<T, ConfigIssue> {
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        let path = if path == "." { String::new() } else { path };
        ConfigIssue::new(path, err.into_inner().to_string())
    })
}

/// Decodes a settings table like [`decode_settings`], but names every bad key: after an
/// error, each key is decoded alone (so `T`'s fields must all be optional) and each that
/// fails so is reported; when none does, the first error is.
pub fn decode_settings_naming_all<T: DeserializeOwned>(
    value: &serde_json::Value,
) -> Result<T, Vec<ConfigIssue>> {
    let first = match decode_settings(value) {
        Ok(settings) => return Ok(settings),
        Err(first) => first,
    };
    let Some(table) = value.as_object() else {
        return Err(vec![first]);
    };
    let mut issues: Vec<ConfigIssue> = table
        .iter()
        .filter_map(|(key, item)| decode_settings::<T>(&serde_json::json!({ key: item })).err())
        .collect();
    if issues.is_empty() {
        issues.push(first);
    }
    Err(issues)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Settings {
        endpoints: Vec<String>,
        #[serde(default)]
        prefix: Option<String>,
    }

    #[test]
    fn decode_names_the_bad_key() {
        let err =
            decode_settings::<Settings>(&serde_json::json!({"endpoints": ["a", 3]})).unwrap_err();
        assert_eq!(err.path, "endpoints[1]");
        let err = decode_settings::<Settings>(&serde_json::json!({"endpoints": [], "prefx": "/"}))
            .unwrap_err();
        assert!(err.message.contains("unknown field `prefx`"), "{err}");
    }

    #[test]
    fn issues_nest_under_prefixes() {
        let issue = ConfigIssue::new("endpoints[1]", "bad").under("registries.etcd");
        assert_eq!(issue.to_string(), "registries.etcd.endpoints[1]: bad");
        let issue = ConfigIssue::new("[0]", "bad").under("sources");
        assert_eq!(issue.path, "sources[0]");
        let issue = ConfigIssue::new("", "bad").under("registries.x");
        assert_eq!(issue.path, "registries.x");
    }

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Optional {
        count: Option<u32>,
        name: Option<String>,
    }

    #[test]
    fn naming_all_names_every_bad_key() {
        let paths = |value: serde_json::Value| -> Vec<String> {
            match decode_settings_naming_all::<Optional>(&value) {
                Ok(_) => vec![],
                Err(issues) => issues.into_iter().map(|i| i.path).collect(),
            }
        };
        assert!(paths(serde_json::json!({"count": 1, "name": "a"})).is_empty());
        assert_eq!(
            paths(serde_json::json!({"count": "x", "name": 3, "nmae": "a"})),
            ["count", "name", "nmae"]
        );
        // Not a table: the one error.
        assert_eq!(paths(serde_json::json!(3)), [""]);
    }
}
