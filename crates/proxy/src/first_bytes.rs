//! A deadline for a TLS connection's first HTTP bytes.
//!
//! hyper-util reads a connection's first bytes to tell HTTP/1 from HTTP/2 before any of
//! hyper's timers runs, so a client that completes the TLS handshake and then sends nothing
//! (or half the h2 preface) would hold its connection for as long as it likes. On plain
//! listeners the server peeks at the socket under `header_read_timeout` before serving
//! (`version_bytes_arrive` in [`crate::server`]); a `TlsStream` cannot be peeked, so TLS
//! connections read through [`FirstBytes`] instead: until the version is decided (a byte off
//! the preface, or the whole preface) a read that would wait past the deadline fails with
//! `TimedOut`, which ends the connection. After that it is a plain pass-through, and hyper's
//! own header timer guards HTTP/1 heads.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// An IO stream whose first bytes must arrive before a deadline.
pub struct FirstBytes<S> {
    inner: S,
    /// `None` once the HTTP version is decided.
    waiting: Option<Waiting>,
}

/// State until the version is decided.
struct Waiting {
    deadline: Pin<Box<Sleep>>,
    /// How many bytes of the h2 preface arrived so far.
    matched: usize,
}

impl<S> FirstBytes<S> {
    /// Wraps `inner`; its first bytes must decide the version within `timeout`.
    pub fn new(inner: S, timeout: Duration) -> Self {
        FirstBytes {
            inner,
            waiting: Some(Waiting {
                deadline: Box::pin(tokio::time::sleep(timeout)),
                matched: 0,
            }),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FirstBytes<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        let Some(waiting) = this.waiting.as_mut() else {
            return polled;
        };
        match polled {
            Poll::Ready(Ok(())) => {
                let new = &buf.filled()[before..];
                let from = waiting.matched;
                let take = new.len().min(PREFACE.len() - from);
                if new[..take] != PREFACE[from..from + take] || from + take == PREFACE.len() {
                    this.waiting = None;
                } else {
                    waiting.matched += take;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => match waiting.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no HTTP request within header_read_timeout",
                ))),
                Poll::Pending => Poll::Pending,
            },
            error => error,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FirstBytes<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// What the next read gives once `sent` has been read, the client still connected:
    /// the error kind when it failed within 300 ms (the deadline is 50 ms), `None` when it
    /// was still waiting for data.
    async fn next_read_after(sent: &[u8]) -> Option<io::ErrorKind> {
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(sent).await.unwrap();
        let mut guarded = FirstBytes::new(server, Duration::from_millis(50));
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        while got.len() < sent.len() {
            let n = guarded
                .read(&mut buf)
                .await
                .expect("the sent bytes are read");
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, sent);
        let next = tokio::time::timeout(Duration::from_millis(300), guarded.read(&mut buf)).await;
        drop(client);
        match next {
            Ok(Err(error)) => Some(error.kind()),
            Ok(Ok(n)) => panic!("read {n} bytes that nobody sent"),
            Err(_) => None,
        }
    }

    #[tokio::test]
    async fn silence_and_half_a_preface_time_out() {
        assert_eq!(next_read_after(b"").await, Some(io::ErrorKind::TimedOut));
        assert_eq!(
            next_read_after(b"PRI * HTTP/2").await,
            Some(io::ErrorKind::TimedOut)
        );
    }

    #[tokio::test]
    async fn an_http1_byte_or_the_whole_preface_ends_the_deadline() {
        assert_eq!(next_read_after(b"G").await, None);
        assert_eq!(next_read_after(b"GET / HTTP/1.1\r\n").await, None);
        assert_eq!(next_read_after(b"PRI * HTTP/1.1\r\n").await, None);
        assert_eq!(next_read_after(PREFACE).await, None);
    }
}
