//! One HTTP/2 connection to an endpoint: its `SendRequest` handle, the streams our
//! requests hold on it, and the task that drives it and sends keep-alive PINGs.
//!
//! The task marks the connection dead when it ends (the peer closed it, or a GOAWAY's
//! streams all finished) or when a PING is not answered within the timeout; then it drops
//! the connection, which fails the streams still open on it. A connection that received a
//! GOAWAY is found out at checkout (`SendRequest::poll_ready` fails) and is not used for new
//! streams; the ones already on it run to their end.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use h2::client::{Connection, SendRequest};
use tokio::io::{AsyncRead, AsyncWrite};

/// A pooled HTTP/2 connection.
pub struct H2Conn {
    send: SendRequest<Bytes>,
    /// Streams our requests hold (counted before h2 opens them, so that concurrent
    /// checkouts do not overfill the connection).
    streams: AtomicUsize,
    dead: Arc<AtomicBool>,
    /// Serial number in its pool, for tests and logs.
    pub id: u64,
}

impl H2Conn {
    /// Wraps a handshaken connection and spawns its driver with keep-alive PINGs every
    /// `ping_interval`, each allowed `ping_timeout`.
    pub fn spawn<T>(
        send: SendRequest<Bytes>,
        mut connection: Connection<T, Bytes>,
        address: SocketAddr,
        id: u64,
        ping_interval: Duration,
        ping_timeout: Duration,
    ) -> Arc<H2Conn>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let dead = Arc::new(AtomicBool::new(false));
        let conn = Arc::new(H2Conn {
            send,
            streams: AtomicUsize::new(0),
            dead: dead.clone(),
            id,
        });
        let mut ping_pong = connection.ping_pong();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(ping_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    ended = &mut connection => {
                        if let Err(error) = ended {
                            tracing::debug!(%address, "HTTP/2 upstream connection ended: {error}");
                        }
                        break;
                    }
                    _ = tick.tick(), if ping_pong.is_some() => {
                        let Some(pinger) = ping_pong.as_mut() else { continue };
                        let sent = pinger.send_ping(h2::Ping::opaque()).is_ok();
                        if !sent {
                            break;
                        }
                        let pong = tokio::time::timeout(ping_timeout, async {
                            // The connection must be driven while the pong is awaited.
                            tokio::select! {
                                pong = poll_fn(|cx| pinger.poll_pong(cx)) => pong.is_ok(),
                                ended = &mut connection => {
                                    if let Err(error) = ended {
                                        tracing::debug!(%address, "HTTP/2 upstream connection ended: {error}");
                                    }
                                    false
                                }
                            }
                        })
                        .await;
                        match pong {
                            Ok(true) => {}
                            Ok(false) => break,
                            Err(_) => {
                                tracing::warn!(%address, "HTTP/2 upstream did not answer a PING in {ping_timeout:?}: connection dead");
                                break;
                            }
                        }
                    }
                }
            }
            dead.store(true, Ordering::Release);
            // Dropping the connection fails the streams still open on it.
        });
        conn
    }

    /// Whether the connection can take no more streams at all.
    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Acquire)
    }

    /// Marks it unusable for new streams (a GOAWAY was seen).
    pub fn retire(&self) {
        self.dead.store(true, Ordering::Release);
    }

    /// Takes a stream slot if the server's `MAX_CONCURRENT_STREAMS` leaves room.
    pub fn try_acquire(&self) -> bool {
        let max = self.send.current_max_send_streams().max(1);
        let mut current = self.streams.load(Ordering::Relaxed);
        loop {
            if current >= max {
                return false;
            }
            match self.streams.compare_exchange_weak(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => current = now,
            }
        }
    }

    /// Gives a stream slot back.
    pub fn release(&self) {
        self.streams.fetch_sub(1, Ordering::AcqRel);
    }

    /// Streams our requests hold now.
    pub fn streams(&self) -> usize {
        self.streams.load(Ordering::Relaxed)
    }

    /// A handle to open a stream.
    pub fn sender(&self) -> SendRequest<Bytes> {
        self.send.clone()
    }
}
