//! Loading a config file into a [`Plan`]: read the file, lay the fleet's etcd objects over it
//! (when it has a `[config_source]`), decode, plan. The [`Loader`] holds what every load of
//! the process shares: the registry catalog and the policy [`Hub`] (counters, caches and
//! rate-limit buckets that outlive config generations).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use switchyard_policy::Hub;
use switchyard_registry::{Catalog, ConfigIssue};

use crate::config;
use crate::config_source::{self, etcd, Origins, Snapshot};
use crate::plan::{self, BuiltRegistry, Plan};

pub use crate::catalog::catalog;

/// What every config load of the process shares.
pub struct Loader {
    /// The registry backends.
    pub catalog: Catalog,
    /// The policy state, one per process (see [`crate::policy`]).
    pub hub: Arc<Hub>,
}

impl Default for Loader {
    fn default() -> Self {
        Loader::new(catalog())
    }
}

impl Loader {
    /// A loader over `catalog`, with a fresh policy hub.
    pub fn new(catalog: Catalog) -> Loader {
        Loader {
            catalog,
            hub: Hub::new(),
        }
    }

    /// Reads, decodes and plans the config at `path`: the whole of `switchyard check`.
    pub fn load(
        &self,
        path: &Path,
        previous: Option<&BTreeMap<String, BuiltRegistry>>,
    ) -> Result<Plan, Vec<ConfigIssue>> {
        self.load_with(path, previous, None)
    }

    /// Like [`Loader::load`], with the objects of a fleet config source (etcd) merged over
    /// the file's when the file has a `[config_source]`; issues about those objects name
    /// their etcd keys.
    pub fn load_with(
        &self,
        path: &Path,
        previous: Option<&BTreeMap<String, BuiltRegistry>>,
        overlay: Option<&Arc<Snapshot>>,
    ) -> Result<Plan, Vec<ConfigIssue>> {
        let value = config::read(path)?;
        let overlay = overlay.filter(|_| value.get("config_source").is_some());
        let (value, origins, mut issues) = match overlay {
            Some(snapshot) => config_source::merge(&value, snapshot),
            None => (value, Origins::default(), Vec::new()),
        };
        let (mut config, decoded_issues) = config::decode(&value);
        issues.extend(decoded_issues);
        if let Some(source) = &mut config.config_source {
            source.snapshot = overlay.cloned();
        }
        match plan::build(config, &self.catalog, &self.hub, base_dir(path), previous) {
            Ok(plan) if issues.is_empty() => Ok(plan),
            Ok(_) => Err(origins.translate(issues)),
            Err(more) => {
                issues.extend(more);
                Err(origins.translate(issues))
            }
        }
    }

    /// Loads the plan the gateway starts with: the file merged with the etcd objects when the
    /// file has a `[config_source]` (waiting up to its `startup_timeout` for them), else the
    /// file alone. Prints one line about the config source on stderr. Errors are the file's own.
    pub fn startup_plan(&self, path: &Path) -> Result<Plan, Vec<ConfigIssue>> {
        let source = config::read(path)
            .ok()
            .and_then(|value| value.get("config_source").cloned())
            .and_then(|value| config_source::decode(&value).ok());
        let Some(source) = source else {
            return self.load(path, None);
        };
        let started = Instant::now();
        let base_dir = base_dir(path);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("start a Tokio runtime");
        let read = runtime.block_on(async {
            tokio::time::timeout(source.startup_timeout, async {
                let mut client = etcd::connect(&source.connect, base_dir).await?;
                etcd::read_all(&mut client, &source.prefix).await
            })
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {:?}", source.startup_timeout)))
        });
        drop(runtime);
        let place = format!("{}{}", source.connect.endpoints.join(","), source.prefix);
        match read {
            Ok(snapshot) => {
                let objects = snapshot.objects.len();
                let revision = snapshot.revision;
                match self.load_with(path, None, Some(&Arc::new(snapshot))) {
                    Ok(plan) => {
                        eprintln!(
                            "config: etcd {place}: {objects} objects at revision {revision}, synced in {:.2} s",
                            started.elapsed().as_secs_f64()
                        );
                        Ok(plan)
                    }
                    Err(issues) => {
                        for issue in &issues {
                            eprintln!("config: etcd {place}: refused: {issue}");
                        }
                        eprintln!("config: etcd {place}: revision {revision} refused; starting on the file alone");
                        self.load(path, None)
                    }
                }
            }
            Err(error) => {
                eprintln!("config: etcd {place}: not read ({error}); starting on the file alone, retrying in the background");
                self.load(path, None)
            }
        }
    }
}

/// The directory of the config file: relative paths in it resolve against this.
pub fn base_dir(config_path: &Path) -> &Path {
    config_path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}
