//! The upstream HTTP/1.1 client: a lock-free keep-alive pool per endpoint, each
//! connection driven inline by the request that holds it.
//!
//! hyper-util's pooled `Client` hands every request to a separate connection task over a
//! channel and gets the answer back over a oneshot, with its pool behind one mutex: a task
//! hop each way and a lock per request. Here a connection lives in a [`Pooled`] box that a
//! request owns while it uses it. The request's own task polls the hyper `Connection` next
//! to the response future and, through [`UpstreamBody`], while the response body streams
//! to the client, so no other task is woken. When the body ends the box goes back to its
//! endpoint's lock-free queue ([`crossbeam_queue::ArrayQueue`]). Finding an endpoint's
//! queue is a `DashMap` read (a shard's shared lock: one atomic increment; it is
//! write-locked only to add a new endpoint or forget an unused one). An idle connection is
//! polled once when it is checked out (that is when hyper notices the server closed it)
//! and the sweeper drops the ones idle too long.
//!
//! Upgrade requests (WebSocket) take a fresh connection run by its own task, as the
//! upgraded stream outlives the request; they are never pooled. Connections to an upstream
//! with `[upstreams.NAME.tls]` run rustls ([`crate::upstream_tls`]) and are pooled apart
//! from plain ones to the same address.

use std::future::{poll_fn, Future};
use std::io::IoSlice;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_queue::ArrayQueue;
use dashmap::DashMap;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::body::ProxyBody;
use crate::upstream_tls::UpstreamTls;

/// Upstream client settings.
#[derive(Clone, Debug)]
pub struct ClientSettings {
    /// Time allowed to open a TCP connection. Default 2 s.
    pub connect_timeout: Duration,
    /// An idle pooled connection older than this is closed. Default 90 s.
    pub idle_timeout: Duration,
    /// Idle connections kept per endpoint; more are closed. Default 256.
    pub max_idle_per_endpoint: usize,
}

impl Default for ClientSettings {
    fn default() -> Self {
        ClientSettings {
            connect_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(90),
            max_idle_per_endpoint: 256,
        }
    }
}

/// Why a request got no response.
#[derive(Debug)]
pub enum SendError {
    /// The TCP connection could not be opened (or not in time): nothing was sent.
    Connect(std::io::Error),
    /// The connection failed during the exchange.
    Upstream(hyper::Error),
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
        }
    }
}

type Conn = Connection<TokioIo<UpstreamIo>, ProxyBody>;

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

/// One keep-alive connection: hyper's request handle and the connection it drives.
pub struct Pooled {
    sender: SendRequest<ProxyBody>,
    conn: Conn,
    /// The connection finished (closed by either side); it cannot be reused.
    done: bool,
    idle_since: Instant,
}

impl Pooled {
    /// Polls the connection once, noting when it finishes.
    fn drive(&mut self, cx: &mut Context<'_>) {
        if !self.done && Pin::new(&mut self.conn).poll(cx).is_ready() {
            self.done = true;
        }
    }
}

/// The idle connections of one endpoint.
struct EndpointPool {
    idle: ArrayQueue<Box<Pooled>>,
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
}

impl UpstreamClient {
    /// A client with `settings`. Call [`UpstreamClient::start_sweeper`] from a runtime.
    pub fn new(settings: ClientSettings) -> Arc<Self> {
        let mut http1 = http1::Builder::new();
        http1.max_buf_size(512 * 1024);
        Arc::new(UpstreamClient {
            pools: DashMap::with_hasher(foldhash::fast::RandomState::default()),
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

    /// Sends `request` (origin-form URI, `Host` set) to `address`, over TLS when `tls` is
    /// given, on a pooled connection or a new one. A request that a reused connection closed before sending is sent again
    /// on another, since nothing reached the endpoint.
    ///
    /// # Errors
    /// [`SendError::Connect`] when no connection could be opened, [`SendError::Upstream`]
    /// when the exchange failed.
    pub async fn send(
        &self,
        address: SocketAddr,
        tls: Option<&UpstreamTls>,
        mut request: Request<ProxyBody>,
    ) -> Result<Response<ProxyBody>, SendError> {
        let pool = self.pool((address, tls.map_or(0, UpstreamTls::id)));
        loop {
            let (mut pooled, reused) =
                match poll_fn(|cx| Poll::Ready(self.checkout(&pool, cx))).await {
                    Some(pooled) => (pooled, true),
                    None => (self.connect(address, tls).await?, false),
                };
            let sent = pooled.sender.try_send_request(request);
            let mut sent = std::pin::pin!(sent);
            let result = poll_fn(|cx| {
                pooled.drive(cx);
                sent.as_mut().poll(cx)
            })
            .await;
            match result {
                Ok(response) => {
                    return Ok(response.map(|body| {
                        ProxyBody::upstream(UpstreamBody {
                            body,
                            connection: Some(pooled),
                            pool,
                        })
                    }))
                }
                Err(mut error) => match error.take_message() {
                    // Never written: safe to send again, on a fresh connection if need be.
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(SendError::Upstream(error.into_error())),
                },
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
        let stream = self.open(address, tls).await?;
        let (mut sender, conn) = self
            .http1
            .handshake(TokioIo::new(stream))
            .await
            .map_err(SendError::Upstream)?;
        tokio::spawn(async move {
            if let Err(error) = conn.with_upgrades().await {
                tracing::debug!(%address, "upgraded upstream connection ended: {error}");
            }
        });
        let response = sender
            .send_request(request)
            .await
            .map_err(SendError::Upstream)?;
        Ok(response.map(ProxyBody::stream))
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
    fn checkout(&self, pool: &EndpointPool, cx: &mut Context<'_>) -> Option<Box<Pooled>> {
        while let Some(mut pooled) = pool.idle.pop() {
            if pooled.idle_since.elapsed() >= self.settings.idle_timeout {
                continue;
            }
            // Lets hyper see a FIN or stray bytes from the server, and ready itself for the
            // next request.
            pooled.drive(cx);
            if !pooled.done && pooled.sender.is_ready() {
                return Some(pooled);
            }
        }
        None
    }

    /// Opens a TCP connection (and runs the TLS handshake when `tls` is given), all
    /// within the connect timeout. A failure here means nothing was sent.
    async fn open(
        &self,
        address: SocketAddr,
        tls: Option<&UpstreamTls>,
    ) -> Result<UpstreamIo, SendError> {
        tokio::time::timeout(self.settings.connect_timeout, async {
            let stream = TcpStream::connect(address)
                .await
                .map_err(SendError::Connect)?;
            let _ = stream.set_nodelay(true);
            match tls {
                None => Ok(UpstreamIo::Plain(stream)),
                Some(tls) => match tls.connect(stream, address).await {
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

    async fn connect(
        &self,
        address: SocketAddr,
        tls: Option<&UpstreamTls>,
    ) -> Result<Box<Pooled>, SendError> {
        let stream = self.open(address, tls).await?;
        let (sender, conn) = self
            .http1
            .handshake(TokioIo::new(stream))
            .await
            .map_err(SendError::Upstream)?;
        Ok(Box::new(Pooled {
            sender,
            conn,
            done: false,
            idle_since: Instant::now(),
        }))
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
                let Some(mut pooled) = pool.idle.pop() else {
                    break;
                };
                if pooled.idle_since.elapsed() >= self.settings.idle_timeout {
                    continue;
                }
                pooled.drive(&mut cx);
                if !pooled.done {
                    let _ = pool.idle.push(pooled);
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

/// A response body from an endpoint, which keeps driving its connection and returns it to
/// the pool when the body has been read to the end.
pub struct UpstreamBody {
    body: Incoming,
    connection: Option<Box<Pooled>>,
    pool: Arc<EndpointPool>,
}

impl UpstreamBody {
    /// Hands the connection back to the pool if it can serve another request.
    fn release(&mut self) {
        if let Some(mut pooled) = self.connection.take() {
            if !pooled.done {
                let now = Instant::now();
                pooled.idle_since = now;
                let since_epoch = now.duration_since(self.pool.epoch).as_millis();
                self.pool
                    .last_used_ms
                    .store(u64::try_from(since_epoch).unwrap_or(0), Ordering::Relaxed);
                // A full pool closes the connection (the box is dropped).
                let _ = self.pool.idle.push(pooled);
            }
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let mut polled = Pin::new(&mut this.body).poll_frame(cx);
        if polled.is_pending() {
            if let Some(pooled) = this.connection.as_mut() {
                // The connection reads the next chunk only when driven, and only this task
                // drives it.
                pooled.drive(cx);
                polled = Pin::new(&mut this.body).poll_frame(cx);
            }
        }
        match &polled {
            Poll::Ready(None) => this.release(),
            Poll::Ready(Some(Err(_))) => this.connection = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // A body dropped before its end leaves the connection mid-message: it closes. One
        // that never had a body (HEAD, 204, 304, length 0) is reusable.
        if self.body.is_end_stream() {
            self.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    /// A hyper HTTP/1.1 server on a free loopback port answering "ok"; returns its address
    /// and a counter of accepted connections.
    async fn server() -> (SocketAddr, Arc<AtomicU64>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicU64::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(|_request| async {
                        Ok::<_, std::convert::Infallible>(Response::new(http_body_util::Full::new(
                            Bytes::from_static(b"ok"),
                        )))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (address, accepted)
    }

    async fn get(client: &UpstreamClient, address: SocketAddr) -> String {
        let request = Request::builder()
            .uri("/")
            .header(http::header::HOST, "test")
            .body(ProxyBody::empty())
            .unwrap();
        let response = client.send(address, None, request).await.unwrap();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(body.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn reuses_connections_and_sweeps_idle_ones() {
        let (address, accepted) = server().await;
        let client = UpstreamClient::new(ClientSettings {
            idle_timeout: Duration::from_millis(300),
            ..ClientSettings::default()
        });
        for _ in 0..10 {
            assert_eq!(get(&client, address).await, "ok");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(client.idle_connections(address), 1);

        // Within the idle timeout a sweep keeps the connection; after it, it goes, and the
        // endpoint's pool is forgotten.
        client.sweep();
        assert_eq!(client.idle_connections(address), 1);
        tokio::time::sleep(Duration::from_millis(400)).await;
        client.sweep();
        assert_eq!(client.idle_connections(address), 0);
        assert!(client.pools.is_empty());

        // The next request opens a new connection.
        assert_eq!(get(&client, address).await, "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_connection_refused_is_a_connect_error() {
        let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = unused.local_addr().unwrap();
        drop(unused);
        let client = UpstreamClient::new(ClientSettings::default());
        let request = Request::builder()
            .uri("/")
            .body(ProxyBody::empty())
            .unwrap();
        match client.send(address, None, request).await {
            Err(error) => assert!(error.is_connect(), "{error}"),
            Ok(response) => panic!("answered: {}", response.status()),
        }
    }
}
