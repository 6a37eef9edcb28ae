//! The one recover wrapper every backend shares.
//!
//! linkerd2-proxy keeps reconnect logic out of its resolvers (`resolve/src/recover.rs`);
//! so does Switchyard. [`recover`] watches a service, and when the stream breaks it waits a
//! jittered exponential backoff, watches again, and turns the first update of the new
//! stream into a [`Update::Reset`], so a consumer never merges a fresh answer into a set
//! that may have changed while it was disconnected.
//!
//! Errors are passed on as [`SourceEvent::Error`] so the consumer can mark its last good
//! set stale and report the registry's state; they never empty the set.

use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};

use crate::{ErrorKind, Registry, RegistryError, ServiceQuery, Update, UpdateStream};

/// What a recovered source tells its consumer.
#[derive(Debug)]
pub enum SourceEvent {
    /// An update to apply. The first one after every (re)connect is a `Reset` or
    /// `DoesNotExist`.
    Update(Update),
    /// The stream broke; the last good set stays (stale) until the next update.
    Error(RegistryError),
}

/// Jittered exponential backoff, reset after a healthy update.
///
/// Defaults: 250 ms doubling to 30 s (client-go uses 800 ms → 30 s), full jitter on half of
/// each delay, and 10 s as the floor for errors no fast retry can fix (bad credentials).
#[derive(Clone, Debug)]
pub struct Backoff {
    /// First delay. Default 250 ms.
    pub initial: Duration,
    /// Largest delay. Default 30 s.
    pub max: Duration,
    /// Floor for [`ErrorKind::Unauthorized`] and [`ErrorKind::InvalidQuery`]. Default 10 s.
    pub slow_retry: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(250),
            max: Duration::from_secs(30),
            slow_retry: Duration::from_secs(10),
        }
    }
}

impl Backoff {
    /// The delay before attempt `attempt` (0-based) after `error`: `initial * 2^attempt`
    /// capped at `max`, of which a random half is kept (so many sources do not retry in
    /// lockstep), raised to `slow_retry` for errors only an operator can fix and to the
    /// error's own `retry_after`.
    pub fn delay(&self, attempt: u32, error: Option<&RegistryError>) -> Duration {
        let exp = self
            .initial
            .saturating_mul(1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX))
            .min(self.max);
        let half = exp / 2;
        let jittered = half + half.mul_f64(fastrand::f64());
        let floor = match error.map(RegistryError::kind) {
            Some(ErrorKind::Unauthorized | ErrorKind::InvalidQuery) => self.slow_retry,
            _ => Duration::ZERO,
        };
        let asked = error
            .and_then(RegistryError::retry_after)
            .unwrap_or_default();
        jittered.max(floor).max(asked)
    }
}

/// Watches `query` on `registry` for as long as the returned stream is read, reconnecting
/// with `backoff` whenever the backend's stream breaks or ends.
///
/// The watch makes progress only while the stream is polled: there is no task and no
/// channel of its own (at 1,000 upstreams those were ~1.9 MiB), so the consumer's task
/// drives it and dropping the stream stops it. Must be polled inside a Tokio runtime (the
/// backoff sleeps on its timer).
pub fn recover(
    registry: Arc<dyn Registry>,
    query: ServiceQuery,
    backoff: Backoff,
) -> impl Stream<Item = SourceEvent> + Send + Unpin + 'static {
    let watch = Watch {
        registry,
        query,
        backoff,
        attempt: 0,
        stream: None,
        first: false,
        pause: None,
    };
    Box::pin(futures::stream::unfold(watch, |mut watch| async move {
        let event = watch.next_event().await;
        Some((event, watch))
    }))
}

/// The state of one recovered watch between events.
struct Watch {
    registry: Arc<dyn Registry>,
    query: ServiceQuery,
    backoff: Backoff,
    /// Failures since the last healthy update.
    attempt: u32,
    /// The backend's stream, while connected.
    stream: Option<UpdateStream>,
    /// Whether the next update is the connected stream's first.
    first: bool,
    /// The backoff to wait before the next watch, after a failure.
    pause: Option<Duration>,
}

impl Watch {
    /// Waits out any backoff, (re)connects if needed and returns the next event.
    async fn next_event(&mut self) -> SourceEvent {
        if let Some(delay) = self.pause.take() {
            tokio::time::sleep(delay).await;
        }
        let stream = match &mut self.stream {
            Some(stream) => stream,
            None => match self.registry.watch(&self.query).await {
                Ok(stream) => {
                    self.first = true;
                    self.stream.insert(stream)
                }
                Err(error) => return self.failed(error),
            },
        };
        match stream.next().await {
            Some(Ok(update)) => {
                let update = if self.first {
                    into_reset(update)
                } else {
                    update
                };
                self.first = false;
                self.attempt = 0;
                SourceEvent::Update(update)
            }
            Some(Err(error)) => self.failed(error),
            None => self.failed(RegistryError::unavailable("watch stream ended")),
        }
    }

    /// Drops the broken stream and schedules the next watch after the backoff.
    fn failed(&mut self, error: RegistryError) -> SourceEvent {
        self.stream = None;
        let delay = self.backoff.delay(self.attempt, Some(&error));
        tracing::debug!(
            registry = self.registry.kind(),
            service = %self.query,
            ?delay,
            "watch broke: {error}"
        );
        self.attempt = self.attempt.saturating_add(1);
        self.pause = Some(delay);
        SourceEvent::Error(error)
    }
}

/// The first update of a new stream replaces whatever the consumer knew.
fn into_reset(update: Update) -> Update {
    match update {
        Update::Add(endpoints) => Update::Reset(endpoints),
        Update::Remove(_) => Update::Reset(Vec::new()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Endpoint, UpdateStream};
    use async_trait::async_trait;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// Fails the first watch, then yields an `Add` and ends; counts its watches.
    struct Flaky {
        watches: AtomicU32,
    }

    #[async_trait]
    impl Registry for Flaky {
        fn kind(&self) -> &'static str {
            "flaky"
        }
        async fn watch(&self, _query: &ServiceQuery) -> Result<UpdateStream, RegistryError> {
            if self.watches.fetch_add(1, Ordering::SeqCst) == 0 {
                return Err(RegistryError::unavailable("connection refused"));
            }
            let endpoint = Endpoint::new("127.0.0.1:1".parse().unwrap());
            Ok(futures::stream::iter(vec![
                Ok(Update::add(vec![endpoint.clone()])),
                Ok(Update::Remove(vec![endpoint.address])),
            ])
            .boxed())
        }
    }

    fn fast() -> Backoff {
        Backoff {
            initial: Duration::from_millis(1),
            max: Duration::from_millis(4),
            slow_retry: Duration::from_millis(50),
        }
    }

    #[tokio::test]
    async fn reconnects_and_resets_first_update() {
        let registry = Arc::new(Flaky {
            watches: AtomicU32::new(0),
        });
        let mut events = recover(registry.clone(), ServiceQuery::new("svc"), fast());
        assert!(matches!(events.next().await, Some(SourceEvent::Error(_))));
        assert!(
            matches!(events.next().await, Some(SourceEvent::Update(Update::Reset(v))) if v.len() == 1)
        );
        assert!(matches!(
            events.next().await,
            Some(SourceEvent::Update(Update::Remove(_)))
        ));
        // The stream ended: reported as an error, then a new watch whose Add is a Reset.
        assert!(matches!(events.next().await, Some(SourceEvent::Error(_))));
        assert!(matches!(
            events.next().await,
            Some(SourceEvent::Update(Update::Reset(_)))
        ));
        assert!(registry.watches.load(Ordering::SeqCst) >= 3);
    }

    #[test]
    fn backoff_grows_caps_and_respects_floors() {
        let backoff = Backoff::default();
        for attempt in 0..40 {
            let delay = backoff.delay(attempt, None);
            assert!(delay <= backoff.max, "{attempt}: {delay:?}");
        }
        let first = backoff.delay(0, None);
        assert!(first >= backoff.initial / 2 && first <= backoff.initial);
        let late = backoff.delay(10, None);
        assert!(late >= backoff.max / 2);
        let auth = RegistryError::unauthorized("ACL not found");
        assert!(backoff.delay(0, Some(&auth)) >= backoff.slow_retry);
        let asked = RegistryError::unavailable("busy").with_retry_after(Duration::from_secs(7));
        assert!(backoff.delay(0, Some(&asked)) >= Duration::from_secs(7));
    }
}
