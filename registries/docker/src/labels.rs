//! From a container as the engine lists it to an endpoint: the labels and the address rule.
//!
//! Pure functions over [`Container`], a small copy of what the list call returns, so the
//! rules are tested without an engine.
//!
//! Labels: `switchyard.service` (required: the service), `switchyard.port` (the port;
//! required for host-network containers, else defaults to the container's only exposed
//! port), `switchyard.weight` (default 1), `switchyard.priority` (default 0),
//! `switchyard.zone`. A container whose label does not parse is skipped (and counted), never
//! its neighbours.
//!
//! The address rule, in order:
//! 1. `network` set: the container's IP on that network (skipped if not attached to it);
//! 2. host network (`network_mode: host`): the host's loopback, `127.0.0.1:PORT`;
//! 3. the port published on the host: the published address (`127.0.0.1` when published on
//!    every interface) and the host port, which a gateway outside Docker (or on Docker
//!    Desktop, where container IPs are not routable) can reach;
//! 4. else the container's IP on its only network (several: skipped, set `network`).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use switchyard_registry::Endpoint;

/// The label naming the service a container belongs to.
pub const SERVICE: &str = "switchyard.service";
/// The label giving the port to send traffic to.
pub const PORT: &str = "switchyard.port";
/// The label giving the balancer weight (default 1).
pub const WEIGHT: &str = "switchyard.weight";
/// The label giving the priority within the source (default 0; lower is preferred).
pub const PRIORITY: &str = "switchyard.priority";
/// The label giving the zone (zone-aware routing).
pub const ZONE: &str = "switchyard.zone";

/// A published or exposed port of a container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortMapping {
    /// The port inside the container.
    pub private: u16,
    /// The port on the host, when published.
    pub public: Option<u16>,
    /// The host address it is published on (`0.0.0.0`, `::` or one address).
    pub host_ip: Option<String>,
    /// `tcp` or `udp`.
    pub protocol: String,
}

/// What the registry needs of one running container.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Container {
    /// The container id.
    pub id: String,
    /// Its name, without the leading `/`.
    pub name: String,
    /// Its labels.
    pub labels: HashMap<String, String>,
    /// `host`, `bridge`, `default`, a network name or `container:ID`.
    pub network_mode: String,
    /// The IP address of the container on each network it is attached to.
    pub networks: HashMap<String, String>,
    /// Exposed and published ports.
    pub ports: Vec<PortMapping>,
    /// The Docker health check says `unhealthy` or is still `starting`.
    pub unhealthy: bool,
}

/// Why a labelled container gives no endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skip(pub String);

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The service and endpoint of a labelled container, or why it has none. `network` is the
/// registry's `network` setting.
pub fn endpoint_of(
    container: &Container,
    network: Option<&str>,
) -> Result<(String, Endpoint), Skip> {
    let skip = |why: String| Skip(format!("container {}: {why}", container.name));
    let service = container
        .labels
        .get(SERVICE)
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| skip(format!("label {SERVICE} is empty")))?
        .to_owned();
    let number = |label: &str, default: u32| -> Result<u32, Skip> {
        match container.labels.get(label) {
            None => Ok(default),
            Some(value) => value.trim().parse::<u32>().map_err(|_| {
                skip(format!(
                    "label {label}={value:?} is not a whole number from 0 to {}",
                    u32::MAX
                ))
            }),
        }
    };
    let weight = number(WEIGHT, 1)?;
    let priority = number(PRIORITY, 0)?;
    let port = match container.labels.get(PORT) {
        Some(value) => Some(
            value
                .trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| skip(format!("label {PORT}={value:?} is not a port (1-65535)")))?,
        ),
        None => None,
    };
    let address = address_of(container, network, port).map_err(skip)?;
    let mut endpoint = Endpoint::new(address)
        .with_weight(weight)
        .with_priority(priority);
    endpoint.healthy = !container.unhealthy;
    if let Some(zone) = container.labels.get(ZONE).filter(|z| !z.trim().is_empty()) {
        endpoint.set_zone(Some(zone.trim().to_owned()));
    }
    endpoint
        .metadata_mut()
        .insert("container".to_owned(), container.name.clone());
    Ok((service, endpoint))
}

/// The address rule (see the module doc).
fn address_of(
    container: &Container,
    network: Option<&str>,
    label_port: Option<u16>,
) -> Result<SocketAddr, String> {
    let exposed_port = || -> Result<u16, String> {
        let mut ports: Vec<u16> = container
            .ports
            .iter()
            .filter(|p| p.protocol == "tcp")
            .map(|p| p.private)
            .collect();
        ports.sort_unstable();
        ports.dedup();
        match ports.as_slice() {
            [one] => Ok(*one),
            [] => Err(format!("no label {PORT} and no exposed TCP port")),
            many => Err(format!(
                "no label {PORT} and several exposed TCP ports {many:?}: set {PORT}"
            )),
        }
    };
    let ip_on = |name: &str| -> Result<IpAddr, String> {
        let ip = container
            .networks
            .get(name)
            .ok_or_else(|| format!("not attached to network {name:?}"))?;
        ip.parse()
            .map_err(|_| format!("no IP address on network {name:?} ({ip:?})"))
    };

    if let Some(name) = network {
        let port = label_port.map_or_else(exposed_port, Ok)?;
        return Ok(SocketAddr::new(ip_on(name)?, port));
    }
    if container.network_mode == "host" {
        let port = label_port
            .ok_or_else(|| format!("runs on the host network: label {PORT} must give its port"))?;
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    let port = label_port.map_or_else(exposed_port, Ok)?;
    if let Some(published) = container
        .ports
        .iter()
        .find(|p| p.private == port && p.protocol == "tcp" && p.public.is_some())
    {
        let ip = published
            .host_ip
            .as_deref()
            .and_then(|ip| ip.parse::<IpAddr>().ok())
            .filter(|ip| !ip.is_unspecified())
            .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        return Ok(SocketAddr::new(ip, published.public.unwrap_or(port)));
    }
    let mut names: Vec<&String> = container.networks.keys().collect();
    names.sort();
    match names.as_slice() {
        [one] => Ok(SocketAddr::new(ip_on(one)?, port)),
        [] => Err("attached to no network".to_owned()),
        many => Err(format!(
            "attached to several networks {many:?}: set the registry's `network`"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(labels: &[(&str, &str)]) -> Container {
        Container {
            id: "abc".into(),
            name: "web-1".into(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            network_mode: "demo".into(),
            networks: [("demo".to_owned(), "172.28.0.5".to_owned())].into(),
            ports: vec![PortMapping {
                private: 8080,
                public: None,
                host_ip: None,
                protocol: "tcp".into(),
            }],
            unhealthy: false,
        }
    }

    /// `container` through [`endpoint_of`], written as `service address/weight/priority`
    /// or the skip reason.
    fn check(c: &Container, network: Option<&str>, expected: &str) {
        let got = match endpoint_of(c, network) {
            Ok((service, e)) => format!(
                "{service} {}/{}/{}{}{}",
                e.address,
                e.weight,
                e.priority,
                e.zone().map(|z| format!(" zone={z}")).unwrap_or_default(),
                if e.healthy { "" } else { " unhealthy" }
            ),
            Err(skip) => format!("skip: {skip}"),
        };
        assert!(
            got == expected || (expected.starts_with("skip:") && got.contains(&expected[6..])),
            "{c:?} with network {network:?}:\n  got      {got}\n  expected {expected}"
        );
    }

    #[test]
    fn labels() {
        let c = container(&[(SERVICE, "web")]);
        check(&c, None, "web 172.28.0.5:8080/1/0");
        let c = container(&[(SERVICE, "web"), (PORT, "9000"), (WEIGHT, "7")]);
        check(&c, None, "web 172.28.0.5:9000/7/0");
        let c = container(&[(SERVICE, "web"), (PRIORITY, "2"), (ZONE, "eu-1a")]);
        check(&c, None, "web 172.28.0.5:8080/1/2 zone=eu-1a");
        check(
            &container(&[(SERVICE, "web"), (WEIGHT, "heavy")]),
            None,
            "skip: label switchyard.weight=\"heavy\" is not a whole number",
        );
        check(
            &container(&[(SERVICE, "web"), (PORT, "0")]),
            None,
            "skip: label switchyard.port=\"0\" is not a port",
        );
        check(
            &container(&[(SERVICE, "web"), (PORT, "70000")]),
            None,
            "skip: is not a port",
        );
        check(
            &container(&[(SERVICE, "web"), (PRIORITY, "-1")]),
            None,
            "skip: label switchyard.priority",
        );
        check(&container(&[(SERVICE, " ")]), None, "skip: is empty");
        let mut c = container(&[(SERVICE, "web")]);
        c.unhealthy = true;
        check(&c, None, "web 172.28.0.5:8080/1/0 unhealthy");
    }

    #[test]
    fn address_rule() {
        // 1. a configured network: the IP there, even when the port is published.
        let mut c = container(&[(SERVICE, "web")]);
        c.networks.insert("other".into(), "10.1.0.9".into());
        c.ports[0].public = Some(18080);
        check(&c, Some("other"), "web 10.1.0.9:8080/1/0");
        check(
            &c,
            Some("missing"),
            "skip: not attached to network \"missing\"",
        );

        // 2. host network: loopback and the label's port, which is required.
        let mut c = container(&[(SERVICE, "web"), (PORT, "5678")]);
        c.network_mode = "host".into();
        c.networks = [("host".to_owned(), String::new())].into();
        c.ports.clear();
        check(&c, None, "web 127.0.0.1:5678/1/0");
        c.labels.remove(PORT);
        check(&c, None, "skip: label switchyard.port must give its port");

        // 3. published: the host side, loopback when published on every interface.
        let mut c = container(&[(SERVICE, "web")]);
        c.ports[0].public = Some(18080);
        c.ports[0].host_ip = Some("0.0.0.0".into());
        check(&c, None, "web 127.0.0.1:18080/1/0");
        c.ports[0].host_ip = Some("127.0.0.5".into());
        check(&c, None, "web 127.0.0.5:18080/1/0");

        // 4. one network: its IP; several: ambiguous.
        let mut c = container(&[(SERVICE, "web")]);
        check(&c, None, "web 172.28.0.5:8080/1/0");
        c.networks.insert("other".into(), "10.1.0.9".into());
        check(&c, None, "skip: attached to several networks");

        // The port: the only exposed TCP port, else the label must say.
        let mut c = container(&[(SERVICE, "web")]);
        c.ports.push(PortMapping {
            private: 9090,
            public: None,
            host_ip: None,
            protocol: "tcp".into(),
        });
        check(&c, None, "skip: several exposed TCP ports [8080, 9090]");
        c.ports.clear();
        check(&c, None, "skip: no exposed TCP port");
    }
}
