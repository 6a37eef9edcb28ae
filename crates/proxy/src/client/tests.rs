//! Tests of the upstream client against real sockets: a hyper server for pooling and the
//! idle sweep, and scripted raw-TCP endpoints for every response shape the codec must handle
//! (chunked with trailers, close-delimited, bodiless, interim, broken) and for request
//! bodies, early answers and the resend after a lost reused connection.

use super::*;
use bytes::Bytes;
use http::Method;
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
    let mut request = Request::builder()
        .uri("/")
        .header(http::header::HOST, "test")
        .body(ProxyBody::empty())
        .unwrap();
    let response = client
        .send(address, None, &mut request, &AddedFields::default())
        .await
        .unwrap();
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
    let mut request = Request::builder()
        .uri("/")
        .body(ProxyBody::empty())
        .unwrap();
    match client
        .send(address, None, &mut request, &AddedFields::default())
        .await
    {
        Err(error) => assert!(error.is_connect(), "{error}"),
        Ok(response) => panic!("answered: {}", response.status()),
    }
}

/// What a scripted endpoint does after reading a request.
#[derive(Clone, Copy)]
enum Reply {
    /// Writes these bytes and waits for the next request.
    Send(&'static str),
    /// Writes these bytes right after the request head, without reading the body, then
    /// closes.
    BeforeBody(&'static str),
    /// Writes these bytes and closes the connection.
    SendAndClose(&'static str),
    /// Closes the connection without answering.
    Close,
}

/// A raw TCP endpoint answering each request (on any connection) with the next reply of
/// `replies`. Returns its address, the raw requests it read, and its accepted connections.
async fn scripted(
    replies: Vec<Reply>,
) -> (
    SocketAddr,
    Arc<std::sync::Mutex<Vec<String>>>,
    Arc<AtomicU64>,
) {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let requests = Arc::new(std::sync::Mutex::new(Vec::new()));
    let accepted = Arc::new(AtomicU64::new(0));
    let replies = Arc::new(std::sync::Mutex::new(std::collections::VecDeque::from(
        replies,
    )));
    let (seen, counter) = (requests.clone(), accepted.clone());
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            let (seen, replies) = (seen.clone(), replies.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    // The head.
                    let head_end = loop {
                        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break at + 4;
                        }
                        if !read_more(&mut stream, &mut buf).await {
                            return;
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
                    let reply = replies.lock().unwrap().pop_front().expect("a reply left");
                    if let Reply::BeforeBody(bytes) = reply {
                        seen.lock().unwrap().push(head);
                        let _ = stream.write_all(bytes.as_bytes()).await;
                        return;
                    }
                    // The body, by its framing.
                    let length = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length: "))
                        .map(|n| n.trim().parse::<usize>().unwrap());
                    let end = loop {
                        let end = match length {
                            Some(n) => (buf.len() >= head_end + n).then_some(head_end + n),
                            None if head.contains("transfer-encoding: chunked") => buf
                                .windows(5)
                                .position(|w| w == b"0\r\n\r\n")
                                .map(|at| at + 5),
                            None => Some(head_end),
                        };
                        if let Some(end) = end {
                            break end;
                        }
                        if !read_more(&mut stream, &mut buf).await {
                            return;
                        }
                    };
                    seen.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&buf[..end]).into_owned());
                    buf.drain(..end);
                    match reply {
                        Reply::Send(bytes) => {
                            if stream.write_all(bytes.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                        Reply::SendAndClose(bytes) => {
                            let _ = stream.write_all(bytes.as_bytes()).await;
                            return;
                        }
                        Reply::Close | Reply::BeforeBody(_) => return,
                    }
                }
            });
        }
    });
    (address, requests, accepted)
}

/// Appends what `stream` sends next to `buf`; `false` at its end (or an error).
async fn read_more(stream: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> bool {
    use tokio::io::AsyncReadExt;
    let mut chunk = [0u8; 4096];
    match stream.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

fn request(method: Method, body: ProxyBody) -> Request<ProxyBody> {
    let mut request = Request::builder()
        .method(method)
        .uri("/path?q=1")
        .header(http::header::HOST, "upstream.test")
        .body(body)
        .unwrap();
    request.headers_mut().insert("x-test", "1".parse().unwrap());
    request
}

/// Sends and collects the whole response: status, body text, trailers.
async fn exchange(
    client: &UpstreamClient,
    address: SocketAddr,
    mut request: Request<ProxyBody>,
) -> Result<(http::StatusCode, String, Option<http::HeaderMap>), String> {
    let response = client
        .send(address, None, &mut request, &AddedFields::default())
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let collected = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    let trailers = collected.trailers().cloned();
    let body = String::from_utf8(collected.to_bytes().to_vec()).unwrap();
    Ok((status, body, trailers))
}

fn plain_get() -> Request<ProxyBody> {
    request(Method::GET, ProxyBody::empty())
}

#[tokio::test]
async fn chunked_responses_with_trailers_stream_and_keep_the_connection() {
    let chunked = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
                   5\r\nhello\r\n6\r\n world\r\n0\r\nx-checksum: 7\r\n\r\n";
    let (address, requests, accepted) =
        scripted(vec![Reply::Send(chunked), Reply::Send(chunked)]).await;
    let client = UpstreamClient::new(ClientSettings::default());
    for _ in 0..2 {
        let (status, body, trailers) = exchange(&client, address, plain_get()).await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(body, "hello world");
        assert_eq!(trailers.unwrap()["x-checksum"], "7");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "one connection, reused");
    assert_eq!(client.idle_connections(address), 1);
    let requests = requests.lock().unwrap();
    assert_eq!(
        requests[0],
        "GET /path?q=1 HTTP/1.1\r\nhost: upstream.test\r\nx-test: 1\r\n\r\n"
    );
}

#[tokio::test]
async fn responses_that_end_the_connection_are_not_pooled() {
    let (address, _, accepted) = scripted(vec![
        // Delimited by the close.
        Reply::SendAndClose("HTTP/1.1 200 OK\r\n\r\nuntil the end"),
        // Says so.
        Reply::Send("HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok"),
        // HTTP/1.0 without keep-alive.
        Reply::Send("HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok"),
        // Bytes after the response: the connection is out of step.
        Reply::Send("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokEXTRA"),
        Reply::Send("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"),
    ])
    .await;
    let client = UpstreamClient::new(ClientSettings::default());
    let (_, body, _) = exchange(&client, address, plain_get()).await.unwrap();
    assert_eq!(body, "until the end");
    for _ in 0..4 {
        assert_eq!(
            exchange(&client, address, plain_get()).await.unwrap().1,
            "ok"
        );
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        5,
        "a new connection each time"
    );
    assert_eq!(
        client.idle_connections(address),
        1,
        "only the last one pooled"
    );
}

#[tokio::test]
async fn bodiless_responses_and_interim_ones() {
    let (address, _, accepted) = scripted(vec![
        Reply::Send("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n"),
        Reply::Send("HTTP/1.1 204 No Content\r\n\r\n"),
        Reply::Send("HTTP/1.1 304 Not Modified\r\ncontent-length: 10\r\n\r\n"),
        Reply::Send("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 4\r\n\r\nmade"),
    ])
    .await;
    let client = UpstreamClient::new(ClientSettings::default());
    let (status, body, _) = exchange(&client, address, request(Method::HEAD, ProxyBody::empty()))
        .await
        .unwrap();
    assert_eq!((status.as_u16(), body.as_str()), (200, ""));
    let (status, body, _) = exchange(&client, address, plain_get()).await.unwrap();
    assert_eq!((status.as_u16(), body.as_str()), (204, ""));
    let (status, body, _) = exchange(&client, address, plain_get()).await.unwrap();
    assert_eq!((status.as_u16(), body.as_str()), (304, ""));
    let (status, body, _) = exchange(&client, address, plain_get()).await.unwrap();
    assert_eq!((status.as_u16(), body.as_str()), (201, "made"));
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "every response kept the connection"
    );
}

/// A streamed body of unknown length, fed through a channel.
fn streamed() -> (futures::channel::mpsc::UnboundedSender<Bytes>, ProxyBody) {
    use futures::StreamExt;
    let (tx, rx) = futures::channel::mpsc::unbounded::<Bytes>();
    let body = http_body_util::StreamBody::new(rx.map(|b| Ok(http_body::Frame::data(b))));
    (tx, ProxyBody::boxed(BodyExt::boxed_unsync(body)))
}

#[tokio::test]
async fn request_bodies_go_with_a_length_or_chunked() {
    let ok = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
    let (address, requests, _) =
        scripted(vec![Reply::Send(ok), Reply::Send(ok), Reply::Send(ok)]).await;
    let client = UpstreamClient::new(ClientSettings::default());

    let full = ProxyBody::full(Bytes::from_static(b"0123456789"));
    exchange(&client, address, request(Method::POST, full))
        .await
        .unwrap();
    exchange(&client, address, request(Method::POST, ProxyBody::empty()))
        .await
        .unwrap();
    let (tx, body) = streamed();
    let sending = tokio::spawn(async move {
        for part in ["first ", "second"] {
            tx.unbounded_send(Bytes::from_static(part.as_bytes()))
                .unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    exchange(&client, address, request(Method::PUT, body))
        .await
        .unwrap();
    sending.await.unwrap();

    let requests = requests.lock().unwrap();
    assert_eq!(
        requests[0],
        "POST /path?q=1 HTTP/1.1\r\nhost: upstream.test\r\nx-test: 1\r\ncontent-length: 10\r\n\r\n0123456789"
    );
    assert!(
        requests[1].ends_with("x-test: 1\r\ncontent-length: 0\r\n\r\n"),
        "{}",
        requests[1]
    );
    assert_eq!(
        requests[2],
        "PUT /path?q=1 HTTP/1.1\r\nhost: upstream.test\r\nx-test: 1\r\ntransfer-encoding: chunked\r\n\r\n\
         6\r\nfirst \r\n6\r\nsecond\r\n0\r\n\r\n"
    );
}

#[tokio::test]
async fn an_early_answer_is_heard_while_the_body_is_still_coming() {
    let (address, _, accepted) = scripted(vec![
        Reply::BeforeBody("HTTP/1.1 413 Payload Too Large\r\ncontent-length: 3\r\n\r\nbig"),
        Reply::Send("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"),
    ])
    .await;
    let client = UpstreamClient::new(ClientSettings::default());
    let (tx, body) = streamed();
    tx.unbounded_send(Bytes::from_static(b"part")).unwrap();
    // The sender stays open: the body never ends.
    let (status, body, _) = exchange(&client, address, request(Method::POST, body))
        .await
        .unwrap();
    assert_eq!((status.as_u16(), body.as_str()), (413, "big"));
    assert_eq!(
        client.idle_connections(address),
        0,
        "mid-request: not reusable"
    );
    assert_eq!(
        exchange(&client, address, plain_get()).await.unwrap().1,
        "ok"
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    drop(tx);
}

#[tokio::test]
async fn a_reused_connection_lost_before_an_answer_resends_only_what_is_safe() {
    let ok = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
    let (address, requests, accepted) = scripted(vec![
        Reply::Send(ok),
        // The endpoint drops the reused connection as the GET arrives: sent again on a
        // new connection.
        Reply::Close,
        Reply::Send(ok),
        // The same for a POST: not sent again.
        Reply::Close,
    ])
    .await;
    let client = UpstreamClient::new(ClientSettings::default());
    exchange(&client, address, plain_get()).await.unwrap();
    assert_eq!(
        exchange(&client, address, plain_get()).await.unwrap().1,
        "ok"
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    assert_eq!(requests.lock().unwrap().len(), 3);
    let error = exchange(&client, address, request(Method::POST, ProxyBody::empty()))
        .await
        .unwrap_err();
    assert!(error.contains("closed"), "{error}");
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        2,
        "no new connection for the POST"
    );
}

#[tokio::test]
async fn broken_responses_fail_the_exchange_or_the_body() {
    let (address, _, _) = scripted(vec![
        Reply::SendAndClose("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort"),
        Reply::SendAndClose("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n"),
        Reply::Send("HTTP/1.1 200 OK\r\ncontent-length: 1, 2\r\n\r\nx"),
        Reply::Send("NOT HTTP AT ALL\r\n\r\n"),
        Reply::Send("HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n"),
    ])
    .await;
    let client = UpstreamClient::new(ClientSettings::default());
    let body_error = exchange(&client, address, plain_get()).await.unwrap_err();
    assert!(body_error.contains("closed"), "{body_error}");
    let body_error = exchange(&client, address, plain_get()).await.unwrap_err();
    assert!(body_error.contains("chunked"), "{body_error}");
    for expected in ["content-length", "malformed", "101"] {
        let error = exchange(&client, address, plain_get()).await.unwrap_err();
        assert!(
            error.starts_with("upstream: ") && error.contains(expected),
            "{error}"
        );
    }
    assert_eq!(client.idle_connections(address), 0);
}
