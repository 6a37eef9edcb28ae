//! libFuzzer entry for `switchyard_proxy::fuzzing::http1_response_codec` (see docs/fuzzing.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard_proxy::fuzzing::http1_response_codec(data));
