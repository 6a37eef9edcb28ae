//! The integration-test harness: free ports, real HTTP backends, the real `switchyard`
//! binary, and launchers for the real registry servers (etcd, bind9) used by the tests in
//! `integration-tests/tests/`.

pub mod bind;
pub mod etcd;
