//! The upstream cache: applying one endpoint change, and loading a snapshot on the request
//! path (`cargo bench -p switchyard-proxy --bench upstream`).
//!
//! - `endpoint_change/<n>`: one weight change of one endpoint of an upstream of `n`
//!   endpoints, timed from the `Update` leaving a fake registry to the upstream's snapshot
//!   version changing. It is measured end to end through the public API (a real
//!   [`UpstreamCache`] watching a channel-driven [`Registry`]), so it includes the
//!   recover wrapper's channel hop, the actor's set update, the full snapshot rebuild
//!   (merge, tiers, health) and the round-robin selector build. On a current-thread
//!   runtime, so no cross-core wake-up is counted.
//! - `endpoint_change_with_others/10000`: the same with 999 other upstreams of 100
//!   endpoints each watched by the same cache; the figure should not move.
//! - `snapshot/*`: `Upstream::snapshot()` (one atomic load and a guard),
//!   `Upstream::snapshot_full()` (the `Arc` clone the proxy takes per request), and a load
//!   plus a round-robin pick.

use std::collections::HashMap;
use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use criterion::{BenchmarkId, Criterion};
use futures::StreamExt;
use switchyard_proxy::BalancerKind;
use switchyard_registry::{
    Endpoint, Registry, RegistryError, RegistryMetrics, ServiceQuery, Update, UpdateStream,
};
use switchyard_upstream::{
    OutlierSpec, PanicMode, PickContext, SourceSpec, Upstream, UpstreamCache, UpstreamSpec,
};
use tokio::sync::mpsc;

/// A registry whose services are fed by hand: `watch(service)` streams what is sent on
/// that service's channel. A second watch of the same service (a reconnect) never yields.
#[derive(Default)]
struct ChannelRegistry {
    receivers: Mutex<HashMap<String, mpsc::UnboundedReceiver<Update>>>,
}

impl ChannelRegistry {
    /// A sender for `service`'s updates.
    fn service(&self, service: &str) -> mpsc::UnboundedSender<Update> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.receivers
            .lock()
            .expect("not poisoned")
            .insert(service.to_owned(), rx);
        tx
    }
}

#[async_trait]
impl Registry for ChannelRegistry {
    fn kind(&self) -> &'static str {
        "bench"
    }

    async fn watch(&self, query: &ServiceQuery) -> Result<UpdateStream, RegistryError> {
        let taken = self
            .receivers
            .lock()
            .expect("not poisoned")
            .remove(&query.service);
        Ok(match taken {
            Some(rx) => {
                futures::stream::unfold(
                    rx,
                    |mut rx| async move { rx.recv().await.map(|u| (Ok(u), rx)) },
                )
                .boxed()
            }
            None => futures::stream::pending().boxed(),
        })
    }
}

/// Endpoint `i` of a service: distinct addresses over 10.x.y.z, weight 1.
fn endpoint(i: usize) -> Endpoint {
    let ip = Ipv4Addr::from(0x0a00_0000 + (i / 50_000) as u32);
    Endpoint::new(SocketAddr::from((ip, 1024 + (i % 50_000) as u16)))
}

fn spec(registry: &Arc<ChannelRegistry>, name: &str) -> UpstreamSpec {
    UpstreamSpec {
        name: name.to_owned(),
        balancer: "round_robin".into(),
        selector: BalancerKind::RoundRobin.factory(),
        sources: vec![SourceSpec {
            registry_name: "bench".into(),
            registry_kind: "bench",
            registry: registry.clone(),
            metrics: Arc::new(RegistryMetrics::default()),
            query: ServiceQuery::new(name),
            priority: 0,
            weight: None,
        }],
        outlier: OutlierSpec::default(),
        health_check: None,
        panic_mode: PanicMode::default(),
        shrink_guard: None,
    }
}

/// A running cache with upstream `main` of `n` endpoints and `others` upstreams of
/// `other_size` endpoints each, all synced.
struct Fixture {
    runtime: tokio::runtime::Runtime,
    cache: UpstreamCache,
    main: mpsc::UnboundedSender<Update>,
    /// The other upstreams' senders, kept so their streams stay open.
    _others: Vec<mpsc::UnboundedSender<Update>>,
    n: usize,
}

impl Fixture {
    fn new(n: usize, others: usize, other_size: usize) -> Fixture {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let registry = Arc::new(ChannelRegistry::default());
        let main = registry.service("main");
        main.send(Update::Reset((0..n).map(endpoint).collect()))
            .expect("open");
        let mut specs = vec![spec(&registry, "main")];
        let mut senders = Vec::with_capacity(others);
        for o in 0..others {
            let name = format!("other{o}");
            let tx = registry.service(&name);
            tx.send(Update::Reset((0..other_size).map(endpoint).collect()))
                .expect("open");
            senders.push(tx);
            specs.push(spec(&registry, &name));
        }
        let cache = runtime.block_on(async {
            let cache = UpstreamCache::start(specs, None, None);
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                let synced = cache.iter().all(|u| {
                    let expected = if u.name() == "main" { n } else { other_size };
                    u.snapshot().serving.len() == expected
                });
                if synced {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "the cache did not sync within 120 s"
                );
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            cache
        });
        Fixture {
            runtime,
            cache,
            main,
            _others: senders,
            n,
        }
    }

    fn main(&self) -> &Arc<Upstream> {
        self.cache.get("main").expect("configured")
    }

    /// Sends `iters` weight changes one at a time; the total time from each send to the
    /// snapshot that contains it.
    fn changes(&self, iters: u64, flip: &mut bool) -> Duration {
        let upstream = self.main().clone();
        let target = self.n / 2;
        self.runtime.block_on(async {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                *flip = !*flip;
                let changed = endpoint(target).with_weight(if *flip { 2 } else { 1 });
                let before = upstream.snapshot().version;
                let start = Instant::now();
                self.main.send(Update::Add(vec![changed])).expect("open");
                let deadline = start + Duration::from_secs(30);
                while upstream.snapshot().version == before {
                    assert!(Instant::now() < deadline, "no new snapshot within 30 s");
                    tokio::task::yield_now().await;
                }
                total += start.elapsed();
            }
            total
        })
    }
}

fn endpoint_change(c: &mut Criterion) {
    let mut group = c.benchmark_group("endpoint_change");
    group.sample_size(10).warm_up_time(Duration::from_secs(1));
    for n in [10_000, 100_000] {
        let fixture = Fixture::new(n, 0, 0);
        let mut flip = false;
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter_custom(|iters| fixture.changes(iters, &mut flip));
        });
    }
    group.finish();

    let mut group = c.benchmark_group("endpoint_change_with_others");
    group.sample_size(10).warm_up_time(Duration::from_secs(1));
    let fixture = Fixture::new(10_000, 999, 100);
    let mut flip = false;
    group.bench_function(BenchmarkId::from_parameter(10_000), |b| {
        b.iter_custom(|iters| fixture.changes(iters, &mut flip));
    });
    group.finish();
}

fn snapshot(c: &mut Criterion) {
    let fixture = Fixture::new(10, 0, 0);
    let upstream = fixture.main().clone();
    let mut group = c.benchmark_group("snapshot");
    group.bench_function("load", |b| {
        b.iter(|| black_box(upstream.snapshot()).version)
    });
    group.bench_function("load_full", |b| {
        b.iter(|| black_box(upstream.snapshot_full()).version)
    });
    group.bench_function("load_and_pick", |b| {
        let mut hash = 0u64;
        b.iter(|| {
            hash = hash.wrapping_add(1);
            let snapshot = upstream.snapshot();
            snapshot
                .pick(&PickContext { hash, attempt: 0 })
                .map(|e| e.address())
        });
    });
    group.finish();
}

fn main() {
    // What criterion_main! does, without the undocumented public function it generates.
    let mut criterion = Criterion::default().configure_from_args();
    snapshot(&mut criterion);
    endpoint_change(&mut criterion);
    criterion.final_summary();
}
