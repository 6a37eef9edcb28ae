//! A small, fast HTTP backend: what `switchyard demo` starts as its local instances and
//! what the benchmarks measure against. It answers every request with its name, the method
//! and the path as JSON, or with a fixed-size body.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// `switchyard backend`: runs until killed.
pub fn run(listen: SocketAddr, name: String, body_size: Option<usize>, workers: usize) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.max(1))
        .enable_all()
        .build()
        .expect("start the Tokio runtime");
    runtime.block_on(async move {
        let listener = match TcpListener::bind(listen).await {
            Ok(l) => l,
            Err(error) => {
                eprintln!("backend: cannot listen on {listen}: {error}");
                return ExitCode::from(1);
            }
        };
        serve(listener, name, body_size).await;
        ExitCode::SUCCESS
    })
}

/// Serves on `listener` forever.
pub async fn serve(listener: TcpListener, name: String, body_size: Option<usize>) {
    let fixed = body_size.map(|n| Bytes::from(vec![b'x'; n]));
    let name_header = HeaderValue::from_str(&name).unwrap_or(HeaderValue::from_static("backend"));
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (fixed, name, name_header, builder) = (
            fixed.clone(),
            name.clone(),
            name_header.clone(),
            builder.clone(),
        );
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let body = match &fixed {
                    Some(bytes) => bytes.clone(),
                    None => Bytes::from(
                        serde_json::json!({
                            "instance": name,
                            "method": request.method().as_str(),
                            "path": request.uri().path(),
                        })
                        .to_string()
                            + "\n",
                    ),
                };
                let mut response = Response::new(Full::new(body));
                response
                    .headers_mut()
                    .insert("x-instance", name_header.clone());
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(if fixed.is_some() {
                        "text/plain"
                    } else {
                        "application/json"
                    }),
                );
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
