//! `GET /api/config_source`: the fleet config source's state.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The fleet config source. Off: `{"type": null, "state": "off"}` and nothing else; with
/// an etcd source every field is present (`null` where unknown).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, ToSchema)]
pub struct ConfigSourceStatus {
    /// `etcd`, or `null` when off.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// `off`, `connecting`, `ok`, `refused` or `down`.
    pub state: String,
    /// The etcd endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Vec<String>>,
    /// The key prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// The newest etcd revision seen.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "present")]
    #[schema(value_type = Option<i64>)]
    pub revision: Option<Option<i64>>,
    /// The revision running.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "present")]
    #[schema(value_type = Option<i64>)]
    pub applied_revision: Option<Option<i64>>,
    /// When it was applied (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "present")]
    #[schema(value_type = Option<String>)]
    pub applied_at: Option<Option<String>>,
    /// Objects (keys) in the running config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objects: Option<u64>,
    /// The connection's last error, while down.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "present")]
    #[schema(value_type = Option<String>)]
    pub last_error: Option<Option<String>>,
    /// The last refused change, while etcd holds it.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "present")]
    #[schema(value_type = Option<ConfigRefusal>)]
    pub refused: Option<Option<ConfigRefusal>>,
    /// Changes applied and refused since start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changes: Option<ConfigChanges>,
}

/// A refused fleet config change.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, ToSchema)]
pub struct ConfigRefusal {
    /// Its etcd revision.
    pub revision: i64,
    /// When it was refused (RFC 3339).
    pub at: Option<String>,
    /// Why, one line per problem naming its key.
    pub errors: Vec<String>,
}

/// Counts of fleet config changes.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, ToSchema)]
pub struct ConfigChanges {
    /// Applied.
    pub applied: u64,
    /// Refused.
    pub refused: u64,
}

/// A field that is absent (outer `None`) or present and maybe `null` (inner `None`).
mod present {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer, T: Serialize>(
        value: &Option<Option<T>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(inner) => inner.serialize(serializer),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
        deserializer: D,
    ) -> Result<Option<Option<T>>, D::Error> {
        Option::<T>::deserialize(deserializer).map(Some)
    }
}
