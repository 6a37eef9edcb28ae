//! A private Docker engine for the docker registry's tests: its own `dockerd` (Debian package
//! docker.io) on a socket in a temp dir, with its own data and exec roots, its own bridge
//! interface and no iptables rules, so a test may stop and restart it without touching the
//! machine's engine or any other test's. (Not `--bridge=none`: a daemon started so deletes
//! the host's `docker0`, the machine engine's default bridge.) Containers run on the host network (`sleep` from a tiny image made
//! here from the host's own sleep, true, false and sh), each naming its loopback port
//! in `switchyard.port`: nothing is pulled.
//!
//! Also: a consumer that applies a registry's updates as the upstream cache does (through
//! the shared recover wrapper) and lets a test wait for a set.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use switchyard_registry::{
    recover, Backoff, Endpoint, Registry, RegistryContext, RegistryFactory, ServiceQuery,
    SourceEvent, Update,
};

/// The tiny image every test container runs.
pub const IMAGE: &str = "switchyard-test/sleep:local";

/// How long a test waits for the registry to see a change (the machine may be loaded;
/// each wait prints the time it took).
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A `dockerd` of the test's own. Stopped, and its files removed, on drop.
pub struct Engine {
    dir: tempfile::TempDir,
    child: Option<Child>,
    bridge: String,
}

impl Engine {
    /// Starts a private engine and loads [`IMAGE`] into it. Must run as root.
    pub fn start() -> Engine {
        let found = Command::new("sh")
            .args(["-c", "command -v dockerd"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        assert!(
            found,
            "dockerd not found: install it with scripts/install-deps.sh (apt-get install docker.io)"
        );
        // Unix socket paths are short (108 bytes): a short temp dir.
        let dir = tempfile::Builder::new()
            .prefix("sy-dk-")
            .tempdir_in("/tmp")
            .expect("temp dir");
        let bridge = make_bridge();
        let mut engine = Engine {
            dir,
            child: None,
            bridge,
        };
        engine.start_daemon();
        engine.load_image();
        engine
    }

    /// `unix://` address of the engine.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("d.sock")
    }

    /// Starts dockerd (again) on the same socket and roots, and waits until it answers.
    pub fn start_daemon(&mut self) {
        assert!(self.child.is_none(), "already running");
        let dir = self.dir.path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("dockerd.log"))
            .expect("dockerd log");
        let child = Command::new("dockerd")
            .arg("--host")
            .arg(self.host())
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("x"))
            .arg("--pidfile")
            .arg(dir.join("d.pid"))
            .arg("--bridge")
            .arg(&self.bridge)
            .args([
                "--iptables=false",
                "--ip-masq=false",
                "--userland-proxy=false",
            ])
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start dockerd");
        self.child = Some(child);
        let started = Instant::now();
        while !self.docker(&["version"]).status.success() {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "dockerd did not answer within 60 s; its log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        println!(
            "engine: private dockerd answered after {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }

    /// Stops dockerd (SIGTERM, as `systemctl stop docker` does) and waits for it to exit;
    /// its containers stop with it.
    pub fn stop_daemon(&mut self) {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let started = Instant::now();
        loop {
            if child.try_wait().expect("wait dockerd").is_some() {
                break;
            }
            if started.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        println!(
            "engine: private dockerd stopped in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }

    /// dockerd's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }

    /// Runs the docker CLI against this engine.
    pub fn docker(&self, args: &[&str]) -> std::process::Output {
        Command::new("docker")
            .arg("-H")
            .arg(self.host())
            .args(args)
            .output()
            .expect("run the docker CLI (apt-get install docker.io)")
    }

    /// Runs the docker CLI and asserts it succeeded; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Starts a host-network container `name` running `sleep` with `labels`, and extra
    /// `docker run` options.
    pub fn run(&self, name: &str, labels: &[(&str, &str)], options: &[&str]) {
        let mut args: Vec<String> = vec![
            "run".into(),
            "-d".into(),
            "--name".into(),
            name.into(),
            "--network".into(),
            "host".into(),
        ];
        for (k, v) in labels {
            args.push("--label".into());
            args.push(format!("{k}={v}"));
        }
        args.extend(options.iter().map(|o| (*o).to_owned()));
        args.extend([IMAGE.into(), "/usr/bin/sleep".into(), "100000".into()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.ok(&args);
    }

    /// Makes [`IMAGE`]: the host's sleep, true, false and sh with the libraries they load, as
    /// one `docker import`ed layer (a few MB).
    fn load_image(&self) {
        let root = self.dir.path().join("image");
        // /bin/sh: Docker runs --health-cmd through it (CMD-SHELL).
        for binary in [
            "/usr/bin/sleep",
            "/usr/bin/true",
            "/usr/bin/false",
            "/bin/sh",
        ] {
            copy_into(&root, Path::new(binary));
            let ldd = Command::new("ldd").arg(binary).output().expect("ldd");
            for line in String::from_utf8_lossy(&ldd.stdout).lines() {
                let path = line
                    .split_whitespace()
                    .find(|w| w.starts_with('/'))
                    .map(PathBuf::from);
                if let Some(path) = path {
                    copy_into(&root, &path);
                }
            }
        }
        let mut tar = Command::new("tar")
            .arg("-C")
            .arg(&root)
            .args(["-cf", "-", "."])
            .stdout(Stdio::piped())
            .spawn()
            .expect("tar");
        let status = Command::new("docker")
            .arg("-H")
            .arg(self.host())
            .args(["import", "-", IMAGE])
            .stdin(tar.stdout.take().expect("tar stdout"))
            .stdout(Stdio::null())
            .status()
            .expect("docker import");
        assert!(
            tar.wait().expect("wait for tar").success(),
            "tar of the test image failed"
        );
        assert!(status.success(), "docker import of the test image failed");
    }
}

/// Creates a bridge interface of the test's own (named after the process, on a private
/// 10.213.X.0/24 address no container traffic uses: the tests' containers run on the host
/// network) for the private engine's default network.
fn make_bridge() -> String {
    let pid = std::process::id();
    let name = format!("sydk{}", pid % 100_000_000);
    let ip = |args: &[&str]| {
        let out = Command::new("ip")
            .args(args)
            .output()
            .expect("run ip (apt-get install iproute2)");
        assert!(
            out.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let _ = Command::new("ip").args(["link", "del", &name]).output();
    ip(&["link", "add", &name, "type", "bridge"]);
    ip(&[
        "addr",
        "add",
        &format!("10.213.{}.1/24", pid % 250),
        "dev",
        &name,
    ]);
    ip(&["link", "set", &name, "up"]);
    name
}

/// Copies `path` (following symlinks) to the same path under `root`.
fn copy_into(root: &Path, path: &Path) {
    let target = root.join(path.strip_prefix("/").unwrap());
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    std::fs::copy(path, &target).unwrap_or_else(|e| panic!("copy {}: {e}", path.display()));
}

impl Drop for Engine {
    fn drop(&mut self) {
        if self.child.is_some() {
            let ids = self.docker(&["ps", "-aq"]);
            let ids = String::from_utf8_lossy(&ids.stdout).into_owned();
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f"];
                args.extend(ids);
                let _ = self.docker(&args);
            }
            self.stop_daemon();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
    }
}

/// The set a consumer holds, as the upstream cache would apply the updates.
#[derive(Clone, Debug, Default)]
pub struct Seen {
    /// Current endpoints by address.
    pub set: BTreeMap<SocketAddr, Endpoint>,
    /// Errors received (engine unreachable).
    pub errors: usize,
    /// Resets received (first sync and every resync).
    pub resets: usize,
    /// Authoritative "no such service" answers received.
    pub gone: usize,
}

impl Seen {
    /// `address/weight/priority[/unhealthy]` of each endpoint, sorted.
    pub fn describe(&self) -> Vec<String> {
        self.set
            .values()
            .map(|e| {
                format!(
                    "{}/{}/{}{}",
                    e.address,
                    e.weight,
                    e.priority,
                    if e.healthy { "" } else { "/unhealthy" }
                )
            })
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect()
    }
}

/// A docker registry on `engine` watching `service` through the shared recover wrapper.
pub struct Watcher {
    seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
    /// The registry's counters (malformed entries are errors).
    pub ctx: RegistryContext,
}

impl Watcher {
    /// Builds the registry from `settings` and starts watching `service`.
    pub fn start(settings: serde_json::Value, service: &str) -> Watcher {
        let ctx = RegistryContext::new("docker");
        let registry: Arc<dyn Registry> = switchyard_docker::DockerFactory
            .build(ctx.clone(), &settings)
            .expect("settings");
        let backoff = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(500),
            slow_retry: Duration::from_secs(1),
        };
        let mut events = recover(registry, ServiceQuery::new(service), backoff);
        let seen = Arc::new(Mutex::new(Seen::default()));
        let task = tokio::spawn({
            let seen = Arc::clone(&seen);
            async move {
                while let Some(event) = events.next().await {
                    let mut seen = seen.lock().unwrap();
                    match event {
                        SourceEvent::Update(Update::Reset(endpoints)) => {
                            seen.resets += 1;
                            seen.set = endpoints
                                .iter()
                                .map(|e| (e.address, Endpoint::clone(e)))
                                .collect();
                        }
                        SourceEvent::Update(Update::Add(endpoints)) => {
                            for e in endpoints {
                                seen.set.insert(e.address, Endpoint::clone(&e));
                            }
                        }
                        SourceEvent::Update(Update::Remove(addresses)) => {
                            for a in addresses {
                                seen.set.remove(&a);
                            }
                        }
                        SourceEvent::Update(Update::DoesNotExist) => {
                            seen.gone += 1;
                            seen.set.clear();
                        }
                        SourceEvent::Error(_) => seen.errors += 1,
                    }
                }
            }
        });
        Watcher { seen, task, ctx }
    }

    /// What the consumer holds now.
    pub fn seen(&self) -> Seen {
        self.seen.lock().unwrap().clone()
    }

    /// Waits until `done` holds for the consumer's state; prints and returns how long it
    /// took. Fails the test after [`DEADLINE`].
    pub async fn wait(&self, what: &str, done: impl Fn(&Seen) -> bool) -> Duration {
        let started = Instant::now();
        loop {
            let seen = self.seen();
            if done(&seen) {
                let took = started.elapsed();
                println!(
                    "{what}: after {:.3} s, {:?}",
                    took.as_secs_f64(),
                    seen.describe()
                );
                return took;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "{what}: not seen within {DEADLINE:?}; the consumer holds {seen:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until the set is exactly `expected` (`address/weight/priority[/unhealthy]`).
    pub async fn wait_set(&self, what: &str, expected: &[&str]) -> Duration {
        let mut expected: Vec<String> = expected.iter().map(|s| (*s).to_owned()).collect();
        expected.sort();
        self.wait(what, |seen| seen.describe() == expected).await
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}
