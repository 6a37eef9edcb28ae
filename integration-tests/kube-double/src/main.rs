//! `switchyard-kube-double`: runs the Kubernetes API-server double standalone.
//!
//! ```text
//! switchyard-kube-double [--listen 127.0.0.1:6443] [--token T | --no-token]
//!                        [--kubeconfig PATH] [--context NAME] [--bookmark-interval-ms N]
//! ```
//! Prints the server URL, writes the kubeconfig if asked, and serves until interrupted.
//! Test knobs: `POST /_double/expire`, `/_double/drop-watches`, `/_double/pause`,
//! `/_double/resume`; `GET /_double/requests` (the request log as JSON).

use std::time::Duration;

use switchyard_kube_double::{KubeDouble, KubeDoubleOptions};

fn usage() -> ! {
    eprintln!(
        "usage: switchyard-kube-double [--listen ADDR] [--token T | --no-token] [--kubeconfig PATH] [--context NAME] [--bookmark-interval-ms N]"
    );
    std::process::exit(2)
}

#[tokio::main]
async fn main() {
    let mut options = KubeDoubleOptions::default();
    let mut kubeconfig = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        match arg.as_str() {
            "--listen" => options.listen = value().parse().unwrap_or_else(|_| usage()),
            "--token" => options.token = Some(value()),
            "--no-token" => options.token = None,
            "--kubeconfig" => kubeconfig = Some(value()),
            "--context" => options.context = value(),
            "--bookmark-interval-ms" => {
                options.bookmark_interval =
                    Duration::from_millis(value().parse().unwrap_or_else(|_| usage()));
            }
            "-h" | "--help" => usage(),
            _ => usage(),
        }
    }
    let double = match KubeDouble::start(options).await {
        Ok(double) => double,
        Err(err) => {
            eprintln!("switchyard-kube-double: {err}");
            std::process::exit(1);
        }
    };
    if let Some(path) = kubeconfig {
        if let Err(err) = double.write_kubeconfig(&path) {
            eprintln!("switchyard-kube-double: writing {path}: {err}");
            std::process::exit(1);
        }
    }
    println!("{}", double.url());
    let _ = tokio::signal::ctrl_c().await;
}
