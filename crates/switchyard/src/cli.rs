//! The command line: parsing, the runtime, signals, and each subcommand's entry.
//!
//! `switchyard --config PATH` runs the gateway; `demo` runs an embedded config with local
//! echo instances; `check` validates a config; `status` prints a running gateway's state;
//! `register` holds an instance's key in etcd. See `switchyard --help`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::load::Loader;
use crate::{admin, app, plan, status};
use switchyard_proxy::server::{self, ServerSettings};
use tokio::net::TcpListener;

/// Switchyard: a gateway that routes to service instances found live in Kubernetes,
/// Consul, etcd, DNS SRV, a watched file or static config.
#[derive(Parser, Debug)]
#[command(version, args_conflicts_with_subcommands = true)]
struct Cli {
    /// Run the gateway with this config file (TOML, YAML or JSON).
    #[arg(long, short)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the gateway with an embedded config and three local echo instances.
    Demo {
        /// Data-plane address.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Admin address.
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: std::net::SocketAddr,
    },
    /// Validate a config: exit 0 when valid, else print every error and exit 2.
    Check {
        /// The config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Print a running gateway's upstreams, registries and routes.
    Status {
        /// The admin URL, e.g. http://127.0.0.1:9901.
        #[arg(long, default_value = "http://127.0.0.1:9901")]
        admin: String,
        /// Admin token, when the gateway has one.
        #[arg(long, env = "SWITCHYARD_ADMIN_TOKEN")]
        token: Option<String>,
    },
    /// Register an instance in etcd under a lease, kept alive until SIGTERM or ctrl-c
    /// (then deleted). A process killed without cleanup disappears after its TTL.
    Register {
        /// etcd client URL; repeat for several members.
        #[arg(long = "etcd", required = true)]
        etcd: Vec<String>,
        /// The service (the key segment under the prefix).
        #[arg(long)]
        service: String,
        /// Where the instance listens, HOST:PORT.
        #[arg(long)]
        address: String,
        /// Balancer weight.
        #[arg(long, default_value_t = 1)]
        weight: u32,
        /// Priority within the source (lower is preferred).
        #[arg(long, default_value_t = 0)]
        priority: u32,
        /// Lease TTL, e.g. 10s.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
        /// Key prefix.
        #[arg(long, default_value = switchyard_etcd::DEFAULT_PREFIX)]
        prefix: String,
        /// Instance id (the last key segment). Default: the address.
        #[arg(long)]
        id: Option<String>,
        /// etcd user name (with --password).
        #[arg(long)]
        username: Option<String>,
        /// etcd password.
        #[arg(long, env = "SWITCHYARD_ETCD_PASSWORD")]
        password: Option<String>,
    },
    /// Fleet config in etcd: `config push` writes a file's routes, upstreams, consumers and
    /// policies under the prefix that gateways with `[config_source]` watch; `config diff`
    /// shows what a push would change.
    Config {
        /// What to do.
        #[command(subcommand)]
        command: crate::config_cmd::ConfigCommand,
    },
    /// Run a small HTTP backend (for demos and benchmarks): answers every request.
    #[command(hide = true)]
    Backend {
        /// Address to listen on.
        #[arg(long)]
        listen: std::net::SocketAddr,
        /// Name it reports.
        #[arg(long, default_value = "backend")]
        name: String,
        /// Answer with this many bytes of filler instead of JSON.
        #[arg(long)]
        body_size: Option<usize>,
        /// Runtime threads.
        #[arg(long, default_value_t = 1)]
        workers: usize,
    },
}

/// The commands that are tools for trying and measuring the gateway rather than the gateway
/// (`demo`, `backend`): the executable provides them, so that their code (echo backends, an
/// embedded config) stays out of this library.
pub struct Tools {
    /// `switchyard demo --listen A --admin B`.
    pub demo: fn(std::net::SocketAddr, std::net::SocketAddr) -> ExitCode,
    /// `switchyard backend --listen A --name N [--body-size S] [--workers W]`.
    pub backend: fn(std::net::SocketAddr, String, Option<usize>, usize) -> ExitCode,
}

/// Parses the command line and runs what it asks for.
pub fn main(tools: &Tools) -> ExitCode {
    let cli = Cli::parse();
    match (cli.command, cli.config) {
        (Some(Command::Check { config }), _) => check(&config),
        (Some(Command::Demo { listen, admin }), _) => (tools.demo)(listen, admin),
        (Some(Command::Status { admin, token }), _) => status::run(&admin, token.as_deref()),
        (Some(Command::Config { command }), _) => crate::config_cmd::run(command),
        (
            Some(Command::Backend {
                listen,
                name,
                body_size,
                workers,
            }),
            _,
        ) => (tools.backend)(listen, name, body_size, workers),
        (
            Some(Command::Register {
                etcd,
                service,
                address,
                weight,
                priority,
                ttl,
                prefix,
                id,
                username,
                password,
            }),
            _,
        ) => {
            let mut options =
                switchyard_etcd::register::RegisterOptions::new(String::new(), service, address);
            options.connect = switchyard_etcd::ConnectSettings::new(etcd);
            options.connect.username = username;
            options.connect.password = password;
            options.weight = weight;
            options.priority = priority;
            options.ttl = ttl;
            options.prefix = prefix;
            options.instance_id = id;
            register(options)
        }
        (None, Some(config)) => run(&config),
        (None, None) => {
            eprintln!(
                "switchyard: give --config PATH to run, or try `switchyard demo` (see --help)"
            );
            ExitCode::from(2)
        }
    }
}

/// `switchyard register`: holds the key until SIGTERM or ctrl-c.
fn register(options: switchyard_etcd::register::RegisterOptions) -> ExitCode {
    init_tracing("info");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    eprintln!(
        "registering {} (ttl {:?}); SIGTERM or ctrl-c deregisters",
        options.key(),
        options.ttl
    );
    match runtime.block_on(switchyard_etcd::register::run(options, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("switchyard register: {error}");
            ExitCode::from(2)
        }
    }
}

/// `switchyard check`.
fn check(path: &Path) -> ExitCode {
    match Loader::default().load(path, None) {
        Ok(plan) => {
            println!(
                "{}: ok ({} registries, {} upstreams, {} routes)",
                path.display(),
                plan.registries.len(),
                plan.upstreams.len(),
                plan.routes.len()
            );
            // Valid, but maybe not what was meant: registries' warnings (they may look at
            // their server, briefly). They do not change the exit status.
            if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                for (name, warning) in
                    runtime.block_on(crate::warnings::collect(crate::warnings::asks(&plan)))
                {
                    eprintln!("{}: warning: registries.{name}: {warning}", path.display());
                }
            }
            ExitCode::SUCCESS
        }
        Err(issues) => {
            for issue in &issues {
                eprintln!("{}: {issue}", path.display());
            }
            eprintln!("{}: {} error(s)", path.display(), issues.len());
            ExitCode::from(2)
        }
    }
}

/// Runs the gateway from a config file until SIGTERM or ctrl-c.
fn run(path: &Path) -> ExitCode {
    // Before anything allocates much: fixed mmap and trim thresholds (crates/heap).
    switchyard_heap::tune_allocator();
    let loader = Loader::default();
    // Validate before anything starts, so a bad file fails fast with every error. With a
    // [config_source], the fleet's objects from etcd are merged in first.
    let plan = match loader.startup_plan(path) {
        Ok(plan) => plan,
        Err(issues) => {
            for issue in &issues {
                eprintln!("{}: {issue}", path.display());
            }
            return ExitCode::from(2);
        }
    };
    init_tracing(&plan.config.log.level);
    // Parsing the file left its transient trees in freed heap pages (~15 MiB at 10,000
    // routes): hand them back before the long-lived state is built on top of them.
    switchyard_heap::release_free_memory();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = plan.config.server.workers {
        runtime.worker_threads(workers.max(1));
    }
    let runtime = runtime
        .enable_all()
        .build()
        .expect("start the Tokio runtime");
    runtime.block_on(serve(path.to_path_buf(), loader, plan))
}

/// Sets up diagnostics on stderr (`SWITCHYARD_LOG` overrides `level`).
pub fn init_tracing(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SWITCHYARD_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Runs a planned gateway until SIGTERM or ctrl-c, then drains.
pub async fn serve(path: PathBuf, loader: Loader, plan: plan::Plan) -> ExitCode {
    let listen = plan.config.server.listen;
    let admin_listen = plan.config.admin.listen;
    let server_config = &plan.config.server;
    let settings = ServerSettings {
        header_read_timeout: server_config.header_read_timeout,
        drain_timeout: server_config.drain_timeout,
        max_header_bytes: server_config.max_header_bytes.0 as usize,
        max_headers: server_config.max_headers,
        max_connections: server_config.max_connections,
        h2_max_concurrent_streams: server_config.h2_max_concurrent_streams,
        h2_initial_stream_window: server_config
            .h2_initial_stream_window
            .0
            .min(u64::from(u32::MAX >> 1)) as u32,
        h2_initial_connection_window: server_config
            .h2_initial_connection_window
            .0
            .min(u64::from(u32::MAX >> 1)) as u32,
    };
    if !admin::is_loopback(admin_listen) && plan.config.admin.token.is_none() {
        tracing::warn!(%admin_listen, "the admin API listens beyond loopback without admin.token: anyone who reaches it can read and reload");
    }
    let listener = match TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(error) => {
            eprintln!("switchyard: cannot listen on {listen}: {error}");
            return ExitCode::from(1);
        }
    };
    let admin_listener = match TcpListener::bind(admin_listen).await {
        Ok(l) => l,
        Err(error) => {
            eprintln!("switchyard: cannot listen on {admin_listen} (admin): {error}");
            return ExitCode::from(1);
        }
    };
    let tls_listener = match plan.config.server.tls_listen {
        None => None,
        Some(address) => match TcpListener::bind(address).await {
            Ok(l) => Some(l),
            Err(error) => {
                eprintln!("switchyard: cannot listen on {address} (tls): {error}");
                return ExitCode::from(1);
            }
        },
    };
    let redirect = plan.config.server.redirect_to_https;
    let tls_port = plan.config.server.tls_listen.map(|a| a.port());
    let registry_asks = crate::warnings::asks(&plan);
    let app = app::App::start(path, loader, plan);
    tracing::info!(%listen, admin = %admin_listen, "switchyard listening");
    tokio::spawn(admin::serve(admin_listener, app.clone()));
    tokio::spawn(reload_on_sighup(app.clone()));
    tokio::spawn(status::report_startup_sync(app.clone()));
    tokio::spawn(async move {
        for (name, warning) in crate::warnings::collect(registry_asks).await {
            tracing::warn!(registry = %name, "{warning}");
        }
    });
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let tls_task = match (tls_listener, app.tls.clone()) {
        (Some(listener), Some(tls)) => {
            tracing::info!(address = ?listener.local_addr().ok(), "TLS listening");
            Some(tokio::spawn(server::serve_kind(
                listener,
                app.proxy.clone(),
                settings.clone(),
                server::ListenerKind::Tls(tls),
                wait(stopped.clone()),
            )))
        }
        _ => None,
    };
    let plain_kind = match (redirect, tls_port) {
        (true, Some(port)) => server::ListenerKind::RedirectToHttps(port),
        _ => server::ListenerKind::Plain,
    };
    let plain = server::serve_kind(
        listener,
        app.proxy.clone(),
        settings,
        plain_kind,
        wait(stopped),
    );
    tokio::pin!(plain);
    tokio::select! {
        () = &mut plain => {}
        () = shutdown_signal() => {
            let _ = stop.send(true);
            plain.await;
        }
    }
    if let Some(task) = tls_task {
        let _ = stop.send(true);
        let _ = task.await;
    }
    app.proxy.close_access_log();
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

async fn reload_on_sighup(app: Arc<app::App>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        return;
    };
    while hup.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading the config");
        let _ = app.reload().await;
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install the SIGTERM handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: draining"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupt: draining"),
    }
}
