//! `consul-double`: runs the Consul agent double standalone, for trying Switchyard's Consul
//! registry where no Consul can be installed.
//!
//! ```text
//! consul-double --listen 127.0.0.1:8500 --datacenter dc1
//! curl -X PUT localhost:8500/v1/agent/service/register \
//!      -d '{"Name":"echo","Port":9001,"Check":{"TTL":"10m","Status":"passing"}}'
//! ```

use std::net::SocketAddr;

use clap::Parser;
use switchyard_consul_double::{AclOptions, ConsulDouble, DefaultPolicy, Options, Rights};

/// A Consul agent double: agent, health and catalog HTTP API with blocking queries, TTL
/// checks and ACL tokens.
#[derive(Parser, Debug)]
#[command(name = "consul-double", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8500")]
    listen: SocketAddr,
    /// The agent's datacenter.
    #[arg(long, default_value = "dc1")]
    datacenter: String,
    /// Further datacenters, each served by an agent of the same cluster on the next port
    /// (reach them from the first with `?dc=NAME`).
    #[arg(long = "extra-datacenter")]
    extra_datacenters: Vec<String>,
    /// The node's address, inherited by instances registered without `Address`.
    #[arg(long, default_value = "127.0.0.1")]
    node_address: String,
    /// Turn ACLs on with a token that may write everything (repeatable).
    #[arg(long = "acl-write-token")]
    write_tokens: Vec<String>,
    /// Turn ACLs on with a token that may read everything (repeatable).
    #[arg(long = "acl-read-token")]
    read_tokens: Vec<String>,
    /// With ACLs on, let requests without a token do everything.
    #[arg(long)]
    acl_default_allow: bool,
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let acl = if args.write_tokens.is_empty() && args.read_tokens.is_empty() {
        None
    } else {
        let mut tokens: Vec<(String, Rights)> = args
            .write_tokens
            .iter()
            .map(|t| (t.clone(), Rights::Write))
            .collect();
        tokens.extend(args.read_tokens.iter().map(|t| (t.clone(), Rights::Read)));
        Some(AclOptions {
            default_policy: if args.acl_default_allow {
                DefaultPolicy::Allow
            } else {
                DefaultPolicy::Deny
            },
            tokens,
        })
    };
    let first = ConsulDouble::start(Options {
        datacenter: args.datacenter.clone(),
        node_address: args.node_address.clone(),
        listen: args.listen,
        acl: acl.clone(),
        ..Options::default()
    })?;
    println!(
        "consul-double: datacenter {} at {}",
        first.datacenter(),
        first.address()
    );
    let mut agents = vec![];
    for (i, dc) in args.extra_datacenters.iter().enumerate() {
        let mut listen = args.listen;
        let offset = u16::try_from(i + 1).unwrap_or(u16::MAX);
        listen.set_port(args.listen.port().saturating_add(offset));
        let agent = ConsulDouble::start(Options {
            datacenter: dc.clone(),
            node_address: args.node_address.clone(),
            listen,
            acl: acl.clone(),
            join: Some(first.cluster()),
            ..Options::default()
        })?;
        println!(
            "consul-double: datacenter {} at {}",
            agent.datacenter(),
            agent.address()
        );
        agents.push(agent);
    }
    // Serve until killed.
    loop {
        std::thread::park();
    }
}
