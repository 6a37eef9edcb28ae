//! The configuration model and loading: TOML (or YAML/JSON) through the `config` crate,
//! with `SWITCHYARD__SECTION__KEY` environment overrides.
//!
//! Every struct refuses unknown keys. The file is first read into a JSON value, then each
//! table is decoded on its own, so that one run reports every bad table at once, each
//! error naming its key path (`upstreams.orders.sources[0].registry: ...`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use switchyard_registry::{decode_settings, field_names, ConfigIssue};

/// `[server]`: the data-plane listener.
#[derive(Clone, Debug, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on. Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// Runtime worker threads. Default: one per core.
    pub workers: Option<usize>,
    /// Time allowed to connect to an endpoint. Default 2 s.
    #[schemars(with = "String")]
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Time allowed for a request's headers to arrive. Default 30 s.
    #[schemars(with = "String")]
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// How long SIGTERM waits for in-flight requests. Default 30 s.
    #[schemars(with = "String")]
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// Idle upstream connections are closed after this. Default 90 s.
    #[schemars(with = "String")]
    #[serde(with = "humantime_serde")]
    pub pool_idle_timeout: Duration,
    /// Idle upstream connections kept per endpoint. Default 256.
    pub pool_max_idle_per_endpoint: usize,
    /// `/readyz` turns ready after this even if a source has not synced. Default 10 s.
    #[schemars(with = "String")]
    #[serde(with = "humantime_serde")]
    pub startup_grace: Duration,
    /// Largest request head; larger gets 431. Default 32 KiB.
    pub max_header_bytes: ByteSize,
    /// Most request headers; more gets 431. Default 100.
    pub max_headers: usize,
    /// Longest request target (path and query); longer gets 414. Default 8 KiB.
    pub max_uri_bytes: ByteSize,
    /// Largest request body (routes may set their own `max_body`); larger gets 413, also
    /// when chunked. Default 10 MiB.
    pub max_body: ByteSize,
    /// A request body silent this long is cut off with 408. Default 60 s.
    #[schemars(with = "String")]
    #[serde(with = "humantime_serde")]
    pub body_idle_timeout: Duration,
    /// Open client connections at most; past it, 503 and close. Default 10,000.
    pub max_connections: usize,
    /// Requests in flight at most; past it, 503 at once. 0 = no cap. Default 0.
    pub max_in_flight: usize,
    /// CIDR blocks of proxies allowed to set `X-Forwarded-*`; from anyone else those
    /// headers are replaced. Default: none.
    pub trusted_proxies: Vec<String>,
    /// Idle upgraded (WebSocket) tunnels close after this. Default 5 min.
    #[schemars(with = "String")]
    #[serde(with = "humantime_serde")]
    pub upgrade_idle_timeout: Duration,
    /// HTTP/2 concurrent streams per connection. Default 100.
    pub h2_max_concurrent_streams: u32,
    /// HTTP/2 initial stream window. Default 1 MiB.
    pub h2_initial_stream_window: ByteSize,
    /// HTTP/2 initial connection window. Default 2 MiB.
    pub h2_initial_connection_window: ByteSize,
    /// Address of the TLS listener (needs `[server.tls]`). Default: none.
    pub tls_listen: Option<SocketAddr>,
    /// TLS certificates for `tls_listen`.
    pub tls: Option<TlsSettings>,
    /// Make the plain listener answer every request with a redirect to https
    /// (`tls_listen`'s port). Default false.
    pub redirect_to_https: bool,
    /// `[server.path_normalization]`: how request paths are normalized before routing.
    pub path_normalization: PathNormalizationConfig,
    /// The gateway's own zone (`eu-west-1a`), for upstreams with `zone_aware = true`; also
    /// `SWITCHYARD__SERVER__ZONE`. Default: none.
    pub zone: Option<String>,
}

/// `[server.path_normalization]` (SECURITY.md, docs/path-normalization.md).
#[derive(Clone, Copy, Debug, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct PathNormalizationConfig {
    /// RFC 3986 normalization (unreserved `%XX` decoded, dot segments removed, `..` above
    /// the root refused with 400). Default true.
    pub normalize: bool,
    /// Runs of slashes merged into one. Default true.
    pub merge_slashes: bool,
    /// Encoded slashes (`%2F`, `%5C`): `keep`, `reject` (400, the default),
    /// `unescape_and_redirect` (307) or `unescape_and_forward`.
    pub escaped_slashes: EscapedSlashesConfig,
}

impl Default for PathNormalizationConfig {
    fn default() -> Self {
        PathNormalizationConfig {
            normalize: true,
            merge_slashes: true,
            escaped_slashes: EscapedSlashesConfig::Reject,
        }
    }
}

/// `escaped_slashes` of `[server.path_normalization]`.
#[derive(Clone, Copy, Debug, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum EscapedSlashesConfig {
    /// Left encoded.
    Keep,
    /// 400.
    Reject,
    /// Decoded, then a 307 to the normalized path.
    UnescapeAndRedirect,
    /// Decoded and forwarded.
    UnescapeAndForward,
}

impl PathNormalizationConfig {
    /// The proxy's form of these settings.
    pub fn to_proxy(self) -> switchyard_proxy::path::PathNormalization {
        use switchyard_proxy::path::EscapedSlashes;
        switchyard_proxy::path::PathNormalization {
            normalize: self.normalize,
            merge_slashes: self.merge_slashes,
            escaped_slashes: match self.escaped_slashes {
                EscapedSlashesConfig::Keep => EscapedSlashes::Keep,
                EscapedSlashesConfig::Reject => EscapedSlashes::Reject,
                EscapedSlashesConfig::UnescapeAndRedirect => EscapedSlashes::UnescapeAndRedirect,
                EscapedSlashesConfig::UnescapeAndForward => EscapedSlashes::UnescapeAndForward,
            },
        }
    }
}

/// `[server.tls]`.
#[derive(Clone, Debug, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// Certificates: `{ cert = "a.pem", key = "a-key.pem", names = ["a.example.com"] }`.
    /// The first is the default for clients whose SNI name matches none.
    pub certificates: Vec<CertificateSettings>,
    /// `"1.2"` (default) or `"1.3"`.
    #[serde(default = "default_tls_min")]
    pub min_version: String,
}

fn default_tls_min() -> String {
    "1.2".into()
}

/// One certificate of `[server.tls]`.
#[derive(Clone, Debug, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CertificateSettings {
    /// PEM chain file (relative to the config file).
    pub cert: String,
    /// PEM private key file.
    pub key: String,
    /// SNI names served with it.
    #[serde(default)]
    pub names: Vec<String>,
}

/// A size in bytes: an integer, or a string with a binary suffix (`"512k"`, `"10MiB"`,
/// `"1m"`, `"2g"`; k, m, g are powers of 1024, as in nginx).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Number(n) => Ok(ByteSize(n)),
            Raw::Text(text) => parse_size(&text)
                .map(ByteSize)
                .map_err(serde::de::Error::custom),
        }
    }
}

impl JsonSchema for ByteSize {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ByteSize".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A size in bytes: an integer, or a string with a binary suffix (\"512k\", \"10MiB\").",
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": "^\\s*[0-9]+\\s*([kKmMgG]([iI]?[bB])?|[bB])?\\s*$"}
            ]
        })
    }
}

/// Parses `"10MiB"`, `"512k"`, `"1024"`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size like 512k or 10MiB"))?;
    let scale = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(format!("{text:?}: unknown unit (k, m, g, KiB, MiB, GiB)")),
    };
    n.checked_mul(scale)
        .ok_or_else(|| format!("{text:?} is too large"))
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            workers: None,
            connect_timeout: Duration::from_secs(2),
            header_read_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(30),
            pool_idle_timeout: Duration::from_secs(90),
            pool_max_idle_per_endpoint: 256,
            startup_grace: Duration::from_secs(10),
            max_header_bytes: ByteSize(32 * 1024),
            max_headers: 100,
            max_uri_bytes: ByteSize(8 * 1024),
            max_body: ByteSize(10 * 1024 * 1024),
            body_idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            max_in_flight: 0,
            trusted_proxies: Vec::new(),
            upgrade_idle_timeout: Duration::from_secs(300),
            h2_max_concurrent_streams: 100,
            h2_initial_stream_window: ByteSize(1024 * 1024),
            h2_initial_connection_window: ByteSize(2 * 1024 * 1024),
            tls_listen: None,
            tls: None,
            redirect_to_https: false,
            path_normalization: PathNormalizationConfig::default(),
            zone: None,
        }
    }
}

/// `[admin]`: the admin listener.
#[derive(Clone, Debug, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Address to listen on. Default `127.0.0.1:9901`.
    pub listen: SocketAddr,
    /// When set, `/api/*` and `/` require `Authorization: Bearer <token>`.
    pub token: Option<String>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9901)),
            token: None,
        }
    }
}

/// `[log]`.
#[derive(Clone, Debug, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// One JSON line per request on stdout. Default true.
    pub access: bool,
    /// Diagnostics filter (tracing `EnvFilter` syntax). Default `info`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            access: true,
            level: "info".into(),
        }
    }
}

/// `[upstreams.NAME]`.
#[derive(Clone, Debug, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// `round_robin` (default) | `least_request` | `ewma` | `random` | `consistent_hash`.
    #[serde(default = "default_balancer")]
    pub balancer: String,
    /// For `consistent_hash`: `header:NAME` | `cookie:NAME` | `client_ip` | `path`.
    #[serde(default)]
    pub hash_on: Option<String>,
    /// Where the endpoints come from (at least one).
    #[serde(default)]
    pub sources: Vec<SourceConfig>,
    /// Passive health.
    #[serde(default)]
    pub outlier: OutlierConfig,
    /// Active health checks. Default: none.
    #[serde(default)]
    pub health_check: Option<HealthCheckConfig>,
    /// When no endpoint is healthy: `serve_all` (default) serves the lowest tier anyway;
    /// `reject` answers 503.
    #[serde(default)]
    pub panic_mode: PanicModeConfig,
    /// A source whose set suddenly shrinks below this fraction of its previous size keeps
    /// the previous set for `shrink_grace`. Default: off.
    #[serde(default)]
    pub min_healthy_ratio: Option<f64>,
    /// How long the shrink guard holds. Default 30 s.
    #[schemars(with = "String")]
    #[serde(default = "default_shrink_grace", with = "humantime_serde")]
    pub shrink_grace: Duration,
    /// TLS to the endpoints. Default: none (plain HTTP).
    #[serde(default)]
    pub tls: Option<UpstreamTlsConfig>,
    /// Prefer endpoints in the gateway's `[server] zone`, spilling over to other zones by
    /// Envoy's zone-aware routing rules. Default false.
    #[serde(default)]
    pub zone_aware: bool,
    /// What to speak to the endpoints: `http1` (default) | `h2c` | `h2` (needs `[tls]`) |
    /// `auto` (per endpoint, from its registry's protocol label; docs/grpc.md).
    #[serde(default)]
    pub protocol: Option<String>,
    /// HTTP/2 connection keep-alive and flow-control windows, for endpoints spoken to over
    /// `h2c`/`h2`. Default: PINGs every 10 s, dead after 20 s, windows 1 MiB a stream and
    /// 4 MiB a connection.
    #[serde(default)]
    pub http2: Http2Config,
}

/// `[upstreams.NAME.http2]`: the HTTP/2 connection pool's keep-alive PINGs and flow-control
/// windows (Envoy: `connection_keepalive.interval`/`timeout`, `initial_stream_window_size`,
/// `initial_connection_window_size`).
#[derive(Clone, Debug, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Http2Config {
    /// Time between keep-alive PINGs on each connection. Default 10 s.
    #[schemars(with = "String")]
    #[serde(with = "humantime_serde")]
    pub keepalive_interval: Duration,
    /// A PING unanswered this long marks the connection dead: its calls fail (UNAVAILABLE)
    /// instead of hanging. Default 20 s.
    #[schemars(with = "String")]
    #[serde(with = "humantime_serde")]
    pub keepalive_timeout: Duration,
    /// Bytes one stream may receive before the client side reads them: the most a call
    /// whose client stops reading holds in the gateway. 64 KiB - 1 (65535) to 2 GiB - 1.
    /// Default 1 MiB.
    pub initial_stream_window: ByteSize,
    /// Bytes all streams of one connection may receive unread. 65535 to 2 GiB - 1.
    /// Default 4 MiB.
    pub initial_connection_window: ByteSize,
}

impl Default for Http2Config {
    fn default() -> Self {
        Http2Config {
            keepalive_interval: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(20),
            initial_stream_window: ByteSize(1024 * 1024),
            initial_connection_window: ByteSize(4 * 1024 * 1024),
        }
    }
}

/// `[upstreams.NAME.tls]`: connect to the endpoints over TLS (1.2+, ALPN http/1.1).
#[derive(Clone, Debug, Default, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsConfig {
    /// PEM bundle of the CAs trusted to sign endpoint certificates, relative to the config
    /// file. Default: the Mozilla root set.
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    /// Name sent as SNI and verified in the certificate. Default: the endpoint's IP address
    /// is verified (it must be among the certificate's IP SANs).
    #[serde(default)]
    pub server_name: Option<String>,
}

fn default_shrink_grace() -> Duration {
    Duration::from_secs(30)
}

/// `panic_mode`.
#[derive(Clone, Copy, Debug, Default, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PanicModeConfig {
    /// Serve every endpoint of the lowest tier.
    #[default]
    ServeAll,
    /// Answer 503.
    Reject,
}

/// `[upstreams.NAME.health_check]`: active health checks.
#[derive(Clone, Debug, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// `http` (default), `tcp` or `grpc`.
    #[serde(rename = "type", default)]
    pub kind: HealthCheckType,
    /// Path to GET. Default `/`.
    #[serde(default = "default_health_path")]
    pub path: String,
    /// `grpc`: the service whose health to ask (`HealthCheckRequest.service`). Default ""
    /// (the server as a whole).
    #[serde(default)]
    pub service: Option<String>,
    /// `Host` header. Default: the endpoint's address.
    #[serde(default)]
    pub host: Option<String>,
    /// Healthy statuses: codes (`200`) or ranges (`"200-299"`). Default 200–399.
    #[serde(default)]
    pub expected_statuses: Vec<StatusRange>,
    /// Time between checks. Default 5 s.
    #[schemars(with = "String")]
    #[serde(default = "default_health_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// Time allowed per check. Default 1 s.
    #[schemars(with = "String")]
    #[serde(default = "default_health_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Successes in a row to become healthy. Default 1.
    #[serde(default = "default_one")]
    pub healthy_threshold: u32,
    /// Failures in a row to become unhealthy. Default 2.
    #[serde(default = "default_two")]
    pub unhealthy_threshold: u32,
}

fn default_health_path() -> String {
    "/".into()
}
fn default_health_interval() -> Duration {
    Duration::from_secs(5)
}
fn default_health_timeout() -> Duration {
    Duration::from_secs(1)
}
fn default_one() -> u32 {
    1
}
fn default_two() -> u32 {
    2
}

/// `type` of a health check.
#[derive(Clone, Copy, Debug, Default, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum HealthCheckType {
    /// HTTP GET.
    #[default]
    Http,
    /// TCP connect.
    Tcp,
    /// `grpc.health.v1.Health/Check` over h2c.
    Grpc,
}

/// A healthy status code or an inclusive range `"200-299"`.
#[derive(Clone, Debug, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(untagged)]
pub enum StatusRange {
    /// One code.
    Code(u16),
    /// `"LO-HI"`.
    Range(String),
}

/// `[state]`: last-known-good snapshots on disk.
#[derive(Clone, Debug, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    /// Directory for the snapshots (relative to the config file).
    pub dir: String,
    /// Older snapshots are not loaded. Default 24 h.
    #[schemars(with = "String")]
    #[serde(default = "default_max_stale_age", with = "humantime_serde")]
    pub max_stale_age: Duration,
}

fn default_max_stale_age() -> Duration {
    Duration::from_secs(24 * 3600)
}

fn default_balancer() -> String {
    "round_robin".into()
}

/// `[[upstreams.NAME.sources]]`.
#[derive(Clone, Debug, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// A registry name from `[registries]`.
    pub registry: String,
    /// The service, in the registry's naming (docs/configuration.md, "Sources"): static and
    /// file: the name; etcd: the key segment; dns: `_http._tcp.NAME` or `NAME:PORT`; consul:
    /// the service name; kubernetes: `namespace/name`.
    pub service: String,
    /// Kubernetes: port name or number.
    #[serde(default)]
    pub port: Option<PortRef>,
    /// Consul: tags that must all match.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Consul: datacenter override.
    #[serde(default)]
    pub datacenter: Option<String>,
    /// Consul: a filter expression for this source (`?filter=`), combined with the
    /// registry's `filter` by `and`. Default: none.
    #[serde(default)]
    pub filter: Option<String>,
    /// Lower is preferred. Default 0.
    #[serde(default)]
    pub priority: u32,
    /// Share of this source within its tier.
    #[serde(default)]
    pub weight: Option<u32>,
}

/// A port by name or number.
#[derive(Clone, Debug, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(untagged)]
pub enum PortRef {
    /// `port = 8080`.
    Number(u16),
    /// `port = "http"`.
    Name(String),
}

impl std::fmt::Display for PortRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PortRef::Number(n) => write!(f, "{n}"),
            PortRef::Name(s) => f.write_str(s),
        }
    }
}

/// `[upstreams.NAME.outlier]`: passive health.
#[derive(Clone, Debug, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OutlierConfig {
    /// Failures in a row that eject an endpoint. Default 5; 0 disables.
    pub consecutive_failures: u32,
    /// First ejection length; repeated ejections last longer. Default 30 s.
    #[schemars(with = "String")]
    #[serde(with = "humantime_serde")]
    pub base_ejection: Duration,
    /// Count 5xx answers as failures. Default false.
    pub count_5xx: bool,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        OutlierConfig {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(30),
            count_5xx: false,
        }
    }
}

/// `[[routes]]`.
#[derive(Clone, Debug, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Name for metrics and logs. Default `route-<index>`.
    #[serde(default)]
    pub name: Option<String>,
    /// Exact host or `*.suffix`; absent = any host.
    #[serde(default)]
    pub host: Option<String>,
    /// Exact path.
    #[serde(default)]
    pub path: Option<String>,
    /// Path prefix. When neither `path` nor `path_prefix` is given: `/`.
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// Allowed methods; empty = any.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Header conditions: name → exact value, or `"*"` for "present".
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The upstream to send to.
    pub upstream: String,
    /// Remove the matched prefix before forwarding. Default false.
    #[serde(default)]
    pub strip_prefix: bool,
    /// Time allowed for the upstream's response headers. Default 30 s.
    #[schemars(with = "String")]
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Extra attempts for idempotent requests without a body. Default 1.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Largest request body on this route. Default: `server.max_body`.
    #[serde(default)]
    pub max_body: Option<ByteSize>,
    /// Protocols a request may upgrade to (tunnelled after the upstream's 101); others get
    /// 403, `h2c` is never forwarded. Default `["websocket"]`.
    #[serde(default = "default_upgrades")]
    pub upgrades: Vec<String>,
    /// What else to retry on another endpoint: `connect_failure` and gRPC status names
    /// (`unavailable`, `resource_exhausted`, ...; docs/grpc.md). Default: none.
    #[serde(default)]
    pub retry_on: Vec<String>,
    /// Translate gRPC-Web (`application/grpc-web*`) to gRPC and back. Default false.
    #[serde(default)]
    pub grpc_web: bool,
    /// Every other key of the route table: its policies, decoded by the policy layer
    /// (which refuses the keys it does not know).
    #[serde(skip)]
    pub policies: serde_json::Map<String, serde_json::Value>,
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_retries() -> u32 {
    1
}

fn default_upgrades() -> Vec<String> {
    vec!["websocket".into()]
}

/// A whole configuration, decoded.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// `[server]`.
    pub server: ServerConfig,
    /// `[admin]`.
    pub admin: AdminConfig,
    /// `[log]`.
    pub log: LogConfig,
    /// `[state]`, when set.
    pub state: Option<StateConfig>,
    /// `[registries.NAME]`: the `type` and the rest of the table, decoded by the backend.
    pub registries: BTreeMap<String, RegistryTable>,
    /// `[upstreams.NAME]`.
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    /// `[[routes]]`, in order.
    pub routes: Vec<RouteConfig>,
    /// Upstreams whose table did not decode (already reported): routes naming them are
    /// not reported again.
    pub broken_upstreams: std::collections::BTreeSet<String>,
    /// `[consumers]`, `[auth]`, `[route_defaults]`: decoded by the policy layer.
    pub policy_sections: BTreeMap<String, serde_json::Value>,
    /// `[config_source]`: fleet config in etcd, when set (see `config_source`).
    pub config_source: Option<crate::config_source::ConfigSource>,
    /// `[tracing]`: OpenTelemetry traces, when set.
    pub tracing: Option<crate::telemetry::TracingConfig>,
}

/// One `[registries.NAME]` table: its type and its backend-specific settings.
#[derive(Clone, Debug, PartialEq)]
pub struct RegistryTable {
    /// `type`.
    pub kind: String,
    /// Everything but `type`.
    pub settings: serde_json::Value,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: Option<serde_json::Value>,
    #[serde(default)]
    admin: Option<serde_json::Value>,
    #[serde(default)]
    log: Option<serde_json::Value>,
    #[serde(default)]
    state: Option<serde_json::Value>,
    #[serde(default)]
    registries: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    upstreams: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    routes: Vec<serde_json::Value>,
    #[serde(default)]
    config_source: Option<serde_json::Value>,
    #[serde(default)]
    tracing: Option<serde_json::Value>,
}

/// Reads `path` (format from its extension) with environment overrides applied.
pub fn read(path: &Path) -> Result<serde_json::Value, Vec<ConfigIssue>> {
    let format = match path.extension().and_then(|e| e.to_str()) {
        Some("yaml" | "yml") => config::FileFormat::Yaml,
        Some("json") => config::FileFormat::Json,
        _ => config::FileFormat::Toml,
    };
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![ConfigIssue::new(
            "",
            format!("cannot read {}: {e}", path.display()),
        )]
    })?;
    read_str(&text, format)
}

/// Reads a config from text, with environment overrides applied.
pub fn read_str(
    text: &str,
    format: config::FileFormat,
) -> Result<serde_json::Value, Vec<ConfigIssue>> {
    let built = config::Config::builder()
        .add_source(config::File::from_str(text, format))
        .add_source(
            config::Environment::with_prefix("SWITCHYARD")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true),
        )
        .build()
        .map_err(|e| vec![ConfigIssue::new("", e.to_string())])?;
    built
        .try_deserialize::<serde_json::Value>()
        .map_err(|e| vec![ConfigIssue::new("", e.to_string())])
}

/// The top-level tables the gateway itself decodes (the fields of `RawConfig`).
pub fn sections() -> &'static [&'static str] {
    field_names::<RawConfig>()
}

/// Top-level sections that belong to the policies (decoded by the policy layer).
pub const POLICY_SECTIONS: [&str; 3] = ["consumers", "auth", "route_defaults"];

/// The keys of a `[[routes]]` table that the router itself reads (the fields of
/// [`RouteConfig`]); every other key of a route is a policy (`auth`, `rate_limit`, `cache`,
/// ...) decoded by the policy layer.
pub fn route_keys() -> &'static [&'static str] {
    field_names::<RouteConfig>()
}

/// Decodes a config value. Tables that do not decode are reported, with their key
/// paths, and left out (or defaulted), so that later checks can still report everything
/// else: the caller treats any issue as fatal.
pub fn decode(value: &serde_json::Value) -> (Config, Vec<ConfigIssue>) {
    let mut issues = Vec::new();
    let mut value = value.clone();
    if let Some(table) = value.as_object_mut() {
        let unknown: Vec<String> = table
            .keys()
            .filter(|k| !sections().contains(&k.as_str()) && !POLICY_SECTIONS.contains(&k.as_str()))
            .cloned()
            .collect();
        for key in unknown {
            issues.push(ConfigIssue::new(
                key.clone(),
                format!("unknown section (known: {})", sections().join(", ")),
            ));
            table.remove(&key);
        }
    }
    let mut policy_sections = BTreeMap::new();
    if let Some(table) = value.as_object_mut() {
        for section in POLICY_SECTIONS {
            if let Some(v) = table.remove(section) {
                policy_sections.insert(section.to_owned(), v);
            }
        }
    }
    let raw: RawConfig = match decode_settings(&value) {
        Ok(raw) => raw,
        Err(issue) => {
            issues.push(issue);
            RawConfig::default()
        }
    };
    let server = decode_or_default::<ServerConfig>(raw.server, "server", &mut issues);
    let admin = decode_or_default::<AdminConfig>(raw.admin, "admin", &mut issues);
    let log = decode_or_default::<LogConfig>(raw.log, "log", &mut issues);
    let state = raw
        .state
        .and_then(|value| match decode_settings::<StateConfig>(&value) {
            Ok(state) => Some(state),
            Err(issue) => {
                issues.push(issue.under("state"));
                None
            }
        });

    let mut registries = BTreeMap::new();
    for (name, table) in raw.registries {
        let path = format!("registries.{name}");
        let mut settings = table.clone();
        let kind = match settings.as_object_mut().map(|t| t.remove("type")) {
            None => {
                issues.push(ConfigIssue::new(path, "must be a table"));
                continue;
            }
            Some(None) => {
                issues.push(ConfigIssue::new(
                    format!("{path}.type"),
                    format!("missing ({})", crate::catalog::kinds()),
                ));
                continue;
            }
            Some(Some(serde_json::Value::String(kind))) => kind,
            Some(Some(_)) => {
                issues.push(ConfigIssue::new(format!("{path}.type"), "must be a string"));
                continue;
            }
        };
        registries.insert(name, RegistryTable { kind, settings });
    }

    let mut upstreams = BTreeMap::new();
    let mut broken_upstreams = std::collections::BTreeSet::new();
    for (name, table) in raw.upstreams {
        match decode_settings::<UpstreamConfig>(&table) {
            Ok(upstream) => {
                upstreams.insert(name, upstream);
            }
            Err(issue) => {
                issues.push(issue.under(&format!("upstreams.{name}")));
                broken_upstreams.insert(name);
            }
        }
    }

    let mut routes = Vec::with_capacity(raw.routes.len());
    for (i, table) in raw.routes.iter().enumerate() {
        // Router keys decode here; the rest are the route's policies.
        let (core, policies) = match table.as_object() {
            Some(object) => {
                let (core, policies): (serde_json::Map<_, _>, serde_json::Map<_, _>) = object
                    .clone()
                    .into_iter()
                    .partition(|(k, _)| route_keys().contains(&k.as_str()));
                (serde_json::Value::Object(core), policies)
            }
            None => (table.clone(), serde_json::Map::new()),
        };
        match decode_settings::<RouteConfig>(&core) {
            Ok(mut route) => {
                route.policies = policies;
                routes.push(route);
            }
            Err(issue) => issues.push(issue.under(&format!("routes[{i}]"))),
        }
    }

    let config_source = raw.config_source.and_then(|value| {
        crate::config_source::decode(&value)
            .map_err(|more| issues.extend(more.into_iter().map(|i| i.under("config_source"))))
            .ok()
    });

    let tracing = raw.tracing.and_then(|value| {
        crate::telemetry::config::decode(&value)
            .map_err(|more| issues.extend(more))
            .ok()
    });

    let config = Config {
        tracing,
        config_source,
        state,
        policy_sections,
        server,
        admin,
        log,
        registries,
        upstreams,
        routes,
        broken_upstreams,
    };
    (config, issues)
}

fn decode_or_default<T: serde::de::DeserializeOwned + Default>(
    value: Option<serde_json::Value>,
    path: &str,
    issues: &mut Vec<ConfigIssue>,
) -> T {
    match value {
        None => T::default(),
        Some(value) => decode_settings(&value).unwrap_or_else(|issue| {
            issues.push(issue.under(path));
            T::default()
        }),
    }
}
