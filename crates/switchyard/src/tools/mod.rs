//! The executable's tools: `switchyard demo` and `switchyard backend`.

pub mod backend;
pub mod demo;
