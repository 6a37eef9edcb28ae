//! The upstream HTTP/1.1 client: a lock-free keep-alive pool per endpoint, each
//! connection driven inline by the request that holds it, through a purpose-built HTTP/1.1
//! codec.
//!
//! A connection ([`connection::Connection`]) is owned by one request at a time: the
//! request's own task writes the head and body and reads the response head
//! ([`connection::exchange`]), and the response body ([`UpstreamBody`]) reads the rest
//! from the same socket as the client side asks for it. No other task is woken and no
//! channel is crossed (hyper's client connection hands every request to its connection
//! through one, and every body chunk back through another). When the body ends the
//! connection goes back to its endpoint's lock-free queue
//! ([`crossbeam_queue::ArrayQueue`]). Finding an endpoint's queue is a `DashMap` read (a
//! shard's shared lock: one atomic increment; it is write-locked only to add a new
//! endpoint or forget an unused one). An idle connection is checked when it is taken out
//! (a closed one is skipped, costing no system call unless the socket reported an event),
//! and the sweeper drops the ones idle too long. A request that a reused connection lost
//! before any answer came goes once more on a fresh connection when it has no body
//! (the endpoint closing an idle connection as the request went out).
//!
//! Wire format in [`codec`]. Upgrade requests (WebSocket) go through hyper's client on a
//! fresh connection run by its own task, as the upgraded stream outlives the request; they
//! are never pooled. Connections to an upstream with `[upstreams.NAME.tls]` run rustls
//! ([`crate::upstream_tls`]) and are pooled apart from plain ones to the same address.

pub mod codec;
mod connection;
pub mod h2;

pub use codec::AddedFields;
pub use connection::{ExchangeError, UpstreamBody};

use std::future::poll_fn;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use dashmap::DashMap;
use http::{Request, Response};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::body::ProxyBody;
use crate::forward::is_idempotent;
use crate::upstream_tls::UpstreamTls;
use connection::Connection;

/// Upstream client settings.
#[derive(Clone, Debug)]
pub struct ClientSettings {
    /// Time allowed to open a TCP connection. Default 2 s.
    pub connect_timeout: Duration,
    /// An idle pooled connection older than this is closed. Default 90 s.
    pub idle_timeout: Duration,
    /// Idle connections kept per endpoint; more are closed. Default 256.
    pub max_idle_per_endpoint: usize,
    /// The HTTP/2 pools' settings (upstreams with `protocol = "h2c" | "h2"`).
    pub h2: h2::H2Settings,
}

impl Default for ClientSettings {
    fn default() -> Self {
        ClientSettings {
            connect_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(90),
            max_idle_per_endpoint: 256,
            h2: h2::H2Settings::default(),
        }
    }
}

/// Why a request got no response.
#[derive(Debug)]
pub enum SendError {
    /// The TCP connection could not be opened (or not in time): nothing was sent.
    Connect(std::io::Error),
    /// The connection failed during the exchange.
    Upstream(ExchangeError),
    /// The upgrade exchange (hyper's client) failed.
    Upgrade(hyper::Error),
    /// The HTTP/2 stream failed before a response head arrived.
    H2(::h2::Error),
}

impl SendError {
    /// Whether the request certainly never reached the endpoint.
    pub fn is_connect(&self) -> bool {
        matches!(self, SendError::Connect(_))
    }
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Connect(e) => write!(f, "connect: {e}"),
            SendError::Upstream(e) => write!(f, "upstream: {e}"),
            SendError::Upgrade(e) => write!(f, "upstream upgrade: {e}"),
            SendError::H2(e) => write!(f, "upstream HTTP/2: {e}"),
        }
    }
}

/// A pool: an endpoint address and the TLS config id (0 for plain TCP).
type PoolKey = (SocketAddr, u64);

/// The transport of an upstream connection.
pub enum UpstreamIo {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for UpstreamIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_read(cx, buf),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_write(cx, buf),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            UpstreamIo::Plain(s) => s.is_write_vectored(),
            UpstreamIo::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_flush(cx),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_shutdown(cx),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The idle connections of one endpoint.
pub struct EndpointPool {
    idle: ArrayQueue<Box<Connection>>,
    /// The client's epoch, which `last_used_ms` counts from.
    epoch: Instant,
    /// Milliseconds since `epoch` when a connection was last returned.
    last_used_ms: AtomicU64,
}

/// The upstream client (one per proxy).
pub struct UpstreamClient {
    pools: DashMap<PoolKey, Arc<EndpointPool>, foldhash::fast::RandomState>,
    settings: ClientSettings,
    http1: http1::Builder,
    epoch: Instant,
    h2: h2::H2Client,
}

impl UpstreamClient {
    /// A client with `settings`. Call [`UpstreamClient::start_sweeper`] from a runtime.
    pub fn new(settings: ClientSettings) -> Arc<Self> {
        let mut http1 = http1::Builder::new();
        http1.max_buf_size(512 * 1024);
        Arc::new(UpstreamClient {
            pools: DashMap::with_hasher(foldhash::fast::RandomState::default()),
            h2: h2::H2Client::new(settings.h2),
            settings,
            http1,
            epoch: Instant::now(),
        })
    }

    /// Starts the task that closes connections idle longer than the idle timeout and forgets
    /// endpoints unused for as long. Ends when the client is dropped. Does nothing outside a
    /// Tokio runtime.
    pub fn start_sweeper(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let client: Weak<Self> = Arc::downgrade(self);
        let every = (self.settings.idle_timeout / 4)
            .clamp(Duration::from_millis(100), Duration::from_secs(15));
        runtime.spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(client) = client.upgrade() else {
                    return;
                };
                client.sweep();
            }
        });
    }

    /// Plain-TCP idle connections pooled for `address` now (tests and diagnostics).
    pub fn idle_connections(&self, address: SocketAddr) -> usize {
        self.pools.get(&(address, 0)).map_or(0, |p| p.idle.len())
    }

    /// Sends `request` (origin-form URI, `Host` set), with `added`'s fields, to `address`,
    /// over TLS when `tls` is given, on a pooled connection or a new one. An idempotent
    /// request without a body
    /// that a reused connection lost before any answer came is sent once more on a fresh
    /// connection: the endpoint most likely closed that connection as it sat idle.
    ///
    /// The request is borrowed, not consumed: its head is only read, so a caller that
    /// retries on another endpoint takes its headers back instead of copying them first.
    ///
    /// # Errors
    /// [`SendError::Connect`] when no connection could be opened, [`SendError::Upstream`]
    /// when the exchange failed.
    pub async fn send(
        &self,
        address: SocketAddr,
        tls: Option<&UpstreamTls>,
        request: &mut Request<ProxyBody>,
        added: &AddedFields,
    ) -> Result<Response<ProxyBody>, SendError> {
        let pool = self.pool((address, tls.map_or(0, UpstreamTls::id)));
        let mut may_reuse = true;
        loop {
            let idle = if may_reuse {
                poll_fn(|cx| Poll::Ready(self.checkout(&pool, cx))).await
            } else {
                None
            };
            let reused = idle.is_some();
            let conn = match idle {
                Some(conn) => conn,
                // Boxed: the connect and TLS handshake futures are large, and kept inline
                // they would make every request's future (moved into place per request)
                // that much larger.
                None => Connection::new(Box::pin(self.open(address, tls, false)).await?),
            };
            match connection::exchange(conn, request, added, pool.clone()).await {
                Ok(response) => return Ok(response),
                Err(failed) if reused && failed.may_resend && is_idempotent(request.method()) => {
                    tracing::debug!(%address, "reused connection lost ({}); sending again on a new one", failed.error);
                    may_reuse = false;
                }
                Err(failed) => return Err(SendError::Upstream(failed.error)),
            }
        }
    }

    /// Sends an upgrade request on a new connection run by its own task (the upgraded
    /// stream outlives this request).
    ///
    /// # Errors
    /// As [`UpstreamClient::send`].
    pub async fn send_upgrade(
        &self,
        address: SocketAddr,
        tls: Option<&UpstreamTls>,
        request: Request<ProxyBody>,
    ) -> Result<Response<ProxyBody>, SendError> {
        let stream = self.open(address, tls, false).await?;
        let (mut sender, conn) = self
            .http1
            .handshake(TokioIo::new(stream))
            .await
            .map_err(SendError::Upgrade)?;
        tokio::spawn(async move {
            if let Err(error) = conn.with_upgrades().await {
                tracing::debug!(%address, "upgraded upstream connection ended: {error}");
            }
        });
        let response = sender
            .send_request(request)
            .await
            .map_err(SendError::Upgrade)?;
        Ok(response.map(ProxyBody::stream))
    }

    /// Sends `request` over HTTP/2 (h2c, or h2 over TLS when `tls` is given) on a pooled
    /// multiplexed connection ([`h2`]) with `settings` (the client's [`ClientSettings::h2`]
    /// when `None`). The `Host` field becomes `:authority`; the body is taken, the head left
    /// for a retry.
    ///
    /// # Errors
    /// As [`UpstreamClient::send`], or [`SendError::H2`].
    pub async fn send_h2(
        &self,
        address: SocketAddr,
        tls: Option<&UpstreamTls>,
        settings: Option<&h2::H2Settings>,
        request: &mut Request<ProxyBody>,
    ) -> Result<Response<ProxyBody>, SendError> {
        let tls_id = tls.map_or(0, UpstreamTls::id);
        self.h2
            .send(address, tls_id, settings, request, || {
                Box::pin(self.open(address, tls, true))
            })
            .await
    }

    /// The HTTP/2 pools (tests and diagnostics).
    pub fn h2(&self) -> &h2::H2Client {
        &self.h2
    }

    fn pool(&self, key: PoolKey) -> Arc<EndpointPool> {
        if let Some(pool) = self.pools.get(&key) {
            return pool.clone();
        }
        self.pools
            .entry(key)
            .or_insert_with(|| {
                Arc::new(EndpointPool {
                    idle: ArrayQueue::new(self.settings.max_idle_per_endpoint.max(1)),
                    epoch: self.epoch,
                    last_used_ms: AtomicU64::new(self.now_ms()),
                })
            })
            .clone()
    }

    /// A live idle connection of `pool`, if any. Dead and expired ones are dropped.
    fn checkout(&self, pool: &EndpointPool, cx: &mut Context<'_>) -> Option<Box<Connection>> {
        while let Some(mut conn) = pool.idle.pop() {
            if conn.idle_since.elapsed() < self.settings.idle_timeout && conn.poll_idle_usable(cx) {
                return Some(conn);
            }
        }
        None
    }

    /// Opens a TCP connection (and runs the TLS handshake when `tls` is given, offering
    /// ALPN `h2` when `h2`), all within the connect timeout. A failure here means nothing
    /// was sent.
    async fn open(
        &self,
        address: SocketAddr,
        tls: Option<&UpstreamTls>,
        h2: bool,
    ) -> Result<UpstreamIo, SendError> {
        tokio::time::timeout(self.settings.connect_timeout, async {
            let stream = TcpStream::connect(address)
                .await
                .map_err(SendError::Connect)?;
            let _ = stream.set_nodelay(true);
            match tls {
                None => Ok(UpstreamIo::Plain(stream)),
                Some(tls) => match tls.connect_alpn(stream, address, h2).await {
                    Ok(stream) => Ok(UpstreamIo::Tls(Box::new(stream))),
                    Err(error) => {
                        tracing::warn!(%address, "TLS handshake with the endpoint failed: {error}");
                        Err(SendError::Connect(error))
                    }
                },
            }
        })
        .await
        .map_err(|_| {
            SendError::Connect(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "connect timed out",
            ))
        })?
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Drops expired and closed idle connections, and forgets endpoints unused for the idle
    /// timeout.
    fn sweep(&self) {
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let idle_ms = u64::try_from(self.settings.idle_timeout.as_millis()).unwrap_or(u64::MAX);
        let now = self.now_ms();
        // Work on a copy of the list, so that the map's shards are write-locked only for
        // the brief removals below and requests looking up a pool never wait on the sweep.
        let pools: Vec<(PoolKey, Arc<EndpointPool>)> = self
            .pools
            .iter()
            .map(|entry| (*entry.key(), entry.value().clone()))
            .collect();
        for (key, pool) in pools {
            for _ in 0..pool.idle.len() {
                let Some(mut conn) = pool.idle.pop() else {
                    break;
                };
                if conn.idle_since.elapsed() < self.settings.idle_timeout
                    && conn.poll_idle_usable(&mut cx)
                {
                    let _ = pool.idle.push(conn);
                }
            }
            drop(pool);
            self.pools.remove_if(&key, |_, pool| {
                pool.idle.is_empty()
                    && now.saturating_sub(pool.last_used_ms.load(Ordering::Relaxed)) >= idle_ms
                    // Nobody holds it (a request or a response body would).
                    && Arc::strong_count(pool) == 1
            });
        }
    }
}

#[cfg(test)]
mod tests;
