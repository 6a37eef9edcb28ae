//! The JSON access log: one line per request on stdout (DESIGN.md §4).
//!
//! Lines are built when a response body finishes (so `bytes_out` and `duration_ms` are
//! final) and handed to a dedicated writer thread through a channel, so the request path
//! never waits on stdout. The writer batches lines and flushes when the channel is empty.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::{HeaderValue, Method};

use crate::body::Completion;
use crate::metrics::RouteMetrics;

/// A handle to the access-log writer. Cloning is cheap; the writer thread ends when the
/// last handle is dropped.
#[derive(Clone, Debug)]
pub struct AccessLog {
    tx: mpsc::Sender<String>,
}

impl AccessLog {
    /// Starts the writer thread, writing to stdout.
    pub fn stdout() -> Self {
        Self::to_writer(std::io::stdout())
    }

    /// Starts the writer thread on any writer (tests use a buffer).
    pub fn to_writer(out: impl Write + Send + 'static) -> Self {
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || {
                let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
                while let Ok(line) = rx.recv() {
                    let _ = out.write_all(line.as_bytes());
                    while let Ok(line) = rx.try_recv() {
                        let _ = out.write_all(line.as_bytes());
                    }
                    let _ = out.flush();
                }
            })
            .expect("spawn the access-log thread");
        AccessLog { tx }
    }

    fn write(&self, line: String) {
        let _ = self.tx.send(line);
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
    pub path: String,
    /// The response status.
    pub status: u16,
    /// The route's metrics (its name and upstream), when a route matched.
    pub route: Option<Arc<RouteMetrics>>,
    /// The endpoint that served, if any.
    pub endpoint: Option<SocketAddr>,
    /// The client address.
    pub client: SocketAddr,
}

impl Completion for Entry {
    fn complete(self: Box<Self>, bytes: u64) {
        let (route, upstream) = match &self.route {
            Some(m) => (m.route.as_str(), m.upstream.as_str()),
            None => ("", ""),
        };
        let ts = httpdate_rfc3339(self.ts);
        let line = serde_json::json!({
            "ts": ts,
            "request_id": self.request_id.to_str().unwrap_or(""),
            "client": self.client.ip().to_string(),
            "method": self.method.as_str(),
            "host": self.host.as_ref().and_then(|h| h.to_str().ok()),
            "path": self.path,
            "status": self.status,
            "route": route,
            "upstream": upstream,
            "endpoint": self.endpoint.map(|e| e.to_string()),
            "duration_ms": (self.start.elapsed().as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0,
            "bytes_out": bytes,
        });
        let mut line = line.to_string();
        line.push('\n');
        self.log.write(line);
    }
}

/// RFC 3339 UTC time with milliseconds, without a date library.
pub fn httpdate_rfc3339(time: SystemTime) -> String {
    let since = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs();
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
    format!(
        "{year:04}-{month:02}-{d:02}T{h:02}:{m:02}:{s:02}.{:03}Z",
        since.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_dates() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(httpdate_rfc3339(t), "2023-11-14T22:13:20.123Z");
        assert_eq!(
            httpdate_rfc3339(SystemTime::UNIX_EPOCH),
            "1970-01-01T00:00:00.000Z"
        );
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(&httpdate_rfc3339(leap)[..10], "2000-02-29");
    }
}
