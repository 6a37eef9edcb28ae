//! libFuzzer entry for `switchyard_devtools::fuzzing::dns_answer` (see docs/fuzzing.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard_devtools::fuzzing::dns_answer(data));
