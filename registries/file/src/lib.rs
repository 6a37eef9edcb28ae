//! The `file` registry: a watched file in Prometheus `file_sd` JSON format.
//!
//! ```json
//! [{"targets": ["127.0.0.1:9001", "127.0.0.1:9002"],
//!   "labels": {"__service__": "echo", "__weight__": "3", "zone": "a"}}]
//! ```
//!
//! Labels with meaning: `__service__` (required: the service the targets belong to),
//! `__weight__` (default 1), `__priority__` (default 0), `__zone__` or `zone`, `__protocol__`
//! (the endpoints' `protocol` label: `h2c`, `grpc`, ... for `protocol = "auto"` upstreams). Other labels
//! are kept as endpoint metadata.
//!
//! One watcher per registry (inotify through the `notify` crate on the file's directory,
//! so editors that replace the file by rename are seen, plus a stat check every `poll`
//! as a safety net) re-reads the file on change and publishes the parsed services to every
//! watched service. A file that does not parse keeps the last good set: watchers get an
//! error (the set goes stale, the error shows in `/api/registries`) until it parses again.
//! A target that is not `host:port`, or a group without `__service__`, is skipped and counted.

mod parse;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use futures::StreamExt;
use serde::Deserialize;
use switchyard_registry::{
    decode_settings, ConfigIssue, Endpoint, Registry, RegistryContext, RegistryError,
    RegistryFactory, ServiceQuery, Update, UpdateStream,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use parse::{parse_file_sd, Services};

/// Builds `type = "file"` registries.
#[derive(Debug, Default)]
pub struct FileFactory;

/// `[registries.NAME]` with `type = "file"`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// The watched file (Prometheus file_sd JSON, or YAML), relative to the config file.
    /// Required.
    path: String,
    /// Safety-net stat interval. Default 1 s.
    #[schemars(with = "String")]
    #[serde(default = "default_poll", with = "humantime_serde")]
    poll: Duration,
}

fn default_poll() -> Duration {
    Duration::from_secs(1)
}

impl RegistryFactory for FileFactory {
    fn kind(&self) -> &'static str {
        "file"
    }

    fn settings_schema(&self, generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        generator.subschema_for::<Settings>()
    }

    fn build(
        &self,
        ctx: RegistryContext,
        settings: &serde_json::Value,
    ) -> Result<Arc<dyn Registry>, Vec<ConfigIssue>> {
        let settings: Settings = decode_settings(settings).map_err(|e| vec![e])?;
        if settings.path.is_empty() {
            return Err(vec![ConfigIssue::new("path", "must not be empty")]);
        }
        if settings.poll.is_zero() {
            return Err(vec![ConfigIssue::new("poll", "must be more than 0")]);
        }
        let path = ctx.resolve_path(&settings.path);
        Ok(Arc::new(FileRegistry {
            ctx,
            path,
            poll: settings.poll,
            watcher: Mutex::new(None),
        }))
    }
}

/// The file's state as the watcher last saw it.
#[derive(Clone, Debug)]
enum FileState {
    /// Not read yet.
    Pending,
    /// Parsed.
    Loaded(Arc<Services>),
    /// Unreadable or unparsable now; `last_good` is kept.
    Failed { error: String },
}

/// A registry backed by one watched file.
pub struct FileRegistry {
    ctx: RegistryContext,
    path: PathBuf,
    poll: Duration,
    watcher: Mutex<Option<(watch::Receiver<FileState>, JoinHandle<()>)>>,
}

impl Drop for FileRegistry {
    fn drop(&mut self) {
        if let Some((_, task)) = self
            .watcher
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            task.abort();
        }
    }
}

impl FileRegistry {
    /// The shared watcher, started by the first `watch`.
    fn subscribe(&self) -> watch::Receiver<FileState> {
        let mut slot = self.watcher.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((rx, _)) = slot.as_ref() {
            return rx.clone();
        }
        let (tx, rx) = watch::channel(FileState::Pending);
        let task = tokio::spawn(watch_file(
            self.path.clone(),
            self.poll,
            self.ctx.clone(),
            tx,
        ));
        *slot = Some((rx.clone(), task));
        rx
    }
}

#[async_trait]
impl Registry for FileRegistry {
    fn kind(&self) -> &'static str {
        "file"
    }

    async fn watch(&self, query: &ServiceQuery) -> Result<UpdateStream, RegistryError> {
        let rx = self.subscribe();
        let service = query.service.clone();
        let stream = tokio_stream::wrappers::WatchStream::new(rx)
            .filter_map(move |state| {
                let item = match state {
                    FileState::Pending => None,
                    FileState::Failed { error } => Some(Err(RegistryError::unavailable(error))),
                    FileState::Loaded(services) => Some(Ok(match services.get(&service) {
                        Some(endpoints) => Update::reset(endpoints.iter().cloned()),
                        None => Update::DoesNotExist,
                    })),
                };
                futures::future::ready(item)
            })
            // An error ends the stream; the recover wrapper watches again after a backoff.
            .scan(false, |failed, item| {
                if *failed {
                    return futures::future::ready(None);
                }
                *failed = item.is_err();
                futures::future::ready(Some(item))
            });
        Ok(stream.boxed())
    }
}

/// How long to wait after a change event before reading, so that a file being written
/// is read whole.
const DEBOUNCE: Duration = Duration::from_millis(50);

/// Fingerprint used to notice a change when no inotify event came.
fn fingerprint(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Reads and parses the file whenever it may have changed, publishing each new result.
async fn watch_file(
    path: PathBuf,
    poll: Duration,
    ctx: RegistryContext,
    tx: watch::Sender<FileState>,
) {
    let (event_tx, mut events) = tokio::sync::mpsc::channel::<()>(1);
    let file_name = path.file_name().map(ToOwned::to_owned);
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let relevant = match &event {
            Ok(e) => {
                e.paths.is_empty()
                    || e.paths
                        .iter()
                        .any(|p| p.file_name() == file_name.as_deref())
            }
            Err(_) => true,
        };
        if relevant {
            let _ = event_tx.try_send(());
        }
    });
    // Keep the watcher alive for the task's lifetime; without inotify the poll still works.
    let _watcher = match watcher {
        Ok(mut w) => {
            use notify::Watcher;
            let dir = path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            if let Err(error) = w.watch(dir, notify::RecursiveMode::NonRecursive) {
                tracing::warn!(path = %path.display(), "cannot watch the directory, polling only: {error}");
            }
            Some(w)
        }
        Err(error) => {
            tracing::warn!("no file watcher available, polling only: {error}");
            None
        }
    };
    let mut seen: Option<Option<(SystemTime, u64)>> = None;
    let mut last_text: Option<String> = None;
    let mut ticker = tokio::time::interval(poll);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let print = fingerprint(&path);
        let forced = tokio::select! {
            _ = events.recv() => {
                // Let a writer finish (truncate, then write) before reading: debounce.
                tokio::time::sleep(DEBOUNCE).await;
                while events.try_recv().is_ok() {}
                true
            }
            _ = ticker.tick() => false,
        };
        let print_now = fingerprint(&path);
        if !forced && seen.as_ref() == Some(&print_now) && print == print_now {
            continue;
        }
        seen = Some(print_now);
        let state = match tokio::fs::read_to_string(&path).await {
            Err(error) => FileState::Failed {
                error: format!("cannot read {}: {error}", path.display()),
            },
            Ok(text) if Some(&text) == last_text.as_ref() => continue,
            Ok(text) => match parse_file_sd(&text, &ctx) {
                Ok(services) => {
                    last_text = Some(text);
                    FileState::Loaded(Arc::new(services))
                }
                Err(error) => {
                    last_text = None;
                    FileState::Failed {
                        error: format!("{}: {error}", path.display()),
                    }
                }
            },
        };
        if let FileState::Failed { error } = &state {
            tracing::warn!(registry = %ctx.name, "keeping the last good set: {error}");
            ctx.metrics.record_error();
        }
        if tx.send(state).is_err() {
            return;
        }
    }
}

/// The endpoints of each service of a parsed file.
pub type ServiceMap = BTreeMap<String, Vec<Endpoint>>;
