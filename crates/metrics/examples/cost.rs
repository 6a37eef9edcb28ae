//! What recording one request's metrics costs, in instructions, through this crate and
//! through the `metrics` facade with `metrics-exporter-prometheus`: one status counter
//! increment and one duration histogram observation per request, the rendering of a
//! scrape at the end included (the exporter counts its buckets when it drains the samples
//! at a scrape: that work belongs to the requests too).
//!
//! Count instructions, not time (the figures in ARCHITECTURE.md, "Metrics"):
//!
//! ```text
//! cargo build --release -p switchyard-metrics --example cost
//! for v in ours ours-traced facade facade-lookup; do for n in 0 100000; do
//!   valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/cost $v $n 2>&1 | grep refs; done; done
//! ```
//!
//! (instructions at 100,000 requests less those at 0) / 100,000 = instructions a request.
//!
//! - `ours`: `Histogram::observe` and an `AtomicU64` counter, as `RouteMetrics::record`.
//! - `ours-traced`: every request sampled, its trace id stored as the bucket's exemplar.
//! - `facade`: the facade's `Counter` and `Histogram` handles, registered once (as a
//!   route table would hold them).
//! - `facade-lookup`: `counter!(..).increment(1)` and `histogram!(..).record(..)` per
//!   request, the labels hashed and looked up each time (the facade's usual idiom).

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusBuilder;
use switchyard_metrics::{Histogram, TraceId};

const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (variant, n) = match args.as_slice() {
        [_, variant, n] => (
            variant.as_str(),
            n.parse::<usize>().expect("a request count"),
        ),
        _ => panic!("usage: cost ours|ours-traced|facade|facade-lookup REQUESTS"),
    };
    // Durations spread over the buckets, the same sequence for every variant.
    let durations: Vec<Duration> = (0..64u64)
        .map(|i| Duration::from_micros(200 + i * i * 250))
        .collect();
    match variant {
        "ours" | "ours-traced" => {
            let histogram = Histogram::with_exemplars(&BUCKETS);
            let requests = AtomicU64::new(0);
            let trace = (variant == "ours-traced").then_some(TraceId([0x4b; 16]));
            for i in 0..n {
                requests.fetch_add(1, Ordering::Relaxed);
                histogram.observe_traced(black_box(durations[i % 64]), black_box(trace));
            }
            let page = switchyard_metrics::exposition::render_one(
                switchyard_metrics::Format::Prometheus,
                move |e| {
                    switchyard_metrics::family::single_counter(
                        e,
                        "requests_total",
                        "Requests.",
                        requests.load(Ordering::Relaxed),
                    )?;
                    switchyard_metrics::family::single_histogram(
                        e,
                        "request_duration_seconds",
                        "Durations.",
                        &histogram,
                    )
                },
            );
            black_box(page);
        }
        "facade" | "facade-lookup" => {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&BUCKETS)
                .expect("buckets")
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).expect("the only recorder");
            if variant == "facade" {
                let counter = metrics::counter!("requests_total", "route" => "orders", "upstream" => "orders", "code" => "200");
                let histogram =
                    metrics::histogram!("request_duration_seconds", "route" => "orders");
                for i in 0..n {
                    counter.increment(1);
                    histogram.record(black_box(durations[i % 64]).as_secs_f64());
                }
            } else {
                for i in 0..n {
                    metrics::counter!("requests_total", "route" => "orders", "upstream" => "orders", "code" => "200").increment(1);
                    metrics::histogram!("request_duration_seconds", "route" => "orders")
                        .record(black_box(durations[i % 64]).as_secs_f64());
                }
            }
            black_box(handle.render());
        }
        other => panic!("unknown variant {other}"),
    }
}
