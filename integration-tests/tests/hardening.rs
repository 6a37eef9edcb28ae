//! Hostile HTTP against the real binary, over raw TCP: request smuggling shapes (refused by
//! the gateway's head guard, `crates/proxy/src/head_guard.rs`), header and URI limits, body
//! limits (declared and chunked), slowloris, forwarded-header trust, the connection cap, a
//! WebSocket-style upgrade tunnel, the admin token, and hostile upstream responses (a
//! malformed or oversized head is a 502, a stale `Content-Length` is not passed on).
//! Each malformed case checks the status, that the connection is closed, and that the
//! backend never received the request.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use switchyard_integration_tests::{Backend, Gateway};

fn config(backend: &Backend, server_extra: &str) -> String {
    format!(
        "[server]\nlisten = \"{{listen}}\"\n{server_extra}\n[log]\naccess = false\n[registries.local]\ntype = \"static\"\nservices.s = [\"{}\"]\n[upstreams.u]\n[[upstreams.u.sources]]\nregistry = \"local\"\nservice = \"s\"\n[[routes]]\nupstream = \"u\"\n[[routes]]\npath_prefix = \"/small\"\nmax_body = \"1k\"\nupstream = \"u\"\n",
        backend.address()
    )
}

/// Sends raw bytes and reads until the server closes (or 5 s). Returns the status and
/// whether the connection was closed by the server.
fn raw(gw: &Gateway, bytes: &[u8]) -> (u16, bool, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match stream.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, closed, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_requests_are_refused_and_never_forwarded() {
    let backend = Backend::start("b");
    let gw = Gateway::start(&config(&backend, "")).await;
    gw.wait_ready().await;
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(9000));
    let huge_header = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(40_000)
    );
    let many_headers = format!(
        "GET / HTTP/1.1\r\nHost: x\r\n{}\r\n",
        (0..150)
            .map(|i| format!("X-H{i}: v\r\n"))
            .collect::<String>()
    );
    let big_body = format!(
        "POST /small HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n{}",
        "a".repeat(2000)
    );
    let big_chunked = format!("POST /small HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n{}\r\n0\r\n\r\n", "a".repeat(2048));
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("URI too long", long_uri.into_bytes(), 414),
        ("header block too large", huge_header.into_bytes(), 431),
        ("too many headers", many_headers.into_bytes(), 431),
        ("declared body too large", big_body.into_bytes(), 413),
        ("chunked body too large", big_chunked.into_bytes(), 413),
    ];
    let mut failures = Vec::new();
    for (name, bytes, expected) in &cases {
        let before = backend.hits();
        let (status, closed, text) = raw(&gw, bytes);
        println!("{name}: {status} closed={closed}");
        if status != *expected || !closed {
            failures.push(format!(
                "{name}: got {status} closed={closed}: {}",
                text.lines().next().unwrap_or("")
            ));
        }
        if backend.seen().len() > before && *expected != 413 {
            failures.push(format!("{name}: the backend received it"));
        }
    }
    assert!(
        backend.seen().iter().all(|s| s.path != "/small"),
        "no oversized body arrived whole"
    );
    assert!(failures.is_empty(), "{failures:#?}");
    // A well-formed request on the same gateway still works.
    let (status, _, _) = raw(
        &gw,
        b"GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200);
}

/// The request smuggling and header hygiene shapes of issue 10. Before the head guard, hyper
/// alone took CL+TE (either order), `chunked` twice, a repeated equal Content-Length and bare
/// LF line ends (200, forwarded); it refused the others with its own 400. Now the guard
/// answers the framing shapes with the gateway's JSON 400 (501 for a transfer coding other
/// than chunked, issue 19); the shapes httparse refuses by itself (obs-fold, control bytes in
/// a value, whitespace before the colon) are left to hyper's own 400 (issue 19: one grammar,
/// no check made twice). Either way the connection is closed and the backend never sees the
/// request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_shapes_get_400_and_are_never_forwarded() {
    let backend = Backend::start("b");
    let gw = Gateway::start(&config(&backend, "")).await;
    gw.wait_ready().await;
    let cases: [(&str, &[u8]); 17] = [
        (
            "CL then TE",
            b"POST /smuggle HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "TE then CL",
            b"POST /smuggle HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
        ),
        (
            "TE not ending in chunked",
            b"POST /smuggle HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
        ),
        (
            "TE without chunked",
            b"POST /smuggle HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nabc",
        ),
        (
            "TE chunked twice",
            b"POST /smuggle HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "TE in HTTP/1.0",
            b"POST /smuggle HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "two different CL",
            b"POST /smuggle HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        ),
        (
            "two equal CL",
            b"POST /smuggle HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
        ),
        (
            "CL list",
            b"POST /smuggle HTTP/1.1\r\nHost: x\r\nContent-Length: 1, 1\r\n\r\na",
        ),
        (
            "invalid CL",
            b"POST /smuggle HTTP/1.1\r\nHost: x\r\nContent-Length: 3x\r\n\r\nabc",
        ),
        (
            "obs-fold",
            b"GET /smuggle HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\n\r\n",
        ),
        (
            "NUL in a header value",
            b"GET /smuggle HTTP/1.1\r\nHost: x\r\nX-Nul: a\0b\r\n\r\n",
        ),
        (
            "CR in a header value",
            b"GET /smuggle HTTP/1.1\r\nHost: x\r\nX-Cr: a\rb\r\n\r\n",
        ),
        (
            "bare LF inside the head",
            b"GET /smuggle HTTP/1.1\r\nHost: x\r\nX-Lf: a\nb: c\r\n\r\n",
        ),
        (
            "bare LF line ends",
            b"GET /smuggle HTTP/1.1\nHost: x\n\n",
        ),
        (
            "whitespace before the colon",
            b"POST /smuggle HTTP/1.1\r\nHost: x\r\nContent-Length : 3\r\n\r\nabc",
        ),
        (
            "broken chunk size line",
            b"POST /smuggle HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\nGET /after HTTP/1.1\r\nHost: x\r\n\r\n",
        ),
    ];
    let mut failures = Vec::new();
    for (name, bytes) in cases {
        let (status, closed, text) = raw(&gw, bytes);
        println!("{name}: {status} closed={closed}");
        if name == "broken chunk size line" {
            // The head was fine and went upstream as it streamed; the body breaks at the bad
            // size line, so the request fails with 400 (the client's fault, not the
            // endpoint's) and the connection closes. What follows the break is never read as
            // a request.
            if status != 400 || !closed {
                failures.push(format!("{name}: got {status} closed={closed}"));
            }
            continue;
        }
        let (expected, body) = match name {
            "TE not ending in chunked" | "TE without chunked" => (
                501,
                Some("{\"error\":\"not implemented\",\"request_id\":\"\"}"),
            ),
            // httparse refuses these itself; hyper answers its own 400 and closes.
            "obs-fold"
            | "NUL in a header value"
            | "CR in a header value"
            | "whitespace before the colon" => (400, None),
            _ => (400, Some("{\"error\":\"bad request\",\"request_id\":\"\"}")),
        };
        if status != expected || !closed {
            failures.push(format!(
                "{name}: got {status} closed={closed}: {}",
                text.lines().next().unwrap_or("")
            ));
        }
        if !text.contains("connection: close") || body.is_some_and(|b| !text.ends_with(b)) {
            failures.push(format!("{name}: not the expected answer: {text:?}"));
        }
    }
    let seen = backend.seen();
    for s in &seen {
        if s.path == "/after" || (s.path == "/smuggle" && !s.body.is_empty()) {
            failures.push(format!("the backend received {} {:?}", s.path, s.body));
        }
    }
    println!(
        "backend saw {} request(s): {:?}",
        seen.len(),
        seen.iter().map(|s| &s.path).collect::<Vec<_>>()
    );
    assert!(
        seen.iter().filter(|s| s.path == "/smuggle").count() <= 1,
        "only the broken-body head may have gone upstream: {seen:?}"
    );
    assert!(failures.is_empty(), "{failures:#?}");
    // A well-formed request on the same gateway still works.
    let (status, _, _) = raw(
        &gw,
        b"GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200);
}

/// Sends `pieces` on one connection (pausing between them so that they arrive as separate
/// reads) and reads until the server closes or 5 s pass. Returns the response statuses in
/// order, whether the server closed, and the text.
fn pipelined(gw: &Gateway, pieces: &[&[u8]]) -> (Vec<u16>, bool, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    for piece in pieces {
        if stream.write_all(piece).is_err() {
            break; // the server closed: read what it answered
        }
        if pieces.len() > 1 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match stream.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    let text = String::from_utf8_lossy(&out).into_owned();
    let statuses = text
        .match_indices("HTTP/1.1 ")
        .filter_map(|(i, _)| text.get(i + 9..i + 12)?.parse().ok())
        .collect();
    (statuses, closed, text)
}

/// Two good requests and a smuggling one, pipelined in one write: the two are answered (in
/// order, by the backend), then the third gets 400 and the connection closes. The same
/// requests sent a byte at a time (every line split across reads) give the same answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_before_the_smuggling_one_is_refused() {
    let backend = Backend::start("b");
    let gw = Gateway::start(&config(&backend, "")).await;
    gw.wait_ready().await;
    let input = [
        &b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        b"POST /two HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
        b"POST /three HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 30\r\n\r\n0\r\n\r\nGET /four HTTP/1.1\r\nHost: x\r\n\r\n",
    ]
    .concat();
    // Byte by byte, the input stops where the bad head ends: bytes sent after the gateway
    // closed could reset the connection before the 400 is read.
    let head_end = b"Content-Length: 30\r\n\r\n";
    let bad_head_end = input
        .windows(head_end.len())
        .position(|w| w == head_end)
        .unwrap()
        + head_end.len();
    for (how, pieces) in [
        ("one write", vec![&input[..]]),
        ("byte by byte", input[..bad_head_end].chunks(1).collect()),
    ] {
        let before = backend.seen().len();
        let (statuses, closed, text) = pipelined(&gw, &pieces);
        println!("{how}: {statuses:?} closed={closed}");
        assert_eq!(statuses, [200, 200, 400], "{how}: {text}");
        assert!(closed, "{how}");
        assert!(text.ends_with("{\"error\":\"bad request\",\"request_id\":\"\"}"));
        let seen = backend.seen().split_off(before);
        let paths: Vec<&str> = seen.iter().map(|s| s.path.as_str()).collect();
        assert_eq!(paths, ["/one", "/two"], "{how}");
        assert_eq!(seen[1].body, b"abc");
    }
}

/// A chunked body (with an extension and a trailer) followed by a second request on the same
/// keep-alive connection: the guard follows the chunked framing to the next head, and both
/// requests reach the backend whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_body_then_next_request_on_the_same_connection() {
    let backend = Backend::start("b");
    let gw = Gateway::start(&config(&backend, "")).await;
    gw.wait_ready().await;
    let input = b"POST /first HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\nPOST /second HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi";
    for (how, pieces) in [
        ("one write", vec![&input[..]]),
        ("in 7-byte pieces", input.chunks(7).collect()),
    ] {
        let before = backend.seen().len();
        let (statuses, closed, text) = pipelined(&gw, &pieces);
        println!("{how}: {statuses:?} closed={closed}");
        assert_eq!(statuses, [200, 200], "{how}: {text}");
        assert!(closed, "{how}: Connection: close on the second request");
        let seen = backend.seen().split_off(before);
        let got: Vec<(&str, &[u8])> = seen
            .iter()
            .map(|s| (s.path.as_str(), s.body.as_slice()))
            .collect();
        assert_eq!(
            got,
            [("/first", &b"hello world"[..]), ("/second", &b"hi"[..])],
            "{how}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_does_not_starve_normal_clients() {
    let backend = Backend::start("b");
    let gw = Gateway::start(&config(&backend, "header_read_timeout = \"2s\"")).await;
    gw.wait_ready().await;
    let mut slow = Vec::new();
    for _ in 0..500 {
        let mut s = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
        slow.push(s);
    }
    let start = Instant::now();
    for _ in 0..20 {
        assert_eq!(gw.get("/").await.status, 200);
    }
    println!(
        "20 normal requests beside 500 slow connections took {:?}",
        start.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Past the header timeout the slow connections are closed.
    let mut closed = 0;
    for s in &mut slow {
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut buf = [0u8; 512];
        if s.read(&mut buf).is_ok() {
            closed += 1;
        }
    }
    println!("{closed} of 500 slow connections closed by the header timeout");
    assert_eq!(closed, 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_and_half_prefaces_are_closed() {
    let backend = Backend::start("b");
    let gw = Gateway::start(&config(
        &backend,
        "header_read_timeout = \"1s\"\nmax_connections = 300",
    ))
    .await;
    gw.wait_ready().await;
    // 100 clients that send nothing, 100 that send half of the h2 preface: each would hold
    // a connection slot forever if only hyper's header timer guarded it.
    let mut idle = Vec::new();
    for i in 0..200 {
        let mut s = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
        if i % 2 == 1 {
            s.write_all(b"PRI * HTTP/2").unwrap();
        }
        idle.push(s);
    }
    assert_eq!(gw.get("/").await.status, 200);
    let start = Instant::now();
    let mut closed = 0;
    for s in &mut idle {
        s.set_read_timeout(Some(Duration::from_secs(6))).unwrap();
        let mut buf = [0u8; 64];
        if matches!(s.read(&mut buf), Ok(0) | Err(_)) && start.elapsed() < Duration::from_secs(6) {
            closed += 1;
        }
    }
    println!(
        "{closed} of 200 silent or half-preface connections closed; the last after {:?}",
        start.elapsed()
    );
    assert_eq!(closed, 200);
    // The gateway still answers new connections. (Not the harness's pooled one: it has
    // been idle for about header_read_timeout, so the gateway may be closing it just as a
    // reuse is sent, the keep-alive race every HTTP/1.1 client lives with.)
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    for _ in 0..5 {
        assert_eq!(gw.send(fresh.get(gw.url("/"))).await.status, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_trusted_only_from_trusted_proxies() {
    let backend = Backend::start("b");
    let gw = Gateway::start(&config(&backend, "")).await;
    gw.wait_ready().await;
    gw.send(
        gw.client()
            .get(gw.url("/"))
            .header("x-forwarded-for", "6.6.6.6")
            .header("x-forwarded-host", "evil"),
    )
    .await;
    let seen = backend.seen().pop().unwrap();
    assert_eq!(
        seen.header("x-forwarded-for"),
        vec!["127.0.0.1"],
        "an untrusted client's XFF is replaced"
    );
    assert_ne!(seen.header("x-forwarded-host"), vec!["evil"]);

    let trusted = Gateway::start(&config(&backend, "trusted_proxies = [\"127.0.0.0/8\"]")).await;
    trusted.wait_ready().await;
    trusted
        .send(
            trusted
                .client()
                .get(trusted.url("/"))
                .header("x-forwarded-for", "203.0.113.7"),
        )
        .await;
    assert_eq!(
        backend.seen().pop().unwrap().header("x-forwarded-for"),
        vec!["203.0.113.7, 127.0.0.1"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_cap_answers_503_fast() {
    let backend = Backend::start("b");
    let gw = Gateway::start(&config(&backend, "max_connections = 4")).await;
    gw.wait_ready().await;
    let held: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(("127.0.0.1", gw.port)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let start = Instant::now();
    let (status, closed, _) = raw(&gw, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    println!("over the cap: {status} in {:?}", start.elapsed());
    assert_eq!((status, closed), (503, true));
    drop(held);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(gw.get("/").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_tunnels_only_after_the_upstream_switches() {
    // An upgrade-echo backend: answers 101 and echoes bytes.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = s.read(&mut buf).await.unwrap();
                    if n == 0 {
                        return;
                    }
                    head.extend_from_slice(&buf[..n]);
                }
                let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
                if !text.contains("upgrade: websocket") {
                    let _ = s
                        .write_all(b"HTTP/1.1 426 Upgrade Required\r\ncontent-length: 0\r\n\r\n")
                        .await;
                    return;
                }
                s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n").await.unwrap();
                loop {
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let config = format!(
        "[registries.local]\ntype = \"static\"\nservices.ws = [\"{address}\"]\n[upstreams.ws]\n[[upstreams.ws.sources]]\nregistry = \"local\"\nservice = \"ws\"\n[[routes]]\nupstream = \"ws\"\n"
    );
    let gw = Gateway::start(&config).await;
    gw.wait_ready().await;
    let mut stream = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(b"GET /chat HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        .unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "closed before the 101");
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    for message in ["hello", "through the tunnel"] {
        stream.write_all(message.as_bytes()).unwrap();
        let n = stream.read(&mut buf).unwrap();
        assert_eq!(&buf[..n], message.as_bytes());
    }
    // Without the upgrade headers the upstream's 426 is passed through: no tunnel.
    let (status, _, _) = raw(
        &gw,
        b"GET /chat HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 426);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_requires_the_token_when_set() {
    let backend = Backend::start("b");
    let config = format!(
        "[admin]\nlisten = \"{{admin}}\"\ntoken = \"s3cret\"\n{}",
        config(&backend, "")
    );
    let gw = Gateway::start(&config).await;
    for path in ["/api/upstreams", "/api/registries", "/api/routes", "/"] {
        let reply = gw.send(gw.client().get(gw.admin_url(path))).await;
        assert_eq!(reply.status, 401, "{path} without a token");
        let reply = gw
            .send(gw.client().get(gw.admin_url(path)).bearer_auth("wrong"))
            .await;
        assert_eq!(reply.status, 401, "{path} with a wrong token");
        let reply = gw
            .send(gw.client().get(gw.admin_url(path)).bearer_auth("s3cret"))
            .await;
        assert_eq!(reply.status, 200, "{path} with the token");
    }
    let reply = gw.send(gw.client().post(gw.admin_url("/api/reload"))).await;
    assert_eq!(reply.status, 401);
    // Probes stay open for orchestrators.
    assert_eq!(
        gw.send(gw.client().get(gw.admin_url("/healthz")))
            .await
            .status,
        200
    );
    // The data plane never serves admin paths.
    assert!(!gw.get("/api/upstreams").await.body.contains("endpoints"));
}

/// A raw TCP upstream answering each request with the canned bytes for its path, then
/// closing the connection; it stops after `limit` connections or 30 s.
fn hostile_upstream(limit: usize) -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut served = 0;
        while served < limit && Instant::now() < deadline {
            let mut stream = match listener.accept() {
                Ok((stream, _)) => stream,
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
            };
            served += 1;
            stream.set_nonblocking(false).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let path = String::from_utf8_lossy(&head)
                .split(' ')
                .nth(1)
                .unwrap_or("")
                .to_owned();
            let reply: Vec<u8> = match path.as_str() {
                "/garbage" => b"NOT HTTP AT ALL\r\n\r\n".to_vec(),
                "/huge-head" => format!(
                    "HTTP/1.1 200 OK\r\nx-big: {}\r\ncontent-length: 0\r\n\r\n",
                    "a".repeat(70 * 1024)
                )
                .into_bytes(),
                "/bad-length" => b"HTTP/1.1 200 OK\r\ncontent-length: 1, 2\r\n\r\nx".to_vec(),
                "/te-and-cl" => b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".to_vec(),
                "/truncated" => b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort".to_vec(),
                _ => b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n".to_vec(),
            };
            let _ = stream.write_all(&reply);
        }
    });
    address
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_upstream_responses_get_502_or_are_reframed() {
    let upstream = hostile_upstream(20);
    let gw = Gateway::start(&format!(
        "[server]\nlisten = \"{{listen}}\"\n[log]\naccess = false\n[registries.local]\ntype = \"static\"\nservices.s = [\"{upstream}\"]\n[upstreams.u]\n[[upstreams.u.sources]]\nregistry = \"local\"\nservice = \"s\"\n[[routes]]\nupstream = \"u\"\n"
    ))
    .await;
    gw.wait_ready().await;
    let get = |path: &str| {
        raw(
            &gw,
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
    };
    for path in ["/garbage", "/huge-head", "/bad-length"] {
        let (status, _, text) = get(path);
        println!("{path}: {status}");
        assert_eq!(status, 502, "{path}: {text}");
        assert!(
            text.contains("\"request_id\""),
            "{path}: the gateway's JSON error: {text}"
        );
    }
    // Transfer-Encoding delimits the body; the stale Content-Length is not passed on.
    let (status, _, text) = get("/te-and-cl");
    assert_eq!(status, 200, "{text}");
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(
        !head.to_ascii_lowercase().contains("content-length: 3"),
        "{head}"
    );
    assert!(body.contains("hello"), "{body:?}");
    // A body cut short: the client never gets a complete response (hyper may not even have
    // flushed the head when the body fails), and its connection is closed.
    let (status, closed, text) = get("/truncated");
    println!(
        "/truncated: status {status}, closed {closed}, {} bytes",
        text.len()
    );
    assert!(closed, "{text}");
    if let Some((head, body)) = text.split_once("\r\n\r\n") {
        assert!(body.len() < 10, "a complete body: {text:?}");
        assert!(
            head.to_ascii_lowercase().contains("content-length: 10"),
            "{head}"
        );
    }
}
