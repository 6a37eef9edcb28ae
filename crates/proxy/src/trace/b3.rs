//! Zipkin B3 propagation (<https://github.com/openzipkin/b3-propagation>): reads the single
//! `b3` header (`{TraceId}-{SpanId}[-{SamplingState}[-{ParentSpanId}]]`) or, without it, the
//! multiple `X-B3-TraceId`, `X-B3-SpanId`, `X-B3-Sampled`, `X-B3-Flags` headers; writes the
//! multiple headers, which every B3 implementation reads. A 64-bit trace id is left-padded
//! with zeros to 128 bits, as the B3 spec says.

use std::sync::OnceLock;

use opentelemetry::propagation::text_map_propagator::FieldIter;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry::Context;

const B3: &str = "b3";
const TRACE_ID: &str = "x-b3-traceid";
const SPAN_ID: &str = "x-b3-spanid";
const PARENT_SPAN_ID: &str = "x-b3-parentspanid";
const SAMPLED: &str = "x-b3-sampled";
const FLAGS: &str = "x-b3-flags";

/// The B3 propagator (`propagators = [..., "b3"]`).
#[derive(Clone, Copy, Debug, Default)]
pub struct B3Propagator;

fn trace_id(hex: &str) -> Option<TraceId> {
    let valid = (hex.len() == 16 || hex.len() == 32)
        && hex
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
    let id = TraceId::from_hex(hex).ok().filter(|_| valid)?;
    (id != TraceId::INVALID).then_some(id)
}

fn span_id(hex: &str) -> Option<SpanId> {
    let valid = hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit());
    let id = SpanId::from_hex(hex).ok().filter(|_| valid)?;
    (id != SpanId::INVALID).then_some(id)
}

/// `1`, `d` (debug) and `true` sample; `0` and `false` do not; absent defers (sampled here:
/// the gateway's own sampler then decides for a parent-based sampler's remote parent).
fn sampled(state: Option<&str>) -> Option<bool> {
    match state {
        Some("1" | "d" | "true") => Some(true),
        Some("0" | "false") => Some(false),
        Some(_) => None,
        None => Some(true),
    }
}

fn context(trace: TraceId, span: SpanId, sampled: bool) -> SpanContext {
    let flags = if sampled {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    SpanContext::new(trace, span, flags, true, TraceState::default())
}

impl B3Propagator {
    fn extract_span(extractor: &dyn Extractor) -> Option<SpanContext> {
        if let Some(single) = extractor.get(B3) {
            let mut parts = single.trim().split('-');
            let trace = trace_id(parts.next()?)?;
            let span = span_id(parts.next()?)?;
            let sampled = sampled(parts.next())?;
            return Some(context(trace, span, sampled));
        }
        let trace = trace_id(extractor.get(TRACE_ID)?.trim())?;
        let span = span_id(extractor.get(SPAN_ID)?.trim())?;
        let sampled = if extractor.get(FLAGS).map(str::trim) == Some("1") {
            true
        } else {
            sampled(extractor.get(SAMPLED).map(str::trim))?
        };
        Some(context(trace, span, sampled))
    }
}

impl TextMapPropagator for B3Propagator {
    fn inject_context(&self, cx: &Context, injector: &mut dyn Injector) {
        let span = cx.span();
        let context = span.span_context();
        if !context.is_valid() {
            return;
        }
        injector.set(TRACE_ID, format!("{:032x}", context.trace_id()));
        injector.set(SPAN_ID, format!("{:016x}", context.span_id()));
        let sampled = if context.is_sampled() { "1" } else { "0" };
        injector.set(SAMPLED, sampled.to_owned());
    }

    fn extract_with_context(&self, cx: &Context, extractor: &dyn Extractor) -> Context {
        match Self::extract_span(extractor) {
            Some(span) => cx.with_remote_span_context(span),
            None => cx.clone(),
        }
    }

    fn fields(&self) -> FieldIter<'_> {
        static FIELDS: OnceLock<Vec<String>> = OnceLock::new();
        let fields = FIELDS.get_or_init(|| {
            [B3, TRACE_ID, SPAN_ID, PARENT_SPAN_ID, SAMPLED, FLAGS]
                .map(String::from)
                .to_vec()
        });
        FieldIter::new(fields)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn extract(headers: &[(&str, &str)]) -> Option<(String, String, bool)> {
        let map: HashMap<String, String> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let cx = B3Propagator.extract(&map);
        let span = cx.span();
        let sc = span.span_context();
        sc.is_valid().then(|| {
            (
                format!("{:032x}", sc.trace_id()),
                format!("{:016x}", sc.span_id()),
                sc.is_sampled(),
            )
        })
    }

    #[test]
    fn reads_single_and_multiple_headers() {
        let t = "80f198ee56343ba864fe8b2a57d3eff7";
        let s = "e457b5a2e4d86bd1";
        let want = Some((t.to_owned(), s.to_owned(), true));
        assert_eq!(
            extract(&[("b3", &format!("{t}-{s}-1-05e3ac9a4f6e3b90"))]),
            want
        );
        assert_eq!(
            extract(&[
                ("x-b3-traceid", t),
                ("x-b3-spanid", s),
                ("x-b3-sampled", "1")
            ]),
            want
        );
        assert_eq!(
            extract(&[("b3", &format!("{t}-{s}-0"))]),
            Some((t.to_owned(), s.to_owned(), false))
        );
        // A 64-bit trace id is padded.
        assert_eq!(
            extract(&[("b3", &format!("64fe8b2a57d3eff7-{s}"))]).map(|x| x.0),
            Some("000000000000000064fe8b2a57d3eff7".to_owned())
        );
        assert_eq!(extract(&[("b3", "0")]), None);
        assert_eq!(extract(&[("b3", "zz-yy")]), None);
        assert_eq!(extract(&[]), None);
    }

    #[test]
    fn writes_multiple_headers() {
        let sc = context(
            TraceId::from_hex("80f198ee56343ba864fe8b2a57d3eff7").unwrap(),
            SpanId::from_hex("e457b5a2e4d86bd1").unwrap(),
            true,
        );
        let mut out: HashMap<String, String> = HashMap::new();
        B3Propagator.inject_context(&Context::new().with_remote_span_context(sc), &mut out);
        assert_eq!(out[TRACE_ID], "80f198ee56343ba864fe8b2a57d3eff7");
        assert_eq!(out[SPAN_ID], "e457b5a2e4d86bd1");
        assert_eq!(out[SAMPLED], "1");
    }
}
