//! Placeholder: switchyard is being written.
