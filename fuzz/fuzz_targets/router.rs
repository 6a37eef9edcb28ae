//! libFuzzer entry for `switchyard::fuzzing::router` (see docs/fuzzing.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard::fuzzing::router(data));
