//! libFuzzer entry for `switchyard::fuzzing::endpoint_slice` (see docs/fuzzing.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard::fuzzing::endpoint_slice(data));
