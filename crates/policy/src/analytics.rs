//! Usage analytics per route and per consumer: requests by status class, request and
//! response bytes, and latency (time to the response head).
//!
//! Two views of the same records:
//! - cumulative counters and a Prometheus histogram for `/metrics`, labelled by route and
//!   consumer — both come from config (the consumer label is `""` for anonymous
//!   requests), so the label sets are bounded;
//! - a sliding window for `GET /api/stats?window=5m`: 10-second slots kept for an hour,
//!   each with a log-scale latency histogram (buckets 25% apart, from 0.1 ms to two
//!   minutes), from which p50/p95/p99 are read (within about ±12%).
//!
//! A series is one (route, consumer) pair; it lives as long as the process, across
//! reloads, and the filter finds its series when it is built, never per request.
//! Recording takes no lock: it adds to cumulative atomic counters (the window's latency
//! histogram included). The window keeps, per 10-second slot, a snapshot of those counters
//! as they stood when the slot's first request came; a window's figures are the difference
//! of two snapshots (or of a snapshot and the live counters). The first request of a slot
//! claims the snapshot with one compare-exchange (exactly one request per slot wins; the
//! others go on), and publishes it by swapping in a new list of snapshots (`ArcSwap`,
//! read-copy-update: readers never block it, and it never waits for them). A request
//! racing with the snapshot may be counted in the slot before its own.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use http::request::Parts;
use http::Response;
use http_body::{Body, Frame, SizeHint};
use serde_json::{json, Value};
use switchyard_metrics::family;
use switchyard_metrics::prometheus_client::encoding::DescriptorEncoder;
use switchyard_metrics::{Escaped, Histogram};
use switchyard_proxy::body::{BoxBody, BoxError, ProxyBody};
use switchyard_proxy::{Filter, RequestContext};

/// Width of one window slot.
pub const SLOT: Duration = Duration::from_secs(10);
/// The longest window `/api/stats` answers for.
pub const MAX_WINDOW: Duration = Duration::from_secs(3600);
const SLOTS_KEPT: u64 = MAX_WINDOW.as_secs() / SLOT.as_secs() + 1;

/// Log-scale latency buckets of the window histogram: bucket `i` holds latencies up to
/// `FIRST_BOUND_US * GROWTH^i`.
const WINDOW_BUCKETS: usize = 64;
const FIRST_BOUND_US: f64 = 100.0;
const GROWTH: f64 = 1.25;

/// Upper bounds (seconds) of the Prometheus histogram.
const PROM_BOUNDS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

fn class_index(status: u16) -> usize {
    usize::from((status / 100).clamp(1, 5) - 1)
}

fn window_bucket(latency: Duration) -> usize {
    let us = latency.as_secs_f64() * 1e6;
    if us <= FIRST_BOUND_US {
        return 0;
    }
    let i = ((us / FIRST_BOUND_US).ln() / GROWTH.ln()).ceil() as usize;
    i.min(WINDOW_BUCKETS - 1)
}

/// The latency (ms) a bucket stands for: the geometric middle of its range.
fn bucket_value_ms(i: usize) -> f64 {
    let upper = FIRST_BOUND_US * GROWTH.powi(i as i32);
    let lower = upper / GROWTH;
    (lower * upper).sqrt() / 1000.0
}

#[derive(Clone, Default)]
struct Totals {
    classes: [u64; 5],
    bytes_in: u64,
    bytes_out: u64,
    latency: Vec<u64>,
}

impl Totals {
    fn requests(&self) -> u64 {
        self.classes.iter().sum()
    }

    /// `self - earlier`: what happened between two snapshots of the cumulative counters.
    fn since(&self, earlier: &Totals) -> Totals {
        let mut out = self.clone();
        for (a, b) in out.classes.iter_mut().zip(earlier.classes) {
            *a = a.saturating_sub(b);
        }
        out.bytes_in = out.bytes_in.saturating_sub(earlier.bytes_in);
        out.bytes_out = out.bytes_out.saturating_sub(earlier.bytes_out);
        for (a, b) in out.latency.iter_mut().zip(&earlier.latency) {
            *a = a.saturating_sub(*b);
        }
        out
    }

    fn add(&mut self, other: &Totals) {
        for (a, b) in self.classes.iter_mut().zip(other.classes) {
            *a += b;
        }
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
        if self.latency.len() < WINDOW_BUCKETS {
            self.latency.resize(WINDOW_BUCKETS, 0);
        }
        for (a, b) in self.latency.iter_mut().zip(&other.latency) {
            *a += b;
        }
    }

    fn percentile_ms(&self, q: f64) -> Option<f64> {
        let total: u64 = self.latency.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, n) in self.latency.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(bucket_value_ms(i));
            }
        }
        None
    }

    fn json(&self, window: Duration) -> Value {
        let round = |v: Option<f64>| v.map(|v| (v * 1000.0).round() / 1000.0);
        json!({
            "requests": self.requests(),
            "requests_per_second": (self.requests() as f64 / window.as_secs_f64() * 1000.0).round() / 1000.0,
            "status": CLASSES.iter().zip(self.classes).map(|(c, n)| (c.to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "latency_ms": {
                "p50": round(self.percentile_ms(0.50)),
                "p95": round(self.percentile_ms(0.95)),
                "p99": round(self.percentile_ms(0.99)),
            },
        })
    }
}

/// The cumulative counters of a series as they stood when slot `index` began (its first
/// request).
struct Slot {
    index: u64,
    totals: Totals,
}

/// The records of one (route, consumer) pair.
pub struct Series {
    route: Arc<str>,
    consumer: Arc<str>,
    classes: [AtomicU64; 5],
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    /// `switchyard_usage_duration_seconds`.
    duration: Histogram,
    /// The window's log-scale latency histogram, cumulative.
    latency: [AtomicU64; WINDOW_BUCKETS],
    /// The newest slot snapshotted, plus one (0: none yet).
    snapshotted: AtomicU64,
    /// Snapshots at the start of each slot that had requests, oldest first.
    window: ArcSwap<VecDeque<Arc<Slot>>>,
}

impl Series {
    fn new(route: &str, consumer: &str) -> Series {
        Series {
            route: route.into(),
            consumer: consumer.into(),
            classes: Default::default(),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            duration: Histogram::new(&PROM_BOUNDS),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
            snapshotted: AtomicU64::new(0),
            window: ArcSwap::default(),
        }
    }

    fn count(&self) -> u64 {
        self.classes.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// Records one request in slot `slot`: atomics only, and a snapshot when it is the
    /// slot's first request (never waiting: see the module docs).
    fn record(&self, slot: u64, status: u16, bytes_in: u64, bytes_out: u64, latency: Duration) {
        let snapshotted = self.snapshotted.load(Ordering::Acquire);
        if snapshotted <= slot
            && self
                .snapshotted
                .compare_exchange(snapshotted, slot + 1, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            self.snapshot(slot);
        }
        let class = class_index(status);
        self.classes[class].fetch_add(1, Ordering::Relaxed);
        self.bytes_in.fetch_add(bytes_in, Ordering::Relaxed);
        self.bytes_out.fetch_add(bytes_out, Ordering::Relaxed);
        self.duration.observe(latency);
        self.latency[window_bucket(latency)].fetch_add(1, Ordering::Relaxed);
    }

    /// Publishes the counters as they stand as slot `slot`'s start (this request won the
    /// slot's compare-exchange), dropping snapshots older than an hour.
    fn snapshot(&self, slot: u64) {
        let taken = Arc::new(Slot {
            index: slot,
            totals: self.cumulative(),
        });
        self.window.rcu(|window| {
            let mut window = VecDeque::clone(window);
            while window.front().is_some_and(|s| s.index + SLOTS_KEPT <= slot) {
                window.pop_front();
            }
            // Two slots' first requests may publish out of order: keep the list sorted.
            let at = window.partition_point(|s| s.index < slot);
            window.insert(at, taken.clone());
            window
        });
    }

    /// The cumulative counters now.
    fn cumulative(&self) -> Totals {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Totals {
            classes: std::array::from_fn(|i| load(&self.classes[i])),
            bytes_in: load(&self.bytes_in),
            bytes_out: load(&self.bytes_out),
            latency: self.latency.iter().map(load).collect(),
        }
    }

    /// The totals of slots `from..=to`: the counters at the start of slot `to + 1` (now,
    /// when no later slot had requests) less those at the start of slot `from` (the first
    /// snapshot at or after it: no request came between).
    fn totals(&self, from: u64, to: u64) -> Totals {
        let now = self.cumulative();
        let window = self.window.load();
        let at = |slot: u64| {
            window
                .iter()
                .find(|s| s.index >= slot)
                .map_or(&now, |s| &s.totals)
        };
        at(to.saturating_add(1)).since(at(from))
    }
}

/// Every series of the process.
pub struct Analytics {
    base: Instant,
    series: Mutex<BTreeMap<(String, String), Arc<Series>>>,
}

impl Default for Analytics {
    fn default() -> Self {
        Analytics {
            base: Instant::now(),
            series: Mutex::new(BTreeMap::new()),
        }
    }
}

impl Analytics {
    /// The series of (`route`, `consumer`), created on first use (`""` = anonymous).
    pub fn series(&self, route: &str, consumer: &str) -> Arc<Series> {
        self.series
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((route.to_owned(), consumer.to_owned()))
            .or_insert_with(|| Arc::new(Series::new(route, consumer)))
            .clone()
    }

    fn slot_now(&self) -> u64 {
        self.base.elapsed().as_secs() / SLOT.as_secs()
    }

    fn all(&self) -> Vec<Arc<Series>> {
        self.series
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|s| s.count() > 0)
            .cloned()
            .collect()
    }

    /// Writes the usage families to `/metrics`.
    pub fn encode(&self, encoder: &mut DescriptorEncoder) -> std::fmt::Result {
        let all = self.all();
        fn labels(s: &Series) -> switchyard_metrics::labels::Labels<'_, 2> {
            [
                ("route", Escaped(&s.route)),
                ("consumer", Escaped(&s.consumer)),
            ]
        }
        family::counter(
            encoder,
            "switchyard_usage_requests_total",
            "Requests by route, consumer (empty = anonymous) and status class.",
            all.iter().flat_map(|s| {
                CLASSES.iter().zip(&s.classes).map(|(class, n)| {
                    (
                        [
                            ("route", Escaped(&s.route)),
                            ("consumer", Escaped(&s.consumer)),
                            ("class", Escaped(class)),
                        ],
                        n.load(Ordering::Relaxed),
                    )
                })
            }),
        )?;
        for (name, help, pick) in [
            (
                "switchyard_usage_request_bytes_total",
                "Request body bytes (as declared by Content-Length) by route and consumer.",
                (|s: &Series| &s.bytes_in) as fn(&Series) -> &AtomicU64,
            ),
            (
                "switchyard_usage_response_bytes_total",
                "Response body bytes sent by route and consumer.",
                |s: &Series| &s.bytes_out,
            ),
        ] {
            family::counter(
                encoder,
                name,
                help,
                all.iter()
                    .map(|s| (labels(s), pick(s).load(Ordering::Relaxed))),
            )?;
        }
        family::histogram(
            encoder,
            "switchyard_usage_duration_seconds",
            "Time to the response head by route and consumer.",
            all.iter().map(|s| (labels(s), &s.duration)),
        )
    }

    /// The `/api/stats` document for the last `window` (clamped to 10 s ..= 1 h).
    pub fn stats(&self, window: Duration) -> Value {
        let window = window.clamp(SLOT, MAX_WINDOW);
        let now = self.slot_now();
        let slots = window.as_secs().div_ceil(SLOT.as_secs());
        let from = (now + 1).saturating_sub(slots);
        type ByConsumer = Vec<(Arc<str>, Totals)>;
        let mut routes: BTreeMap<Arc<str>, (Totals, ByConsumer)> = BTreeMap::new();
        let mut consumers: BTreeMap<Arc<str>, Totals> = BTreeMap::new();
        for series in self.all() {
            let totals = series.totals(from, now);
            let route = routes.entry(series.route.clone()).or_default();
            route.0.add(&totals);
            if !series.consumer.is_empty() && totals.requests() > 0 {
                route.1.push((series.consumer.clone(), totals.clone()));
                consumers
                    .entry(series.consumer.clone())
                    .or_default()
                    .add(&totals);
            }
        }
        let per_consumer = |name: &str, totals: &Totals| {
            let mut value = totals.json(window);
            value["consumer"] = json!(name);
            value
        };
        json!({
            "window": humantime::format_duration(window).to_string(),
            "window_seconds": window.as_secs(),
            "slot_seconds": SLOT.as_secs(),
            "routes": routes.iter().map(|(name, (totals, by_consumer))| {
                let mut value = totals.json(window);
                value["route"] = json!(name.as_ref());
                value["consumers"] = Value::Array(by_consumer.iter().map(|(c, t)| per_consumer(c, t)).collect());
                value
            }).collect::<Vec<_>>(),
            "consumers": consumers.iter().map(|(c, t)| per_consumer(c, t)).collect::<Vec<_>>(),
        })
    }
}

/// Request bytes, from the request phase to the response phase.
#[derive(Clone, Copy)]
struct RequestBytes(u64);

/// The `analytics` filter of one route: it runs first, so it sees every answer (401s and
/// 429s included) and the consumer that authentication found.
pub struct AnalyticsFilter {
    analytics: Arc<Analytics>,
    anonymous: Arc<Series>,
    by_consumer: HashMap<Arc<str>, Arc<Series>>,
}

impl AnalyticsFilter {
    /// A filter recording into `route`'s series, one per consumer of `consumers`.
    pub fn new(analytics: Arc<Analytics>, route: &str, consumers: &[Arc<str>]) -> Self {
        AnalyticsFilter {
            anonymous: analytics.series(route, ""),
            by_consumer: consumers
                .iter()
                .map(|c| (c.clone(), analytics.series(route, c)))
                .collect(),
            analytics,
        }
    }
}

#[async_trait]
impl Filter for AnalyticsFilter {
    fn name(&self) -> &'static str {
        "analytics"
    }

    async fn on_request(
        &self,
        ctx: &mut RequestContext,
        request: &mut Parts,
    ) -> Result<(), Response<ProxyBody>> {
        let declared = request
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        ctx.extensions.insert(RequestBytes(declared));
        Ok(())
    }

    async fn on_response(&self, ctx: &mut RequestContext, response: &mut Response<ProxyBody>) {
        let series = ctx
            .consumer
            .as_ref()
            .and_then(|c| self.by_consumer.get(c))
            .unwrap_or(&self.anonymous)
            .clone();
        let record = Record {
            series,
            slot: self.analytics.slot_now(),
            status: response.status().as_u16(),
            bytes_in: ctx.extensions.get::<RequestBytes>().map_or(0, |b| b.0),
            latency: ctx.start.elapsed(),
        };
        let body = std::mem::replace(response.body_mut(), ProxyBody::empty());
        *response.body_mut() = ProxyBody::boxed(BoxBody::new(Counted {
            inner: body,
            sent: 0,
            record: Some(record),
        }));
    }
}

struct Record {
    series: Arc<Series>,
    slot: u64,
    status: u16,
    bytes_in: u64,
    latency: Duration,
}

/// A body that counts its bytes and records the request when it ends (or is dropped).
struct Counted {
    inner: ProxyBody,
    sent: u64,
    record: Option<Record>,
}

impl Counted {
    fn finish(&mut self) {
        if let Some(r) = self.record.take() {
            r.series
                .record(r.slot, r.status, r.bytes_in, self.sent, r.latency);
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.finish();
    }
}

impl Body for Counted {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.sent += data.len() as u64;
                }
            }
            Poll::Ready(None | Some(Err(_))) => this.finish(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_buckets_cover_the_range() {
        assert_eq!(window_bucket(Duration::from_micros(50)), 0);
        assert_eq!(window_bucket(Duration::from_micros(100)), 0);
        assert_eq!(window_bucket(Duration::from_micros(126)), 2);
        assert_eq!(window_bucket(Duration::from_secs(1000)), WINDOW_BUCKETS - 1);
        for ms in [1u64, 7, 20, 150, 900, 4000] {
            let value = bucket_value_ms(window_bucket(Duration::from_millis(ms)));
            let error = (value - ms as f64).abs() / ms as f64;
            assert!(error < 0.13, "{ms} ms read back as {value} ms");
        }
    }

    #[test]
    fn stats_over_a_window() {
        let analytics = Analytics::default();
        let alice = analytics.series("orders", "alice");
        let anonymous = analytics.series("orders", "");
        analytics.series("quiet", "");
        for i in 0..100u64 {
            alice.record(0, 200, 10, 100, Duration::from_millis(i + 1));
        }
        anonymous.record(0, 401, 0, 50, Duration::from_millis(1));
        alice.record(0, 503, 0, 7, Duration::from_millis(1));
        let stats = analytics.stats(Duration::from_secs(300));
        let route = &stats["routes"][0];
        assert_eq!(route["route"], "orders");
        assert_eq!(route["requests"], 102);
        assert_eq!(route["status"]["2xx"], 100);
        assert_eq!(route["status"]["4xx"], 1);
        assert_eq!(route["status"]["5xx"], 1);
        assert_eq!(route["bytes_in"], 1000);
        assert_eq!(route["bytes_out"], 100 * 100 + 50 + 7);
        let p50 = route["latency_ms"]["p50"].as_f64().unwrap();
        let p99 = route["latency_ms"]["p99"].as_f64().unwrap();
        assert!((44.0..=57.0).contains(&p50), "p50 {p50}");
        assert!((87.0..=112.0).contains(&p99), "p99 {p99}");
        assert_eq!(
            stats["routes"].as_array().unwrap().len(),
            1,
            "series without requests are left out"
        );
        assert_eq!(stats["consumers"][0]["consumer"], "alice");
        assert_eq!(stats["consumers"][0]["requests"], 101);
        assert_eq!(route["consumers"][0]["requests"], 101);

        let analytics = Arc::new(analytics);
        let out = {
            let analytics = analytics.clone();
            switchyard_metrics::exposition::render_one(
                switchyard_metrics::Format::Prometheus,
                move |e| analytics.encode(e),
            )
        };
        assert!(out.contains("switchyard_usage_requests_total{route=\"orders\",consumer=\"alice\",class=\"2xx\"} 100\n"), "{out}");
        assert!(
            out.contains(
                "switchyard_usage_requests_total{route=\"orders\",consumer=\"\",class=\"4xx\"} 1\n"
            ),
            "{out}"
        );
        assert!(out.contains("switchyard_usage_duration_seconds_count{route=\"orders\",consumer=\"alice\"} 101\n"), "{out}");
        assert!(out.contains("switchyard_usage_duration_seconds_bucket{le=\"0.05\",route=\"orders\",consumer=\"alice\"} 51\n"), "{out}");
        assert!(!out.contains("quiet"));
    }

    #[test]
    fn one_snapshot_per_slot_from_many_threads() {
        let analytics = Analytics::default();
        let series = analytics.series("r", "");
        std::thread::scope(|scope| {
            for _ in 0..4 {
                let series = &series;
                scope.spawn(move || {
                    for slot in 0..50u64 {
                        for _ in 0..20 {
                            series.record(slot, 200, 0, 1, Duration::from_millis(1));
                        }
                    }
                });
            }
        });
        let window = series.window.load();
        let indexes: Vec<u64> = window.iter().map(|s| s.index).collect();
        assert!(indexes.windows(2).all(|w| w[0] < w[1]), "{indexes:?}");
        assert!(indexes.len() <= 50 && indexes[0] == 0, "{indexes:?}");
        assert_eq!(series.totals(0, 49).requests(), 4 * 50 * 20);
    }

    #[test]
    fn old_slots_leave_the_window() {
        let analytics = Analytics::default();
        let series = analytics.series("r", "");
        series.record(0, 200, 0, 1, Duration::from_millis(1));
        series.record(40, 200, 0, 1, Duration::from_millis(1));
        assert_eq!(series.totals(10, 40).requests(), 1);
        assert_eq!(series.totals(0, 40).requests(), 2);
        series.record(SLOTS_KEPT + 1, 200, 0, 1, Duration::from_millis(1));
        assert_eq!(
            series.totals(0, SLOTS_KEPT + 1).requests(),
            2,
            "slot 0 dropped after an hour"
        );
    }
}
