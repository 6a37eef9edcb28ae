//! libFuzzer entry for `switchyard::fuzzing::nomad_service` (see docs/fuzzing.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard::fuzzing::nomad_service(data));
