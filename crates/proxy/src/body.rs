//! The one body type of the proxy, both directions: a streamed hyper body passed through
//! untouched, bytes the gateway made itself, or (for filters that transform bodies, such as
//! the response cache) any boxed body. An enum, so the common streaming case costs no
//! allocation; an optional completion hook (the access log, the trace's spans, the gRPC
//! status count) runs when the body ends or is dropped, with the number of bytes that went
//! through. Hooks added to one body run in the order they were added.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

/// Runs once when a body finishes (or is dropped early), with the bytes sent.
pub trait Completion: Send + Sync + 'static {
    /// Called exactly once.
    fn complete(self: Box<Self>, bytes: u64);

    /// Called with a trailers frame as it goes through (gRPC's final status). Default:
    /// nothing.
    fn trailers(&mut self, _trailers: &http::HeaderMap) {}
}

/// Two hooks of one body, run in order.
struct Chain(Box<dyn Completion>, Box<dyn Completion>);

impl Completion for Chain {
    fn complete(self: Box<Self>, bytes: u64) {
        let Chain(first, second) = *self;
        first.complete(bytes);
        second.complete(bytes);
    }

    fn trailers(&mut self, trailers: &http::HeaderMap) {
        self.0.trailers(trailers);
        self.1.trailers(trailers);
    }
}

/// The error type of every body the proxy handles.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A boxed body, for filters that build their own.
pub type BoxBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// A request or response body.
pub struct ProxyBody {
    inner: Inner,
    sent: u64,
    completion: Option<Box<dyn Completion>>,
}

enum Inner {
    Stream(Incoming),
    Upstream(crate::client::UpstreamBody),
    Limited(crate::limits::LimitedBody),
    Full(Option<Bytes>),
    Boxed(BoxBody),
}

impl ProxyBody {
    /// A streamed body from hyper.
    pub fn stream(incoming: Incoming) -> Self {
        ProxyBody {
            inner: Inner::Stream(incoming),
            sent: 0,
            completion: None,
        }
    }

    /// A response body from the upstream client, which drives its connection.
    pub fn upstream(body: crate::client::UpstreamBody) -> Self {
        ProxyBody {
            inner: Inner::Upstream(body),
            sent: 0,
            completion: None,
        }
    }

    /// A body of these bytes.
    pub fn full(bytes: Bytes) -> Self {
        ProxyBody {
            inner: Inner::Full(Some(bytes)),
            sent: 0,
            completion: None,
        }
    }

    /// A request body under size and idle limits.
    pub fn limited(body: crate::limits::LimitedBody) -> Self {
        ProxyBody {
            inner: Inner::Limited(body),
            sent: 0,
            completion: None,
        }
    }

    /// Any body (boxed).
    pub fn boxed(body: BoxBody) -> Self {
        ProxyBody {
            inner: Inner::Boxed(body),
            sent: 0,
            completion: None,
        }
    }

    /// Takes the completion hook away (a filter that replaces the body moves it over).
    pub fn take_completion(&mut self) -> Option<Box<dyn Completion>> {
        self.completion.take()
    }

    /// No body.
    pub fn empty() -> Self {
        ProxyBody {
            inner: Inner::Full(None),
            sent: 0,
            completion: None,
        }
    }

    /// Runs `completion` when the body ends, after any hook added before (an upstream
    /// attempt's CLIENT span ends before the request's SERVER span).
    #[must_use]
    pub fn on_complete(mut self, completion: Box<dyn Completion>) -> Self {
        self.completion = Some(match self.completion.take() {
            None => completion,
            Some(first) => Box::new(Chain(first, completion)),
        });
        self
    }

    fn finish(&mut self) {
        if let Some(c) = self.completion.take() {
            c.complete(self.sent);
        }
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        self.finish();
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = match &mut this.inner {
            Inner::Stream(incoming) => Pin::new(incoming).poll_frame(cx).map_err(BoxError::from),
            Inner::Upstream(body) => Pin::new(body).poll_frame(cx).map_err(BoxError::from),
            Inner::Boxed(body) => Pin::new(body).poll_frame(cx),
            Inner::Limited(body) => Pin::new(body).poll_frame(cx),
            Inner::Full(bytes) => Poll::Ready(
                bytes
                    .take()
                    .filter(|b| !b.is_empty())
                    .map(|b| Ok(Frame::data(b))),
            ),
        };
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.sent += data.len() as u64;
                } else if let (Some(trailers), Some(c)) =
                    (frame.trailers_ref(), this.completion.as_mut())
                {
                    c.trailers(trailers);
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => this.finish(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Stream(incoming) => incoming.is_end_stream(),
            Inner::Upstream(body) => body.is_end_stream(),
            Inner::Boxed(body) => body.is_end_stream(),
            Inner::Limited(body) => body.is_end_stream(),
            Inner::Full(bytes) => bytes.as_ref().is_none_or(Bytes::is_empty),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Stream(incoming) => incoming.size_hint(),
            Inner::Upstream(body) => body.size_hint(),
            Inner::Boxed(body) => body.size_hint(),
            Inner::Limited(body) => body.size_hint(),
            Inner::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}
