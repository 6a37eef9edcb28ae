//! Placeholder: switchyard-etcd is being written.
