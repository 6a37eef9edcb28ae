//! `POST /api/cache/purge?route=&host=&path=&prefix=`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// How many cached responses a purge removed.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, ToSchema)]
pub struct Purged {
    /// Responses removed.
    pub purged: u64,
}
