//! libFuzzer entry for `switchyard::fuzzing::consul_health` (see docs/fuzzing.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard::fuzzing::consul_health(data));
