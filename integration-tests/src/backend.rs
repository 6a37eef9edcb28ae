//! A real HTTP backend for tests: answers every request with its name, counts hits and
//! connections, records what it received, and can be killed (its runtime shut down, so every open
//! connection closes at once, as when a process dies).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};

/// What a backend saw of one request.
#[derive(Clone, Debug)]
pub struct Seen {
    /// Method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Headers, lowercased names, in order.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl Seen {
    /// Values of header `name`.
    pub fn header(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

#[derive(Default)]
struct State {
    hits: AtomicUsize,
    connections: AtomicUsize,
    status: AtomicU16,
    delay_ms: AtomicU64,
    seen: Mutex<Vec<Seen>>,
}

/// A running backend. Dropping it kills it.
pub struct Backend {
    name: String,
    address: SocketAddr,
    state: Arc<State>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Backend {
    /// Starts a backend called `name` on a free 127.0.0.1 port.
    pub fn start(name: &str) -> Backend {
        Self::start_on(name, SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Starts a backend on a given address (to bring a killed one back on its port).
    pub fn start_on(name: &str, address: SocketAddr) -> Backend {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("backend runtime");
        let listener = std::net::TcpListener::bind(address)
            .unwrap_or_else(|e| panic!("backend {name}: bind {address}: {e}"));
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let address = listener.local_addr().expect("local address");
        let listener = {
            let _entered = runtime.enter();
            tokio::net::TcpListener::from_std(listener).expect("tokio listener")
        };
        let state = Arc::new(State {
            status: AtomicU16::new(200),
            ..State::default()
        });
        let (task_state, task_name) = (state.clone(), name.to_owned());
        runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                task_state.connections.fetch_add(1, Ordering::SeqCst);
                let (state, name) = (task_state.clone(), task_name.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<Incoming>| {
                        let (state, name) = (state.clone(), name.clone());
                        async move { Ok::<_, Infallible>(answer(&state, &name, request).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Backend {
            name: name.to_owned(),
            address,
            state,
            runtime: Some(runtime),
        }
    }

    /// Its name (the response body).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its address.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Requests answered so far.
    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// Every request received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// Answers with `status` from now on.
    pub fn set_status(&self, status: u16) {
        self.state.status.store(status, Ordering::SeqCst);
    }

    /// Waits this long before answering, from now on.
    pub fn set_delay(&self, delay: Duration) {
        self.state
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Kills it: the listener and every connection close at once.
    pub fn kill(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn answer(state: &State, name: &str, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    state.seen.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map_or("/".into(), |p| p.to_string()),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body,
    });
    let delay = state.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    state.hits.fetch_add(1, Ordering::SeqCst);
    // `/bytes/N` answers N bytes instead of the name; `/close` asks to close the connection.
    let path = parts.uri.path();
    let body = match path
        .strip_prefix("/bytes/")
        .and_then(|n| n.parse::<usize>().ok())
    {
        Some(n) => Bytes::from(vec![b'x'; n]),
        None => Bytes::from(name.to_owned()),
    };
    let mut response = Response::new(Full::new(body));
    if path == "/close" {
        response.headers_mut().insert(
            hyper::header::CONNECTION,
            "close".parse().expect("a header value"),
        );
    }
    *response.status_mut() =
        hyper::StatusCode::from_u16(state.status.load(Ordering::SeqCst)).unwrap_or_default();
    response
        .headers_mut()
        .insert("x-backend", name.parse().expect("name is a header value"));
    response
}
