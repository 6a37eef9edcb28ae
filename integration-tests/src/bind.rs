//! Launcher for a real bind9 `named` server (owned by the DNS work; being written).
