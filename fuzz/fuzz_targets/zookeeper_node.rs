//! libFuzzer entry for `switchyard::fuzzing::zookeeper_node` (see docs/fuzzing.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard::fuzzing::zookeeper_node(data));
