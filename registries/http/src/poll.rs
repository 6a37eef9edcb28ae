//! The one poller a registry runs: fetches the list every `refresh_interval` and publishes
//! each new result to every watched service through a `watch` channel.
//!
//! - A good answer whose body did not change (a `304`, or the same bytes again) publishes
//!   nothing, so unchanged lists cost the subscribers nothing and malformed entries are
//!   counted once per new body, not once per fetch.
//! - A failed fetch or a body that is not a file_sd list publishes [`State::Failed`]: the
//!   subscribers' streams end with the error and their sets stay, stale. The poller then
//!   retries sooner than `refresh_interval`, 1 s doubling up to `refresh_interval`, so a
//!   server that comes back is seen quickly.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::HeaderValue;
use switchyard_file::Services;
use switchyard_registry::{ErrorKind, RegistryContext, RegistryError};
use tokio::sync::watch;

use crate::answer::{decode_answer, is_json};
use crate::config::Config;
use crate::fetch::{fetch, Fetched};

/// The first retry delay after a failed fetch.
pub const FIRST_RETRY: Duration = Duration::from_secs(1);
/// The longest one fetch may take (further capped by `refresh_interval`, at least 1 s).
pub const MAX_FETCH_TIME: Duration = Duration::from_secs(30);

/// The list as the poller last saw it.
#[derive(Clone, Debug)]
pub enum State {
    /// Not fetched yet.
    Pending,
    /// The last good list.
    Loaded(Arc<Services>),
    /// The last fetch failed; subscribers keep their last good set.
    Failed {
        /// Whether to retry fast or slowly.
        kind: ErrorKind,
        /// What went wrong.
        message: String,
    },
}

impl State {
    /// The error of a `Failed` state.
    pub fn error(&self) -> Option<RegistryError> {
        match self {
            State::Failed { kind, message } => Some(RegistryError::new(*kind, message.clone())),
            _ => None,
        }
    }
}

/// The delay after `failures` failed fetches in a row (at least one).
pub fn retry_delay(failures: u32, refresh_interval: Duration) -> Duration {
    let exp = 1u32
        .checked_shl(failures.saturating_sub(1).min(16))
        .unwrap_or(u32::MAX);
    FIRST_RETRY.saturating_mul(exp).min(refresh_interval)
}

/// Fetches and publishes until every receiver is gone.
pub async fn run(
    config: Config,
    client: reqwest::Client,
    ctx: RegistryContext,
    tx: watch::Sender<State>,
) {
    let timeout = config
        .refresh_interval
        .clamp(Duration::from_secs(1), MAX_FETCH_TIME);
    let mut etag: Option<HeaderValue> = None;
    let mut last_body: Option<Vec<u8>> = None;
    let mut current: Option<Arc<Services>> = None;
    let mut failures = 0u32;
    loop {
        let outcome = match fetch(&client, &config, etag.as_ref(), timeout).await {
            Ok(Fetched::NotModified) => Ok(None),
            Ok(Fetched::Body {
                content_type,
                body,
                etag: new,
            }) => {
                if current.is_some() && is_json(&content_type) && last_body.as_ref() == Some(&body)
                {
                    etag = new;
                    Ok(None)
                } else {
                    match decode_answer(&content_type, &body, &ctx) {
                        Ok(services) => {
                            etag = new;
                            last_body = Some(body);
                            Ok(Some(Arc::new(services)))
                        }
                        Err(error) => Err(RegistryError::protocol(format!(
                            "GET {}: {error}",
                            config.url
                        ))),
                    }
                }
            }
            Err(error) => Err(error),
        };
        let delay = match outcome {
            Ok(fresh) => {
                failures = 0;
                let changed = fresh.is_some();
                if let Some(services) = fresh {
                    current = Some(services);
                }
                // Unchanged lists are published only to replace a `Failed` (or `Pending`).
                let shown = matches!(&*tx.borrow(), State::Loaded(_));
                if let Some(services) = current.as_ref().filter(|_| changed || !shown) {
                    tx.send_replace(State::Loaded(services.clone()));
                }
                config.refresh_interval
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                tracing::warn!(registry = %ctx.name, "keeping the last good set: {error}");
                ctx.metrics.record_error();
                tx.send_replace(State::Failed {
                    kind: error.kind(),
                    message: error.message().to_owned(),
                });
                retry_delay(failures, config.refresh_interval)
            }
        };
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = tx.closed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_double_up_to_the_refresh_interval() {
        let minute = Duration::from_secs(60);
        let delays: Vec<u64> = (1..=8).map(|n| retry_delay(n, minute).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(retry_delay(u32::MAX, minute), minute);
        assert_eq!(
            retry_delay(3, Duration::from_millis(500)),
            Duration::from_millis(500)
        );
    }
}
