//! The bounded response store of one route, and the record of upstream requests in
//! flight (request coalescing).
//!
//! The store maps a primary key (host + path and query) to the variants of that resource
//! (one per combination of the request headers its `Vary` names). It is a `moka` cache
//! bounded by bytes; every entry weighs at least `max_bytes / max_entries`, so the number
//! of entries stays under `max_entries` too. Entries expire once they are past any use:
//! their freshness plus `stale_if_error`, or plus `max_ttl` when they have a validator
//! (kept for revalidation).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::StatusCode;
use moka::sync::Cache;
use tokio::sync::watch;

use super::control::split_list;

/// How many variants (by `Vary`) one resource keeps; the oldest goes first.
const MAX_VARIANTS: usize = 16;

/// A stored response.
#[derive(Debug)]
pub struct Entry {
    /// Status.
    pub status: StatusCode,
    /// Headers as the upstream sent them (hop-by-hop headers already removed).
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
    /// When it was received (or last revalidated).
    pub stored: Instant,
    /// Its `Age` on arrival.
    pub initial_age: Duration,
    /// Freshness lifetime.
    pub lifetime: Duration,
    /// `no-cache`: revalidate before every use.
    pub no_cache: bool,
    /// `must-revalidate`: never served stale.
    pub must_revalidate: bool,
    /// The request header values its `Vary` names, in the variant key form.
    pub variant: String,
}

impl Entry {
    /// Its current age.
    pub fn age(&self, now: Instant) -> Duration {
        self.initial_age + now.saturating_duration_since(self.stored)
    }

    /// Whether it may be served without asking the upstream.
    pub fn is_fresh(&self, now: Instant) -> bool {
        !self.no_cache && self.age(now) < self.lifetime
    }

    /// Whether it has a validator (`ETag` or `Last-Modified`).
    pub fn has_validator(&self) -> bool {
        self.headers.contains_key(header::ETAG) || self.headers.contains_key(header::LAST_MODIFIED)
    }

    /// Approximate memory use.
    pub fn size(&self) -> u64 {
        let headers: usize = self
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 32)
            .sum();
        (self.body.len() + headers + self.variant.len() + 128) as u64
    }
}

/// All variants of one resource.
#[derive(Debug)]
pub struct Resource {
    /// The host part of the key (for purges).
    pub host: String,
    /// The path and query part of the key (for purges).
    pub path: String,
    /// Lower-case header names of the latest `Vary`.
    pub vary: Vec<HeaderName>,
    /// The variants, oldest first.
    pub variants: Vec<Arc<Entry>>,
}

impl Resource {
    fn size(&self) -> u64 {
        self.variants.iter().map(|e| e.size()).sum::<u64>() + self.path.len() as u64 + 64
    }
}

/// The `Vary` header names of a response, lower-case and sorted; `None` for `Vary: *`.
pub fn vary_names(headers: &HeaderMap) -> Option<Vec<HeaderName>> {
    let mut names = Vec::new();
    for value in headers.get_all(header::VARY) {
        for name in split_list(value.to_str().unwrap_or("*")) {
            if name == "*" {
                return None;
            }
            if let Ok(name) = HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()) {
                names.push(name);
            }
        }
    }
    names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    names.dedup();
    Some(names)
}

/// The variant key of a request for a resource varying on `names`.
pub fn variant_key(names: &[HeaderName], request: &HeaderMap) -> String {
    let mut key = String::new();
    for name in names {
        key.push_str(name.as_str());
        key.push('=');
        let values: Vec<&str> = request
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap_or("\u{fffd}"))
            .collect();
        key.push_str(&values.join(","));
        key.push('\n');
    }
    key
}

/// Which entries a purge removes.
#[derive(Clone, Debug, Default)]
pub struct PurgeFilter {
    /// Only this route's store (none: every route).
    pub route: Option<String>,
    /// Only this host (case-insensitive).
    pub host: Option<String>,
    /// Only this exact path and query.
    pub path: Option<String>,
    /// Only paths starting with this.
    pub prefix: Option<String>,
}

/// Sizing and timing of a store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreLimits {
    /// Body bytes kept (approximately).
    pub max_bytes: u64,
    /// Entries kept.
    pub max_entries: u64,
    /// Extra time an entry with a validator is kept after it went stale.
    pub keep_for_revalidation: Duration,
    /// Extra time any entry is kept after it went stale.
    pub stale_if_error: Duration,
}

struct Expiry {
    limits: StoreLimits,
}

impl Expiry {
    fn ttl(&self, resource: &Resource) -> Duration {
        resource
            .variants
            .iter()
            .map(|e| {
                let remaining = e.lifetime.saturating_sub(e.initial_age);
                let extra = if e.has_validator() {
                    self.limits
                        .keep_for_revalidation
                        .max(self.limits.stale_if_error)
                } else {
                    self.limits.stale_if_error
                };
                remaining + extra
            })
            .max()
            .unwrap_or(Duration::ZERO)
            .max(Duration::from_millis(1))
    }
}

impl moka::Expiry<String, Arc<Resource>> for Expiry {
    fn expire_after_create(
        &self,
        _: &String,
        value: &Arc<Resource>,
        _: Instant,
    ) -> Option<Duration> {
        Some(self.ttl(value))
    }

    fn expire_after_update(
        &self,
        _: &String,
        value: &Arc<Resource>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(self.ttl(value))
    }
}

/// A request that went upstream for a key; others wait for it.
pub struct FlightGuard {
    store: Arc<Store>,
    key: String,
    receiver: watch::Receiver<()>,
    _sender: watch::Sender<()>,
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        let mut inflight = self
            .store
            .inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if inflight
            .get(&self.key)
            .is_some_and(|r| r.same_channel(&self.receiver))
        {
            inflight.remove(&self.key);
        }
        // The sender drops after this, waking every waiter.
    }
}

/// Either lead the upstream request for a key, or wait for the one in flight.
pub enum Flight {
    /// Go upstream; drop the guard once the response is stored (or known not to be).
    Lead(FlightGuard),
    /// Another request is on it: wait until this resolves.
    Follow(watch::Receiver<()>),
}

/// The response store of one route.
pub struct Store {
    /// The route's name.
    pub route: String,
    resources: Cache<String, Arc<Resource>>,
    inflight: Mutex<HashMap<String, watch::Receiver<()>>>,
    bytes: Arc<AtomicU64>,
}

impl Store {
    /// An empty store.
    pub fn new(route: &str, limits: StoreLimits) -> Store {
        let bytes = Arc::new(AtomicU64::new(0));
        let min_weight = (limits.max_bytes / limits.max_entries.max(1)).max(1);
        let counted = bytes.clone();
        let resources = Cache::builder()
            .max_capacity(limits.max_bytes.max(1))
            .weigher(move |_: &String, r: &Arc<Resource>| {
                u32::try_from(r.size().max(min_weight)).unwrap_or(u32::MAX)
            })
            .eviction_listener(move |_, r: Arc<Resource>, _| {
                counted.fetch_sub(r.size(), Ordering::Relaxed);
            })
            .expire_after(Expiry { limits })
            .build();
        Store {
            route: route.to_owned(),
            resources,
            inflight: Mutex::new(HashMap::new()),
            bytes,
        }
    }

    /// The primary key of a request.
    pub fn primary_key(host: &str, path: &str) -> String {
        format!("{}\n{path}", host.to_ascii_lowercase())
    }

    /// The stored variant matching `request`'s headers.
    pub fn lookup(&self, primary: &str, request: &HeaderMap) -> Option<Arc<Entry>> {
        let resource = self.resources.get(primary)?;
        let variant = variant_key(&resource.vary, request);
        resource
            .variants
            .iter()
            .rev()
            .find(|e| e.variant == variant)
            .cloned()
    }

    /// Stores `entry` as the variant of (`host`, `path`) for `vary`.
    pub fn insert(&self, host: &str, path: &str, vary: Vec<HeaderName>, entry: Entry) {
        let primary = Self::primary_key(host, path);
        let entry = Arc::new(entry);
        let mut added = 0;
        self.resources.entry(primary).and_upsert_with(|existing| {
            let mut variants: Vec<Arc<Entry>> = match existing {
                // Variants made under another Vary no longer match requests.
                Some(e) if e.value().vary == vary => e.value().variants.clone(),
                _ => Vec::new(),
            };
            variants.retain(|v| v.variant != entry.variant);
            if variants.len() >= MAX_VARIANTS {
                variants.remove(0);
            }
            variants.push(entry.clone());
            let resource = Resource {
                host: host.to_ascii_lowercase(),
                path: path.to_owned(),
                vary: vary.clone(),
                variants,
            };
            added = resource.size();
            Arc::new(resource)
        });
        self.bytes.fetch_add(added, Ordering::Relaxed);
    }

    /// Forgets every variant of a resource (after a successful unsafe request on it).
    pub fn invalidate(&self, primary: &str) {
        self.resources.invalidate(primary);
    }

    /// Removes the entries `filter` selects; returns how many responses were removed.
    pub fn purge(&self, filter: &PurgeFilter) -> usize {
        let mut removed = 0;
        let keys: Vec<(Arc<String>, usize)> = self
            .resources
            .iter()
            .filter(|(_, r)| {
                filter
                    .host
                    .as_ref()
                    .is_none_or(|h| h.eq_ignore_ascii_case(&r.host))
                    && filter.path.as_ref().is_none_or(|p| *p == r.path)
                    && filter
                        .prefix
                        .as_ref()
                        .is_none_or(|p| r.path.starts_with(p.as_str()))
            })
            .map(|(k, r)| (k, r.variants.len()))
            .collect();
        for (key, variants) in keys {
            self.resources.invalidate(key.as_str());
            removed += variants;
        }
        self.resources.run_pending_tasks();
        removed
    }

    /// Resources stored (approximate until pending maintenance ran).
    pub fn entries(&self) -> u64 {
        self.resources.run_pending_tasks();
        self.resources.entry_count()
    }

    /// Bytes stored (approximate).
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Leads the upstream request for `key`, or joins the one in flight.
    pub fn flight(self: &Arc<Self>, key: &str) -> Flight {
        let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(receiver) = inflight.get(key) {
            return Flight::Follow(receiver.clone());
        }
        let (sender, receiver) = watch::channel(());
        inflight.insert(key.to_owned(), receiver.clone());
        Flight::Lead(FlightGuard {
            store: self.clone(),
            key: key.to_owned(),
            receiver,
            _sender: sender,
        })
    }
}

/// A header value for an `Age`.
pub fn age_value(age: Duration) -> HeaderValue {
    HeaderValue::from(age.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(body: &str, variant: &str, lifetime: u64) -> Entry {
        Entry {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: Bytes::from(body.to_owned()),
            stored: Instant::now(),
            initial_age: Duration::ZERO,
            lifetime: Duration::from_secs(lifetime),
            no_cache: false,
            must_revalidate: false,
            variant: variant.to_owned(),
        }
    }

    fn limits(max_bytes: u64, max_entries: u64) -> StoreLimits {
        StoreLimits {
            max_bytes,
            max_entries,
            keep_for_revalidation: Duration::from_secs(60),
            stale_if_error: Duration::ZERO,
        }
    }

    #[test]
    fn variants_by_vary() {
        let store = Store::new("r", limits(1 << 20, 100));
        let lang = vec![HeaderName::from_static("accept-language")];
        let mut en = HeaderMap::new();
        en.insert("accept-language", HeaderValue::from_static("en"));
        let mut fr = HeaderMap::new();
        fr.insert("accept-language", HeaderValue::from_static("fr"));
        store.insert(
            "h",
            "/p",
            lang.clone(),
            entry("english", &variant_key(&lang, &en), 60),
        );
        store.insert(
            "h",
            "/p",
            lang.clone(),
            entry("french", &variant_key(&lang, &fr), 60),
        );
        let primary = Store::primary_key("H", "/p");
        assert_eq!(store.lookup(&primary, &en).unwrap().body, "english");
        assert_eq!(store.lookup(&primary, &fr).unwrap().body, "french");
        assert!(store.lookup(&primary, &HeaderMap::new()).is_none());
        // A new Vary replaces the variants made under the old one.
        store.insert("h", "/p", Vec::new(), entry("any", "", 60));
        assert_eq!(store.lookup(&primary, &fr).unwrap().body, "any");
    }

    #[test]
    fn bounded_by_entries() {
        let store = Store::new("r", limits(100_000, 10));
        for i in 0..100 {
            store.insert("h", &format!("/p/{i}"), Vec::new(), entry("x", "", 60));
        }
        let entries = store.entries();
        assert!((1..=10).contains(&entries), "{entries} entries kept");
    }

    #[test]
    fn purges_by_path_prefix_and_host() {
        let store = Store::new("r", limits(1 << 20, 1000));
        for i in 0..5 {
            store.insert("a", &format!("/p/{i}"), Vec::new(), entry("x", "", 60));
            store.insert("a", &format!("/q/{i}"), Vec::new(), entry("x", "", 60));
            store.insert("b", &format!("/q/{i}"), Vec::new(), entry("x", "", 60));
        }
        assert_eq!(store.entries(), 15);
        let purge = |host: Option<&str>, path: Option<&str>, prefix: Option<&str>| {
            store.purge(&PurgeFilter {
                route: None,
                host: host.map(Into::into),
                path: path.map(Into::into),
                prefix: prefix.map(Into::into),
            })
        };
        assert_eq!(purge(Some("A"), None, Some("/q/")), 5);
        assert_eq!(purge(None, Some("/q/1"), None), 1);
        assert_eq!(purge(None, Some("/q/1"), None), 0);
        assert_eq!(store.entries(), 9);
        assert_eq!(purge(None, None, None), 9);
        assert_eq!(store.entries(), 0);
        assert!(store.bytes() < 100, "{} bytes left", store.bytes());
    }

    #[tokio::test]
    async fn one_leader_per_key() {
        let store = Arc::new(Store::new("r", limits(1 << 20, 100)));
        let Flight::Lead(guard) = store.flight("k") else {
            panic!("first leads")
        };
        let Flight::Follow(mut waiter) = store.flight("k") else {
            panic!("second follows")
        };
        assert!(matches!(store.flight("other"), Flight::Lead(_)));
        let woke = tokio::spawn(async move { waiter.changed().await.is_err() });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!woke.is_finished());
        drop(guard);
        assert!(woke.await.unwrap(), "waiter woken when the leader is done");
        assert!(
            matches!(store.flight("k"), Flight::Lead(_)),
            "next request leads again"
        );
    }
}
