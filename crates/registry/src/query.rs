//! What a source asks a registry for.

/// One service to watch, as a source in `[[upstreams.NAME.sources]]` names it.
///
/// The meaning of `service` depends on the registry type (docs/configuration.md, "Sources"): a plain name for
/// static, file, etcd and Consul; an SRV name or `host:port` for DNS; `namespace/name` for
/// Kubernetes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ServiceQuery {
    /// The service, in the registry's own naming.
    pub service: String,
    /// Kubernetes: the port name or number to pick from the EndpointSlices.
    pub port: Option<String>,
    /// Consul: tags that must all be present.
    pub tags: Vec<String>,
    /// Consul: a datacenter overriding the registry's.
    pub datacenter: Option<String>,
    /// Consul: a filter expression (`Service.Meta.version == "2"`), passed to Consul's
    /// `?filter=` (combined with the registry's own `filter` by `and`).
    pub filter: Option<String>,
}

impl ServiceQuery {
    /// A query for a service by name, with no port, tags or datacenter.
    pub fn new(service: impl Into<String>) -> Self {
        ServiceQuery {
            service: service.into(),
            ..ServiceQuery::default()
        }
    }
}

impl std::fmt::Display for ServiceQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.service)?;
        if let Some(port) = &self.port {
            write!(f, ":{port}")?;
        }
        if !self.tags.is_empty() {
            write!(f, " [tags {}]", self.tags.join(","))?;
        }
        if let Some(dc) = &self.datacenter {
            write!(f, " [dc {dc}]")?;
        }
        if let Some(filter) = &self.filter {
            write!(f, " [filter {filter}]")?;
        }
        Ok(())
    }
}
