//! One GET of the inventory URL, as Prometheus's HTTP SD makes it, classified.
//!
//! The request carries `Accept: application/json`, `X-Prometheus-Refresh-Interval-Seconds`
//! (Prometheus sends it; inventory servers written for Prometheus may read it), the
//! configured `Authorization`, and `If-None-Match` with the last good answer's `ETag`.
//!
//! Prometheus's rules for the answer (prometheus.io/docs/prometheus/latest/http_sd): only
//! `200` counts (its body is checked by [`crate::answer`]); anything else is an error and the
//! current list stays. A `304 Not Modified` (our addition, for servers that honour
//! `If-None-Match`) keeps the current list too, as good.

use std::time::Duration;

use reqwest::header::{HeaderValue, ACCEPT, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use reqwest::StatusCode;
use switchyard_registry::RegistryError;

use crate::config::{Auth, Config};

/// The largest body read; a bigger answer is an error (the current list stays).
pub const MAX_BODY: usize = 64 << 20;

/// What one fetch brought.
#[derive(Debug)]
pub enum Fetched {
    /// `304`: the list is the one whose `ETag` we sent.
    NotModified,
    /// `200`, with its `Content-Type`, body and `ETag` (if any), not decoded yet.
    Body {
        /// The `Content-Type` header (empty when absent).
        content_type: String,
        /// The body.
        body: Vec<u8>,
        /// The `ETag` to send next time.
        etag: Option<HeaderValue>,
    },
}

/// GETs the list once. `etag` is the last good answer's, sent as `If-None-Match`.
pub async fn fetch(
    client: &reqwest::Client,
    config: &Config,
    etag: Option<&HeaderValue>,
    timeout: Duration,
) -> Result<Fetched, RegistryError> {
    let url = &config.url;
    let mut request = client
        .get(url.clone())
        .timeout(timeout)
        .header(ACCEPT, "application/json")
        .header(
            "X-Prometheus-Refresh-Interval-Seconds",
            config.refresh_interval.as_secs().max(1).to_string(),
        );
    if let Some(etag) = etag {
        request = request.header(IF_NONE_MATCH, etag.clone());
    }
    match &config.auth {
        Auth::None => {}
        Auth::Basic { username, password } => {
            let password = match password {
                Some(secret) => Some(secret.read().map_err(RegistryError::unauthorized)?),
                None => None,
            };
            request = request.basic_auth(username, password);
        }
        Auth::Bearer(secret) => {
            request = request.bearer_auth(secret.read().map_err(RegistryError::unauthorized)?);
        }
    }
    let mut response = request
        .send()
        .await
        .map_err(|e| RegistryError::unavailable(format!("GET {url}: {}", error_chain(&e))))?;
    let status = response.status();
    match status {
        StatusCode::OK => {}
        StatusCode::NOT_MODIFIED if etag.is_some() => return Ok(Fetched::NotModified),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            return Err(RegistryError::unauthorized(format!("GET {url}: {status}")))
        }
        _ => {
            return Err(RegistryError::unavailable(format!(
                "GET {url}: {status} (expected 200)"
            )))
        }
    }
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let etag = response.headers().get(ETAG).cloned();
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| RegistryError::unavailable(format!("GET {url}: {}", error_chain(&e))))?
    {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(RegistryError::protocol(format!(
                "GET {url}: the body is larger than {MAX_BODY} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Fetched::Body {
        content_type,
        body,
        etag,
    })
}

/// An error with its sources, so "connection refused" shows, not only "error sending request".
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
