//! libFuzzer entry for `switchyard::fuzzing::config` (see docs/fuzzing.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard::fuzzing::config(data));
