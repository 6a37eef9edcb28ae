//! Switchyard, the gateway: configuration, planning, the running app with reload, the admin
//! API and the command line. The `switchyard` executable is a thin `main` over [`cli`] that
//! adds the `demo` and `backend` tools (`src/tools/`, not part of this library).
//!
//! Exposed as a library so that tools (fuzz targets in `switchyard-devtools`, tests) reach
//! the config loader and planner the way the binary does.
//!
//! Modules and the way data flows between them (no import circle):
//! `config_source` (fleet config: settings, merge, etcd, watcher) ← `config` (the file's
//! model) ← `plan` (+ `policy`) ← `load` (file → plan) ← `app` (the running gateway) ←
//! `admin`, `status`, `cli`; `api` (the admin API's response types) imports nothing of
//! the crate and is used by `admin` (with its `openapi`), `status`, `history` and `config_source`.

pub mod admin;
pub mod api;
pub mod app;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod config_cmd;
pub mod config_source;
pub mod dashboard;
pub mod history;
pub mod load;
pub mod metrics_page;
pub mod plan;
pub mod policy;
pub mod schema;
pub mod status;
pub mod telemetry;
pub mod warnings;
