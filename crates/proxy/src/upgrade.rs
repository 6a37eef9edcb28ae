//! Protocol upgrades (WebSocket): a request asking to upgrade is forwarded with its
//! `Connection: upgrade` and `Upgrade` headers; only when the upstream answers 101 does the
//! gateway switch, joining the two upgraded connections into a byte tunnel that closes
//! after `idle` without traffic in either direction.

use std::time::Duration;

use http::header::{self, HeaderMap, HeaderValue};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The `Upgrade` value of a request that asks to upgrade (HTTP/1.1 `Connection: upgrade`
/// plus `Upgrade`), if it does.
pub fn requested(headers: &HeaderMap) -> Option<HeaderValue> {
    let wants = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    if wants {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    }
}

/// Puts the upgrade headers back after hop-by-hop stripping.
pub fn restore(headers: &mut HeaderMap, upgrade: HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, upgrade);
}

/// Joins the client's and the upstream's upgraded connections until either side closes or
/// nothing moves for `idle`.
pub async fn tunnel(client: OnUpgrade, upstream: OnUpgrade, idle: Duration) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(error) => {
            tracing::debug!("upgrade failed: {error}");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    let mut a = [0u8; 16 * 1024];
    let mut b = [0u8; 16 * 1024];
    loop {
        let step = tokio::time::timeout(idle, async {
            tokio::select! {
                read = client.read(&mut a) => match read {
                    Ok(0) | Err(_) => false,
                    Ok(n) => upstream.write_all(&a[..n]).await.is_ok(),
                },
                read = upstream.read(&mut b) => match read {
                    Ok(0) | Err(_) => false,
                    Ok(n) => client.write_all(&b[..n]).await.is_ok(),
                },
            }
        })
        .await;
        match step {
            Ok(true) => continue,
            Ok(false) => break,
            Err(_) => {
                tracing::debug!("upgraded connection idle for {idle:?}: closing");
                break;
            }
        }
    }
    let _ = client.shutdown().await;
    let _ = upstream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_upgrade_requests() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert_eq!(requested(&h).unwrap(), "websocket");
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        assert!(requested(&h).is_none());
    }
}
