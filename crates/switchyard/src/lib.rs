//! Switchyard, the gateway: configuration, planning, the running app with reload, the admin
//! API and the command line. The `switchyard` executable is a thin `main` over [`cli`].
//!
//! Exposed as a library so that tools (fuzz targets, benchmarks) reach the config loader
//! and planner the way the binary does.

pub mod admin;
pub mod app;
pub mod backend;
pub mod cli;
pub mod config;
pub mod config_source;
pub mod dashboard;
pub mod demo;
pub mod fuzzing;
pub mod history;
pub mod openapi;
pub mod plan;
pub mod policy;
pub mod status;
pub mod telemetry;
