//! libFuzzer entry for `switchyard::fuzzing::http_sd` (see docs/fuzzing.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard::fuzzing::http_sd(data));
