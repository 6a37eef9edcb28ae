//! Fleet config in etcd (`[config_source] type = "etcd"`): routes, upstreams, consumers and
//! policies shared by every gateway that watches the same prefix, merged over each
//! gateway's local file (which keeps its registries, listeners and other local settings).
//!
//! ## Layout under the prefix (default `/switchyard/config`)
//!
//! One document per object, JSON or TOML, at `<prefix>/<section>/<name>`:
//!
//! | key                              | becomes                                         |
//! |----------------------------------|-------------------------------------------------|
//! | `<prefix>/routes/<name>`         | a `[[routes]]` table named `<name>`              |
//! | `<prefix>/upstreams/<name>`      | `[upstreams.<name>]`                             |
//! | `<prefix>/consumers/<name>`      | `[consumers.<name>]`                             |
//! | `<prefix>/auth/<name>`           | `[auth.<name>]` (`auth/jwt`, `auth/key`)         |
//! | `<prefix>/route_defaults/<name>` | the `<name>` key of `[route_defaults]`           |
//!
//! An object replaces the file's object of the same name (a route by its `name`); other
//! etcd routes follow the file's routes in key order (route matching is by specificity;
//! config order only breaks ties). Any other key under the prefix is an error.
//!
//! ## Applying a change
//!
//! The watcher ([`spawn`]) reads the prefix at one revision, then watches from the next
//! one. Every change (a watch response, i.e. one transaction, plus whatever follows within
//! [`SETTLE`]) becomes a candidate [`Snapshot`], merged with the file and validated exactly
//! like a file reload ([`crate::app::App::apply_config_source`]). An invalid candidate is
//! refused as a whole: its errors are logged with the etcd key of the object at fault,
//! counted (`switchyard_config_source_changes_total{result="refused"}`), shown by
//! `/api/config_source` and the dashboard, and the running generation (file + the last good
//! snapshot) stays. The next change is tried afresh; fixing or deleting the bad object
//! lets it through. While etcd is unreachable the last good snapshot stays in force and
//! the watcher reconnects with backoff; a reconnect re-reads the whole prefix.
//!
//! At start-up ([`startup_plan`]) the gateway waits up to `startup_timeout` for a first
//! read, so it starts serving with the fleet's routes; when etcd cannot be read in time, or
//! its objects do not validate with the file, it starts on the file alone and keeps trying.
//!
//! `switchyard config push|diff` ([`run_command`]) write a file's objects to the prefix
//! (one transaction when possible) and show what a push would change.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use etcd_client::{
    Certificate, Client, ConnectOptions, EventType, GetOptions, Identity, TlsOptions, Txn, TxnOp,
    WatchOptions,
};
use serde_json::{json, Map, Value};
use switchyard_etcd::ConnectSettings;
use switchyard_registry::{decode_settings, Backoff, Catalog, ConfigIssue, RegistryContext};

use crate::app::{self, App};
use crate::plan::Plan;

/// The default key prefix of the fleet config.
pub const DEFAULT_PREFIX: &str = "/switchyard/config";

/// The default time the gateway waits at start-up for the first read of the prefix.
pub const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// The sections whose objects may live in etcd.
pub const OBJECT_SECTIONS: [&str; 5] =
    ["routes", "upstreams", "consumers", "auth", "route_defaults"];

/// After a watch response, further responses arriving within this are taken together.
pub const SETTLE: Duration = Duration::from_millis(30);

/// How long one request to etcd may take once connected.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// etcd's default limit of operations in one transaction (`--max-txn-ops`).
const MAX_TXN_OPS: usize = 128;

// === config ===

/// `[config_source]`, decoded.
#[derive(Clone, Debug, PartialEq)]
pub struct ConfigSource {
    /// How to reach etcd (`endpoints`, `username`/`password`, `ca`/`cert`/`key` relative to
    /// the config file, `dial_timeout` default 5 s).
    pub connect: ConnectSettings,
    /// Key prefix without a trailing `/`. Default [`DEFAULT_PREFIX`].
    pub prefix: String,
    /// How long start-up waits for the first read. Default [`DEFAULT_STARTUP_TIMEOUT`].
    pub startup_timeout: Duration,
    /// The etcd objects this generation was built with (set by the loader, not by the
    /// file): `None` for a generation of the file alone.
    pub snapshot: Option<Arc<Snapshot>>,
}

/// A lone duration such as `"5s"`.
#[derive(serde::Deserialize)]
struct HumanDuration(#[serde(with = "humantime_serde")] Duration);

/// Decodes the `[config_source]` table; issue paths are relative to it.
///
/// Relative TLS file paths are resolved against the config file's directory when
/// connecting (an unreadable one is then a connection error); absolute ones are checked here.
pub fn decode(value: &Value) -> Result<ConfigSource, Vec<ConfigIssue>> {
    let Some(table) = value.as_object() else {
        return Err(vec![ConfigIssue::new("", "must be a table")]);
    };
    let mut table = table.clone();
    let mut issues = Vec::new();
    match table.remove("type") {
        Some(Value::String(kind)) if kind == "etcd" => {}
        Some(Value::String(kind)) => issues.push(ConfigIssue::new(
            "type",
            format!("unknown config source type {kind:?} (known: etcd)"),
        )),
        Some(_) => issues.push(ConfigIssue::new("type", "must be a string (etcd)")),
        None => issues.push(ConfigIssue::new("type", "missing (etcd)")),
    }
    let startup_timeout = match table.remove("startup_timeout") {
        None => DEFAULT_STARTUP_TIMEOUT,
        Some(value) => match decode_settings::<HumanDuration>(&value) {
            Ok(HumanDuration(d)) => d,
            Err(issue) => {
                issues.push(issue.under("startup_timeout"));
                DEFAULT_STARTUP_TIMEOUT
            }
        },
    };
    table
        .entry("prefix")
        .or_insert_with(|| Value::String(DEFAULT_PREFIX.to_owned()));
    // TLS paths are checked below, relative ones at connect time.
    let mut paths = BTreeMap::new();
    for key in ["ca", "cert", "key"] {
        if let Some(value) = table.remove(key) {
            match value {
                Value::String(path) => {
                    paths.insert(key, PathBuf::from(path));
                }
                _ => issues.push(ConfigIssue::new(key, "must be a string (a PEM file path)")),
            }
        }
    }
    let ctx = RegistryContext::new("config_source");
    match switchyard_etcd::Settings::decode(&ctx, &Value::Object(table)) {
        Ok(settings) => {
            let mut connect = settings.connect;
            connect.ca = paths.remove("ca");
            connect.cert = paths.remove("cert");
            connect.key = paths.remove("key");
            // The first decode found the rest sound: what remains is about TLS.
            issues.extend(connect.check().into_iter().filter(|issue| {
                let relative = |p: &Option<PathBuf>| p.as_ref().is_some_and(|p| p.is_relative());
                !(issue.message.starts_with("no such file")
                    && match issue.path.as_str() {
                        "ca" => relative(&connect.ca),
                        "cert" => relative(&connect.cert),
                        "key" => relative(&connect.key),
                        _ => false,
                    })
            }));
            if issues.is_empty() {
                return Ok(ConfigSource {
                    connect,
                    prefix: settings.prefix,
                    startup_timeout,
                    snapshot: None,
                });
            }
        }
        Err(more) => issues.extend(more),
    }
    Err(issues)
}

// === snapshot and merge ===

/// The objects under the prefix at one revision: keys relative to the prefix
/// (`routes/web`) with their raw values.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The prefix they were read under.
    pub prefix: String,
    /// The etcd revision read.
    pub revision: i64,
    /// Relative key → raw value.
    pub objects: BTreeMap<String, Vec<u8>>,
}

impl Snapshot {
    /// The full etcd key of a relative one.
    pub fn key(&self, relative: &str) -> String {
        format!("{}/{relative}", self.prefix)
    }
}

/// Where the merged config's objects came from: config paths (`routes[3]`,
/// `upstreams.web`) of etcd objects, with their relative keys.
#[derive(Clone, Debug, Default)]
pub struct Origins {
    prefix: String,
    entries: Vec<(String, String)>,
}

impl Origins {
    /// Rewrites issues about etcd objects to name the object's key:
    /// `routes[3].upstream: unknown upstream` becomes
    /// `etcd:/switchyard/config/routes/web: upstream: unknown upstream`.
    pub fn translate(&self, issues: Vec<ConfigIssue>) -> Vec<ConfigIssue> {
        issues
            .into_iter()
            .map(|issue| self.translate_one(issue))
            .collect()
    }

    fn translate_one(&self, issue: ConfigIssue) -> ConfigIssue {
        for (path, relative) in &self.entries {
            let Some(rest) = issue.path.strip_prefix(path.as_str()) else {
                continue;
            };
            if !(rest.is_empty() || rest.starts_with('.') || rest.starts_with('[')) {
                continue;
            }
            let rest = rest.strip_prefix('.').unwrap_or(rest);
            let message = if rest.is_empty() {
                issue.message
            } else {
                format!("{rest}: {}", issue.message)
            };
            return ConfigIssue::new(format!("etcd:{}/{relative}", self.prefix), message);
        }
        issue
    }
}

/// Parses one object's document: JSON, else TOML (a table).
pub fn parse_document(raw: &[u8]) -> Result<Value, String> {
    let text = std::str::from_utf8(raw).map_err(|_| "not UTF-8 text".to_owned())?;
    let json_error = match serde_json::from_str::<Value>(text) {
        Ok(value) => return Ok(value),
        Err(error) => error,
    };
    if text.trim_start().starts_with('{') {
        return Err(format!("invalid JSON: {json_error}"));
    }
    config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml))
        .build()
        .and_then(|c| c.try_deserialize::<Value>())
        .map_err(|e| format!("neither JSON ({json_error}) nor TOML ({e})"))
}

/// Splits a relative key into (section, name), or says why it is not an object key.
fn split_key(relative: &str) -> Result<(&str, &str), String> {
    let expected = "expected <section>/<name> with section routes, upstreams, consumers, auth or route_defaults";
    let Some((section, name)) = relative.split_once('/') else {
        return Err(if relative.is_empty() {
            format!("a value at the prefix itself; {expected}")
        } else {
            format!("not a config object; {expected}")
        });
    };
    if !OBJECT_SECTIONS.contains(&section) {
        let local = [
            "registries",
            "server",
            "admin",
            "log",
            "state",
            "config_source",
        ];
        return Err(if local.contains(&section) {
            format!("{section} are not read from etcd: registries, listeners and other local settings come from each gateway's file")
        } else {
            format!("unknown section {section:?}; {expected}")
        });
    }
    check_name(name)?;
    Ok((section, name))
}

/// An object name: one non-empty key segment without whitespace.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the object name (the last key segment) is empty".into());
    }
    if name.contains('/') {
        return Err(format!(
            "{name:?}: an object name is one key segment, without '/'"
        ));
    }
    if name.chars().any(char::is_whitespace) {
        return Err(format!("{name:?}: an object name has no whitespace"));
    }
    Ok(())
}

/// Merges a snapshot's objects over the file's config value. Objects that do not parse,
/// and keys that name no object, are left out and reported (with their etcd keys), so
/// that the validation of the rest can report everything else at once: any issue refuses
/// the snapshot.
pub fn merge(file: &Value, snapshot: &Snapshot) -> (Value, Origins, Vec<ConfigIssue>) {
    let mut merged = file.clone();
    let mut issues = Vec::new();
    let mut origins = Origins {
        prefix: snapshot.prefix.clone(),
        entries: Vec::new(),
    };
    let Some(root) = merged.as_object_mut() else {
        let issue = ConfigIssue::new("", "the config file is not a table");
        return (file.clone(), origins, vec![issue]);
    };
    let mut routes = Vec::new();
    for (relative, raw) in &snapshot.objects {
        let at =
            |message: String| ConfigIssue::new(format!("etcd:{}", snapshot.key(relative)), message);
        let (section, name) = match split_key(relative) {
            Ok(split) => split,
            Err(message) => {
                issues.push(at(message));
                continue;
            }
        };
        let mut document = match parse_document(raw) {
            Ok(document) => document,
            Err(message) => {
                issues.push(at(message));
                continue;
            }
        };
        if section == "routes" {
            let Some(table) = document.as_object_mut() else {
                issues.push(at("a route must be a table".into()));
                continue;
            };
            match table.get("name") {
                None => {
                    table.insert("name".into(), Value::String(name.to_owned()));
                }
                Some(Value::String(given)) if given == name => {}
                Some(other) => {
                    issues.push(at(format!(
                        "name: {other} differs from the key's name {name:?} (leave it out or make it match)"
                    )));
                    continue;
                }
            }
            routes.push((relative.clone(), name.to_owned(), document));
            continue;
        }
        let entry = root
            .entry(section)
            .or_insert_with(|| Value::Object(Map::new()));
        match entry.as_object_mut() {
            Some(table) => {
                table.insert(name.to_owned(), document);
                origins
                    .entries
                    .push((format!("{section}.{name}"), relative.clone()));
            }
            None => issues.push(ConfigIssue::new(
                section,
                format!("must be a table to take {}", snapshot.key(relative)),
            )),
        }
    }
    if !routes.is_empty() {
        let list = root
            .entry("routes")
            .or_insert_with(|| Value::Array(Vec::new()));
        match list.as_array_mut() {
            Some(list) => {
                for (relative, name, document) in routes {
                    let same_name = list
                        .iter()
                        .position(|r| r.get("name").and_then(Value::as_str) == Some(name.as_str()));
                    let index = match same_name {
                        Some(i) => {
                            list[i] = document;
                            i
                        }
                        None => {
                            list.push(document);
                            list.len() - 1
                        }
                    };
                    origins.entries.push((format!("routes[{index}]"), relative));
                }
            }
            None => issues.push(ConfigIssue::new("routes", "must be an array of tables")),
        }
    }
    (merged, origins, issues)
}

/// The objects of a config file, keyed as they are stored under the prefix
/// (`routes/web`, `upstreams/web`, ...). Unnamed routes get the planner's default name
/// `route-<index>`.
pub fn objects_of(file: &Value) -> Result<BTreeMap<String, Value>, Vec<ConfigIssue>> {
    let mut objects = BTreeMap::new();
    let mut issues = Vec::new();
    for section in OBJECT_SECTIONS {
        let Some(value) = file.get(section) else {
            continue;
        };
        if section == "routes" {
            let Some(list) = value.as_array() else {
                issues.push(ConfigIssue::new("routes", "must be an array of tables"));
                continue;
            };
            for (i, route) in list.iter().enumerate() {
                let name = match route.get("name") {
                    None => format!("route-{i}"),
                    Some(Value::String(name)) => name.clone(),
                    Some(_) => {
                        issues.push(ConfigIssue::new(
                            format!("routes[{i}].name"),
                            "must be a string",
                        ));
                        continue;
                    }
                };
                if let Err(message) = check_name(&name) {
                    issues.push(ConfigIssue::new(format!("routes[{i}].name"), message));
                    continue;
                }
                if objects
                    .insert(format!("routes/{name}"), route.clone())
                    .is_some()
                {
                    issues.push(ConfigIssue::new(
                        format!("routes[{i}].name"),
                        format!("{name:?} names two routes"),
                    ));
                }
            }
            continue;
        }
        let Some(table) = value.as_object() else {
            issues.push(ConfigIssue::new(section, "must be a table"));
            continue;
        };
        for (name, object) in table {
            if let Err(message) = check_name(name) {
                issues.push(ConfigIssue::new(format!("{section}.{name}"), message));
                continue;
            }
            objects.insert(format!("{section}/{name}"), object.clone());
        }
    }
    if issues.is_empty() {
        Ok(objects)
    } else {
        Err(issues)
    }
}

// === start-up ===

/// Loads the plan the gateway starts with: the file merged with the etcd objects when the
/// file has a `[config_source]` (waiting up to its `startup_timeout` for them), else the
/// file alone. Prints one line about the config source on stderr. Errors are the file's own.
pub fn startup_plan(path: &Path, catalog: &Catalog) -> Result<Plan, Vec<ConfigIssue>> {
    let source = crate::config::read(path)
        .ok()
        .and_then(|value| value.get("config_source").cloned())
        .and_then(|value| decode(&value).ok());
    let Some(source) = source else {
        return app::load_plan(path, catalog, None);
    };
    let started = Instant::now();
    let base_dir = base_dir(path);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("start a Tokio runtime");
    let read = runtime.block_on(async {
        tokio::time::timeout(source.startup_timeout, async {
            let mut client = connect(&source.connect, &base_dir).await?;
            read_all(&mut client, &source.prefix).await
        })
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {:?}", source.startup_timeout)))
    });
    drop(runtime);
    let place = format!("{}{}", source.connect.endpoints.join(","), source.prefix);
    match read {
        Ok(snapshot) => {
            let objects = snapshot.objects.len();
            let revision = snapshot.revision;
            match app::load_plan_with(path, catalog, None, Some(&Arc::new(snapshot))) {
                Ok(plan) => {
                    eprintln!(
                        "config: etcd {place}: {objects} objects at revision {revision}, synced in {:.2} s",
                        started.elapsed().as_secs_f64()
                    );
                    Ok(plan)
                }
                Err(issues) => {
                    for issue in &issues {
                        eprintln!("config: etcd {place}: refused: {issue}");
                    }
                    eprintln!("config: etcd {place}: revision {revision} refused; starting on the file alone");
                    app::load_plan(path, catalog, None)
                }
            }
        }
        Err(error) => {
            eprintln!("config: etcd {place}: not read ({error}); starting on the file alone, retrying in the background");
            app::load_plan(path, catalog, None)
        }
    }
}

/// The directory relative paths of a config file resolve against.
fn base_dir(path: &Path) -> PathBuf {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf()
}

// === etcd ===

/// Opens a client on the first endpoint that answers (trying them all, from a varying
/// starting point so a fleet spreads over the cluster).
async fn connect(settings: &ConnectSettings, base_dir: &Path) -> Result<Client, String> {
    let count = settings.endpoints.len();
    if count == 0 {
        return Err("no endpoints".into());
    }
    let start = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as usize)
        % count;
    let mut failures = Vec::new();
    for endpoint in settings.endpoints.iter().cycle().skip(start).take(count) {
        let attempt = async {
            let options = connect_options(settings, endpoint, base_dir)?;
            let mut client = Client::connect([endpoint.as_str()], Some(options))
                .await
                .map_err(|e| e.to_string())?;
            client.status().await.map_err(|e| e.to_string())?;
            Ok::<_, String>(client)
        };
        match tokio::time::timeout(settings.dial_timeout + REQUEST_TIMEOUT, attempt).await {
            Ok(Ok(client)) => return Ok(client),
            Ok(Err(error)) => failures.push(format!("{endpoint}: {error}")),
            Err(_) => failures.push(format!("{endpoint}: timed out")),
        }
    }
    Err(format!("no usable etcd endpoint ({})", failures.join("; ")))
}

fn connect_options(
    settings: &ConnectSettings,
    endpoint: &str,
    base_dir: &Path,
) -> Result<ConnectOptions, String> {
    let mut options = ConnectOptions::new()
        .with_connect_timeout(settings.dial_timeout)
        .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
        .with_keep_alive_while_idle(true)
        .with_require_leader(true);
    if let (Some(user), Some(password)) = (&settings.username, &settings.password) {
        options = options
            .with_user(user.clone(), password.clone())
            .with_auto_token_refresh(true);
    }
    let tls = endpoint.starts_with("https://")
        || (!endpoint.starts_with("http://") && settings.uses_tls());
    if tls {
        let read = |path: &PathBuf| {
            let path = base_dir.join(path);
            std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))
        };
        let mut tls = TlsOptions::new();
        tls = match &settings.ca {
            Some(ca) => tls.ca_certificate(Certificate::from_pem(read(ca)?)),
            None => tls.with_enabled_roots(),
        };
        if let (Some(cert), Some(key)) = (&settings.cert, &settings.key) {
            tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        options = options.with_tls(tls);
    }
    Ok(options)
}

/// The end of the key range of everything under `key_prefix`.
fn prefix_end(key_prefix: &str) -> Vec<u8> {
    let mut end = key_prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Reads every object under the prefix at one revision (paged).
async fn read_all(client: &mut Client, prefix: &str) -> Result<Snapshot, String> {
    let key_prefix = format!("{prefix}/");
    let range_end = prefix_end(&key_prefix);
    let mut snapshot = Snapshot {
        prefix: prefix.to_owned(),
        ..Snapshot::default()
    };
    let mut from = key_prefix.clone().into_bytes();
    loop {
        let mut options = GetOptions::new()
            .with_range(range_end.clone())
            .with_limit(500);
        if snapshot.revision > 0 {
            options = options.with_revision(snapshot.revision);
        }
        let get = client.get(from.clone(), Some(options));
        let response = match tokio::time::timeout(REQUEST_TIMEOUT, get).await {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => return Err(format!("reading {key_prefix}: {error}")),
            Err(_) => return Err(format!("reading {key_prefix}: timed out")),
        };
        if snapshot.revision == 0 {
            snapshot.revision = response.header().map_or(0, |h| h.revision());
        }
        for kv in response.kvs() {
            if let Some(relative) = kv.key().strip_prefix(key_prefix.as_bytes()) {
                snapshot.objects.insert(
                    String::from_utf8_lossy(relative).into_owned(),
                    kv.value().to_vec(),
                );
            }
        }
        match response.kvs().last() {
            Some(last) if response.more() => {
                from = last.key().to_vec();
                from.push(0);
            }
            _ => return Ok(snapshot),
        }
    }
}

/// Starts the watcher of `app`'s config source (when its config has one).
pub fn spawn(app: Arc<App>, config_path: &Path) {
    let Some(source) = app.with_current(|c| c.config.config_source.clone()) else {
        return;
    };
    let base_dir = base_dir(config_path);
    tokio::spawn(async move {
        let backoff = Backoff {
            max: Duration::from_secs(10),
            ..Backoff::default()
        };
        let mut attempt = 0;
        loop {
            let error = watch(&app, &source, &base_dir, &mut attempt).await;
            app.config_source.down(&error);
            let delay = backoff.delay(attempt, None);
            attempt = attempt.saturating_add(1);
            tracing::warn!(prefix = %source.prefix, ?delay, "config source: {error}; keeping the running config");
            tokio::time::sleep(delay).await;
        }
    });
}

/// One connection's life: read, offer, watch and offer each change, until it breaks.
async fn watch(app: &App, source: &ConfigSource, base_dir: &Path, attempt: &mut u32) -> String {
    let mut client = match connect(&source.connect, base_dir).await {
        Ok(client) => client,
        Err(error) => return error,
    };
    let key_prefix = format!("{}/", source.prefix);
    loop {
        let mut snapshot = match read_all(&mut client, &source.prefix).await {
            Ok(snapshot) => snapshot,
            Err(error) => return error,
        };
        *attempt = 0;
        offer(app, &snapshot).await;
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(snapshot.revision + 1)
            .with_progress_notify();
        let mut watch_client = client.watch_client();
        let started = watch_client.watch(key_prefix.clone(), Some(options));
        let mut stream = match tokio::time::timeout(REQUEST_TIMEOUT, started).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => return format!("starting the watch: {error}"),
            Err(_) => return "starting the watch: timed out".into(),
        };
        'watching: loop {
            let mut changed = false;
            let mut wait: Option<Duration> = None;
            // One response, then whatever follows within SETTLE.
            loop {
                let message = match wait {
                    None => stream.message().await,
                    Some(settle) => match tokio::time::timeout(settle, stream.message()).await {
                        Ok(message) => message,
                        Err(_) => break,
                    },
                };
                let response = match message {
                    Ok(Some(response)) => response,
                    Ok(None) => return "etcd closed the watch stream".into(),
                    Err(error) => return format!("watch: {error}"),
                };
                if response.canceled() {
                    tracing::info!(
                        compact_revision = response.compact_revision(),
                        reason = response.cancel_reason(),
                        "config source: etcd cancelled the watch; re-reading the prefix"
                    );
                    break 'watching;
                }
                if let Some(header) = response.header() {
                    snapshot.revision = snapshot.revision.max(header.revision());
                }
                for event in response.events() {
                    let Some(kv) = event.kv() else { continue };
                    let Some(relative) = kv.key().strip_prefix(key_prefix.as_bytes()) else {
                        continue;
                    };
                    let relative = String::from_utf8_lossy(relative).into_owned();
                    changed = true;
                    match event.event_type() {
                        EventType::Put => {
                            snapshot.objects.insert(relative, kv.value().to_vec());
                        }
                        EventType::Delete => {
                            snapshot.objects.remove(&relative);
                        }
                    }
                }
                if !changed {
                    break; // a progress notification
                }
                wait = Some(SETTLE);
            }
            if changed {
                offer(app, &snapshot).await;
            }
        }
    }
}

/// Applies a snapshot unless it is the one running or the one last refused.
async fn offer(app: &App, snapshot: &Snapshot) {
    let running = app.config_source_snapshot();
    if running
        .as_ref()
        .is_some_and(|r| r.objects == snapshot.objects)
    {
        app.config_source
            .ok(snapshot.revision, snapshot.objects.len());
        return;
    }
    if app.config_source.was_refused(&snapshot.objects) {
        // Read again after a reconnect: still the refused objects, not tried twice.
        app.config_source.still_refused(snapshot.revision);
        return;
    }
    let candidate = Arc::new(snapshot.clone());
    match app.apply_config_source(candidate).await {
        Ok(()) => {
            tracing::info!(
                revision = snapshot.revision,
                objects = snapshot.objects.len(),
                "config source: applied"
            );
            app.config_source
                .applied(snapshot.revision, snapshot.objects.len());
        }
        Err(issues) => {
            tracing::error!(
                revision = snapshot.revision,
                errors = issues.len(),
                "config source: change refused, keeping the running config"
            );
            app.config_source.refused(snapshot, &issues);
        }
    }
}

// === status ===

/// What the admin API and metrics say about the config source.
#[derive(Debug, Default)]
pub struct Status {
    inner: Mutex<StatusInner>,
}

#[derive(Debug, Default)]
struct StatusInner {
    configured: Option<(Vec<String>, String)>,
    state: &'static str,
    revision: Option<i64>,
    applied_revision: Option<i64>,
    applied_at: Option<SystemTime>,
    objects: usize,
    last_error: Option<String>,
    refused: Option<Refusal>,
    applied_total: u64,
    refused_total: u64,
}

#[derive(Debug)]
struct Refusal {
    revision: i64,
    at: SystemTime,
    objects: BTreeMap<String, Vec<u8>>,
    errors: Vec<String>,
}

impl Status {
    /// The status of a generation's config source (`None`: off).
    pub fn new(source: Option<&ConfigSource>) -> Status {
        let inner = match source {
            None => StatusInner {
                state: "off",
                ..StatusInner::default()
            },
            Some(source) => StatusInner {
                configured: Some((source.connect.endpoints.clone(), source.prefix.clone())),
                state: "connecting",
                revision: source.snapshot.as_ref().map(|s| s.revision),
                applied_revision: source.snapshot.as_ref().map(|s| s.revision),
                applied_at: source.snapshot.as_ref().map(|_| SystemTime::now()),
                objects: source.snapshot.as_ref().map_or(0, |s| s.objects.len()),
                ..StatusInner::default()
            },
        };
        Status {
            inner: Mutex::new(inner),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut StatusInner) -> T) -> T {
        f(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The running snapshot is current at `revision`.
    pub fn ok(&self, revision: i64, objects: usize) {
        self.with(|s| {
            s.state = "ok";
            s.revision = Some(revision);
            s.applied_revision = Some(revision);
            s.applied_at.get_or_insert_with(SystemTime::now);
            s.objects = objects;
            s.last_error = None;
            s.refused = None;
        });
    }

    /// A new snapshot was applied.
    pub fn applied(&self, revision: i64, objects: usize) {
        self.with(|s| {
            s.applied_total += 1;
            s.applied_at = Some(SystemTime::now());
        });
        self.ok(revision, objects);
    }

    /// A snapshot was refused.
    pub fn refused(&self, snapshot: &Snapshot, issues: &[ConfigIssue]) {
        self.with(|s| {
            s.state = "refused";
            s.revision = Some(snapshot.revision);
            s.last_error = None;
            s.refused_total += 1;
            s.refused = Some(Refusal {
                revision: snapshot.revision,
                at: SystemTime::now(),
                objects: snapshot.objects.clone(),
                errors: issues.iter().map(ToString::to_string).collect(),
            });
        });
    }

    /// Connected again, and etcd still holds the objects last refused.
    pub fn still_refused(&self, revision: i64) {
        self.with(|s| {
            s.state = "refused";
            s.revision = Some(revision);
            s.last_error = None;
        });
    }

    /// Whether exactly these objects were the last ones refused.
    pub fn was_refused(&self, objects: &BTreeMap<String, Vec<u8>>) -> bool {
        self.with(|s| s.refused.as_ref().is_some_and(|r| &r.objects == objects))
    }

    /// The connection broke.
    pub fn down(&self, error: &str) {
        self.with(|s| {
            s.state = "down";
            s.last_error = Some(error.to_owned());
        });
    }

    /// `GET /api/config_source`.
    pub fn to_json(&self) -> Value {
        let time = |t: Option<SystemTime>| t.map(switchyard_proxy::access_log::httpdate_rfc3339);
        self.with(|s| match &s.configured {
            None => json!({"type": null, "state": "off"}),
            Some((endpoints, prefix)) => json!({
                "type": "etcd",
                "endpoints": endpoints,
                "prefix": prefix,
                "state": s.state,
                "revision": s.revision,
                "applied_revision": s.applied_revision,
                "applied_at": time(s.applied_at),
                "objects": s.objects,
                "last_error": s.last_error,
                "refused": s.refused.as_ref().map(|r| json!({
                    "revision": r.revision,
                    "at": time(Some(r.at)),
                    "errors": r.errors,
                })),
                "changes": {"applied": s.applied_total, "refused": s.refused_total},
            }),
        })
    }

    /// Appends the `switchyard_config_source_*` metrics (nothing when off).
    pub fn render_metrics(&self, out: &mut String) {
        self.with(|s| {
            if s.configured.is_none() {
                return;
            }
            let _ = writeln!(
                out,
                "# HELP switchyard_config_source_up 1 while the etcd config source is connected.\n\
                 # TYPE switchyard_config_source_up gauge\nswitchyard_config_source_up {}\n\
                 # HELP switchyard_config_source_revision The etcd revision of the running fleet config.\n\
                 # TYPE switchyard_config_source_revision gauge\nswitchyard_config_source_revision {}\n\
                 # HELP switchyard_config_source_changes_total Fleet config changes from etcd by result.\n\
                 # TYPE switchyard_config_source_changes_total counter\n\
                 switchyard_config_source_changes_total{{result=\"applied\"}} {}\n\
                 switchyard_config_source_changes_total{{result=\"refused\"}} {}",
                u8::from(matches!(s.state, "ok" | "refused")),
                s.applied_revision.unwrap_or(0),
                s.applied_total,
                s.refused_total,
            );
        });
    }
}

// === `switchyard config push|diff` ===

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
}

/// One object's fate in a push.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Not in etcd yet.
    Add(String),
    /// In etcd with another value: the line diff of the pretty JSON.
    Change(String, Vec<String>),
    /// In etcd only (deleted by `--prune`).
    Extra(String),
    /// The same in both.
    Same(String),
}

/// Compares a file's objects with etcd's (values compared after parsing, so a TOML
/// document equal to the JSON one is unchanged).
pub fn compare(file: &BTreeMap<String, Value>, etcd: &BTreeMap<String, Vec<u8>>) -> Vec<Change> {
    let mut changes = Vec::new();
    for (key, value) in file {
        match etcd.get(key) {
            None => changes.push(Change::Add(key.clone())),
            Some(raw) => match parse_document(raw) {
                Ok(current) if current == *value => changes.push(Change::Same(key.clone())),
                Ok(current) => changes.push(Change::Change(
                    key.clone(),
                    line_diff(&pretty(&current), &pretty(value)),
                )),
                Err(_) => changes.push(Change::Change(
                    key.clone(),
                    vec![
                        format!("- {}", String::from_utf8_lossy(raw)),
                        format!("+ {}", pretty(value)),
                    ],
                )),
            },
        }
    }
    for key in etcd.keys() {
        if !file.contains_key(key) {
            changes.push(Change::Extra(key.clone()));
        }
    }
    changes
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

/// A line diff (longest common subsequence): `- old`, `+ new` lines, unchanged lines left out.
fn line_diff(old: &str, new: &str) -> Vec<String> {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            i += 1;
            j += 1;
        } else if j < b.len() && (i == a.len() || lcs[i][j + 1] > lcs[i + 1][j]) {
            out.push(format!("+ {}", b[j].trim()));
            j += 1;
        } else {
            out.push(format!("- {}", a[i].trim()));
            i += 1;
        }
    }
    out
}

/// Renders a comparison for the terminal.
pub fn render_changes(prefix: &str, changes: &[Change], prune: bool) -> String {
    let mut out = String::new();
    let mut same = 0;
    for change in changes {
        match change {
            Change::Add(key) => {
                let _ = writeln!(out, "+ {prefix}/{key}");
            }
            Change::Change(key, lines) => {
                let _ = writeln!(out, "~ {prefix}/{key}");
                for line in lines {
                    let _ = writeln!(out, "    {line}");
                }
            }
            Change::Extra(key) if prune => {
                let _ = writeln!(out, "- {prefix}/{key}");
            }
            Change::Extra(key) => {
                let _ = writeln!(
                    out,
                    "  {prefix}/{key} (only in etcd: kept; --prune deletes it)"
                );
            }
            Change::Same(_) => same += 1,
        }
    }
    let _ = writeln!(out, "{same} unchanged");
    out
}

/// Runs `switchyard config push|diff`.
pub fn run_command(command: ConfigCommand) -> ExitCode {
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
    let value = match crate::config::read(&from) {
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
        if let Err(issues) = app::load_plan(&from, &app::catalog(), None) {
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
        let mut client = match connect(&connect_settings, Path::new(".")).await {
            Ok(client) => client,
            Err(error) => return fail(error),
        };
        let current = match read_all(&mut client, &prefix).await {
            Ok(snapshot) => snapshot,
            Err(error) => return fail(error),
        };
        let changes = compare(&objects, &current.objects);
        let Some((prune, _)) = push else {
            print!("{}", render_changes(&prefix, &changes, false));
            let differs = changes.iter().any(|c| !matches!(c, Change::Same(_)));
            return ExitCode::from(u8::from(differs));
        };
        match push_changes(&mut client, &prefix, &objects, &changes, prune).await {
            Ok(written) => {
                print!("{}", render_changes(&prefix, &changes, prune));
                println!("pushed {written} change(s) to {prefix}");
                ExitCode::SUCCESS
            }
            Err(error) => fail(error),
        }
    })
}

/// Writes the changes: one transaction when they fit, else definitions first (upstreams,
/// consumers, policies), then routes, then deletions, so that watchers see as few
/// half-applied states as possible.
async fn push_changes(
    client: &mut Client,
    prefix: &str,
    objects: &BTreeMap<String, Value>,
    changes: &[Change],
    prune: bool,
) -> Result<usize, String> {
    let mut puts_first = Vec::new();
    let mut puts_routes = Vec::new();
    let mut deletes = Vec::new();
    for change in changes {
        match change {
            Change::Add(key) | Change::Change(key, _) => {
                let op = TxnOp::put(format!("{prefix}/{key}"), pretty(&objects[key]), None);
                if key.starts_with("routes/") {
                    puts_routes.push(op);
                } else {
                    puts_first.push(op);
                }
            }
            Change::Extra(key) if prune => {
                deletes.push(TxnOp::delete(format!("{prefix}/{key}"), None));
            }
            _ => {}
        }
    }
    let ops: Vec<TxnOp> = puts_first
        .into_iter()
        .chain(puts_routes)
        .chain(deletes)
        .collect();
    let written = ops.len();
    let mut ops = ops.into_iter().peekable();
    while ops.peek().is_some() {
        let chunk: Vec<TxnOp> = ops.by_ref().take(MAX_TXN_OPS).collect();
        let txn = client.txn(Txn::new().and_then(chunk));
        match tokio::time::timeout(REQUEST_TIMEOUT, txn).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => return Err(format!("writing to etcd: {error}")),
            Err(_) => return Err("writing to etcd: timed out".into()),
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(objects: &[(&str, &str)]) -> Snapshot {
        Snapshot {
            prefix: DEFAULT_PREFIX.into(),
            revision: 7,
            objects: objects
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
                .collect(),
        }
    }

    /// Merges `objects` over `file` and compares with the expected merged value, or the
    /// expected issue strings.
    fn check(file: Value, objects: &[(&str, &str)], expected: Result<Value, &[&str]>) {
        let (value, _, issues) = merge(&file, &snapshot(objects));
        let issues: Vec<String> = issues.iter().map(ToString::to_string).collect();
        let got = if issues.is_empty() {
            Ok(value)
        } else {
            Err(issues)
        };
        match (got, expected) {
            (Ok(value), Ok(want)) => assert_eq!(value, want, "{objects:?}"),
            (Err(issues), Err(want)) => {
                assert_eq!(issues.len(), want.len(), "{issues:?}");
                for (issue, want) in issues.iter().zip(want) {
                    assert!(issue.contains(want), "{issue:?} lacks {want:?}");
                }
            }
            (got, want) => panic!("{objects:?}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn merges_objects_over_the_file() {
        let file = json!({"registries": {"r": {"type": "static"}},
            "upstreams": {"a": {"balancer": "random"}},
            "routes": [{"name": "one", "upstream": "a"}, {"name": "two", "upstream": "a"}]});
        // Nothing in etcd: the file as it is.
        check(file.clone(), &[], Ok(file.clone()));
        // A new upstream and route (JSON and TOML), a route replacing the file's by name.
        check(
            file.clone(),
            &[
                ("upstreams/b", "balancer = \"ewma\""),
                ("routes/two", r#"{"upstream": "b", "path_prefix": "/two"}"#),
                ("routes/zz", r#"{"name": "zz", "upstream": "b"}"#),
                ("consumers/alice", r#"{"keys": ["k"]}"#),
                ("route_defaults/retries", "2"),
            ],
            Ok(json!({"registries": {"r": {"type": "static"}},
                "upstreams": {"a": {"balancer": "random"}, "b": {"balancer": "ewma"}},
                "consumers": {"alice": {"keys": ["k"]}},
                "route_defaults": {"retries": 2},
                "routes": [{"name": "one", "upstream": "a"},
                           {"name": "two", "upstream": "b", "path_prefix": "/two"},
                           {"name": "zz", "upstream": "b"}]})),
        );
        // Every bad object is reported, with its key.
        check(
            file,
            &[
                ("registries/r", "{}"),
                ("routes/x", "{not json"),
                ("routes/y", r#"{"name": "other", "upstream": "a"}"#),
                ("routes/z", "[1]"),
                ("stray", "1"),
                ("upstreams/a b", "{}"),
                ("widgets/w", "{}"),
            ],
            Err(&[
                "etcd:/switchyard/config/registries/r: registries are not read from etcd",
                "etcd:/switchyard/config/routes/x: invalid JSON",
                "etcd:/switchyard/config/routes/y: name: \"other\" differs",
                "etcd:/switchyard/config/routes/z: a route must be a table",
                "etcd:/switchyard/config/stray: not a config object",
                "etcd:/switchyard/config/upstreams/a b: \"a b\": an object name has no whitespace",
                "etcd:/switchyard/config/widgets/w: unknown section \"widgets\"",
            ]),
        );
    }

    #[test]
    fn issues_name_the_etcd_key() {
        let file = json!({"routes": [{"name": "one", "upstream": "a"}]});
        let (_, origins, issues) = merge(
            &file,
            &snapshot(&[
                ("routes/web", "{}"),
                ("upstreams/web", "{}"),
                ("consumers/al", "{}"),
            ]),
        );
        assert!(issues.is_empty(), "{issues:?}");
        let cases = [
            (
                "routes[1].upstream",
                "etcd:/switchyard/config/routes/web: upstream: m",
            ),
            ("routes[1]", "etcd:/switchyard/config/routes/web: m"),
            ("routes[0].upstream", "routes[0].upstream: m"),
            ("routes[10]", "routes[10]: m"),
            (
                "upstreams.web.sources[0].registry",
                "etcd:/switchyard/config/upstreams/web: sources[0].registry: m",
            ),
            ("upstreams.webx", "upstreams.webx: m"),
            (
                "consumers.al.keys[0]",
                "etcd:/switchyard/config/consumers/al: keys[0]: m",
            ),
        ];
        for (path, want) in cases {
            let got = origins.translate(vec![ConfigIssue::new(path, "m")]);
            assert_eq!(got[0].to_string(), want, "{path}");
        }
    }

    #[test]
    fn decodes_the_section() {
        let ok = |value: Value, prefix: &str| {
            let source = decode(&value).unwrap_or_else(|e| panic!("{value}: {e:?}"));
            assert_eq!(source.prefix, prefix, "{value}");
        };
        let bad = |value: Value, want: &[&str]| {
            let issues: Vec<String> = decode(&value)
                .unwrap_err()
                .iter()
                .map(ToString::to_string)
                .collect();
            assert_eq!(issues.len(), want.len(), "{value}: {issues:?}");
            for (issue, want) in issues.iter().zip(want) {
                assert!(issue.contains(want), "{issue:?} lacks {want:?}");
            }
        };
        ok(
            json!({"type": "etcd", "endpoints": ["http://127.0.0.1:2379"]}),
            DEFAULT_PREFIX,
        );
        ok(
            json!({"type": "etcd", "endpoints": ["http://a:1"], "prefix": "/fleet/a/", "startup_timeout": "2s"}),
            "/fleet/a",
        );
        // A relative TLS path is resolved against the config file when connecting.
        ok(
            json!({"type": "etcd", "endpoints": ["https://a:1"], "ca": "certs/ca.pem"}),
            DEFAULT_PREFIX,
        );
        bad(json!({"endpoints": ["http://a:1"]}), &["type: missing"]);
        bad(
            json!({"type": "consul", "endpoints": ["http://a:1"]}),
            &["type: unknown config source type \"consul\""],
        );
        bad(json!({"type": "etcd"}), &["endpoints: missing"]);
        bad(
            json!({"type": "etcd", "endpoints": ["http://a:1"], "prefix": "x", "startup_timeout": "soon"}),
            &["startup_timeout: ", "prefix: must start with '/'"],
        );
        bad(
            json!({"type": "etcd", "endpoints": ["http://a:1"], "colour": 1}),
            &["colour: unknown key"],
        );
        bad(
            json!({"type": "etcd", "endpoints": ["http://a:1"], "ca": "/nonexistent/ca.pem"}),
            &["endpoints[0]: TLS settings", "ca: no such file"],
        );
        bad(json!("etcd"), &["must be a table"]);
    }

    #[test]
    fn file_objects_and_diff() {
        let file = json!({"server": {"listen": "0.0.0.0:1"}, "registries": {"r": {}},
            "upstreams": {"a": {"balancer": "random"}},
            "routes": [{"name": "one", "upstream": "a"}, {"upstream": "a"}],
            "auth": {"jwt": {"secret": "s"}}});
        let objects = objects_of(&file).unwrap();
        let keys: Vec<&str> = objects.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["auth/jwt", "routes/one", "routes/route-1", "upstreams/a"]
        );

        let etcd: BTreeMap<String, Vec<u8>> = [
            ("upstreams/a", "balancer = \"random\""),
            ("routes/one", r#"{"name": "one", "upstream": "b"}"#),
            ("routes/old", "{}"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
        .collect();
        let changes = compare(&objects, &etcd);
        assert_eq!(
            changes,
            [
                Change::Add("auth/jwt".into()),
                Change::Change(
                    "routes/one".into(),
                    vec![
                        "- \"upstream\": \"b\"".into(),
                        "+ \"upstream\": \"a\"".into()
                    ]
                ),
                Change::Add("routes/route-1".into()),
                Change::Same("upstreams/a".into()),
                Change::Extra("routes/old".into()),
            ]
        );
        let text = render_changes("/p", &changes, true);
        assert!(
            text.contains("+ /p/auth/jwt\n~ /p/routes/one\n    - \"upstream\": \"b\"\n"),
            "{text}"
        );
        assert!(text.contains("- /p/routes/old\n1 unchanged\n"), "{text}");

        let bad = json!({"routes": [{"name": "a"}, {"name": "a"}, {"name": 3}], "upstreams": []});
        let issues: Vec<String> = objects_of(&bad)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            issues,
            [
                "routes[1].name: \"a\" names two routes",
                "routes[2].name: must be a string",
                "upstreams: must be a table"
            ]
        );
    }

    #[test]
    fn status_states() {
        let state = |status: &Status| status.to_json()["state"].as_str().unwrap().to_owned();
        assert_eq!(state(&Status::new(None)), "off");
        let source = decode(&json!({"type": "etcd", "endpoints": ["http://a:1"]})).unwrap();
        let status = Status::new(Some(&source));
        assert_eq!(state(&status), "connecting");
        status.applied(5, 2);
        assert_eq!(state(&status), "ok");
        let bad = snapshot(&[("routes/x", "{")]);
        status.refused(
            &bad,
            &[ConfigIssue::new(
                "etcd:/switchyard/config/routes/x",
                "invalid JSON",
            )],
        );
        assert_eq!(state(&status), "refused");
        assert!(status.was_refused(&bad.objects));
        status.down("connection refused");
        assert_eq!(state(&status), "down");
        status.still_refused(8);
        let json = status.to_json();
        assert_eq!(
            (json["state"].as_str(), json["applied_revision"].as_i64()),
            (Some("refused"), Some(5))
        );
        assert_eq!(
            json["refused"]["errors"][0],
            "etcd:/switchyard/config/routes/x: invalid JSON"
        );
        let mut metrics = String::new();
        status.render_metrics(&mut metrics);
        for line in [
            "switchyard_config_source_up 1",
            "switchyard_config_source_revision 5",
            "switchyard_config_source_changes_total{result=\"applied\"} 1",
            "switchyard_config_source_changes_total{result=\"refused\"} 1",
        ] {
            assert!(metrics.contains(line), "{line} not in {metrics}");
        }
        status.ok(9, 2);
        assert!(status.to_json()["refused"].is_null());
    }

    #[test]
    fn documents() {
        let check =
            |raw: &str, want: Result<Value, &str>| match (parse_document(raw.as_bytes()), want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{raw}"),
                (Err(got), Err(want)) => assert!(got.contains(want), "{raw}: {got}"),
                (got, want) => panic!("{raw}: got {got:?}, want {want:?}"),
            };
        check(r#"{"a": 1}"#, Ok(json!({"a": 1})));
        check(
            "a = 1\n[b]\nc = \"x\"",
            Ok(json!({"a": 1, "b": {"c": "x"}})),
        );
        check("[\"key\"]", Ok(json!(["key"])));
        check("{\"a\": ", Err("invalid JSON"));
        check(
            "[health_check]\npath = \"/h\"",
            Ok(json!({"health_check": {"path": "/h"}})),
        );
        check("a = = 1", Err("neither JSON"));
    }
}
