//! `/metrics` from one `prometheus-client` registry, in the format the scraper asks for.
//!
//! - OpenMetrics 1.0 (`Accept: application/openmetrics-text`): the library's text
//!   encoding, with the exemplars of [`Histogram`](crate::Histogram)s written after their
//!   bucket lines (` # {trace_id="..."} value timestamp`), and the closing `# EOF`.
//! - Otherwise the Prometheus text format 0.0.4: the same text with the counter
//!   descriptors renamed to their sample names (`# TYPE switchyard_requests_total
//!   counter`), no `# UNIT`, no exemplars, no `# EOF`.
//!
//! `prometheus-client` gives no way to build its `Exemplar` outside the crate, so a
//! histogram's encoding hands its exemplars to the rendering in progress on the same
//! thread (a thread-local list, one entry per histogram series in encoding order), and
//! [`render`] writes them at the end of that series' bucket lines, which the library
//! writes in a fixed order: `_sum`, `_count`, then one `_bucket` per bound, `+Inf` last.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::time::UNIX_EPOCH;

use prometheus_client::registry::Registry;

use crate::exemplar::Exemplar;

/// The exposition format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// The Prometheus text format 0.0.4 (the default).
    Prometheus,
    /// OpenMetrics 1.0 text, with exemplars.
    OpenMetrics,
}

impl Format {
    /// The format an `Accept` header asks for: OpenMetrics when it names
    /// `application/openmetrics-text` (with a non-zero `q`), else Prometheus text.
    pub fn from_accept(accept: Option<&str>) -> Format {
        let wants = accept.unwrap_or("").split(',').any(|range| {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or("");
            media.eq_ignore_ascii_case("application/openmetrics-text")
                && !parts.any(|p| {
                    p.split_once('=').is_some_and(|(k, v)| {
                        k.trim().eq_ignore_ascii_case("q")
                            && v.trim().parse::<f64>().is_ok_and(|q| q <= 0.0)
                    })
                })
        });
        if wants {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        }
    }

    /// The `Content-Type` of an exposition in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// A `Collector` made of a function that writes families (it captures what it reads, as
/// `Arc`s: a collector lives in the registry).
pub struct Collect<F>(pub F);

impl<F> std::fmt::Debug for Collect<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Collect")
    }
}

impl<F> prometheus_client::collector::Collector for Collect<F>
where
    F: Fn(&mut prometheus_client::encoding::DescriptorEncoder) -> std::fmt::Result
        + Send
        + Sync
        + 'static,
{
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> std::fmt::Result {
        (self.0)(&mut encoder)
    }
}

/// A boxed [`Collect`] of `write` (the bound lets a closure's encoder argument be
/// inferred for any lifetime).
pub fn collector<F>(write: F) -> Box<Collect<F>>
where
    F: Fn(&mut prometheus_client::encoding::DescriptorEncoder) -> std::fmt::Result
        + Send
        + Sync
        + 'static,
{
    Box::new(Collect(write))
}

/// Renders the families one function writes (a registry of one [`Collect`]).
pub fn render_one<F>(format: Format, write: F) -> String
where
    F: Fn(&mut prometheus_client::encoding::DescriptorEncoder) -> std::fmt::Result
        + Send
        + Sync
        + 'static,
{
    let mut registry = Registry::default();
    registry.register_collector(collector(write));
    render(&registry, format)
}

thread_local! {
    /// The exemplars of the histogram series encoded so far by the [`render`] running on
    /// this thread (`None`: no rendering in progress).
    static PENDING: RefCell<Option<Vec<Vec<Option<Exemplar>>>>> = const { RefCell::new(None) };
}

/// Called by a histogram's encoding: its series' exemplars, one per bucket (empty when it
/// keeps none).
pub(crate) fn pending_exemplars(exemplars: Vec<Option<Exemplar>>) {
    PENDING.with(|p| {
        if let Some(list) = p.borrow_mut().as_mut() {
            list.push(exemplars);
        }
    });
}

/// Renders every family of `registry` in `format`.
pub fn render(registry: &Registry, format: Format) -> String {
    let mut text = String::with_capacity(16 * 1024);
    PENDING.with(|p| *p.borrow_mut() = Some(Vec::new()));
    // Writing to a String cannot fail; a collector's own error ends the page early.
    let encoded = prometheus_client::encoding::text::encode_registry(&mut text, registry);
    let exemplars = PENDING.with(|p| p.borrow_mut().take()).unwrap_or_default();
    if let Err(e) = encoded {
        eprintln!("switchyard: /metrics: a metric family failed to encode: {e}");
    }
    match format {
        Format::OpenMetrics => {
            let mut out = with_exemplars(&text, &exemplars);
            out.push_str("# EOF\n");
            out
        }
        Format::Prometheus => to_prometheus(&text),
    }
}

/// `text` with each histogram bucket line followed by its exemplar, if any.
fn with_exemplars(text: &str, exemplars: &[Vec<Option<Exemplar>>]) -> String {
    let mut out = String::with_capacity(text.len() + 128 * exemplars.len());
    let mut histogram: Option<&str> = None;
    let mut series: Option<usize> = None;
    let mut bucket = 0;
    for line in text.lines() {
        out.push_str(line);
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            histogram = rest.strip_suffix(" histogram");
        } else if let Some(name) = histogram.filter(|_| !line.starts_with('#')) {
            let suffix = &line[name.len().min(line.len())..];
            if suffix.starts_with("_sum{") || suffix.starts_with("_sum ") {
                series = Some(series.map_or(0, |s| s + 1));
                bucket = 0;
            } else if suffix.starts_with("_bucket{") {
                let exemplar = series
                    .and_then(|s| exemplars.get(s))
                    .and_then(|buckets| buckets.get(bucket))
                    .copied()
                    .flatten();
                if let Some(e) = exemplar {
                    let at = e.at.duration_since(UNIX_EPOCH).unwrap_or_default();
                    let _ = write!(
                        out,
                        " # {{trace_id=\"{}\"}} {} {}.{:03}",
                        e.trace_id,
                        e.value,
                        at.as_secs(),
                        at.subsec_millis()
                    );
                }
                bucket += 1;
            }
        }
        out.push('\n');
    }
    out
}

/// OpenMetrics text as the Prometheus text format 0.0.4 (see the module docs).
fn to_prometheus(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 1024);
    let mut help: Option<&str> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help = Some(rest);
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.rsplit_once(' ').unwrap_or((rest, "untyped"));
            let (suffix, kind) = match kind {
                "counter" => ("_total", kind),
                "unknown" => ("", "untyped"),
                _ => ("", kind),
            };
            if let Some(help) = help.take() {
                let text = help.split_once(' ').map_or("", |(_, text)| text);
                let _ = writeln!(out, "# HELP {name}{suffix} {text}");
            }
            let _ = writeln!(out, "# TYPE {name}{suffix} {kind}");
            continue;
        }
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exemplar::TraceId;
    use crate::family;
    use crate::labels::Escaped;
    use crate::Histogram;
    use prometheus_client::collector::Collector;
    use prometheus_client::encoding::DescriptorEncoder;
    use std::sync::Arc;
    use std::time::Duration;

    const BOUNDS: [f64; 2] = [0.01, 0.1];

    #[derive(Debug)]
    struct Fixture {
        routes: Vec<(&'static str, Arc<Histogram>)>,
        plain: Histogram,
    }

    impl Collector for Fixture {
        fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
            family::counter(
                &mut encoder,
                "t_requests_total",
                "Requests.",
                [([("route", Escaped("a\"b\\c\nd"))], 3u64)],
            )?;
            family::single_gauge(&mut encoder, "t_up", "Up.", 1i64)?;
            family::single_histogram(&mut encoder, "t_plain_seconds", "Plain.", &self.plain)?;
            family::histogram(
                &mut encoder,
                "t_duration_seconds",
                "Durations.",
                self.routes
                    .iter()
                    .map(|(r, h)| ([("route", Escaped(r))], &**h)),
            )
        }
    }

    fn registry() -> Registry {
        let a = Arc::new(Histogram::with_exemplars(&BOUNDS));
        let b = Arc::new(Histogram::with_exemplars(&BOUNDS));
        a.observe_traced(Duration::from_millis(50), Some(TraceId([0x11; 16])));
        a.observe(Duration::from_millis(1));
        b.observe_traced(Duration::from_secs(2), Some(TraceId([0x22; 16])));
        let plain = Histogram::new(&BOUNDS);
        plain.observe(Duration::from_millis(5));
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Fixture {
            routes: vec![("a", a), ("b", b)],
            plain,
        }));
        registry
    }

    #[test]
    fn prometheus_text() {
        let text = render(&registry(), Format::Prometheus);
        for line in [
            "# HELP t_requests_total Requests.\n# TYPE t_requests_total counter\n",
            "t_requests_total{route=\"a\\\"b\\\\c\\nd\"} 3\n",
            "# TYPE t_up gauge\nt_up 1\n",
            "t_plain_seconds_bucket{le=\"0.01\"} 1\n",
            "t_duration_seconds_bucket{le=\"0.01\",route=\"a\"} 1\n",
            "t_duration_seconds_bucket{le=\"0.1\",route=\"a\"} 2\n",
            "t_duration_seconds_bucket{le=\"+Inf\",route=\"a\"} 2\n",
            "t_duration_seconds_count{route=\"b\"} 1\n",
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
        assert!(
            !text.contains("# EOF") && !text.contains("trace_id"),
            "{text}"
        );
    }

    #[test]
    fn openmetrics_with_exemplars_after_their_buckets() {
        let text = render(&registry(), Format::OpenMetrics);
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(text.contains("# TYPE t_requests counter\n"), "{text}");
        let line = |prefix: &str| {
            text.lines()
                .find(|l| l.starts_with(prefix))
                .unwrap_or_else(|| panic!("{prefix} in\n{text}"))
                .to_owned()
        };
        let a = line("t_duration_seconds_bucket{le=\"0.1\",route=\"a\"}");
        assert!(
            a.starts_with(&format!(
                "t_duration_seconds_bucket{{le=\"0.1\",route=\"a\"}} 2 # {{trace_id=\"{}\"}} 0.05 ",
                "11".repeat(16)
            )),
            "{a}"
        );
        let b = line("t_duration_seconds_bucket{le=\"+Inf\",route=\"b\"}");
        assert!(b.contains(&"22".repeat(16)), "{b}");
        assert!(!line("t_duration_seconds_bucket{le=\"0.01\",route=\"a\"}").contains('#'));
        assert!(!line("t_plain_seconds_bucket{le=\"0.01\"}").contains('#'));
        assert_eq!(text.matches("trace_id").count(), 2, "{text}");
    }

    #[test]
    fn accept_headers() {
        let check = |accept: Option<&str>, want: Format| {
            assert_eq!(Format::from_accept(accept), want, "{accept:?}");
        };
        check(None, Format::Prometheus);
        check(Some("text/plain"), Format::Prometheus);
        check(Some("*/*"), Format::Prometheus);
        check(Some("application/openmetrics-text"), Format::OpenMetrics);
        // What Prometheus itself sends.
        check(
            Some("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"),
            Format::OpenMetrics,
        );
        check(
            Some("text/plain;version=0.0.4, application/openmetrics-text; q=0"),
            Format::Prometheus,
        );
    }
}
