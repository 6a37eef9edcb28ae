//! Switchyard's development tools: code that tests, fuzzing and benchmarks need and the
//! gateway does not, kept out of the production library (`switchyard`).
//!
//! - [`fuzzing`]: the fuzz targets, one `fn(&[u8])` per decoder or matcher that untrusted
//!   bytes reach, with a reference router to compare the real one against. `fuzz/` (cargo-fuzz)
//!   and `tests/fuzz_smoke.rs` (stable) drive them.

pub mod fuzzing;
