//! A small inventory server speaking Prometheus HTTP SD, for the `http` registry's tests:
//! `GET /targets` answers the file_sd JSON list it holds, with an `ETag`, honours
//! `If-None-Match` with `304`, can require a bearer token or basic credentials, and can be
//! told to fail (any status, any body, any content type) or be stopped and started again on
//! its port. It records each request's `If-None-Match` and `Authorization`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};

/// What the server answers and what it saw.
#[derive(Clone, Debug)]
struct State {
    status: u16,
    body: String,
    content_type: String,
    /// Bumped with every new body: the ETag is `"v<version>"`.
    version: u64,
    etags: bool,
    /// The exact `Authorization` value required, if any.
    authorization: Option<String>,
    /// `(If-None-Match, Authorization)` of each request.
    requests: Vec<(Option<String>, Option<String>)>,
    not_modified: usize,
}

/// A running inventory server. Dropping it stops it.
pub struct Inventory {
    address: SocketAddr,
    state: Arc<Mutex<State>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Inventory {
    /// Starts serving `body` (a file_sd JSON list) on a free loopback port.
    pub fn start(body: &str) -> Inventory {
        let state = Arc::new(Mutex::new(State {
            status: 200,
            body: body.to_owned(),
            content_type: "application/json".into(),
            version: 1,
            etags: true,
            authorization: None,
            requests: Vec::new(),
            not_modified: 0,
        }));
        let mut inventory = Inventory {
            address: SocketAddr::from(([127, 0, 0, 1], crate::free_port())),
            state,
            runtime: None,
        };
        inventory.serve();
        inventory
    }

    /// `http://127.0.0.1:PORT/targets`.
    pub fn url(&self) -> String {
        format!("http://{}/targets", self.address)
    }

    /// Serves a new list (a new ETag), with status 200 and JSON content type.
    pub fn set(&self, body: &str) {
        let mut state = self.state.lock().unwrap();
        state.body = body.to_owned();
        state.status = 200;
        state.content_type = "application/json".into();
        state.version += 1;
    }

    /// Answers `status` with `body` and `content_type` from now on (a new ETag).
    pub fn answer(&self, status: u16, content_type: &str, body: &str) {
        let mut state = self.state.lock().unwrap();
        state.status = status;
        state.content_type = content_type.to_owned();
        state.body = body.to_owned();
        state.version += 1;
    }

    /// Whether answers carry an `ETag` (default true).
    pub fn set_etags(&self, on: bool) {
        self.state.lock().unwrap().etags = on;
    }

    /// Requires this exact `Authorization` header (401 otherwise).
    pub fn require_authorization(&self, value: &str) {
        self.state.lock().unwrap().authorization = Some(value.to_owned());
    }

    /// Requests received so far.
    pub fn requests(&self) -> usize {
        self.state.lock().unwrap().requests.len()
    }

    /// `304 Not Modified` answers sent so far.
    pub fn not_modified(&self) -> usize {
        self.state.lock().unwrap().not_modified
    }

    /// The `Authorization` header of the last request.
    pub fn last_authorization(&self) -> Option<String> {
        let state = self.state.lock().unwrap();
        state.requests.last().and_then(|(_, auth)| auth.clone())
    }

    /// Stops answering (connections refused) until [`Inventory::restart`].
    pub fn stop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }

    /// Serves again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.serve();
    }

    fn serve(&mut self) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("inventory runtime");
        let mut listener = None;
        for _ in 0..100 {
            match std::net::TcpListener::bind(self.address) {
                Ok(l) => {
                    listener = Some(l);
                    break;
                }
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
            }
        }
        let listener =
            listener.unwrap_or_else(|| panic!("inventory: cannot bind {}", self.address));
        listener.set_nonblocking(true).expect("non-blocking");
        let listener = {
            let _entered = runtime.enter();
            tokio::net::TcpListener::from_std(listener).expect("tokio listener")
        };
        let state = self.state.clone();
        runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = state.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<Incoming>| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(answer(&state, &request)) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        self.runtime = Some(runtime);
    }
}

impl Drop for Inventory {
    fn drop(&mut self) {
        self.stop();
    }
}

fn header(request: &Request<Incoming>, name: &str) -> Option<String> {
    request
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn answer(state: &Mutex<State>, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let mut state = state.lock().unwrap();
    let if_none_match = header(request, "if-none-match");
    let authorization = header(request, "authorization");
    state
        .requests
        .push((if_none_match.clone(), authorization.clone()));
    if state.authorization.is_some() && state.authorization != authorization {
        return Response::builder()
            .status(401)
            .header("www-authenticate", "Bearer")
            .body(Full::new(Bytes::from_static(b"unauthorized")))
            .unwrap();
    }
    let etag = format!("\"v{}\"", state.version);
    if state.etags && state.status == 200 && if_none_match.as_deref() == Some(etag.as_str()) {
        state.not_modified += 1;
        return Response::builder()
            .status(304)
            .header("etag", etag)
            .body(Full::new(Bytes::new()))
            .unwrap();
    }
    let mut response = Response::builder()
        .status(state.status)
        .header("content-type", state.content_type.as_str());
    if state.etags {
        response = response.header("etag", etag);
    }
    response
        .body(Full::new(Bytes::from(state.body.clone())))
        .unwrap()
}
