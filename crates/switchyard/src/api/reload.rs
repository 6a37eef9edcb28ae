//! `POST /api/reload`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The result of a reload: `{"status": "reloaded"}` (200) or `{"status": "refused",
/// "errors": [...]}` (422, the running config stays).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, ToSchema)]
pub struct ReloadOutcome {
    /// `reloaded` or `refused`.
    pub status: String,
    /// Why it was refused, one line per problem naming its key (only when refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<String>>,
}
