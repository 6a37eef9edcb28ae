//! The upstream HTTP/2 client (`protocol = "h2c" | "h2"`, or `auto` for endpoints whose
//! registry says so): a pool of multiplexed connections per endpoint, beside the HTTP/1.1
//! fast path of [`super`].
//!
//! Built on the `h2` crate, the HTTP/2 implementation under hyper, rather than on
//! `hyper::client::conn::http2`, because hyper's handle hides what a pool needs to know:
//! the server's `SETTINGS_MAX_CONCURRENT_STREAMS` (hyper queues a stream over the limit
//! inside the connection instead of letting the pool open another connection), and
//! whether a failed stream was refused unprocessed (GOAWAY above its last stream id,
//! `REFUSED_STREAM`) and so safe to send again. What this module adds to `h2`:
//!
//! - **Multiplexing with overflow**: a request takes a slot on the first live connection
//!   whose streams are under the server's `MAX_CONCURRENT_STREAMS`; when every connection
//!   is full, a new one is opened (one opener at a time per endpoint).
//! - **Keep-alive PINGs** ([`conn`]): a connection whose peer does not answer a PING within
//!   the timeout is dead; its streams fail and it is dropped from the pool.
//! - **GOAWAY**: a connection that received one takes no new stream (found at checkout);
//!   the streams it processed finish; the ones above its last stream id, and streams reset
//!   with `REFUSED_STREAM`, go again on another connection (up to [`MAX_REFUSED_RETRIES`]
//!   times), their first [`body::REPLAY_LIMIT`] bytes replayed.
//! - **RST_STREAM both ways**: a client that goes away (its response body dropped
//!   unfinished) resets the upstream stream with `CANCEL`; an upstream reset fails the
//!   response body, which hyper turns into a reset toward an HTTP/2 client.
//! - **Bounded flow control** ([`body`]): response window is released only as the client
//!   side takes the data, so a client that stops reading holds at most one stream window
//!   ([`H2Settings::initial_stream_window`]) in the gateway; the request body is sent as
//!   the upstream grants window, concurrently with the response (bidirectional streams).
//! - Trailers pass through both ways (`grpc-status`, `grpc-message`, custom ones).

pub mod body;
pub mod conn;

use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use dashmap::DashMap;
use h2::Reason;
use http::uri::{Authority, Scheme};
use http::{header, HeaderValue, Request, Response, Uri, Version};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;

use self::body::{pump, H2Body, ReplayBody, StreamSlot};
use self::conn::H2Conn;
use super::SendError;
use crate::body::ProxyBody;

/// Times a refused stream goes again on another connection. 3.
pub const MAX_REFUSED_RETRIES: u32 = 3;

/// HTTP/2 client settings: the client's defaults, or an upstream's own
/// (`[upstreams.NAME.http2]`). Connections with different settings are pooled apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct H2Settings {
    /// Time between keep-alive PINGs on a connection. Default 10 s.
    pub ping_interval: Duration,
    /// Time a PING may go unanswered before the connection is dead. Default 20 s.
    pub ping_timeout: Duration,
    /// Initial stream window (bytes a stream may receive unread). Default 1 MiB.
    pub initial_stream_window: u32,
    /// Initial connection window. Default 4 MiB.
    pub initial_connection_window: u32,
}

impl Default for H2Settings {
    fn default() -> Self {
        H2Settings {
            ping_interval: Duration::from_secs(10),
            ping_timeout: Duration::from_secs(20),
            initial_stream_window: 1024 * 1024,
            initial_connection_window: 4 * 1024 * 1024,
        }
    }
}

/// The connections of one endpoint.
#[derive(Default)]
struct H2Pool {
    /// Read on every request without a lock; replaced whole when a connection is added.
    conns: ArcSwap<Vec<Arc<H2Conn>>>,
    /// One opener at a time, so a burst on a full pool opens one connection, not many.
    opening: tokio::sync::Mutex<()>,
    next_id: AtomicU64,
}

impl H2Pool {
    /// A slot on a live connection with room.
    fn pick(&self) -> Option<Arc<H2Conn>> {
        self.conns
            .load()
            .iter()
            .find(|c| !c.is_dead() && c.try_acquire())
            .cloned()
    }
}

/// A pool's key: the endpoint, the TLS config id (0 for h2c), the connection settings.
type PoolKey = (SocketAddr, u64, H2Settings);

/// The HTTP/2 pools of a client, by endpoint, TLS config id and connection settings.
pub struct H2Client {
    pools: DashMap<PoolKey, Arc<H2Pool>, foldhash::fast::RandomState>,
    settings: H2Settings,
}

impl H2Client {
    /// An empty client; `settings` apply where a request names none.
    pub fn new(settings: H2Settings) -> Self {
        H2Client {
            pools: DashMap::with_hasher(foldhash::fast::RandomState::default()),
            settings,
        }
    }

    /// The settings used where a request names none.
    pub fn settings(&self) -> &H2Settings {
        &self.settings
    }

    /// Live connections to `address` (`tls_id` 0 for h2c), whatever their settings, for
    /// tests and diagnostics.
    pub fn connections(&self, address: SocketAddr, tls_id: u64) -> usize {
        self.pools
            .iter()
            .filter(|p| p.key().0 == address && p.key().1 == tls_id)
            .map(|p| p.conns.load().iter().filter(|c| !c.is_dead()).count())
            .sum()
    }

    fn pool(&self, key: PoolKey) -> Arc<H2Pool> {
        if let Some(pool) = self.pools.get(&key) {
            return pool.clone();
        }
        self.pools.entry(key).or_default().clone()
    }

    /// Sends `request` over HTTP/2 to `address`, on a connection with `settings` (the
    /// client's when `None`); `open` makes a new transport (TCP, or TLS with ALPN h2) when
    /// the pool needs one. The request's body is taken; its head is left in place, so a
    /// caller may send it again elsewhere.
    ///
    /// # Errors
    /// [`SendError::Connect`] when no connection could be made, [`SendError::H2`] when
    /// the stream failed before a response head arrived.
    pub async fn send<F, Fut, T>(
        &self,
        address: SocketAddr,
        tls_id: u64,
        settings: Option<&H2Settings>,
        request: &mut Request<ProxyBody>,
        open: F,
    ) -> Result<Response<ProxyBody>, SendError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, SendError>>,
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let settings = *settings.unwrap_or(&self.settings);
        let pool = self.pool((address, tls_id, settings));
        let head = h2_head(request, address, tls_id != 0);
        let mut body = Some(ReplayBody::new(std::mem::replace(
            request.body_mut(),
            ProxyBody::empty(),
        )));
        let mut refused = 0;
        loop {
            let conn = match pool.pick() {
                Some(conn) => conn,
                None => open_into(&pool, address, &settings, &open).await?,
            };
            let slot = StreamSlot(conn.clone());
            let mut sender = conn.sender();
            let started = match poll_fn(|cx| sender.poll_ready(cx)).await {
                Ok(()) => {
                    let end = body.as_ref().is_none_or(ReplayBody::is_end_stream);
                    sender.send_request(head.clone(), end).map(|r| (r, end))
                }
                Err(error) => Err(error),
            };
            let (response, end) = match started {
                Ok(started) => started,
                Err(error) => {
                    // GOAWAY received or connection gone: nothing of this request was sent.
                    conn.retire();
                    drop(slot);
                    tracing::debug!(%address, conn = conn.id, "HTTP/2 connection refuses new streams ({error}); trying another");
                    refused += 1;
                    if refused > MAX_REFUSED_RETRIES {
                        return Err(SendError::H2(error));
                    }
                    continue;
                }
            };
            let (cancel, cancelled) = oneshot::channel();
            let (response, stream) = response;
            let pumping = if end {
                drop(stream);
                None
            } else {
                let body = body.take().expect("a body to send");
                Some(tokio::spawn(pump(body, stream, cancelled)))
            };
            match response.await {
                Ok(response) => {
                    let (parts, recv) = response.into_parts();
                    let body = H2Body::new(recv, cancel, slot);
                    return Ok(Response::from_parts(
                        parts,
                        ProxyBody::boxed(body.boxed_unsync()),
                    ));
                }
                Err(error) => {
                    let unprocessed = error.reason() == Some(Reason::REFUSED_STREAM)
                        || (error.is_go_away() && error.is_remote());
                    if error.is_go_away() {
                        conn.retire();
                    }
                    let _ = cancel.send(());
                    if let Some(pumping) = pumping {
                        body = pumping.await.ok();
                    }
                    let replayable = body.as_mut().is_some_and(ReplayBody::rewind);
                    if unprocessed && replayable && refused < MAX_REFUSED_RETRIES {
                        refused += 1;
                        tracing::debug!(%address, conn = conn.id, "HTTP/2 stream refused unprocessed ({error}); sending it again");
                        continue;
                    }
                    return Err(SendError::H2(error));
                }
            }
        }
    }
}

/// Opens a connection with `settings` (unless another task just did) and takes a slot on it.
async fn open_into<F, Fut, T>(
    pool: &H2Pool,
    address: SocketAddr,
    settings: &H2Settings,
    open: &F,
) -> Result<Arc<H2Conn>, SendError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, SendError>>,
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let _opening = pool.opening.lock().await;
    if let Some(conn) = pool.pick() {
        return Ok(conn);
    }
    let io = open().await?;
    let (send, connection) = h2::client::Builder::new()
        .initial_window_size(settings.initial_stream_window)
        .initial_connection_window_size(settings.initial_connection_window)
        .enable_push(false)
        .handshake::<_, Bytes>(io)
        .await
        .map_err(|e| SendError::Connect(std::io::Error::other(e)))?;
    let id = pool.next_id.fetch_add(1, Ordering::Relaxed);
    let conn = H2Conn::spawn(
        send,
        connection,
        address,
        id,
        settings.ping_interval,
        settings.ping_timeout,
    );
    tracing::debug!(%address, conn = id, "HTTP/2 upstream connection opened");
    let taken = conn.try_acquire();
    debug_assert!(taken, "a new connection has room");
    pool.conns.rcu(|list| {
        list.iter()
            .filter(|c| !c.is_dead())
            .cloned()
            .chain(std::iter::once(conn.clone()))
            .collect::<Vec<_>>()
    });
    Ok(conn)
}

/// The request head as h2 wants it: an absolute URI (`:scheme`, `:authority` from the
/// `Host` field or else the endpoint), no `Host` field, no connection-specific fields.
fn h2_head(request: &Request<ProxyBody>, address: SocketAddr, tls: bool) -> Request<()> {
    let authority = request
        .headers()
        .get(header::HOST)
        .and_then(|h| Authority::try_from(h.as_bytes()).ok())
        .or_else(|| request.uri().authority().cloned())
        .unwrap_or_else(|| {
            Authority::try_from(address.to_string().as_str()).expect("an address is an authority")
        });
    let mut uri = Uri::builder()
        .scheme(if tls { Scheme::HTTPS } else { Scheme::HTTP })
        .authority(authority);
    if let Some(path) = request.uri().path_and_query() {
        uri = uri.path_and_query(path.clone());
    } else {
        uri = uri.path_and_query("/");
    }
    let mut head = Request::new(());
    *head.method_mut() = request.method().clone();
    *head.uri_mut() = uri.build().unwrap_or_else(|_| Uri::from_static("/"));
    *head.version_mut() = Version::HTTP_2;
    let mut headers = request.headers().clone();
    headers.remove(header::HOST);
    for name in [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::HeaderName::from_static("keep-alive"),
        header::HeaderName::from_static("proxy-connection"),
    ] {
        headers.remove(name);
    }
    if headers
        .get(header::TE)
        .is_some_and(|te| te != HeaderValue::from_static("trailers"))
    {
        headers.remove(header::TE);
    }
    *head.headers_mut() = headers;
    head
}

#[cfg(test)]
mod tests;
