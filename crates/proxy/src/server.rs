//! The listener: accepts connections, serves HTTP/1.1 and h2c (prior knowledge) with
//! hyper-util's auto builder, enforces the connection-level limits, and drains gracefully
//! on shutdown.
//!
//! Limits (all under `[server]`, with nginx-like safe defaults): header block size
//! (hyper answers 431), header count (431), a header read timeout against slowloris (the
//! connection is closed), HTTP/2 concurrent streams and windows, and a global connection
//! cap: past it, a connection gets an immediate 503 and is closed, so overload sheds fast
//! instead of queueing.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::body::ProxyBody;
use crate::first_bytes::FirstBytes;
use crate::head_guard::HeadGuard;
use crate::proxy::Peer;
use crate::tls::TlsConfig;
use crate::Proxy;

/// Listener settings.
#[derive(Clone, Debug)]
pub struct ServerSettings {
    /// Time allowed for a request's headers to arrive; a slower client is disconnected
    /// (slowloris guard). Also bounds how long an idle keep-alive connection waits for its
    /// next request. Default 30 s.
    pub header_read_timeout: Duration,
    /// How long shutdown waits for in-flight requests. Default 30 s.
    pub drain_timeout: Duration,
    /// Largest request head (request line and headers) in bytes; larger gets 431.
    /// Default 32 KiB (at least 8 KiB).
    pub max_header_bytes: usize,
    /// Most headers in a request; more gets 431. Default 100.
    pub max_headers: usize,
    /// Open client connections at most; past it, 503 and close. Default 10,000.
    pub max_connections: usize,
    /// HTTP/2 streams per connection. Default 100.
    pub h2_max_concurrent_streams: u32,
    /// HTTP/2 initial stream window in bytes. Default 1 MiB.
    pub h2_initial_stream_window: u32,
    /// HTTP/2 initial connection window in bytes. Default 2 MiB.
    pub h2_initial_connection_window: u32,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            header_read_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(30),
            max_header_bytes: 32 * 1024,
            max_headers: 100,
            max_connections: 10_000,
            h2_max_concurrent_streams: 100,
            h2_initial_stream_window: 1024 * 1024,
            h2_initial_connection_window: 2 * 1024 * 1024,
        }
    }
}

/// hyper's HTTP/1 header count limit when none is set (`hyper::server::conn::http1::Builder::max_headers`).
const HYPER_MAX_HEADERS: usize = 100;

/// The answer to a connection over the cap.
const OVERLOADED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: 48\r\n\r\n{\"error\":\"too many connections\",\"request_id\":\"\"}";

/// What a listener speaks.
#[derive(Clone, Debug, Default)]
pub enum ListenerKind {
    /// Plain HTTP/1.1 and h2c.
    #[default]
    Plain,
    /// TLS with ALPN h2 / http/1.1.
    Tls(TlsConfig),
    /// Plain HTTP that answers every request with a 308 to `https://` on this port.
    RedirectToHttps(u16),
}

/// Serves `proxy` on `listener` until `shutdown` resolves, then stops accepting and waits
/// up to `drain_timeout` for open requests to finish.
pub async fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    settings: ServerSettings,
    shutdown: impl Future<Output = ()>,
) {
    serve_kind(listener, proxy, settings, ListenerKind::Plain, shutdown).await;
}

/// [`serve`] for any kind of listener.
pub async fn serve_kind(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    settings: ServerSettings,
    kind: ListenerKind,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .max_buf_size(settings.max_header_bytes.max(8192))
        .keep_alive(true);
    // hyper's own limit is 100 headers, in slot arrays made without initialising them; any
    // limit set, even 100, makes it fill two 100-slot vectors per request (bench/cost.sh:
    // 801 of 29,222 instructions a request in `SmallVec::from_elem`). So only another
    // limit is set.
    if settings.max_headers != HYPER_MAX_HEADERS {
        builder.http1().max_headers(settings.max_headers);
    }
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(settings.h2_max_concurrent_streams)
        .initial_stream_window_size(settings.h2_initial_stream_window)
        .initial_connection_window_size(settings.h2_initial_connection_window)
        .max_header_list_size(settings.max_header_bytes.max(8192) as u32);
    // The head guard's limit is hyper's buffer limit, so that hyper answers 431 past it.
    let max_head_bytes = settings.max_header_bytes.max(8192);
    let connections = Arc::new(Semaphore::new(settings.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    // Connections that have not started HTTP yet (no byte received, TLS handshake under
    // way) hold no request: on drain they are closed at once instead of being waited for.
    // Clients do open such connections: a pool's spare connection, a browser's preconnect.
    let (drain, draining) = tokio::sync::watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (stream, client) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!("accept failed: {error}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tokio::spawn(refuse(stream, client));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let proto = if matches!(kind, ListenerKind::Tls(_)) {
            "https"
        } else {
            "http"
        };
        let peer = Arc::new(Peer::new(client, proto));
        let proxy = proxy.clone();
        let service = service_fn(move |request| {
            let (proxy, peer) = (proxy.clone(), peer.clone());
            async move { Ok::<_, std::convert::Infallible>(proxy.handle_from(request, &peer).await) }
        });
        match &kind {
            ListenerKind::Plain => {
                let builder = builder.clone();
                let watcher = graceful.watcher();
                let first_byte_timeout = settings.header_read_timeout;
                let mut draining = draining.clone();
                tokio::spawn(async move {
                    // hyper-util reads the first bytes (to tell HTTP/1 from h2) before
                    // hyper's header timer runs: without this, a client that sends nothing
                    // (or half the h2 preface) would hold its connection slot forever.
                    let arrived = tokio::select! {
                        arrived = version_bytes_arrive(&stream, first_byte_timeout) => arrived,
                        _ = draining.wait_for(|d| *d) => false,
                    };
                    if !arrived {
                        tracing::debug!(%client, "nothing received in time (or draining): closed");
                        return;
                    }
                    // Strict request framing before hyper's parser (request smuggling).
                    let stream = HeadGuard::new(stream, max_head_bytes);
                    let connection =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    if let Err(error) = watcher.watch(connection.into_owned()).await {
                        tracing::debug!(%client, "connection ended: {error}");
                    }
                    drop(permit);
                });
            }
            ListenerKind::Tls(tls) => {
                let acceptor = tls.acceptor();
                let builder = builder.clone();
                let first_byte_timeout = settings.header_read_timeout;
                let watcher = graceful.watcher();
                let mut draining = draining.clone();
                tokio::spawn(async move {
                    let handshake = tokio::select! {
                        handshake = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)) => handshake,
                        _ = draining.wait_for(|d| *d) => {
                            tracing::debug!(%client, "draining: TLS handshake abandoned");
                            return;
                        }
                    };
                    let stream = match handshake {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(error)) => {
                            tracing::debug!(%client, "TLS handshake failed: {error}");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%client, "TLS handshake timed out");
                            return;
                        }
                    };
                    // No peeking into TLS: the first bytes are timed as they are read.
                    let stream = FirstBytes::new(stream, first_byte_timeout);
                    let stream = HeadGuard::new(stream, max_head_bytes);
                    let connection =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    if let Err(error) = watcher.watch(connection.into_owned()).await {
                        tracing::debug!(%client, "connection ended: {error}");
                    }
                    drop(permit);
                });
            }
            ListenerKind::RedirectToHttps(port) => {
                let port = *port;
                let redirect = service_fn(
                    move |request: hyper::Request<hyper::body::Incoming>| async move {
                        Ok::<_, std::convert::Infallible>(redirect_to_https(&request, port))
                    },
                );
                let connection = builder.serve_connection(TokioIo::new(stream), redirect);
                let connection = graceful.watch(connection.into_owned());
                tokio::spawn(async move {
                    let _ = connection.await;
                    drop(permit);
                });
            }
        }
    }
    drop(listener);
    let _ = drain.send(true);
    let open = || settings.max_connections.max(1) - connections.available_permits();
    tracing::info!(connections = open(), "draining");
    let drained = graceful.shutdown();
    tokio::pin!(drained);
    let deadline = tokio::time::sleep(settings.drain_timeout);
    tokio::pin!(deadline);
    let mut progress = tokio::time::interval(Duration::from_secs(1));
    progress.tick().await;
    loop {
        tokio::select! {
            () = &mut drained => {
                tracing::info!("drained all connections");
                break;
            }
            () = &mut deadline => {
                tracing::warn!(connections = open(), "drain timeout; closing remaining connections");
                break;
            }
            _ = progress.tick() => tracing::info!(connections = open(), "draining"),
        }
    }
}

/// Waits, up to `timeout`, until the connection's first bytes tell HTTP/1 from h2 (what
/// hyper-util's version detection waits for): any byte off the h2 preface, or all of it.
/// False when the client closed, failed or stalled.
async fn version_bytes_arrive(stream: &TcpStream, timeout: Duration) -> bool {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    tokio::time::timeout(timeout, async {
        let mut buf = [0u8; 24];
        loop {
            match stream.peek(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) if n == PREFACE.len() || buf[..n] != PREFACE[..n] => return true,
                // Part of the preface: peek does not consume, so readiness stays set; pace
                // the re-check (a rare path: real h2 clients send the preface at once).
                Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    })
    .await
    .unwrap_or(false)
}

/// Time allowed for a TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// `308 Permanent Redirect` to the same host and path over https on `port`.
fn redirect_to_https(
    request: &hyper::Request<hyper::body::Incoming>,
    port: u16,
) -> hyper::Response<ProxyBody> {
    let host = request
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().host())
        .unwrap_or("localhost");
    // Only a valid host goes into the Location (never `evil.example/x` or userinfo).
    let Some(host) =
        crate::grammar::host(host.as_bytes()).and_then(|h| std::str::from_utf8(h).ok())
    else {
        let mut response = hyper::Response::new(ProxyBody::empty());
        *response.status_mut() = http::StatusCode::BAD_REQUEST;
        return response;
    };
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let location = if port == 443 {
        format!("https://{host}{path}")
    } else {
        format!("https://{host}:{port}{path}")
    };
    let mut response = hyper::Response::new(ProxyBody::empty());
    *response.status_mut() = http::StatusCode::PERMANENT_REDIRECT;
    if let Ok(value) = http::HeaderValue::from_str(&location) {
        response.headers_mut().insert(http::header::LOCATION, value);
    }
    response
}

/// Answers a connection over the cap with 503 and closes it, without reading its request.
async fn refuse(mut stream: TcpStream, client: SocketAddr) {
    tracing::debug!(%client, "connection cap reached: 503");
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(OVERLOADED).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// Binds a listener on `address`.
pub async fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(address).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overload_answer_is_well_formed() {
        let text = std::str::from_utf8(OVERLOADED).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(body.len(), length);
        serde_json::from_str::<serde_json::Value>(body).unwrap();
    }
}
