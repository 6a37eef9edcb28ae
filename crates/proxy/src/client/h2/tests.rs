//! HTTP/2 framing tests of the pool against real sockets: an `h2` server for
//! MAX_CONCURRENT_STREAMS, graceful GOAWAY with a stream in flight, trailers and full
//! duplex; scripted raw-frame servers for a GOAWAY that refuses a stream (replayed on a new
//! connection) and for a peer that stops answering PINGs.

use std::sync::atomic::AtomicUsize;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::client::{ClientSettings, UpstreamClient};

fn client(h2: H2Settings) -> Arc<UpstreamClient> {
    UpstreamClient::new(ClientSettings {
        h2,
        ..ClientSettings::default()
    })
}

fn request(body: ProxyBody) -> Request<ProxyBody> {
    Request::builder()
        .method(Method::POST)
        .uri("/svc/Method")
        .header(header::HOST, "test")
        .body(body)
        .unwrap()
}

/// An `h2` server: each request gets a 200 head at once, then `hold` runs before its
/// body ends with trailers `x-end: yes`. Counts accepted connections.
async fn h2_server<H, F>(
    max_streams: u32,
    hold: H,
) -> (SocketAddr, Arc<AtomicUsize>, tokio::task::JoinHandle<()>)
where
    H: Fn(usize) -> F + Send + Sync + Clone + 'static,
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            let hold = hold.clone();
            tokio::spawn(async move {
                let mut conn = h2::server::Builder::new()
                    .max_concurrent_streams(max_streams)
                    .handshake::<_, Bytes>(stream)
                    .await
                    .unwrap();
                while let Some(Ok((req, mut respond))) = conn.accept().await {
                    let hold = hold.clone();
                    tokio::spawn(async move {
                        let mut body = req.into_body();
                        let mut got = Vec::new();
                        while let Some(Ok(chunk)) = body.data().await {
                            let _ = body.flow_control().release_capacity(chunk.len());
                            got.extend_from_slice(&chunk);
                        }
                        let mut send = respond
                            .send_response(http::Response::new(()), false)
                            .unwrap();
                        hold(n).await;
                        let _ = send.send_data(Bytes::from(got), false);
                        let mut trailers = HeaderMap::new();
                        trailers.insert("x-end", "yes".parse().unwrap());
                        let _ = send.send_trailers(trailers);
                    });
                }
            });
        }
    });
    (address, accepted, task)
}

async fn read_all(response: Response<ProxyBody>) -> (Bytes, Option<HeaderMap>) {
    let collected = response.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    (collected.to_bytes(), trailers)
}

#[tokio::test]
async fn trailers_pass_and_the_body_goes_both_ways() {
    let (address, _, _server) = h2_server(100, |_| async {}).await;
    let client = client(H2Settings::default());
    let mut req = request(ProxyBody::full(Bytes::from_static(b"hello")));
    let response = client.send_h2(address, None, None, &mut req).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let (body, trailers) = read_all(response).await;
    assert_eq!(&body[..], b"hello");
    assert_eq!(trailers.unwrap()["x-end"], "yes");
    assert_eq!(client.h2().connections(address, 0), 1);
}

#[tokio::test]
async fn max_concurrent_streams_one_opens_a_second_connection() {
    let (release, released) = tokio::sync::watch::channel(false);
    let (address, accepted, _server) = h2_server(1, move |_| {
        let mut released = released.clone();
        async move {
            let _ = released.wait_for(|r| *r).await;
        }
    })
    .await;
    let client = client(H2Settings::default());
    // The first stream stays open (its body waits for `release`)...
    let mut first = request(ProxyBody::empty());
    let first = client
        .send_h2(address, None, None, &mut first)
        .await
        .unwrap();
    // ...so the second cannot go on the same connection: the server allows one stream.
    let mut second = request(ProxyBody::empty());
    let second = tokio::time::timeout(
        Duration::from_secs(20),
        client.send_h2(address, None, None, &mut second),
    )
    .await
    .expect("second stream not blocked behind the first")
    .unwrap();
    assert_eq!(accepted.load(Ordering::SeqCst), 2, "a second connection");
    assert_eq!(client.h2().connections(address, 0), 2);
    release.send(true).unwrap();
    let ((_, t1), (_, t2)) = tokio::join!(read_all(first), read_all(second));
    assert!(t1.is_some() && t2.is_some());
    // Both connections now have room: a third stream opens no third connection.
    let mut third = request(ProxyBody::empty());
    let third = client
        .send_h2(address, None, None, &mut third)
        .await
        .unwrap();
    read_all(third).await;
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn graceful_goaway_lets_the_stream_finish_and_new_ones_use_a_new_connection() {
    // The first connection's server shuts down gracefully (GOAWAY) while its stream is in
    // flight, then finishes that stream.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let (goaway_sent, mut goaway_seen) = tokio::sync::watch::channel(false);
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            let goaway_sent = goaway_sent.clone();
            tokio::spawn(async move {
                let mut conn = h2::server::handshake(stream).await.unwrap();
                let Some(Ok((_req, mut respond))) = conn.accept().await else {
                    return;
                };
                let mut send = respond
                    .send_response(http::Response::new(()), false)
                    .unwrap();
                if n == 0 {
                    conn.graceful_shutdown();
                    let _ = goaway_sent.send(true);
                    // Drive the connection (GOAWAY, PING) while the stream finishes late.
                    let finish = async move {
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        let _ = send.send_data(Bytes::from_static(b"first"), true);
                    };
                    let drive = async { while let Some(Ok(_)) = conn.accept().await {} };
                    tokio::join!(finish, drive);
                } else {
                    let _ = send.send_data(Bytes::from_static(b"second"), true);
                    while let Some(Ok(_)) = conn.accept().await {}
                }
            });
        }
    });
    let client = client(H2Settings::default());
    let mut first = request(ProxyBody::empty());
    let first = client
        .send_h2(address, None, None, &mut first)
        .await
        .unwrap();
    goaway_seen.wait_for(|s| *s).await.unwrap();
    // Let the GOAWAY reach the client.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut second = request(ProxyBody::empty());
    let second = client
        .send_h2(address, None, None, &mut second)
        .await
        .unwrap();
    let ((b1, _), (b2, _)) = tokio::join!(read_all(first), read_all(second));
    assert_eq!(&b1[..], b"first", "the stream in flight finished");
    assert_eq!(&b2[..], b"second");
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        2,
        "new stream on a new connection"
    );
}

/// Reads HTTP/2 frames from a raw socket: (type, flags, stream id, payload).
async fn read_frame(stream: &mut TcpStream) -> Option<(u8, u8, u32, Vec<u8>)> {
    let mut head = [0u8; 9];
    stream.read_exact(&mut head).await.ok()?;
    let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
    let id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    let mut payload = vec![0; len];
    stream.read_exact(&mut payload).await.ok()?;
    Some((head[3], head[4], id, payload))
}

/// Reads the client preface and answers with an empty SETTINGS frame.
async fn raw_handshake(stream: &mut TcpStream) {
    let mut preface = [0u8; 24];
    stream.read_exact(&mut preface).await.unwrap();
    assert_eq!(&preface, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    stream
        .write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0])
        .await
        .unwrap();
}

#[tokio::test]
async fn a_stream_above_goaways_last_stream_id_is_sent_again_with_its_body() {
    // Connection 1 answers the first HEADERS with GOAWAY(last_stream_id = 0): the stream
    // was not processed. Connection 2 is a real h2 server that echoes the body.
    let (echo, _, _server) = h2_server(100, |_| async {}).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let refused = Arc::new(AtomicUsize::new(0));
    let counter = refused.clone();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        raw_handshake(&mut stream).await;
        while let Some((kind, _, _, _)) = read_frame(&mut stream).await {
            if kind == 1 {
                // GOAWAY: last stream id 0, NO_ERROR.
                let goaway = [0, 0, 8, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
                stream.write_all(&goaway).await.unwrap();
                counter.fetch_add(1, Ordering::SeqCst);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(stream);
        // Every later connection is proxied to the echo server.
        while let Ok((mut inbound, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut outbound = TcpStream::connect(echo).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
        }
    });
    let client = client(H2Settings::default());
    let mut req = request(ProxyBody::full(Bytes::from_static(b"order-42")));
    let response = client.send_h2(address, None, None, &mut req).await.unwrap();
    let (body, trailers) = read_all(response).await;
    assert_eq!(
        refused.load(Ordering::SeqCst),
        1,
        "the first connection refused it"
    );
    assert_eq!(&body[..], b"order-42", "the body was replayed whole");
    assert_eq!(trailers.unwrap()["x-end"], "yes");
}

#[tokio::test]
async fn an_unanswered_ping_marks_the_connection_dead() {
    // A peer that completes the handshake, then reads and never answers anything.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        raw_handshake(&mut stream).await;
        while read_frame(&mut stream).await.is_some() {}
    });
    let client = client(H2Settings {
        ping_interval: Duration::from_millis(100),
        ping_timeout: Duration::from_millis(300),
        ..H2Settings::default()
    });
    let started = Instant::now();
    let mut req = request(ProxyBody::empty());
    let result = tokio::time::timeout(
        Duration::from_secs(30),
        client.send_h2(address, None, None, &mut req),
    )
    .await
    .expect("the request fails instead of hanging");
    println!("failed after {:?}", started.elapsed());
    assert!(result.is_err(), "no response from a dead peer");
    assert_eq!(
        client.h2().connections(address, 0),
        0,
        "the connection is dead"
    );
}

#[tokio::test]
async fn a_dropped_response_body_resets_the_upstream_stream() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (reset_tx, reset_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut conn = h2::server::handshake(stream).await.unwrap();
        let (_req, mut respond) = conn.accept().await.unwrap().unwrap();
        let mut send = respond
            .send_response(http::Response::new(()), false)
            .unwrap();
        let _ = send.send_data(Bytes::from_static(b"part"), false);
        let drive = async { while let Some(Ok(_)) = conn.accept().await {} };
        let reset = poll_fn(|cx| send.poll_reset(cx));
        tokio::select! {
            reason = reset => { let _ = reset_tx.send(reason.ok()); }
            () = drive => {}
        }
    });
    let client = client(H2Settings::default());
    // A streaming request body that never ends: the pump is still running.
    let (_keep, rx) =
        tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, crate::body::BoxError>>(1);
    let body = http_body_util::StreamBody::new(tokio_stream_from(rx));
    let mut req = request(ProxyBody::boxed(BodyExt::boxed_unsync(body)));
    let response = client.send_h2(address, None, None, &mut req).await.unwrap();
    drop(response);
    let reason = tokio::time::timeout(Duration::from_secs(20), reset_rx)
        .await
        .expect("the server saw a reset")
        .unwrap();
    assert_eq!(reason, Some(Reason::CANCEL));
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test]
async fn an_upstreams_own_settings_go_on_the_wire_on_connections_of_their_own() {
    // A raw peer that reports what each connection's client announced: SETTINGS_INITIAL_
    // WINDOW_SIZE (0x4) and the connection WINDOW_UPDATE, until the first HEADERS.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let seen_tx = seen_tx.clone();
            tokio::spawn(async move {
                raw_handshake(&mut stream).await;
                let (mut stream_window, mut connection_increment) = (None, 0u32);
                while let Some((kind, flags, id, payload)) = read_frame(&mut stream).await {
                    match kind {
                        4 if flags & 1 == 0 => {
                            for param in payload.chunks(6) {
                                if param[..2] == [0, 4] {
                                    stream_window =
                                        Some(u32::from_be_bytes(param[2..6].try_into().unwrap()));
                                }
                            }
                            // ACK the client's SETTINGS.
                            stream
                                .write_all(&[0, 0, 0, 4, 1, 0, 0, 0, 0])
                                .await
                                .unwrap();
                        }
                        8 if id == 0 => {
                            connection_increment +=
                                u32::from_be_bytes(payload[..4].try_into().unwrap()) & 0x7fff_ffff;
                        }
                        1 => {
                            let _ = seen_tx.send((stream_window, connection_increment));
                        }
                        _ => {}
                    }
                }
            });
        }
    });
    let client = client(H2Settings::default());
    let own = H2Settings {
        initial_stream_window: 256 * 1024,
        initial_connection_window: 512 * 1024,
        ..H2Settings::default()
    };
    for settings in [None, Some(&own)] {
        let mut req = request(ProxyBody::empty());
        // Nothing answers the request: it only has to reach the peer.
        let _ = tokio::time::timeout(
            Duration::from_millis(500),
            client.send_h2(address, None, settings, &mut req),
        )
        .await;
    }
    let default = tokio::time::timeout(Duration::from_secs(10), seen.recv())
        .await
        .unwrap()
        .unwrap();
    let custom = tokio::time::timeout(Duration::from_secs(10), seen.recv())
        .await
        .unwrap()
        .unwrap();
    // The initial connection window is 65535; the client adds the rest in a WINDOW_UPDATE.
    assert_eq!(default, (Some(1024 * 1024), 4 * 1024 * 1024 - 65_535));
    assert_eq!(custom, (Some(256 * 1024), 512 * 1024 - 65_535));
    assert_eq!(
        client.h2().connections(address, 0),
        2,
        "one connection per settings"
    );
}
