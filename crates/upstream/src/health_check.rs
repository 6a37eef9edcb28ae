//! Active health checks: every `interval`, probe every endpoint of the upstream (all
//! tiers, so a failover tier is known good before it is needed) with an HTTP GET or a TCP
//! connect (or a gRPC `Health/Check` call, [`crate::grpc_health`]), and flip the endpoint's active-health flag after `healthy_threshold` successes
//! or `unhealthy_threshold` failures in a row. Flips are sent to the upstream's actor,
//! which re-evaluates those endpoints in the snapshot. Probes are plain HTTP/1.1 over a fresh connection
//! (`Connection: close`), so they measure what a new connection would meet.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{EndpointStats, HealthCheckKind, HealthCheckSpec};

/// Streaks of one endpoint.
#[derive(Default)]
struct Streak {
    successes: u32,
    failures: u32,
}

/// Runs the checks of one upstream forever. `endpoints` returns the current endpoints with
/// their counters; `changed` is called with the addresses that flipped after a round
/// that flipped any.
pub(crate) async fn run(
    spec: HealthCheckSpec,
    endpoints: impl Fn() -> Vec<(SocketAddr, Arc<EndpointStats>)>,
    changed: impl Fn(Vec<SocketAddr>),
) {
    let mut streaks: HashMap<SocketAddr, Streak> = HashMap::new();
    let mut ticker = tokio::time::interval(spec.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let current = endpoints();
        streaks.retain(|address, _| current.iter().any(|(a, _)| a == address));
        let probes = current.iter().map(|(address, _)| probe(&spec, *address));
        let results = futures::future::join_all(probes).await;
        let mut flipped = Vec::new();
        for ((address, stats), result) in current.iter().zip(results) {
            let streak = streaks.entry(*address).or_default();
            match result {
                Ok(()) => {
                    streak.successes += 1;
                    streak.failures = 0;
                    if !stats.active_healthy() && streak.successes >= spec.healthy_threshold {
                        tracing::info!(%address, "active health check: healthy again");
                        if stats.set_active_healthy(true) {
                            flipped.push(*address);
                        }
                    }
                }
                Err(reason) => {
                    streak.failures += 1;
                    streak.successes = 0;
                    if stats.active_healthy() && streak.failures >= spec.unhealthy_threshold {
                        tracing::warn!(%address, "active health check: unhealthy: {reason}");
                        if stats.set_active_healthy(false) {
                            flipped.push(*address);
                        }
                    }
                }
            }
        }
        if !flipped.is_empty() {
            changed(flipped);
        }
    }
}

/// One probe of one endpoint.
pub(crate) async fn probe(spec: &HealthCheckSpec, address: SocketAddr) -> Result<(), String> {
    let attempt = async {
        if let HealthCheckKind::Grpc { service } = &spec.kind {
            return crate::grpc_health::check(address, service).await;
        }
        let mut stream = TcpStream::connect(address)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let HealthCheckKind::Http {
            path,
            host,
            expected,
        } = &spec.kind
        else {
            return Ok(());
        };
        let host = host.clone().unwrap_or_else(|| address.to_string());
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: switchyard-health-check\r\nConnection: close\r\n\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut head = Vec::with_capacity(256);
        let mut buf = [0u8; 256];
        while !head.windows(2).any(|w| w == b"\r\n") {
            let n = stream
                .read(&mut buf)
                .await
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 || head.len() > 8192 {
                return Err("no status line".to_owned());
            }
            head.extend_from_slice(&buf[..n]);
        }
        let status = parse_status(&head).ok_or_else(|| "malformed status line".to_owned())?;
        if expected.iter().any(|&(lo, hi)| (lo..=hi).contains(&status)) {
            Ok(())
        } else {
            Err(format!("status {status}"))
        }
    };
    match tokio::time::timeout(spec.timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(format!("timed out after {:?}", spec.timeout)),
    }
}

/// The status code of an `HTTP/1.x NNN ...` status line.
fn parse_status(head: &[u8]) -> Option<u16> {
    let line = head.split(|&b| b == b'\r').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split(' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    parts.next()?.parse().ok()
}

/// Default healthy statuses: 200–399.
pub const DEFAULT_EXPECTED: (u16, u16) = (200, 399);

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn status_lines() {
        assert_eq!(parse_status(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(
            parse_status(b"HTTP/1.0 503 Service Unavailable\r\nx: y"),
            Some(503)
        );
        assert_eq!(parse_status(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(parse_status(b"HTTP/1.1 abc\r\n"), None);
    }

    #[tokio::test]
    async fn probes_http_status_and_tcp() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut n = 0;
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let status = if n == 0 { "200 OK" } else { "503 Nope" };
                n += 1;
                let _ = s
                    .write_all(format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n").as_bytes())
                    .await;
            }
        });
        let http = HealthCheckSpec {
            kind: HealthCheckKind::Http {
                path: "/healthz".into(),
                host: None,
                expected: vec![DEFAULT_EXPECTED],
            },
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            healthy_threshold: 1,
            unhealthy_threshold: 1,
        };
        assert_eq!(probe(&http, address).await, Ok(()));
        assert_eq!(probe(&http, address).await, Err("status 503".into()));
        let tcp = HealthCheckSpec {
            kind: HealthCheckKind::Tcp,
            ..http.clone()
        };
        assert_eq!(probe(&tcp, address).await, Ok(()));
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        assert!(probe(&tcp, closed)
            .await
            .unwrap_err()
            .starts_with("connect"));
    }
}
