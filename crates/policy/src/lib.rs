//! Route policies for Switchyard, as [`switchyard_proxy::Filter`]s: consumers and
//! authentication (API keys, JWT, Basic), IP allow/deny lists, rate limits (in memory or
//! shared through Redis), a shared HTTP response cache, header and path rewrites, and
//! usage analytics.
//!
//! - [`Hub`]: process-wide state that outlives config generations — analytics series,
//!   per-route counters, cache stores and rate-limit buckets (kept across a reload when
//!   their settings did not change), Redis connections. It renders the policy metrics,
//!   answers `/api/stats` and runs cache purges.
//! - [`Policies`]: one config generation's `[consumers]`, `[auth]` and `[route_defaults]`,
//!   built by [`build`]; [`Policies::route_filters`] turns a route's policy keys into its
//!   filters.
//!
//! The filters of a route always run in this order, whatever the order of the keys:
//! analytics → `ip_allow`/`ip_deny` → `auth`/`allow` → `rate_limit` → rewrites → `cache`.
//! So a cached response is only served to a request that passed access control and the
//! rate limit, rate limits can be per consumer, and analytics sees every answer.
//! A route without policy keys (and no `[route_defaults]`) gets no filter at all.

pub mod admin;
pub mod analytics;
pub mod auth;
pub mod cache;
pub mod config;
pub mod consumers;
pub mod jwt;
pub mod metrics;
pub mod ratelimit;
pub mod rewrite;

use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use ipnet::IpNet;
use serde_json::Value;
use switchyard_proxy::Filter;
use switchyard_registry::ConfigIssue;

use crate::analytics::{Analytics, AnalyticsFilter};
use crate::auth::{AuthFilter, AuthShared, IpFilter, Method};
use crate::cache::store::{PurgeFilter, Store, StoreLimits};
use crate::cache::{CacheFilter, CacheSettings};
use crate::config::{
    decode_key, AuthConfig, CacheConfig, HeaderRules, LimitBackend, RateLimitConfig, RewriteConfig,
    ROUTE_POLICY_KEYS,
};
use crate::consumers::Consumers;
use crate::jwt::JwtVerifier;
use crate::metrics::Counters;
use crate::ratelimit::{LimitKey, Limiter, MemoryLimiter, Quota, RateLimitFilter, RedisConn};
use crate::rewrite::{HeaderOps, PathRewrite, RewriteFilter};

/// The top-level config sections the policies own.
pub const SECTIONS: [&str; 3] = ["consumers", "auth", "route_defaults"];

/// Process-wide policy state (see the crate docs).
#[derive(Default)]
pub struct Hub {
    analytics: Arc<Analytics>,
    counters: Counters,
    kept: Mutex<HashMap<String, Weak<dyn Any + Send + Sync>>>,
    stores: Mutex<Vec<Weak<Store>>>,
}

impl Hub {
    /// An empty hub.
    pub fn new() -> Arc<Hub> {
        Arc::default()
    }

    /// The live object kept under `id`, or a new one from `make` (kept from now on, for as
    /// long as a filter holds it).
    fn keep<T: Send + Sync + 'static>(
        &self,
        id: String,
        make: impl FnOnce() -> T,
    ) -> (Arc<T>, bool) {
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        kept.retain(|_, weak| weak.strong_count() > 0);
        if let Some(existing) = kept
            .get(&id)
            .and_then(Weak::upgrade)
            .and_then(|any| any.downcast::<T>().ok())
        {
            return (existing, false);
        }
        let made = Arc::new(make());
        let erased: Arc<dyn Any + Send + Sync> = made.clone();
        kept.insert(id, Arc::downgrade(&erased));
        (made, true)
    }

    fn live_stores(&self) -> Vec<Arc<Store>> {
        let mut stores = self.stores.lock().unwrap_or_else(|p| p.into_inner());
        stores.retain(|w| w.strong_count() > 0);
        stores.iter().filter_map(Weak::upgrade).collect()
    }

    /// Writes the policy metric families (usage, access, rate limits, cache) to
    /// `/metrics`.
    pub fn encode_metrics(
        &self,
        encoder: &mut switchyard_metrics::prometheus_client::encoding::DescriptorEncoder,
    ) -> std::fmt::Result {
        use switchyard_metrics::{family, Escaped};
        self.analytics.encode(encoder)?;
        self.counters.encode(encoder)?;
        // The newest store of each route.
        let mut by_route: BTreeMap<String, Arc<Store>> = BTreeMap::new();
        for store in self.live_stores() {
            by_route.insert(store.route.clone(), store);
        }
        for (name, help, pick) in [
            (
                "switchyard_cache_entries",
                "Resources in the route's response cache.",
                Store::entries as fn(&Store) -> u64,
            ),
            (
                "switchyard_cache_bytes",
                "Approximate bytes in the route's response cache.",
                Store::bytes,
            ),
        ] {
            family::gauge(
                encoder,
                name,
                help,
                by_route
                    .iter()
                    .map(|(route, store)| ([("route", Escaped(route))], pick(store))),
            )?;
        }
        Ok(())
    }

    /// The `/api/stats` document for the last `window` (10 s to 1 h).
    pub fn stats(&self, window: Duration) -> Value {
        self.analytics.stats(window)
    }

    /// Removes cached responses; returns how many.
    pub fn purge(&self, filter: &PurgeFilter) -> usize {
        self.live_stores()
            .iter()
            .filter(|s| filter.route.as_ref().is_none_or(|r| *r == s.route))
            .map(|s| s.purge(filter))
            .sum()
    }
}

/// One config generation's shared policy settings.
pub struct Policies {
    hub: Arc<Hub>,
    consumers: Arc<Consumers>,
    auth: Arc<AuthShared>,
    defaults: serde_json::Map<String, Value>,
}

impl std::fmt::Debug for Policies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policies")
            .field("consumers", &self.consumers)
            .field("defaults", &self.defaults)
            .finish_non_exhaustive()
    }
}

/// Builds a generation from the top-level policy `sections` (`consumers`, `auth`,
/// `route_defaults`). Issues carry full paths (`consumers.alice.keys[0]`). Key files are
/// read relative to `base_dir`. Connects to nothing.
pub fn build(
    hub: &Arc<Hub>,
    sections: &BTreeMap<String, Value>,
    base_dir: &Path,
) -> Result<Policies, Vec<ConfigIssue>> {
    let mut issues = Vec::new();
    for name in sections.keys() {
        if !SECTIONS.contains(&name.as_str()) {
            issues.push(ConfigIssue::new(
                name.clone(),
                format!("unknown section (policy sections: {})", SECTIONS.join(", ")),
            ));
        }
    }
    let consumers = match Consumers::build(sections.get("consumers")) {
        Ok(c) => Some(Arc::new(c)),
        Err(found) => {
            issues.extend(found.into_iter().map(|i| i.under("consumers")));
            None
        }
    };
    let auth_config = match sections.get("auth") {
        None => Some(AuthConfig::default()),
        Some(value) => match decode_key::<AuthConfig>("auth", value) {
            Ok(config) => Some(config),
            Err(issue) => {
                issues.push(issue);
                None
            }
        },
    };
    let mut auth = None;
    if let Some(config) = auth_config {
        let jwt = match &config.jwt {
            None => None,
            Some(jwt) => match JwtVerifier::build(jwt, base_dir) {
                Ok(v) => Some(v),
                Err(found) => {
                    issues.extend(found.into_iter().map(|i| i.under("auth.jwt")));
                    None
                }
            },
        };
        let key_header = match HeaderName::from_bytes(config.key.header.as_bytes()) {
            Ok(h) => Some(h),
            Err(_) => {
                issues.push(ConfigIssue::new("auth.key.header", "not a header name"));
                None
            }
        };
        if let (Some(key_header), Some(consumers)) = (key_header, &consumers) {
            auth = Some(AuthShared {
                consumers: consumers.clone(),
                jwt,
                key_header,
                key_query: config.key.query.clone(),
                realm: config.realm.clone(),
            });
        }
    }
    let defaults = match sections.get("route_defaults") {
        None => serde_json::Map::new(),
        Some(Value::Object(map)) => map.clone(),
        Some(_) => {
            issues.push(ConfigIssue::new("route_defaults", "must be a table"));
            serde_json::Map::new()
        }
    };
    let (Some(consumers), Some(auth), true) = (consumers, auth, issues.is_empty()) else {
        return Err(issues);
    };
    let policies = Policies {
        hub: hub.clone(),
        consumers,
        auth: Arc::new(auth),
        defaults,
    };
    if let Err(found) = policies.compile(&policies.defaults) {
        return Err(found
            .into_iter()
            .map(|i| i.under("route_defaults"))
            .collect());
    }
    Ok(policies)
}

/// A route's policies, decoded and checked.
#[derive(Default)]
struct RoutePolicies {
    analytics: Option<bool>,
    ip_allow: Vec<IpNet>,
    ip_deny: Vec<IpNet>,
    auth: Vec<Method>,
    allow: Vec<Arc<str>>,
    forward_credentials: bool,
    rate_limit: Option<(RateLimitConfig, Quota, LimitKey)>,
    request_headers: HeaderOps,
    response_headers: HeaderOps,
    rewrite: Option<PathRewrite>,
    host_rewrite: Option<HeaderValue>,
    cache: Option<CacheConfig>,
}

impl RoutePolicies {
    fn any(&self) -> bool {
        !self.ip_allow.is_empty()
            || !self.ip_deny.is_empty()
            || !self.auth.is_empty()
            || self.rate_limit.is_some()
            || !self.request_headers.is_empty()
            || !self.response_headers.is_empty()
            || self.rewrite.is_some()
            || self.host_rewrite.is_some()
            || self.cache.is_some()
    }
}

/// `false` turns a table-valued policy off (to override `[route_defaults]`).
fn table_or_off<T: serde::de::DeserializeOwned>(
    key: &str,
    value: &Value,
) -> Result<Option<T>, ConfigIssue> {
    match value {
        Value::Bool(false) => Ok(None),
        Value::Bool(true) => Err(ConfigIssue::new(
            key,
            "give a table (or false to turn it off)",
        )),
        _ => decode_key(key, value).map(Some),
    }
}

fn net_list(key: &str, value: &Value, issues: &mut Vec<ConfigIssue>) -> Vec<IpNet> {
    let list: Vec<String> = match decode_key(key, value) {
        Ok(list) => list,
        Err(issue) => {
            issues.push(issue);
            return Vec::new();
        }
    };
    let mut nets = Vec::new();
    for (i, text) in list.iter().enumerate() {
        match auth::parse_net(text) {
            Ok(net) => nets.push(net),
            Err(message) => issues.push(ConfigIssue::new(format!("{key}[{i}]"), message)),
        }
    }
    nets
}

impl Policies {
    /// The consumers of this generation.
    pub fn consumers(&self) -> &Consumers {
        &self.consumers
    }

    /// Decodes and checks policy keys; issues are relative to the table they came from.
    fn compile(
        &self,
        keys: &serde_json::Map<String, Value>,
    ) -> Result<RoutePolicies, Vec<ConfigIssue>> {
        let mut issues = Vec::new();
        let mut p = RoutePolicies::default();
        for (key, value) in keys {
            let mut push = |r: Result<(), ConfigIssue>| {
                if let Err(issue) = r {
                    issues.push(issue);
                }
            };
            match key.as_str() {
                "analytics" => push(decode_key::<bool>(key, value).map(|v| p.analytics = Some(v))),
                "forward_credentials" => {
                    push(decode_key::<bool>(key, value).map(|v| p.forward_credentials = v));
                }
                "ip_allow" => p.ip_allow = net_list(key, value, &mut issues),
                "ip_deny" => p.ip_deny = net_list(key, value, &mut issues),
                "auth" => match decode_key::<Vec<String>>(key, value) {
                    Ok(methods) => {
                        for (i, m) in methods.iter().enumerate() {
                            match Method::parse(m) {
                                Some(Method::Jwt) if self.auth.jwt.is_none() => issues.push(
                                    ConfigIssue::new(format!("auth[{i}]"), "jwt needs an [auth.jwt] table"),
                                ),
                                Some(method) => {
                                    if !p.auth.contains(&method) {
                                        p.auth.push(method);
                                    }
                                }
                                None => issues.push(ConfigIssue::new(
                                    format!("auth[{i}]"),
                                    format!("unknown method {m:?} (known: key, jwt, basic)"),
                                )),
                            }
                        }
                    }
                    Err(issue) => issues.push(issue),
                },
                "allow" => match decode_key::<Vec<String>>(key, value) {
                    Ok(names) => {
                        for (i, name) in names.iter().enumerate() {
                            match self.consumers.get(name) {
                                Some(c) => p.allow.push(c.clone()),
                                None => issues.push(ConfigIssue::new(
                                    format!("allow[{i}]"),
                                    format!(
                                        "unknown consumer {name:?} (known: {})",
                                        self.consumers.names().join(", ")
                                    ),
                                )),
                            }
                        }
                    }
                    Err(issue) => issues.push(issue),
                },
                "rate_limit" => match table_or_off::<RateLimitConfig>(key, value) {
                    Ok(None) => {}
                    Ok(Some(config)) => {
                        let before = issues.len();
                        if config.rate == 0 {
                            issues.push(ConfigIssue::new("rate_limit.rate", "must be at least 1"));
                        }
                        if config.burst == Some(0) {
                            issues.push(ConfigIssue::new("rate_limit.burst", "must be at least 1"));
                        }
                        if config.per.is_zero() {
                            issues.push(ConfigIssue::new("rate_limit.per", "must be more than 0"));
                        }
                        if config.redis_timeout.is_zero() {
                            issues.push(ConfigIssue::new("rate_limit.redis_timeout", "must be more than 0"));
                        }
                        let limit_key = LimitKey::parse(&config.key).map_err(|m| {
                            issues.push(ConfigIssue::new("rate_limit.key", m));
                        });
                        match (config.backend, &config.redis_url) {
                            (LimitBackend::Redis, None) => issues.push(ConfigIssue::new(
                                "rate_limit.redis_url",
                                "required by backend = \"redis\"",
                            )),
                            (LimitBackend::Redis, Some(url)) => {
                                if let Err(m) = RedisConn::new(url, config.redis_timeout) {
                                    issues.push(ConfigIssue::new("rate_limit.redis_url", m));
                                }
                            }
                            (LimitBackend::Memory, Some(_)) => issues.push(ConfigIssue::new(
                                "rate_limit.redis_url",
                                "only used with backend = \"redis\"",
                            )),
                            (LimitBackend::Memory, None) => {}
                        }
                        if let (Ok(limit_key), true) = (limit_key, issues.len() == before) {
                            let quota = Quota::new(
                                config.rate,
                                config.per,
                                config.burst.unwrap_or(config.rate),
                            );
                            p.rate_limit = Some((config, quota, limit_key));
                        }
                    }
                    Err(issue) => issues.push(issue),
                },
                "request_headers" | "response_headers" => {
                    match table_or_off::<HeaderRules>(key, value) {
                        Ok(None) => {}
                        Ok(Some(rules)) => match HeaderOps::build(&rules) {
                            Ok(ops) if key == "request_headers" => p.request_headers = ops,
                            Ok(ops) => p.response_headers = ops,
                            Err(found) => issues.extend(found.into_iter().map(|i| i.under(key))),
                        },
                        Err(issue) => issues.push(issue),
                    }
                }
                "rewrite" => match table_or_off::<RewriteConfig>(key, value) {
                    Ok(None) => {}
                    Ok(Some(config)) => match PathRewrite::build(&config) {
                        Ok(r) => p.rewrite = Some(r),
                        Err(found) => issues.extend(found.into_iter().map(|i| i.under(key))),
                    },
                    Err(issue) => issues.push(issue),
                },
                "host_rewrite" => match value {
                    Value::Bool(false) => {}
                    _ => match decode_key::<String>(key, value) {
                        Ok(host) => match HeaderValue::from_str(&host) {
                            Ok(v) if !host.is_empty() && host.parse::<http::uri::Authority>().is_ok() => {
                                p.host_rewrite = Some(v);
                            }
                            _ => issues.push(ConfigIssue::new(key, format!("{host:?} is not a host[:port]"))),
                        },
                        Err(issue) => issues.push(issue),
                    },
                },
                "cache" => match table_or_off::<CacheConfig>(key, value) {
                    Ok(None) => {}
                    Ok(Some(config)) => {
                        let before = issues.len();
                        if config.max_ttl.is_zero() {
                            issues.push(ConfigIssue::new("cache.max_ttl", "must be more than 0"));
                        }
                        if config.max_entries == 0 {
                            issues.push(ConfigIssue::new("cache.max_entries", "must be at least 1"));
                        }
                        if config.max_bytes.0 == 0 {
                            issues.push(ConfigIssue::new("cache.max_bytes", "must be at least 1"));
                        }
                        if config.max_object_bytes.0 == 0 || config.max_object_bytes.0 > u64::from(u32::MAX) {
                            issues.push(ConfigIssue::new("cache.max_object_bytes", "must be between 1 and 4GiB"));
                        }
                        if issues.len() == before {
                            p.cache = Some(config);
                        }
                    }
                    Err(issue) => issues.push(issue),
                },
                _ => issues.push(ConfigIssue::new(
                    key.clone(),
                    format!(
                        "unknown field `{key}` (route keys: name, host, path, path_prefix, methods, headers, upstream, strip_prefix, timeout, retries; policies: {})",
                        ROUTE_POLICY_KEYS.join(", ")
                    ),
                )),
            }
        }
        if !p.allow.is_empty() && p.auth.is_empty() {
            issues.push(ConfigIssue::new("allow", "needs auth on the route"));
        }
        if issues.is_empty() {
            Ok(p)
        } else {
            Err(issues)
        }
    }

    /// The filters of route `route` from its policy `keys` (over `[route_defaults]`);
    /// issues are relative to the route's table. Empty when the route has no policy.
    pub fn route_filters(
        &self,
        route: &str,
        keys: &serde_json::Map<String, Value>,
    ) -> Result<Vec<Arc<dyn Filter>>, Vec<ConfigIssue>> {
        let mut merged = self.defaults.clone();
        for (k, v) in keys {
            merged.insert(k.clone(), v.clone());
        }
        let p = self.compile(&merged)?;
        let mut filters: Vec<Arc<dyn Filter>> = Vec::new();
        let analytics = p.analytics.unwrap_or_else(|| p.any());
        if !analytics && !p.any() {
            return Ok(filters);
        }
        let hub = &self.hub;
        let counters = hub.counters.route(route);
        if analytics {
            filters.push(Arc::new(AnalyticsFilter::new(
                hub.analytics.clone(),
                route,
                self.consumers.names(),
            )));
        }
        if !p.ip_allow.is_empty() || !p.ip_deny.is_empty() {
            filters.push(Arc::new(IpFilter::new(
                p.ip_allow,
                p.ip_deny,
                counters.clone(),
            )));
        }
        if !p.auth.is_empty() {
            filters.push(Arc::new(AuthFilter::new(
                self.auth.clone(),
                p.auth,
                p.allow,
                p.forward_credentials,
                counters.clone(),
            )));
        }
        if let Some((config, quota, key)) = p.rate_limit {
            let limiter = match config.backend {
                LimitBackend::Memory => {
                    let id = format!("ratelimit\n{route}\n{quota:?}");
                    Limiter::Memory(hub.keep(id, || MemoryLimiter::new(quota)).0)
                }
                LimitBackend::Redis => {
                    let url = config.redis_url.clone().unwrap_or_default();
                    let id = format!("redis\n{url}\n{:?}", config.redis_timeout);
                    let fresh = RedisConn::new(&url, config.redis_timeout)
                        .map_err(|m| vec![ConfigIssue::new("rate_limit.redis_url", m)])?;
                    let (conn, _) = hub.keep(id, || fresh);
                    Limiter::Redis {
                        conn,
                        prefix: format!("{}{route}:", config.redis_prefix),
                        fail: config.fail,
                    }
                }
            };
            filters.push(Arc::new(RateLimitFilter::new(
                quota,
                key,
                limiter,
                counters.clone(),
            )));
        }
        if !p.request_headers.is_empty()
            || !p.response_headers.is_empty()
            || p.rewrite.is_some()
            || p.host_rewrite.is_some()
        {
            filters.push(Arc::new(RewriteFilter {
                request: p.request_headers,
                response: p.response_headers,
                path: p.rewrite,
                host: p.host_rewrite,
            }));
        }
        if let Some(config) = p.cache {
            let limits = StoreLimits {
                max_bytes: config.max_bytes.0,
                max_entries: config.max_entries,
                keep_for_revalidation: config.max_ttl,
                stale_if_error: config.stale_if_error,
            };
            let id = format!("cache\n{route}\n{limits:?}");
            let (store, new) = hub.keep(id, || Store::new(route, limits.clone()));
            if new {
                hub.stores
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(Arc::downgrade(&store));
            }
            filters.push(Arc::new(CacheFilter::new(
                store,
                CacheSettings {
                    max_ttl: config.max_ttl,
                    default_ttl: config.default_ttl,
                    max_object_bytes: config.max_object_bytes.0,
                    stale_if_error: config.stale_if_error,
                    coalesce: config.coalesce,
                    coalesce_timeout: config.coalesce_timeout,
                },
                counters.clone(),
            )));
        }
        Ok(filters)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sections(value: Value) -> BTreeMap<String, Value> {
        value
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    fn policies(value: Value) -> Result<Policies, Vec<String>> {
        build(&Hub::new(), &sections(value), Path::new("."))
            .map_err(|issues| issues.iter().map(ToString::to_string).collect())
    }

    fn base() -> Value {
        json!({
            "consumers": {"alice": {"keys": ["a-key"]}, "bob": {"keys": ["b-key"]}},
            "auth": {"jwt": {"secret": "0123456789abcdef0123"}},
        })
    }

    /// Filter names of a route, or its issues.
    fn check(policies: &Policies, route: Value, expected: Result<&[&str], &[&str]>) {
        let keys = route.as_object().unwrap().clone();
        let got = policies
            .route_filters("r", &keys)
            .map(|filters| filters.iter().map(|f| f.name()).collect::<Vec<_>>())
            .map_err(|issues| issues.iter().map(ToString::to_string).collect::<Vec<_>>());
        match (&got, expected) {
            (Ok(names), Ok(want)) => assert_eq!(names, want, "{route}"),
            (Err(issues), Err(want)) => {
                assert_eq!(issues.len(), want.len(), "{route}: {issues:#?}");
                for w in want {
                    assert!(
                        issues.iter().any(|i| i.starts_with(w)),
                        "{route}: {w} not in {issues:#?}"
                    );
                }
            }
            _ => panic!("{route}: got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn route_keys_become_filters_in_a_fixed_order() {
        let p = policies(base()).unwrap();
        check(&p, json!({}), Ok(&[]));
        check(&p, json!({"analytics": true}), Ok(&["analytics"]));
        check(
            &p,
            json!({"cache": {}, "host_rewrite": "h", "rate_limit": {"rate": 1}, "allow": ["alice"], "auth": ["key", "jwt"], "ip_deny": ["10.0.0.0/8"]}),
            Ok(&["analytics", "ip", "auth", "rate_limit", "rewrite", "cache"]),
        );
        check(&p, json!({"cache": {}, "analytics": false}), Ok(&["cache"]));
        check(&p, json!({"cache": false, "rate_limit": false}), Ok(&[]));
    }

    #[test]
    fn every_bad_key_is_named() {
        let p = policies(base()).unwrap();
        check(
            &p,
            json!({
                "auth": ["key", "oauth"],
                "allow": ["alice", "mallory"],
                "ip_allow": ["10.0.0.0/8", "nope"],
                "rate_limit": {"rate": 0, "key": "cookie:x", "backend": "redis"},
                "cache": {"max_ttl": "0s", "zz": 1},
                "request_headers": {"set": {"bad name": "v"}},
                "host_rewrite": "bad host/",
                "rewrite": {"regex": "(", "replacement": ""},
                "cahce": {},
            }),
            Err(&[
                "auth[1]: unknown method \"oauth\"",
                "allow[1]: unknown consumer \"mallory\" (known: alice, bob)",
                "ip_allow[1]:",
                "rate_limit.rate: must be at least 1",
                "rate_limit.key:",
                "rate_limit.redis_url: required",
                "cache.zz: unknown field `zz`",
                "request_headers.set.bad name: not a header name",
                "host_rewrite:",
                "rewrite.regex: not a valid regex",
                "cahce: unknown field `cahce`",
            ]),
        );
        check(&p, json!({"allow": ["alice"]}), Err(&["allow: needs auth"]));
        check(&p, json!({"cache": true}), Err(&["cache: give a table"]));
        check(
            &p,
            json!({"rate_limit": {"rate": 1, "redis_url": "redis://h"}}),
            Err(&["rate_limit.redis_url: only used with backend = \"redis\""]),
        );
        check(
            &p,
            json!({"rate_limit": {"rate": 1, "backend": "redis", "redis_url": "http://h"}}),
            Err(&["rate_limit.redis_url:"]),
        );
        let no_jwt = policies(json!({"consumers": {"a": {}}})).unwrap();
        check(
            &no_jwt,
            json!({"auth": ["jwt"]}),
            Err(&["auth[0]: jwt needs an [auth.jwt] table"]),
        );
    }

    #[test]
    fn route_defaults_apply_unless_the_route_sets_the_key() {
        let mut config = base();
        config["route_defaults"] =
            json!({"rate_limit": {"rate": 5}, "response_headers": {"set": {"x-a": "b"}}});
        let p = policies(config).unwrap();
        check(&p, json!({}), Ok(&["analytics", "rate_limit", "rewrite"]));
        check(
            &p,
            json!({"rate_limit": false}),
            Ok(&["analytics", "rewrite"]),
        );
        check(
            &p,
            json!({"rate_limit": false, "response_headers": false}),
            Ok(&[]),
        );
    }

    #[test]
    fn section_problems_carry_full_paths() {
        let errors = policies(json!({
            "consumers": {"alice": {"keys": [""]}},
            "auth": {"key": {"header": "bad header"}, "jwt": {"secret": "short"}},
            "route_defaults": {"cache": {"max_entries": 0}},
        }))
        .unwrap_err();
        for want in [
            "consumers.alice.keys[0]: must not be empty",
            "auth.key.header: not a header name",
            "auth.jwt.secret: must be at least 16 bytes",
        ] {
            assert!(
                errors.iter().any(|e| e.starts_with(want)),
                "{want} not in {errors:#?}"
            );
        }
        let errors = policies(json!({"route_defaults": {"cache": {"max_entries": 0}, "zz": 1}}))
            .unwrap_err();
        assert_eq!(
            errors,
            [
                "route_defaults.cache.max_entries: must be at least 1",
                "route_defaults.zz: unknown field `zz` (route keys: name, host, path, path_prefix, methods, headers, upstream, strip_prefix, timeout, retries; policies: analytics, ip_allow, ip_deny, auth, allow, forward_credentials, rate_limit, request_headers, response_headers, rewrite, host_rewrite, cache)"
            ]
        );
    }

    #[test]
    fn state_is_kept_across_generations_while_settings_match() {
        let hub = Hub::new();
        let build_with = |max: u64| {
            build(&hub, &sections(json!({})), Path::new("."))
                .unwrap()
                .route_filters(
                    "r",
                    json!({"cache": {"max_entries": max}}).as_object().unwrap(),
                )
                .unwrap()
        };
        let first = build_with(10);
        assert_eq!(hub.live_stores().len(), 1);
        let same = build_with(10);
        assert_eq!(
            hub.live_stores().len(),
            1,
            "same limits: the store is reused"
        );
        let other = build_with(20);
        assert_eq!(hub.live_stores().len(), 2);
        drop((first, same));
        assert_eq!(
            hub.live_stores().len(),
            1,
            "the old generation's store goes with it"
        );
        drop(other);
        assert!(hub.live_stores().is_empty());
    }
}
