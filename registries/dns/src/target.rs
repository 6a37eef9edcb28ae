//! What a source's `service` asks a DNS registry for: an SRV name, or `host:port` for
//! A/AAAA lookups with a fixed port.

use std::net::{IpAddr, SocketAddr};

use hickory_resolver::Name;
use switchyard_registry::{ConfigIssue, ServiceQuery};

use crate::settings::is_host_name;

/// One parsed DNS service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// An SRV lookup (`_http._tcp.orders.example.test`): ports, priorities and weights
    /// come from the records.
    Srv(Name),
    /// A and AAAA lookups of a host; every address gets `port`.
    Host(Name, u16),
    /// An IP literal with a port: one fixed endpoint, no lookup.
    Fixed(SocketAddr),
}

const FORMS: &str = "expected an SRV name like `_http._tcp.orders.example.test`, \
                     or `host:port` for A/AAAA lookups";

impl Target {
    /// Parses a source's `service`. Names are absolute: no search domain is appended.
    pub fn parse(service: &str) -> Result<Target, String> {
        let service = service.trim();
        if service.is_empty() {
            return Err(format!("empty: {FORMS}"));
        }
        if let Ok(addr) = service.parse::<SocketAddr>() {
            if addr.port() == 0 {
                return Err(format!("port 0 in {service:?}"));
            }
            return Ok(Target::Fixed(addr));
        }
        if service.parse::<IpAddr>().is_ok() {
            return Err(format!("{service:?} has no port: {FORMS}"));
        }
        if let Some((host, port)) = service.rsplit_once(':') {
            let port = port
                .parse::<u16>()
                .ok()
                .filter(|port| *port != 0)
                .ok_or_else(|| format!("bad port in {service:?}: {FORMS}"))?;
            if host.starts_with('_') {
                return Err(format!(
                    "{service:?}: an SRV name takes its ports from the records; drop `:{port}`"
                ));
            }
            return Ok(Target::Host(absolute(host)?, port));
        }
        let first = service.split('.').next().unwrap_or_default();
        if !first.starts_with('_') || !service.contains('.') {
            return Err(format!("{service:?}: {FORMS}"));
        }
        Ok(Target::Srv(absolute(service)?))
    }

    /// Validates a whole source query: the `service` form, and no keys DNS does not use.
    pub fn check(query: &ServiceQuery) -> Result<Target, Vec<ConfigIssue>> {
        let mut issues = Vec::new();
        let target = Target::parse(&query.service)
            .map_err(|message| issues.push(ConfigIssue::new("service", message)))
            .ok();
        if query.port.is_some() {
            issues.push(ConfigIssue::new(
                "port",
                "not used by dns sources: SRV records carry the port; for A/AAAA write `service = \"host:port\"`",
            ));
        }
        if !query.tags.is_empty() {
            issues.push(ConfigIssue::new("tags", "not used by dns sources"));
        }
        if query.datacenter.is_some() {
            issues.push(ConfigIssue::new("datacenter", "not used by dns sources"));
        }
        if query.filter.is_some() {
            issues.push(ConfigIssue::new(
                "filter",
                "not used by dns sources (Consul only)",
            ));
        }
        match target {
            Some(target) if issues.is_empty() => Ok(target),
            _ => Err(issues),
        }
    }
}

/// A fully qualified name from `text` (a trailing dot is optional).
fn absolute(text: &str) -> Result<Name, String> {
    if !is_host_name(text) {
        return Err(format!("{text:?} is not a valid DNS name: {FORMS}"));
    }
    let mut name = Name::from_ascii(text).map_err(|err| format!("{text:?}: {err}"))?;
    name.set_fqdn(true);
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(service: &str, expected: Result<&str, &str>) {
        let got = Target::parse(service).map(|target| match target {
            Target::Srv(name) => format!("srv {name}"),
            Target::Host(name, port) => format!("host {name} {port}"),
            Target::Fixed(addr) => format!("fixed {addr}"),
        });
        match (&got, expected) {
            (Ok(got), Ok(expected)) => assert_eq!(got, expected, "{service}"),
            (Err(got), Err(expected)) => assert!(got.contains(expected), "{service}: {got}"),
            _ => panic!("{service}: got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn parses_the_service_forms() {
        check(
            "_http._tcp.orders.example.test",
            Ok("srv _http._tcp.orders.example.test."),
        );
        check(
            "_http._tcp.orders.example.test.",
            Ok("srv _http._tcp.orders.example.test."),
        );
        check(
            "_orders._tcp.service.consul",
            Ok("srv _orders._tcp.service.consul."),
        );
        check(
            "orders.example.test:8080",
            Ok("host orders.example.test. 8080"),
        );
        check("web:80", Ok("host web. 80"));
        check("10.0.0.5:8080", Ok("fixed 10.0.0.5:8080"));
        check("[::1]:8080", Ok("fixed [::1]:8080"));
        check("orders.example.test", Err("expected an SRV name"));
        check("_http", Err("expected an SRV name"));
        check("", Err("empty"));
        check("10.0.0.5", Err("has no port"));
        check("orders.example.test:0", Err("bad port"));
        check("orders.example.test:http", Err("bad port"));
        check("_http._tcp.orders.example.test:80", Err("drop `:80`"));
        check("bad name!.test:80", Err("not a valid DNS name"));
        check("a..b:80", Err("not a valid DNS name"));
    }

    #[test]
    fn check_names_unused_keys() {
        let mut query = ServiceQuery::new("orders.example.test");
        query.port = Some("http".into());
        query.tags = vec!["v2".into()];
        let issues = Target::check(&query).unwrap_err();
        let paths: Vec<_> = issues.iter().map(|issue| issue.path.as_str()).collect();
        assert_eq!(paths, ["service", "port", "tags"]);
        assert!(Target::check(&ServiceQuery::new("_http._tcp.x.test")).is_ok());
    }
}
