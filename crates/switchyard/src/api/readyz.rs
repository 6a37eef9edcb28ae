//! `GET /readyz` when not simply `ready`: what is still pending.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The JSON answer of `/readyz` while sources are still syncing (503, `starting`) or after
/// `server.startup_grace` ran out with some still syncing (200, `ready`). With every source
/// synced the answer is the text `ready`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, ToSchema)]
pub struct Readiness {
    /// `starting` or `ready`.
    pub status: String,
    /// `true` when the gateway is ready because the grace ran out (absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_grace_expired: Option<bool>,
    /// The sources (`registry/service`) without a first answer yet.
    pub pending: Vec<String>,
}
