//! Balancer cost per algorithm with 10 and 10,000 endpoints
//! (`cargo bench -p switchyard-proxy --bench balancer`).
//!
//! - `balancer_pick/<algorithm>/<n>`: one `Selector::pick` on a selector built once, the
//!   per-request cost. The hash changes on every pick, so `consistent_hash` walks
//!   different parts of its ring.
//! - `balancer_build/<algorithm>/<n>`: `SelectorFactory::build`, paid when a snapshot's
//!   serving tier changes (or a bulk change).
//! - `balancer_update/<algorithm>/<n>`: `Selector::update` for one endpoint's weight
//!   change (one removed, one added), what an ordinary endpoint change pays.
//!
//! Endpoints: 10.0.x.y, one port each, weights 1–5 in turn, healthy, fresh stats.

use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion};
use switchyard_proxy::BalancerKind;
use switchyard_registry::Endpoint;
use switchyard_upstream::{Changes, EndpointList, PickContext, ServingEndpoint, SourceRef};

const SIZES: [usize; 2] = [10, 10_000];

fn source() -> Arc<SourceRef> {
    Arc::new(SourceRef {
        registry: "bench".into(),
        service: "svc".into(),
    })
}

/// Endpoint `i`, of weight `weight`.
fn endpoint(source: &Arc<SourceRef>, i: usize, weight: u32) -> Arc<ServingEndpoint> {
    let ip = Ipv4Addr::from(0x0a00_0000 + (i / 60_000) as u32);
    let address = SocketAddr::from((ip, 1024 + (i % 60_000) as u16));
    Arc::new(ServingEndpoint::new(
        Endpoint::new(address).with_weight(weight),
        source.clone(),
    ))
}

/// `n` serving endpoints with weights 1, 2, 3, 4, 5, 1, ...
fn endpoints(n: usize) -> EndpointList {
    let source = source();
    EndpointList::new(
        (0..n)
            .map(|i| endpoint(&source, i, (i % 5) as u32 + 1))
            .collect(),
    )
}

fn pick(c: &mut Criterion) {
    let mut group = c.benchmark_group("balancer_pick");
    for kind in BalancerKind::ALL {
        for n in SIZES {
            let serving = endpoints(n);
            let selector = kind.factory().build(&serving);
            assert!(selector
                .pick(
                    &serving,
                    &PickContext {
                        hash: 1,
                        attempt: 0
                    }
                )
                .is_some());
            group.bench_with_input(BenchmarkId::new(kind.as_str(), n), &n, |b, _| {
                let mut hash = 0u64;
                b.iter(|| {
                    hash = hash.wrapping_add(0x9e37_79b9_7f4a_7c15);
                    selector.pick(black_box(&serving), &PickContext { hash, attempt: 0 })
                });
            });
        }
    }
    group.finish();
}

fn build(c: &mut Criterion) {
    let mut group = c.benchmark_group("balancer_build");
    group.sample_size(20);
    for kind in BalancerKind::ALL {
        let factory = kind.factory();
        for n in SIZES {
            let serving = endpoints(n);
            group.bench_with_input(
                BenchmarkId::new(kind.as_str(), n),
                &serving,
                |b, serving| {
                    b.iter(|| factory.build(black_box(serving)));
                },
            );
        }
    }
    group.finish();
}

fn update(c: &mut Criterion) {
    let mut group = c.benchmark_group("balancer_update");
    group.sample_size(20);
    for kind in BalancerKind::ALL {
        let factory = kind.factory();
        for n in SIZES {
            let serving = endpoints(n);
            let selector = factory.build(&serving);
            // The middle endpoint's weight changes: removed with its old weight, added
            // with the new one, at the same place in the list.
            let middle = n / 2;
            let old = serving.get(middle).expect("exists").clone();
            let new = endpoint(&source(), middle, old.weight % 5 + 1);
            let mut list = serving.to_vec();
            list[middle] = new.clone();
            let next = EndpointList::new(list);
            let (removed, added) = ([old], [new]);
            let changes = Changes {
                removed: &removed,
                added: &added,
            };
            group.bench_with_input(BenchmarkId::new(kind.as_str(), n), &next, |b, next| {
                b.iter(|| match selector.update(black_box(next), &changes) {
                    Some(derived) => derived,
                    None => factory.build(next),
                });
            });
        }
    }
    group.finish();
}

fn main() {
    // What criterion_main! does, without the undocumented public function it generates.
    let mut criterion = Criterion::default().configure_from_args();
    pick(&mut criterion);
    build(&mut criterion);
    update(&mut criterion);
    criterion.final_summary();
}
