//! An open-loop, constant-rate HTTP/1.1 load generator for the latency run of
//! `bench/run.sh` (the role wrk2 plays elsewhere; wrk2 is not packaged in Debian).
//!
//! Why not plain `wrk`: wrk is closed-loop. A connection sends its next request only when
//! the previous answer is in, and it times a request from when it was *sent*, so a stall
//! delays the requests that should have gone out meanwhile and hides them from the
//! percentiles ("coordinated omission"). A Lua `delay()` only paces the gaps between
//! requests; it does not fix that.
//!
//! How this one works: `--connections` keep-alive connections, each on its own thread with
//! blocking sockets, each owning an evenly staggered share of a fixed schedule (request *k*
//! of connection *i* is due at `start + (k + i / C) * C / rate`). A request's latency is
//! counted from its due time when the connection was still busy with an earlier request at
//! that time (the system under test made it late), and from its actual send time when the
//! generator itself woke late from its sleep (timer slack is not the proxy's fault).
//! Threads with blocking I/O instead of an async runtime because a timer wheel with 1 ms
//! ticks would add up to 1 ms of schedule error; `nanosleep` wakes within tens of µs.
//!
//! Std only, so `bench/run.sh` builds it with a bare `rustc -O` in seconds.
//!
//! ```text
//! loadgen --addr 127.0.0.1:8080 [--path /] --rate 5000 [--connections 16]
//!         [--duration 10s] [--warmup 1s]
//! ```
//!
//! Prints one line of `key=value` pairs: `requests`, `ok` (2xx/3xx), `non2xx`, `errors`
//! (connect/read/parse failures; the connection is reopened), `rate` (completed per second
//! in the measured window), `late` (requests charged from their due time because the
//! connection was busy), `p50_us`, `p90_us`, `p99_us`, `p999_us`, `max_us`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Command-line settings.
struct Settings {
    addr: SocketAddr,
    path: String,
    rate: f64,
    connections: usize,
    duration: Duration,
    warmup: Duration,
}

/// What one connection's thread measured.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    ok: u64,
    non2xx: u64,
    errors: u64,
    late: u64,
}

fn main() -> ExitCode {
    let settings = match parse_args(std::env::args().skip(1).collect()) {
        Ok(s) => s,
        Err(message) => {
            eprintln!("loadgen: {message}");
            eprintln!(
                "usage: loadgen --addr HOST:PORT [--path /] --rate N [--connections 16] [--duration 10s] [--warmup 1s]"
            );
            return ExitCode::from(2);
        }
    };
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: switchyard-loadgen\r\n\r\n",
        settings.path, settings.addr
    );
    let interval = Duration::from_secs_f64(settings.connections as f64 / settings.rate);
    let start = Instant::now() + Duration::from_millis(50);
    let measure_from = start + settings.warmup;
    let end = measure_from + settings.duration;
    let threads: Vec<_> = (0..settings.connections)
        .map(|i| {
            let offset = interval.mul_f64(i as f64 / settings.connections as f64);
            let request = request.clone();
            let addr = settings.addr;
            std::thread::spawn(move || {
                run_connection(addr, &request, start + offset, interval, measure_from, end)
            })
        })
        .collect();
    let mut total = Tally::default();
    for thread in threads {
        let Ok(tally) = thread.join() else {
            eprintln!("loadgen: a connection thread panicked");
            return ExitCode::from(1);
        };
        total.latencies_us.extend(tally.latencies_us);
        total.ok += tally.ok;
        total.non2xx += tally.non2xx;
        total.errors += tally.errors;
        total.late += tally.late;
    }
    total.latencies_us.sort_unstable();
    let n = total.latencies_us.len();
    let pct = |p: f64| -> u32 {
        if n == 0 {
            return 0;
        }
        let rank = ((p / 100.0) * n as f64).ceil() as usize;
        total.latencies_us[rank.clamp(1, n) - 1]
    };
    println!(
        "LOADGEN requests={} ok={} non2xx={} errors={} rate={:.1} late={} p50_us={} p90_us={} p99_us={} p999_us={} max_us={}",
        n,
        total.ok,
        total.non2xx,
        total.errors,
        n as f64 / settings.duration.as_secs_f64(),
        total.late,
        pct(50.0),
        pct(90.0),
        pct(99.0),
        pct(99.9),
        total.latencies_us.last().copied().unwrap_or(0),
    );
    if total.ok == 0 {
        eprintln!("loadgen: no successful response");
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

/// Runs one connection's share of the schedule: due times `first`, `first + interval`, ...
/// until `end`; records requests due at or after `measure_from`.
fn run_connection(
    addr: SocketAddr,
    request: &str,
    first: Instant,
    interval: Duration,
    measure_from: Instant,
    end: Instant,
) -> Tally {
    let mut tally = Tally::default();
    let mut conn: Option<Conn> = None;
    let mut due = first;
    while due < end {
        let now = Instant::now();
        let base = if now < due {
            std::thread::sleep(due - now);
            Instant::now()
        } else {
            if due >= measure_from {
                tally.late += 1;
            }
            due
        };
        let result = match conn.as_mut() {
            Some(c) => c.exchange(request),
            None => Conn::open(addr).and_then(|c| {
                let c = conn.insert(c);
                c.exchange(request)
            }),
        };
        let done = Instant::now();
        match result {
            Ok((status, keep_alive)) => {
                if due >= measure_from {
                    let us = done.duration_since(base).as_micros();
                    tally
                        .latencies_us
                        .push(u32::try_from(us).unwrap_or(u32::MAX));
                    if (200..400).contains(&status) {
                        tally.ok += 1;
                    } else {
                        tally.non2xx += 1;
                    }
                }
                if !keep_alive {
                    conn = None;
                }
            }
            Err(_) => {
                if due >= measure_from {
                    tally.errors += 1;
                }
                conn = None;
                // Do not spin on a refused connection: wait for the next slot.
            }
        }
        due += interval;
    }
    tally
}

/// One keep-alive connection.
struct Conn {
    reader: BufReader<TcpStream>,
    line: String,
}

impl Conn {
    fn open(addr: SocketAddr) -> std::io::Result<Conn> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(Conn {
            reader: BufReader::with_capacity(16 * 1024, stream),
            line: String::new(),
        })
    }

    /// Sends `request` and reads the whole response. Returns the status and whether the
    /// connection stays open.
    fn exchange(&mut self, request: &str) -> std::io::Result<(u16, bool)> {
        self.reader.get_mut().write_all(request.as_bytes())?;
        let status = {
            self.read_line()?;
            let mut parts = self.line.split_ascii_whitespace();
            let version = parts.next().unwrap_or("");
            let status = parts.next().and_then(|s| s.parse::<u16>().ok());
            match status {
                Some(s) if version.starts_with("HTTP/1.") => s,
                _ => return Err(bad(format!("bad status line {:?}", self.line))),
            }
        };
        let mut length: Option<u64> = None;
        let mut chunked = false;
        let mut keep_alive = true;
        loop {
            self.read_line()?;
            let line = self.line.trim_end();
            if line.is_empty() {
                break;
            }
            let Some((name, value)) = line.split_once(':') else {
                return Err(bad(format!("bad header {line:?}")));
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(
                    value
                        .parse()
                        .map_err(|_| bad("bad content-length".into()))?,
                );
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.to_ascii_lowercase().contains("chunked");
            } else if name.eq_ignore_ascii_case("connection") {
                keep_alive = !value.eq_ignore_ascii_case("close");
            }
        }
        if chunked {
            loop {
                self.read_line()?;
                let size_text = self.line.trim_end().split(';').next().unwrap_or("");
                let size = u64::from_str_radix(size_text.trim(), 16)
                    .map_err(|_| bad("bad chunk size".into()))?;
                if size == 0 {
                    // Trailers, then the empty line.
                    loop {
                        self.read_line()?;
                        if self.line.trim_end().is_empty() {
                            break;
                        }
                    }
                    break;
                }
                self.skip(size + 2)?;
            }
        } else if let Some(length) = length {
            self.skip(length)?;
        } else if status >= 200 && status != 204 && status != 304 {
            // Delimited by close: read to the end.
            std::io::copy(&mut self.reader, &mut std::io::sink())?;
            keep_alive = false;
        }
        Ok((status, keep_alive))
    }

    fn read_line(&mut self) -> std::io::Result<()> {
        self.line.clear();
        if self.reader.read_line(&mut self.line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        Ok(())
    }

    fn skip(&mut self, n: u64) -> std::io::Result<()> {
        let copied = std::io::copy(&mut (&mut self.reader).take(n), &mut std::io::sink())?;
        if copied < n {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "short body",
            ));
        }
        Ok(())
    }
}

fn bad(message: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message)
}

fn parse_args(args: Vec<String>) -> Result<Settings, String> {
    let mut addr = None;
    let mut path = "/".to_owned();
    let mut rate = None;
    let mut connections = 16usize;
    let mut duration = Duration::from_secs(10);
    let mut warmup = Duration::from_secs(1);
    let mut args = args.into_iter();
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--addr" => addr = Some(value()?.parse().map_err(|e| format!("--addr: {e}"))?),
            "--path" => path = value()?,
            "--rate" => {
                rate = Some(
                    value()?
                        .parse::<f64>()
                        .map_err(|e| format!("--rate: {e}"))?,
                )
            }
            "--connections" => {
                connections = value()?
                    .parse()
                    .map_err(|e| format!("--connections: {e}"))?
            }
            "--duration" => duration = parse_duration(&value()?)?,
            "--warmup" => warmup = parse_duration(&value()?)?,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let rate = rate.ok_or("--rate is required")?;
    if !rate.is_finite() || rate <= 0.0 || connections == 0 {
        return Err("--rate and --connections must be positive".into());
    }
    Ok(Settings {
        addr: addr.ok_or("--addr is required")?,
        path,
        rate,
        connections,
        duration,
        warmup,
    })
}

/// `10s`, `500ms`, `2m`, or a bare number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = match text.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: f64 = number
        .parse()
        .map_err(|_| format!("bad duration {text:?}"))?;
    let seconds = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("bad duration unit in {text:?}")),
    };
    Ok(Duration::from_secs_f64(seconds))
}
