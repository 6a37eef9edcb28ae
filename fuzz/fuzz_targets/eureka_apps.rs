//! libFuzzer entry for `switchyard::fuzzing::eureka_apps` (see docs/fuzzing.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard::fuzzing::eureka_apps(data));
