//! Reading the fleet config from etcd: a client opened by `switchyard-etcd`'s
//! [`connect`](switchyard_etcd::connect) (the registry backend's, so both fail over and use TLS
//! alike), and one paged read of the prefix at one revision.

use std::path::Path;

use etcd_client::{Client, GetOptions};
use switchyard_etcd::keys::prefix_end;
use switchyard_etcd::ConnectSettings;

use super::merge::Snapshot;

pub use switchyard_etcd::REQUEST_TIMEOUT;

/// Opens a client on the first endpoint that answers (see [`switchyard_etcd::connect`]);
/// relative TLS file paths resolve against `base_dir`, the config file's directory.
pub async fn connect(settings: &ConnectSettings, base_dir: &Path) -> Result<Client, String> {
    let mut settings = settings.clone();
    for path in [&mut settings.ca, &mut settings.cert, &mut settings.key]
        .into_iter()
        .flatten()
    {
        *path = base_dir.join(&*path);
    }
    switchyard_etcd::connect(&settings)
        .await
        .map_err(|error| error.to_string())
}

/// Reads every object under the prefix at one revision (paged).
pub async fn read_all(client: &mut Client, prefix: &str) -> Result<Snapshot, String> {
    let key_prefix = format!("{prefix}/");
    let range_end = prefix_end(&key_prefix);
    let mut snapshot = Snapshot {
        prefix: prefix.to_owned(),
        ..Snapshot::default()
    };
    let mut from = key_prefix.clone().into_bytes();
    loop {
        let mut options = GetOptions::new()
            .with_range(range_end.clone())
            .with_limit(500);
        if snapshot.revision > 0 {
            options = options.with_revision(snapshot.revision);
        }
        let get = client.get(from.clone(), Some(options));
        let response = match tokio::time::timeout(REQUEST_TIMEOUT, get).await {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => return Err(format!("reading {key_prefix}: {error}")),
            Err(_) => return Err(format!("reading {key_prefix}: timed out")),
        };
        if snapshot.revision == 0 {
            snapshot.revision = response.header().map_or(0, |h| h.revision());
        }
        for kv in response.kvs() {
            if let Some(relative) = kv.key().strip_prefix(key_prefix.as_bytes()) {
                snapshot.objects.insert(
                    String::from_utf8_lossy(relative).into_owned(),
                    kv.value().to_vec(),
                );
            }
        }
        match response.kvs().last() {
            Some(last) if response.more() => {
                from = last.key().to_vec();
                from.push(0);
            }
            _ => return Ok(snapshot),
        }
    }
}
