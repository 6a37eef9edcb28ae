//! `switchyard config ...`: `push` and `diff` of the fleet config in etcd (the work is in
//! [`crate::config_source::push`]), and `schema`, the JSON Schema of the config file.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use switchyard_etcd::ConnectSettings;

use crate::config;
use crate::config_source::push::{compare, render_changes};
use crate::config_source::{etcd, objects_of, push, Change, DEFAULT_PREFIX};
use crate::load::Loader;

/// Where the fleet config lives, for `switchyard config push|diff`.
#[derive(clap::Args, Debug)]
pub struct EtcdTarget {
    /// etcd client URL; repeat for several members.
    #[arg(long = "etcd", required = true)]
    pub etcd: Vec<String>,
    /// Key prefix of the fleet config.
    #[arg(long, default_value = DEFAULT_PREFIX)]
    pub prefix: String,
    /// etcd user name (with --password).
    #[arg(long)]
    pub username: Option<String>,
    /// etcd password.
    #[arg(long, env = "SWITCHYARD_ETCD_PASSWORD")]
    pub password: Option<String>,
    /// PEM CA file for https:// endpoints.
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// PEM client certificate (with --key).
    #[arg(long)]
    pub cert: Option<PathBuf>,
    /// PEM client key.
    #[arg(long)]
    pub key: Option<PathBuf>,
}

/// `switchyard config ...`.
#[derive(clap::Subcommand, Debug)]
pub enum ConfigCommand {
    /// Write a config file's routes, upstreams, consumers and policies to etcd (one
    /// transaction when they fit), for the gateways watching the prefix. Registries,
    /// listeners and other local settings are not written.
    Push {
        /// Where the fleet config lives.
        #[command(flatten)]
        target: EtcdTarget,
        /// The config file whose objects to write.
        #[arg(long)]
        from: PathBuf,
        /// Also delete objects under the prefix that the file does not have.
        #[arg(long)]
        prune: bool,
        /// Write even when the file does not pass `switchyard check`.
        #[arg(long)]
        no_check: bool,
    },
    /// Show what `config push` would change: exit 0 when nothing, 1 when something would.
    Diff {
        /// Where the fleet config lives.
        #[command(flatten)]
        target: EtcdTarget,
        /// The config file to compare with what etcd has.
        #[arg(long)]
        from: PathBuf,
    },
    /// Print the JSON Schema of the config file (for editors: a `#:schema` line on a TOML
    /// file's first line; docs/configuration.md).
    Schema,
}

/// Runs `switchyard config ...`.
pub fn run(command: ConfigCommand) -> ExitCode {
    match command {
        ConfigCommand::Schema => {
            let schema = crate::schema::config_schema(&crate::load::catalog());
            println!(
                "{}",
                serde_json::to_string_pretty(&schema).expect("a JSON value")
            );
            ExitCode::SUCCESS
        }
        command => push_or_diff(command),
    }
}

/// Runs `switchyard config push|diff`.
fn push_or_diff(command: ConfigCommand) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (target, from, push) = match command {
        ConfigCommand::Push {
            target,
            from,
            prune,
            no_check,
        } => (target, from, Some((prune, no_check))),
        ConfigCommand::Diff { target, from } => (target, from, None),
        ConfigCommand::Schema => unreachable!("handled by run"),
    };
    let fail = |message: String| {
        eprintln!("switchyard config: {message}");
        ExitCode::from(2)
    };
    let prefix = match target.prefix.trim_end_matches('/') {
        p if p.starts_with('/') && p.len() > 1 => p.to_owned(),
        _ => {
            return fail(format!(
                "--prefix {:?}: must start with '/' and name a directory",
                target.prefix
            ))
        }
    };
    let value = match config::read(&from) {
        Ok(value) => value,
        Err(issues) => {
            return fail(
                issues
                    .iter()
                    .map(|i| format!("{}: {i}", from.display()))
                    .collect::<Vec<_>>()
                    .join("\n"),
            )
        }
    };
    if let Some((_, false)) = push {
        if let Err(issues) = Loader::default().load(&from, None) {
            for issue in &issues {
                eprintln!("{}: {issue}", from.display());
            }
            return fail(format!("{} does not pass `switchyard check` ({} errors); nothing written (--no-check writes anyway)", from.display(), issues.len()));
        }
    }
    let objects = match objects_of(&value) {
        Ok(objects) => objects,
        Err(issues) => {
            return fail(
                issues
                    .iter()
                    .map(|i| format!("{}: {i}", from.display()))
                    .collect::<Vec<_>>()
                    .join("\n"),
            )
        }
    };
    let mut connect_settings = ConnectSettings::new(target.etcd);
    connect_settings.username = target.username;
    connect_settings.password = target.password;
    connect_settings.ca = target.ca;
    connect_settings.cert = target.cert;
    connect_settings.key = target.key;
    let issues = connect_settings.check();
    if !issues.is_empty() {
        return fail(
            issues
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n"),
        );
    }
    runtime.block_on(async move {
        let mut client = match etcd::connect(&connect_settings, Path::new(".")).await {
            Ok(client) => client,
            Err(error) => return fail(error),
        };
        let current = match etcd::read_all(&mut client, &prefix).await {
            Ok(snapshot) => snapshot,
            Err(error) => return fail(error),
        };
        let changes = compare(&objects, &current.objects);
        let Some((prune, _)) = push else {
            print!("{}", render_changes(&prefix, &changes, false));
            let differs = changes.iter().any(|c| !matches!(c, Change::Same(_)));
            return ExitCode::from(u8::from(differs));
        };
        match push::push_changes(&mut client, &prefix, &objects, &changes, prune).await {
            Ok(written) => {
                print!("{}", render_changes(&prefix, &changes, prune));
                println!("pushed {written} change(s) to {prefix}");
                ExitCode::SUCCESS
            }
            Err(error) => fail(error),
        }
    })
}
