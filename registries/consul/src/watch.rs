//! The blocking-query loop on `/v1/health/service/<name>`, one per watched service.
//!
//! It follows the rules of Consul's "Blocking Queries" page (api-docs/features/blocking):
//!
//! - the first request carries no `index` and answers at once; each next one passes the
//!   last `X-Consul-Index` with `wait`, and hangs until something changed or `wait` (plus
//!   the server's wait/16 jitter) ran out;
//! - a response is no proof of change: the decoded set is compared with the last one and
//!   only differences are published;
//! - an index that goes backwards (a snapshot restore, a new cluster behind the same
//!   address) resets the index to 0, so the next request fetches afresh;
//! - a blocking request never carries an index below 1;
//! - re-queries are rate-limited by a token bucket (burst [`BURST`], then one request per
//!   [`REFILL`], the pace consul-template settled on), with jitter on every wait, so a
//!   server that answers at once cannot make the gateway spin.
//!
//! The index rule and the token bucket are Nomad's too: they live in the registry crate
//! ([`next_index`], [`TokenBucket`]), as do the host-name lookup and the malformed-entry
//! count.
//!
//! A server that sends no `X-Consul-Index` cannot block: it is polled every
//! [`NO_INDEX_POLL`] instead, with a warning. Errors end the stream with the right kind; the shared recover wrapper reconnects.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{StatusCode, Url};
use switchyard_registry::{
    next_index, resolve_host, set_diff, Endpoint, MalformedEntries, RegistryError, RegistryMetrics,
    TokenBucket, Update,
};

use crate::decode::{decode_entry, Decoded};

/// Requests a watch may make at once before the rate limit applies.
pub const BURST: u32 = 10;
/// One request per this much time once the burst is spent.
pub const REFILL: Duration = Duration::from_millis(100);
/// How often a server that sends no `X-Consul-Index` (so cannot block) is polled.
pub const NO_INDEX_POLL: Duration = Duration::from_secs(1);
/// Extra time past `wait` (and Consul's wait/16 jitter) before a request is abandoned.
const REQUEST_SLACK: Duration = Duration::from_secs(15);

// === Change detection ===

/// The updates that turn `old` into `new`: `Add` (new or changed endpoints) before `Remove`,
/// so a consumer applying them one by one never sees fewer endpoints than needed; an empty
/// `new` is an authoritative empty `Reset`.
pub fn diff(
    old: &BTreeMap<SocketAddr, Endpoint>,
    new: &BTreeMap<SocketAddr, Endpoint>,
) -> Vec<Update> {
    if new.is_empty() {
        return if old.is_empty() {
            Vec::new()
        } else {
            vec![Update::Reset(Vec::new())]
        };
    }
    let diff = set_diff(old.values(), new.values());
    let added = diff.added.into_iter().cloned().map(Arc::new).collect();
    Update::changes(added, diff.removed)
}

// === The loop ===

/// What a watch needs from its registry.
#[derive(Debug)]
pub struct Shared {
    /// The registry's name, for metrics and messages.
    pub name: String,
    /// The registry's counters.
    pub metrics: Arc<RegistryMetrics>,
    /// The HTTP client (TLS roots set).
    pub client: reqwest::Client,
    /// The agent's base URL, for messages.
    pub address: Url,
    /// Blocking-query wait.
    pub wait: Duration,
    /// Serve passing instances only.
    pub only_passing: bool,
}

/// One answer of the health endpoint.
struct Answer {
    /// `X-Consul-Index`; `None` when the server sent none (it cannot block).
    index: Option<u64>,
    filtered_by_acls: bool,
    /// `X-Consul-Default-ACL-Policy` said `deny`.
    default_deny: bool,
    entries: Vec<serde_json::Value>,
}

/// One service's watch. Drive it with [`Watch::next`].
pub struct Watch {
    shared: Arc<Shared>,
    /// The request URL without `index`/`wait`.
    url: Url,
    token: Option<String>,
    service: String,
    tags: Vec<String>,
    index: u64,
    known: Option<BTreeMap<SocketAddr, Endpoint>>,
    pending: VecDeque<Update>,
    bucket: TokenBucket,
    failed: bool,
    /// Malformed entries, each counted once while it stays malformed.
    malformed: MalformedEntries,
    warned_filtered: bool,
    warned_no_index: bool,
    /// Extra delay before the next request (set while the server sends no index).
    poll_delay: Duration,
}

impl Watch {
    /// A watch of `service` at `url` (the health URL with its fixed parameters).
    pub fn new(
        shared: Arc<Shared>,
        url: Url,
        token: Option<String>,
        service: String,
        tags: Vec<String>,
    ) -> Self {
        Watch {
            shared,
            url,
            token,
            service,
            tags,
            index: 0,
            known: None,
            pending: VecDeque::new(),
            bucket: TokenBucket::new(BURST, REFILL, Instant::now()),
            failed: false,
            malformed: MalformedEntries::default(),
            warned_filtered: false,
            warned_no_index: false,
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
            let answer = match self.fetch().await {
                Ok(answer) => answer,
                Err(err) => {
                    self.failed = true;
                    return Some(Err(err));
                }
            };
            let previous = self.index;
            let Some(returned) = answer.index else {
                // Not a blocking endpoint after all (a proxy or another implementation that
                // drops the header): poll it, slowly, rather than fail or spin.
                if !self.warned_no_index {
                    self.warned_no_index = true;
                    tracing::warn!(
                        registry = %self.shared.name,
                        service = %self.service,
                        "consul answered without X-Consul-Index: cannot block, polling every {NO_INDEX_POLL:?}"
                    );
                }
                self.index = 0;
                self.poll_delay = NO_INDEX_POLL;
                self.publish(&answer.entries).await;
                continue;
            };
            self.poll_delay = Duration::ZERO;
            self.index = next_index(previous, returned);
            if self.index == 0 {
                tracing::info!(
                    registry = %self.shared.name,
                    service = %self.service,
                    previous,
                    returned,
                    "X-Consul-Index went backwards; resetting the blocking query"
                );
            }
            if let Some(error) = self.anonymous_deny(&answer) {
                self.failed = true;
                return Some(Err(error));
            }
            if answer.filtered_by_acls {
                if answer.entries.is_empty() {
                    self.failed = true;
                    return Some(Err(RegistryError::unauthorized(format!(
                        "consul at {} filtered every instance of {:?} by ACLs (X-Consul-Results-Filtered-By-ACLs): {} lacks service:read or node:read; set token or token_file",
                        self.address(),
                        self.service,
                        if self.token.is_some() { "the token" } else { "the anonymous token" },
                    ))));
                }
                if !self.warned_filtered {
                    self.warned_filtered = true;
                    tracing::warn!(
                        registry = %self.shared.name,
                        service = %self.service,
                        "some instances are hidden by ACLs (X-Consul-Results-Filtered-By-ACLs)"
                    );
                }
            }
            self.publish(&answer.entries).await;
        }
    }

    /// The error for an empty answer that may be ACL filtering no header admits to.
    ///
    /// Consul hides `X-Consul-Results-Filtered-By-ACLs` from requests without a token
    /// (`maskResultsFilteredByACLs` in agent/consul/rpc.go: `if token == "" {
    /// meta.SetResultsFilteredByACLs(false) }`), and a request without `X-Consul-Token` runs
    /// as the agent's default token, blank unless configured. So with default-deny ACLs and
    /// no token, a service answers `[]` exactly as one with no instances would. What Consul
    /// does say, on every answer, is its default policy (`setACLDefaultPolicy` in
    /// agent/http.go, `X-Consul-Default-ACL-Policy`): `deny` plus no token plus an empty
    /// answer is reported as an error, never published as a healthy empty service (the last
    /// good set stays, stale). A non-empty answer is served: the anonymous token may have
    /// been granted `service:read`.
    fn anonymous_deny(&self, answer: &Answer) -> Option<RegistryError> {
        if !answer.default_deny || self.token.is_some() || !answer.entries.is_empty() {
            return None;
        }
        Some(RegistryError::unauthorized(format!(
            "consul at {} answered no instances of {:?} with ACL default policy deny \
             (X-Consul-Default-ACL-Policy) and no token configured: Consul hides ACL filtering \
             from requests without a token, so this empty answer proves nothing; set token or \
             token_file (a token with service:read and node:read)",
            self.address(),
            self.service,
        )))
    }

    /// Decodes an answer and queues what changed (everything, as a `Reset`, the first time).
    async fn publish(&mut self, entries: &[serde_json::Value]) {
        let set = self.decode(entries).await;
        match &self.known {
            None => self.pending.push_back(Update::reset(set.values().cloned())),
            Some(known) => self.pending.extend(diff(known, &set)),
        }
        self.known = Some(set);
    }

    async fn fetch(&self) -> Result<Answer, RegistryError> {
        let mut url = self.url.clone();
        if self.index > 0 {
            url.query_pairs_mut()
                .append_pair("index", &self.index.to_string())
                .append_pair("wait", &wait_param(self.shared.wait));
        }
        let timeout = self.shared.wait + self.shared.wait / 16 + REQUEST_SLACK;
        let mut request = self
            .shared
            .client
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .timeout(timeout);
        if let Some(token) = &self.token {
            request = request.header("X-Consul-Token", token);
        }
        let response = request.send().await.map_err(|e| self.transport_error(&e))?;
        let status = response.status();
        if !status.is_success() {
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let body = response.text().await.unwrap_or_default();
            return Err(self.status_error(status, &body, retry_after));
        }
        let index = response
            .headers()
            .get("X-Consul-Index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let filtered_by_acls = response
            .headers()
            .get("X-Consul-Results-Filtered-By-ACLs")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let default_deny = response
            .headers()
            .get("X-Consul-Default-ACL-Policy")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("deny"));
        let body = response
            .bytes()
            .await
            .map_err(|e| self.transport_error(&e))?;
        let entries: Vec<serde_json::Value> = serde_json::from_slice(&body).map_err(|e| {
            RegistryError::protocol(format!(
                "consul at {} answered {:?} with something other than a JSON array: {e}",
                self.address(),
                self.service
            ))
        })?;
        Ok(Answer {
            index,
            filtered_by_acls,
            default_deny,
            entries,
        })
    }

    /// Decodes and resolves the entries; counts each malformed entry once while it stays
    /// malformed.
    async fn decode(&mut self, entries: &[serde_json::Value]) -> BTreeMap<SocketAddr, Endpoint> {
        let mut set = BTreeMap::new();
        for value in entries {
            let candidate = match decode_entry(value, &self.tags, self.shared.only_passing) {
                Decoded::Serve(candidate) => candidate,
                Decoded::Skip => continue,
                Decoded::Malformed(key, why) => {
                    self.report_malformed(key, why);
                    continue;
                }
            };
            let address = match resolve_host(&candidate.host, candidate.port).await {
                Ok(address) => address,
                Err(why) => {
                    self.report_malformed(candidate.key.clone(), why);
                    continue;
                }
            };
            if set.contains_key(&address) {
                tracing::debug!(
                    registry = %self.shared.name,
                    service = %self.service,
                    %address,
                    "instance {} has the address of another instance; keeping the first",
                    candidate.key
                );
                continue;
            }
            let mut endpoint = Endpoint::new(address).with_weight(candidate.weight);
            endpoint.set_metadata(candidate.metadata);
            endpoint.set_zone(candidate.zone);
            set.insert(address, endpoint);
        }
        self.malformed.end_answer();
        set
    }

    fn report_malformed(&mut self, key: String, why: String) {
        let what = format!("consul service {:?} instance {key}: {why}", self.service);
        let shared = &self.shared;
        self.malformed.report(&shared.metrics, &shared.name, what);
    }

    /// The agent's address for messages, without the trailing `/`.
    fn address(&self) -> &str {
        self.shared.address.as_str().trim_end_matches('/')
    }

    fn transport_error(&self, err: &reqwest::Error) -> RegistryError {
        let mut message = format!(
            "consul agent at {} unreachable while watching {:?}: {err}",
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

    fn status_error(
        &self,
        status: StatusCode,
        body: &str,
        retry_after: Option<Duration>,
    ) -> RegistryError {
        let body = body.trim();
        let body: String = body.chars().take(300).collect();
        let address = self.address();
        let service = &self.service;
        let error = match status {
            StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED => {
                let who = if self.token.is_some() {
                    "refused the configured token (check token / token_file)"
                } else {
                    "refused anonymous access (set token or token_file)"
                };
                RegistryError::unauthorized(format!(
                    "consul at {address} {who} for service {service:?}: {} {body}",
                    status.as_u16()
                ))
            }
            StatusCode::BAD_REQUEST => RegistryError::invalid_query(format!(
                "consul at {address} rejected the query for {service:?}: 400 {body}"
            )),
            _ if body.contains("No path to datacenter") => RegistryError::invalid_query(format!(
                "consul at {address} does not know the datacenter asked for {service:?}: {} {body}",
                status.as_u16()
            )),
            _ if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS => {
                RegistryError::unavailable(format!(
                    "consul at {address} failed the query for {service:?}: {} {body}",
                    status.as_u16()
                ))
            }
            _ => RegistryError::protocol(format!(
                "consul at {address} answered the query for {service:?} with {} {body}",
                status.as_u16()
            )),
        };
        match retry_after {
            Some(delay) => error.with_retry_after(delay),
            None => error,
        }
    }
}

/// `wait` as Consul reads it (a Go duration): whole seconds when possible.
pub fn wait_param(wait: Duration) -> String {
    if wait.subsec_nanos() == 0 {
        format!("{}s", wait.as_secs())
    } else {
        format!("{}ms", wait.as_millis().max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(port: u16, weight: u32) -> Endpoint {
        Endpoint::new(SocketAddr::from(([10, 0, 0, 1], port))).with_weight(weight)
    }

    fn set(endpoints: &[Endpoint]) -> BTreeMap<SocketAddr, Endpoint> {
        endpoints.iter().map(|e| (e.address, e.clone())).collect()
    }

    #[test]
    fn diffs() {
        fn check(old: &[Endpoint], new: &[Endpoint], expected: Vec<Update>) {
            assert_eq!(diff(&set(old), &set(new)), expected, "{old:?} -> {new:?}");
        }
        check(&[ep(1, 1)], &[ep(1, 1)], vec![]);
        check(&[], &[], vec![]);
        check(
            &[ep(1, 1)],
            &[ep(1, 1), ep(2, 1)],
            vec![Update::add(vec![ep(2, 1)])],
        );
        check(
            &[ep(1, 1), ep(2, 1)],
            &[ep(1, 1)],
            vec![Update::Remove(vec![ep(2, 1).address])],
        );
        check(&[ep(1, 1)], &[ep(1, 5)], vec![Update::add(vec![ep(1, 5)])]);
        check(&[ep(1, 1)], &[], vec![Update::reset(vec![])]);
        check(
            &[ep(1, 1)],
            &[ep(2, 1)],
            vec![
                Update::add(vec![ep(2, 1)]),
                Update::Remove(vec![ep(1, 1).address]),
            ],
        );
    }

    #[test]
    fn wait_params() {
        assert_eq!(wait_param(Duration::from_secs(300)), "300s");
        assert_eq!(wait_param(Duration::from_millis(1500)), "1500ms");
    }
}
