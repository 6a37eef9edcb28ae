//! Last-known-good snapshots on disk (`[state] dir`).
//!
//! Each source's set is written, whenever it changes, to `<dir>/<registry>/<service>.json`
//! (names made file-safe) atomically: write a temp file, fsync, rename. The file carries a
//! format version and the time it was saved. On start the cache loads each source's file,
//! if younger than `max_stale_age`, before the first sync, and serves it marked stale: a
//! gateway restarted during a registry outage still routes.
//!
//! Writes go through one writer task that coalesces bursts, so the actors never wait on
//! the disk.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use switchyard_registry::Endpoint;
use tokio::sync::mpsc;

/// The on-disk format version.
const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Saved<E> {
    version: u32,
    saved_at_unix_ms: u64,
    registry: String,
    service: String,
    endpoints: Vec<E>,
}

/// One save, as the actor hands it to the writer task.
struct Save {
    saved_at_unix_ms: u64,
    registry: String,
    service: String,
    endpoints: Vec<Arc<Endpoint>>,
}

impl Save {
    fn to_bytes(&self) -> serde_json::Result<Vec<u8>> {
        let saved = Saved {
            version: VERSION,
            saved_at_unix_ms: self.saved_at_unix_ms,
            registry: self.registry.clone(),
            service: self.service.clone(),
            endpoints: self.endpoints.iter().map(|e| &**e).collect(),
        };
        serde_json::to_vec_pretty(&saved)
    }
}

/// Where and for how long snapshots are kept.
#[derive(Clone, Debug)]
pub struct StateStore {
    dir: PathBuf,
    max_age: Duration,
    writer: mpsc::UnboundedSender<(PathBuf, Save)>,
}

impl StateStore {
    /// A store in `dir` (created if missing) whose files older than `max_age` are ignored.
    /// Must be called inside a Tokio runtime (it starts the writer task).
    pub fn open(dir: PathBuf, max_age: Duration) -> std::io::Result<StateStore> {
        std::fs::create_dir_all(&dir)?;
        let (writer, mut rx) = mpsc::unbounded_channel::<(PathBuf, Save)>();
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch: HashMap<PathBuf, Save> = HashMap::from([first]);
                while let Ok((path, save)) = rx.try_recv() {
                    batch.insert(path, save);
                }
                let result = tokio::task::spawn_blocking(move || {
                    for (path, save) in batch {
                        let written = save
                            .to_bytes()
                            .map_err(std::io::Error::other)
                            .and_then(|bytes| write_atomically(&path, &bytes));
                        if let Err(error) = written {
                            tracing::warn!(path = %path.display(), "cannot save the last good set: {error}");
                        }
                    }
                })
                .await;
                if result.is_err() {
                    return;
                }
            }
        });
        Ok(StateStore {
            dir,
            max_age,
            writer,
        })
    }

    fn path(&self, registry: &str, service: &str) -> PathBuf {
        self.dir
            .join(safe(registry))
            .join(format!("{}.json", safe(service)))
    }

    /// Saves a source's current set (asynchronously: the writer task serializes and
    /// writes it, and a burst of saves of one source writes the last).
    pub fn save(&self, registry: &str, service: &str, endpoints: Vec<Arc<Endpoint>>) {
        let save = Save {
            saved_at_unix_ms: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis() as u64,
            registry: registry.to_owned(),
            service: service.to_owned(),
            endpoints,
        };
        let _ = self.writer.send((self.path(registry, service), save));
    }

    /// Loads a source's saved set, if there is one of this format, younger than the
    /// maximum age. Returns the set and when it was saved.
    pub fn load(&self, registry: &str, service: &str) -> Option<(Vec<Endpoint>, SystemTime)> {
        let path = self.path(registry, service);
        let bytes = std::fs::read(&path).ok()?;
        let saved: Saved<Endpoint> = match serde_json::from_slice(&bytes) {
            Ok(saved) => saved,
            Err(error) => {
                tracing::warn!(path = %path.display(), "ignoring an unreadable snapshot: {error}");
                return None;
            }
        };
        let saved_at = SystemTime::UNIX_EPOCH + Duration::from_millis(saved.saved_at_unix_ms);
        let age = SystemTime::now()
            .duration_since(saved_at)
            .unwrap_or_default();
        if saved.version != VERSION || saved.registry != registry || saved.service != service {
            return None;
        }
        if age > self.max_age {
            tracing::info!(path = %path.display(), ?age, "snapshot too old, not loaded");
            return None;
        }
        Some((saved.endpoints, saved_at))
    }
}

/// A file-name-safe rendering: alphanumerics, `-`, `_` and `.` kept, the rest as `%XX`.
fn safe(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_') || (b == b'.' && !out.is_empty()) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("json.tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_names() {
        assert_eq!(safe("shop/orders"), "shop%2Forders");
        assert_eq!(safe("_http._tcp.a.example"), "_http._tcp.a.example");
        assert_eq!(safe(".."), "%2E.");
    }

    #[tokio::test]
    async fn saves_and_loads_within_max_age() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path().to_path_buf(), Duration::from_secs(60)).unwrap();
        let endpoints = vec![Endpoint::new("127.0.0.1:9".parse().unwrap()).with_weight(3)];
        store.save(
            "k8s",
            "shop/orders",
            endpoints.iter().cloned().map(Arc::new).collect(),
        );
        let mut loaded = None;
        for _ in 0..100 {
            loaded = store.load("k8s", "shop/orders");
            if loaded.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(loaded.expect("saved").0, endpoints);
        assert!(store.load("k8s", "other").is_none());
        let strict = StateStore::open(dir.path().to_path_buf(), Duration::ZERO).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert!(strict.load("k8s", "shop/orders").is_none(), "too old");
    }
}
