//! gRPC peers this project did not write: Python's `grpcio` server and client
//! (`integration-tests/grpc/server.py`, `client.py`) in a virtualenv under
//! `target/grpc-venv`, with the versions of `integration-tests/grpc/requirements.txt`.
//!
//! The virtualenv is made by `scripts/install-deps.sh`, or here on first use (then every
//! test process but one waits for it under a lock file). A machine without `python3` (and
//! its `venv` module) fails the test saying how to install it.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::free_port;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn scripts() -> PathBuf {
    repo().join("integration-tests/grpc")
}

/// The virtualenv's python, made (once, under a lock) when missing.
pub fn python() -> PathBuf {
    let venv = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target"))
        .join("grpc-venv");
    let python = venv.join("bin/python");
    let marker = venv.join(".installed");
    if marker.exists() {
        return python;
    }
    std::fs::create_dir_all(venv.parent().unwrap()).expect("target dir");
    // One installer at a time: `flock` on a file beside the venv.
    let lock = venv.with_extension("lock");
    let script = format!(
        "set -e; [ -e '{marker}' ] && exit 0; rm -rf '{venv}'; python3 -m venv '{venv}'; \
         '{venv}/bin/pip' install -q --disable-pip-version-check --only-binary=:all: -r '{req}'; \
         touch '{marker}'",
        marker = marker.display(),
        venv = venv.display(),
        req = scripts().join("requirements.txt").display(),
    );
    let status = Command::new("flock")
        .arg(&lock)
        .args(["sh", "-c", &script])
        .status()
        .expect("run flock (util-linux) to set up the gRPC virtualenv");
    assert!(
        status.success(),
        "could not make the gRPC test virtualenv {}: needs python3 with venv and pip \
         (Debian: apt-get install python3-venv) and PyPI; or run scripts/install-deps.sh",
        venv.display()
    );
    python
}

/// A `server.py` process. Dropping it kills it.
pub struct GrpcServer {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The name it answers `Unary` with.
    pub name: String,
}

impl GrpcServer {
    /// Starts a server named `name` on a free port and waits until it listens.
    pub fn start(name: &str) -> GrpcServer {
        Self::on_a_free_port(name, None)
    }

    /// Starts a server on `port`.
    pub fn start_on(name: &str, port: u16) -> GrpcServer {
        Self::spawn(name, port, None).unwrap_or_else(|| panic!("port {port} is taken"))
    }

    /// Starts a server that speaks TLS (ALPN h2) with the PEM files `cert` and `key`.
    pub fn start_tls(name: &str, cert: &Path, key: &Path) -> GrpcServer {
        Self::on_a_free_port(name, Some((cert, key)))
    }

    /// Starts on a free port, trying another when a parallel test took the one picked.
    fn on_a_free_port(name: &str, tls: Option<(&Path, &Path)>) -> GrpcServer {
        for _ in 0..10 {
            if let Some(server) = Self::spawn(name, free_port(), tls) {
                return server;
            }
        }
        panic!("gRPC server {name}: no free port in 10 tries");
    }

    /// The server, or `None` when its port was taken.
    fn spawn(name: &str, port: u16, tls: Option<(&Path, &Path)>) -> Option<GrpcServer> {
        let mut command = Command::new(python());
        command
            .arg(scripts().join("server.py"))
            .arg(port.to_string())
            .arg(name);
        if let Some((cert, key)) = tls {
            command.arg(cert).arg(key);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start server.py");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let server = GrpcServer {
            stdin: child.stdin.take(),
            child,
            lines,
            port,
            name: name.to_owned(),
        };
        let first = server
            .lines
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("gRPC server {name}: no \"ready\" line: {e}"));
        match first.as_str() {
            "ready" => Some(server),
            "bind failed" => None,
            other => panic!("gRPC server {name}: {other:?} instead of \"ready\""),
        }
    }

    fn expect_line(&self, wanted: &str, within: Duration) {
        let line = self
            .lines
            .recv_timeout(within)
            .unwrap_or_else(|e| panic!("gRPC server {}: no {wanted:?} line: {e}", self.name));
        assert_eq!(line, wanted);
    }

    /// Sets the health service's status: `SERVING` or `NOT_SERVING`.
    pub fn set_health(&mut self, status: &str) {
        let stdin = self.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{status}").unwrap();
        stdin.flush().unwrap();
        self.expect_line(&format!("health {status}"), Duration::from_secs(20));
    }

    /// Stops it gracefully (SIGTERM: GOAWAY, calls in flight finish).
    pub fn terminate(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }

    /// Kills it (SIGKILL: connections reset).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// `127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `client.py TARGET ARGS...` to its end and returns its last stdout line as JSON.
///
/// # Panics
/// When the client fails (see [`try_client`]).
pub fn client(target: &str, args: &[&str]) -> serde_json::Value {
    try_client(target, args).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `client.py TARGET ARGS...` to its end: its last stdout line as JSON, or why not
/// (it exited with an error, e.g. a call that failed, or printed no JSON).
pub fn try_client(target: &str, args: &[&str]) -> Result<serde_json::Value, String> {
    let output = Command::new(python())
        .arg(scripts().join("client.py"))
        .arg(target)
        .args(args)
        .output()
        .expect("run client.py");
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "client.py {args:?} failed: {}\n{stdout}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).map_err(|e| format!("client.py said {stdout:?}: {e}"))
}

/// Starts `client.py TARGET ARGS...` without waiting (its stdout piped).
pub fn spawn_client(target: &str, args: &[&str]) -> Child {
    Command::new(python())
        .arg(scripts().join("client.py"))
        .arg(target)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start client.py")
}
