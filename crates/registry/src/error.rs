//! Registry errors, each saying whether and how soon to retry.
//!
//! Like kube-runtime's `watcher::Error`, every error is documented as retryable or not;
//! the shared [`crate::recover`] wrapper reads [`RegistryError::kind`] to pick the delay.

use std::time::Duration;

/// What went wrong, as far as retrying is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The registry could not be reached or dropped the connection (connect refused,
    /// timeout, stream ended). Retryable with the normal backoff.
    Unavailable,
    /// The registry answered something this backend could not use (bad status, bad JSON,
    /// SERVFAIL). Retryable with the normal backoff.
    Protocol,
    /// The registry refused our credentials (HTTP 401/403, ACL not found). Retryable, but
    /// never hot: the delay starts at [`crate::Backoff::slow_retry`], since only an operator can
    /// fix it.
    Unauthorized,
    /// The query can never succeed (a malformed service name that slipped past
    /// `check_query`). Retried at the slow pace only, in case the registry changes.
    InvalidQuery,
}

/// An error from a registry backend.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct RegistryError {
    kind: ErrorKind,
    message: String,
    retry_after: Option<Duration>,
}

impl RegistryError {
    /// An error of the given kind.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        RegistryError {
            kind,
            message: message.into(),
            retry_after: None,
        }
    }

    /// The registry is unreachable or the connection dropped.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }

    /// The registry answered with something unusable.
    pub fn protocol(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Protocol, message)
    }

    /// The registry refused our credentials.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unauthorized, message)
    }

    /// The query cannot succeed.
    pub fn invalid_query(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidQuery, message)
    }

    /// Asks the recover wrapper to wait at least this long before the next attempt (a
    /// server's `Retry-After`, a lease TTL).
    #[must_use]
    pub fn with_retry_after(mut self, delay: Duration) -> Self {
        self.retry_after = Some(delay);
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The human-readable message, shown in `/api/registries` as `last_error`.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The minimum delay the backend asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// Whether retrying with the normal (fast) backoff can help.
    pub fn is_retryable(&self) -> bool {
        matches!(self.kind, ErrorKind::Unavailable | ErrorKind::Protocol)
    }
}
