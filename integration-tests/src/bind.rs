//! Launcher for a real bind9 `named` serving one zone on a free loopback port, for the DNS
//! registry tests (Debian packages `bind9` and `bind9-dnsutils`).
//!
//! [`NamedServer`] writes a zone file and a `named.conf` into its own temp dir, runs `named`
//! in the foreground (`-g`) on 127.0.0.1 (UDP and TCP, same port), waits until it answers
//! for the zone, and kills it on drop. Dynamic updates are allowed from 127.0.0.1 (or only
//! with a TSIG key, see [`NamedBuilder::tsig`]); [`NamedServer::nsupdate`] runs the real
//! `nsupdate` against it. [`NamedServer::stop`] and [`NamedServer::start`] stop and restart
//! it on the same port with the same zone (updates so far are kept in the zone journal).
//!
//! Run as root, `named` is not given `-u`: it keeps running as root (with capabilities
//! dropped) and owns its temp dir, so it can write its journal there.
//!
//! A missing binary fails the test with the command that installs it.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What to install when `named` or `nsupdate` is missing.
pub const INSTALL: &str = "apt-get install bind9 bind9-dnsutils";

/// How long `named` may take to answer after it was started.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Options for a [`NamedServer`], made by [`NamedServer::builder`].
#[derive(Clone, Debug)]
pub struct NamedBuilder {
    zone: String,
    records: String,
    ttl: u32,
    minimal_responses: bool,
    tsig: Option<(String, String)>,
    broken_zones: Vec<String>,
}

impl NamedBuilder {
    /// Zone-file lines after the generated `$ORIGIN`, `$TTL`, SOA, NS and `ns` A records;
    /// names are relative to the zone unless they end with a dot. Each line is trimmed, so
    /// every line names its owner (`a.orders IN A 127.0.0.11`). Default: none.
    #[must_use]
    pub fn records(mut self, records: &str) -> Self {
        self.records = records
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .collect::<Vec<_>>()
            .join("\n");
        self
    }

    /// The zone's `$TTL`, also the SOA minimum (the negative-answer TTL). Default 1 s.
    #[must_use]
    pub fn ttl(mut self, ttl: u32) -> Self {
        self.ttl = ttl;
        self
    }

    /// `minimal-responses yes`: no additional section, so SRV targets need their own A/AAAA
    /// queries. Default off (bind sends target addresses in the additional section).
    #[must_use]
    pub fn minimal_responses(mut self, on: bool) -> Self {
        self.minimal_responses = on;
        self
    }

    /// Accept dynamic updates only when signed with this HMAC-SHA256 TSIG key (`secret` in
    /// base64). Default: updates from 127.0.0.1 unsigned.
    #[must_use]
    pub fn tsig(mut self, name: &str, secret: &str) -> Self {
        self.tsig = Some((name.to_owned(), secret.to_owned()));
        self
    }

    /// Also declare `zone` with an unloadable zone file: every query in it gets SERVFAIL.
    #[must_use]
    pub fn broken_zone(mut self, zone: &str) -> Self {
        self.broken_zones
            .push(zone.trim_end_matches('.').to_owned());
        self
    }

    /// Writes the files and starts `named`; panics (failing the test) if it is missing or
    /// does not answer within 20 s.
    pub fn launch(self) -> NamedServer {
        let named = find_binary("named");
        let mut last_log = String::new();
        // A free port can be taken between our check and named's bind: try a few.
        for _ in 0..3 {
            let dir = tempfile::Builder::new()
                .prefix("switchyard-named-")
                .tempdir()
                .expect("create temp dir for named");
            let port = crate::free_port();
            let mut server = NamedServer {
                named: named.clone(),
                dir,
                port,
                zone: self.zone.clone(),
                tsig: self.tsig.clone(),
                child: None,
            };
            server.write_files(&self);
            match server.try_start() {
                Ok(()) => return server,
                Err(log) if port_taken(&log) => last_log = log,
                Err(log) => panic!("named did not start; its log:\n{log}"),
            }
        }
        panic!("named did not start on a free port; its log:\n{last_log}");
    }
}

/// A running `named` serving one zone on 127.0.0.1. Killed on drop.
pub struct NamedServer {
    named: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    zone: String,
    tsig: Option<(String, String)>,
    child: Option<Child>,
}

impl NamedServer {
    /// Options for a server authoritative for `zone` (`"example.test"`).
    pub fn builder(zone: &str) -> NamedBuilder {
        NamedBuilder {
            zone: zone.trim_end_matches('.').to_owned(),
            records: String::new(),
            ttl: 1,
            minimal_responses: false,
            tsig: None,
            broken_zones: Vec::new(),
        }
    }

    /// Starts a server for `zone` with `records` (zone-file lines, see
    /// [`NamedBuilder::records`]) and the defaults.
    pub fn launch(zone: &str, records: &str) -> NamedServer {
        Self::builder(zone).records(records).launch()
    }

    /// Where it listens (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The zone it serves, without a trailing dot.
    pub fn zone(&self) -> &str {
        &self.zone
    }

    /// Its temp dir (zone file, journal, `named.conf`, `named.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// What `named` wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("named.log")).unwrap_or_default()
    }

    /// Runs `nsupdate` with `script` (e.g. `"update add x.example.test 1 A 127.0.0.9"`),
    /// after `server` and `zone` lines (and the TSIG key, if any); adds `send` unless the
    /// script has one. Panics with nsupdate's output if it fails.
    pub fn nsupdate(&self, script: &str) {
        let nsupdate = find_binary("nsupdate");
        let mut full = format!("server 127.0.0.1 {}\nzone {}\n", self.port, self.zone);
        full.push_str(script.trim_end());
        full.push('\n');
        if !script.lines().any(|line| line.trim() == "send") {
            full.push_str("send\n");
        }
        let mut command = Command::new(&nsupdate);
        // TCP (-v) so that a lost datagram cannot make an update silently late.
        command.args(["-v", "-t", "10"]);
        if let Some((name, secret)) = &self.tsig {
            command
                .arg("-y")
                .arg(format!("hmac-sha256:{name}:{secret}"));
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|err| panic!("run {}: {err} ({INSTALL})", nsupdate.display()));
        child
            .stdin
            .take()
            .expect("nsupdate stdin")
            .write_all(full.as_bytes())
            .expect("write nsupdate script");
        let output = child.wait_with_output().expect("wait for nsupdate");
        assert!(
            output.status.success(),
            "nsupdate failed ({}):\n{full}\nstdout: {}\nstderr: {}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Kills `named` (the port stops answering). Does nothing if it is stopped already.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts `named` again on the same port with the same files; panics if it does not
    /// answer within 20 s.
    pub fn start(&mut self) {
        if self.child.is_some() {
            return;
        }
        if let Err(log) = self.try_start() {
            panic!(
                "named did not restart on port {}; its log:\n{log}",
                self.port
            );
        }
    }

    fn conf_path(&self) -> PathBuf {
        self.dir.path().join("named.conf")
    }

    fn write_files(&self, options: &NamedBuilder) {
        let dir = self.dir.path().display().to_string();
        let zone = &self.zone;
        let ttl = options.ttl;
        let mut zone_file = format!(
            "$ORIGIN {zone}.\n$TTL {ttl}\n\
             @ IN SOA ns.{zone}. hostmaster.{zone}. ( 1 3600 600 86400 {ttl} )\n\
             @ IN NS ns.{zone}.\n\
             ns IN A 127.0.0.1\n"
        );
        zone_file.push_str(&options.records);
        zone_file.push('\n');
        std::fs::write(self.dir.path().join("zone.db"), zone_file).expect("write zone file");

        let mut conf = String::new();
        let allow_update = match &options.tsig {
            Some((name, secret)) => {
                let _ = writeln!(
                    conf,
                    "key \"{name}\" {{ algorithm hmac-sha256; secret \"{secret}\"; }};"
                );
                format!("key \"{name}\";")
            }
            None => "127.0.0.1;".to_owned(),
        };
        let minimal = if options.minimal_responses {
            "yes"
        } else {
            "no"
        };
        let _ = write!(
            conf,
            "options {{
  directory \"{dir}\";
  pid-file \"{dir}/named.pid\";
  lock-file \"{dir}/named.lock\";
  session-keyfile \"{dir}/session.key\";
  managed-keys-directory \"{dir}\";
  listen-on port {port} {{ 127.0.0.1; }};
  listen-on-v6 {{ none; }};
  recursion no;
  dnssec-validation no;
  notify no;
  minimal-responses {minimal};
}};
controls {{ }};
zone \"{zone}\" {{ type primary; file \"{dir}/zone.db\"; allow-update {{ {allow_update} }}; }};
",
            port = self.port,
        );
        for (i, broken) in options.broken_zones.iter().enumerate() {
            let file = format!("{dir}/broken{i}.db");
            std::fs::write(&file, "this is not a zone file\n").expect("write broken zone");
            let _ = writeln!(
                conf,
                "zone \"{broken}\" {{ type primary; file \"{file}\"; }};"
            );
        }
        std::fs::write(self.conf_path(), conf).expect("write named.conf");
    }

    /// Starts `named` and waits until it answers SOA for the zone over UDP and accepts TCP.
    /// On failure, kills it and returns its log.
    fn try_start(&mut self) -> Result<(), String> {
        let log_start = self.log().len();
        let zone_failed = format!("zone {}/IN: not loaded due to errors", self.zone);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("named.log"))
            .expect("open named.log");
        let child = Command::new(&self.named)
            .arg("-g")
            .args(["-n", "1"])
            .arg("-c")
            .arg(self.conf_path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|err| panic!("run {}: {err} ({INSTALL})", self.named.display()));
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(format!("named exited ({status}):\n{}", self.log()));
            }
            if soa_answers(self.addr(), &self.zone) && TcpStream::connect(self.addr()).is_ok() {
                return Ok(());
            }
            let log = self.log();
            let this_run = log.get(log_start..).unwrap_or_default();
            if this_run.contains(&zone_failed) || port_taken(this_run) {
                self.stop();
                return Err(this_run.to_owned());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.stop();
        Err(format!(
            "no answer within {START_TIMEOUT:?}:\n{}",
            self.log()
        ))
    }
}

impl Drop for NamedServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether `named`'s log says its port was taken.
fn port_taken(log: &str) -> bool {
    log.contains("address in use") || log.contains("could not listen")
}

/// Finds `name` on PATH or in the sbin directories (named lives in /usr/sbin, which is
/// not on every user's PATH); panics with the install command if it is missing.
fn find_binary(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| panic!("`{name}` not found: install it with `{INSTALL}`"))
}

/// Whether `addr` answers a non-recursive SOA query for `zone` with NOERROR (so the zone is
/// loaded), over UDP, within 300 ms.
fn soa_answers(addr: SocketAddr, zone: &str) -> bool {
    let Ok(socket) = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)) else {
        return false;
    };
    let _ = socket.set_read_timeout(Some(Duration::from_millis(300)));
    // Header: id 0x5359, flags 0 (query, no recursion), one question.
    let mut query = vec![0x53, 0x59, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in zone.split('.').filter(|label| !label.is_empty()) {
        query.push(label.len() as u8);
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 6, 0, 1]); // root, type SOA, class IN
    if socket.send_to(&query, addr).is_err() {
        return false;
    }
    let mut buf = [0u8; 1500];
    match socket.recv_from(&mut buf) {
        Ok((len, _)) if len >= 12 => {
            buf[0..2] == [0x53, 0x59] && buf[2] & 0x80 != 0 && buf[3] & 0x0f == 0 && buf[7] > 0
        }
        _ => false,
    }
}
