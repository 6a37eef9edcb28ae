//! Request hygiene through the real binary (issue 19), each defect with the exact bytes over
//! a raw socket, asserting the status and what the backend received:
//! owned identity headers (`x-consumer`) removed before routing; HTTP/2 requests keeping
//! their `:authority` as `Host` (h2c and TLS with ALPN h2, through an h2 client: HPACK is
//! not hand-written); Host validation; path normalization (`[server.path_normalization]`);
//! transfer codings (501 from the client, 502 from an upstream); `Connection: Host`;
//! upgrades allowed per route; limits answered with the right status.
//!
//! Two backends stand behind the gateway: `public` (the catch-all and `/api`) records what
//! it receives; `sensitive` stands behind the routes with a policy (`ip_deny` on the client,
//! 127.0.0.1) or a header condition, and must never receive anything.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use switchyard_integration_tests::gateway::check;
use switchyard_integration_tests::{free_port, Backend, Gateway};

/// The gateway of most tests: see the module docs. `server_extra` goes into `[server]`.
fn config(public: &Backend, sensitive: &Backend, server_extra: &str) -> String {
    format!(
        r#"[server]
listen = "{{listen}}"
{server_extra}
[log]
access = false
[registries.local]
type = "static"
services.public = ["{public}"]
services.sensitive = ["{sensitive}"]
[upstreams.public]
[[upstreams.public.sources]]
registry = "local"
service = "public"
[upstreams.sensitive]
[[upstreams.sensitive.sources]]
registry = "local"
service = "sensitive"
[[routes]]
name = "admin-host"
host = "admin.internal"
upstream = "sensitive"
ip_deny = ["127.0.0.0/8"]
[[routes]]
name = "admin-path"
path_prefix = "/admin-only"
upstream = "sensitive"
ip_deny = ["127.0.0.0/8"]
[[routes]]
name = "by-consumer"
path_prefix = "/orders"
headers = {{ "x-consumer" = "alice" }}
upstream = "sensitive"
[[routes]]
name = "api"
path_prefix = "/api"
strip_prefix = true
upstream = "public"
[[routes]]
name = "rest"
upstream = "public"
"#,
        public = public.address(),
        sensitive = sensitive.address(),
    )
}

/// Sends raw bytes on a new connection and reads until the server closes (or 10 s).
/// Returns the first status, whether the server closed, and the text.
fn raw(gw: &Gateway, bytes: &[u8]) -> (u16, bool, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
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

/// Every response status on a connection, in order.
fn statuses(text: &str) -> Vec<u16> {
    text.match_indices("HTTP/1.1 ")
        .filter_map(|(i, _)| text.get(i + 9..i + 12)?.parse().ok())
        .collect()
}

/// Sends each `(name, bytes, status)` and collects the mismatches.
fn expect_statuses(gw: &Gateway, cases: &[(&str, Vec<u8>, u16)]) -> Vec<String> {
    let mut failures = Vec::new();
    for (name, bytes, expected) in cases {
        let (status, closed, text) = raw(gw, bytes);
        println!("{name}: {status} closed={closed}");
        if status != *expected {
            failures.push(format!(
                "{name}: got {status}, wanted {expected}: {}",
                text.lines().next().unwrap_or("")
            ));
        }
    }
    failures
}

async fn start(public: &Backend, sensitive: &Backend, server_extra: &str) -> Gateway {
    let gw = Gateway::start(&config(public, sensitive, server_extra)).await;
    gw.wait_ready().await;
    gw
}

// === 1. Identity headers ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_sent_identity_headers_never_reach_an_upstream_nor_choose_a_route() {
    let (public, sensitive) = (Backend::start("public"), Backend::start("sensitive"));
    let gw = start(&public, &sensitive, "").await;
    // The issue's shapes: any route, any path spelling, and the underscore spelling that
    // CGI-style upstreams read as the same name.
    for request in [
        &b"GET //orders/1 HTTP/1.1\r\nHost: x\r\nX-Consumer: alice\r\nConnection: close\r\n\r\n"[..],
        b"GET /Orders/1 HTTP/1.1\r\nHost: x\r\nx-consumer: alice\r\nX_Consumer: alice\r\nConnection: close\r\n\r\n",
        b"GET /api/v1 HTTP/1.1\r\nHost: x\r\nX-CONSUMER: alice\r\nConnection: close\r\n\r\n",
    ] {
        let (status, _, text) = raw(&gw, request);
        assert_eq!(status, 200, "{text}");
        assert_eq!(text.rsplit("\r\n\r\n").next(), Some("public"), "{text}");
    }
    let seen = public.seen();
    let paths: Vec<&str> = seen.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(paths, ["/orders/1", "/Orders/1", "/v1"]);
    for s in &seen {
        assert!(
            s.headers
                .iter()
                .all(|(n, _)| n != "x-consumer" && n != "x_consumer"),
            "{:?}",
            s.headers
        );
    }
    assert!(
        sensitive.seen().is_empty(),
        "x-consumer chose the by-consumer route"
    );
}

// === 2. HTTP/2 keeps its authority ===

/// h2c with prior knowledge, then TLS with ALPN h2: the upstream gets `Host` = the
/// request's `:authority` and `X-Forwarded-Host` with it, as for HTTP/1.1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_requests_keep_their_authority_as_host() {
    let (public, sensitive) = (Backend::start("public"), Backend::start("sensitive"));
    let dir = tempfile::tempdir().unwrap();
    let cert = certificate(dir.path(), "api.test");
    let tls_port = free_port();
    let extra = format!(
        "tls_listen = \"127.0.0.1:{tls_port}\"\n[server.tls]\ncertificates = [{{ cert = \"{0}/c.pem\", key = \"{0}/c-key.pem\", names = [\"api.test\"] }}]",
        dir.path().display()
    );
    let gw = start(&public, &sensitive, &extra).await;
    let h2c = reqwest::Client::builder()
        .http2_prior_knowledge()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let reply = h2c
        .get(format!("http://127.0.0.1:{}/h2c?x=1", gw.port))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.version(), reqwest::Version::HTTP_2);
    assert_eq!(reply.status(), 200);
    let seen = public.seen().pop().unwrap();
    let authority = format!("127.0.0.1:{}", gw.port);
    assert_eq!(seen.path, "/h2c?x=1");
    assert_eq!(seen.header("host"), [authority.as_str()], "{seen:?}");
    assert_eq!(seen.header("x-forwarded-host"), [authority.as_str()]);

    let tls = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&cert).unwrap())
        .resolve("api.test", ([127, 0, 0, 1], tls_port).into())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let reply = tls
        .get(format!("https://api.test:{tls_port}/tls"))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.version(), reqwest::Version::HTTP_2, "ALPN h2");
    assert_eq!(reply.status(), 200);
    let seen = public.seen().pop().unwrap();
    let authority = format!("api.test:{tls_port}");
    assert_eq!(seen.path, "/tls");
    assert_eq!(seen.header("host"), [authority.as_str()], "{seen:?}");
    assert_eq!(seen.header("x-forwarded-host"), [authority.as_str()]);
    assert_eq!(seen.header("x-forwarded-proto"), ["https"]);
    // The authority routes too: h2 to admin.internal meets the route's ip_deny.
    let admin = reqwest::Client::builder()
        .http2_prior_knowledge()
        .resolve("admin.internal", ([127, 0, 0, 1], gw.port).into())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let reply = admin
        .get(format!("http://admin.internal:{}/", gw.port))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 403);
    assert!(sensitive.seen().is_empty());
}

/// A self-signed certificate for `name` in `dir/c.pem` and `dir/c-key.pem`.
fn certificate(dir: &std::path::Path, name: &str) -> Vec<u8> {
    let output = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
        .arg("-keyout")
        .arg(dir.join("c-key.pem"))
        .arg("-out")
        .arg(dir.join("c.pem"))
        .args(["-subj", &format!("/CN={name}")])
        .args(["-addext", &format!("subjectAltName=DNS:{name}")])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .args(["-addext", "extendedKeyUsage=serverAuth"])
        .output()
        .unwrap_or_else(|e| panic!("openssl is needed (apt-get install openssl): {e}"));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::read(dir.join("c.pem")).unwrap()
}

// === 3. Host validation ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_hosts_get_400_and_one_validated_host_is_used() {
    let (public, sensitive) = (Backend::start("public"), Backend::start("sensitive"));
    let gw = start(&public, &sensitive, "").await;
    let get =
        |head: &str| format!("GET /h HTTP/1.1\r\n{head}Connection: close\r\n\r\n").into_bytes();
    let mut cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("HTTP/1.1 without Host", get(""), 400),
        ("two Host fields", get("Host: x\r\nHost: x\r\n"), 400),
        ("non-numeric port", get("Host: admin.internal:abc\r\n"), 400),
        ("repeated port", get("Host: admin.internal:80:80\r\n"), 400),
        ("empty port", get("Host: admin.internal:\r\n"), 400),
        ("space", get("Host: admin.internal x\r\n"), 400),
        ("slash", get("Host: admin.internal/x\r\n"), 400),
        ("comma list", get("Host: public.example, admin.internal\r\n"), 400),
        ("userinfo", get("Host: user@admin.internal\r\n"), 400),
        ("empty", get("Host: \r\n"), 400),
        (
            "absolute form disagreeing with Host",
            b"GET http://admin.internal/h HTTP/1.1\r\nHost: public.example\r\nConnection: close\r\n\r\n".to_vec(),
            400,
        ),
        (
            "absolute form with userinfo",
            b"GET http://u@admin.internal/h HTTP/1.1\r\nHost: u@admin.internal\r\nConnection: close\r\n\r\n".to_vec(),
            400,
        ),
    ];
    // Valid spellings of the policy's host all meet its ip_deny (403), never the catch-all.
    for (name, head) in [
        ("plain", "Host: admin.internal\r\n"),
        ("with a port", "Host: admin.internal:8080\r\n"),
        ("upper case", "Host: ADMIN.Internal\r\n"),
        ("trailing dot", "Host: admin.internal.\r\n"),
    ] {
        cases.push((name, get(head), 403));
    }
    cases.push((
        "absolute form agreeing with Host",
        b"GET http://admin.internal/h HTTP/1.1\r\nHost: admin.internal\r\nConnection: close\r\n\r\n"
            .to_vec(),
        403,
    ));
    let failures = expect_statuses(&gw, &cases);
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(public.seen().is_empty(), "{:?}", public.seen());
    assert!(sensitive.seen().is_empty());
    // A valid host goes upstream as Host and X-Forwarded-Host, exactly.
    let (status, _, _) = raw(&gw, &get("Host: Public.Example:8080\r\n"));
    assert_eq!(status, 200);
    let seen = public.seen().pop().unwrap();
    assert_eq!(seen.header("host"), ["Public.Example:8080"]);
    assert_eq!(seen.header("x-forwarded-host"), ["Public.Example:8080"]);
    // HTTP/1.0 may name no host: the endpoint's address goes as Host.
    let (status, _, _) = raw(&gw, b"GET /old HTTP/1.0\r\n\r\n");
    assert_eq!(status, 200);
    let seen = public.seen().pop().unwrap();
    assert_eq!(seen.header("host"), [public.address().to_string().as_str()]);
}

// === 4. Path normalization ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_are_normalized_before_matching_and_forwarded_normalized() {
    let (public, sensitive) = (Backend::start("public"), Backend::start("sensitive"));
    let gw = start(&public, &sensitive, "").await;
    let get = |path: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").into_bytes()
    };
    let mut cases = Vec::new();
    // Every spelling of the policy's path meets its ip_deny.
    for path in [
        "/admin-only",
        "//admin-only",
        "/./admin-only",
        "/x/../admin-only",
        "/%61dmin-only",
        "/%61%64%6D%69%6E-only",
        "/api/../admin-only",
        "/x/%2E%2E/admin-only",
        "/x\\..\\admin-only",
        "///admin-only/./x/..",
    ] {
        cases.push((path, get(path), 403));
    }
    for path in [
        "/%2fadmin-only",
        "/%2Fadmin-only",
        "/x%5c..%5cadmin-only",
        "/..",
        "/../admin-only",
        "/a/../../admin-only",
        "/%2e%2e/admin-only",
        "/a%zz",
        "/a%00b",
        // strip_prefix: what is left after `/api` would climb above the root.
        "/api../admin-only",
    ] {
        cases.push((path, get(path), 400));
    }
    let failures = expect_statuses(&gw, &cases);
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(sensitive.seen().is_empty(), "{:?}", sensitive.seen());
    assert!(public.seen().is_empty(), "{:?}", public.seen());
    // What goes upstream is the normalized path, the query untouched; strip_prefix applies
    // to the normalized path.
    for (sent, received) in [
        ("/a//b/./c/../d%7e?q=/../x", "/a/b/d~?q=/../x"),
        ("/api//v1/./items/%41", "/v1/items/A"),
        ("/api/x/../../v2", "/v2"),
        ("/a%20b", "/a%20b"),
    ] {
        let (status, _, text) = raw(&gw, &get(sent));
        assert_eq!(status, 200, "{sent}: {text}");
        assert_eq!(public.seen().pop().unwrap().path, received, "{sent}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escaped_slashes_can_be_redirected_or_forwarded_unescaped() {
    let (public, sensitive) = (Backend::start("public"), Backend::start("sensitive"));
    let redirect = start(
        &public,
        &sensitive,
        "[server.path_normalization]\nescaped_slashes = \"unescape_and_redirect\"",
    )
    .await;
    let (status, _, text) = raw(
        &redirect,
        b"GET /a%2Fb/..%2fadmin-only?q=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 307, "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("location: /a/admin-only?q=1\r\n"),
        "{text}"
    );
    let forward = start(
        &public,
        &sensitive,
        "[server.path_normalization]\nescaped_slashes = \"unescape_and_forward\"\nmerge_slashes = true\nnormalize = true",
    )
    .await;
    let (status, _, _) = raw(
        &forward,
        b"GET /x/..%2Fadmin-only HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 403, "the unescaped path meets the policy");
    let (status, _, _) = raw(
        &forward,
        b"GET /a%2Fb HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200);
    assert_eq!(public.seen().pop().unwrap().path, "/a/b");
    assert!(sensitive.seen().is_empty());
}

// === 5. Transfer codings, 6. Connection: Host, 8. limits ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_codings_connection_host_and_limits() {
    let (public, sensitive) = (Backend::start("public"), Backend::start("sensitive"));
    let gw = start(&public, &sensitive, "").await;
    let post = |headers: &str, body: &str| {
        format!("POST /coded HTTP/1.1\r\nHost: x\r\n{headers}\r\n{body}").into_bytes()
    };
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "gzip, chunked",
            post("Transfer-Encoding: gzip, chunked\r\n", "0\r\n\r\n"),
            501,
        ),
        (
            "identity, chunked",
            post("Transfer-Encoding: identity, chunked\r\n", "0\r\n\r\n"),
            501,
        ),
        (
            "gzip then chunked on two lines",
            post(
                "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
                "0\r\n\r\n",
            ),
            501,
        ),
        (
            "gzip alone",
            post("Transfer-Encoding: gzip\r\n", "abc"),
            501,
        ),
        (
            "chunked, chunked",
            post("Transfer-Encoding: chunked, chunked\r\n", "0\r\n\r\n"),
            400,
        ),
        (
            "huge Content-Length",
            post("Content-Length: 18446744073709551615\r\n", "abc"),
            413,
        ),
        (
            "Content-Length over u64",
            post("Content-Length: 99999999999999999999999\r\n", "abc"),
            413,
        ),
        (
            "10 KB method",
            format!(
                "{} /coded HTTP/1.1\r\nHost: x\r\n\r\n",
                "M".repeat(10 * 1024)
            )
            .into_bytes(),
            501,
        ),
    ];
    let failures = expect_statuses(&gw, &cases);
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(
        public.seen().iter().all(|s| s.path != "/coded"),
        "{:?}",
        public.seen()
    );
    // A chunk-size line with junk after the size: the body is cut there, the request fails
    // and the connection closes; the chunk's data never arrives upstream.
    let (status, closed, text) = raw(
        &gw,
        &post("Transfer-Encoding: chunked\r\n", "2 zz\r\nhi\r\n0\r\n\r\n"),
    );
    println!("chunk-size junk: {status} closed={closed}");
    assert_eq!((status, closed), (400, true), "{text}");
    assert!(public.seen().iter().all(|s| s.body != b"hi"));

    // 6. Connection: Host never drops Host (nor the fields the gateway sets).
    let (status, _, _) = raw(
        &gw,
        b"GET /conn HTTP/1.1\r\nHost: api.example\r\nX-Request-Id: rid-1\r\nConnection: Host, X-Request-Id, X-Forwarded-Host, close\r\n\r\n",
    );
    assert_eq!(status, 200);
    let seen = public.seen().pop().unwrap();
    assert_eq!(seen.path, "/conn");
    assert_eq!(seen.header("host"), ["api.example"]);
    assert_eq!(seen.header("x-forwarded-host"), ["api.example"]);
    assert_eq!(seen.header("x-request-id"), ["rid-1"]);
    assert!(seen
        .header("connection")
        .iter()
        .all(|v| !v.contains("Host")));
}

/// A raw upstream answering each connection with the canned response for its path.
fn canned_upstream(limit: usize) -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut served = 0;
        while served < limit && Instant::now() < deadline {
            let Ok((mut stream, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(5));
                continue;
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
            let reply: &[u8] = match path.as_str() {
                "/gzip" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nnot really gzip",
                "/gzip-chunked" => {
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n"
                }
                "/identity" => {
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\nContent-Length: 2\r\n\r\nhi"
                }
                "/junk" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2 zz\r\nhi\r\n0\r\n\r\n",
                "/fine" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;ext=1\r\nhi\r\n0\r\n\r\n",
                _ => b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
            };
            let _ = stream.write_all(reply);
        }
    });
    address
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_transfer_codings_other_than_chunked_are_502() {
    let upstream = canned_upstream(40);
    let gw = Gateway::start(&format!(
        "[server]\nlisten = \"{{listen}}\"\n[log]\naccess = false\n[registries.local]\ntype = \"static\"\nservices.s = [\"{upstream}\"]\n[upstreams.u]\n[[upstreams.u.sources]]\nregistry = \"local\"\nservice = \"s\"\n[[routes]]\nupstream = \"u\"\nretries = 0\n"
    ))
    .await;
    gw.wait_ready().await;
    let get = |path: &str| {
        raw(
            &gw,
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
    };
    for path in ["/gzip", "/gzip-chunked", "/identity"] {
        let (status, _, text) = get(path);
        println!("{path}: {status}");
        assert_eq!(status, 502, "{path}: {text}");
        assert!(!text.contains("hi"), "{path}: {text}");
    }
    // Junk after a chunk size: the body breaks where the line does; the client never gets
    // the chunk nor a complete chunked body.
    let (status, closed, text) = get("/junk");
    println!("/junk: {status} closed={closed}");
    assert!(closed, "{text}");
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    assert!(
        !body.contains("hi") && !body.ends_with("0\r\n\r\n"),
        "{text:?}"
    );
    // A well-formed extension is fine.
    let (status, _, text) = get("/fine");
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("hi"), "{text}");
}

// === 7. Upgrades ===

/// An upstream that answers a WebSocket upgrade with 101 and echoes bytes, and anything
/// else with 200 `plain <path>` (closing). It records each request head it received.
fn upgrade_upstream() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let heads = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = heads.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(50) {
            let Ok(mut stream) = stream else { continue };
            let heads = heads.clone();
            std::thread::spawn(move || {
                stream
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
                heads.lock().unwrap().push(text.clone());
                let path = text.split(' ').nth(1).unwrap_or("").to_owned();
                if text.contains("upgrade: websocket") && !path.starts_with("/declined") {
                    let _ = stream.write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
                    loop {
                        let n = stream.read(&mut buf).unwrap_or(0);
                        if n == 0 || stream.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                }
                let body = format!("plain {path}");
                let _ = stream.write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                );
            });
        }
    });
    (address, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_only_to_allowed_protocols_and_checks_stay_on() {
    let (upstream, heads) = upgrade_upstream();
    let gw = Gateway::start(&format!(
        r#"[server]
listen = "{{listen}}"
[log]
access = false
[registries.local]
type = "static"
services.ws = ["{upstream}"]
[upstreams.ws]
[[upstreams.ws.sources]]
registry = "local"
service = "ws"
[[routes]]
name = "denied"
path_prefix = "/denied"
upstream = "ws"
ip_deny = ["127.0.0.0/8"]
[[routes]]
name = "custom"
path_prefix = "/custom"
upstream = "ws"
upgrades = ["websocket", "x-custom"]
[[routes]]
upstream = "ws"
"#
    ))
    .await;
    gw.wait_ready().await;
    let ws_headers = "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    // Not allowed on the route: 403 before anything goes upstream.
    let (status, closed, text) = raw(
        &gw,
        b"GET /chat HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: x-custom\r\n\r\n",
    );
    assert_eq!((status, closed), (403, true), "{text}");
    // A policy decides before the tunnel opens.
    let (status, closed, text) = raw(
        &gw,
        format!("GET /denied HTTP/1.1\r\nHost: x\r\n{ws_headers}\r\n").as_bytes(),
    );
    assert_eq!((status, closed), (403, true), "{text}");
    assert!(
        heads.lock().unwrap().is_empty(),
        "{:?}",
        heads.lock().unwrap()
    );
    // h2c is never forwarded: the request goes on as a plain one.
    let (status, closed, text) = raw(
        &gw,
        b"GET /h2c HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    );
    assert_eq!((status, closed), (200, true), "{text}");
    assert!(text.ends_with("plain /h2c"), "{text}");
    let head = heads.lock().unwrap().pop().unwrap();
    assert!(
        !head.contains("upgrade") && !head.contains("http2-settings"),
        "{head}"
    );
    // A declined upgrade (the upstream answers 200, or the route refuses) followed by a
    // pipelined request with a bare LF: the connection closes after the answer, so the
    // unchecked bytes are never read as a request.
    for first in [
        "GET /declined HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
            .to_owned(),
        "GET /chat HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: x-custom\r\n\r\n"
            .to_owned(),
    ] {
        let before = heads.lock().unwrap().len();
        let input = format!("{first}GET /smuggled HTTP/1.1\nHost: x\n\n");
        let (status, closed, text) = raw(&gw, input.as_bytes());
        println!(
            "{}: {:?} closed={closed}",
            first.lines().next().unwrap(),
            statuses(&text)
        );
        assert!(closed, "{text}");
        assert_eq!(statuses(&text).len(), 1, "{text}");
        assert_ne!(status, 101, "{text}");
        let after: Vec<String> = heads.lock().unwrap()[before..].to_vec();
        assert!(after.iter().all(|h| !h.contains("/smuggled")), "{after:?}");
    }
    // An allowed upgrade is tunnelled, on the default route and on the custom list.
    for path in ["/chat", "/custom/chat"] {
        let mut stream = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n{ws_headers}\r\n").as_bytes())
            .unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).unwrap();
            assert!(n > 0, "closed before the 101");
            head.extend_from_slice(&buf[..n]);
        }
        assert!(head.starts_with(b"HTTP/1.1 101"), "{path}");
        stream.write_all(b"ping").unwrap();
        let n = stream.read(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"ping", "{path}");
    }
}

#[test]
fn upgrades_key_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    let base = "[registries.local]\ntype = \"static\"\nservices.s = [\"127.0.0.1:1\"]\n[upstreams.u]\n[[upstreams.u.sources]]\nregistry = \"local\"\nservice = \"s\"\n[[routes]]\nupstream = \"u\"\n";
    std::fs::write(
        &path,
        format!("{base}upgrades = [\"websocket\", \"h2c\", \"a b\"]\n"),
    )
    .unwrap();
    let (code, out) = check(&path);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("routes[0].upgrades[1]") && out.contains("h2c"),
        "{out}"
    );
    assert!(out.contains("routes[0].upgrades[2]"), "{out}");
    std::fs::write(
        &path,
        format!("[server.path_normalization]\nescaped_slashes = \"decode\"\n{base}"),
    )
    .unwrap();
    let (code, out) = check(&path);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("path_normalization") || out.contains("escaped_slashes"),
        "{out}"
    );
    std::fs::write(&path, format!("{base}upgrades = []\n")).unwrap();
    let (code, out) = check(&path);
    assert_eq!(code, 0, "{out}");
}
