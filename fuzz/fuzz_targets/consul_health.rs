//! libFuzzer entry for `switchyard_devtools::fuzzing::consul_health` (see docs/fuzzing.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard_devtools::fuzzing::consul_health(data));
