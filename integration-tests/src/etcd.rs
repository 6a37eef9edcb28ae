//! Launcher for a real etcd server (Debian package `etcd-server`), one per test.
//!
//! [`EtcdServer::start`] runs `etcd` as a child process on free loopback client and peer
//! ports with its own data directory, and waits until `/health` says so. [`EtcdServer::stop`]
//! and [`EtcdServer::restart`] keep the data directory and the ports, so a test can take
//! the registry away and bring it back with its data. The process is killed on drop.
//! [`EtcdServer::etcdctl`] runs the real `etcdctl` against it, as a user would.
//! [`EtcdServer::start_tls`] serves clients over TLS with client-certificate
//! authentication, with a throwaway CA made by `openssl`. Health and metrics are read from a
//! separate plain-HTTP metrics port in both modes.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

/// How long etcd may take to become healthy.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running (or stopped) etcd server owned by one test.
pub struct EtcdServer {
    child: Option<Child>,
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    metrics_port: u16,
    tls: Option<TlsFiles>,
}

/// PEM files for a TLS etcd: the CA that signed the server's certificate (for `127.0.0.1`),
/// and a client certificate and key it accepts.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// The CA certificate.
    pub ca: PathBuf,
    /// The client certificate.
    pub cert: PathBuf,
    /// The client's private key.
    pub key: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
}

/// The path of a program, or a panic naming the package that installs it.
fn find_binary(name: &str, package: &str) -> PathBuf {
    let from_path = std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(name))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    from_path
        .into_iter()
        .chain([PathBuf::from("/usr/bin").join(name)])
        .find(|path| path.is_file())
        .unwrap_or_else(|| {
            panic!("`{name}` not found: install it with `apt-get install {package}`")
        })
}

impl EtcdServer {
    /// Starts etcd on free loopback ports with a fresh data directory and waits until it
    /// is healthy. Panics when the binary is missing ("apt-get install etcd-server") or
    /// the server does not come up within 30 s (printing its log).
    pub fn start() -> EtcdServer {
        let mut server = EtcdServer::new();
        server.spawn();
        server
    }

    /// Like [`EtcdServer::start`], but clients must speak TLS and present a certificate
    /// signed by a fresh CA (made with `openssl`; panics with "apt-get install openssl"
    /// when it is missing). [`EtcdServer::tls_files`] gives the CA and a client identity.
    pub fn start_tls() -> EtcdServer {
        let mut server = EtcdServer::new();
        server.tls = Some(make_certificates(server.dir.path()));
        server.spawn();
        server
    }

    fn new() -> EtcdServer {
        let dir = tempfile::Builder::new()
            .prefix("switchyard-etcd-")
            .tempdir()
            .expect("cannot create a temp dir for etcd");
        EtcdServer {
            child: None,
            dir,
            client_port: free_port(),
            peer_port: free_port(),
            metrics_port: free_port(),
            tls: None,
        }
    }

    /// The client URL: `http://127.0.0.1:PORT`, or `https://...` for a TLS server.
    pub fn client_url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// The TLS files of a server started with [`EtcdServer::start_tls`].
    pub fn tls_files(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }

    /// The client address.
    pub fn client_address(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.client_port))
    }

    /// The plain-HTTP address serving `/health` and `/metrics`.
    pub fn metrics_address(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.metrics_port))
    }

    /// The data directory (kept across [`EtcdServer::stop`] and [`EtcdServer::restart`]).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    /// Kills the server (SIGKILL, as a crash would) and waits for it to exit. The data
    /// directory stays. Does nothing when already stopped.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same ports with the same data, and waits until it
    /// is healthy.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Whether the server process is running.
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Runs `etcdctl --endpoints URL ARGS...` (API v3) and returns its stdout; panics with
    /// its stderr when it fails.
    pub fn etcdctl(&self, args: &[&str]) -> String {
        let etcdctl = find_binary("etcdctl", "etcd-client");
        let mut command = Command::new(etcdctl);
        command
            .env("ETCDCTL_API", "3")
            .arg("--endpoints")
            .arg(self.client_url());
        if let Some(tls) = &self.tls {
            command
                .arg("--cacert")
                .arg(&tls.ca)
                .arg("--cert")
                .arg(&tls.cert)
                .arg("--key")
                .arg(&tls.key);
        }
        let output = command
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("cannot run etcdctl");
        assert!(
            output.status.success(),
            "etcdctl {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn spawn(&mut self) {
        let etcd = find_binary("etcd", "etcd-server");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("cannot open the etcd log file");
        let client = self.client_url();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let mut command = Command::new(etcd);
        if let Some(tls) = &self.tls {
            command
                .arg("--cert-file")
                .arg(&tls.server_cert)
                .arg("--key-file")
                .arg(&tls.server_key)
                .arg("--trusted-ca-file")
                .arg(&tls.ca)
                .arg("--client-cert-auth");
        }
        let child = command
            .arg("--listen-metrics-urls")
            .arg(format!("http://127.0.0.1:{}", self.metrics_port))
            .arg("--name")
            .arg("switchyard-test")
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--listen-client-urls")
            .arg(&client)
            .arg("--advertise-client-urls")
            .arg(&client)
            .arg("--listen-peer-urls")
            .arg(&peer)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer)
            .arg("--initial-cluster")
            .arg(format!("switchyard-test={peer}"))
            .arg("--initial-cluster-state")
            .arg("new")
            .arg("--log-level")
            .arg("warn")
            .arg("--logger")
            .arg("zap")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cannot share the etcd log file"))
            .stderr(log)
            .spawn()
            .expect("cannot start etcd");
        self.child = Some(child);
        self.wait_healthy();
    }

    fn wait_healthy(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if health(self.metrics_address()) {
                return;
            }
            if !self.is_running() || Instant::now() > deadline {
                let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
                self.stop();
                panic!(
                    "etcd did not become healthy on {} within {START_TIMEOUT:?}; its log:\n{log}",
                    self.client_url()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The value of an unlabelled Prometheus metric of the server (`/metrics`), e.g.
    /// `etcd_debugging_mvcc_watcher_total`, the number of open watchers.
    pub fn metric(&self, name: &str) -> Option<f64> {
        let body = http_get(self.metrics_address(), "/metrics")?;
        body.lines()
            .filter_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .find_map(|value| value.trim().parse().ok())
    }

    /// The directory of this server's files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl.
fn make_certificates(dir: &Path) -> TlsFiles {
    let openssl = find_binary("openssl", "openssl");
    let run = |args: &[&str]| {
        let output = Command::new(&openssl)
            .current_dir(dir)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("cannot run openssl");
        assert!(
            output.status.success(),
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    let key = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"][..],
        &key,
        &[
            "-keyout",
            "ca-key.pem",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=switchyard test CA",
        ],
    ]
    .concat());
    for (name, usage) in [("server", "serverAuth"), ("client", "clientAuth")] {
        let (key_file, csr, pem, ext) = (
            format!("{name}-key.pem"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
        );
        std::fs::write(
            dir.join(&ext),
            format!("subjectAltName=IP:127.0.0.1\nextendedKeyUsage={usage}\nbasicConstraints=CA:FALSE\n"),
        )
        .expect("cannot write the openssl extension file");
        run(&[
            &["req"][..],
            &key,
            &[
                "-keyout",
                &key_file,
                "-out",
                &csr,
                "-subj",
                &format!("/CN={name}"),
            ],
        ]
        .concat());
        run(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca-key.pem",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            &pem,
            "-extfile",
            &ext,
        ]);
    }
    TlsFiles {
        ca: dir.join("ca.pem"),
        cert: dir.join("client.pem"),
        key: dir.join("client-key.pem"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server-key.pem"),
    }
}

/// `GET /health` answers `{"health":"true"}`.
fn health(address: SocketAddr) -> bool {
    http_get(address, "/health").is_some_and(|body| body.contains("\"health\":\"true\""))
}

/// A plain HTTP/1.0 GET on the client port; the whole response, or `None`.
fn http_get(address: SocketAddr, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.stop();
    }
}
