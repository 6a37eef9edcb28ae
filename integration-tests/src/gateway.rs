//! The real `switchyard` binary as a child process, on free loopback ports.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

/// Where the binary under test is: `$SWITCHYARD_BIN`, else the workspace's debug build.
pub fn switchyard_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("SWITCHYARD_BIN") {
        return PathBuf::from(path);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let bin = target.join("debug/switchyard");
    assert!(
        bin.exists(),
        "{} is missing: build it first with `cargo build -p switchyard` (the README's test command does)",
        bin.display()
    );
    bin
}

/// A running gateway. Dropping it kills the process.
pub struct Gateway {
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// Data-plane port.
    pub port: u16,
    /// Admin port.
    pub admin_port: u16,
    client: reqwest::Client,
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Headers (lowercase names).
    pub headers: reqwest::header::HeaderMap,
    /// Body as text.
    pub body: String,
}

impl Gateway {
    /// Writes `config` and starts the gateway on it, waiting until `/healthz` answers.
    ///
    /// `{listen}` and `{admin}` in the text are replaced by the chosen addresses; when the
    /// text has no `[server]` or `[admin]` table, one is added with them.
    pub async fn start(config: &str) -> Gateway {
        let gateway = Self::spawn(config);
        gateway.wait_healthy().await;
        gateway
    }

    /// Starts the gateway without waiting (for start-up failure tests).
    pub fn spawn(config: &str) -> Gateway {
        let dir = tempfile::Builder::new()
            .prefix("switchyard-test-")
            .tempdir()
            .expect("temp dir");
        let (port, admin_port) = (free_port(), free_port());
        let mut gateway = Gateway {
            child: None,
            dir,
            port,
            admin_port,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .expect("client"),
        };
        gateway.write_config(config);
        let stdout =
            std::fs::File::create(gateway.dir.path().join("stdout.log")).expect("stdout log");
        let stderr =
            std::fs::File::create(gateway.dir.path().join("stderr.log")).expect("stderr log");
        let child = Command::new(switchyard_bin())
            .arg("--config")
            .arg(gateway.config_path())
            .env("SWITCHYARD_LOG", "info,switchyard=debug")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("start switchyard");
        gateway.child = Some(child);
        gateway
    }

    /// The config file's path.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("switchyard.toml")
    }

    /// The gateway's own temp dir (for files a test wants next to the config).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Rewrites the config file (a reload applies it).
    pub fn write_config(&self, config: &str) {
        let listen = format!("127.0.0.1:{}", self.port);
        let admin = format!("127.0.0.1:{}", self.admin_port);
        let mut text = config
            .replace("{listen}", &listen)
            .replace("{admin}", &admin);
        if !text.contains("[server]") {
            text = format!("[server]\nlisten = \"{listen}\"\n\n{text}");
        }
        if !text.contains("[admin]") {
            text = format!("[admin]\nlisten = \"{admin}\"\n\n{text}");
        }
        std::fs::write(self.config_path(), text).expect("write config");
    }

    /// `http://127.0.0.1:PORT{path}` on the data plane.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// `http://127.0.0.1:ADMIN{path}` on the admin listener.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port)
    }

    /// A shared HTTP client.
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// GET on the data plane.
    pub async fn get(&self, path: &str) -> Reply {
        self.send(self.client.get(self.url(path))).await
    }

    /// Sends a request built on [`Gateway::client`], reading the whole reply.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        let response = request.send().await.expect("request through the gateway");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.text().await.unwrap_or_default();
        Reply {
            status,
            headers,
            body,
        }
    }

    /// Sends `n` GETs of `path` (16 at a time) and counts the answers by body, or by status
    /// when it is not 200: how traffic spreads over backends that answer with their names.
    pub async fn spread(&self, path: &str, n: usize) -> std::collections::BTreeMap<String, usize> {
        use futures::StreamExt;
        let replies: Vec<String> = futures::stream::iter(0..n)
            .map(|_| async {
                let reply = self.get(path).await;
                if reply.status == 200 {
                    reply.body
                } else {
                    reply.status.to_string()
                }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        let mut counts = std::collections::BTreeMap::new();
        for reply in replies {
            *counts.entry(reply).or_default() += 1;
        }
        counts
    }

    /// Whether the next 20 GETs of `path` all reach one of the backends `names`.
    pub async fn all_reach(&self, path: &str, names: &[&str]) -> bool {
        let counts = self.spread(path, 20).await;
        counts.keys().all(|name| names.contains(&name.as_str()))
    }

    /// Polls `/` until the backend called `name` answers; returns the time since `since`
    /// (a propagation latency). Panics after 10 s.
    pub async fn time_until_routed(&self, name: &str, since: Instant) -> Duration {
        let deadline = since + Duration::from_secs(10);
        loop {
            let reply = self.get("/").await;
            if reply.status == 200 && reply.body == name {
                return since.elapsed();
            }
            assert!(
                Instant::now() < deadline,
                "{name} not routed to within 10 s"
            );
        }
    }

    /// GET on the admin listener, parsed as JSON.
    pub async fn admin_json(&self, path: &str) -> serde_json::Value {
        let reply = self.send(self.client.get(self.admin_url(path))).await;
        serde_json::from_str(&reply.body).unwrap_or_else(|e| panic!("{path}: {e}: {}", reply.body))
    }

    /// The first registry's entry in `/api/registries` (its `name`, `state`, ...): the one of
    /// a config with a single registry.
    pub async fn first_registry(&self) -> serde_json::Value {
        self.admin_json("/api/registries").await[0].clone()
    }

    /// `switchyard_registry_errors_total{registry="<registry>"}` from `/metrics`: malformed
    /// entries and stream errors counted for it; 0 while it has none listed.
    pub async fn registry_errors(&self, registry: &str) -> f64 {
        let text = self
            .send(self.client.get(self.admin_url("/metrics")))
            .await
            .body;
        let series = format!("switchyard_registry_errors_total{{registry=\"{registry}\"}}");
        text.lines()
            .find(|l| l.starts_with(&series))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    /// Waits until `/healthz` answers (10 s), or panics with the gateway's stderr.
    pub async fn wait_healthy(&self) {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(r) = self.client.get(self.admin_url("/healthz")).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!(
            "gateway not healthy within 10 s; stderr:\n{}",
            self.stderr()
        );
    }

    /// Waits until `/readyz` says 200 (10 s).
    pub async fn wait_ready(&self) {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(r) = self.client.get(self.admin_url("/readyz")).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("gateway not ready within 10 s; stderr:\n{}", self.stderr());
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Resident memory of the process, in KiB (Linux `/proc/PID/status` VmRSS).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/PID/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    /// Sends a signal (`HUP`, `TERM`, `KILL`) with kill(1).
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .expect("kill(1)");
        assert!(status.success(), "kill -{signal} {pid}");
    }

    /// Sends SIGTERM and waits (20 s) for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal("TERM");
        match self.wait_exit(Duration::from_secs(20)) {
            Some(status) => status,
            None => {
                let stderr = self.stderr();
                let lines: Vec<&str> = stderr.lines().collect();
                let tail = &lines[lines.len().saturating_sub(40)..];
                panic!(
                    "no exit within 20 s of SIGTERM; the gateway's last log lines:\n{}",
                    tail.join("\n")
                )
            }
        }
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self, deadline: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let start = Instant::now();
        while start.elapsed() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Everything the gateway wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// Everything the gateway wrote to stdout (the access log) so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stdout.log")).unwrap_or_default()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `switchyard check --config PATH`; returns the exit code and stderr.
pub fn check(config_path: &Path) -> (i32, String) {
    let output = Command::new(switchyard_bin())
        .arg("check")
        .arg("--config")
        .arg(config_path)
        .output()
        .expect("run switchyard check");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}
