//! Which protocol the gateway speaks to an upstream's endpoints (`[upstreams.NAME] protocol`).
//!
//! `http1` (the default) uses the hand-built HTTP/1.1 client; `h2c` is prior-knowledge
//! cleartext HTTP/2 and `h2` is HTTP/2 over TLS with ALPN `h2` (the upstream's `[tls]`),
//! both through [`crate::client::h2`]. `auto` reads the endpoint's `protocol` label, which
//! the registries fill in: a Kubernetes EndpointSlice port's `appProtocol`, a Consul
//! service's `Meta.protocol`, an etcd entry's `metadata.protocol`, a file_sd
//! `__protocol__` label. Values, as Kubernetes (KEP-3726: `kubernetes.io/h2c`) and the
//! Gateway API implementations (Istio, Envoy Gateway: `grpc`, `http2`, `h2c`) read them:
//!
//! | label | plain upstream | upstream with `[tls]` |
//! |---|---|---|
//! | `kubernetes.io/h2c`, `h2c`, `grpc`, `http2` | h2c | h2 |
//! | `h2`, `grpcs` | h2c | h2 |
//! | anything else, or none (`http`, `https`, `kubernetes.io/ws`) | http1 | http1 over TLS |
//!
//! A registry that says `https` asks for TLS, which only `[upstreams.NAME.tls]` turns on
//! (the gateway never guesses certificates), so it maps to HTTP/1.1.

use std::str::FromStr;

/// `[upstreams.NAME] protocol`. Default [`UpstreamProtocol::Http1`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 (over TLS when the upstream has `[tls]`).
    #[default]
    Http1,
    /// Prior-knowledge cleartext HTTP/2.
    H2c,
    /// HTTP/2 over TLS, ALPN `h2`.
    H2,
    /// Per endpoint, from its registry's `protocol` label; HTTP/1.1 when there is none.
    Auto,
}

impl FromStr for UpstreamProtocol {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "http1" => Ok(UpstreamProtocol::Http1),
            "h2c" => Ok(UpstreamProtocol::H2c),
            "h2" => Ok(UpstreamProtocol::H2),
            "auto" => Ok(UpstreamProtocol::Auto),
            other => Err(format!(
                "unknown protocol {other:?} (known: http1, h2c, h2, auto)"
            )),
        }
    }
}

/// What is spoken to one endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wire {
    /// HTTP/1.1.
    Http1,
    /// HTTP/2 (cleartext or over TLS, as the upstream's `[tls]` says).
    Http2,
}

impl Wire {
    /// The name `/api/upstreams` shows for this wire, given whether the upstream has TLS.
    pub fn name(self, tls: bool) -> &'static str {
        match (self, tls) {
            (Wire::Http1, _) => "http1",
            (Wire::Http2, false) => "h2c",
            (Wire::Http2, true) => "h2",
        }
    }
}

/// The endpoint label `auto` reads.
pub const PROTOCOL_LABEL: &str = "protocol";

/// Whether a registry's protocol label asks for HTTP/2.
pub fn label_is_http2(label: &str) -> bool {
    matches!(
        label.trim().to_ascii_lowercase().as_str(),
        "kubernetes.io/h2c" | "h2c" | "grpc" | "http2" | "h2" | "grpcs"
    )
}

impl UpstreamProtocol {
    /// The wire for an endpoint whose registry labels are `metadata`.
    pub fn wire(self, metadata: &switchyard_registry::Metadata) -> Wire {
        match self {
            UpstreamProtocol::Http1 => Wire::Http1,
            UpstreamProtocol::H2c | UpstreamProtocol::H2 => Wire::Http2,
            UpstreamProtocol::Auto => match metadata.get(PROTOCOL_LABEL) {
                Some(label) if label_is_http2(label) => Wire::Http2,
                _ => Wire::Http1,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(protocol: &str, label: Option<&str>, expected: Wire) {
        let protocol: UpstreamProtocol = protocol.parse().unwrap();
        let mut metadata = switchyard_registry::Metadata::new();
        if let Some(label) = label {
            metadata.insert(PROTOCOL_LABEL.into(), label.into());
        }
        assert_eq!(protocol.wire(&metadata), expected, "{protocol:?} {label:?}");
    }

    #[test]
    fn wires() {
        check("http1", Some("grpc"), Wire::Http1);
        check("h2c", None, Wire::Http2);
        check("h2", None, Wire::Http2);
        check("auto", None, Wire::Http1);
        check("auto", Some("kubernetes.io/h2c"), Wire::Http2);
        check("auto", Some("grpc"), Wire::Http2);
        check("auto", Some("GRPC"), Wire::Http2);
        check("auto", Some("http2"), Wire::Http2);
        check("auto", Some("https"), Wire::Http1);
        check("auto", Some("http"), Wire::Http1);
        check("auto", Some("kubernetes.io/ws"), Wire::Http1);
        assert!("h3"
            .parse::<UpstreamProtocol>()
            .unwrap_err()
            .contains("known"));
    }
}
