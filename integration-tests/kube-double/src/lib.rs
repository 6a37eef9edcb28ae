//! Placeholder: switchyard-kube-double is being written.
