//! The upstream cache: applying one endpoint change, and loading a snapshot on the request
//! path (`cargo bench -p switchyard-proxy --bench upstream`).
//!
//! - `endpoint_change/<balancer>/<n>`: one weight change (an `Update::Add` of an existing
//!   address with another weight) of the middle endpoint of an upstream of `n` endpoints,
//!   applied with [`UpstreamState::apply`] — the code the upstream's actor runs — and the
//!   new snapshot stored in an `ArcSwap` as the actor publishes it (the previous snapshot
//!   is dropped on the way). Balancer `round_robin` (the default) or `consistent_hash`.
//! - `endpoint_change/remove_add/<n>`: the same endpoint removed, then added back, in
//!   turn (one update per iteration).
//! - `endpoint_change_actor/<n>`: one weight change timed end to end through the public
//!   API: from the `Update` leaving a channel-driven fake [`Registry`] to the upstream's
//!   snapshot version changing in a real [`UpstreamCache`]; so it adds the recover
//!   wrapper's channel hop and the actor's wake-up. On a current-thread runtime, so no
//!   cross-core wake-up is counted.
//! - `endpoint_change_with_others/{sync,actor}/10000`: `endpoint_change/round_robin/10000`
//!   and `endpoint_change_actor/10000` with 999 other upstreams of 100 endpoints each
//!   alive (their states; for `actor`, watched by the same cache): the figures should not
//!   move.
//! - `snapshot/*`: `Upstream::snapshot()` (one atomic load and a guard),
//!   `Upstream::snapshot_full()` (the `Arc` clone the proxy takes per request), and a load
//!   plus a round-robin pick.
//!
//! `MEMORY=UxN cargo bench -p switchyard-proxy --bench upstream` prints instead what U
//! upstreams of N endpoints cost in resident memory per endpoint (through a real cache,
//! on a fresh heap), and runs nothing else.

use std::collections::HashMap;
use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use criterion::{BenchmarkId, Criterion};
use futures::StreamExt;
use switchyard_proxy::BalancerKind;
use switchyard_registry::{
    Endpoint, Registry, RegistryError, RegistryMetrics, ServiceQuery, Update, UpdateStream,
};
use switchyard_upstream::{
    OutlierSpec, PanicMode, PickContext, SourceSpec, Upstream, UpstreamCache, UpstreamSpec,
    UpstreamState,
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
    spec_with(registry, name, BalancerKind::RoundRobin)
}

fn spec_with(registry: &Arc<ChannelRegistry>, name: &str, kind: BalancerKind) -> UpstreamSpec {
    UpstreamSpec {
        name: name.to_owned(),
        balancer: kind.as_str().into(),
        selector: kind.factory(),
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
        main.send(Update::reset((0..n).map(endpoint)))
            .expect("open");
        let mut specs = vec![spec(&registry, "main")];
        let mut senders = Vec::with_capacity(others);
        for o in 0..others {
            let name = format!("other{o}");
            let tx = registry.service(&name);
            tx.send(Update::reset((0..other_size).map(endpoint)))
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
                self.main.send(Update::add(vec![changed])).expect("open");
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

/// An upstream's state with `n` endpoints (one source), and where the actor would publish.
struct Synced {
    state: UpstreamState,
    published: ArcSwap<switchyard_upstream::Snapshot>,
    n: usize,
}

impl Synced {
    fn new(n: usize, kind: BalancerKind) -> Synced {
        let registry = Arc::new(ChannelRegistry::default());
        let mut state = UpstreamState::new(&spec_with(&registry, "main", kind));
        let snapshot = state.apply(0, Update::reset((0..n).map(endpoint)));
        assert_eq!(snapshot.serving.len(), n);
        Synced {
            published: ArcSwap::new(snapshot),
            state,
            n,
        }
    }

    /// Applies one update and publishes the result.
    fn apply(&mut self, update: Update) {
        let snapshot = self.state.apply(0, update);
        self.published.store(snapshot);
    }
}

fn endpoint_change(c: &mut Criterion) {
    let mut group = c.benchmark_group("endpoint_change");
    group.warm_up_time(Duration::from_secs(1));
    for n in [10_000, 100_000] {
        for kind in [BalancerKind::RoundRobin, BalancerKind::ConsistentHash] {
            let mut synced = Synced::new(n, kind);
            let target = synced.n / 2;
            let mut flip = false;
            group.bench_function(BenchmarkId::new(kind.as_str(), n), |b| {
                b.iter(|| {
                    flip = !flip;
                    let changed = endpoint(target).with_weight(if flip { 2 } else { 1 });
                    synced.apply(Update::add(vec![changed]));
                });
            });
        }
        let mut synced = Synced::new(n, BalancerKind::RoundRobin);
        let target = endpoint(n / 2);
        let mut present = true;
        group.bench_function(BenchmarkId::new("remove_add", n), |b| {
            b.iter(|| {
                present = !present;
                synced.apply(if present {
                    Update::add(vec![target.clone()])
                } else {
                    Update::Remove(vec![target.address])
                });
            });
        });
    }
    group.finish();

    let mut group = c.benchmark_group("endpoint_change_actor");
    group.sample_size(20).warm_up_time(Duration::from_secs(1));
    for n in [10_000, 100_000] {
        let fixture = Fixture::new(n, 0, 0);
        let mut flip = false;
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter_custom(|iters| fixture.changes(iters, &mut flip));
        });
    }
    group.finish();

    let mut group = c.benchmark_group("endpoint_change_with_others");
    group.sample_size(20).warm_up_time(Duration::from_secs(1));
    {
        let others: Vec<Synced> = (0..999)
            .map(|_| Synced::new(100, BalancerKind::RoundRobin))
            .collect();
        let mut synced = Synced::new(10_000, BalancerKind::RoundRobin);
        let target = synced.n / 2;
        let mut flip = false;
        group.bench_function(BenchmarkId::new("sync", 10_000), |b| {
            b.iter(|| {
                flip = !flip;
                let changed = endpoint(target).with_weight(if flip { 2 } else { 1 });
                synced.apply(Update::add(vec![changed]));
            });
        });
        drop(others);
    }
    let fixture = Fixture::new(10_000, 999, 100);
    let mut flip = false;
    group.bench_function(BenchmarkId::new("actor", 10_000), |b| {
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

/// Resident set size of this process, in bytes (Linux `/proc/self/statm`; 0 elsewhere).
fn rss() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<usize>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// Prints the resident memory each endpoint costs: `upstreams` upstreams of `size`
/// endpoints, RSS after they synced minus RSS before, over the endpoint count.
fn memory(upstreams: usize, size: usize) {
    let before = rss();
    let fixture = Fixture::new(size, upstreams - 1, size);
    let after = rss();
    let n = upstreams * size;
    println!(
        "memory/{upstreams}x{size}: {} bytes per endpoint ({:.1} MiB for {n} endpoints)",
        (after.saturating_sub(before)) / n,
        after.saturating_sub(before) as f64 / (1 << 20) as f64
    );
    drop(fixture);
}

fn main() {
    // What criterion_main! does, without the undocumented public function it generates.
    let mut criterion = Criterion::default().configure_from_args();
    // `MEMORY=UxN`: only print the memory cost of U upstreams of N endpoints, on a fresh
    // heap (one measurement per process, so that freed memory is not reused).
    if let Ok(shape) = std::env::var("MEMORY") {
        let (u, n) = shape.split_once('x').expect("MEMORY=UPSTREAMSxENDPOINTS");
        memory(u.parse().expect("upstreams"), n.parse().expect("endpoints"));
        return;
    }
    snapshot(&mut criterion);
    endpoint_change(&mut criterion);
    criterion.final_summary();
}
