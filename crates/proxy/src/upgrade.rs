//! Protocol upgrades (WebSocket): a request asking to upgrade is forwarded with its
//! `Connection: upgrade` and `Upgrade` headers; only when the upstream answers 101 does the
//! gateway switch, joining the two upgraded connections into a byte tunnel that closes
//! after `idle` without traffic in either direction.

use std::time::Duration;

use http::header::{self, HeaderMap, HeaderValue};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `HTTP2-Settings`, sent with an h2c upgrade (RFC 7540 §3.2).
pub const HTTP2_SETTINGS: http::HeaderName = http::HeaderName::from_static("http2-settings");

/// What a route makes of an `Upgrade` offer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offer {
    /// Every protocol offered is one the route allows: forward it, tunnel after a 101.
    Allowed,
    /// `h2c` is offered: never forwarded (RFC 9113 §3.1 retired it; Envoy removes it too).
    /// The request goes on without its upgrade.
    H2c,
    /// A protocol the route does not allow, or an unreadable value: 403.
    Refused,
}

/// Judges an `Upgrade` value (`protocol[/version]`, comma-separated) against the route's
/// `upgrades` (lower case names).
pub fn offer(value: &HeaderValue, allowed: &[String]) -> Offer {
    let mut any = false;
    let mut refused = false;
    for element in value.as_bytes().split(|&b| b == b',') {
        let element = element.trim_ascii();
        if element.is_empty() {
            continue;
        }
        any = true;
        let name = element.split(|&b| b == b'/').next().unwrap_or_default();
        if name.eq_ignore_ascii_case(b"h2c") {
            return Offer::H2c;
        }
        refused |= !crate::grammar::token(name)
            || !allowed
                .iter()
                .any(|a| a.as_bytes().eq_ignore_ascii_case(name));
    }
    if any && !refused {
        Offer::Allowed
    } else {
        Offer::Refused
    }
}

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

    #[test]
    fn offers_are_judged_against_the_route() {
        let allowed = vec!["websocket".to_owned()];
        let offer = |v: &'static str| offer(&HeaderValue::from_static(v), &allowed);
        assert_eq!(offer("websocket"), Offer::Allowed);
        assert_eq!(offer("WebSocket"), Offer::Allowed);
        assert_eq!(offer("websocket/13"), Offer::Allowed);
        assert_eq!(offer("h2c"), Offer::H2c);
        assert_eq!(offer("websocket, H2C"), Offer::H2c);
        assert_eq!(offer("foo"), Offer::Refused);
        assert_eq!(offer("websocket, foo"), Offer::Refused);
        assert_eq!(offer("TLS/1.2"), Offer::Refused);
        assert_eq!(offer(""), Offer::Refused);
        assert_eq!(offer(" , "), Offer::Refused);
    }
}
