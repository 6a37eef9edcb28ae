//! TLS termination through the real binary: two SNI names served with their own
//! certificates, certificates replaced by a reload without a restart, ALPN h2, TLS 1.2+
//! only, and the HTTP→HTTPS redirect. Certificates are made by `openssl` for the test.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use switchyard_integration_tests::{eventually, free_port, Backend, Gateway};

/// A self-signed certificate for `name` in `dir/<file>.pem` and `dir/<file>-key.pem`.
fn certificate(dir: &Path, file: &str, name: &str) -> Vec<u8> {
    let cert = dir.join(format!("{file}.pem"));
    let key = dir.join(format!("{file}-key.pem"));
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .args([
            "-subj",
            &format!("/CN={name}"),
            "-addext",
            &format!("subjectAltName=DNS:{name}"),
        ])
        .args([
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-addext",
            "extendedKeyUsage=serverAuth",
        ])
        .output()
        .unwrap_or_else(|e| {
            panic!("openssl is needed for the TLS tests (apt-get install openssl): {e}")
        });
    assert!(
        status.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    std::fs::read(cert).unwrap()
}

/// A gateway config with a TLS listener on `tls_port` that routes everything to `backend`:
/// `server_extra` is added to `[server]`, and each `(file, name)` of `certificates` serves
/// `name` with `dir/<file>.pem` and `dir/<file>-key.pem`.
fn tls_listener_config(
    backend: std::net::SocketAddr,
    tls_port: u16,
    server_extra: &str,
    dir: &Path,
    certificates: &[(&str, &str)],
) -> String {
    let dir = dir.display();
    let certificates: Vec<String> = certificates
        .iter()
        .map(|(file, name)| {
            format!(
                r#"{{ cert = "{dir}/{file}.pem", key = "{dir}/{file}-key.pem", names = ["{name}"] }}"#
            )
        })
        .collect();
    format!(
        r#"[server]
listen = "{{listen}}"
tls_listen = "127.0.0.1:{tls_port}"
{server_extra}
[server.tls]
certificates = [{}]
[registries.local]
type = "static"
services.s = ["{backend}"]
[upstreams.u]
[[upstreams.u.sources]]
registry = "local"
service = "s"
[[routes]]
upstream = "u"
"#,
        certificates.join(", ")
    )
}

fn client(trusted: &[u8], port: u16, http1_only: bool) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(trusted).unwrap())
        .resolve("a.test", ([127, 0, 0, 1], port).into())
        .resolve("b.test", ([127, 0, 0, 1], port).into())
        .timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none());
    if http1_only {
        builder = builder.http1_only();
    }
    builder.build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_certificates_alpn_reload_and_redirect() {
    let backend = Backend::start("b");
    let tls_port = free_port();
    let certs = tempfile::tempdir().unwrap();
    let dir = certs.path();
    let a = certificate(dir, "a", "a.test");
    let b = certificate(dir, "b", "b.test");
    let gw = Gateway::start(&tls_listener_config(
        backend.address(),
        tls_port,
        "redirect_to_https = true",
        dir,
        &[("a", "a.test"), ("b", "b.test")],
    ))
    .await;
    gw.wait_ready().await;

    // Each name gets its own certificate: a client trusting only A reaches a.test, not b.test.
    let only_a = client(&a, tls_port, false);
    let reply = only_a
        .get(format!("https://a.test:{tls_port}/x"))
        .send()
        .await
        .expect("a.test with A");
    assert_eq!(reply.text().await.unwrap(), "b");
    assert!(
        only_a
            .get(format!("https://b.test:{tls_port}/x"))
            .send()
            .await
            .is_err(),
        "b.test is not served with A"
    );
    let only_b = client(&b, tls_port, false);
    assert!(only_b
        .get(format!("https://b.test:{tls_port}/x"))
        .send()
        .await
        .is_ok());
    let seen = backend.seen().pop().unwrap();
    assert_eq!(seen.header("x-forwarded-proto"), vec!["https"]);

    // ALPN: h2 when the client offers it, HTTP/1.1 when it does not.
    let http1 = client(&a, tls_port, true);
    let reply = http1
        .get(format!("https://a.test:{tls_port}/h1"))
        .send()
        .await
        .expect("http/1.1 over TLS");
    assert_eq!(reply.version(), reqwest::Version::HTTP_11);
    let h2 = client(&a, tls_port, false);
    let reply = h2
        .get(format!("https://a.test:{tls_port}/h2"))
        .send()
        .await
        .expect("h2 over TLS");
    assert_eq!(reply.version(), reqwest::Version::HTTP_2);

    // The plain listener redirects.
    let reply = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(gw.url("/some/path?q=1"))
        .header("host", "a.test")
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 308);
    assert_eq!(
        reply.headers()["location"],
        format!("https://a.test:{tls_port}/some/path?q=1")
    );

    // Replace A and reload: new connections get the new certificate.
    let a2 = certificate(dir, "a", "a.test");
    gw.signal("HUP");
    let only_a2 = client(&a2, tls_port, false);
    eventually(
        "the reloaded certificate is served",
        Duration::from_secs(5),
        || async {
            only_a2
                .get(format!("https://a.test:{tls_port}/x"))
                .send()
                .await
                .is_ok()
        },
    )
    .await;
}

/// A config routing `/NAME` prefixes to upstreams that all reach `endpoint`, each with its
/// own `[upstreams.NAME.tls]` lines (or none).
fn tls_upstreams(endpoint: std::net::SocketAddr, upstreams: &[(&str, &str)]) -> String {
    let mut config =
        format!("[registries.local]\ntype = \"static\"\nservices.s = [\"{endpoint}\"]\n");
    for (name, tls) in upstreams {
        config.push_str(&format!(
            "[upstreams.{name}]\n[[upstreams.{name}.sources]]\nregistry = \"local\"\nservice = \"s\"\n{tls}\n"
        ));
    }
    for (name, _) in upstreams {
        config.push_str(&format!(
            "[[routes]]\npath_prefix = \"/{name}\"\nupstream = \"{name}\"\nretries = 0\n"
        ));
    }
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_tls_verifies_the_endpoint_certificate() {
    let backend = Backend::start("behind-tls");
    let certs = tempfile::tempdir().unwrap();
    let dir = certs.path();
    certificate(dir, "endpoint", "backend.test");
    certificate(dir, "other", "other.test");

    // The TLS endpoint: a second gateway terminating TLS for backend.test in front of the
    // backend (real rustls server, real certificate).
    let tls_port = free_port();
    let endpoint = Gateway::start(&tls_listener_config(
        backend.address(),
        tls_port,
        "",
        dir,
        &[("endpoint", "backend.test")],
    ))
    .await;
    endpoint.wait_ready().await;

    let d = dir.display();
    let gw = Gateway::start(&tls_upstreams(
        ([127, 0, 0, 1], tls_port).into(),
        &[
            (
                "good",
                &format!("[upstreams.good.tls]\nca_file = \"{d}/endpoint.pem\"\nserver_name = \"backend.test\""),
            ),
            (
                "wrongca",
                &format!("[upstreams.wrongca.tls]\nca_file = \"{d}/other.pem\"\nserver_name = \"backend.test\""),
            ),
            (
                "wrongname",
                &format!("[upstreams.wrongname.tls]\nca_file = \"{d}/endpoint.pem\"\nserver_name = \"other.test\""),
            ),
            (
                "noname",
                &format!("[upstreams.noname.tls]\nca_file = \"{d}/endpoint.pem\""),
            ),
            ("plain", ""),
        ],
    ))
    .await;
    gw.wait_ready().await;

    // Verified TLS: the request arrives, and the endpoint saw it over https.
    for _ in 0..20 {
        let reply = gw.get("/good/x").await;
        assert_eq!((reply.status, reply.body.as_str()), (200, "behind-tls"));
    }
    let seen = backend.seen().pop().unwrap();
    assert_eq!(seen.path, "/good/x");
    assert_eq!(seen.header("x-forwarded-proto"), vec!["https"]);
    let hits = backend.hits();

    // An untrusted CA, a name not in the certificate, the IP (not in its SANs), and plain
    // HTTP to a TLS port: 502, and nothing reaches the backend.
    for path in ["/wrongca/x", "/wrongname/x", "/noname/x", "/plain/x"] {
        let reply = gw.get(path).await;
        println!("{path}: {} {}", reply.status, reply.body);
        assert_eq!(reply.status, 502, "{path}: {}", reply.body);
    }
    assert_eq!(backend.hits(), hits);
    let stderr = gw.stderr();
    assert!(
        stderr.contains("TLS handshake with the endpoint failed"),
        "{stderr}"
    );

    // A CA file that does not exist is a config error naming the key.
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        format!(
            "[server]\nlisten = \"127.0.0.1:1\"\n{}",
            tls_upstreams(
                ([127, 0, 0, 1], tls_port).into(),
                &[("u", "[upstreams.u.tls]\nca_file = \"missing.pem\"")],
            )
        ),
    )
    .unwrap();
    let (code, stderr) = switchyard_integration_tests::gateway::check(&bad);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("upstreams.u.tls.ca_file"), "{stderr}");
}

/// A TLS client that trusts `trusted` and connects to `name` on `port`; the handshake is done.
async fn tls_connect(
    trusted: &[u8],
    name: &str,
    port: u16,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(trusted) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(
            rustls_pki_types::ServerName::try_from(name.to_owned()).unwrap(),
            tcp,
        )
        .await
        .expect("TLS handshake")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_connections_silent_after_the_handshake_are_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let backend = Backend::start("b");
    let tls_port = free_port();
    let certs = tempfile::tempdir().unwrap();
    let dir = certs.path();
    let a = certificate(dir, "a", "a.test");
    let gw = Gateway::start(&tls_listener_config(
        backend.address(),
        tls_port,
        "header_read_timeout = \"1s\"",
        dir,
        &[("a", "a.test")],
    ))
    .await;
    gw.wait_ready().await;

    // Handshake done, then nothing (or half the h2 preface): hyper-util would wait for the
    // version bytes forever; the first-bytes deadline (header_read_timeout) closes them.
    let mut silent = Vec::new();
    for i in 0..20 {
        let mut stream = tls_connect(&a, "a.test", tls_port).await;
        if i % 2 == 1 {
            stream.write_all(b"PRI * HTTP/2").await.unwrap();
            stream.flush().await.unwrap();
        }
        silent.push(stream);
    }
    let start = std::time::Instant::now();
    let mut closed = 0;
    for stream in &mut silent {
        let mut buf = [0u8; 64];
        let left = Duration::from_secs(10).saturating_sub(start.elapsed());
        let read = tokio::time::timeout(left, stream.read(&mut buf)).await;
        if matches!(read, Ok(Ok(0) | Err(_))) {
            closed += 1;
        }
    }
    println!(
        "{closed} of 20 TLS connections silent after the handshake closed; the last after {:?}",
        start.elapsed()
    );
    assert_eq!(closed, 20);

    // A client that speaks in time is served, over HTTP/1.1 and h2.
    for http1_only in [true, false] {
        let reply = client(&a, tls_port, http1_only)
            .get(format!("https://a.test:{tls_port}/x"))
            .send()
            .await
            .expect("served");
        assert_eq!(reply.status(), 200);
    }
}
