//! OpenTelemetry tracing, wired from `[tracing]`: the OTLP exporter of `opentelemetry-otlp`
//! (HTTP/protobuf or gRPC), the SDK's tracer provider with the configured sampler and
//! resource, and the bounded export queue of [`export`]. The spans themselves are made on
//! the request path by `switchyard_proxy::trace`, which gets the tracer from [`start`].

pub mod config;
pub mod export;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider, SpanExporter as _};
use opentelemetry_sdk::Resource;
use switchyard_proxy::trace::{Propagation, RequestTracer};

pub use config::TracingConfig;
use config::{OtlpProtocol, PropagatorName, SamplerKind};
use export::{QueueProcessor, QueueSettings};

/// Builds the exporter, the provider and the request path's tracer from `config`.
/// Must run inside the Tokio runtime (the export task is spawned on it).
///
/// # Errors
/// The exporter could not be built (an endpoint or header the checks let through).
pub fn start(config: &TracingConfig) -> Result<Arc<RequestTracer>, String> {
    let resource = Resource::builder()
        .with_service_name(config.service_name.clone())
        .with_attributes(
            config
                .resource_attributes
                .iter()
                .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
        )
        .build();
    let mut exporter = match config.protocol {
        OtlpProtocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(http_traces_url(config.endpoint()))
            .with_timeout(config.export_timeout)
            .with_headers(
                config
                    .headers
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect::<HashMap<_, _>>(),
            )
            .build(),
        OtlpProtocol::Grpc => {
            let mut headers = http::HeaderMap::new();
            for (name, value) in &config.headers {
                let name = http::HeaderName::from_bytes(name.as_bytes())
                    .map_err(|e| format!("tracing.headers.{name}: {e}"))?;
                let value = http::HeaderValue::from_str(value)
                    .map_err(|e| format!("tracing.headers.{name}: {e}"))?;
                headers.insert(name, value);
            }
            let metadata =
                opentelemetry_otlp::tonic_types::metadata::MetadataMap::from_headers(headers);
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(config.endpoint())
                .with_timeout(config.export_timeout)
                .with_metadata(metadata)
                .build()
        }
    }
    .map_err(|e| format!("tracing: the OTLP exporter: {e}"))?;
    exporter.set_resource(&resource);
    let processor = QueueProcessor::start(
        exporter,
        QueueSettings {
            max_queue_size: config.max_queue_size,
            max_batch: config.max_export_batch_size,
            interval: config.export_interval,
            timeout: config.export_timeout,
        },
    );
    let sampler = match config.sampler {
        SamplerKind::AlwaysOn => Sampler::AlwaysOn,
        SamplerKind::AlwaysOff => Sampler::AlwaysOff,
        SamplerKind::Ratio => Sampler::TraceIdRatioBased(config.ratio),
        SamplerKind::ParentBasedRatio => {
            Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(config.ratio)))
        }
    };
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(sampler)
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("switchyard");
    let propagations: Vec<Propagation> = config
        .propagators
        .iter()
        .map(|p| match p {
            PropagatorName::Tracecontext => Propagation::TraceContext,
            PropagatorName::Baggage => Propagation::Baggage,
            PropagatorName::B3 => Propagation::B3,
        })
        .collect();
    Ok(Arc::new(RequestTracer::new(
        tracer,
        &propagations,
        config.trust_incoming_trace,
    )))
}

/// The OTLP/HTTP traces URL: a base URL without a path gets `/v1/traces` (as the
/// OpenTelemetry exporter spec says of `OTEL_EXPORTER_OTLP_ENDPOINT`); a URL with a path
/// is used as given.
fn http_traces_url(endpoint: &str) -> String {
    let without_scheme = endpoint
        .split_once("://")
        .map_or(endpoint, |(_, rest)| rest);
    match without_scheme.split_once('/') {
        None | Some((_, "")) => format!("{}/v1/traces", endpoint.trim_end_matches('/')),
        Some(_) => endpoint.to_owned(),
    }
}

/// Writes `switchyard_tracing_spans_dropped_total` (and the exported count) to
/// `/metrics`; zero while tracing is off.
pub fn encode_metrics(
    encoder: &mut switchyard_metrics::prometheus_client::encoding::DescriptorEncoder,
) -> std::fmt::Result {
    use switchyard_metrics::family;
    family::single_counter(
        encoder,
        "switchyard_tracing_spans_dropped_total",
        "Spans not exported: the export queue was full, or the export failed or timed out.",
        export::SPANS_DROPPED.load(Ordering::Relaxed),
    )?;
    family::single_counter(
        encoder,
        "switchyard_tracing_spans_exported_total",
        "Spans the collector accepted.",
        export::SPANS_EXPORTED.load(Ordering::Relaxed),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traces_urls() {
        let check = |endpoint: &str, want: &str| assert_eq!(http_traces_url(endpoint), want);
        check("http://127.0.0.1:4318", "http://127.0.0.1:4318/v1/traces");
        check("http://127.0.0.1:4318/", "http://127.0.0.1:4318/v1/traces");
        check("http://c:4318/custom/traces", "http://c:4318/custom/traces");
    }
}
