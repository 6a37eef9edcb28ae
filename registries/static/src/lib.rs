//! Placeholder: switchyard-static is being written.
