//! The watcher: reads the prefix at one revision, then watches from the next one, and offers
//! every change (one watch response plus whatever follows within [`SETTLE`]) to the running
//! gateway as a candidate [`Snapshot`]. It reaches the gateway only through [`Target`]: the
//! gateway applies or refuses a candidate; the watcher records the outcome in its [`Status`].
//! While etcd is unreachable the running snapshot stays and the watcher reconnects with
//! backoff; a reconnect re-reads the whole prefix.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{EventType, WatchOptions};
use switchyard_registry::{Backoff, ConfigIssue};

use super::etcd::{connect, read_all, REQUEST_TIMEOUT};
use super::merge::Snapshot;
use super::settings::ConfigSource;
use super::status::Status;

/// After a watch response, further responses arriving within this are taken together.
pub const SETTLE: Duration = Duration::from_millis(30);

/// What the watcher needs from the running gateway: the snapshot its generation was built
/// with, and a way to try a candidate (validated like a file reload; refused as a whole).
pub trait Target: Send + Sync + 'static {
    /// The etcd objects the running generation was built with (`None`: the file alone).
    fn running(&self) -> Option<Arc<Snapshot>>;
    /// Merges `snapshot` over the file and switches to the result if it is valid; else the
    /// running generation stays and the issues (naming etcd keys) come back.
    fn apply(
        &self,
        snapshot: Arc<Snapshot>,
    ) -> impl Future<Output = Result<(), Vec<ConfigIssue>>> + Send;
}

/// Starts watching `source` for `target`, recording the outcome in `status`. Relative TLS
/// paths resolve against `base_dir` (the config file's directory). Runs until the process
/// ends; must be called inside the Tokio runtime.
pub fn spawn<T: Target>(
    source: ConfigSource,
    base_dir: PathBuf,
    status: Arc<Status>,
    target: Arc<T>,
) {
    let watcher = Watcher {
        source,
        base_dir,
        status,
        target,
    };
    tokio::spawn(async move {
        let backoff = Backoff {
            max: Duration::from_secs(10),
            ..Backoff::default()
        };
        let mut attempt = 0;
        loop {
            let error = watcher.watch(&mut attempt).await;
            watcher.status.down(&error);
            let delay = backoff.delay(attempt, None);
            attempt = attempt.saturating_add(1);
            tracing::warn!(prefix = %watcher.source.prefix, ?delay, "config source: {error}; keeping the running config");
            tokio::time::sleep(delay).await;
        }
    });
}

struct Watcher<T> {
    source: ConfigSource,
    base_dir: PathBuf,
    status: Arc<Status>,
    target: Arc<T>,
}

impl<T: Target> Watcher<T> {
    /// One connection's life: read, offer, watch and offer each change, until it breaks.
    async fn watch(&self, attempt: &mut u32) -> String {
        let source = &self.source;
        let mut client = match connect(&source.connect, &self.base_dir).await {
            Ok(client) => client,
            Err(error) => return error,
        };
        let key_prefix = format!("{}/", source.prefix);
        loop {
            let mut snapshot = match read_all(&mut client, &source.prefix).await {
                Ok(snapshot) => snapshot,
                Err(error) => return error,
            };
            *attempt = 0;
            self.offer(&snapshot).await;
            let options = WatchOptions::new()
                .with_prefix()
                .with_start_revision(snapshot.revision + 1)
                .with_progress_notify();
            let mut watch_client = client.watch_client();
            let started = watch_client.watch(key_prefix.clone(), Some(options));
            let mut stream = match tokio::time::timeout(REQUEST_TIMEOUT, started).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => return format!("starting the watch: {error}"),
                Err(_) => return "starting the watch: timed out".into(),
            };
            'watching: loop {
                let mut changed = false;
                let mut wait: Option<Duration> = None;
                // One response, then whatever follows within SETTLE.
                loop {
                    let message = match wait {
                        None => stream.message().await,
                        Some(settle) => {
                            match tokio::time::timeout(settle, stream.message()).await {
                                Ok(message) => message,
                                Err(_) => break,
                            }
                        }
                    };
                    let response = match message {
                        Ok(Some(response)) => response,
                        Ok(None) => return "etcd closed the watch stream".into(),
                        Err(error) => return format!("watch: {error}"),
                    };
                    if response.canceled() {
                        tracing::info!(
                            compact_revision = response.compact_revision(),
                            reason = response.cancel_reason(),
                            "config source: etcd cancelled the watch; re-reading the prefix"
                        );
                        break 'watching;
                    }
                    if let Some(header) = response.header() {
                        snapshot.revision = snapshot.revision.max(header.revision());
                    }
                    for event in response.events() {
                        let Some(kv) = event.kv() else { continue };
                        let Some(relative) = kv.key().strip_prefix(key_prefix.as_bytes()) else {
                            continue;
                        };
                        let relative = String::from_utf8_lossy(relative).into_owned();
                        changed = true;
                        match event.event_type() {
                            EventType::Put => {
                                snapshot.objects.insert(relative, kv.value().to_vec());
                            }
                            EventType::Delete => {
                                snapshot.objects.remove(&relative);
                            }
                        }
                    }
                    if !changed {
                        break; // a progress notification
                    }
                    wait = Some(SETTLE);
                }
                if changed {
                    self.offer(&snapshot).await;
                }
            }
        }
    }

    /// Applies a snapshot unless it is the one running or the one last refused.
    async fn offer(&self, snapshot: &Snapshot) {
        let running = self.target.running();
        if running
            .as_ref()
            .is_some_and(|r| r.objects == snapshot.objects)
        {
            self.status.ok(snapshot.revision, snapshot.objects.len());
            return;
        }
        if self.status.was_refused(&snapshot.objects) {
            // Read again after a reconnect: still the refused objects, not tried twice.
            self.status.still_refused(snapshot.revision);
            return;
        }
        let candidate = Arc::new(snapshot.clone());
        match self.target.apply(candidate).await {
            Ok(()) => {
                tracing::info!(
                    revision = snapshot.revision,
                    objects = snapshot.objects.len(),
                    "config source: applied"
                );
                self.status
                    .applied(snapshot.revision, snapshot.objects.len());
            }
            Err(issues) => {
                tracing::error!(
                    revision = snapshot.revision,
                    errors = issues.len(),
                    "config source: change refused, keeping the running config"
                );
                self.status.refused(snapshot, &issues);
            }
        }
    }
}
