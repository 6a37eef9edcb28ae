//! The JSON access log: one line per request on stdout (fields: docs/observability.md).
//!
//! Lines are built when a response body finishes (so `bytes_out` and `duration_ms` are
//! final), formatted straight into a per-thread buffer, and written by a dedicated writer
//! thread, so the request path never waits on stdout and allocates nothing per line.
//!
//! The buffers are shards, one per worker thread (a thread keeps the shard it first drew):
//! appending locks the shard's mutex, which only the writer also takes, once per batch, to
//! swap the buffer for an empty one. The first line into an empty shard wakes the writer;
//! it then sleeps [`BATCH_WINDOW`] so that under load one wake-up and one `write` cover
//! hundreds of lines. (The previous design sent each line as a `String` through a channel:
//! an allocation per line, freed on the writer thread, and a channel operation per request.)
//!
//! When the output cannot keep up (a blocked stdout pipe), a shard holds at most
//! [`MAX_SHARD_BYTES`]; further lines are dropped and counted, and the writer reports the
//! count on stderr, rather than the gateway's memory growing without bound.

use std::cell::Cell;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant, SystemTime};

use http::uri::PathAndQuery;
use http::{HeaderValue, Method};

use crate::body::Completion;
use crate::metrics::RouteMetrics;

/// How long the writer lets lines accumulate after the first of a batch: the most a line
/// waits before it is written.
pub const BATCH_WINDOW: Duration = Duration::from_millis(20);

/// The most one shard buffers while the output is behind; lines past it are dropped.
pub const MAX_SHARD_BYTES: usize = 8 * 1024 * 1024;

/// The longest the writer sleeps without looking at the shards.
const PARK_LIMIT: Duration = Duration::from_millis(500);

/// Shards: enough that worker threads rarely share one.
const SHARDS: usize = 16;

/// A handle to the access-log writer. Cloning is cheap; the writer thread writes what is
/// left and ends when the last handle is dropped.
#[derive(Clone, Debug)]
pub struct AccessLog {
    handle: Arc<Handle>,
}

/// Owned by the handles: dropping the last one stops the writer.
#[derive(Debug)]
struct Handle {
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Debug)]
struct Shared {
    shards: [Shard; SHARDS],
    writer: Thread,
    closed: AtomicBool,
    dropped: AtomicU64,
}

/// One buffer of pending lines, on its own cache line.
#[derive(Debug, Default)]
#[repr(align(64))]
struct Shard {
    lines: Mutex<Vec<u8>>,
}

thread_local! {
    /// The shard this thread appends to.
    static SHARD: Cell<usize> = Cell::new(next_shard());
}

fn next_shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS
}

fn lock(shard: &Shard) -> MutexGuard<'_, Vec<u8>> {
    // A panic while appending leaves at worst a partial line: keep logging.
    shard.lines.lock().unwrap_or_else(|e| e.into_inner())
}

impl AccessLog {
    /// Starts the writer thread, writing to stdout.
    pub fn stdout() -> Self {
        Self::to_writer(std::io::stdout())
    }

    /// Starts the writer thread on any writer (tests use a buffer).
    pub fn to_writer(out: impl Write + Send + 'static) -> Self {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Arc<Shared>>();
        let writer = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || {
                let Ok(shared) = ready_rx.recv() else { return };
                write_batches(&shared, out);
            })
            .expect("spawn the access-log thread");
        let shared = Arc::new(Shared {
            shards: Default::default(),
            writer: writer.thread().clone(),
            closed: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
        });
        ready_tx
            .send(shared.clone())
            .expect("the access-log thread waits for its state");
        AccessLog {
            handle: Arc::new(Handle {
                shared,
                writer: Mutex::new(Some(writer)),
            }),
        }
    }

    /// Writes every pending line now and waits for the writer to finish (at shutdown).
    /// Lines logged afterwards are dropped.
    pub fn close(&self) {
        self.handle.close();
    }

    /// Appends one line, built by `fill` into the thread's shard.
    fn append(&self, fill: impl FnOnce(&mut Vec<u8>)) {
        let shared = &self.handle.shared;
        let shard = &shared.shards[SHARD.with(Cell::get)];
        let mut lines = lock(shard);
        if lines.len() >= MAX_SHARD_BYTES || shared.closed.load(Ordering::Relaxed) {
            drop(lines);
            shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let wake = lines.is_empty();
        fill(&mut lines);
        drop(lines);
        if wake {
            shared.writer.unpark();
        }
    }
}

impl Handle {
    fn close(&self) {
        self.shared.closed.store(true, Ordering::Relaxed);
        self.shared.writer.unpark();
        let writer = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(writer) = writer {
            let _ = writer.join();
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.close();
    }
}

/// The writer thread: sleeps until a line arrives, lets the batch fill, writes every shard.
fn write_batches(shared: &Shared, out: impl Write) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    let mut spare = Vec::new();
    loop {
        if !shared.closed.load(Ordering::Relaxed) {
            // Woken by the first line of a batch or by close. The timeout is a safety net:
            // anything else on this thread that parks (a blocking `out`) may eat a wake-up.
            std::thread::park_timeout(PARK_LIMIT);
        }
        let closing = shared.closed.load(Ordering::Relaxed);
        if !closing {
            std::thread::sleep(BATCH_WINDOW);
        }
        for shard in &shared.shards {
            {
                let mut lines = lock(shard);
                if lines.is_empty() {
                    // Swapping anyway would hand the spare's capacity to every idle shard.
                    continue;
                }
                std::mem::swap(&mut *lines, &mut spare);
            }
            let _ = out.write_all(&spare);
            spare.clear();
        }
        let _ = out.flush();
        let dropped = shared.dropped.swap(0, Ordering::Relaxed);
        if dropped != 0 {
            tracing::warn!(
                dropped,
                "access log: lines dropped, the output is not keeping up"
            );
        }
        if closing {
            return;
        }
    }
}

/// What a request's log line needs, gathered as the request goes through.
pub struct Entry {
    /// The log to write to.
    pub log: AccessLog,
    /// Wall-clock time the request arrived.
    pub ts: SystemTime,
    /// Monotonic time the request arrived.
    pub start: Instant,
    /// The request id.
    pub request_id: HeaderValue,
    /// The method.
    pub method: Method,
    /// The `Host` header.
    pub host: Option<HeaderValue>,
    /// The path (and query) as received.
    pub path: PathAndQuery,
    /// The response status.
    pub status: u16,
    /// The route's metrics (its name and upstream), when a route matched.
    pub route: Option<Arc<RouteMetrics>>,
    /// The endpoint that served, if any.
    pub endpoint: Option<SocketAddr>,
    /// The client's IP (the connection's, as text).
    pub client_ip: HeaderValue,
    /// A gRPC call's final status (`grpc_status` in the line, only for gRPC calls).
    pub grpc_status: Option<u16>,
    /// The request's trace and SERVER span ids, when tracing is on (`trace_id`, `span_id`:
    /// present only then).
    pub trace: Option<crate::trace::TraceIds>,
}

impl Completion for Entry {
    fn complete(self: Box<Self>, bytes: u64) {
        let micros = self.start.elapsed().as_micros() as u64;
        self.log.append(|line| self.write_line(line, micros, bytes));
    }
}

impl Entry {
    /// Appends the JSON line, written by hand: no map, no allocation, no `fmt` machinery.
    fn write_line(&self, line: &mut Vec<u8>, micros: u64, bytes: u64) {
        let (route, upstream) = match &self.route {
            Some(m) => (&*m.route, &*m.upstream),
            None => ("", ""),
        };
        line.reserve(320 + self.path.as_str().len());
        line.extend_from_slice(b"{\"ts\":\"");
        write_rfc3339(line, self.ts);
        line.extend_from_slice(b"\",\"request_id\":");
        json_str(line, self.request_id.to_str().unwrap_or(""));
        line.extend_from_slice(b",\"method\":");
        json_str(line, self.method.as_str());
        line.extend_from_slice(b",\"host\":");
        match self.host.as_ref().and_then(|h| h.to_str().ok()) {
            Some(host) => json_str(line, host),
            None => line.extend_from_slice(b"null"),
        }
        line.extend_from_slice(b",\"path\":");
        json_str(line, self.path.as_str());
        line.extend_from_slice(b",\"status\":");
        write_u64(line, u64::from(self.status));
        line.extend_from_slice(b",\"route\":");
        json_str(line, route);
        line.extend_from_slice(b",\"upstream\":");
        json_str(line, upstream);
        line.extend_from_slice(b",\"endpoint\":");
        match self.endpoint {
            Some(endpoint) => {
                line.push(b'"');
                write_socket_addr(line, endpoint);
                line.push(b'"');
            }
            None => line.extend_from_slice(b"null"),
        }
        line.extend_from_slice(b",\"duration_ms\":");
        write_u64(line, micros / 1000);
        line.push(b'.');
        write_three(line, (micros % 1000) as u32);
        line.extend_from_slice(b",\"bytes_out\":");
        write_u64(line, bytes);
        line.extend_from_slice(b",\"client\":");
        json_str(line, self.client_ip.to_str().unwrap_or(""));
        if let Some(code) = self.grpc_status {
            line.extend_from_slice(b",\"grpc_status\":");
            write_u64(line, u64::from(code));
        }
        if let Some(trace) = &self.trace {
            let _ = write!(
                line,
                ",\"trace_id\":\"{:032x}\",\"span_id\":\"{:016x}\"",
                trace.trace_id, trace.span_id
            );
        }
        line.extend_from_slice(b"}\n");
    }
}

/// Appends `value` as a JSON string (quoted, escaped).
fn json_str(out: &mut Vec<u8>, value: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = value.as_bytes();
    // Almost always nothing to escape: one test over all the bytes (which vectorises),
    // instead of a match per byte.
    if bytes.iter().all(|&b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let mut clean = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[clean..i]);
        clean = i + 1;
        if escape.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.extend_from_slice(escape);
        }
    }
    out.extend_from_slice(&bytes[clean..]);
    out.push(b'"');
}

/// Appends `n` in decimal.
fn write_u64(out: &mut Vec<u8>, n: u64) {
    write_padded(out, n, 1);
}

/// Appends `n` in decimal, zero-padded to `width` digits (more if `n` needs them, at most
/// 20). The digits are made right to left in a stack buffer, then copied in one go.
fn write_padded(out: &mut Vec<u8>, n: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let mut at = digits.len();
    let mut rest = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at.min(digits.len() - width.min(digits.len()))..]);
}

/// Appends a number below 1,000 as exactly three digits.
fn write_three(out: &mut Vec<u8>, n: u32) {
    out.extend_from_slice(&[
        b'0' + (n / 100 % 10) as u8,
        b'0' + (n / 10 % 10) as u8,
        b'0' + (n % 10) as u8,
    ]);
}

/// Appends `address` as `Display` would (`1.2.3.4:80`, `[::1]:80`); IPv4 without `fmt`.
fn write_socket_addr(out: &mut Vec<u8>, address: SocketAddr) {
    match address {
        SocketAddr::V4(v4) => {
            for (i, octet) in v4.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                write_u64(out, u64::from(octet));
            }
            out.push(b':');
            write_u64(out, u64::from(v4.port()));
        }
        SocketAddr::V6(_) => {
            let _ = write!(out, "{address}");
        }
    }
}

/// RFC 3339 UTC time with milliseconds (`2023-11-14T22:13:20.123Z`), without a date
/// library. (Not an HTTP-date: that is `httpdate`'s `fmt_http_date`.)
pub fn rfc3339(time: SystemTime) -> String {
    let mut out = Vec::with_capacity(24);
    write_rfc3339(&mut out, time);
    String::from_utf8(out).expect("digits and punctuation")
}

thread_local! {
    /// The second last formatted on this thread and its text up to the seconds
    /// (`2023-11-14T22:13:20`): a log line only writes the milliseconds itself.
    static SECOND: std::cell::RefCell<(u64, Vec<u8>)> =
        const { std::cell::RefCell::new((u64::MAX, Vec::new())) };
}

/// Appends [`rfc3339`]'s text to `out`.
fn write_rfc3339(out: &mut Vec<u8>, time: SystemTime) {
    let since = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs();
    SECOND.with(|second| {
        let mut second = second.borrow_mut();
        if second.0 != secs {
            second.1.clear();
            write_date_time(&mut second.1, secs);
            second.0 = secs;
        }
        out.extend_from_slice(&second.1);
    });
    out.push(b'.');
    write_three(out, since.subsec_millis());
    out.push(b'Z');
}

/// Appends `secs` since the epoch as `YYYY-MM-DDTHH:MM:SS`, without a date library.
fn write_date_time(out: &mut Vec<u8>, secs: u64) {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    write_padded(out, year.max(0) as u64, 4);
    out.push(b'-');
    write_padded(out, month as u64, 2);
    out.push(b'-');
    write_padded(out, d as u64, 2);
    out.push(b'T');
    write_padded(out, h, 2);
    out.push(b':');
    write_padded(out, m, 2);
    out.push(b':');
    write_padded(out, s, 2);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer the test can read back.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn entry(log: &AccessLog, path: &'static str) -> Box<Entry> {
        Box::new(Entry {
            log: log.clone(),
            ts: SystemTime::UNIX_EPOCH,
            start: Instant::now(),
            request_id: HeaderValue::from_static("abc"),
            method: Method::GET,
            host: None,
            path: PathAndQuery::from_static(path),
            status: 200,
            route: None,
            endpoint: Some("127.0.0.1:8080".parse().unwrap()),
            client_ip: HeaderValue::from_static("::1"),
            grpc_status: None,
            trace: None,
        })
    }

    #[test]
    fn lines_are_valid_json_with_escapes() {
        let sink = Sink::default();
        let log = AccessLog::to_writer(sink.clone());
        let mut e = entry(&log, "/");
        e.host = Some(HeaderValue::from_static("a.example\"x"));
        e.endpoint = Some("[::1]:8080".parse().unwrap());
        e.request_id = HeaderValue::from_bytes(b"id\xff").unwrap();
        e.complete(42);
        let mut e = entry(&log, "/b?q=1");
        e.endpoint = None;
        e.status = 503;
        e.trace = Some(crate::trace::TraceIds {
            trace_id: opentelemetry::trace::TraceId::from_hex("0af7651916cd43dd8448eb211c80319c")
                .unwrap(),
            span_id: opentelemetry::trace::SpanId::from_hex("00f067aa0ba902b7").unwrap(),
        });
        e.complete(0);
        log.close();
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        let v = &lines[0];
        assert_eq!(v["host"], "a.example\"x");
        assert_eq!(v["request_id"], "", "obs-text is not a valid header string");
        assert_eq!(v["bytes_out"], 42);
        assert_eq!(v["status"], 200);
        assert_eq!(v["endpoint"], "[::1]:8080");
        assert_eq!(v["client"], "::1");
        assert_eq!(v["route"], "");
        assert_eq!(v["ts"], "1970-01-01T00:00:00.000Z");
        assert!(v["duration_ms"].as_f64().unwrap() >= 0.0);
        assert_eq!(lines[1]["host"], serde_json::Value::Null);
        assert_eq!(lines[1]["path"], "/b?q=1");
        assert_eq!(lines[1]["endpoint"], serde_json::Value::Null);
        assert_eq!(lines[1]["status"], 503);
        assert_eq!(lines[1]["trace_id"], "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(lines[1]["span_id"], "00f067aa0ba902b7");
        assert!(v.get("trace_id").is_none(), "no trace, no trace_id: {v}");
    }

    #[test]
    fn json_strings_escape_quotes_backslashes_and_controls() {
        let mut out = Vec::new();
        json_str(&mut out, "a\"b\\c\u{1}\n\tü");
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text, r#""a\"b\\c\u0001\n\tü""#);
        assert_eq!(
            serde_json::from_str::<String>(&text).unwrap(),
            "a\"b\\c\u{1}\n\tü"
        );
    }

    #[test]
    fn numbers_and_addresses_are_written_like_display() {
        for n in [0, 7, 10, 999, 1000, u64::MAX] {
            let mut out = Vec::new();
            write_u64(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
        let mut out = Vec::new();
        write_padded(&mut out, 7, 3);
        write_padded(&mut out, 12345, 3);
        assert_eq!(out, b"00712345");
        for address in ["10.0.0.255:1", "127.0.0.1:65535", "[2001:db8::1]:443"] {
            let address: SocketAddr = address.parse().unwrap();
            let mut out = Vec::new();
            write_socket_addr(&mut out, address);
            assert_eq!(out, address.to_string().as_bytes());
        }
    }

    #[test]
    fn every_line_from_many_threads_is_written_once() {
        let sink = Sink::default();
        let log = AccessLog::to_writer(sink.clone());
        std::thread::scope(|scope| {
            for _ in 0..8 {
                let log = log.clone();
                scope.spawn(move || {
                    for _ in 0..2000 {
                        entry(&log, "/many").complete(1);
                    }
                });
            }
        });
        // The writer wakes on its own: the lines arrive without a close.
        let deadline = Instant::now() + Duration::from_secs(20);
        let count = || sink.0.lock().unwrap().split(|&b| b == b'\n').count() - 1;
        while count() < 16_000 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(count(), 16_000);
        drop(log);
        let text = sink.0.lock().unwrap().clone();
        for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let v: serde_json::Value = serde_json::from_slice(line).unwrap();
            assert_eq!(v["path"], "/many");
        }
    }

    /// A writer that blocks until released, like a stdout pipe nobody reads.
    struct Stuck {
        release: std::sync::mpsc::Receiver<()>,
        written: Sink,
    }

    impl Write for Stuck {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let _ = self.release.recv();
            self.written.write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stuck_output_drops_lines_instead_of_growing() {
        let (release, rx) = std::sync::mpsc::channel();
        let written = Sink::default();
        let log = AccessLog::to_writer(Stuck {
            release: rx,
            written: written.clone(),
        });
        let line_bytes = {
            let mut line = Vec::new();
            entry(&log, "/stuck").write_line(&mut line, 1, 1);
            line.len()
        };
        // Three times what a shard may hold: the writer takes at most one shard's worth
        // before it blocks and the shard then fills to its cap, so a third at least is dropped.
        let lines = 3 * MAX_SHARD_BYTES / line_bytes;
        for _ in 0..lines {
            entry(&log, "/stuck").complete(1);
        }
        drop(release); // unblocks every write from now on
        log.close();
        let written = written
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        assert!(
            written > 0,
            "the first batch and the capped shard are written"
        );
        assert!(
            written * 3 <= lines * 2 + 3,
            "lines past the cap were dropped: {written} of {lines} written"
        );
    }

    #[test]
    fn rfc3339_dates() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(&rfc3339(leap)[..10], "2000-02-29");
        // The same second again (its text cached), then the next one.
        let later = leap + Duration::from_millis(7);
        assert_eq!(rfc3339(later), "2000-02-29T00:00:00.007Z");
        let next = leap + Duration::from_millis(1_999);
        assert_eq!(rfc3339(next), "2000-02-29T00:00:01.999Z");
    }
}
