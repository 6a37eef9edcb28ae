//! The body of every admin error answer (400, 401, 404, 405, 422 from `/api/stats`...).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `{"error": "..."}`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for people.
    pub error: String,
}

impl ErrorBody {
    /// An error saying `message`.
    pub fn new(message: impl Into<String>) -> ErrorBody {
        ErrorBody {
            error: message.into(),
        }
    }
}
