//! Launcher for a real Redis server (Debian package `redis-server`), one per test.
//!
//! [`RedisServer::start`] runs `redis-server` in the foreground on a free loopback port,
//! with its own working directory and no persistence, and waits until it answers `PING`.
//! [`RedisServer::stop`] and [`RedisServer::restart`] take it away and bring it back on the
//! same port (empty: nothing is saved), for fail-open/fail-closed tests. The process is
//! killed on drop. [`RedisServer::command`] sends one command over RESP, as a client would.
//!
//! A missing binary fails the test with the command that installs it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What to install when `redis-server` is missing.
pub const INSTALL: &str = "apt-get install redis-server";

/// How long Redis may take to answer after it was started.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running (or stopped) Redis server owned by one test.
pub struct RedisServer {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
}

fn find_binary(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin", "/usr/sbin", "/usr/local/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| panic!("`{name}` not found: install it with `{INSTALL}`"))
}

impl RedisServer {
    /// Starts Redis on a free loopback port and waits until it answers `PING`. Panics when
    /// the binary is missing or the server does not answer within 20 s (printing its log).
    pub fn start() -> RedisServer {
        let dir = tempfile::Builder::new()
            .prefix("switchyard-redis-")
            .tempdir()
            .expect("create temp dir for redis");
        let port = crate::free_port();
        let mut server = RedisServer {
            child: None,
            dir,
            port,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let binary = find_binary("redis-server");
        let log = std::fs::File::create(self.dir.path().join("redis.log")).expect("redis log");
        let child = Command::new(binary)
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--daemonize", "no"])
            .args(["--protected-mode", "yes"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start redis-server ({INSTALL}): {e}"));
        self.child = Some(child);
        let start = Instant::now();
        while start.elapsed() < START_TIMEOUT {
            if self.command(&["PING"]).is_ok_and(|reply| reply == "+PONG") {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("redis-server exited ({status}):\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "redis-server did not answer within {START_TIMEOUT:?}:\n{}",
            self.log()
        );
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    /// Kills it (the port stays reserved for [`RedisServer::restart`]).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port (with no data).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Sends one command and returns the first line of the reply (`+OK`, `:3`, `$5`, ...),
    /// or the I/O error. For bulk replies, the value follows on the next line and is
    /// returned instead of the length line.
    pub fn command(&self, args: &[&str]) -> std::io::Result<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        stream.write_all(request.as_bytes())?;
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end().to_owned();
        if let Some(len) = line.strip_prefix('$').and_then(|n| n.parse::<usize>().ok()) {
            let mut value = vec![0; len + 2];
            reader.read_exact(&mut value)?;
            value.truncate(len);
            return Ok(String::from_utf8_lossy(&value).into_owned());
        }
        Ok(line)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
