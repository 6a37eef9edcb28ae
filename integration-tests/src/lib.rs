//! The integration-test harness: free ports, real HTTP backends, the real `switchyard`
//! binary, and launchers for the real registry servers (etcd, bind9, ZooKeeper) used by the tests in
//! `integration-tests/tests/`.
//!
//! Everything binds 127.0.0.1 only, on free ports ([`free_port`]), and everything it
//! starts is stopped when its handle is dropped, so tests run in parallel and leave nothing
//! behind.

pub mod backend;
pub mod bind;
pub mod etcd;
pub mod gateway;
pub mod grpc;
pub mod inventory;
pub mod redis;
pub mod zookeeper;

pub use backend::Backend;
pub use gateway::Gateway;

use std::future::Future;
use std::net::TcpListener;
use std::time::{Duration, Instant};

/// A port on 127.0.0.1, free for TCP and UDP a moment ago, below the kernel's ephemeral
/// range when there is room there.
///
/// Servers that the chaos tests stop and start again on the same port (bind9, etcd, the
/// doubles) must find it free on restart. A port from the ephemeral range (what binding
/// port 0 hands out) can meanwhile become the local end of any outgoing connection on the
/// machine, and the restart then fails with "address in use"; ports below the range are
/// only ever taken by an explicit bind.
pub fn free_port() -> u16 {
    let (ephemeral_low, _) = ephemeral_range();
    if ephemeral_low > 11_000 {
        for _ in 0..1_000 {
            // fastrand seeds each thread randomly, so parallel test processes differ.
            let port = fastrand::u16(10_000..ephemeral_low);
            let tcp = TcpListener::bind(("127.0.0.1", port));
            let udp = std::net::UdpSocket::bind(("127.0.0.1", port));
            if tcp.is_ok() && udp.is_ok() {
                return port;
            }
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// The kernel's ephemeral port range (Linux), or the IANA default.
fn ephemeral_range() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| {
            let mut parts = text.split_whitespace().map(|p| p.parse::<u16>());
            Some((parts.next()?.ok()?, parts.next()?.ok()?))
        })
        .unwrap_or((49_152, 65_535))
}

/// Polls `check` every 20 ms until it returns true or `deadline` passes. Returns how long
/// it took; panics with `what` on timeout. Prints the time seen, for the test log.
pub async fn eventually<F, Fut>(what: &str, deadline: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            let took = start.elapsed();
            println!("{what}: after {took:?}");
            return took;
        }
        if start.elapsed() > deadline {
            panic!("{what}: not within {deadline:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The `q` quantile (0..=1, nearest rank) of sorted durations.
pub fn percentile(sorted: &[Duration], q: f64) -> Duration {
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Drives `stream` from a task of its own, as the gateway's upstream actor drives a
/// recovered source, and hands its items over through a channel.
///
/// A [`recover`](switchyard_registry::recover) stream makes progress only while it is
/// polled; tests that count a backend's requests, or change the registry, while they are
/// not reading the stream need it driven meanwhile. The task stops when the returned stream
/// is dropped (at its next item) or the test's runtime ends.
pub fn driven<S>(stream: S) -> impl futures::Stream<Item = S::Item> + Unpin
where
    S: futures::Stream + Send + 'static,
    S::Item: Send + 'static,
{
    use futures::StreamExt;
    let (sender, receiver) = futures::channel::mpsc::unbounded();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            if sender.unbounded_send(item).is_err() {
                break;
            }
        }
    });
    receiver
}
