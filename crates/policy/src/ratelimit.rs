//! `rate_limit`: a token bucket per key (consumer, client IP or a header), as GCRA (the
//! generic cell rate algorithm: one timestamp per key, the "theoretical arrival time").
//!
//! `backend = "memory"` keeps the timestamps in this process. `backend = "redis"` runs the
//! same algorithm as one Lua script in Redis (atomic, on Redis's clock), so every gateway
//! using that Redis shares each bucket. When Redis cannot answer within `redis_timeout`
//! the request goes through (`fail = "open"`) or gets 503 (`fail = "closed"`), the failure
//! is counted, and Redis is left alone for a second before the next try.
//!
//! Allowed responses carry `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset`;
//! a refused request gets 429 with `Retry-After` as well.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use dashmap::DashMap;
use http::header::{HeaderName, HeaderValue};
use http::request::Parts;
use http::{Response, StatusCode};
use switchyard_proxy::body::ProxyBody;
use switchyard_proxy::error::json_error;
use switchyard_proxy::{Filter, RequestContext};

use crate::config::FailMode;
use crate::metrics::RouteCounters;

/// What a bucket is kept per.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LimitKey {
    /// The authenticated consumer (the client IP for anonymous requests).
    Consumer,
    /// The client's IP address.
    ClientIp,
    /// A request header's value (requests without it share one bucket).
    Header(HeaderName),
}

impl LimitKey {
    /// `consumer` | `client_ip` | `header:NAME`.
    pub fn parse(text: &str) -> Result<LimitKey, String> {
        match text.split_once(':') {
            None if text == "consumer" => Ok(LimitKey::Consumer),
            None if text == "client_ip" => Ok(LimitKey::ClientIp),
            Some(("header", name)) => HeaderName::from_bytes(name.as_bytes())
                .map(LimitKey::Header)
                .map_err(|_| format!("{name:?} is not a header name")),
            _ => Err(format!(
                "{text:?}: expected consumer | client_ip | header:NAME"
            )),
        }
    }
}

/// The bucket: `burst` requests at once, refilled one per `interval`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    /// Microseconds between two refills (`per / rate`).
    pub interval_us: u64,
    /// The bucket size.
    pub burst: u64,
}

impl Quota {
    /// `rate` per `per`, `burst` at once.
    pub fn new(rate: u32, per: Duration, burst: u32) -> Quota {
        let interval_us = (per.as_micros() / u128::from(rate.max(1))).max(1);
        Quota {
            interval_us: u64::try_from(interval_us).unwrap_or(u64::MAX / 4),
            burst: u64::from(burst.max(1)),
        }
    }

    /// How far ahead of now the arrival time may be.
    fn limit_us(&self) -> u64 {
        self.interval_us.saturating_mul(self.burst)
    }
}

/// One decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may go on.
    pub allowed: bool,
    /// Requests left in the bucket after this one.
    pub remaining: u64,
    /// Time until the bucket is full again.
    pub reset: Duration,
    /// For a refused request: time until one would be allowed.
    pub retry_after: Duration,
}

/// GCRA: from the stored arrival time `tat` (µs), the new one (if allowed) and the
/// decision.
pub fn gcra(tat: u64, now: u64, quota: Quota) -> (Option<u64>, Decision) {
    let tat = tat.max(now);
    let new_tat = tat.saturating_add(quota.interval_us);
    let diff = new_tat - now;
    let limit = quota.limit_us();
    if diff > limit {
        (
            None,
            Decision {
                allowed: false,
                remaining: 0,
                reset: Duration::from_micros(tat - now),
                retry_after: Duration::from_micros(diff - limit),
            },
        )
    } else {
        (
            Some(new_tat),
            Decision {
                allowed: true,
                remaining: (limit - diff) / quota.interval_us,
                reset: Duration::from_micros(diff),
                retry_after: Duration::ZERO,
            },
        )
    }
}

/// Buckets in this process.
pub struct MemoryLimiter {
    quota: Quota,
    base: Instant,
    states: DashMap<String, AtomicU64>,
    sweep_at: AtomicUsize,
}

impl MemoryLimiter {
    /// Empty buckets for `quota`.
    pub fn new(quota: Quota) -> Self {
        MemoryLimiter {
            quota,
            base: Instant::now(),
            states: DashMap::new(),
            sweep_at: AtomicUsize::new(4096),
        }
    }

    /// Takes one request from `key`'s bucket, if it has one.
    pub fn check(&self, key: &str) -> Decision {
        self.check_at(key, self.base.elapsed().as_micros() as u64)
    }

    fn check_at(&self, key: &str, now: u64) -> Decision {
        if self.states.len() >= self.sweep_at.load(Ordering::Relaxed) {
            // Full buckets (arrival time passed) are the same as absent ones.
            self.states
                .retain(|_, tat| tat.load(Ordering::Relaxed) > now);
            self.sweep_at
                .store((self.states.len() * 2).max(4096), Ordering::Relaxed);
        }
        if let Some(state) = self.states.get(key) {
            return Self::update(&state, now, self.quota);
        }
        let state = self
            .states
            .entry(key.to_owned())
            .or_insert(AtomicU64::new(0));
        Self::update(&state, now, self.quota)
    }

    fn update(state: &AtomicU64, now: u64, quota: Quota) -> Decision {
        let mut current = state.load(Ordering::Acquire);
        loop {
            let (new, decision) = gcra(current, now, quota);
            let Some(new) = new else { return decision };
            match state.compare_exchange_weak(current, new, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return decision,
                Err(actual) => current = actual,
            }
        }
    }
}

/// The GCRA step in Redis: KEYS[1] holds the arrival time in µs on Redis's own clock.
/// Returns `{allowed, a, b}`: allowed → `{1, limit - diff, diff}`; refused →
/// `{0, retry_after, reset}` (µs).
const SCRIPT: &str = r"
if redis.replicate_commands then pcall(redis.replicate_commands) end
local interval = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
if not tat or tat < now then tat = now end
local new_tat = tat + interval
local diff = new_tat - now
if diff > limit then
  return {0, diff - limit, tat - now}
end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil(diff / 1000) + 1)
return {1, limit - diff, diff}
";

/// A Redis server, shared by every route naming its URL (connection made on first use,
/// remade by the connection manager after failures).
pub struct RedisConn {
    client: redis::Client,
    timeout: Duration,
    manager: OnceLock<redis::aio::ConnectionManager>,
    script: redis::Script,
    /// µs after `base` before which Redis is not tried (after a failure).
    down_until: AtomicU64,
    base: Instant,
}

impl RedisConn {
    /// How long Redis is left alone after a failure.
    pub const BACKOFF: Duration = Duration::from_secs(1);

    /// Parses `url`; connects nothing.
    pub fn new(url: &str, timeout: Duration) -> Result<RedisConn, String> {
        let client = redis::Client::open(url).map_err(|e| format!("{url:?}: {e}"))?;
        Ok(RedisConn {
            client,
            timeout,
            manager: OnceLock::new(),
            script: redis::Script::new(SCRIPT),
            down_until: AtomicU64::new(0),
            base: Instant::now(),
        })
    }

    fn manager(&self) -> Result<redis::aio::ConnectionManager, String> {
        if let Some(m) = self.manager.get() {
            return Ok(m.clone());
        }
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let manager =
            redis::aio::ConnectionManager::new_lazy_with_config(self.client.clone(), config)
                .map_err(|e| e.to_string())?;
        Ok(self.manager.get_or_init(|| manager).clone())
    }

    /// Runs one GCRA step for `key`; `Err` when Redis did not answer in time, failed, or
    /// failed less than [`RedisConn::BACKOFF`] ago.
    pub async fn check(&self, key: &str, quota: Quota) -> Result<Decision, String> {
        let now = self.base.elapsed().as_micros() as u64;
        if now < self.down_until.load(Ordering::Relaxed) {
            return Err("redis unreachable (backing off)".into());
        }
        let result = async {
            let mut manager = self.manager()?;
            let mut invocation = self.script.key(key);
            invocation.arg(quota.interval_us).arg(quota.limit_us());
            let call = invocation.invoke_async::<(u8, i64, i64)>(&mut manager);
            match tokio::time::timeout(self.timeout, call).await {
                Ok(Ok(reply)) => Ok(reply),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("no answer within {:?}", self.timeout)),
            }
        }
        .await;
        match result {
            Ok((allowed, a, b)) => {
                let (a, b) = (a.max(0) as u64, b.max(0) as u64);
                Ok(if allowed == 1 {
                    Decision {
                        allowed: true,
                        remaining: a / quota.interval_us,
                        reset: Duration::from_micros(b),
                        retry_after: Duration::ZERO,
                    }
                } else {
                    Decision {
                        allowed: false,
                        remaining: 0,
                        reset: Duration::from_micros(b),
                        retry_after: Duration::from_micros(a),
                    }
                })
            }
            Err(e) => {
                let until = self.base.elapsed() + Self::BACKOFF;
                self.down_until
                    .store(until.as_micros() as u64, Ordering::Relaxed);
                Err(e)
            }
        }
    }
}

/// Where a route's buckets live.
pub enum Limiter {
    /// In this process.
    Memory(Arc<MemoryLimiter>),
    /// In Redis, under `prefix`.
    Redis {
        /// The server.
        conn: Arc<RedisConn>,
        /// Key prefix including the route name.
        prefix: String,
        /// What to do when it fails.
        fail: FailMode,
    },
}

/// Per-request state handed to the response phase.
#[derive(Clone, Copy)]
struct Granted(Decision);

/// The `rate_limit` filter.
pub struct RateLimitFilter {
    quota: Quota,
    key: LimitKey,
    limiter: Limiter,
    counters: Arc<RouteCounters>,
}

impl RateLimitFilter {
    /// A filter taking one request per call from the bucket of the request's key.
    pub fn new(
        quota: Quota,
        key: LimitKey,
        limiter: Limiter,
        counters: Arc<RouteCounters>,
    ) -> Self {
        RateLimitFilter {
            quota,
            key,
            limiter,
            counters,
        }
    }

    fn bucket(&self, ctx: &RequestContext, request: &Parts) -> String {
        match &self.key {
            LimitKey::Consumer => match &ctx.consumer {
                Some(consumer) => format!("c:{consumer}"),
                None => format!("ip:{}", ctx.client.ip().to_canonical()),
            },
            LimitKey::ClientIp => format!("ip:{}", ctx.client.ip().to_canonical()),
            LimitKey::Header(name) => format!(
                "h:{}",
                String::from_utf8_lossy(
                    request
                        .headers
                        .get(name)
                        .map_or(&b""[..], HeaderValue::as_bytes)
                )
            ),
        }
    }

    fn add_headers(&self, headers: &mut http::HeaderMap, decision: &Decision) {
        headers.insert(
            HeaderName::from_static("ratelimit-limit"),
            HeaderValue::from(self.quota.burst),
        );
        headers.insert(
            HeaderName::from_static("ratelimit-remaining"),
            HeaderValue::from(decision.remaining),
        );
        headers.insert(
            HeaderName::from_static("ratelimit-reset"),
            HeaderValue::from(ceil_secs(decision.reset)),
        );
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_micros().div_ceil(1_000_000) as u64
}

#[async_trait]
impl Filter for RateLimitFilter {
    fn name(&self) -> &'static str {
        "rate_limit"
    }

    async fn on_request(
        &self,
        ctx: &mut RequestContext,
        request: &mut Parts,
    ) -> Result<(), Response<ProxyBody>> {
        let bucket = self.bucket(ctx, request);
        let decision = match &self.limiter {
            Limiter::Memory(memory) => memory.check(&bucket),
            Limiter::Redis { conn, prefix, fail } => {
                match conn.check(&format!("{prefix}{bucket}"), self.quota).await {
                    Ok(decision) => decision,
                    Err(error) => {
                        self.counters.limit_backend_errors.inc();
                        tracing::warn!(route = %ctx.route, "rate limit backend failed ({error}); failing {}", match fail { FailMode::Open => "open", FailMode::Closed => "closed" });
                        return match fail {
                            FailMode::Open => {
                                self.counters.limit_failed_open.inc();
                                Ok(())
                            }
                            FailMode::Closed => {
                                self.counters.limit_failed_closed.inc();
                                let mut response = json_error(
                                    StatusCode::SERVICE_UNAVAILABLE,
                                    "rate limiter unavailable",
                                    &ctx.request_id,
                                );
                                response.headers_mut().insert(
                                    http::header::RETRY_AFTER,
                                    HeaderValue::from(ceil_secs(RedisConn::BACKOFF)),
                                );
                                Err(response)
                            }
                        };
                    }
                }
            }
        };
        if decision.allowed {
            self.counters.limit_allowed.inc();
            ctx.extensions.insert(Granted(decision));
            return Ok(());
        }
        self.counters.limit_limited.inc();
        let mut response = json_error(
            StatusCode::TOO_MANY_REQUESTS,
            "rate limit exceeded",
            &ctx.request_id,
        );
        let headers = response.headers_mut();
        headers.insert(
            http::header::RETRY_AFTER,
            HeaderValue::from(ceil_secs(decision.retry_after).max(1)),
        );
        self.add_headers(headers, &decision);
        Err(response)
    }

    async fn on_response(&self, ctx: &mut RequestContext, response: &mut Response<ProxyBody>) {
        if let Some(Granted(decision)) = ctx.extensions.get::<Granted>().copied() {
            self.add_headers(response.headers_mut(), &decision);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcra_lets_burst_through_then_refills() {
        // 2 per second, burst 3.
        let quota = Quota::new(2, Duration::from_secs(1), 3);
        let limiter = MemoryLimiter::new(quota);
        let at = |key: &str, ms: u64| limiter.check_at(key, ms * 1000);
        let seen: Vec<(bool, u64)> = (0..4)
            .map(|_| at("a", 0))
            .map(|d| (d.allowed, d.remaining))
            .collect();
        assert_eq!(seen, [(true, 2), (true, 1), (true, 0), (false, 0)]);
        let refused = at("a", 0);
        assert_eq!(refused.retry_after, Duration::from_millis(500));
        assert_eq!(refused.reset, Duration::from_millis(1500));
        assert!(at("b", 0).allowed, "buckets are per key");
        assert!(!at("a", 499).allowed);
        assert!(at("a", 500).allowed, "one token back after 500 ms");
        assert!(!at("a", 500).allowed);
        let full = at("a", 10_000);
        assert_eq!(
            (full.allowed, full.remaining),
            (true, 2),
            "full again after a pause"
        );
    }

    #[test]
    fn idle_buckets_are_swept() {
        let limiter = MemoryLimiter::new(Quota::new(1, Duration::from_secs(1), 1));
        for i in 0..50 {
            limiter.check_at(&format!("k{i}"), 0);
        }
        limiter.sweep_at.store(10, Ordering::Relaxed);
        limiter.check_at("k0", 500_000);
        assert_eq!(limiter.states.len(), 50, "buckets still filling are kept");
        limiter.sweep_at.store(10, Ordering::Relaxed);
        limiter.check_at("late", 10_000_000);
        assert_eq!(limiter.states.len(), 1, "full buckets are dropped");
    }

    #[test]
    fn keys() {
        for (text, ok) in [
            ("consumer", true),
            ("client_ip", true),
            ("header:x-user", true),
            ("header:bad name", false),
            ("ip", false),
        ] {
            assert_eq!(LimitKey::parse(text).is_ok(), ok, "{text}");
        }
    }
}
