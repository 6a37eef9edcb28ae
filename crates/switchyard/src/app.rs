//! The running gateway: one config generation at a time, swapped on reload.
//!
//! A reload reads and validates the whole file first; an invalid one is refused and the
//! running generation stays untouched. A valid one reuses every registry whose table did
//! not change and every upstream whose sources did not change (so nothing resyncs for
//! nothing), then swaps the route table in one atomic store: requests in flight finish on
//! the table they started with.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use switchyard_policy::Hub;
use switchyard_proxy::access_log::AccessLog;
use switchyard_proxy::{Proxy, ProxySettings, Table};
use switchyard_registry::ConfigIssue;
use switchyard_upstream::{StateStore, UpstreamCache};

use crate::config::Config;
use crate::config_source::{self, watcher, Snapshot};
use crate::history::{Sample, INTERVAL};
use crate::load::{base_dir, Loader};
use crate::plan::{self, BuiltRegistry, Plan};

/// What the admin API reads about the current generation.
pub struct Current {
    /// The running config's settings, without the tables a generation is built from (see
    /// [`settings_only`]).
    pub config: Config,
    /// Its registries.
    pub registries: BTreeMap<String, BuiltRegistry>,
}

/// The gateway.
pub struct App {
    config_path: PathBuf,
    loader: Loader,
    /// The data plane.
    pub proxy: Arc<Proxy>,
    current: Mutex<Current>,
    /// When the process started.
    pub started: Instant,
    /// Successful reloads.
    pub reloads: AtomicU64,
    /// Refused reloads.
    pub reload_failures: AtomicU64,
    reloading: tokio::sync::Mutex<()>,
    state: Option<StateStore>,
    /// The fleet config source's status (state "off" without `[config_source]`).
    pub config_source: Arc<config_source::Status>,
    /// The TLS listener's certificates, reloaded with the config.
    pub tls: Option<switchyard_proxy::tls::TlsConfig>,
    /// The last 15 minutes, sampled each second (the dashboard's charts, windowed rates).
    pub history: crate::history::History,
}

impl App {
    /// Starts the first generation from `plan` (loaded by `loader`, whose policy hub the app
    /// keeps for every later generation). Must run inside the Tokio runtime.
    pub fn start(config_path: PathBuf, loader: Loader, plan: Plan) -> Arc<App> {
        let state = plan.config.state.as_ref().and_then(|s| {
            let dir = base_dir(&config_path).join(&s.dir);
            match StateStore::open(dir.clone(), s.max_stale_age) {
                Ok(store) => Some(store),
                Err(error) => {
                    tracing::error!(dir = %dir.display(), "state directory unusable, running without snapshots: {error}");
                    None
                }
            }
        });
        let cache = Arc::new(UpstreamCache::start(plan.upstreams, None, state.as_ref()));
        let options = plan.upstream_options;
        let table = Table::new(
            plan.routes,
            cache,
            &|name| options.get(name).cloned().unwrap_or_default(),
            None,
        )
        .expect("validated plans only name known upstreams");
        let server = &plan.config.server;
        let settings = ProxySettings {
            connect_timeout: server.connect_timeout,
            pool_idle_timeout: server.pool_idle_timeout,
            pool_max_idle_per_endpoint: server.pool_max_idle_per_endpoint,
            max_uri_bytes: server.max_uri_bytes.0 as usize,
            max_body_bytes: server.max_body.0,
            body_idle_timeout: server.body_idle_timeout,
            max_in_flight: server.max_in_flight,
            trusted_proxies: server
                .trusted_proxies
                .iter()
                .filter_map(|c| switchyard_proxy::limits::Cidr::parse(c).ok())
                .collect(),
            upgrade_idle_timeout: server.upgrade_idle_timeout,
            path_normalization: server.path_normalization.to_proxy(),
        };
        let access_log = plan.config.log.access.then(AccessLog::stdout);
        let tls = plan.config.server.tls.as_ref().and_then(|tls| {
            let spec = plan::tls_spec(tls, base_dir(&config_path)).ok()?;
            switchyard_proxy::tls::TlsConfig::load(&spec)
                .map_err(|error| tracing::error!("TLS: {error}"))
                .ok()
        });
        let tracer = plan.config.tracing.as_ref().and_then(|tracing| {
            crate::telemetry::start(tracing)
                .map_err(|error| tracing::error!("running without tracing: {error}"))
                .ok()
        });
        let proxy = Arc::new(Proxy::new(table, &settings, access_log).with_tracer(tracer));
        let source_status = config_source::Status::new(plan.config.config_source.as_ref());
        let app = Arc::new(App {
            config_source: Arc::new(source_status),
            config_path,
            loader,
            proxy,
            current: Mutex::new(Current {
                config: settings_only(plan.config),
                registries: plan.registries,
            }),
            started: Instant::now(),
            reloads: AtomicU64::new(0),
            reload_failures: AtomicU64::new(0),
            reloading: tokio::sync::Mutex::new(()),
            state,
            tls,
            history: crate::history::History::default(),
        });
        if let Some(source) = app.with_current(|c| c.config.config_source.clone()) {
            let base_dir = base_dir(&app.config_path).to_path_buf();
            watcher::spawn(source, base_dir, app.config_source.clone(), app.clone());
        }
        spawn_history(Arc::downgrade(&app));
        app
    }

    /// The gateway's state now, as a history sample (routes' counters, upstreams' health and
    /// serving tier, registries' states).
    pub fn history_sample(&self) -> Sample {
        let table = self.proxy.table();
        let routes = table
            .route_metrics()
            .map(|(spec, metrics)| (spec.name.clone(), metrics.sample()))
            .collect();
        let upstreams = table
            .cache()
            .iter()
            .map(|upstream| {
                let snapshot = upstream.snapshot();
                let healthy = snapshot.endpoints.iter().filter(|e| e.healthy).count();
                let tier = snapshot
                    .serving_tier
                    .map(|t| format!("{}.{}", t.source, t.endpoint));
                (
                    upstream.name().to_owned(),
                    healthy,
                    snapshot.endpoints.len(),
                    tier,
                )
            })
            .collect();
        let registries = self.with_current(|current| {
            current
                .registries
                .iter()
                .map(|(name, built)| {
                    let status = table.cache().registry_status(name, built.kind);
                    (
                        name.clone(),
                        status.state.as_str().to_owned(),
                        built.metrics.updates(),
                    )
                })
                .collect()
        });
        Sample {
            at: crate::history::unix_now(),
            routes,
            upstreams,
            registries,
        }
    }

    /// The policy state shared by every generation (analytics, caches, rate-limit buckets).
    pub fn hub(&self) -> &Arc<Hub> {
        &self.loader.hub
    }

    /// Runs `f` on the current generation's config and registries.
    pub fn with_current<T>(&self, f: impl FnOnce(&Current) -> T) -> T {
        f(&self.current.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Re-reads the config file and, if it is valid, switches to it (merged with the
    /// running generation's etcd objects when it has a config source).
    pub async fn reload(&self) -> Result<(), Vec<ConfigIssue>> {
        self.reload_with(None).await
    }

    /// The etcd objects the running generation was built with.
    pub fn config_source_snapshot(&self) -> Option<Arc<Snapshot>> {
        self.with_current(|c| c.config.config_source.as_ref()?.snapshot.clone())
    }

    /// Re-reads the file, merges `snapshot` (a change from the fleet config source) over
    /// it and, if the result is valid, switches to it exactly as a reload does. When it is
    /// refused, the running generation (with its older snapshot) stays.
    pub async fn apply_config_source(
        &self,
        snapshot: Arc<Snapshot>,
    ) -> Result<(), Vec<ConfigIssue>> {
        self.reload_with(Some(snapshot)).await
    }

    async fn reload_with(&self, snapshot: Option<Arc<Snapshot>>) -> Result<(), Vec<ConfigIssue>> {
        let _one_at_a_time = self.reloading.lock().await;
        let previous = self.with_current(|c| c.registries.clone());
        let overlay = snapshot.or_else(|| self.config_source_snapshot());
        let loaded = self
            .loader
            .load_with(&self.config_path, Some(&previous), overlay.as_ref());
        let plan = match loaded {
            Ok(plan) => plan,
            Err(issues) => {
                self.reload_failures.fetch_add(1, Ordering::Relaxed);
                for issue in &issues {
                    tracing::error!("reload refused, keeping the running config: {issue}");
                }
                return Err(issues);
            }
        };
        let old_config = self.with_current(|c| c.config.clone());
        warn_restart_only(&old_config, &plan.config);
        let old_table = self.proxy.table();
        let cache = Arc::new(UpstreamCache::start(
            plan.upstreams,
            Some(old_table.cache()),
            self.state.as_ref(),
        ));
        let options = plan.upstream_options;
        let table = Table::new(
            plan.routes,
            cache,
            &|name| options.get(name).cloned().unwrap_or_default(),
            Some(&old_table),
        )
        .expect("validated plans only name known upstreams");
        self.proxy.set_table(table);
        if let (Some(live), Some(tls)) = (&self.tls, &plan.config.server.tls) {
            match plan::tls_spec(tls, base_dir(&self.config_path))
                .and_then(|spec| live.reload(&spec))
            {
                Ok(()) => tracing::info!("TLS certificates reloaded"),
                Err(error) => {
                    tracing::error!("TLS certificates not reloaded, keeping the old ones: {error}")
                }
            }
        }
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Current {
            config: settings_only(plan.config),
            registries: plan.registries,
        };
        self.reloads.fetch_add(1, Ordering::Relaxed);
        // The parse and the replaced generation are garbage now; give their pages back.
        switchyard_heap::release_free_memory();
        tracing::info!(path = %self.config_path.display(), "config reloaded");
        Ok(())
    }
}

/// The fleet config watcher reaches the app only through this.
impl watcher::Target for App {
    fn running(&self) -> Option<Arc<Snapshot>> {
        self.config_source_snapshot()
    }

    async fn apply(&self, snapshot: Arc<Snapshot>) -> Result<(), Vec<ConfigIssue>> {
        self.apply_config_source(snapshot).await
    }
}

/// `config` without its registry, upstream, route and policy tables: once the generation is
/// built from them nothing reads them again (a reload decodes the file afresh, and compares
/// only the settings, [`warn_restart_only`]). At 10,000 routes they were ~4 MiB kept for
/// nothing.
fn settings_only(mut config: Config) -> Config {
    config.registries.clear();
    config.upstreams.clear();
    config.routes = Vec::new();
    config.policy_sections.clear();
    config.broken_upstreams.clear();
    config
}

/// Settings that only a restart applies; a reload that changes them says so.
fn warn_restart_only(old: &Config, new: &Config) {
    let changed = [
        ("server.listen", old.server.listen != new.server.listen),
        (
            "server.tls_listen",
            old.server.tls_listen != new.server.tls_listen,
        ),
        ("server.workers", old.server.workers != new.server.workers),
        ("admin.listen", old.admin.listen != new.admin.listen),
        ("log", old.log != new.log),
        ("state", old.state != new.state),
        ("tracing", old.tracing != new.tracing),
        ("server timeouts and pool", {
            let (a, b) = (&old.server, &new.server);
            a.connect_timeout != b.connect_timeout
                || a.header_read_timeout != b.header_read_timeout
                || a.pool_idle_timeout != b.pool_idle_timeout
                || a.pool_max_idle_per_endpoint != b.pool_max_idle_per_endpoint
        }),
    ];
    for (what, differs) in changed {
        if differs {
            tracing::warn!("{what} changed: applied at the next restart, not by a reload");
        }
    }
}

/// Samples the app into its history every [`INTERVAL`] while it lives.
fn spawn_history(app: std::sync::Weak<App>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            let Some(app) = app.upgrade() else { return };
            let sample = app.history_sample();
            app.history.push(sample);
        }
    });
}
