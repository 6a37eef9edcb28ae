//! The listener of a double: serves HTTP/1.1 on its own Tokio runtime so it answers while a
//! test blocks its own thread; can stop (listener closed, every connection dropped, as when
//! the real server dies) and resume on the same port with its state kept; counts requests
//! by path.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::pin::Pin;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::runtime::Runtime;
use tokio::task::{AbortHandle, JoinSet};

/// A response future.
pub type Reply = Pin<Box<dyn Future<Output = Response<Full<Bytes>>> + Send>>;
/// What answers each request.
pub type Handler = Arc<dyn Fn(Request<Incoming>) -> Reply + Send + Sync>;

/// A listener that can stop and resume.
pub struct Server {
    runtime: Option<Runtime>,
    handler: Handler,
    listen: SocketAddr,
    running: Mutex<Option<(AbortHandle, mpsc::Receiver<()>)>>,
    counts: Arc<Mutex<HashMap<String, u64>>>,
}

/// Sends on drop: the accept loop, and with it every connection, is gone.
struct DropSignal(mpsc::Sender<()>);

impl Drop for DropSignal {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

impl Server {
    /// Binds `listen` and serves with `handler`.
    pub fn start(name: &str, listen: SocketAddr, handler: Handler) -> io::Result<Server> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(name)
            .enable_all()
            .build()?;
        let listener = StdListener::bind(listen)?;
        let server = Server {
            runtime: Some(runtime),
            handler,
            listen: listener.local_addr()?,
            running: Mutex::new(None),
            counts: Arc::default(),
        };
        server.serve(listener)?;
        Ok(server)
    }

    /// The runtime, to spawn background tasks on.
    pub fn runtime(&self) -> &Runtime {
        self.runtime.as_ref().expect("runtime lives until drop")
    }

    fn serve(&self, listener: StdListener) -> io::Result<()> {
        listener.set_nonblocking(true)?;
        let handler = self.handler.clone();
        let counts = self.counts.clone();
        let (tx, gone) = mpsc::channel();
        let task = self
            .runtime()
            .spawn(async move {
                let _signal = DropSignal(tx);
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    return;
                };
                let mut connections = JoinSet::new();
                loop {
                    tokio::select! {
                        accepted = listener.accept() => {
                            let Ok((stream, _)) = accepted else {
                                tokio::time::sleep(Duration::from_millis(10)).await;
                                continue;
                            };
                            let _ = stream.set_nodelay(true);
                            let (handler, counts) = (handler.clone(), counts.clone());
                            connections.spawn(async move {
                                let service = service_fn(move |request: Request<Incoming>| {
                                    *counts.lock().unwrap_or_else(|p| p.into_inner())
                                        .entry(request.uri().path().to_owned()).or_default() += 1;
                                    let reply = handler(request);
                                    async move { Ok::<_, Infallible>(reply.await) }
                                });
                                let _ = hyper::server::conn::http1::Builder::new()
                                    .serve_connection(TokioIo::new(stream), service)
                                    .await;
                            });
                        }
                        Some(_) = connections.join_next(), if !connections.is_empty() => {}
                    }
                }
            })
            .abort_handle();
        *self.running.lock().unwrap_or_else(|p| p.into_inner()) = Some((task, gone));
        Ok(())
    }

    /// The listening socket address.
    pub fn socket_addr(&self) -> SocketAddr {
        self.listen
    }

    /// The server dies: the listener closes and every open connection drops.
    pub fn stop(&self) {
        let running = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some((task, gone)) = running {
            task.abort();
            let _ = gone.recv_timeout(Duration::from_secs(5));
        }
    }

    /// Back on the same port, state kept.
    pub fn resume(&self) -> io::Result<()> {
        if self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
        {
            return Ok(());
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match StdListener::bind(self.listen) {
                Ok(listener) => break listener,
                Err(err) if Instant::now() >= deadline => return Err(err),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        self.serve(listener)
    }

    /// Requests received for `path` (no query string).
    pub fn requests(&self, path: &str) -> u64 {
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.get(path).copied().unwrap_or(0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The listen address of a double run standalone: its first command-line argument, or
/// `default` without one; an argument that is no socket address is an `InvalidInput` error
/// naming it.
pub fn listen_arg(default: &str) -> io::Result<SocketAddr> {
    std::env::args()
        .nth(1)
        .unwrap_or_else(|| default.into())
        .parse()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("listen address: {e}")))
}

/// Keeps a standalone double's process alive: its listener serves on its own runtime's
/// threads until the process is killed.
pub fn park_forever() -> ! {
    loop {
        std::thread::park();
    }
}

/// Splits a query string into percent-decoded pairs.
pub fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// Percent-decodes (and `+` to space, as form encoding does).
pub fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(hi), Some(lo)) => {
                        out.push((hi * 16 + lo) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A response with a status, a JSON or text body and extra headers.
pub fn respond(
    status: u16,
    content_type: &str,
    body: impl Into<Bytes>,
    headers: &[(&str, String)],
) -> Response<Full<Bytes>> {
    let mut response = Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type);
    for (name, value) in headers {
        response = response.header(*name, value.as_str());
    }
    response
        .body(Full::new(body.into()))
        .expect("valid response")
}

/// Parses a Go duration of one unit (`300s`, `5m`, `1500ms`, `1h`), as `wait` takes it.
pub fn go_duration(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| !c.is_ascii_digit() && c != '.')?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let seconds = match unit {
        "ns" => number / 1e9,
        "us" | "µs" => number / 1e6,
        "ms" => number / 1e3,
        "s" => number,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        _ => return None,
    };
    Some(Duration::from_secs_f64(seconds))
}
