//! libFuzzer entry for `switchyard_devtools::fuzzing::router` (see docs/fuzzing.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard_devtools::fuzzing::router(data));
