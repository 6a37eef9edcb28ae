//! Writing a metric family from the atomics a `Collector` already holds: a descriptor
//! (`# HELP`, `# TYPE`) and one series per label set, through `prometheus-client`'s
//! encoder. Counter names are given whole (`switchyard_requests_total`): the library adds
//! the `_total` suffix itself, so it is taken off here.

use prometheus_client::encoding::{
    DescriptorEncoder, EncodeGaugeValue, EncodeLabelSet, EncodeMetric, NoLabelSet,
};
use prometheus_client::metrics::exemplar::Exemplar;
use prometheus_client::metrics::MetricType;

use crate::Histogram;

type Result = std::result::Result<(), std::fmt::Error>;

/// No exemplar on a counter sample.
const NO_EXEMPLAR: Option<&Exemplar<NoLabelSet, f64>> = None;

/// A counter family: `name` ends in `_total`.
pub fn counter<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (L, u64)>,
) -> Result {
    let base = name.strip_suffix("_total").unwrap_or(name);
    let mut metric = encoder.encode_descriptor(base, help, None, MetricType::Counter)?;
    for (labels, value) in series {
        metric
            .encode_family(&labels)?
            .encode_counter(&value, NO_EXEMPLAR)?;
    }
    Ok(())
}

/// A counter without labels: `name` ends in `_total`.
pub fn single_counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result {
    let base = name.strip_suffix("_total").unwrap_or(name);
    encoder
        .encode_descriptor(base, help, None, MetricType::Counter)?
        .encode_counter(&value, NO_EXEMPLAR)
}

/// A gauge family.
pub fn gauge<L: EncodeLabelSet, V: EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (L, V)>,
) -> Result {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in series {
        metric.encode_family(&labels)?.encode_gauge(&value)?;
    }
    Ok(())
}

/// A gauge without labels.
pub fn single_gauge<V: EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: V,
) -> Result {
    encoder
        .encode_descriptor(name, help, None, MetricType::Gauge)?
        .encode_gauge(&value)
}

/// A histogram family.
pub fn histogram<'h, L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (L, &'h Histogram)>,
) -> Result {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (labels, histogram) in series {
        histogram.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A histogram without labels.
pub fn single_histogram(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    histogram: &Histogram,
) -> Result {
    histogram.encode(encoder.encode_descriptor(name, help, None, MetricType::Histogram)?)
}
