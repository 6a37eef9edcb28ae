//! libFuzzer entry for `switchyard::fuzzing::etcd_value` (see docs/fuzzing.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard::fuzzing::etcd_value(data));
