//! Placeholder: switchyard-kubernetes is being written.
