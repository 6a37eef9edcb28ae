//! Placeholder: switchyard-consul-double is being written.
