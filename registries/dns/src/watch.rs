//! The refresh loop behind one watched DNS service.
//!
//! Each refresh asks the nameservers afresh (no cache), builds the endpoint set, and
//! publishes the difference from the last published set, if any. The next refresh comes
//! when the smallest TTL of the records used runs out, clamped by `min_ttl`/`max_ttl`, with
//! jitter ([`crate::answer::refresh_delay`]). A failed refresh (timeout, SERVFAIL, REFUSED,
//! connection error) is yielded as an error and ends the stream: the shared recover wrapper
//! keeps the last good set, stale, and watches again with backoff.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures::{future, stream, StreamExt};
use hickory_resolver::proto::rr::{RData, Record, RecordType};
use hickory_resolver::Name;
use switchyard_registry::{Endpoint, RegistryContext, RegistryError, Update, UpdateStream};

use crate::answer::{diff, refresh_delay, srv_endpoints, Srv, State};
use crate::client::{Client, Lookup};
use crate::settings::DnsSettings;
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
}

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
    };
    stream::unfold(watch, |mut watch| async move {
        if watch.done {
            return None;
        }
        loop {
            if let Some(delay) = watch.next {
                tokio::time::sleep(delay).await;
            }
            let refresh = match refresh(&watch.client, &watch.target).await {
                Ok(refresh) => refresh,
                Err(error) => {
                    watch.done = true;
                    return Some((Err(error), watch));
                }
            };
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

/// Resolves `target` once.
async fn refresh(client: &Client, target: &Target) -> Result<Refresh, RegistryError> {
    match target {
        Target::Srv(name) => refresh_srv(client, name).await,
        Target::Host(name, port) => Ok(match resolve_host(client, name).await? {
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
async fn refresh_srv(client: &Client, name: &Name) -> Result<Refresh, RegistryError> {
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
        if glue.is_empty() {
            to_query.push(target);
        } else {
            ttl = ttl.min(Duration::from_secs(
                glue.iter().map(|r| u64::from(r.ttl())).min().unwrap_or(0),
            ));
            addresses.insert(target, glue.iter().filter_map(|r| ip_of(r)).collect());
        }
    }
    let looked_up =
        future::join_all(to_query.iter().map(|target| resolve_host(client, target))).await;
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

/// Looks up A and AAAA of `name` together. Either failing fails the whole.
async fn resolve_host(client: &Client, name: &Name) -> Result<HostAnswer, RegistryError> {
    let (v4, v6) = future::join(
        client.query(name, RecordType::A),
        client.query(name, RecordType::AAAA),
    )
    .await;
    let mut ips = Vec::new();
    let mut ttl = Duration::MAX;
    let mut missing = true;
    for lookup in [v4?, v6?] {
        match lookup {
            Lookup::Records { answers, .. } => {
                missing = false;
                ips.extend(answers.iter().filter_map(ip_of));
                ttl = ttl.min(min_ttl(&answers).unwrap_or(DEFAULT_NEGATIVE_TTL));
            }
            Lookup::NoData { negative_ttl } => {
                missing = false;
                ttl = ttl.min(negative(negative_ttl));
            }
            Lookup::NxDomain { negative_ttl } => ttl = ttl.min(negative(negative_ttl)),
        }
    }
    ips.sort();
    ips.dedup();
    Ok(if missing {
        HostAnswer::Missing(ttl)
    } else {
        HostAnswer::Addresses(ips, ttl)
    })
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
