//! Counters a registry backend shares with the rest of the gateway.

use std::sync::atomic::{AtomicU64, Ordering};

/// Per-registry counters, exported as `switchyard_registry_updates_total{registry}` and
/// `switchyard_registry_errors_total{registry}`.
///
/// Backends count malformed entries here through [`RegistryMetrics::malformed`]; the
/// upstream cache counts updates and stream errors.
#[derive(Debug, Default)]
pub struct RegistryMetrics {
    updates: AtomicU64,
    errors: AtomicU64,
}

impl RegistryMetrics {
    /// Counts one applied update.
    pub fn record_update(&self) {
        self.updates.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one error (a broken stream, a refused request).
    pub fn record_error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts and logs one malformed entry that the backend skipped. The rest of the
    /// service's instances stay: a bad entry never drops its neighbours.
    pub fn malformed(&self, registry: &str, what: impl std::fmt::Display) {
        tracing::warn!(registry, "skipping malformed entry: {what}");
        self.record_error();
    }

    /// Updates counted so far.
    pub fn updates(&self) -> u64 {
        self.updates.load(Ordering::Relaxed)
    }

    /// Errors counted so far.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }
}
