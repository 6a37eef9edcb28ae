//! Decoding one `200` answer of the inventory server: the checks Prometheus makes
//! (`Content-Type: application/json`, a UTF-8 body; prometheus.io/docs/prometheus/latest/http_sd)
//! and the file_sd list itself, decoded by the `file` registry's decoder
//! ([`switchyard_file::parse_file_sd`]).
//!
//! Pure: no I/O, so it is fuzzed as it is (`fuzz/fuzz_targets/http_sd.rs`).

use switchyard_file::{parse_file_sd, Services};
use switchyard_registry::RegistryContext;

/// The services of a `200` answer with this `Content-Type` and body. An `Err` means the
/// whole answer is refused (the last good list stays); malformed groups or targets inside
/// a good list are skipped and counted in `ctx.metrics` instead.
pub fn decode_answer(
    content_type: &str,
    body: &[u8],
    ctx: &RegistryContext,
) -> Result<Services, String> {
    if !is_json(content_type) {
        return Err(format!(
            "Content-Type {content_type:?}, expected application/json"
        ));
    }
    let text = std::str::from_utf8(body).map_err(|_| "the body is not UTF-8".to_owned())?;
    parse_file_sd(text, ctx)
}

/// Prometheus accepts `application/json` with or without parameters.
pub fn is_json(content_type: &str) -> bool {
    let media = content_type.split(';').next().unwrap_or("").trim();
    media.eq_ignore_ascii_case("application/json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        for (value, ok) in [
            ("application/json", true),
            ("application/json; charset=utf-8", true),
            ("Application/JSON", true),
            ("text/plain", false),
            ("application/jsonx", false),
            ("", false),
        ] {
            assert_eq!(is_json(value), ok, "{value}");
        }
    }

    #[test]
    fn answers() {
        let ctx = RegistryContext::new("http");
        let good = br#"[{"targets":["127.0.0.1:1"],"labels":{"__service__":"a"}}]"#;
        assert_eq!(
            decode_answer("application/json", good, &ctx).unwrap()["a"].len(),
            1
        );
        assert!(decode_answer("application/json", b"[]", &ctx)
            .unwrap()
            .is_empty());
        assert!(decode_answer("text/html", good, &ctx)
            .unwrap_err()
            .contains("Content-Type"));
        assert!(decode_answer("application/json", b"\xff[]", &ctx).is_err());
        assert!(decode_answer("application/json", b"{}", &ctx).is_err());
        assert_eq!(ctx.metrics.errors(), 0);
    }
}
