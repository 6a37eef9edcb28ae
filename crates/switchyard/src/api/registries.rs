//! `GET /api/registries`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One registry of the running config.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, ToSchema)]
pub struct Registry {
    /// Its name in config.
    pub name: String,
    /// Its `type` (`consul`, `kubernetes`, `etcd`...).
    #[serde(rename = "type")]
    pub kind: String,
    /// `syncing`, `ok`, `degraded` or `down`.
    pub state: String,
    /// Distinct services watched in it.
    pub services: u64,
    /// Endpoints it provides now, over all watched services.
    pub endpoints: u64,
    /// The newest update from it (RFC 3339), `null` before any.
    pub last_update: Option<String>,
    /// The error of a failing service, if any.
    pub last_error: Option<String>,
    /// Updates received since start.
    pub updates: u64,
    /// Errors since start.
    pub errors: u64,
}
