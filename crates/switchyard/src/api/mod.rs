//! The admin API's response types: one `serde` type per answer, shared by the handlers
//! (`admin/`), `switchyard status`, the OpenAPI document (`admin/openapi.rs`, generated from
//! these types with `utoipa`) and the tests, so that a field cannot drift between them.
//! docs/admin-api.md describes the same fields for people.
//!
//! One module per resource. The JSON names are the API's and never change; new fields are
//! added, not renamed.

mod cache;
mod config_source;
mod error;
mod history;
mod readyz;
mod registries;
mod reload;
mod routes;
mod stats;
mod upstreams;

pub use cache::Purged;
pub use config_source::{ConfigChanges, ConfigRefusal, ConfigSourceStatus};
pub use error::ErrorBody;
pub use history::{Event, HistoryDocument, HistoryPoint, RegistryPoint, RoutePoint, UpstreamPoint};
pub use readyz::Readiness;
pub use registries::Registry;
pub use reload::ReloadOutcome;
pub use routes::{RouteEntry, RouteWindow};
pub use stats::{ConsumerUsage, Latency, RouteUsage, Stats, Usage};
pub use upstreams::{Endpoint, EndpointHealth, EndpointSource, Source, Tier, Upstream};
