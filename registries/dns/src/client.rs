//! The DNS client: hickory-resolver's nameserver pool, without its cache, and the
//! classification of answers into records, authoritative negatives and failures.
//!
//! hickory's `Resolver` keeps an answer cache (and in SRV lookups keeps only the additional
//! addresses of the last target). Switchyard refreshes on the records' own TTLs, so it talks
//! to the nameservers through `NameServerPool` wrapped in `RetryDnsHandle`, which is what
//! the `Resolver` uses under its cache: every refresh is a real query, and the raw message,
//! with its additional section, is at hand. Timeouts, retries over `attempts`, fallback
//! to TCP on truncation and rotation over several nameservers come from the pool.

use std::net::SocketAddr;

use futures::StreamExt;
use hickory_resolver::config::{NameServerConfig, NameServerConfigGroup, ResolverOpts};
use hickory_resolver::name_server::{NameServerPool, TokioConnectionProvider};
use hickory_resolver::proto::op::{Query, ResponseCode};
use hickory_resolver::proto::rr::{Record, RecordType};
use hickory_resolver::proto::xfer::{
    DnsHandle, DnsRequestOptions, DnsResponse, Protocol as Transport, RetryDnsHandle,
};
use hickory_resolver::proto::{ProtoError, ProtoErrorKind};
use hickory_resolver::Name;
use switchyard_registry::RegistryError;

use crate::settings::{DnsSettings, Protocol};

/// The answer to one query.
#[derive(Clone, Debug)]
pub enum Lookup {
    /// Records exist: the answer and additional sections.
    Records {
        /// The answer section (may include the CNAME chain).
        answers: Vec<Record>,
        /// The additional section (SRV target addresses, when the server sends them).
        additionals: Vec<Record>,
    },
    /// NXDOMAIN: the name does not exist. `negative_ttl` from the SOA, if sent.
    NxDomain {
        /// How long the negative answer may be kept.
        negative_ttl: Option<u32>,
    },
    /// NODATA: the name exists but has no record of that type.
    NoData {
        /// How long the negative answer may be kept.
        negative_ttl: Option<u32>,
    },
}

/// A handle to the configured nameservers. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    handle: RetryDnsHandle<NameServerPool<TokioConnectionProvider>>,
    servers: String,
}

impl Client {
    /// A client for `servers` (never empty). Connects lazily, on the first query.
    pub fn new(servers: &[SocketAddr], settings: &DnsSettings) -> Client {
        let mut group = NameServerConfigGroup::with_capacity(2 * servers.len());
        for &addr in servers {
            if settings.protocol == Protocol::Udp {
                // UDP first; the TCP entries are only used when an answer is truncated.
                group.push(NameServerConfig::new(addr, Transport::Udp));
            }
            group.push(NameServerConfig::new(addr, Transport::Tcp));
        }
        let mut options = ResolverOpts::default();
        options.timeout = settings.timeout;
        options.attempts = settings.attempts.saturating_sub(1) as usize;
        options.cache_size = 0;
        let pool = NameServerPool::from_config(group, options, TokioConnectionProvider::default());
        Client {
            // `RetryDnsHandle` counts retries after the first try.
            handle: RetryDnsHandle::new(pool, settings.attempts.saturating_sub(1) as usize),
            servers: servers
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        }
    }

    /// Asks for `name`/`kind`, once (with the configured retries), never from a cache.
    pub async fn query(&self, name: &Name, kind: RecordType) -> Result<Lookup, RegistryError> {
        let mut options = DnsRequestOptions::default();
        options.use_edns = true;
        let result = self
            .handle
            .lookup(Query::query(name.clone(), kind), options)
            .next()
            .await
            .unwrap_or_else(|| Err(ProtoError::from("no answer")));
        classify(result).map_err(|failure| {
            let message = format!("{kind} {name} via {}: {}", self.servers, failure.message());
            RegistryError::new(failure.kind(), message)
        })
    }
}

/// Sorts one result: records; NXDOMAIN and NODATA as answers; everything else
/// (timeouts, connection errors, SERVFAIL, REFUSED, ...) as a failure to retry later.
pub fn classify(result: Result<DnsResponse, ProtoError>) -> Result<Lookup, RegistryError> {
    match result {
        Ok(response) => {
            // An NXDOMAIN that carries answers is a CNAME chain whose last name does not
            // exist: RFC 6604 §3 says the RCODE speaks for the last name in the chain, and
            // hickory passes it through as a response (its `from_response`: "Some NXDOMAIN
            // responses contain CNAME referrals, that will not be an error"), where the
            // system resolver reports the name as not found. So: NXDOMAIN, with the negative
            // TTL of the SOA in the authority section (RFC 2308 §5), not a protocol error.
            if response.response_code() == ResponseCode::NXDomain {
                let negative_ttl = response.negative_ttl();
                return Ok(Lookup::NxDomain { negative_ttl });
            }
            let mut message = response.into_message();
            match message.response_code() {
                ResponseCode::NoError => {}
                code => return Err(rcode_error(code)),
            }
            let answers = message.take_answers();
            let additionals = message.take_additionals();
            Ok(Lookup::Records {
                answers,
                additionals,
            })
        }
        Err(error) => match error.kind() {
            ProtoErrorKind::NoRecordsFound {
                response_code: ResponseCode::NXDomain,
                negative_ttl,
                ..
            } => Ok(Lookup::NxDomain {
                negative_ttl: *negative_ttl,
            }),
            ProtoErrorKind::NoRecordsFound {
                response_code: ResponseCode::NoError,
                negative_ttl,
                ..
            } => Ok(Lookup::NoData {
                negative_ttl: *negative_ttl,
            }),
            ProtoErrorKind::NoRecordsFound { response_code, .. } => {
                Err(rcode_error(*response_code))
            }
            ProtoErrorKind::Timeout => Err(RegistryError::unavailable("timed out")),
            ProtoErrorKind::Io(_) | ProtoErrorKind::NoConnections | ProtoErrorKind::Busy => {
                Err(RegistryError::unavailable(error.to_string()))
            }
            _ => Err(RegistryError::protocol(error.to_string())),
        },
    }
}

/// A failure for an answer's response code (SERVFAIL, REFUSED, ...), named by its
/// mnemonic (`ServFail` → `SERVFAIL`).
fn rcode_error(code: ResponseCode) -> RegistryError {
    let mnemonic = format!("{code:?}").to_uppercase();
    RegistryError::protocol(format!("server answered {mnemonic}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_resolver::proto::op::Message;
    use hickory_resolver::proto::rr::rdata::A;
    use hickory_resolver::proto::rr::RData;
    use switchyard_registry::ErrorKind;

    fn response(code: ResponseCode, answers: usize) -> DnsResponse {
        let mut message = Message::new();
        message.set_response_code(code);
        for i in 0..answers {
            message.add_answer(Record::from_rdata(
                Name::from_ascii("a.test.").unwrap(),
                5,
                RData::A(A::new(10, 0, 0, i as u8)),
            ));
        }
        DnsResponse::from_message(message).unwrap()
    }

    fn no_records(code: ResponseCode) -> ProtoError {
        ProtoErrorKind::NoRecordsFound {
            query: Box::default(),
            soa: None,
            ns: None,
            negative_ttl: Some(7),
            response_code: code,
            trusted: true,
            authorities: None,
        }
        .into()
    }

    /// Classifies `input` and renders the outcome as a short string.
    fn check(input: Result<DnsResponse, ProtoError>, expected: &str) {
        let got = match classify(input) {
            Ok(Lookup::Records { answers, .. }) => format!("records {}", answers.len()),
            Ok(Lookup::NxDomain { negative_ttl }) => format!("nxdomain {negative_ttl:?}"),
            Ok(Lookup::NoData { negative_ttl }) => format!("nodata {negative_ttl:?}"),
            Err(error) => {
                let kind = match error.kind() {
                    ErrorKind::Unavailable => "unavailable",
                    ErrorKind::Protocol => "protocol",
                    _ => "other",
                };
                format!("{kind}: {}", error.message())
            }
        };
        assert!(got.starts_with(expected), "{got:?} !~ {expected:?}");
    }

    #[test]
    fn sorts_answers_negatives_and_failures() {
        check(Ok(response(ResponseCode::NoError, 2)), "records 2");
        check(Err(no_records(ResponseCode::NXDomain)), "nxdomain Some(7)");
        check(Err(no_records(ResponseCode::NoError)), "nodata Some(7)");
        check(
            Err(no_records(ResponseCode::ServFail)),
            "protocol: server answered SERVFAIL",
        );
        check(
            Err(no_records(ResponseCode::Refused)),
            "protocol: server answered REFUSED",
        );
        check(
            Ok(response(ResponseCode::ServFail, 0)),
            "protocol: server answered SERVFAIL",
        );
        // NXDOMAIN with a CNAME (any answer) in it: the chain's end does not exist.
        check(Ok(response(ResponseCode::NXDomain, 1)), "nxdomain");
        check(
            Err(ProtoErrorKind::Timeout.into()),
            "unavailable: timed out",
        );
        check(Err(ProtoErrorKind::NoConnections.into()), "unavailable");
        check(
            Err(std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into()),
            "unavailable",
        );
        check(Err(ProtoError::from("garbled")), "protocol: garbled");
    }
}
