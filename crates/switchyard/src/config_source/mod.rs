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
//! The watcher ([`watcher::spawn`]) reads the prefix at one revision, then watches from the
//! next one. Every change (a watch response, i.e. one transaction, plus whatever follows
//! within [`watcher::SETTLE`]) becomes a candidate [`Snapshot`], which the watcher offers to
//! the running gateway through the small [`watcher::Target`] trait; the gateway merges it
//! with the file ([`merge::merge`]) and validates it exactly like a file reload. An invalid candidate is
//! refused as a whole: its errors are logged with the etcd key of the object at fault,
//! counted (`switchyard_config_source_changes_total{result="refused"}`), shown by
//! `/api/config_source` and the dashboard, and the running generation (file + the last good
//! snapshot) stays. The next change is tried afresh; fixing or deleting the bad object
//! lets it through. While etcd is unreachable the last good snapshot stays in force and
//! the watcher reconnects with backoff; a reconnect re-reads the whole prefix.
//!
//! At start-up (`crate::load::Loader::startup_plan`) the gateway waits up to `startup_timeout` for a first
//! read, so it starts serving with the fleet's routes; when etcd cannot be read in time, or
//! its objects do not validate with the file, it starts on the file alone and keeps trying.
//!
//! `switchyard config push|diff` ([`push`], wired in `crate::config_cmd`) write a file's objects to the prefix
//! (one transaction when possible) and show what a push would change.//!
//! ## Modules, one job each
//!
//! | module       | job                                                                  |
//! |--------------|----------------------------------------------------------------------|
//! | [`settings`] | the `[config_source]` table                                          |
//! | [`merge`]    | the pure merge of etcd objects over the file (no I/O)                |
//! | [`etcd`]     | connecting (through `switchyard-etcd`) and reading the prefix        |
//! | [`watcher`]  | the watch loop; talks to the gateway through [`watcher::Target`]     |
//! | [`status`]   | what `/api/config_source` and the metrics say                        |
//! | [`push`]     | `config push|diff`: compare, render, write                           |
//!
//! Nothing here imports the app, the planner or the config model: data flows from here into
//! them, never back.

pub mod etcd;
pub mod merge;
pub mod push;
pub mod settings;
pub mod status;
pub mod watcher;

pub use merge::{merge, objects_of, parse_document, Origins, Snapshot, OBJECT_SECTIONS};
pub use push::{compare, render_changes, Change};
pub use settings::{decode, ConfigSource, DEFAULT_PREFIX, DEFAULT_STARTUP_TIMEOUT};
pub use status::Status;
