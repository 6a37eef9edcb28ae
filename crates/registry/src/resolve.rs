//! Host names of registry entries to socket addresses.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// How long a host-name lookup may take (5 s) before the entry counts as malformed.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// The socket address of `host` and `port`: an IP literal as is, a host name through the
/// system resolver (IPv4 preferred, as most backends listen there) within
/// [`RESOLVE_TIMEOUT`]. The error says why, for a malformed-entry message.
pub async fn resolve_host(host: &str, port: u16) -> Result<SocketAddr, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let lookup = tokio::net::lookup_host((host, port));
    let addresses: Vec<SocketAddr> = match tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
        Ok(Ok(addresses)) => addresses.collect(),
        Ok(Err(err)) => return Err(format!("cannot resolve {host:?}: {err}")),
        Err(_) => return Err(format!("resolving {host:?} timed out")),
    };
    addresses
        .iter()
        .find(|a| a.is_ipv4())
        .or(addresses.first())
        .copied()
        .ok_or_else(|| format!("{host:?} resolves to no address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn literals_and_names() {
        assert_eq!(
            resolve_host("10.0.0.1", 80).await.unwrap(),
            "10.0.0.1:80".parse().unwrap()
        );
        assert_eq!(
            resolve_host("::1", 80).await.unwrap(),
            "[::1]:80".parse().unwrap()
        );
        // `localhost` comes from /etc/hosts: no network; IPv4 preferred.
        assert_eq!(
            resolve_host("localhost", 8080).await.unwrap(),
            "127.0.0.1:8080".parse().unwrap()
        );
        let err = resolve_host("no-such-host.invalid", 80).await.unwrap_err();
        assert!(err.contains("no-such-host.invalid"), "{err}");
    }
}
