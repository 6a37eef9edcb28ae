//! Turning DNS answers into endpoint sets, and endpoint sets into updates.
//!
//! Pure functions, tested without a server:
//! - [`srv_endpoints`]: RFC 2782 SRV records plus their targets' addresses → endpoints, with
//!   the SRV priority as [`Endpoint::priority`] and the weight mapped by [`tier_weights`];
//! - [`refresh_delay`]: the smallest TTL, clamped by `min_ttl`/`max_ttl`, with jitter;
//! - [`diff`]: the update that takes the consumer from the last published state to the new
//!   one, or nothing when nothing changed.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::Name;
use switchyard_registry::{set_diff, Endpoint, SetDiff, Update};

/// How much a non-zero SRV weight is scaled up in a priority that also holds weight-0
/// records, which each get weight 1 (see [`tier_weights`]).
pub const ZERO_WEIGHT_SCALE: u32 = 100;

/// Share of a refresh interval by which a refresh may come early, at random, so that many
/// services with the same TTL do not refresh in lockstep.
pub const JITTER: f64 = 0.1;

/// One SRV record as read from an answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Srv {
    /// Lower is preferred.
    pub priority: u16,
    /// Relative share within the priority (RFC 2782).
    pub weight: u16,
    /// The port of the service on the target.
    pub port: u16,
    /// The host (never `.` here: the caller handles "service not available").
    pub target: Name,
}

/// What a service resolves to at one refresh.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    /// NXDOMAIN: the name does not exist.
    Missing,
    /// The endpoints, by address. Empty for NODATA and for a single `.` SRV target.
    Endpoints(BTreeMap<SocketAddr, Endpoint>),
}

impl State {
    /// An empty (but existing) service.
    pub fn empty() -> Self {
        State::Endpoints(BTreeMap::new())
    }

    /// A state holding `endpoints`.
    pub fn from_endpoints(endpoints: impl IntoIterator<Item = Endpoint>) -> Self {
        State::Endpoints(
            endpoints
                .into_iter()
                .map(|endpoint| (endpoint.address, endpoint))
                .collect(),
        )
    }
}

/// The balancer weights of the SRV records of one priority, in order, following RFC 2782:
/// "weight 0 ... should have a very small chance of being selected" when records with
/// non-zero weights exist, and all-zero weights mean "no server selection to do".
///
/// - all weights 0: every record gets weight 1 (an even split);
/// - no weight 0: the SRV weights unchanged (1:3 stays 1:3);
/// - some of each: non-zero weights are multiplied by [`ZERO_WEIGHT_SCALE`] (100) and each
///   weight-0 record gets 1, so one weight-0 target next to a weight-1 target gets 1/101 of
///   the traffic.
pub fn tier_weights(weights: &[u16]) -> Vec<u32> {
    let zeros = weights.iter().filter(|w| **w == 0).count();
    weights
        .iter()
        .map(|&w| match (zeros, w) {
            (z, _) if z == weights.len() => 1,
            (0, w) => u32::from(w),
            (_, 0) => 1,
            (_, w) => u32::from(w) * ZERO_WEIGHT_SCALE,
        })
        .collect()
}

/// Endpoints for `records`, each target expanded to its addresses in `addresses` (targets
/// missing there are skipped: the caller has reported them).
///
/// Every address of a target gets the record's port, priority and (mapped) weight, and
/// metadata `target`, `srv_priority`, `srv_weight`. When two records lead to the same
/// address and port, the lower priority wins and equal priorities add their weights. A
/// record on port 0 names no listening service and is left out.
pub fn srv_endpoints(records: &[Srv], addresses: &HashMap<Name, Vec<IpAddr>>) -> Vec<Endpoint> {
    let mut by_priority: BTreeMap<u16, Vec<&Srv>> = BTreeMap::new();
    for record in records.iter().filter(|r| r.port != 0) {
        by_priority.entry(record.priority).or_default().push(record);
    }
    let mut endpoints: BTreeMap<SocketAddr, Endpoint> = BTreeMap::new();
    for (priority, tier) in by_priority {
        let raw: Vec<u16> = tier.iter().map(|record| record.weight).collect();
        for (record, weight) in tier.iter().zip(tier_weights(&raw)) {
            let Some(ips) = addresses.get(&record.target) else {
                continue;
            };
            for ip in ips {
                let address = SocketAddr::new(*ip, record.port);
                if let Some(existing) = endpoints.get_mut(&address) {
                    // Tiers are visited from the lowest priority up: an existing entry has a
                    // priority at most this one.
                    if existing.priority == u32::from(priority) {
                        existing.weight = existing.weight.saturating_add(weight);
                    }
                    continue;
                }
                let mut endpoint = Endpoint::new(address)
                    .with_weight(weight)
                    .with_priority(u32::from(priority));
                let target = record.target.to_ascii();
                let target = target.strip_suffix('.').unwrap_or(&target).to_owned();
                let labels = endpoint.metadata_mut();
                labels.insert("target".into(), target);
                labels.insert("srv_priority".into(), record.priority.to_string());
                labels.insert("srv_weight".into(), record.weight.to_string());
                endpoints.insert(address, endpoint);
            }
        }
    }
    endpoints.into_values().collect()
}

/// When to refresh next: `ttl` clamped to `[min_ttl, max_ttl]`, then up to [`JITTER`]
/// (10 %) earlier, by `random` in `0.0..1.0`, but never below `min_ttl`.
pub fn refresh_delay(ttl: Duration, min_ttl: Duration, max_ttl: Duration, random: f64) -> Duration {
    let delay = ttl.clamp(min_ttl, max_ttl.max(min_ttl));
    let early = delay.mul_f64(JITTER * random.clamp(0.0, 1.0));
    (delay - early).max(min_ttl)
}

/// The update that moves a consumer from `previous` (`None`: nothing published yet) to
/// `next`, or `None` when they are equal.
///
/// Only additions or changes give `Add`; only removals give `Remove`; both at once give a
/// `Reset` of the new set, so a consumer never sees a half-applied change. An empty set is
/// an empty `Reset`; NXDOMAIN is `DoesNotExist`.
pub fn diff(previous: Option<&State>, next: &State) -> Option<Update> {
    let reset = |set: &BTreeMap<SocketAddr, Endpoint>| Update::reset(set.values().cloned());
    match (previous, next) {
        (Some(previous), next) if previous == next => None,
        (_, State::Missing) => Some(Update::DoesNotExist),
        (None | Some(State::Missing), State::Endpoints(next)) => Some(reset(next)),
        (Some(State::Endpoints(_)), State::Endpoints(next)) if next.is_empty() => {
            Some(Update::Reset(Vec::new()))
        }
        (Some(State::Endpoints(previous)), State::Endpoints(next)) => {
            let SetDiff { added, removed } = set_diff(previous.values(), next.values());
            Some(match (removed.is_empty(), added.is_empty()) {
                (true, _) => Update::add(added.into_iter().cloned()),
                (false, true) => Update::Remove(removed),
                (false, false) => reset(next),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> Name {
        Name::from_ascii(text).unwrap()
    }

    fn srv(priority: u16, weight: u16, port: u16, target: &str) -> Srv {
        Srv {
            priority,
            weight,
            port,
            target: name(target),
        }
    }

    /// `(address, weight, priority)` of each endpoint, sorted by address.
    fn summary(endpoints: &[Endpoint]) -> Vec<(String, u32, u32)> {
        endpoints
            .iter()
            .map(|e| (e.address.to_string(), e.weight, e.priority))
            .collect()
    }

    #[test]
    fn weights_follow_rfc_2782() {
        fn check(weights: &[u16], expected: &[u32]) {
            assert_eq!(tier_weights(weights), expected, "{weights:?}");
        }
        check(&[1, 3], &[1, 3]);
        check(&[0, 0], &[1, 1]);
        check(&[0], &[1]);
        check(&[0, 1, 3], &[1, 100, 300]);
        check(&[65535, 0], &[6_553_500, 1]);
        check(&[], &[]);
    }

    #[test]
    fn srv_records_become_endpoints() {
        fn check(records: &[Srv], expected: &[(&str, u32, u32)]) {
            let addresses: HashMap<Name, Vec<IpAddr>> = [
                ("a.test.", vec!["10.0.0.1".parse().unwrap()]),
                (
                    "b.test.",
                    vec!["10.0.0.2".parse().unwrap(), "::2".parse().unwrap()],
                ),
                ("c.test.", vec!["10.0.0.3".parse().unwrap()]),
            ]
            .into_iter()
            .map(|(n, ips)| (name(n), ips))
            .collect();
            let got = summary(&srv_endpoints(records, &addresses));
            let expected: Vec<_> = expected
                .iter()
                .map(|(a, w, p)| ((*a).to_owned(), *w, *p))
                .collect();
            assert_eq!(got, expected, "{records:?}");
        }
        // Weights 1:3 at priority 0, a backup at priority 1.
        check(
            &[
                srv(0, 1, 8001, "a.test."),
                srv(0, 3, 8002, "c.test."),
                srv(1, 5, 8003, "b.test."),
            ],
            &[
                ("10.0.0.1:8001", 1, 0),
                ("10.0.0.2:8003", 5, 1),
                ("10.0.0.3:8002", 3, 0),
                ("[::2]:8003", 5, 1),
            ],
        );
        // Unknown target skipped; weight 0 next to non-zero gets a tiny share.
        check(
            &[
                srv(0, 0, 80, "a.test."),
                srv(0, 2, 80, "c.test."),
                srv(0, 1, 80, "nx.test."),
            ],
            &[("10.0.0.1:80", 1, 0), ("10.0.0.3:80", 200, 0)],
        );
        // Same address twice: equal priority adds weights, a higher priority loses.
        check(
            &[
                srv(0, 1, 80, "a.test."),
                srv(0, 2, 80, "a.test."),
                srv(3, 9, 80, "a.test."),
            ],
            &[("10.0.0.1:80", 3, 0)],
        );
        // Same target, different ports: two endpoints. Names compare case-insensitively.
        check(
            &[srv(0, 1, 80, "A.TEST."), srv(0, 1, 81, "a.test.")],
            &[("10.0.0.1:80", 1, 0), ("10.0.0.1:81", 1, 0)],
        );
        check(&[], &[]);
    }

    #[test]
    fn srv_metadata_keeps_the_record() {
        let addresses = HashMap::from([(name("a.test."), vec!["10.0.0.1".parse().unwrap()])]);
        let endpoints = srv_endpoints(&[srv(2, 0, 80, "a.test.")], &addresses);
        let meta: Vec<_> = endpoints[0]
            .metadata()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        assert_eq!(meta, ["srv_priority=2", "srv_weight=0", "target=a.test"]);
    }

    #[test]
    fn refresh_delay_clamps_and_jitters() {
        fn check(ttl: u64, random: f64, expected_ms: u64) {
            let got = refresh_delay(
                Duration::from_secs(ttl),
                Duration::from_secs(1),
                Duration::from_secs(300),
                random,
            );
            assert_eq!(
                got,
                Duration::from_millis(expected_ms),
                "ttl {ttl} random {random}"
            );
        }
        check(30, 0.0, 30_000);
        check(30, 1.0, 27_000);
        check(30, 0.5, 28_500);
        check(0, 0.7, 1_000);
        check(1, 1.0, 1_000);
        check(86_400, 0.0, 300_000);
        check(86_400, 1.0, 270_000);
    }

    #[test]
    fn diff_yields_only_changes() {
        let a = Endpoint::new("10.0.0.1:80".parse().unwrap());
        let b = Endpoint::new("10.0.0.2:80".parse().unwrap());
        let b3 = b.clone().with_weight(3);
        let set =
            |endpoints: &[&Endpoint]| State::from_endpoints(endpoints.iter().map(|e| (*e).clone()));
        fn check(previous: Option<State>, next: State, expected: Option<Update>) {
            assert_eq!(
                diff(previous.as_ref(), &next),
                expected,
                "{previous:?} -> {next:?}"
            );
        }
        check(None, set(&[&a]), Some(Update::reset(vec![a.clone()])));
        check(None, State::empty(), Some(Update::reset(vec![])));
        check(None, State::Missing, Some(Update::DoesNotExist));
        check(Some(set(&[&a])), set(&[&a]), None);
        check(Some(State::Missing), State::Missing, None);
        check(Some(State::empty()), State::empty(), None);
        check(
            Some(set(&[&a])),
            set(&[&a, &b]),
            Some(Update::add(vec![b.clone()])),
        );
        check(
            Some(set(&[&a, &b])),
            set(&[&a, &b3]),
            Some(Update::add(vec![b3.clone()])),
        );
        check(
            Some(set(&[&a, &b])),
            set(&[&b]),
            Some(Update::Remove(vec![a.address])),
        );
        check(
            Some(set(&[&a])),
            set(&[&b]),
            Some(Update::reset(vec![b.clone()])),
        );
        check(
            Some(set(&[&a])),
            State::empty(),
            Some(Update::reset(vec![])),
        );
        check(Some(set(&[&a])), State::Missing, Some(Update::DoesNotExist));
        check(
            Some(State::Missing),
            set(&[&a]),
            Some(Update::reset(vec![a.clone()])),
        );
        check(
            Some(State::Missing),
            State::empty(),
            Some(Update::reset(vec![])),
        );
        check(
            Some(State::empty()),
            State::Missing,
            Some(Update::DoesNotExist),
        );
    }
}
