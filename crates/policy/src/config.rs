//! The policy config as the user writes it: `[consumers.NAME]`, `[auth]` (with `[auth.key]`
//! and `[auth.jwt]`), and the policy keys of a `[[routes]]` table (also allowed in
//! `[route_defaults]`). Every struct refuses unknown keys; decoding reports key paths
//! relative to the table it was given.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use switchyard_registry::{decode_settings, ConfigIssue};

/// The policy keys a route (or `[route_defaults]`) may set, in the order the filters run.
pub const ROUTE_POLICY_KEYS: [&str; 12] = [
    "analytics",
    "ip_allow",
    "ip_deny",
    "auth",
    "allow",
    "forward_credentials",
    "rate_limit",
    "request_headers",
    "response_headers",
    "rewrite",
    "host_rewrite",
    "cache",
];

/// `[consumers.NAME]`: one API consumer and its credentials.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConsumerConfig {
    /// API keys; `"sha256:<64 hex digits>"` stores the key's SHA-256 instead of the key.
    /// Default none.
    #[serde(default)]
    pub keys: Vec<String>,
    /// HTTP Basic credentials. Default none.
    #[serde(default)]
    pub basic: Option<BasicCredential>,
}

/// `basic = { user, password_hash }`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BasicCredential {
    /// The user name.
    pub user: String,
    /// A bcrypt (`$2b$...`) or argon2 (`$argon2id$...`) hash of the password.
    pub password_hash: String,
}

/// `[auth]`: settings shared by every route's `auth`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// The realm named in `WWW-Authenticate`. Default `"switchyard"`.
    #[serde(default = "default_realm")]
    pub realm: String,
    /// `[auth.key]`: where API keys are read.
    #[serde(default)]
    pub key: KeyConfig,
    /// `[auth.jwt]`: how JWTs are verified; needed by routes with `auth = ["jwt"]`.
    #[serde(default)]
    pub jwt: Option<JwtConfig>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            realm: default_realm(),
            key: KeyConfig::default(),
            jwt: None,
        }
    }
}

fn default_realm() -> String {
    "switchyard".into()
}

/// `[auth.key]`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// The request header carrying the key. Default `"apikey"`.
    #[serde(default = "default_key_name")]
    pub header: String,
    /// The query parameter carrying the key; `""` turns query keys off. Default `"apikey"`.
    #[serde(default = "default_key_name")]
    pub query: String,
}

impl Default for KeyConfig {
    fn default() -> Self {
        KeyConfig {
            header: default_key_name(),
            query: default_key_name(),
        }
    }
}

fn default_key_name() -> String {
    "apikey".into()
}

/// `[auth.jwt]`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// Accepted algorithms: `HS256`, `HS384`, `HS512`, `RS256`, `RS384`, `RS512`, `ES256`,
    /// `ES384`. Default `["HS256"]`.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// The HMAC secret (HS*).
    #[serde(default)]
    pub secret: Option<String>,
    /// A PEM public key (RS* or ES*), relative to the config file.
    #[serde(default)]
    pub public_key_file: Option<PathBuf>,
    /// A JWKS document (`{"keys": [...]}`), relative to the config file; the token's `kid`
    /// picks the key. Read when the config is loaded (a reload re-reads it).
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// Required `iss`. Default: not checked.
    #[serde(default)]
    pub issuer: Option<String>,
    /// Accepted `aud` (one or a list); a token must name one of them. Default: `aud` is not
    /// checked.
    #[serde(default)]
    pub audience: Option<OneOrMany>,
    /// The claim naming the consumer (a `[consumers.NAME]`). Default `"sub"`.
    #[serde(default = "default_consumer_claim")]
    pub consumer_claim: String,
    /// Clock skew allowed on `exp` and `nbf`. Default 60 s.
    #[serde(default = "default_leeway", with = "humantime_serde")]
    pub leeway: Duration,
}

fn default_algorithms() -> Vec<String> {
    vec!["HS256".into()]
}

fn default_consumer_claim() -> String {
    "sub".into()
}

fn default_leeway() -> Duration {
    Duration::from_secs(60)
}

/// A string or a list of strings.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum OneOrMany {
    /// One value.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl OneOrMany {
    /// The values.
    pub fn values(&self) -> Vec<String> {
        match self {
            OneOrMany::One(v) => vec![v.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

/// `rate_limit = { rate, per, burst, key, backend, ... }`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Requests allowed per `per` (the refill rate). Required, at least 1.
    pub rate: u32,
    /// The period of `rate`. Default 1 s.
    #[serde(default = "one_second", with = "humantime_serde")]
    pub per: Duration,
    /// Requests allowed at once (the bucket size). Default: `rate`.
    #[serde(default)]
    pub burst: Option<u32>,
    /// What a bucket is kept per: `consumer` (falls back to the client IP for anonymous
    /// requests), `client_ip`, or `header:NAME`. Default `client_ip`.
    #[serde(default = "default_limit_key")]
    pub key: String,
    /// `memory` (this gateway alone) or `redis` (shared by every gateway using the same
    /// Redis). Default `memory`.
    #[serde(default)]
    pub backend: LimitBackend,
    /// `redis://[user:pass@]host:port[/db]`; required by `backend = "redis"`.
    #[serde(default)]
    pub redis_url: Option<String>,
    /// Prefix of the Redis keys. Default `"switchyard:ratelimit:"`.
    #[serde(default = "default_redis_prefix")]
    pub redis_prefix: String,
    /// Time allowed for one Redis round trip. Default 250 ms.
    #[serde(default = "default_redis_timeout", with = "humantime_serde")]
    pub redis_timeout: Duration,
    /// When Redis cannot answer: `open` lets the request through, `closed` answers 503.
    /// Default `open`.
    #[serde(default)]
    pub fail: FailMode,
}

fn one_second() -> Duration {
    Duration::from_secs(1)
}

fn default_limit_key() -> String {
    "client_ip".into()
}

fn default_redis_prefix() -> String {
    "switchyard:ratelimit:".into()
}

fn default_redis_timeout() -> Duration {
    Duration::from_millis(250)
}

/// Where rate-limit state lives.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LimitBackend {
    /// In this process.
    #[default]
    Memory,
    /// In Redis, shared.
    Redis,
}

/// What to do when the shared backend is unreachable.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FailMode {
    /// Let requests through.
    #[default]
    Open,
    /// Refuse them (503).
    Closed,
}

/// `cache = { max_ttl, ... }`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Upper bound on any response's freshness. Default 5 min.
    #[serde(default = "default_max_ttl", with = "humantime_serde")]
    pub max_ttl: Duration,
    /// Freshness of responses that give none (no `max-age`, `s-maxage` or `Expires`);
    /// 0 = such responses are not stored unless they have a validator. Default 0.
    #[serde(default, with = "humantime_serde")]
    pub default_ttl: Duration,
    /// How many responses the route keeps. Default 10000.
    #[serde(default = "default_max_entries")]
    pub max_entries: u64,
    /// How many body bytes the route keeps (integer, or `"64MiB"`). Default 64 MiB.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: ByteSize,
    /// Larger responses pass through unstored. Default 1 MiB.
    #[serde(default = "default_max_object_bytes")]
    pub max_object_bytes: ByteSize,
    /// How long past its freshness an entry may still be served (`x-cache: STALE`) when
    /// the upstream fails (5xx, or the gateway's own 502/503/504). Default 0 (never).
    #[serde(default, with = "humantime_serde")]
    pub stale_if_error: Duration,
    /// Concurrent misses on one key make one upstream request; the others wait for it.
    /// Default true.
    #[serde(default = "yes")]
    pub coalesce: bool,
    /// How long a coalesced request waits before going upstream itself. Default 10 s.
    #[serde(default = "default_coalesce_timeout", with = "humantime_serde")]
    pub coalesce_timeout: Duration,
}

fn default_max_ttl() -> Duration {
    Duration::from_secs(300)
}

fn default_max_entries() -> u64 {
    10_000
}

fn default_max_bytes() -> ByteSize {
    ByteSize(64 << 20)
}

fn default_max_object_bytes() -> ByteSize {
    ByteSize(1 << 20)
}

fn default_coalesce_timeout() -> Duration {
    Duration::from_secs(10)
}

fn yes() -> bool {
    true
}

/// `request_headers` / `response_headers = { add, set, remove }`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HeaderRules {
    /// Headers appended (kept alongside existing values).
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    /// Headers set (replacing existing values).
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Headers removed (applied first).
    #[serde(default)]
    pub remove: Vec<String>,
}

/// `rewrite = { regex, replacement }`: the request path.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RewriteConfig {
    /// A regular expression matched against the path (query excluded).
    pub regex: String,
    /// The replacement; `$1`, `${name}` refer to capture groups.
    pub replacement: String,
}

/// A number of bytes: an integer, or a string with a unit (`B`, `KB`, `KiB`, `MB`, `MiB`,
/// `GB`, `GiB`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Parses `"64MiB"`, `"512 KB"`, `"4096"`.
    pub fn parse(text: &str) -> Result<ByteSize, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let number: u64 = number
            .parse()
            .map_err(|_| format!("{text:?} is not a size like \"64MiB\""))?;
        let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kb" => 1_000,
            "kib" | "k" => 1 << 10,
            "mb" => 1_000_000,
            "mib" | "m" => 1 << 20,
            "gb" => 1_000_000_000,
            "gib" | "g" => 1 << 30,
            other => {
                return Err(format!(
                    "unknown size unit {other:?} (B, KiB, MiB, GiB, KB, MB, GB)"
                ))
            }
        };
        number
            .checked_mul(factor)
            .map(ByteSize)
            .ok_or_else(|| format!("{text:?} is too large"))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;
        impl Visitor<'_> for SizeVisitor {
            type Value = ByteSize;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a size: bytes as an integer, or a string like \"64MiB\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom("must not be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                ByteSize::parse(v).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(SizeVisitor)
    }
}

/// Decodes `value` as a `T`, naming the bad key under `key`.
pub fn decode_key<T: serde::de::DeserializeOwned>(
    key: &str,
    value: &serde_json::Value,
) -> Result<T, ConfigIssue> {
    decode_settings(value).map_err(|issue| issue.under(key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check<T: serde::de::DeserializeOwned + std::fmt::Debug>(
        value: serde_json::Value,
        expected: Result<(), (&str, &str)>,
    ) {
        let got = decode_key::<T>("k", &value);
        match (got, expected) {
            (Ok(_), Ok(())) => {}
            (Err(issue), Err((path, message))) => {
                assert_eq!(issue.path, path, "{issue}");
                assert!(issue.message.contains(message), "{issue}");
            }
            (got, expected) => panic!("{value}: got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn every_table_refuses_unknown_keys() {
        check::<ConsumerConfig>(
            json!({"keys": [], "kyes": []}),
            Err(("k.kyes", "unknown field `kyes`")),
        );
        check::<ConsumerConfig>(
            json!({"basic": {"user": "a", "password_hash": "x", "pw": 1}}),
            Err(("k.basic.pw", "unknown field `pw`")),
        );
        check::<AuthConfig>(
            json!({"jwt": {"secret": "s", "x": 1}}),
            Err(("k.jwt.x", "unknown field `x`")),
        );
        check::<AuthConfig>(
            json!({"key": {"header": "h", "x": 1}}),
            Err(("k.key.x", "unknown field `x`")),
        );
        check::<AuthConfig>(json!({"x": 1}), Err(("k.x", "unknown field `x`")));
        check::<RateLimitConfig>(
            json!({"rate": 1, "x": 1}),
            Err(("k.x", "unknown field `x`")),
        );
        check::<CacheConfig>(json!({"x": 1}), Err(("k.x", "unknown field `x`")));
        check::<HeaderRules>(json!({"x": 1}), Err(("k.x", "unknown field `x`")));
        check::<HeaderRules>(
            json!({"set": {"a": 1}}),
            Err(("k.set.a", "expected a string")),
        );
        check::<RewriteConfig>(
            json!({"regex": "a", "replacement": "b", "x": 1}),
            Err(("k.x", "unknown field `x`")),
        );
    }

    #[test]
    fn decodes_values_and_names_bad_ones() {
        check::<RateLimitConfig>(json!({"rate": 10, "per": "1m", "burst": 20}), Ok(()));
        check::<RateLimitConfig>(json!({"rate": 10, "per": "soon"}), Err(("k.per", "")));
        check::<RateLimitConfig>(
            json!({"rate": 1, "backend": "etcd"}),
            Err(("k.backend", "unknown variant")),
        );
        check::<RateLimitConfig>(json!({"burst": 1}), Err(("k", "missing field `rate`")));
        check::<CacheConfig>(
            json!({"max_bytes": "64MiB", "max_object_bytes": 1000}),
            Ok(()),
        );
        check::<CacheConfig>(
            json!({"max_bytes": "64 parsecs"}),
            Err(("k.max_bytes", "unknown size unit")),
        );
        check::<AuthConfig>(json!({"jwt": {"audience": ["a", "b"]}}), Ok(()));
        check::<AuthConfig>(json!({"jwt": {"audience": "a", "leeway": "5s"}}), Ok(()));
    }

    #[test]
    fn byte_sizes() {
        for (text, expected) in [
            ("4096", Ok(4096)),
            ("64MiB", Ok(64 << 20)),
            ("512 KB", Ok(512_000)),
            ("1GiB", Ok(1 << 30)),
            ("1.5MiB", Err(())),
            ("MiB", Err(())),
        ] {
            assert_eq!(
                ByteSize::parse(text).map(|b| b.0).map_err(|_| ()),
                expected,
                "{text}"
            );
        }
    }
}
