//! Label values as the text formats need them: `prometheus-client` writes a label value
//! as given, so a value holding `\`, `"` or a newline must be escaped first (the escaping
//! of the Prometheus text format and of OpenMetrics is the same for label values).

use std::fmt::Write as _;

use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};

/// A label value written escaped (`\\`, `\"`, `\n`).
#[derive(Clone, Copy, Debug)]
pub struct Escaped<'a>(pub &'a str);

impl EncodeLabelValue for Escaped<'_> {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        let mut rest = self.0;
        while let Some(at) = rest.find(['\\', '"', '\n']) {
            encoder.write_str(&rest[..at])?;
            encoder.write_str(match rest.as_bytes()[at] {
                b'\\' => "\\\\",
                b'"' => "\\\"",
                _ => "\\n",
            })?;
            rest = &rest[at + 1..];
        }
        encoder.write_str(rest)
    }
}

/// A label set of `N` (name, value) pairs, values escaped.
pub type Labels<'a, const N: usize> = [(&'static str, Escaped<'a>); N];
