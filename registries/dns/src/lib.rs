//! Placeholder: switchyard-dns is being written.
