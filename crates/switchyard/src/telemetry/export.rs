//! The span processor: finished spans go into a bounded queue, and one task exports them in
//! batches through the OTLP exporter of `opentelemetry-otlp`, off the request path.
//!
//! The SDK's own `BatchSpanProcessor` does the same on a thread of its own, but does not say
//! how many spans it dropped. Here a full queue (the collector is slow or down) drops the
//! span at once, and so does a failed or timed-out export: both are counted in
//! [`SPANS_DROPPED`] (`switchyard_tracing_spans_dropped_total`). A request never waits for
//! the collector, and the memory held is at most `max_queue_size` spans plus one batch in
//! flight.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};
use tokio::sync::{mpsc, Notify};

/// Spans dropped since start: the queue was full, or their export failed or timed out.
pub static SPANS_DROPPED: AtomicU64 = AtomicU64::new(0);

/// Spans exported since start (for tests and `/metrics`).
pub static SPANS_EXPORTED: AtomicU64 = AtomicU64::new(0);

/// How the queue drains.
#[derive(Clone, Copy, Debug)]
pub struct QueueSettings {
    /// Spans waiting at most.
    pub max_queue_size: usize,
    /// Spans per export at most.
    pub max_batch: usize,
    /// Longest wait before a partial batch goes.
    pub interval: Duration,
    /// Time allowed for one export.
    pub timeout: Duration,
}

/// A span processor with a bounded queue, drained by a Tokio task.
#[derive(Debug)]
pub struct QueueProcessor {
    queue: mpsc::Sender<SpanData>,
    /// Wakes the task for a flush or shutdown.
    flush: Arc<Notify>,
}

impl QueueProcessor {
    /// Starts the export task on the current Tokio runtime.
    ///
    /// # Panics
    /// Outside a Tokio runtime.
    pub fn start<E: SpanExporter + 'static>(exporter: E, settings: QueueSettings) -> Self {
        let (queue, receiver) = mpsc::channel(settings.max_queue_size.max(1));
        let flush = Arc::new(Notify::new());
        tokio::spawn(drain(exporter, receiver, settings, flush.clone()));
        QueueProcessor { queue, flush }
    }
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        if self.queue.try_send(span).is_err() {
            SPANS_DROPPED.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.flush.notify_one();
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        self.flush.notify_one();
        Ok(())
    }
}

/// Collects batches (full, or as old as `interval`) and exports them one at a time.
async fn drain<E: SpanExporter>(
    exporter: E,
    mut receiver: mpsc::Receiver<SpanData>,
    settings: QueueSettings,
    flush: Arc<Notify>,
) {
    let mut batch = Vec::with_capacity(settings.max_batch);
    let mut failing = false;
    loop {
        // The first span of a batch, then more until the batch is full or old enough.
        if receiver.recv_many(&mut batch, settings.max_batch).await == 0 {
            return;
        }
        let deadline = tokio::time::Instant::now() + settings.interval;
        while batch.len() < settings.max_batch {
            let room = settings.max_batch - batch.len();
            tokio::select! {
                got = receiver.recv_many(&mut batch, room) => if got == 0 { break },
                () = tokio::time::sleep_until(deadline) => break,
                () = flush.notified() => break,
            }
        }
        let spans = std::mem::replace(&mut batch, Vec::with_capacity(settings.max_batch));
        let n = spans.len() as u64;
        let result = tokio::time::timeout(settings.timeout, exporter.export(spans)).await;
        let error = match result {
            Ok(Ok(())) => None,
            Ok(Err(error)) => Some(error),
            Err(_) => Some(OTelSdkError::Timeout(settings.timeout)),
        };
        match error {
            None => {
                SPANS_EXPORTED.fetch_add(n, Ordering::Relaxed);
                if failing {
                    tracing::info!("tracing: exports to the collector work again");
                    failing = false;
                }
            }
            Some(error) => {
                SPANS_DROPPED.fetch_add(n, Ordering::Relaxed);
                if !failing {
                    tracing::warn!(
                        "tracing: export failed, spans are dropped until it works: {error}"
                    );
                    failing = true;
                }
            }
        }
    }
}
