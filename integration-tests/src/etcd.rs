//! Launcher for a real etcd server (Debian package `etcd-server`), one per test.
//!
//! [`EtcdServer::start`] runs `etcd` as a child process on free loopback client and peer
//! ports with its own data directory, and waits until `/health` says so. [`EtcdServer::stop`]
//! and [`EtcdServer::restart`] keep the data directory and the ports, so a test can take
//! the registry away and bring it back with its data. The process is killed on drop.
//! [`EtcdServer::etcdctl`] runs the real `etcdctl` against it, as a user would.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long etcd may take to become healthy.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running (or stopped) etcd server owned by one test.
pub struct EtcdServer {
    child: Option<Child>,
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
}

/// A free TCP port on 127.0.0.1 (bound and released; the caller binds it soon after).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("no free loopback port")
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
        let dir = tempfile::Builder::new()
            .prefix("switchyard-etcd-")
            .tempdir()
            .expect("cannot create a temp dir for etcd");
        let mut server = EtcdServer {
            child: None,
            dir,
            client_port: free_port(),
            peer_port: free_port(),
        };
        server.spawn();
        server
    }

    /// The client URL, `http://127.0.0.1:PORT`.
    pub fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// The client address.
    pub fn client_address(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.client_port))
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
        let output = Command::new(etcdctl)
            .env("ETCDCTL_API", "3")
            .arg("--endpoints")
            .arg(self.client_url())
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
        let child = Command::new(etcd)
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
            if health(self.client_address()) {
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
        let body = http_get(self.client_address(), "/metrics")?;
        body.lines()
            .filter_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .find_map(|value| value.trim().parse().ok())
    }

    /// The directory of this server's files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
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
