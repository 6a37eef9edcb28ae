//! libFuzzer entry for `switchyard_proxy::fuzzing::http1_request_guard` (see docs/fuzzing.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard_proxy::fuzzing::http1_request_guard(data));
