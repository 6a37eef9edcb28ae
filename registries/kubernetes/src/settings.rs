//! The `[registries.NAME]` table of a `type = "kubernetes"` registry, the source keys
//! (`service = "namespace/name"`, `port`), and how a client configuration is found.

use std::path::PathBuf;

use serde::Deserialize;
use switchyard_registry::{ConfigIssue, ServiceQuery};

/// Settings of a Kubernetes registry: one cluster.
///
/// ```toml
/// [registries.k8s]
/// type = "kubernetes"
/// kubeconfig = "~/.kube/config"   # optional
/// context = "prod"                # optional
/// namespaces = ["shop"]           # optional allow-list
/// address_family = "ipv4"         # optional: ipv4 | ipv6 | any
/// ```
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Path of a kubeconfig file, relative to the config file's directory. Default: none,
    /// which means `$KUBECONFIG`, then `~/.kube/config`, then the in-cluster service
    /// account (`KUBERNETES_SERVICE_HOST` and the mounted token).
    #[serde(default)]
    pub kubeconfig: Option<String>,
    /// The kubeconfig context to use. Default: the kubeconfig's `current-context`.
    #[serde(default)]
    pub context: Option<String>,
    /// Namespaces sources may name. Default: none, which allows every namespace.
    #[serde(default)]
    pub namespaces: Option<Vec<String>>,
    /// Which EndpointSlices of a dual-stack Service are served. Default: `ipv4` when the
    /// Service has IPv4 slices, else `ipv6` (see [`AddressFamily`]).
    #[serde(default)]
    pub address_family: Option<AddressFamily>,
}

/// The address family served from a Service's EndpointSlices.
///
/// An EndpointSlice holds one address family (`addressType`); the EndpointSlice controller
/// makes one set of slices per family in the Service's `ipFamilies`, each naming the same
/// pods (pkg/controller/endpointslice/reconciler.go: `getAddressTypesForService`, then a
/// reconcile per address type). kube-proxy serves one family per proxier (its dual-stack
/// meta-proxier runs an IPv4 and an IPv6 proxier, each reading only its family's slices),
/// so a consumer that took every slice would serve each pod twice.
#[derive(Clone, Copy, Debug, Deserialize, schemars::JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AddressFamily {
    /// IPv4 slices only.
    Ipv4,
    /// IPv6 slices only.
    Ipv6,
    /// Both; a pod (by `targetRef`) already served by an IPv4 address is not served again
    /// by its IPv6 one, so pods only in IPv6 slices still serve.
    Any,
}

impl Settings {
    /// Every problem with the settings, keys relative to the table.
    pub fn check(&self, kubeconfig_path: Option<&PathBuf>) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        if let Some(path) = &self.kubeconfig {
            if path.trim().is_empty() {
                issues.push(ConfigIssue::new("kubeconfig", "must not be empty (omit it to use $KUBECONFIG, ~/.kube/config or the in-cluster account)"));
            } else if let Some(resolved) = kubeconfig_path {
                if !resolved.is_file() {
                    issues.push(ConfigIssue::new(
                        "kubeconfig",
                        format!("no kubeconfig file at {}", resolved.display()),
                    ));
                }
            }
        }
        if self.context.as_deref().is_some_and(|c| c.trim().is_empty()) {
            issues.push(ConfigIssue::new(
                "context",
                "must not be empty (omit it to use the kubeconfig's current-context)",
            ));
        }
        if let Some(namespaces) = &self.namespaces {
            if namespaces.is_empty() {
                issues.push(ConfigIssue::new(
                    "namespaces",
                    "must not be empty (omit it to allow every namespace)",
                ));
            }
            for (i, ns) in namespaces.iter().enumerate() {
                if !is_dns_label(ns) {
                    issues.push(ConfigIssue::new(
                        format!("namespaces[{i}]"),
                        format!("{ns:?} is not a valid namespace name (lowercase letters, digits and '-', at most 63)"),
                    ));
                }
            }
        }
        issues
    }

    /// Whether sources may name `namespace`.
    pub fn allows(&self, namespace: &str) -> bool {
        self.namespaces
            .as_ref()
            .is_none_or(|allowed| allowed.iter().any(|a| a == namespace))
    }
}

/// Which port of the EndpointSlices a source wants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortSpec {
    /// The port with this name (`ports[].name`).
    Name(String),
    /// The port with this number (`ports[].port`: the endpoints' own port, which is the
    /// Service's `targetPort`, not its `port`).
    Number(u16),
    /// No `port` given: the slice's only port.
    Only,
}

impl PortSpec {
    /// Parses the source's `port` key: digits are a number, anything else a name.
    pub fn parse(port: Option<&str>) -> Result<PortSpec, String> {
        let Some(port) = port else {
            return Ok(PortSpec::Only);
        };
        if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) {
            return match port.parse::<u16>() {
                Ok(n) if n > 0 => Ok(PortSpec::Number(n)),
                _ => Err(format!("{port} is not a port number (1-65535)")),
            };
        }
        if is_dns_label(port) {
            Ok(PortSpec::Name(port.to_owned()))
        } else {
            Err(format!(
                "{port:?} is neither a port number nor a port name (lowercase letters, digits and '-')"
            ))
        }
    }
}

/// A source's service, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The namespace.
    pub namespace: String,
    /// The Service name (the `kubernetes.io/service-name` label of its slices).
    pub name: String,
    /// The port wanted.
    pub port: PortSpec,
    /// The family wanted; `None`: IPv4 when the Service has IPv4 slices, else IPv6.
    pub family: Option<AddressFamily>,
}

/// Checks a source (keys relative to the source table) and parses it.
pub fn parse_query(query: &ServiceQuery, settings: &Settings) -> Result<Target, Vec<ConfigIssue>> {
    let mut issues = Vec::new();
    let mut target = None;
    match query.service.split_once('/') {
        Some((ns, name)) if is_dns_label(ns) && is_dns_label(name) => {
            if settings.allows(ns) {
                target = Some((ns.to_owned(), name.to_owned()));
            } else {
                let allowed = settings.namespaces.clone().unwrap_or_default().join(", ");
                issues.push(ConfigIssue::new(
                    "service",
                    format!("namespace {ns:?} is not in this registry's namespaces (allowed: {allowed})"),
                ));
            }
        }
        _ => issues.push(ConfigIssue::new(
            "service",
            format!(
                "{:?} is not \"namespace/name\" (each lowercase letters, digits and '-', at most 63)",
                query.service
            ),
        )),
    }
    let port = PortSpec::parse(query.port.as_deref()).map_err(|m| ConfigIssue::new("port", m));
    if let Err(issue) = &port {
        issues.push(issue.clone());
    }
    if !query.tags.is_empty() {
        issues.push(ConfigIssue::new(
            "tags",
            "not supported by kubernetes registries (Consul only)",
        ));
    }
    if query.filter.is_some() {
        issues.push(ConfigIssue::new(
            "filter",
            "not supported by kubernetes registries (Consul only)",
        ));
    }
    if query.datacenter.is_some() {
        issues.push(ConfigIssue::new(
            "datacenter",
            "not supported by kubernetes registries (Consul only)",
        ));
    }
    match (target, port) {
        (Some((namespace, name)), Ok(port)) if issues.is_empty() => Ok(Target {
            namespace,
            name,
            port,
            family: settings.address_family,
        }),
        _ => Err(issues),
    }
}

/// An RFC 1123 label: 1–63 lowercase alphanumerics or '-', starting and ending
/// alphanumeric (namespace, Service and port names).
pub fn is_dns_label(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 63
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !text.starts_with('-')
        && !text.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(service: &str, port: Option<&str>, namespaces: Option<&[&str]>, expected: &[&str]) {
        let settings = Settings {
            namespaces: namespaces.map(|n| n.iter().map(|s| (*s).to_owned()).collect()),
            ..Settings::default()
        };
        let mut query = ServiceQuery::new(service);
        query.port = port.map(str::to_owned);
        let got: Vec<String> = match parse_query(&query, &settings) {
            Ok(_) => Vec::new(),
            Err(issues) => issues.iter().map(|i| i.path.clone()).collect(),
        };
        assert_eq!(got, expected, "{service:?} port {port:?}");
    }

    #[test]
    fn sources_are_checked() {
        check("shop/orders", None, None, &[]);
        check("shop/orders", Some("http"), None, &[]);
        check("shop/orders", Some("8080"), Some(&["shop"]), &[]);
        check("orders", None, None, &["service"]);
        check("shop/Orders", None, None, &["service"]);
        check("shop/orders/x", None, None, &["service"]);
        check("/orders", None, None, &["service"]);
        check("shop/orders", None, Some(&["other"]), &["service"]);
        check("shop/orders", Some("0"), None, &["port"]);
        check("shop/orders", Some("70000"), None, &["port"]);
        check("shop/orders", Some(""), None, &["port"]);
        check("shop/orders", Some("HTTP"), None, &["port"]);
        check("bad", Some("x_y"), None, &["service", "port"]);
    }

    #[test]
    fn consul_keys_are_refused() {
        let mut query = ServiceQuery::new("shop/orders");
        query.tags = vec!["v2".into()];
        query.datacenter = Some("dc1".into());
        let issues = parse_query(&query, &Settings::default()).unwrap_err();
        let paths: Vec<_> = issues.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(paths, ["tags", "datacenter"]);
    }

    #[test]
    fn ports_parse() {
        assert_eq!(PortSpec::parse(None), Ok(PortSpec::Only));
        assert_eq!(PortSpec::parse(Some("8080")), Ok(PortSpec::Number(8080)));
        assert_eq!(
            PortSpec::parse(Some("http-alt")),
            Ok(PortSpec::Name("http-alt".into()))
        );
    }

    #[test]
    fn settings_are_checked() {
        let settings = Settings {
            kubeconfig: Some(" ".into()),
            context: Some(String::new()),
            namespaces: Some(vec!["ok".into(), "Not_OK".into()]),
            address_family: None,
        };
        let paths: Vec<_> = settings.check(None).into_iter().map(|i| i.path).collect();
        assert_eq!(paths, ["kubeconfig", "context", "namespaces[1]"]);
        let missing = PathBuf::from("/nonexistent/kubeconfig");
        let settings = Settings {
            kubeconfig: Some("/nonexistent/kubeconfig".into()),
            namespaces: Some(vec![]),
            ..Settings::default()
        };
        let paths: Vec<_> = settings
            .check(Some(&missing))
            .into_iter()
            .map(|i| i.path)
            .collect();
        assert_eq!(paths, ["kubeconfig", "namespaces"]);
    }
}
