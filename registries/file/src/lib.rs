//! Placeholder: switchyard-file is being written.
