//! Heap allocations per proxied request, counted on the proxy's own thread.
//!
//! The gateway (config plan, upstream cache, proxy, hyper server) runs on a current-thread
//! runtime of its own; a backend and a blocking keep-alive client run on other threads. A
//! counting global allocator counts only on the proxy's thread, so the figure is the
//! request path's alone: hyper's parsing and timers, the proxy, the upstream codec. It is
//! deterministic where timings are not, so it is asserted, with room for dependencies'
//! internals to move: 6 at the time of writing (BENCHMARKS.md §1, `bench/allocs.sh`), 9–11
//! before the request id and the retry headers stopped allocating.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use switchyard_heap::counting::{allocations, count_this_thread, CountingAllocator};

/// The executable's echo backend (`switchyard backend`), the one the benchmarks start.
#[path = "../src/tools/backend.rs"]
#[allow(dead_code)] // `run` is the command's, not the test's
mod backend;

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// Requests sent before counting starts (pools filled, buffers grown, lazies initialised).
const WARM_UP: usize = 300;
/// Requests counted.
const COUNTED_REQUESTS: usize = 3_000;

/// Runs `serve` on a current-thread runtime on a thread of its own, giving it a listener on
/// 127.0.0.1; returns the listener's address.
fn serve_on_own_thread<F, Fut>(serve: F) -> SocketAddr
where
    F: FnOnce(tokio::net::TcpListener) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            serve(listener).await;
        });
    });
    rx.recv_timeout(Duration::from_secs(30)).unwrap()
}

/// Starts the project's backend (1 KiB bodies) on a thread of its own.
fn start_backend() -> SocketAddr {
    serve_on_own_thread(|listener| backend::serve(listener, "b".into(), Some(1024)))
}

/// Plans `config` and serves it on a thread of its own that counts its allocations while
/// `counting` is set; returns the proxy's address.
fn start_gateway(config: String, counting: Arc<AtomicBool>) -> SocketAddr {
    serve_on_own_thread(move |listener| async move {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.toml");
        std::fs::write(&path, config).unwrap();
        let loader = switchyard::load::Loader::default();
        let plan = loader
            .load(&path, None)
            .unwrap_or_else(|issues| panic!("config: {issues:?}"));
        let app = switchyard::app::App::start(path.clone(), loader, plan);
        // Flip this thread's counting on and off as the test asks, between polls.
        let toggle = async {
            loop {
                count_this_thread(counting.load(Ordering::SeqCst));
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        };
        let serve = switchyard_proxy::server::serve(
            listener,
            app.proxy.clone(),
            switchyard_proxy::server::ServerSettings::default(),
            std::future::pending::<()>(),
        );
        tokio::select! {
            () = serve => {}
            () = toggle => {}
        }
    })
}

/// Sends `n` GETs on one keep-alive connection, reading each 200 with its body.
fn get_many(reader: &mut BufReader<TcpStream>, n: usize) {
    for _ in 0..n {
        reader
            .get_mut()
            .write_all(b"GET /x HTTP/1.1\r\nhost: gateway.test\r\n\r\n")
            .unwrap();
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert!(line.starts_with("HTTP/1.1 200"), "{line:?}");
        let mut length = None;
        loop {
            line.clear();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = Some(value.trim().parse::<usize>().unwrap());
                }
            }
        }
        let mut body = vec![0; length.expect("a content-length")];
        reader.read_exact(&mut body).unwrap();
    }
}

fn allocations_per_request(endpoints: &[SocketAddr]) -> f64 {
    let services: Vec<String> = endpoints.iter().map(|a| format!("\"{a}\"")).collect();
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[log]\naccess = false\n\
         [registries.local]\ntype = \"static\"\nservices.b = [{}]\n\
         [upstreams.b]\n[[upstreams.b.sources]]\nregistry = \"local\"\nservice = \"b\"\n\
         [[routes]]\nname = \"all\"\npath_prefix = \"/\"\nupstream = \"b\"\n",
        services.join(", ")
    );
    let counting = Arc::new(AtomicBool::new(false));
    let gateway = start_gateway(config, counting.clone());
    let stream = TcpStream::connect(gateway).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(stream);
    // The static registry's set arrives through the upstream's actor: wait for a 200.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut probe = BufReader::new(TcpStream::connect(gateway).unwrap());
        probe
            .get_mut()
            .write_all(b"GET /x HTTP/1.1\r\nhost: gateway.test\r\nconnection: close\r\n\r\n")
            .unwrap();
        let mut line = String::new();
        let _ = probe.read_line(&mut line);
        if line.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "never routed: {line:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    get_many(&mut reader, WARM_UP);
    counting.store(true, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(20));
    let before = allocations();
    get_many(&mut reader, COUNTED_REQUESTS);
    let after = allocations();
    counting.store(false, Ordering::SeqCst);
    (after - before) as f64 / COUNTED_REQUESTS as f64
}

#[test]
fn a_proxied_request_costs_a_handful_of_allocations() {
    let one = allocations_per_request(&[start_backend()]);
    println!("one endpoint: {one:.2} allocations per request on the proxy's thread");
    let two = allocations_per_request(&[start_backend(), start_backend()]);
    println!("two endpoints (a retry possible): {two:.2} allocations per request");
    assert!(
        one <= 8.0,
        "{one:.2} allocations per request with one endpoint"
    );
    assert!(
        two <= 8.0,
        "{two:.2} allocations per request with two endpoints"
    );
}
