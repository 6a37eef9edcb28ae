//! Request limits and client trust: body size and idle limits applied as a request body
//! streams, and the CIDR lists that say which peers may set `X-Forwarded-*`.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::Sleep;

use crate::body::BoxError;

/// A CIDR block such as `10.0.0.0/8` or `::1/128`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `a.b.c.d/n`, `v6/n`, or a bare address (a /32 or /128).
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let network: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or CIDR block"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?}: prefix length must be 0-{max}"))?,
        };
        Ok(Cidr { network, prefix })
    }

    /// Whether `ip` is inside the block (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// Why a limited body stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLimit {
    /// More bytes than allowed: 413.
    TooLarge,
    /// No bytes for longer than allowed: 408.
    Idle,
    /// The client's body broke off or its framing was malformed (a bad chunk): 400.
    Broken,
}

impl std::fmt::Display for BodyLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BodyLimit::TooLarge => "request body too large",
            BodyLimit::Idle => "request body idle timeout",
            BodyLimit::Broken => "request body malformed or cut off",
        })
    }
}

impl std::error::Error for BodyLimit {}

/// Records which limit tripped, for the request path to answer with the right status.
#[derive(Debug, Default)]
pub struct Tripped(AtomicU8);

impl Tripped {
    fn set(&self, limit: BodyLimit) {
        self.0.store(
            match limit {
                BodyLimit::TooLarge => 1,
                BodyLimit::Idle => 2,
                BodyLimit::Broken => 3,
            },
            Ordering::Relaxed,
        );
    }

    /// The limit that tripped, if any.
    pub fn get(&self) -> Option<BodyLimit> {
        match self.0.load(Ordering::Relaxed) {
            1 => Some(BodyLimit::TooLarge),
            2 => Some(BodyLimit::Idle),
            3 => Some(BodyLimit::Broken),
            _ => None,
        }
    }
}

/// A request body that fails once it exceeds `remaining` bytes or stays silent for `idle`.
pub struct LimitedBody {
    inner: Incoming,
    remaining: u64,
    idle: Duration,
    timer: Pin<Box<Sleep>>,
    tripped: Arc<Tripped>,
}

impl LimitedBody {
    /// Wraps `inner`.
    pub fn new(inner: Incoming, max_bytes: u64, idle: Duration, tripped: Arc<Tripped>) -> Self {
        LimitedBody {
            inner,
            remaining: max_bytes,
            idle,
            timer: Box::pin(tokio::time::sleep(idle)),
            tripped,
        }
    }
}

impl Body for LimitedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    if n > this.remaining {
                        this.tripped.set(BodyLimit::TooLarge);
                        return Poll::Ready(Some(Err(Box::new(BodyLimit::TooLarge))));
                    }
                    this.remaining -= n;
                }
                let deadline = tokio::time::Instant::now() + this.idle;
                this.timer.as_mut().reset(deadline);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => {
                this.tripped.set(BodyLimit::Broken);
                Poll::Ready(Some(Err(Box::new(error))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match this.timer.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    this.tripped.set(BodyLimit::Idle);
                    Poll::Ready(Some(Err(Box::new(BodyLimit::Idle))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

use std::future::Future as _;

#[cfg(test)]
mod tests {
    use super::*;

    fn check(cidr: &str, ip: &str, expected: bool) {
        let block = Cidr::parse(cidr).unwrap();
        assert_eq!(
            block.contains(ip.parse().unwrap()),
            expected,
            "{cidr} ∋ {ip}"
        );
    }

    #[test]
    fn cidr_membership() {
        check("10.0.0.0/8", "10.1.2.3", true);
        check("10.0.0.0/8", "11.0.0.1", false);
        check("127.0.0.1", "127.0.0.1", true);
        check("127.0.0.1", "127.0.0.2", false);
        check("0.0.0.0/0", "8.8.8.8", true);
        check("::1/128", "::1", true);
        check("fd00::/8", "fd12::1", true);
        check("fd00::/8", "fe80::1", false);
        check("10.0.0.0/8", "::ffff:10.0.0.1", true);
        check("10.0.0.0/8", "::1", false);
    }

    #[test]
    fn cidr_errors() {
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("nope").is_err());
        assert!(Cidr::parse("::/129").is_err());
    }
}
