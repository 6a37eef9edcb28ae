//! From a decoded [`Config`] to what runs: registries built by their factories, upstream
//! specs, route specs. Building is also the deep validation (`switchyard check`): every
//! cross-reference and every backend's own checks, all problems reported at once.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use http::{HeaderName, HeaderValue, Method};
use switchyard_proxy::balance::ZoneAwareFactory;
use switchyard_proxy::router::{HeaderMatch, PathMatch, RouteMatch};
use switchyard_proxy::upstream_tls::{UpstreamTls, UpstreamTlsSpec};
use switchyard_proxy::{BalancerKind, HashOn, RouteSpec, UpstreamOptions};
use switchyard_registry::{
    Catalog, ConfigIssue, Registry, RegistryContext, RegistryMetrics, ServiceQuery,
};
use switchyard_upstream::{
    HealthCheckKind, HealthCheckSpec, OutlierSpec, PanicMode, SelectorFactory, ShrinkGuard,
    SourceSpec, UpstreamSpec, DEFAULT_HEALTHY_STATUSES,
};

use crate::config::{
    Config, HealthCheckConfig, HealthCheckType, PanicModeConfig, RegistryTable, RouteConfig,
    StatusRange, UpstreamConfig, UpstreamTlsConfig,
};

/// A registry built from its table.
#[derive(Clone)]
pub struct BuiltRegistry {
    /// Its `type`.
    pub kind: &'static str,
    /// The table it was built from; an unchanged table keeps the registry on reload.
    pub table: RegistryTable,
    /// The backend.
    pub registry: Arc<dyn Registry>,
    /// Its counters (kept across reloads with the registry).
    pub metrics: Arc<RegistryMetrics>,
}

/// Everything a config generation runs.
pub struct Plan {
    /// The decoded config.
    pub config: Config,
    /// Registries by name.
    pub registries: BTreeMap<String, BuiltRegistry>,
    /// Upstreams to watch.
    pub upstreams: Vec<UpstreamSpec>,
    /// What the proxy needs of each upstream (hash key, TLS), by name.
    pub upstream_options: HashMap<String, UpstreamOptions>,
    /// Routes, in order.
    pub routes: Vec<RouteSpec>,
}

/// Builds a plan. `previous` registries whose table is unchanged are reused as they are.
pub fn build(
    config: Config,
    catalog: &Catalog,
    hub: &Arc<switchyard_policy::Hub>,
    base_dir: &Path,
    previous: Option<&BTreeMap<String, BuiltRegistry>>,
) -> Result<Plan, Vec<ConfigIssue>> {
    let mut issues = Vec::new();

    let mut registries = BTreeMap::new();
    for (name, table) in &config.registries {
        let path = format!("registries.{name}");
        if let Some(kept) = previous
            .and_then(|p| p.get(name))
            .filter(|r| r.table == *table)
        {
            registries.insert(name.clone(), kept.clone());
            continue;
        }
        let Some(factory) = catalog.get(&table.kind) else {
            issues.push(ConfigIssue::new(
                format!("{path}.type"),
                format!(
                    "unknown registry type {:?} (known: {})",
                    table.kind,
                    catalog.kinds().join(", ")
                ),
            ));
            continue;
        };
        let metrics = previous
            .and_then(|p| p.get(name))
            .map(|r| r.metrics.clone())
            .unwrap_or_default();
        let ctx = RegistryContext {
            name: name.clone(),
            metrics: metrics.clone(),
            base_dir: base_dir.to_path_buf(),
        };
        match factory.build(ctx, &table.settings) {
            Ok(registry) => {
                registries.insert(
                    name.clone(),
                    BuiltRegistry {
                        kind: factory.kind(),
                        table: table.clone(),
                        registry,
                        metrics,
                    },
                );
            }
            Err(errors) => issues.extend(errors.into_iter().map(|e| e.under(&path))),
        }
    }

    let mut upstreams = Vec::new();
    let mut upstream_options = HashMap::new();
    for (name, upstream) in &config.upstreams {
        let path = format!("upstreams.{name}");
        let tls = match &upstream.tls {
            None => None,
            Some(tls) => match upstream_tls(tls, base_dir) {
                Ok(tls) => Some(Arc::new(tls)),
                Err(issue) => {
                    issues.push(issue.under(&format!("{path}.tls")));
                    None
                }
            },
        };
        let protocol = match upstream_protocol(upstream) {
            Ok(protocol) => protocol,
            Err(issue) => {
                issues.push(issue.under(&path));
                Default::default()
            }
        };
        let h2 = match upstream_http2(&upstream.http2) {
            Ok(h2) => h2,
            Err(more) => {
                issues.extend(more.into_iter().map(|i| i.under(&path)));
                None
            }
        };
        match build_upstream(name, upstream, &config, &registries) {
            Ok((spec, hash_on)) => {
                upstream_options.insert(
                    name.clone(),
                    UpstreamOptions {
                        hash_on,
                        tls,
                        protocol,
                        h2,
                    },
                );
                upstreams.push(spec);
            }
            Err(errors) => issues.extend(errors.into_iter().map(|e| e.under(&path))),
        }
    }

    match (&config.server.tls_listen, &config.server.tls) {
        (Some(_), None) => issues.push(ConfigIssue::new(
            "server.tls",
            "tls_listen needs [server.tls] certificates",
        )),
        (None, Some(_)) => issues.push(ConfigIssue::new(
            "server.tls_listen",
            "[server.tls] needs tls_listen",
        )),
        (Some(_), Some(tls)) => {
            if let Err(message) = tls_spec(tls, base_dir)
                .and_then(|spec| switchyard_proxy::tls::server_config(&spec).map(|_| ()))
            {
                issues.push(ConfigIssue::new("server.tls", message));
            }
        }
        (None, None) => {}
    }
    if config.server.redirect_to_https && config.server.tls_listen.is_none() {
        issues.push(ConfigIssue::new(
            "server.redirect_to_https",
            "needs tls_listen",
        ));
    }
    for (i, cidr) in config.server.trusted_proxies.iter().enumerate() {
        if let Err(message) = switchyard_proxy::limits::Cidr::parse(cidr) {
            issues.push(ConfigIssue::new(
                format!("server.trusted_proxies[{i}]"),
                message,
            ));
        }
    }
    if let Some(state) = &config.state {
        if state.dir.is_empty() {
            issues.push(ConfigIssue::new("state.dir", "must not be empty"));
        }
    }
    let policies = crate::policy::build_policies(hub, &config, base_dir);
    let policies = match policies {
        Ok(p) => Some(p),
        Err(errors) => {
            issues.extend(errors);
            None
        }
    };
    let mut routes = Vec::new();
    let mut names: HashMap<Arc<str>, usize> = HashMap::new();
    for (i, route) in config.routes.iter().enumerate() {
        let path = format!("routes[{i}]");
        let built = build_route(i, route, &config).and_then(|mut spec| {
            if let Some(policies) = &policies {
                spec.filters = crate::policy::route_filters(policies, &spec.name, &route.policies)?;
            }
            Ok(spec)
        });
        match built {
            Ok(spec) => {
                if let Some(first) = names.insert(spec.name.clone(), i) {
                    issues.push(ConfigIssue::new(
                        format!("{path}.name"),
                        format!("{:?} is already the name of routes[{first}]", spec.name),
                    ));
                }
                routes.push(spec);
            }
            Err(errors) => issues.extend(errors.into_iter().map(|e| e.under(&path))),
        }
    }

    if issues.is_empty() {
        Ok(Plan {
            config,
            registries,
            upstreams,
            upstream_options,
            routes,
        })
    } else {
        Err(issues)
    }
}

/// Loads `[upstreams.NAME.tls]` (the CA file relative to the config's directory).
fn upstream_tls(tls: &UpstreamTlsConfig, base_dir: &Path) -> Result<UpstreamTls, ConfigIssue> {
    let spec = UpstreamTlsSpec {
        ca_file: tls.ca_file.as_ref().map(|f| base_dir.join(f)),
        server_name: tls.server_name.clone(),
    };
    UpstreamTls::load(&spec).map_err(|message| {
        let key = if message.starts_with("server_name") {
            "server_name"
        } else {
            "ca_file"
        };
        ConfigIssue::new(key, message)
    })
}

/// `[upstreams.NAME.http2]` as the HTTP/2 pool's settings; `None` when they are the
/// defaults (the upstream shares the client's default pools). Windows must be valid
/// HTTP/2 window sizes (RFC 9113 §6.9: at most 2^31 - 1; at least the protocol's initial
/// 65535), durations above zero.
fn upstream_http2(
    http2: &crate::config::Http2Config,
) -> Result<Option<switchyard_proxy::client::h2::H2Settings>, Vec<ConfigIssue>> {
    use switchyard_proxy::client::h2::H2Settings;
    const MAX_WINDOW: u64 = (1 << 31) - 1;
    let mut issues = Vec::new();
    for (key, value) in [
        ("keepalive_interval", http2.keepalive_interval),
        ("keepalive_timeout", http2.keepalive_timeout),
    ] {
        if value.is_zero() {
            issues.push(ConfigIssue::new(format!("http2.{key}"), "must be above 0"));
        }
    }
    let mut window = |key: &str, size: crate::config::ByteSize| {
        if (65_535..=MAX_WINDOW).contains(&size.0) {
            u32::try_from(size.0).unwrap_or(u32::MAX)
        } else {
            issues.push(ConfigIssue::new(
                format!("http2.{key}"),
                format!(
                    "must be between 65535 and {MAX_WINDOW} bytes, not {}",
                    size.0
                ),
            ));
            0
        }
    };
    let settings = H2Settings {
        ping_interval: http2.keepalive_interval,
        ping_timeout: http2.keepalive_timeout,
        initial_stream_window: window("initial_stream_window", http2.initial_stream_window),
        initial_connection_window: window(
            "initial_connection_window",
            http2.initial_connection_window,
        ),
    };
    if !issues.is_empty() {
        return Err(issues);
    }
    Ok((settings != H2Settings::default()).then_some(settings))
}

/// `protocol` of `[upstreams.NAME]`: `h2` needs `[tls]`.
fn upstream_protocol(
    upstream: &UpstreamConfig,
) -> Result<switchyard_proxy::protocol::UpstreamProtocol, ConfigIssue> {
    use switchyard_proxy::protocol::UpstreamProtocol;
    let Some(text) = &upstream.protocol else {
        return Ok(UpstreamProtocol::Http1);
    };
    let protocol: UpstreamProtocol = text
        .parse()
        .map_err(|message| ConfigIssue::new("protocol", message))?;
    if protocol == UpstreamProtocol::H2 && upstream.tls.is_none() {
        return Err(ConfigIssue::new(
            "protocol",
            "h2 is HTTP/2 over TLS and needs [tls] (h2c is cleartext)",
        ));
    }
    Ok(protocol)
}

fn build_upstream(
    name: &str,
    upstream: &UpstreamConfig,
    config: &Config,
    registries: &BTreeMap<String, BuiltRegistry>,
) -> Result<(UpstreamSpec, Option<HashOn>), Vec<ConfigIssue>> {
    let mut issues = Vec::new();
    let balancer = BalancerKind::parse(&upstream.balancer);
    if balancer.is_none() {
        let known: Vec<&str> = BalancerKind::ALL.iter().map(|k| k.as_str()).collect();
        issues.push(ConfigIssue::new(
            "balancer",
            format!(
                "unknown balancer {:?} (known: {})",
                upstream.balancer,
                known.join(", ")
            ),
        ));
    }
    let hash_on = match (&upstream.hash_on, balancer) {
        (Some(text), _) => match parse_hash_on(text) {
            Ok(hash) => Some(hash),
            Err(message) => {
                issues.push(ConfigIssue::new("hash_on", message));
                None
            }
        },
        (None, Some(BalancerKind::ConsistentHash)) => {
            issues.push(ConfigIssue::new(
                "hash_on",
                "required by consistent_hash: header:NAME | cookie:NAME | client_ip | path",
            ));
            None
        }
        (None, _) => None,
    };
    if upstream.sources.is_empty() {
        issues.push(ConfigIssue::new("sources", "at least one source is needed"));
    }
    // Exactly sized: a first push reserves room for 4 (~540 bytes unused per upstream).
    let mut sources = Vec::with_capacity(upstream.sources.len());
    for (i, source) in upstream.sources.iter().enumerate() {
        let path = format!("sources[{i}]");
        let Some(built) = registries.get(&source.registry) else {
            // A registry that failed to build is reported under its own table already.
            if !config.registries.contains_key(&source.registry) {
                let known: Vec<&str> = config.registries.keys().map(String::as_str).collect();
                issues.push(ConfigIssue::new(
                    format!("{path}.registry"),
                    format!(
                        "unknown registry {:?} (known: {})",
                        source.registry,
                        known.join(", ")
                    ),
                ));
            }
            continue;
        };
        let query = ServiceQuery {
            service: source.service.clone(),
            port: source.port.as_ref().map(ToString::to_string),
            tags: source.tags.clone(),
            datacenter: source.datacenter.clone(),
            filter: source.filter.clone(),
        };
        if source.service.is_empty() {
            issues.push(ConfigIssue::new(
                format!("{path}.service"),
                "must not be empty",
            ));
        } else if let Err(errors) = built.registry.check_query(&query) {
            issues.extend(errors.into_iter().map(|e| e.under(&path)));
        }
        if source.weight == Some(0) {
            issues.push(ConfigIssue::new(
                format!("{path}.weight"),
                "must be at least 1",
            ));
        }
        sources.push(SourceSpec {
            registry_name: source.registry.clone(),
            registry_kind: built.kind,
            registry: built.registry.clone(),
            metrics: built.metrics.clone(),
            query,
            priority: source.priority,
            weight: source.weight,
        });
    }
    let health_check =
        upstream
            .health_check
            .as_ref()
            .and_then(|check| match health_check_spec(check) {
                Ok(spec) => Some(spec),
                Err(errors) => {
                    issues.extend(errors.into_iter().map(|e| e.under("health_check")));
                    None
                }
            });
    let shrink_guard = match upstream.min_healthy_ratio {
        None => None,
        Some(ratio) if ratio > 0.0 && ratio <= 1.0 => Some(ShrinkGuard {
            min_ratio: ratio,
            grace: upstream.shrink_grace,
        }),
        Some(ratio) => {
            issues.push(ConfigIssue::new(
                "min_healthy_ratio",
                format!("{ratio} must be more than 0 and at most 1"),
            ));
            None
        }
    };
    let zone = config
        .server
        .zone
        .as_deref()
        .map(str::trim)
        .filter(|z| !z.is_empty());
    if upstream.zone_aware && zone.is_none() {
        issues.push(ConfigIssue::new(
            "zone_aware",
            "needs the gateway's zone: set [server] zone (or SWITCHYARD__SERVER__ZONE)",
        ));
    }
    if !issues.is_empty() {
        return Err(issues);
    }
    let balancer = balancer.expect("checked above");
    let selector = match zone {
        Some(zone) if upstream.zone_aware => {
            Arc::new(ZoneAwareFactory::new(zone, balancer.factory())) as Arc<dyn SelectorFactory>
        }
        _ => balancer.factory(),
    };
    let spec = UpstreamSpec {
        name: name.to_owned(),
        balancer: balancer.as_str().to_owned(),
        selector,
        sources,
        outlier: OutlierSpec {
            consecutive_failures: upstream.outlier.consecutive_failures,
            base_ejection: upstream.outlier.base_ejection,
            count_5xx: upstream.outlier.count_5xx,
        },
        health_check,
        panic_mode: match upstream.panic_mode {
            PanicModeConfig::ServeAll => PanicMode::ServeAll,
            PanicModeConfig::Reject => PanicMode::Reject,
        },
        shrink_guard,
    };
    Ok((spec, hash_on))
}

/// The TLS spec of `[server.tls]`, paths resolved against the config's directory.
pub fn tls_spec(
    tls: &crate::config::TlsSettings,
    base_dir: &Path,
) -> Result<switchyard_proxy::tls::TlsSpec, String> {
    let min_version_13 = match tls.min_version.as_str() {
        "1.2" => false,
        "1.3" => true,
        other => return Err(format!("min_version {other:?}: 1.2 or 1.3")),
    };
    if tls.certificates.is_empty() {
        return Err("at least one certificate is needed".into());
    }
    Ok(switchyard_proxy::tls::TlsSpec {
        certificates: tls
            .certificates
            .iter()
            .map(|c| switchyard_proxy::tls::CertificateSpec {
                cert: base_dir.join(&c.cert),
                key: base_dir.join(&c.key),
                names: c.names.clone(),
            })
            .collect(),
        min_version_13,
    })
}

/// Checks a `[upstreams.NAME.health_check]` table.
fn health_check_spec(check: &HealthCheckConfig) -> Result<HealthCheckSpec, Vec<ConfigIssue>> {
    let mut issues = Vec::new();
    if check.interval.is_zero() {
        issues.push(ConfigIssue::new("interval", "must be more than 0"));
    }
    if check.timeout.is_zero() {
        issues.push(ConfigIssue::new("timeout", "must be more than 0"));
    }
    for (key, value) in [
        ("healthy_threshold", check.healthy_threshold),
        ("unhealthy_threshold", check.unhealthy_threshold),
    ] {
        if value == 0 {
            issues.push(ConfigIssue::new(key, "must be at least 1"));
        }
    }
    if !check.path.starts_with('/') {
        issues.push(ConfigIssue::new(
            "path",
            format!("{:?} must start with /", check.path),
        ));
    }
    let mut expected = Vec::new();
    for (i, status) in check.expected_statuses.iter().enumerate() {
        let range = match status {
            StatusRange::Code(code) => Some((*code, *code)),
            StatusRange::Range(text) => text
                .split_once('-')
                .and_then(|(lo, hi)| Some((lo.trim().parse().ok()?, hi.trim().parse().ok()?))),
        };
        match range {
            Some((lo, hi))
                if (100..=599).contains(&lo) && (100..=599).contains(&hi) && lo <= hi =>
            {
                expected.push((lo, hi))
            }
            _ => issues.push(ConfigIssue::new(
                format!("expected_statuses[{i}]"),
                "a status 100-599 or a range \"LO-HI\"",
            )),
        }
    }
    if expected.is_empty() {
        expected.push(DEFAULT_HEALTHY_STATUSES);
    }
    if check.kind == HealthCheckType::Tcp && check.path != "/" {
        issues.push(ConfigIssue::new("path", "a tcp check has no path"));
    }
    if check.kind == HealthCheckType::Grpc && check.path != "/" {
        issues.push(ConfigIssue::new(
            "path",
            "a grpc check calls grpc.health.v1.Health/Check (name the service with `service`)",
        ));
    }
    if check.kind != HealthCheckType::Grpc && check.service.is_some() {
        issues.push(ConfigIssue::new(
            "service",
            "only a grpc check has a service",
        ));
    }
    if !issues.is_empty() {
        return Err(issues);
    }
    Ok(HealthCheckSpec {
        kind: match check.kind {
            HealthCheckType::Http => HealthCheckKind::Http {
                path: check.path.clone(),
                host: check.host.clone(),
                expected,
            },
            HealthCheckType::Tcp => HealthCheckKind::Tcp,
            HealthCheckType::Grpc => HealthCheckKind::Grpc {
                service: check.service.clone().unwrap_or_default(),
            },
        },
        interval: check.interval,
        timeout: check.timeout,
        healthy_threshold: check.healthy_threshold,
        unhealthy_threshold: check.unhealthy_threshold,
    })
}

/// `header:NAME` | `cookie:NAME` | `client_ip` | `path`.
pub fn parse_hash_on(text: &str) -> Result<HashOn, String> {
    let bad = || format!("{text:?}: expected header:NAME | cookie:NAME | client_ip | path");
    match text.split_once(':') {
        None if text == "client_ip" => Ok(HashOn::ClientIp),
        None if text == "path" => Ok(HashOn::Path),
        Some(("header", name)) => HeaderName::from_bytes(name.as_bytes())
            .map(HashOn::Header)
            .map_err(|_| bad()),
        Some(("cookie", name)) if !name.is_empty() => Ok(HashOn::Cookie(name.to_owned())),
        _ => Err(bad()),
    }
}

fn build_route(
    index: usize,
    route: &RouteConfig,
    config: &Config,
) -> Result<RouteSpec, Vec<ConfigIssue>> {
    let mut issues = Vec::new();
    let path = match (&route.path, &route.path_prefix) {
        (Some(_), Some(_)) => {
            issues.push(ConfigIssue::new(
                "path",
                "give either path or path_prefix, not both",
            ));
            PathMatch::Prefix("/".into())
        }
        (Some(p), None) => PathMatch::Exact(p.clone()),
        (None, Some(p)) => PathMatch::Prefix(p.clone()),
        (None, None) => PathMatch::Prefix("/".into()),
    };
    let (PathMatch::Exact(p) | PathMatch::Prefix(p)) = &path;
    if !p.starts_with('/') {
        let key = if route.path.is_some() {
            "path"
        } else {
            "path_prefix"
        };
        issues.push(ConfigIssue::new(key, format!("{p:?} must start with /")));
    }
    if let Some(host) = &route.host {
        let bare = host.strip_prefix("*.").unwrap_or(host);
        let valid = !bare.is_empty()
            && bare
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
            && (!host.starts_with('*') || host.starts_with("*."));
        if !valid {
            issues.push(ConfigIssue::new(
                "host",
                format!("{host:?} is not a host name or *.suffix"),
            ));
        }
    }
    let mut methods = Vec::new();
    for (i, method) in route.methods.iter().enumerate() {
        match Method::from_bytes(method.to_ascii_uppercase().as_bytes()) {
            Ok(m) => methods.push(m),
            Err(_) => issues.push(ConfigIssue::new(
                format!("methods[{i}]"),
                format!("{method:?} is not a method"),
            )),
        }
    }
    let mut headers = Vec::new();
    for (name, value) in &route.headers {
        let Ok(header) = HeaderName::from_bytes(name.as_bytes()) else {
            issues.push(ConfigIssue::new(
                format!("headers.{name}"),
                "not a valid header name",
            ));
            continue;
        };
        let cond = if value == "*" {
            HeaderMatch::Present
        } else {
            match HeaderValue::from_str(value) {
                Ok(v) => HeaderMatch::Exact(v),
                Err(_) => {
                    issues.push(ConfigIssue::new(
                        format!("headers.{name}"),
                        "not a valid header value",
                    ));
                    continue;
                }
            }
        };
        headers.push((header, cond));
    }
    if !config.upstreams.contains_key(&route.upstream)
        && !config.broken_upstreams.contains(&route.upstream)
    {
        let known: Vec<&str> = config.upstreams.keys().map(String::as_str).collect();
        issues.push(ConfigIssue::new(
            "upstream",
            format!(
                "unknown upstream {:?} (known: {})",
                route.upstream,
                known.join(", ")
            ),
        ));
    }
    if route.timeout.is_zero() {
        issues.push(ConfigIssue::new("timeout", "must be more than 0"));
    }
    if route.strip_prefix && route.path_prefix.is_none() {
        issues.push(ConfigIssue::new("strip_prefix", "needs path_prefix"));
    }
    for (i, protocol) in route.upgrades.iter().enumerate() {
        if protocol.eq_ignore_ascii_case("h2c") {
            issues.push(ConfigIssue::new(
                format!("upgrades[{i}]"),
                "h2c upgrades are never forwarded",
            ));
        } else if !switchyard_proxy::grammar::token(protocol.as_bytes()) || protocol.contains('/') {
            issues.push(ConfigIssue::new(
                format!("upgrades[{i}]"),
                format!("{protocol:?} is not a protocol name"),
            ));
        }
    }
    let mut retry_on = switchyard_proxy::RetryOn::default();
    for (i, name) in route.retry_on.iter().enumerate() {
        if name == "connect_failure" {
            retry_on.connect_failure = true;
        } else if let Some(code) = switchyard_proxy::grpc::status_code(name) {
            retry_on.grpc |= 1 << code;
        } else {
            issues.push(ConfigIssue::new(
                format!("retry_on[{i}]"),
                format!(
                    "unknown condition {name:?} (known: connect_failure, {})",
                    switchyard_proxy::grpc::STATUS_NAMES
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
    }
    if !issues.is_empty() {
        return Err(issues);
    }
    Ok(RouteSpec {
        name: route
            .name
            .as_deref()
            .map_or_else(|| format!("route-{index}").into(), Arc::from),
        matcher: RouteMatch {
            host: route.host.clone(),
            path,
            methods,
            headers,
        },
        upstream: Arc::from(route.upstream.as_str()),
        strip_prefix: route.strip_prefix,
        timeout: route.timeout,
        retries: route.retries,
        max_body: route.max_body.map(|b| b.0),
        filters: Vec::new(),
        upgrades: route
            .upgrades
            .iter()
            .map(|p| p.to_ascii_lowercase())
            .collect(),
        retry_on,
        grpc_web: route.grpc_web,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ByteSize, Http2Config};
    use std::time::Duration;

    #[test]
    fn http2_settings_are_checked_and_defaults_share_the_pool() {
        assert_eq!(upstream_http2(&Http2Config::default()), Ok(None));
        let own = Http2Config {
            keepalive_interval: Duration::from_secs(30),
            initial_stream_window: ByteSize(65_535),
            ..Http2Config::default()
        };
        let settings = upstream_http2(&own).unwrap().expect("own settings");
        assert_eq!(settings.ping_interval, Duration::from_secs(30));
        assert_eq!(settings.initial_stream_window, 65_535);
        assert_eq!(settings.initial_connection_window, 4 * 1024 * 1024);
        let bad = Http2Config {
            keepalive_timeout: Duration::ZERO,
            initial_stream_window: ByteSize(1 << 31),
            initial_connection_window: ByteSize(1024),
            ..Http2Config::default()
        };
        let paths: Vec<String> = upstream_http2(&bad)
            .unwrap_err()
            .into_iter()
            .map(|i| i.path)
            .collect();
        assert_eq!(
            paths,
            [
                "http2.keepalive_timeout",
                "http2.initial_stream_window",
                "http2.initial_connection_window"
            ]
        );
    }
}
