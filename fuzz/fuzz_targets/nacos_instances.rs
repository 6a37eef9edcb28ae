//! libFuzzer entry for `switchyard::fuzzing::nacos_instances` (see docs/fuzzing.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard::fuzzing::nacos_instances(data));
