//! Launcher for a real etcd server (owned by the etcd work; being written).
