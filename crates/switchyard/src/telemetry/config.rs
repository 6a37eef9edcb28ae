//! `[tracing]`: where and how to export OpenTelemetry traces. Present means on; absent
//! (the default) means off, at no cost to requests.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use switchyard_registry::{decode_settings, ConfigIssue};

/// `[tracing]`.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TracingConfig {
    /// The OTLP collector. For `http/protobuf`, a base URL (`/v1/traces` is appended when it
    /// has no path) or the full traces URL; for `grpc`, the collector's address. Plain
    /// `http://` only. Default `http://127.0.0.1:4318` (`http://127.0.0.1:4317` for grpc).
    pub otlp_endpoint: Option<String>,
    /// `http/protobuf` or `grpc`. Default `http/protobuf`.
    pub protocol: OtlpProtocol,
    /// The `service.name` resource attribute. Default `switchyard`.
    pub service_name: String,
    /// `always_on`, `always_off`, `ratio` or `parent_based_ratio` (the OpenTelemetry
    /// samplers `AlwaysOn`, `AlwaysOff`, `TraceIdRatioBased`, `ParentBased(TraceIdRatioBased)`).
    /// Default `parent_based_ratio`.
    pub sampler: SamplerKind,
    /// The share of traces sampled by `ratio` and `parent_based_ratio`, 0.0 to 1.0.
    /// Default 1.0 (with the default sampler: OpenTelemetry's own default, `parentbased_always_on`).
    pub ratio: f64,
    /// Headers sent with every export (a collector's credentials). Default none.
    pub headers: BTreeMap<String, String>,
    /// More resource attributes (`deployment.environment = "prod"`). Default none.
    pub resource_attributes: BTreeMap<String, String>,
    /// Continue the trace of a request's `traceparent` (or B3) headers; false starts a trace
    /// of its own for every request and drops the client's trace headers. Default true.
    pub trust_incoming_trace: bool,
    /// Header formats read and written: `tracecontext`, `baggage`, `b3`. Default
    /// `["tracecontext", "baggage"]`.
    pub propagators: Vec<PropagatorName>,
    /// Finished spans waiting for export at most; past it spans are dropped and counted in
    /// `switchyard_tracing_spans_dropped_total`. Default 2048.
    pub max_queue_size: usize,
    /// Spans per export at most. Default 512.
    pub max_export_batch_size: usize,
    /// Longest wait before a partial batch is exported. Default 1 s.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub export_interval: Duration,
    /// Time allowed for one export; the batch is dropped (and counted) after it. Default 10 s.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub export_timeout: Duration,
}

impl Default for TracingConfig {
    fn default() -> Self {
        TracingConfig {
            otlp_endpoint: None,
            protocol: OtlpProtocol::HttpProtobuf,
            service_name: "switchyard".into(),
            sampler: SamplerKind::ParentBasedRatio,
            ratio: 1.0,
            headers: BTreeMap::new(),
            resource_attributes: BTreeMap::new(),
            trust_incoming_trace: true,
            propagators: vec![PropagatorName::Tracecontext, PropagatorName::Baggage],
            max_queue_size: 2048,
            max_export_batch_size: 512,
            export_interval: Duration::from_secs(1),
            export_timeout: Duration::from_secs(10),
        }
    }
}

/// `tracing.protocol`.
#[derive(Clone, Copy, Debug, Deserialize, schemars::JsonSchema, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// OTLP/HTTP with protobuf bodies.
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
    /// OTLP/gRPC.
    #[serde(rename = "grpc")]
    Grpc,
}

/// `tracing.sampler`.
#[derive(Clone, Copy, Debug, Deserialize, schemars::JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SamplerKind {
    /// Every trace.
    AlwaysOn,
    /// No trace.
    AlwaysOff,
    /// `ratio` of the traces, by trace id, whatever the client's decision.
    Ratio,
    /// The client's decision when it sent one, else `ratio` of the traces.
    ParentBasedRatio,
}

/// One of `tracing.propagators`.
#[derive(Clone, Copy, Debug, Deserialize, schemars::JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PropagatorName {
    /// W3C Trace Context.
    Tracecontext,
    /// W3C Baggage.
    Baggage,
    /// Zipkin B3.
    B3,
}

impl TracingConfig {
    /// The collector address, with the protocol's default.
    pub fn endpoint(&self) -> &str {
        match (&self.otlp_endpoint, self.protocol) {
            (Some(endpoint), _) => endpoint,
            (None, OtlpProtocol::HttpProtobuf) => "http://127.0.0.1:4318",
            (None, OtlpProtocol::Grpc) => "http://127.0.0.1:4317",
        }
    }
}

/// Decodes and checks `[tracing]`; issues name their key under `tracing`.
pub fn decode(value: &serde_json::Value) -> Result<TracingConfig, Vec<ConfigIssue>> {
    let config: TracingConfig = decode_settings(value).map_err(|i| vec![i.under("tracing")])?;
    let mut issues = Vec::new();
    if !(0.0..=1.0).contains(&config.ratio) {
        issues.push(ConfigIssue::new(
            "tracing.ratio",
            format!("must be between 0.0 and 1.0, not {}", config.ratio),
        ));
    }
    match config.endpoint().parse::<http::Uri>() {
        Ok(uri) if uri.scheme_str() == Some("http") && uri.host().is_some() => {}
        Ok(_) => issues.push(ConfigIssue::new(
            "tracing.otlp_endpoint",
            "must be an http:// URL with a host (TLS to the collector is not supported)",
        )),
        Err(e) => issues.push(ConfigIssue::new(
            "tracing.otlp_endpoint",
            format!("not a URL: {e}"),
        )),
    }
    if config.service_name.is_empty() {
        issues.push(ConfigIssue::new(
            "tracing.service_name",
            "must not be empty",
        ));
    }
    for name in config.headers.keys() {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            issues.push(ConfigIssue::new(
                format!("tracing.headers.{name}"),
                "not a valid header name",
            ));
        }
    }
    for (name, value) in [
        ("max_queue_size", config.max_queue_size),
        ("max_export_batch_size", config.max_export_batch_size),
    ] {
        if value == 0 {
            issues.push(ConfigIssue::new(
                format!("tracing.{name}"),
                "must be at least 1",
            ));
        }
    }
    if issues.is_empty() {
        Ok(config)
    } else {
        Err(issues)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(value: serde_json::Value, want: Result<(), &str>) {
        match (decode(&value), want) {
            (Ok(_), Ok(())) => {}
            (Err(issues), Err(path)) => {
                assert!(issues.iter().any(|i| i.path == path), "{value}: {issues:?}");
            }
            (got, want) => panic!("{value}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn decodes_and_checks() {
        use serde_json::json;
        check(json!({}), Ok(()));
        check(
            json!({"otlp_endpoint": "http://127.0.0.1:4317", "protocol": "grpc",
                   "sampler": "ratio", "ratio": 0.01, "propagators": ["tracecontext", "b3"],
                   "headers": {"authorization": "Bearer x"},
                   "resource_attributes": {"deployment.environment": "prod"}}),
            Ok(()),
        );
        check(json!({"ratio": 1.5}), Err("tracing.ratio"));
        check(
            json!({"otlp_endpoint": "https://c:4318"}),
            Err("tracing.otlp_endpoint"),
        );
        check(json!({"sampler": "sometimes"}), Err("tracing.sampler"));
        check(
            json!({"propagators": ["jaeger"]}),
            Err("tracing.propagators[0]"),
        );
        check(json!({"protocol": "http/json"}), Err("tracing.protocol"));
        check(
            json!({"headers": {"bad name": "x"}}),
            Err("tracing.headers.bad name"),
        );
        check(json!({"max_queue_size": 0}), Err("tracing.max_queue_size"));
        check(json!({"unknown": 1}), Err("tracing.unknown"));
        let d = decode(&json!({})).unwrap();
        assert_eq!(d.service_name, "switchyard");
        assert!(d.trust_incoming_trace);
        assert_eq!(d.endpoint(), "http://127.0.0.1:4318");
    }
}
