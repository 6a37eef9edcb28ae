//! Launcher for a real ZooKeeper server (Debian package `zookeeper`), one per test, and
//! [`Kazoo`], a real client that is not ours (Python `kazoo` from PyPI) to register
//! instances with.
//!
//! [`ZooKeeperServer::start`] runs `org.apache.zookeeper.server.ZooKeeperServerMain` from
//! the package's jar as a child process on a free loopback port, with its own data
//! directory and a 500 ms tick (so sessions may be as short as 1 s), and waits until the
//! `ruok` four-letter command answers `imok`. [`ZooKeeperServer::stop`] kills it as a
//! crash would; [`ZooKeeperServer::restart`] brings it back on the same port with the same
//! data; [`ZooKeeperServer::wipe`] empties the data directory (a replaced server).
//!
//! [`Kazoo::connect`] starts a Python process holding one kazoo session; its methods
//! create, change and delete nodes through it (ephemeral nodes live as long as that
//! session). [`Kazoo::kill`] SIGKILLs the process: its session expires on the server after
//! the session timeout, and its ephemeral nodes go with it. kazoo is installed in a
//! virtualenv under `target/kazoo-venv` (by `scripts/install-deps.sh`, or here on first use).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

/// How long ZooKeeper may take to answer `ruok` (a JVM start on a loaded machine).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// The jar the Debian package installs (its manifest's Class-Path names the dependencies).
const ZOOKEEPER_JAR: &str = "/usr/share/java/zookeeper.jar";

/// A running (or stopped) ZooKeeper server owned by one test.
pub struct ZooKeeperServer {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
}

impl ZooKeeperServer {
    /// Starts ZooKeeper on a free loopback port with a fresh data directory and waits until
    /// it answers. Panics when the package is missing ("apt-get install zookeeper") or the
    /// server does not come up within 60 s (printing its log).
    pub fn start() -> ZooKeeperServer {
        let dir = tempfile::Builder::new()
            .prefix("switchyard-zookeeper-")
            .tempdir()
            .expect("cannot create a temp dir for ZooKeeper");
        let mut server = ZooKeeperServer {
            child: None,
            dir,
            port: free_port(),
        };
        server.spawn();
        server
    }

    /// `127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The server's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("zookeeper.log")).unwrap_or_default()
    }

    /// Kills the server (SIGKILL) and waits for it to exit. The data stays.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port with the same data.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Stops the server and deletes its data: the next [`ZooKeeperServer::restart`] is a
    /// new, empty server on the same port (every session of the old one is unknown to it).
    pub fn wipe(&mut self) {
        self.stop();
        let data = self.dir.path().join("data");
        let _ = std::fs::remove_dir_all(&data);
    }

    fn spawn(&mut self) {
        let java = find_java();
        assert!(
            Path::new(ZOOKEEPER_JAR).is_file(),
            "{ZOOKEEPER_JAR} not found: install ZooKeeper with `apt-get install zookeeper` \
             (or run scripts/install-deps.sh)"
        );
        let data = self.dir.path().join("data");
        std::fs::create_dir_all(&data).expect("ZooKeeper data dir");
        let config = self.dir.path().join("zoo.cfg");
        std::fs::write(
            &config,
            format!(
                "tickTime=500\ninitLimit=10\nsyncLimit=5\ndataDir={}\nclientPort={}\n\
                 clientPortAddress=127.0.0.1\nmaxClientCnxns=0\nadmin.enableServer=false\n\
                 4lw.commands.whitelist=ruok,srvr,cons\n",
                data.display(),
                self.port
            ),
        )
        .expect("zoo.cfg");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("zookeeper.log"))
            .expect("ZooKeeper log");
        let child = Command::new(java)
            .arg("-Xmx256m")
            .arg("-XX:+UseSerialGC")
            .arg("-XX:TieredStopAtLevel=1")
            .arg("-Dzookeeper.admin.enableServer=false")
            .arg("-cp")
            .arg(ZOOKEEPER_JAR)
            .arg("org.apache.zookeeper.server.ZooKeeperServerMain")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("cannot start java");
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if four_letter(&self.address(), "ruok").as_deref() == Some("imok") {
                return;
            }
            let exited = self
                .child
                .as_mut()
                .is_some_and(|c| !matches!(c.try_wait(), Ok(None)));
            if exited || Instant::now() > deadline {
                self.stop();
                panic!(
                    "ZooKeeper did not answer on {} within {START_TIMEOUT:?}; its log:\n{}",
                    self.address(),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for ZooKeeperServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sends a four-letter command; the trimmed answer, or `None`.
pub fn four_letter(address: &str, command: &str) -> Option<String> {
    let address: SocketAddr = address.parse().ok()?;
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream.write_all(command.as_bytes()).ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    Some(answer.trim().to_owned())
}

fn find_java() -> PathBuf {
    let from_path = std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("java"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    from_path
        .into_iter()
        .chain([PathBuf::from("/usr/bin/java")])
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("`java` not found: install ZooKeeper with `apt-get install zookeeper` (it pulls a JRE)")
        })
}

// === kazoo ===

/// The agent each [`Kazoo`] runs: one kazoo session, commands as JSON lines on stdin, one
/// answer line (`ok ...` or `error ...`) each on stdout.
const AGENT: &str = r#"
import json, sys, logging
from kazoo.client import KazooClient
logging.basicConfig(level=logging.WARNING)
hosts, timeout = sys.argv[1], float(sys.argv[2])
auth = [("digest", sys.argv[3])] if len(sys.argv) > 3 else None
zk = KazooClient(hosts=hosts, timeout=timeout, auth_data=auth)
zk.start(timeout=30)
print("ok session %x" % zk.client_id[0], flush=True)
for line in sys.stdin:
    cmd = json.loads(line)
    try:
        op, path = cmd["op"], cmd["path"]
        data = cmd.get("data", "").encode()
        if op == "create":
            acl = None
            if cmd.get("digest"):
                from kazoo.security import make_digest_acl
                user, password = cmd["digest"].split(":", 1)
                acl = [make_digest_acl(user, password, all=True)]
            zk.create(path, data, acl=acl, ephemeral=cmd.get("ephemeral", False), makepath=True)
        elif op == "set":
            zk.set(path, data)
        elif op == "delete":
            zk.delete(path, recursive=True)
        elif op == "ensure":
            zk.ensure_path(path)
        else:
            raise ValueError("unknown op " + op)
        print("ok", flush=True)
    except Exception as e:
        print("error %s: %s" % (type(e).__name__, e), flush=True)
"#;

/// One kazoo session in a Python process.
pub struct Kazoo {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    _dir: tempfile::TempDir,
}

impl Kazoo {
    /// Connects a kazoo client to `hosts` (`host:port,...`) with a session timeout of
    /// `session_timeout`; waits for the session.
    pub fn connect(hosts: &str, session_timeout: Duration) -> Kazoo {
        Self::connect_with(hosts, session_timeout, None)
    }

    /// Like [`Kazoo::connect`], adding digest credentials `user:password` to the session.
    pub fn connect_with(hosts: &str, session_timeout: Duration, digest: Option<&str>) -> Kazoo {
        let python = kazoo_python();
        let dir = tempfile::Builder::new()
            .prefix("switchyard-kazoo-")
            .tempdir()
            .expect("temp dir");
        let script = dir.path().join("agent.py");
        std::fs::write(&script, AGENT).expect("agent.py");
        let mut command = Command::new(python);
        command
            .arg(&script)
            .arg(hosts)
            .arg(format!("{}", session_timeout.as_secs_f64()));
        if let Some(digest) = digest {
            command.arg(digest);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.path().join("stderr.log")).expect("log"))
            .spawn()
            .expect("cannot start the kazoo agent");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut kazoo = Kazoo {
            child,
            stdin,
            stdout,
            _dir: dir,
        };
        let hello = kazoo.read_line();
        assert!(
            hello.starts_with("ok session"),
            "kazoo did not connect to {hosts}: {hello:?}; stderr: {}",
            kazoo.stderr()
        );
        kazoo
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("stderr.log")).unwrap_or_default()
    }

    fn read_line(&mut self) -> String {
        let mut line = String::new();
        let _ = self.stdout.read_line(&mut line);
        line.trim().to_owned()
    }

    /// Sends one command and panics unless it succeeded.
    fn run(&mut self, command: serde_json::Value) {
        writeln!(self.stdin, "{command}").expect("write to kazoo");
        self.stdin.flush().expect("flush");
        let answer = self.read_line();
        assert_eq!(
            answer,
            "ok",
            "kazoo {command}: {answer:?}; stderr: {}",
            self.stderr()
        );
    }

    /// Creates an ephemeral node (parents made as needed), as a registering service does.
    pub fn register(&mut self, path: &str, data: &str) {
        self.run(
            serde_json::json!({"op": "create", "path": path, "data": data, "ephemeral": true}),
        );
    }

    /// Creates a persistent node (parents made as needed).
    pub fn create(&mut self, path: &str, data: &str) {
        self.run(serde_json::json!({"op": "create", "path": path, "data": data}));
    }

    /// Creates a persistent node readable only with digest credentials `user:password`.
    pub fn create_protected(&mut self, path: &str, data: &str, digest: &str) {
        self.run(serde_json::json!({"op": "create", "path": path, "data": data, "digest": digest}));
    }

    /// Creates a path of persistent nodes if missing.
    pub fn ensure(&mut self, path: &str) {
        self.run(serde_json::json!({"op": "ensure", "path": path}));
    }

    /// Replaces a node's data.
    pub fn set(&mut self, path: &str, data: &str) {
        self.run(serde_json::json!({"op": "set", "path": path, "data": data}));
    }

    /// Deletes a node and its children.
    pub fn delete(&mut self, path: &str) {
        self.run(serde_json::json!({"op": "delete", "path": path}));
    }

    /// SIGKILLs the process: nothing closes the session, which expires on the server after
    /// its timeout, taking the ephemeral nodes with it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Kazoo {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Curator x-discovery `ServiceInstance` as Curator's `JsonInstanceSerializer` writes it.
pub fn curator_instance(service: &str, id: &str, address: SocketAddr, payload: &str) -> String {
    format!(
        r#"{{"name":"{service}","id":"{id}","address":"{}","port":{},"sslPort":null,"payload":{payload},"registrationTimeUTC":1700000000000,"serviceType":"DYNAMIC","uriSpec":{{"parts":[{{"value":"scheme","variable":true}},{{"value":"://","variable":false}},{{"value":"address","variable":true}}]}},"enabled":true}}"#,
        address.ip(),
        address.port()
    )
}

/// A Dubbo provider node name: `URL.encode(dubbo://host:port/interface?params)`.
pub fn dubbo_node(interface: &str, address: SocketAddr, params: &str) -> String {
    let url = format!(
        "dubbo://{}/{interface}?anyhost=true&application=demo&interface={interface}&side=provider&{params}",
        address
    );
    let mut encoded = String::new();
    for byte in url.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_' | b'*' => {
                encoded.push(byte as char);
            }
            b' ' => encoded.push('+'),
            _ => encoded.push_str(&format!("%{byte:02X}")),
        }
    }
    encoded
}

/// The Python of the kazoo virtualenv, created (with `pip install kazoo`) when missing.
/// Panics with how to install it when that fails.
pub fn kazoo_python() -> PathBuf {
    let venv = target_dir().join("kazoo-venv");
    let python = venv.join("bin/python");
    if has_kazoo(&python) {
        return python;
    }
    // Built aside and renamed into place, so parallel tests never see half a virtualenv.
    let staging = target_dir().join(format!("kazoo-venv.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    let made = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&staging)
        .status()
        .is_ok_and(|s| s.success())
        && Command::new(staging.join("bin/pip"))
            .args(["install", "--quiet", "kazoo"])
            .status()
            .is_ok_and(|s| s.success());
    if made && std::fs::rename(&staging, &venv).is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    // A venv moved after creation still runs (its python is a symlink to the system's),
    // but its scripts' shebangs do not: only `bin/python` is used.
    assert!(
        has_kazoo(&python),
        "kazoo is missing: run scripts/install-deps.sh, or `python3 -m venv {} && {}/bin/pip install kazoo` \
         (needs Debian's python3-venv)",
        venv.display(),
        venv.display()
    );
    python
}

fn has_kazoo(python: &Path) -> bool {
    python.is_file()
        && Command::new(python)
            .args(["-c", "import kazoo"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}
