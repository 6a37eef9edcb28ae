//! Placeholder: switchyard-integration-tests is being written.
