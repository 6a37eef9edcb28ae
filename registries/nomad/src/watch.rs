//! The blocking-query loop on `/v1/service/<name>`, one per watched service.
//!
//! Nomad's blocking queries (api-docs "Blocking Queries") work as Consul's, and so does this
//! loop:
//!
//! - the first request carries no `index` and answers at once; each next one passes the
//!   last `X-Nomad-Index` with `wait` (default 5m, Nomad caps it at 10m and adds up to
//!   wait/16 of jitter) and hangs until the service registrations changed;
//! - an answer is no proof of change: the decoded set is compared with the last one and
//!   only differences are published (an empty set is an authoritative empty `Reset`: the
//!   service has no registration left, which Nomad answers with `[]` and 200);
//! - an index that goes backwards (a snapshot restore, a new cluster) resets it to 0 so the
//!   next request reads afresh, and a blocking request never carries an index below 1;
//! - re-queries are rate-limited by a token bucket (burst [`BURST`], then one per
//!   [`REFILL`]), so a server answering at once cannot make the gateway spin.
//!
//! The index rule and the token bucket are Consul's too: they live in the registry crate
//! ([`next_index`], [`TokenBucket`]), as do the answer-to-updates step, the host-name lookup
//! and the malformed-entry count.
//!
//! Errors end the stream with the right kind; the shared recover wrapper reconnects.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{StatusCode, Url};
use switchyard_registry::{
    answer_updates, next_index, resolve_host, Endpoint, MalformedEntries, RegistryError,
    RegistryMetrics, TokenBucket, Update,
};

use crate::decode::{decode_entry, Decoded};

/// Requests a watch may make at once before the rate limit applies.
pub const BURST: u32 = 10;
/// One request per this much time once the burst is spent.
pub const REFILL: Duration = Duration::from_millis(100);
/// How often a server that sends no `X-Nomad-Index` (so cannot block) is polled.
pub const NO_INDEX_POLL: Duration = Duration::from_secs(1);
/// Extra time past `wait` (and Nomad's wait/16 jitter) before a request is abandoned.
const REQUEST_SLACK: Duration = Duration::from_secs(15);

/// What every watch of one registry shares.
#[derive(Debug)]
pub struct Shared {
    /// The registry's name, for metrics and messages.
    pub name: String,
    /// The registry's counters.
    pub metrics: Arc<RegistryMetrics>,
    /// The HTTP client.
    pub client: reqwest::Client,
    /// The ACL token, sent as `X-Nomad-Token`.
    pub token: Option<String>,
    /// Blocking-query wait.
    pub wait: Duration,
}

/// One service's watch. Drive it with [`Watch::next`].
pub struct Watch {
    shared: Arc<Shared>,
    /// The request URL without `index`/`wait`.
    url: Url,
    service: String,
    tags: Vec<String>,
    index: u64,
    /// The last published set, sorted by address; `None` before the first answer.
    known: Option<Vec<Arc<Endpoint>>>,
    pending: std::collections::VecDeque<Update>,
    bucket: TokenBucket,
    failed: bool,
    /// Malformed entries, each counted once while it stays malformed.
    malformed: MalformedEntries,
    poll_delay: Duration,
}

impl Watch {
    /// A watch of `service` at `url` (the service URL with its fixed parameters).
    pub fn new(shared: Arc<Shared>, url: Url, service: String, tags: Vec<String>) -> Self {
        Watch {
            shared,
            url,
            service,
            tags,
            index: 0,
            known: None,
            pending: Default::default(),
            bucket: TokenBucket::new(BURST, REFILL, Instant::now()),
            failed: false,
            malformed: Default::default(),
            poll_delay: Duration::ZERO,
        }
    }

    /// The next update, or the error that ends the watch (then `None`).
    pub async fn next(&mut self) -> Option<Result<Update, RegistryError>> {
        loop {
            if let Some(update) = self.pending.pop_front() {
                return Some(Ok(update));
            }
            if self.failed {
                return None;
            }
            if !self.poll_delay.is_zero() {
                tokio::time::sleep(self.poll_delay).await;
            }
            self.bucket.pace().await;
            let (index, entries) = match self.fetch().await {
                Ok(answer) => answer,
                Err(err) => {
                    self.failed = true;
                    return Some(Err(err));
                }
            };
            match index {
                None => {
                    // No X-Nomad-Index (a proxy dropped it): poll slowly rather than spin.
                    self.index = 0;
                    self.poll_delay = NO_INDEX_POLL;
                }
                Some(returned) => {
                    self.poll_delay = Duration::ZERO;
                    let previous = self.index;
                    self.index = next_index(previous, returned);
                    if self.index == 0 {
                        tracing::info!(registry = %self.shared.name, service = %self.service,
                            previous, returned, "X-Nomad-Index went backwards; reading afresh");
                    }
                }
            }
            let set = self.decode(&entries).await;
            self.pending
                .extend(answer_updates(self.known.as_deref(), &set));
            self.known = Some(set);
        }
    }

    async fn fetch(&self) -> Result<(Option<u64>, Vec<serde_json::Value>), RegistryError> {
        let mut url = self.url.clone();
        if self.index > 0 {
            url.query_pairs_mut()
                .append_pair("index", &self.index.to_string())
                .append_pair("wait", &format!("{}ms", self.shared.wait.as_millis()));
        }
        let timeout = self.shared.wait + self.shared.wait / 16 + REQUEST_SLACK;
        let mut request = self.shared.client.get(url).timeout(timeout);
        if let Some(token) = &self.shared.token {
            request = request.header("X-Nomad-Token", token);
        }
        let response = request.send().await.map_err(|e| self.transport_error(&e))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(self.status_error(status, &body));
        }
        let index = response
            .headers()
            .get("X-Nomad-Index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let body = response
            .bytes()
            .await
            .map_err(|e| self.transport_error(&e))?;
        let entries = serde_json::from_slice(&body).map_err(|e| {
            RegistryError::protocol(format!(
                "nomad at {} answered {:?} with something other than a JSON array: {e}",
                self.address(),
                self.service
            ))
        })?;
        Ok((index, entries))
    }

    /// Decodes and resolves the entries into a set sorted by address.
    async fn decode(&mut self, entries: &[serde_json::Value]) -> Vec<Arc<Endpoint>> {
        let mut set: Vec<Arc<Endpoint>> = Vec::new();
        for value in entries {
            let candidate = match decode_entry(value, &self.tags) {
                Decoded::Serve(candidate) => candidate,
                Decoded::Skip => continue,
                Decoded::Malformed(key, why) => {
                    self.report_malformed(key, why);
                    continue;
                }
            };
            match resolve_host(&candidate.host, candidate.port).await {
                Ok(address) => {
                    let endpoint = Endpoint::new(address).with_metadata(candidate.metadata);
                    set.push(Arc::new(endpoint));
                }
                Err(why) => self.report_malformed(candidate.key, why),
            }
        }
        self.malformed.end_answer();
        set.sort_by_key(|e| e.address);
        // Two registrations at one address serve once (the first in address order).
        set.dedup_by_key(|e| e.address);
        set
    }

    fn report_malformed(&mut self, key: String, why: String) {
        let what = format!("nomad service {:?} registration {key}: {why}", self.service);
        let shared = &self.shared;
        self.malformed.report(&shared.metrics, &shared.name, what);
    }

    fn address(&self) -> String {
        let mut url = self.url.clone();
        url.set_query(None);
        url.set_path("");
        url.as_str().trim_end_matches('/').to_owned()
    }

    fn transport_error(&self, err: &reqwest::Error) -> RegistryError {
        let mut message = format!(
            "nomad at {} unreachable while watching {:?}: {err}",
            self.address(),
            self.service
        );
        let mut source = std::error::Error::source(err);
        while let Some(cause) = source {
            message.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        if err.is_decode() {
            RegistryError::protocol(message)
        } else {
            RegistryError::unavailable(message)
        }
    }

    fn status_error(&self, status: StatusCode, body: &str) -> RegistryError {
        let body: String = body.trim().chars().take(300).collect();
        let (address, service, code) = (self.address(), &self.service, status.as_u16());
        match status {
            StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED => {
                let who = if self.shared.token.is_some() {
                    "refused the configured token"
                } else {
                    "refused anonymous access (set token)"
                };
                RegistryError::unauthorized(format!(
                    "nomad at {address} {who} for service {service:?}: {code} {body}"
                ))
            }
            StatusCode::BAD_REQUEST => RegistryError::invalid_query(format!(
                "nomad at {address} rejected the query for {service:?}: 400 {body}"
            )),
            _ if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS => {
                RegistryError::unavailable(format!(
                    "nomad at {address} failed the query for {service:?}: {code} {body}"
                ))
            }
            _ => RegistryError::protocol(format!(
                "nomad at {address} answered the query for {service:?} with {code} {body}"
            )),
        }
    }
}
