//! The two halves of an HTTP/2 stream's body: [`pump`] copies the request body into the
//! stream as the upstream grants window (full duplex: it runs while the response streams),
//! and [`H2Body`] is the response body, releasing window only as the client side reads, so
//! a client that stops reading stops the upstream after one stream window (flow control,
//! not an unbounded buffer). [`ReplayBody`] keeps the first bytes sent, so that a stream
//! the server refused (GOAWAY above its last stream id, `REFUSED_STREAM`) goes again on
//! another connection.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use h2::{Reason, RecvStream, SendStream};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::sync::oneshot;

use super::conn::H2Conn;
use crate::body::{BoxError, ProxyBody};

/// Most request bytes kept for a replay; a longer body that was refused is not replayed.
/// Default 64 KiB (a unary gRPC call fits).
pub const REPLAY_LIMIT: usize = 64 * 1024;

/// A request body that remembers what it gave, up to [`REPLAY_LIMIT`].
pub struct ReplayBody {
    inner: ProxyBody,
    kept: Vec<Frame<Bytes>>,
    kept_bytes: usize,
    overflowed: bool,
    /// Frames of `kept` still to give again after [`ReplayBody::rewind`].
    replay_at: Option<usize>,
    inner_done: bool,
}

impl ReplayBody {
    /// Wraps `inner`.
    pub fn new(inner: ProxyBody) -> Self {
        ReplayBody {
            inner,
            kept: Vec::new(),
            kept_bytes: 0,
            overflowed: false,
            replay_at: None,
            inner_done: false,
        }
    }

    /// Starts over from the first frame; false when too much went to be kept.
    pub fn rewind(&mut self) -> bool {
        if self.overflowed {
            return false;
        }
        self.replay_at = Some(0);
        true
    }

    /// Whether the body had no bytes at all to send.
    pub fn is_end_stream(&self) -> bool {
        self.replay_at.is_none_or(|at| at >= self.kept.len())
            && (self.inner_done || self.inner.is_end_stream())
    }

    fn keep(&mut self, frame: &Frame<Bytes>) {
        if self.overflowed {
            return;
        }
        let len = frame.data_ref().map_or(0, Bytes::len);
        if self.kept_bytes + len > REPLAY_LIMIT {
            self.overflowed = true;
            self.kept = Vec::new();
            return;
        }
        self.kept_bytes += len;
        let copy = match frame.data_ref() {
            Some(data) => Frame::data(data.clone()),
            None => Frame::trailers(frame.trailers_ref().cloned().unwrap_or_default()),
        };
        self.kept.push(copy);
    }

    /// The next frame: kept ones first after a rewind, then the inner body's.
    pub async fn frame(&mut self) -> Option<Result<Frame<Bytes>, BoxError>> {
        if let Some(at) = self.replay_at {
            if let Some(frame) = self.kept.get(at) {
                self.replay_at = Some(at + 1);
                let copy = match frame.data_ref() {
                    Some(data) => Frame::data(data.clone()),
                    None => Frame::trailers(frame.trailers_ref().cloned().unwrap_or_default()),
                };
                return Some(Ok(copy));
            }
            self.replay_at = None;
        }
        if self.inner_done {
            return None;
        }
        let next = self.inner.frame().await;
        match &next {
            Some(Ok(frame)) => self.keep(frame),
            None => self.inner_done = true,
            Some(Err(_)) => self.overflowed = true,
        }
        next
    }
}

/// Copies `body` into `stream`, reserving window for each chunk, until the body ends, the
/// stream is reset by the server, or `cancel` fires (the client went away, or the stream
/// failed and the caller wants the body back). Returns the body, for a replay.
pub async fn pump(
    mut body: ReplayBody,
    mut stream: SendStream<Bytes>,
    mut cancel: oneshot::Receiver<()>,
) -> ReplayBody {
    let mut cancel_armed = true;
    loop {
        let frame = tokio::select! {
            biased;
            fired = &mut cancel, if cancel_armed => {
                if fired.is_ok() {
                    stream.send_reset(Reason::CANCEL);
                    return body;
                }
                // The response ended normally: keep sending what the client sends.
                cancel_armed = false;
                continue;
            }
            _ = poll_fn(|cx| stream.poll_reset(cx)) => return body,
            frame = body.frame() => frame,
        };
        match frame {
            None => {
                let _ = stream.send_data(Bytes::new(), true);
                return body;
            }
            Some(Err(error)) => {
                tracing::debug!("request body failed: {error}; resetting the upstream stream");
                stream.send_reset(Reason::CANCEL);
                return body;
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(mut data) => {
                    while !data.is_empty() {
                        stream.reserve_capacity(data.len());
                        let granted = tokio::select! {
                            biased;
                            fired = &mut cancel, if cancel_armed => {
                                if fired.is_ok() {
                                    stream.send_reset(Reason::CANCEL);
                                    return body;
                                }
                                cancel_armed = false;
                                continue;
                            }
                            granted = poll_fn(|cx| stream.poll_capacity(cx)) => granted,
                        };
                        match granted {
                            Some(Ok(0)) => continue,
                            Some(Ok(n)) => {
                                let chunk = data.split_to(n.min(data.len()));
                                if stream.send_data(chunk, false).is_err() {
                                    return body;
                                }
                            }
                            Some(Err(_)) | None => return body,
                        }
                    }
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        let _ = stream.send_trailers(trailers);
                    }
                    return body;
                }
            },
        }
    }
}

/// Counts a stream against its connection until dropped.
pub struct StreamSlot(pub Arc<H2Conn>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// A response body read from an HTTP/2 stream: data, then trailers.
pub struct H2Body {
    recv: RecvStream,
    data_done: bool,
    done: bool,
    /// Fired when the body is dropped unfinished: the pump resets the stream upstream.
    cancel: Option<oneshot::Sender<()>>,
    _slot: StreamSlot,
}

impl H2Body {
    /// The body of `recv`; `cancel` reaches the request's pump.
    pub fn new(recv: RecvStream, cancel: oneshot::Sender<()>, slot: StreamSlot) -> Self {
        // A trailers-only answer (HEADERS with END_STREAM, as gRPC sends an error) has no
        // body: said so, the server side ends its stream with the head too, not with an
        // empty DATA frame after it (which grpcio rejects).
        let ended = recv.is_end_stream();
        H2Body {
            data_done: ended,
            done: ended,
            recv,
            cancel: Some(cancel),
            _slot: slot,
        }
    }
}

impl Drop for H2Body {
    fn drop(&mut self) {
        if !self.done {
            if let Some(cancel) = self.cancel.take() {
                let _ = cancel.send(());
            }
        }
    }
}

impl Body for H2Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if !this.data_done {
            match this.recv.poll_data(cx) {
                Poll::Ready(Some(Ok(data))) => {
                    // The window opens again only as the client side takes the data.
                    let _ = this.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Poll::Ready(Some(Err(error))) => return Poll::Ready(Some(Err(error.into()))),
                Poll::Ready(None) => this.data_done = true,
                Poll::Pending => return Poll::Pending,
            }
        }
        match this.recv.poll_trailers(cx) {
            Poll::Ready(Ok(trailers)) => {
                this.done = true;
                // Finished normally: the pump may go on sending; drop the trigger unfired.
                this.cancel = None;
                Poll::Ready(trailers.map(|t: HeaderMap| Ok(Frame::trailers(t))))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Some(Err(error.into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
