//! DNS registry backend for Switchyard (`type = "dns"`), on hickory-resolver.
//!
//! A source's `service` is either
//! - an SRV name (`_http._tcp.orders.example.test`): RFC 2782 records give each target's
//!   port, priority ([`switchyard_registry::Endpoint::priority`], lowest serves first) and
//!   weight (the balancer weight; weight 0 as [`answer::tier_weights`] describes), and each
//!   target is resolved to its A and AAAA addresses, from the answer's additional section
//!   when the server sent them; a single `.` target means "service not available": empty;
//! - or `host:port`: the A and AAAA addresses of `host`, each with that port.
//!
//! Names are absolute: no search domain is appended, and `/etc/hosts` is not read.
//!
//! DNS does not push, so each watch refreshes when the smallest TTL of the records it used
//! runs out, clamped by `min_ttl`/`max_ttl`, up to 10 % early at random so that services do
//! not refresh in lockstep, and publishes only what changed. Each refresh is a real query
//! (no resolver cache; see [`client`]). NXDOMAIN gives `DoesNotExist`, NODATA an empty
//! `Reset`: both are authoritative. A timeout, SERVFAIL, REFUSED or connection error ends
//! the stream with an error, so the shared recover wrapper keeps the last good set (stale)
//! and retries with backoff.

pub mod answer;
pub mod client;
pub mod names;
pub mod settings;
pub mod target;
mod watch;

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use switchyard_registry::{
    ConfigIssue, Registry, RegistryContext, RegistryError, RegistryFactory, ServiceQuery,
    UpdateStream,
};
use tokio::sync::OnceCell;

pub use settings::{DnsSettings, Nameserver, Protocol};
pub use target::Target;

use client::Client;

// === impl DnsFactory ===

/// Builds DNS registries from `[registries.NAME]` tables with `type = "dns"`.
///
/// Keys (all optional): `nameservers` (list of `host:port`, port 53 by default; absent: the
/// system resolver's, from `/etc/resolv.conf`), `min_ttl` (default `"1s"`), `max_ttl`
/// (default `"300s"`), `timeout` per attempt (default `"2s"`), `attempts` per query (default
/// 2), `protocol` (`"udp"`, the default, falling back to TCP for truncated answers; or
/// `"tcp"`).
#[derive(Clone, Copy, Debug, Default)]
pub struct DnsFactory;

impl RegistryFactory for DnsFactory {
    fn kind(&self) -> &'static str {
        "dns"
    }

    fn settings_schema(&self, generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        generator.subschema_for::<settings::SettingsTable>()
    }

    fn build(
        &self,
        ctx: RegistryContext,
        settings: &serde_json::Value,
    ) -> Result<Arc<dyn Registry>, Vec<ConfigIssue>> {
        let settings = DnsSettings::decode(settings)?;
        Ok(Arc::new(DnsRegistry::new(ctx, settings)))
    }
}

// === impl DnsRegistry ===

/// One configured DNS registry. Its nameserver client is made on the first watch and
/// shared by all watches.
pub struct DnsRegistry {
    ctx: RegistryContext,
    settings: Arc<DnsSettings>,
    client: OnceCell<Client>,
    /// Services that have resolved since start (see [`watch::Resolved`]).
    resolved: watch::Resolved,
}

impl DnsRegistry {
    /// A registry with `settings`; nothing is contacted until the first watch.
    pub fn new(ctx: RegistryContext, settings: DnsSettings) -> Self {
        DnsRegistry {
            ctx,
            settings: Arc::new(settings),
            client: OnceCell::new(),
            resolved: watch::Resolved::default(),
        }
    }

    /// The client, made on first use: configured nameservers (host names resolved now) or
    /// the system resolver's.
    async fn client(&self) -> Result<&Client, RegistryError> {
        self.client
            .get_or_try_init(|| async {
                let servers = self.nameserver_addresses().await?;
                Ok(Client::new(&servers, &self.settings))
            })
            .await
    }

    async fn nameserver_addresses(&self) -> Result<Vec<SocketAddr>, RegistryError> {
        let mut servers = Vec::new();
        match &self.settings.nameservers {
            Some(list) => {
                for server in list {
                    match server {
                        Nameserver::Addr(addr) => servers.push(*addr),
                        Nameserver::Host(host, port) => {
                            let found = tokio::net::lookup_host((host.as_str(), *port))
                                .await
                                .map_err(|err| {
                                    RegistryError::unavailable(format!(
                                        "cannot resolve nameserver {server}: {err}"
                                    ))
                                })?;
                            servers.extend(found);
                        }
                    }
                }
            }
            None => {
                let (config, _) = hickory_resolver::system_conf::read_system_conf().map_err(|err| {
                    RegistryError::unavailable(format!(
                        "no nameservers configured and the system resolver config is unreadable: {err}"
                    ))
                })?;
                servers.extend(config.name_servers().iter().map(|ns| ns.socket_addr));
            }
        }
        let mut seen = std::collections::HashSet::new();
        servers.retain(|addr| seen.insert(*addr));
        if servers.is_empty() {
            return Err(RegistryError::unavailable("no nameserver to ask"));
        }
        Ok(servers)
    }
}

#[async_trait]
impl Registry for DnsRegistry {
    fn kind(&self) -> &'static str {
        "dns"
    }

    fn check_query(&self, query: &ServiceQuery) -> Result<(), Vec<ConfigIssue>> {
        Target::check(query).map(|_| ())
    }

    /// Names that depend on a search domain: they resolve differently here (absolute) than
    /// through the system resolver (`search` domains of `/etc/resolv.conf` tried first for
    /// names with fewer dots than `ndots`). Needs no network.
    async fn warnings(&self, queries: &[ServiceQuery]) -> Vec<String> {
        let (search, ndots) = match hickory_resolver::system_conf::read_system_conf() {
            Ok((config, options)) => (
                config.search().iter().map(ToString::to_string).collect(),
                options.ndots,
            ),
            Err(_) => (Vec::new(), 1),
        };
        queries
            .iter()
            .filter_map(|query| names::warning(&query.service, &search, ndots))
            .collect()
    }

    async fn watch(&self, query: &ServiceQuery) -> Result<UpdateStream, RegistryError> {
        let target = Target::check(query).map_err(|issues| {
            let text: Vec<String> = issues.iter().map(ToString::to_string).collect();
            RegistryError::invalid_query(text.join("; "))
        })?;
        let client = self.client().await?.clone();
        Ok(watch::watch(
            client,
            target,
            self.settings.clone(),
            self.ctx.clone(),
            query.service.clone(),
            self.resolved.clone(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn factory_builds_without_connecting_and_refuses_bad_tables() {
        let factory = DnsFactory;
        assert_eq!(factory.kind(), "dns");
        let registry = factory
            .build(
                RegistryContext::new("dns"),
                &json!({"nameservers": ["192.0.2.1:53"]}),
            )
            .unwrap();
        assert_eq!(registry.kind(), "dns");
        assert!(registry
            .check_query(&ServiceQuery::new("_http._tcp.a.test"))
            .is_ok());
        let issues = registry
            .check_query(&ServiceQuery::new("a.test"))
            .unwrap_err();
        assert_eq!(issues[0].path, "service");
        let Err(issues) = factory.build(
            RegistryContext::new("dns"),
            &json!({"timeout": 5, "ttl": 1}),
        ) else {
            panic!("bad table accepted");
        };
        let paths: Vec<_> = issues.iter().map(|issue| issue.path.as_str()).collect();
        assert_eq!(paths, ["ttl", "timeout"]);
    }
}
