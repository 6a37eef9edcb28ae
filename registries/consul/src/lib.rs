//! Placeholder: switchyard-consul is being written.
