//! The integration-test harness: free ports, real HTTP backends, the real `switchyard`
//! binary, and launchers for the real registry servers (etcd, bind9) used by the tests in
//! `integration-tests/tests/`.
//!
//! Everything binds 127.0.0.1 only, on ports the kernel hands out, and everything it
//! starts is stopped when its handle is dropped, so tests run in parallel and leave nothing
//! behind.

pub mod backend;
pub mod bind;
pub mod etcd;
pub mod gateway;
pub mod redis;

pub use backend::Backend;
pub use gateway::Gateway;

use std::future::Future;
use std::net::TcpListener;
use std::time::{Duration, Instant};

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
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
