//! The refresh loop behind one watched DNS service.
//!
//! Each refresh asks the nameservers afresh (no cache), builds the endpoint set, and
//! publishes the difference from the last published set, if any. The next refresh comes
//! when the smallest TTL of the records used runs out, clamped by `min_ttl`/`max_ttl`, with
//! jitter ([`crate::answer::refresh_delay`]). A failed refresh (timeout, SERVFAIL, REFUSED,
//! connection error) is yielded as an error and ends the stream: the shared recover wrapper
//! keeps the last good set, stale, and watches again with backoff.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{future, stream, StreamExt};
use hickory_resolver::proto::rr::{RData, Record, RecordType};
use hickory_resolver::Name;
use switchyard_registry::{Endpoint, RegistryContext, RegistryError, Update, UpdateStream};

use crate::answer::{diff, refresh_delay, srv_endpoints, Srv, State};
use crate::client::{Client, Lookup};
use crate::settings::{AddressFamily, DnsSettings};
use crate::target::Target;

/// TTL assumed for a negative answer that carries no SOA.
const DEFAULT_NEGATIVE_TTL: Duration = Duration::from_secs(30);

/// Everything one watch needs between refreshes.
struct Watch {
    client: Client,
    target: Target,
    settings: Arc<DnsSettings>,
    ctx: RegistryContext,
    /// What was last published.
    last: Option<State>,
    /// Malformed entries seen at the last refresh, so each is counted once, not per refresh.
    malformed: BTreeSet<String>,
    /// Delay before the next refresh; `None` before the first.
    next: Option<Duration>,
    /// Set after an error was yielded: the stream ends.
    done: bool,
    /// The source's `service`, for messages and [`Resolved`].
    service: String,
    /// Names that have resolved since start, shared by the registry's watches.
    resolved: Resolved,
}

/// The `service`s of a registry that have resolved (had any answer but NXDOMAIN) since the
/// process started, kept across reconnects: an NXDOMAIN for one of them is an authoritative
/// empty set; for any other it is reported as an error (a typo, a missing search domain).
pub type Resolved = Arc<Mutex<HashSet<String>>>;

/// One refresh's result: the state, the TTL it may be kept, and its malformed entries.
struct Refresh {
    state: State,
    ttl: Duration,
    malformed: BTreeSet<String>,
}

/// Starts the refresh loop for `target`.
pub fn watch(
    client: Client,
    target: Target,
    settings: Arc<DnsSettings>,
    ctx: RegistryContext,
    service: String,
    resolved: Resolved,
) -> UpdateStream {
    if let Target::Fixed(address) = target {
        // Nothing to look up: one endpoint, forever.
        return stream::once(future::ready(Ok(Update::reset([Endpoint::new(address)]))))
            .chain(stream::pending())
            .boxed();
    }
    let watch = Watch {
        client,
        target,
        settings,
        ctx,
        last: None,
        malformed: BTreeSet::new(),
        next: None,
        done: false,
        service,
        resolved,
    };
    stream::unfold(watch, |mut watch| async move {
        if watch.done {
            return None;
        }
        loop {
            if let Some(delay) = watch.next {
                tokio::time::sleep(delay).await;
            }
            let family = watch.settings.address_family;
            let refresh = match refresh(&watch.client, &watch.target, family).await {
                Ok(refresh) => refresh,
                Err(error) => {
                    watch.done = true;
                    return Some((Err(error), watch));
                }
            };
            if let Some(error) = watch.never_resolved(&refresh.state) {
                // Asked again when the negative answer expires, as a resolver would.
                let retry = refresh
                    .ttl
                    .clamp(watch.settings.min_ttl, watch.settings.max_ttl);
                watch.done = true;
                return Some((Err(error.with_retry_after(retry)), watch));
            }
            for reason in refresh.malformed.difference(&watch.malformed) {
                watch.ctx.metrics.malformed(&watch.ctx.name, reason);
            }
            watch.malformed = refresh.malformed;
            let settings = &watch.settings;
            let delay = refresh_delay(
                refresh.ttl,
                settings.min_ttl,
                settings.max_ttl,
                fastrand::f64(),
            );
            watch.next = Some(delay);
            tracing::debug!(
                registry = %watch.ctx.name,
                target = ?watch.target,
                ?delay,
                "dns refresh"
            );
            if let Some(update) = diff(watch.last.as_ref(), &refresh.state) {
                watch.last = Some(refresh.state);
                return Some((Ok(update), watch));
            }
        }
    })
    .boxed()
}

impl Watch {
    /// The error for an NXDOMAIN of a name that has not resolved since start; records a
    /// name that does resolve.
    ///
    /// NXDOMAIN stays an authoritative empty set for a name that had records (a service
    /// taken down); but a name that never existed is far more often a typo or a name that
    /// only resolves through a search domain (names are absolute here), and an empty,
    /// "healthy" service would hide that. Reported as an error: the source shows as failing
    /// in `/api/registries` with this message (its registry `degraded`, or `down` when every
    /// source fails), and is asked again when the negative answer's TTL runs out.
    fn never_resolved(&self, state: &State) -> Option<RegistryError> {
        let mut resolved = self
            .resolved
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !matches!(state, State::Missing) {
            resolved.insert(self.service.clone());
            return None;
        }
        if resolved.contains(&self.service) {
            return None;
        }
        Some(RegistryError::protocol(format!(
            "NXDOMAIN for {:?}: the name does not exist and has not resolved since start \
             (names are absolute: no search domain is appended; write the fully qualified name)",
            self.service
        )))
    }
}

/// Resolves `target` once.
async fn refresh(
    client: &Client,
    target: &Target,
    family: AddressFamily,
) -> Result<Refresh, RegistryError> {
    match target {
        Target::Srv(name) => refresh_srv(client, name, family).await,
        Target::Host(name, port) => Ok(match resolve_host(client, name, family).await? {
            HostAnswer::Missing(ttl) => Refresh {
                state: State::Missing,
                ttl,
                malformed: BTreeSet::new(),
            },
            HostAnswer::Addresses(ips, ttl) => Refresh {
                state: State::from_endpoints(
                    ips.into_iter()
                        .map(|ip| Endpoint::new(SocketAddr::new(ip, *port))),
                ),
                ttl,
                malformed: BTreeSet::new(),
            },
        }),
        Target::Fixed(address) => Ok(Refresh {
            state: State::from_endpoints([Endpoint::new(*address)]),
            ttl: Duration::MAX,
            malformed: BTreeSet::new(),
        }),
    }
}

/// An SRV refresh: the SRV records, then their targets' addresses (from the additional
/// section when the server sent them, else by A and AAAA queries).
async fn refresh_srv(
    client: &Client,
    name: &Name,
    family: AddressFamily,
) -> Result<Refresh, RegistryError> {
    let mut malformed = BTreeSet::new();
    let (answers, additionals) = match client.query(name, RecordType::SRV).await? {
        Lookup::NxDomain { negative_ttl } => {
            return Ok(Refresh {
                state: State::Missing,
                ttl: negative(negative_ttl),
                malformed,
            })
        }
        Lookup::NoData { negative_ttl } => {
            return Ok(Refresh {
                state: State::empty(),
                ttl: negative(negative_ttl),
                malformed,
            })
        }
        Lookup::Records {
            answers,
            additionals,
        } => (answers, additionals),
    };
    let mut ttl = min_ttl(&answers).unwrap_or(DEFAULT_NEGATIVE_TTL);
    let mut records = Vec::new();
    let mut unavailable = 0usize;
    for record in &answers {
        if let RData::SRV(srv) = record.data() {
            if srv.target().is_root() {
                unavailable += 1;
            } else {
                records.push(Srv {
                    priority: srv.priority(),
                    weight: srv.weight(),
                    port: srv.port(),
                    target: srv.target().clone(),
                });
            }
        }
    }
    if records.is_empty() {
        // No SRV record (a CNAME to nothing), or only "." targets: RFC 2782's "service
        // decidedly not available". Either way an authoritative empty set.
        return Ok(Refresh {
            state: State::empty(),
            ttl,
            malformed,
        });
    }
    if unavailable > 0 {
        malformed.insert(format!(
            "{name}: SRV target \".\" next to other targets ignored"
        ));
    }

    let mut targets: Vec<Name> = records.iter().map(|record| record.target.clone()).collect();
    targets.sort();
    targets.dedup();
    let mut addresses: HashMap<Name, Vec<IpAddr>> = HashMap::new();
    let mut to_query = Vec::new();
    for target in targets {
        let glue: Vec<&Record> = additionals
            .iter()
            .filter(|record| record.name() == &target && ip_of(record).is_some())
            .collect();
        let glue = glue_of_family(glue, family);
        if glue.is_empty() {
            to_query.push(target);
        } else {
            ttl = ttl.min(Duration::from_secs(
                glue.iter().map(|r| u64::from(r.ttl())).min().unwrap_or(0),
            ));
            addresses.insert(target, glue.iter().filter_map(|r| ip_of(r)).collect());
        }
    }
    let looked_up = future::join_all(
        to_query
            .iter()
            .map(|target| resolve_host(client, target, family)),
    )
    .await;
    for (target, answer) in to_query.into_iter().zip(looked_up) {
        match answer? {
            HostAnswer::Addresses(ips, host_ttl) if !ips.is_empty() => {
                ttl = ttl.min(host_ttl);
                addresses.insert(target, ips);
            }
            HostAnswer::Addresses(_, host_ttl) | HostAnswer::Missing(host_ttl) => {
                // Retry a missing target when its negative answer expires.
                ttl = ttl.min(host_ttl);
                malformed.insert(format!(
                    "{name}: SRV target {target} has no A or AAAA record"
                ));
            }
        }
    }
    Ok(Refresh {
        state: State::from_endpoints(srv_endpoints(&records, &addresses)),
        ttl,
        malformed,
    })
}

/// The addresses of a host.
enum HostAnswer {
    /// NXDOMAIN for both A and AAAA.
    Missing(Duration),
    /// The A and AAAA addresses (maybe none: NODATA for both) and their smallest TTL.
    Addresses(Vec<IpAddr>, Duration),
}

/// What one address family's lookup gave.
#[derive(Debug)]
enum Family {
    /// Not asked (the family is not wanted).
    NotAsked,
    /// NXDOMAIN, with its negative TTL.
    Missing(Duration),
    /// Addresses (none: NODATA) and their TTL.
    Addresses(Vec<IpAddr>, Duration),
    /// The lookup failed (timeout, SERVFAIL, ...).
    Failed(RegistryError),
}

impl Family {
    fn from_lookup(lookup: Result<Lookup, RegistryError>) -> Family {
        match lookup {
            Ok(Lookup::Records { answers, .. }) => Family::Addresses(
                answers.iter().filter_map(ip_of).collect(),
                min_ttl(&answers).unwrap_or(DEFAULT_NEGATIVE_TTL),
            ),
            Ok(Lookup::NoData { negative_ttl }) => {
                Family::Addresses(Vec::new(), negative(negative_ttl))
            }
            Ok(Lookup::NxDomain { negative_ttl }) => Family::Missing(negative(negative_ttl)),
            Err(error) => Family::Failed(error),
        }
    }

    fn has_addresses(&self) -> bool {
        matches!(self, Family::Addresses(ips, _) if !ips.is_empty())
    }
}

/// Looks up the A and/or AAAA records of `name` that `family` wants, together.
async fn resolve_host(
    client: &Client,
    name: &Name,
    family: AddressFamily,
) -> Result<HostAnswer, RegistryError> {
    let ask = |kind: RecordType, wanted: bool| async move {
        if wanted {
            Family::from_lookup(client.query(name, kind).await)
        } else {
            Family::NotAsked
        }
    };
    let (v4, v6) = future::join(
        ask(RecordType::A, family.asks_a()),
        ask(RecordType::AAAA, family.asks_aaaa()),
    )
    .await;
    combine(family, v4, v6)
}

/// Combines the two families' lookups as `family` says (Envoy's `dns_lookup_family`).
///
/// A failed lookup of one family never fails a host whose other family has addresses that
/// `family` lets it use (an AAAA timeout on an IPv4 network, a resolver that answers
/// SERVFAIL for AAAA): those addresses are served. It fails the host only when no usable
/// address is known, so the last good set stays (stale) rather than shrinking on a guess.
/// NXDOMAIN only when every family asked says so.
fn combine(family: AddressFamily, v4: Family, v6: Family) -> Result<HostAnswer, RegistryError> {
    let (first, second) = match family {
        AddressFamily::PreferIpv6 => (v6, v4),
        _ => (v4, v6),
    };
    let usable = match family {
        AddressFamily::PreferIpv4 | AddressFamily::PreferIpv6 if first.has_addresses() => {
            vec![first]
        }
        AddressFamily::PreferIpv4 | AddressFamily::PreferIpv6 if second.has_addresses() => {
            vec![second]
        }
        _ => vec![first, second],
    };
    let any_addresses = usable.iter().any(Family::has_addresses);
    let mut ips = Vec::new();
    let mut ttl = Duration::MAX;
    let mut missing = true;
    let mut failure = None;
    for side in usable {
        match side {
            Family::NotAsked => {}
            Family::Missing(negative) => ttl = ttl.min(negative),
            Family::Addresses(found, found_ttl) => {
                missing = false;
                ips.extend(found);
                ttl = ttl.min(found_ttl);
            }
            Family::Failed(error) => failure = failure.or(Some(error)),
        }
    }
    if let Some(error) = failure {
        if !any_addresses {
            return Err(error);
        }
        tracing::debug!("one address family failed, the other's addresses are served: {error}");
    }
    ips.sort();
    ips.dedup();
    Ok(if missing {
        HostAnswer::Missing(ttl)
    } else {
        HostAnswer::Addresses(ips, ttl)
    })
}

/// The glue (additional-section address records) of one SRV target that `family` uses.
fn glue_of_family(glue: Vec<&Record>, family: AddressFamily) -> Vec<&Record> {
    let (v4, v6): (Vec<&Record>, Vec<&Record>) = glue
        .into_iter()
        .partition(|record| matches!(ip_of(record), Some(IpAddr::V4(_))));
    match family {
        AddressFamily::Any => v4.into_iter().chain(v6).collect(),
        AddressFamily::Ipv4 => v4,
        AddressFamily::Ipv6 => v6,
        AddressFamily::PreferIpv4 if !v4.is_empty() => v4,
        AddressFamily::PreferIpv4 => v6,
        AddressFamily::PreferIpv6 if !v6.is_empty() => v6,
        AddressFamily::PreferIpv6 => v4,
    }
}

/// The address in an A or AAAA record.
fn ip_of(record: &Record) -> Option<IpAddr> {
    match record.data() {
        RData::A(a) => Some(IpAddr::V4(a.0)),
        RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
        _ => None,
    }
}

/// The smallest TTL among `records`.
fn min_ttl(records: &[Record]) -> Option<Duration> {
    records
        .iter()
        .map(|record| Duration::from_secs(u64::from(record.ttl())))
        .min()
}

/// How long a negative answer holds.
fn negative(ttl: Option<u32>) -> Duration {
    ttl.map_or(DEFAULT_NEGATIVE_TTL, |ttl| {
        Duration::from_secs(u64::from(ttl))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A family's answer written as `"1.2.3.4 5.6.7.8"` (addresses), `""` (NODATA), `"nx"`
    /// or `"fail"`; `"-"` is not asked.
    fn family(text: &str) -> Family {
        let ttl = Duration::from_secs(5);
        match text {
            "-" => Family::NotAsked,
            "nx" => Family::Missing(ttl),
            "fail" => Family::Failed(RegistryError::unavailable("timed out")),
            ips => Family::Addresses(
                ips.split_whitespace()
                    .map(|ip| ip.parse().unwrap())
                    .collect(),
                ttl,
            ),
        }
    }

    /// Combines and shows: `"addresses ..."`, `"missing"` or `"error"`.
    fn check(mode: AddressFamily, v4: &str, v6: &str, expected: &str) {
        let got = match combine(mode, family(v4), family(v6)) {
            Ok(HostAnswer::Addresses(ips, _)) => format!(
                "addresses {}",
                ips.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
            Ok(HostAnswer::Missing(_)) => "missing".into(),
            Err(_) => "error".into(),
        };
        assert_eq!(got.trim_end(), expected, "{mode:?} A={v4:?} AAAA={v6:?}");
    }

    #[test]
    fn families_combine_as_envoy_dns_lookup_family() {
        use AddressFamily::*;
        // A failing AAAA never fails a refresh whose A has addresses, and the other way round.
        check(Any, "10.0.0.1", "fail", "addresses 10.0.0.1");
        check(Any, "fail", "::1", "addresses ::1");
        check(Any, "10.0.0.1", "::1", "addresses 10.0.0.1 ::1");
        check(Any, "", "fail", "error");
        check(Any, "fail", "fail", "error");
        check(Any, "nx", "nx", "missing");
        check(Any, "", "nx", "addresses");
        check(PreferIpv4, "10.0.0.1", "::1", "addresses 10.0.0.1");
        check(PreferIpv4, "10.0.0.1", "fail", "addresses 10.0.0.1");
        check(PreferIpv4, "", "::1", "addresses ::1");
        check(PreferIpv4, "fail", "::1", "addresses ::1");
        check(PreferIpv4, "", "", "addresses");
        check(PreferIpv4, "nx", "nx", "missing");
        check(PreferIpv6, "10.0.0.1", "::1", "addresses ::1");
        check(PreferIpv6, "10.0.0.1", "", "addresses 10.0.0.1");
        check(PreferIpv6, "10.0.0.1", "fail", "addresses 10.0.0.1");
        check(Ipv4, "10.0.0.1", "-", "addresses 10.0.0.1");
        check(Ipv4, "nx", "-", "missing");
        check(Ipv4, "fail", "-", "error");
        check(Ipv6, "-", "::1", "addresses ::1");
        check(Ipv6, "-", "", "addresses");
    }
}
