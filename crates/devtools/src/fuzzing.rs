//! Fuzz targets: one `fn(&[u8])` per decoder or matcher that untrusted (or merely
//! mistaken) bytes reach, each of which must return normally whatever the bytes are.
//!
//! The cargo-fuzz project in `fuzz/` calls these under libFuzzer, and the stable smoke
//! runner (`crates/devtools/tests/fuzz_smoke.rs`) replays the committed corpora and
//! regressions through them with a short deterministic mutation loop. A panic, including a
//! broken invariant asserted here, is a finding: see `docs/fuzzing.md`.
//!
//! | target | input | code under test |
//! | --- | --- | --- |
//! | [`config`] | a TOML config file | `config::read_str`, `config::decode`, `plan::build` with every registry factory (building connects to nothing) |
//! | [`etcd_value`] | an etcd value | `switchyard_etcd::entry::{parse_value, parse_host_port}` |
//! | [`consul_health`] | `/v1/health/service` JSON | `switchyard_consul::decode::decode_entry` per entry |
//! | [`endpoint_slice`] | EndpointSlice JSON (one or an array) | `switchyard_kubernetes::slices::resolve` by name, number and "only port" |
//! | [`dns_answer`] | text lines `SRV prio weight port target`, `A target ip`, `W w...` | `switchyard_dns::answer::{srv_endpoints, tier_weights}` |
//! | [`file_sd`] | a Prometheus file_sd JSON file | `switchyard_file::parse_file_sd` |
//! | [`nomad_service`] | `/v1/service/<name>` JSON | `switchyard_nomad::decode::decode_entry` per entry |
//! | [`nacos_instances`] | an instance-list answer (v2 envelope or v1) | `switchyard_nacos::decode::{hosts, decode_host}` |
//! | [`eureka_apps`] | an `/apps` answer, then `/apps/delta` answers | `switchyard_eureka::decode::{parse_apps, apply_delta, hash_code, decode_instance}` |
//! | [`router`] | text lines of routes and requests (see [`router`]) | `switchyard_proxy::router::Router` against a reference matcher |
//! | [`zookeeper_node`] | a ZooKeeper node's data, and as text its name | `switchyard_zookeeper::decode::{decode_curator, decode_dubbo}` |
//! | [`http_sd`] | `Content-Type` line, then an HTTP SD body | `switchyard_http_sd::answer::decode_answer` |

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::Path;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use switchyard_proxy::router::{HeaderMatch, PathMatch, RouteMatch, Router};
use switchyard_registry::{Endpoint, RegistryContext};

/// A fuzz target: returns normally for every input, or panics on a finding.
pub type Target = fn(&[u8]);

/// Every target by name, as `fuzz/fuzz_targets/` and the smoke runner know them.
pub const TARGETS: [(&str, Target); 12] = [
    ("config", config),
    ("etcd_value", etcd_value),
    ("consul_health", consul_health),
    ("endpoint_slice", endpoint_slice),
    ("dns_answer", dns_answer),
    ("file_sd", file_sd),
    ("router", router),
    ("nomad_service", nomad_service),
    ("nacos_instances", nacos_instances),
    ("eureka_apps", eureka_apps),
    ("zookeeper_node", zookeeper_node),
    ("http_sd", http_sd),
];

/// Inputs above this size are ignored: they only slow the fuzzer down.
const MAX_INPUT: usize = 64 * 1024;

// === config ===

/// Reads `data` as a TOML config, decodes it and builds the plan with every registry
/// factory, as `switchyard check` does. Relative paths resolve against a directory that
/// does not exist.
///
/// Inputs naming `/dev/`, `/proc/` or `/sys/` are skipped: the config file is trusted
/// (see SECURITY.md), and reading `/dev/zero` as a CA bundle is not a bug.
pub fn config(data: &[u8]) {
    if data.len() > MAX_INPUT {
        return;
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if ["/dev/", "/proc/", "/sys/"]
        .iter()
        .any(|p| text.contains(p))
    {
        return;
    }
    let Ok(value) = switchyard::config::read_str(text, ::config::FileFormat::Toml) else {
        return;
    };
    let (decoded, issues) = switchyard::config::decode(&value);
    let loader = switchyard::load::Loader::default();
    let built = switchyard::plan::build(
        decoded,
        &loader.catalog,
        &loader.hub,
        Path::new("/nonexistent/switchyard-fuzz"),
        None,
    );
    if let Ok(plan) = built {
        if issues.is_empty() {
            // A plan that validates names only what exists.
            for route in &plan.routes {
                assert!(
                    plan.upstreams.iter().any(|u| *u.name == *route.upstream),
                    "route {:?} names upstream {:?}, which the plan lacks",
                    route.name,
                    route.upstream
                );
            }
        }
    }
}

// === registries ===

/// Decodes `data` as an etcd value, and as a bare `host:port` when it is UTF-8.
pub fn etcd_value(data: &[u8]) {
    if data.len() > MAX_INPUT {
        return;
    }
    let check = |entry: switchyard_etcd::entry::Entry| {
        assert_ne!(entry.port, 0, "{entry:?}: port 0");
        assert!(!entry.host.is_empty(), "{entry:?}: empty host");
        if entry.host.contains(':') {
            let literal = entry.host.trim_start_matches('[').trim_end_matches(']');
            assert!(
                literal.parse::<IpAddr>().is_ok(),
                "{entry:?}: a host with ':' that is no IP literal"
            );
        }
    };
    if let Ok(entry) = switchyard_etcd::entry::parse_value(data) {
        check(entry);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(entry) = switchyard_etcd::entry::parse_host_port(text) {
            check(entry);
        }
    }
}

/// Decodes `data` as a `/v1/health/service/<name>` answer: each entry of a JSON array (or
/// the value itself when it is no array) through `decode_entry`, with and without a wanted
/// tag, passing-only and with warning instances.
pub fn consul_health(data: &[u8]) {
    use switchyard_consul::decode::{decode_entry, Decoded, META_HEALTH, META_TAGS};
    if data.len() > MAX_INPUT {
        return;
    }
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let entries = match &value {
        serde_json::Value::Array(entries) => entries.iter().collect::<Vec<_>>(),
        other => vec![other],
    };
    let wanted = ["v2".to_owned()];
    for entry in entries {
        for tags in [&wanted[..0], &wanted[..]] {
            for only_passing in [true, false] {
                let Decoded::Serve(candidate) = decode_entry(entry, tags, only_passing) else {
                    continue;
                };
                assert_ne!(candidate.port, 0, "{candidate:?}: port 0");
                let health = candidate.metadata.get(META_HEALTH).map(String::as_str);
                let allowed: &[&str] = if only_passing {
                    &["passing"]
                } else {
                    &["passing", "warning"]
                };
                assert!(
                    health.is_some_and(|h| allowed.contains(&h)),
                    "{candidate:?}: served with health {health:?} (only_passing {only_passing})"
                );
                for tag in tags {
                    let listed = candidate.metadata.get(META_TAGS).map(String::as_str);
                    assert!(
                        listed.is_some_and(|l| l.contains(tag.as_str())),
                        "{candidate:?}: served without the wanted tag {tag:?}"
                    );
                }
            }
        }
    }
}

/// Decodes `data` as one EndpointSlice or an array of them (k8s-openapi types, as the
/// watcher receives them) and resolves the set by port name `http`, by port number 8080,
/// by "the only port", and by every port name the slices carry.
pub fn endpoint_slice(data: &[u8]) {
    use switchyard_kubernetes::slices::resolve;
    use switchyard_kubernetes::{EndpointSlice, PortSpec};
    if data.len() > MAX_INPUT {
        return;
    }
    let slices: Vec<EndpointSlice> = match serde_json::from_slice(data) {
        Ok(slices) => slices,
        Err(_) => match serde_json::from_slice::<EndpointSlice>(data) {
            Ok(slice) => vec![slice],
            Err(_) => return,
        },
    };
    let mut specs = vec![
        PortSpec::Name("http".into()),
        PortSpec::Number(8080),
        PortSpec::Only,
    ];
    let names: BTreeSet<&str> = slices
        .iter()
        .flat_map(|s| s.ports.iter().flatten())
        .filter_map(|p| p.name.as_deref())
        .collect();
    specs.extend(
        names
            .into_iter()
            .filter_map(|n| PortSpec::parse(Some(n)).ok()),
    );
    for spec in &specs {
        let resolved = resolve(&slices, spec);
        check_sorted_unique(&resolved.endpoints, "EndpointSlice");
        for endpoint in &resolved.endpoints {
            assert_ne!(endpoint.address.port(), 0, "{endpoint:?}: port 0");
            if let PortSpec::Number(n) = spec {
                assert_eq!(endpoint.address.port(), *n, "{endpoint:?} for port {n}");
            }
        }
    }
}

/// Reads `data` as text lines and maps them as the DNS registry maps an answer:
/// `SRV <priority> <weight> <port> <target>` adds a record, `A <target> <ip>` (or `AAAA`)
/// an address of a target, `W <w> <w> ...` checks `tier_weights` on its own. Other lines
/// are ignored.
pub fn dns_answer(data: &[u8]) {
    use switchyard_dns::answer::{srv_endpoints, tier_weights, Srv};
    if data.len() > MAX_INPUT {
        return;
    }
    let text = String::from_utf8_lossy(data);
    let mut records = Vec::new();
    let mut addresses = HashMap::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["SRV", priority, weight, port, target] => {
                let (Ok(priority), Ok(weight), Ok(port), Ok(target)) = (
                    priority.parse(),
                    weight.parse(),
                    port.parse(),
                    target.parse(),
                ) else {
                    continue;
                };
                records.push(Srv {
                    priority,
                    weight,
                    port,
                    target,
                });
            }
            ["A" | "AAAA", target, ip] => {
                let (Ok(target), Ok(ip)) = (target.parse(), ip.parse::<IpAddr>()) else {
                    continue;
                };
                addresses.entry(target).or_insert_with(Vec::new).push(ip);
            }
            ["W", weights @ ..] => {
                let weights: Vec<u16> = weights.iter().filter_map(|w| w.parse().ok()).collect();
                let mapped = tier_weights(&weights);
                assert_eq!(mapped.len(), weights.len(), "tier_weights({weights:?})");
                assert!(
                    mapped.iter().all(|w| *w > 0),
                    "tier_weights({weights:?}) = {mapped:?}: a zero weight"
                );
            }
            _ => {}
        }
    }
    let endpoints = srv_endpoints(&records, &addresses);
    check_sorted_unique(&endpoints, "SRV");
    for endpoint in &endpoints {
        assert!(endpoint.weight > 0, "{endpoint:?}: weight 0");
        // Every endpoint comes from a record whose target has this address, and takes the
        // lowest priority among such records.
        let sources: Vec<&Srv> = records
            .iter()
            .filter(|r| {
                r.port == endpoint.address.port()
                    && addresses
                        .get(&r.target)
                        .is_some_and(|ips: &Vec<IpAddr>| ips.contains(&endpoint.address.ip()))
            })
            .collect();
        let lowest = sources.iter().map(|r| u32::from(r.priority)).min();
        assert_eq!(
            lowest,
            Some(endpoint.priority),
            "{endpoint:?}: not the lowest priority of its records {sources:?}"
        );
    }
}

/// Parses `data` as a Prometheus file_sd file.
pub fn file_sd(data: &[u8]) {
    if data.len() > MAX_INPUT {
        return;
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let ctx = RegistryContext::new("fuzz");
    let Ok(services) = switchyard_file::parse_file_sd(text, &ctx) else {
        return;
    };
    for (service, endpoints) in &services {
        for endpoint in endpoints {
            assert_ne!(
                endpoint.address.port(),
                0,
                "service {service}: {endpoint:?} has port 0"
            );
        }
    }
}

/// Endpoints come sorted by address, each address once.
fn check_sorted_unique(endpoints: &[Endpoint], what: &str) {
    for pair in endpoints.windows(2) {
        assert!(
            pair[0].address < pair[1].address,
            "{what}: endpoints not sorted and unique: {} then {}",
            pair[0].address,
            pair[1].address
        );
    }
}

// === router ===

/// The route table every [`router`] input starts with.
fn fixed_routes() -> Vec<RouteMatch> {
    let route = |host: Option<&str>,
                 path: PathMatch,
                 methods: &[Method],
                 headers: &[(&str, Option<&str>)]| RouteMatch {
        host: host.map(str::to_owned),
        path,
        methods: methods.to_vec(),
        headers: headers
            .iter()
            .map(|(name, value)| {
                let name = HeaderName::from_bytes(name.as_bytes()).expect("valid name");
                let cond = match value {
                    Some(v) => HeaderMatch::Exact(HeaderValue::from_str(v).expect("valid value")),
                    None => HeaderMatch::Present,
                };
                (name, cond)
            })
            .collect(),
    };
    let prefix = |p: &str| PathMatch::Prefix(p.into());
    let exact = |p: &str| PathMatch::Exact(p.into());
    vec![
        route(None, prefix("/"), &[], &[]),
        route(None, prefix("/orders"), &[], &[]),
        route(None, exact("/orders/special"), &[], &[]),
        route(Some("api.example.com"), prefix("/orders"), &[], &[]),
        route(Some("*.example.com"), prefix("/"), &[], &[]),
        route(None, prefix("/orders"), &[Method::POST], &[]),
        route(None, prefix("/orders"), &[], &[("x-canary", Some("1"))]),
        route(Some("*.deep.example.com"), prefix("/"), &[], &[]),
        route(
            Some("Only.Example"),
            exact("/x"),
            &[Method::GET, Method::HEAD],
            &[("x-key", None)],
        ),
        route(None, prefix("/é"), &[], &[]),
    ]
}

/// Reads `data` as text lines, compiles a table and looks requests up in it, comparing
/// `Router::find` with a straightforward reference matcher written from the router's
/// documented rules.
///
/// - `R <host|-> <=path|prefix> <METHOD,...|-> <name[=value],...|->` adds a route after the
///   fixed table;
/// - `H <name>: <value>` adds a request header;
/// - `Q <METHOD> <host|-> <path>` looks a request up with the headers so far;
/// - any other line is looked up as a GET path with no host, and as a host for `/`.
pub fn router(data: &[u8]) {
    if data.len() > MAX_INPUT {
        return;
    }
    let text = String::from_utf8_lossy(data);
    let mut routes = fixed_routes();
    let mut headers = HeaderMap::new();
    let mut queries: Vec<(Method, Option<String>, String)> = Vec::new();
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if let Some(rest) = line.strip_prefix("R ") {
            if let Some(route) = parse_route(rest) {
                if routes.len() < 256 {
                    routes.push(route);
                }
            }
        } else if let Some(rest) = line.strip_prefix("H ") {
            if let Some((name, value)) = rest.split_once(':') {
                if let (Ok(name), Ok(value)) = (
                    HeaderName::from_bytes(name.trim().as_bytes()),
                    HeaderValue::from_str(value.trim()),
                ) {
                    headers.append(name, value);
                }
            }
        } else if let Some(rest) = line.strip_prefix("Q ") {
            let mut words = rest.splitn(3, ' ');
            let (Some(method), Some(host), Some(path)) = (words.next(), words.next(), words.next())
            else {
                continue;
            };
            let Ok(method) = Method::from_bytes(method.as_bytes()) else {
                continue;
            };
            let host = (host != "-").then(|| host.to_owned());
            queries.push((method, host, path.to_owned()));
        } else {
            queries.push((Method::GET, None, line.to_owned()));
            queries.push((Method::GET, Some(line.to_owned()), "/".to_owned()));
        }
    }
    let compiled = Router::new(&routes);
    for (method, host, path) in queries.iter().take(256) {
        let found = compiled.find(&routes, host.as_deref(), path, method, &headers);
        let expected = reference_find(&routes, host.as_deref(), path, method, &headers);
        assert_eq!(
            found, expected,
            "Router::find({host:?}, {path:?}, {method}, {headers:?}) over {routes:#?}"
        );
    }
}

/// `<host|-> <=path|prefix> <METHOD,...|-> <name[=value],...|->`.
fn parse_route(line: &str) -> Option<RouteMatch> {
    let mut words = line.split(' ');
    let host = words.next()?;
    let path = words.next()?;
    let methods = words.next().unwrap_or("-");
    let headers = words.next().unwrap_or("-");
    let methods = if methods == "-" {
        Vec::new()
    } else {
        methods
            .split(',')
            .map(|m| Method::from_bytes(m.as_bytes()).ok())
            .collect::<Option<Vec<_>>>()?
    };
    let headers = if headers == "-" {
        Vec::new()
    } else {
        headers
            .split(',')
            .map(|h| {
                let (name, cond) = match h.split_once('=') {
                    Some((name, value)) => {
                        (name, HeaderMatch::Exact(HeaderValue::from_str(value).ok()?))
                    }
                    None => (h, HeaderMatch::Present),
                };
                Some((HeaderName::from_bytes(name.as_bytes()).ok()?, cond))
            })
            .collect::<Option<Vec<_>>>()?
    };
    Some(RouteMatch {
        host: (host != "-").then(|| host.to_owned()),
        path: match path.strip_prefix('=') {
            Some(exact) => PathMatch::Exact(exact.to_owned()),
            None => PathMatch::Prefix(path.to_owned()),
        },
        methods,
        headers,
    })
}

/// The router's rules, written plainly: host buckets in order (exact host, wildcard
/// suffixes longest first, then routes without a host); within a bucket the exact path,
/// then prefixes longest first; among equals the most specific, then config order; the
/// first whose methods and headers match.
fn reference_find(
    routes: &[RouteMatch],
    host: Option<&str>,
    path: &str,
    method: &Method,
    headers: &HeaderMap,
) -> Option<usize> {
    let host = host
        .map(reference_strip_port)
        .unwrap_or("")
        .to_ascii_lowercase();
    let host = host.strip_suffix('.').unwrap_or(&host).to_owned();
    // Bucket keys, in lookup order.
    #[derive(PartialEq)]
    enum Bucket {
        Host(String),
        Wildcard(String),
        Any,
    }
    let bucket_of = |route: &RouteMatch| match &route.host {
        None => Bucket::Any,
        Some(h) => {
            let h = h.to_ascii_lowercase();
            match h.strip_prefix('*') {
                Some(suffix) => Bucket::Wildcard(suffix.to_owned()),
                None => Bucket::Host(h),
            }
        }
    };
    let mut order = Vec::new();
    if !host.is_empty() {
        order.push(Bucket::Host(host.clone()));
        let mut suffixes: Vec<String> = routes
            .iter()
            .filter_map(|r| match bucket_of(r) {
                Bucket::Wildcard(s) if host.len() > s.len() && host.ends_with(&s) => Some(s),
                _ => None,
            })
            .collect();
        suffixes.sort_by_key(|s| std::cmp::Reverse(s.len()));
        suffixes.dedup();
        order.extend(suffixes.into_iter().map(Bucket::Wildcard));
    }
    order.push(Bucket::Any);
    let specificity = |r: &RouteMatch| usize::from(!r.methods.is_empty()) + r.headers.len();
    let rest_matches = |r: &RouteMatch| {
        (r.methods.is_empty() || r.methods.contains(method))
            && r.headers.iter().all(|(name, cond)| match cond {
                HeaderMatch::Present => headers.contains_key(name),
                HeaderMatch::Exact(v) => headers.get_all(name).iter().any(|h| h == v),
            })
    };
    for bucket in order {
        let members: Vec<usize> = (0..routes.len())
            .filter(|&i| bucket_of(&routes[i]) == bucket)
            .collect();
        // Path groups in order: exact, then each matching prefix length, longest first.
        let mut groups: Vec<Vec<usize>> = vec![members
            .iter()
            .copied()
            .filter(|&i| routes[i].path == PathMatch::Exact(path.to_owned()))
            .collect()];
        let mut lengths: Vec<usize> = members
            .iter()
            .filter_map(|&i| match &routes[i].path {
                PathMatch::Prefix(p) if path.starts_with(p.as_str()) => Some(p.len()),
                _ => None,
            })
            .collect();
        lengths.sort_unstable_by(|a, b| b.cmp(a));
        lengths.dedup();
        for len in lengths {
            groups.push(
                members
                    .iter()
                    .copied()
                    .filter(|&i| {
                        matches!(&routes[i].path, PathMatch::Prefix(p) if p.len() == len && path.starts_with(p.as_str()))
                    })
                    .collect(),
            );
        }
        for mut group in groups {
            group.sort_by_key(|&i| (std::cmp::Reverse(specificity(&routes[i])), i));
            if let Some(found) = group.into_iter().find(|&i| rest_matches(&routes[i])) {
                return Some(found);
            }
        }
    }
    None
}

/// `example.com:8080` → `example.com`; `[::1]:8080` → `[::1]` (as the router documents).
fn reference_strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

// === nomad_service, nacos_instances, eureka_apps ===

/// Decodes `data` as a `/v1/service/<name>` answer: each entry (or the value itself) with
/// and without a wanted tag.
pub fn nomad_service(data: &[u8]) {
    use switchyard_nomad::decode::{decode_entry, Decoded, META_TAGS};
    if data.len() > MAX_INPUT {
        return;
    }
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let entries = match &value {
        serde_json::Value::Array(entries) => entries.iter().collect::<Vec<_>>(),
        other => vec![other],
    };
    let wanted = ["v2".to_owned()];
    for entry in entries {
        for tags in [&wanted[..0], &wanted[..]] {
            if let Decoded::Serve(candidate) = decode_entry(entry, tags) {
                assert_ne!(candidate.port, 0, "{candidate:?}: port 0");
                assert!(!candidate.host.is_empty(), "{candidate:?}: no host");
                if !tags.is_empty() {
                    let listed = candidate.metadata.get(META_TAGS).map(String::as_str);
                    assert!(
                        listed.is_some_and(|l| l.split(',').any(|t| t == "v2")),
                        "{candidate:?}: served without the wanted tag"
                    );
                }
            }
        }
    }
}

/// Decodes `data` as a Nacos instance-list answer and each host in it: only healthy,
/// enabled instances of positive weight serve, with a port and a weight of at least 1.
pub fn nacos_instances(data: &[u8]) {
    use switchyard_nacos::decode::{decode_host, hosts, Decoded};
    if data.len() > MAX_INPUT {
        return;
    }
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let Ok(list) = hosts(&value) else {
        return;
    };
    for host in list {
        if let Decoded::Serve(candidate) = decode_host(host) {
            assert_ne!(candidate.port, 0, "{candidate:?}: port 0");
            assert!(candidate.weight >= 1, "{candidate:?}: weight 0 served");
            assert_ne!(host["healthy"], false, "{candidate:?}: unhealthy served");
            assert_ne!(host["enabled"], false, "{candidate:?}: disabled served");
        }
    }
}

/// Decodes `data` as JSON documents separated by a line holding `---`: the first an
/// `/apps` answer, the others `/apps/delta` answers applied in turn. After each, the local
/// hash code must count every instance once, and every served instance must be `UP`.
pub fn eureka_apps(data: &[u8]) {
    use switchyard_eureka::config::Prefer;
    use switchyard_eureka::decode::{apply_delta, decode_instance, hash_code, parse_apps, Decoded};
    if data.len() > MAX_INPUT {
        return;
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut documents = text.split("\n---\n");
    let Some(Ok(full)) = documents
        .next()
        .map(serde_json::from_str::<serde_json::Value>)
    else {
        return;
    };
    let Ok((mut apps, _)) = parse_apps(&full) else {
        return;
    };
    let check = |apps: &switchyard_eureka::decode::Apps| {
        let total: usize = apps.values().map(|a| a.len()).sum();
        let counted: usize = hash_code(apps)
            .split('_')
            .collect::<Vec<_>>()
            .chunks(2)
            .filter_map(|pair| pair.get(1)?.parse::<usize>().ok())
            .sum();
        assert!(
            counted <= total,
            "hash code counts {counted} of {total} instances"
        );
        for instance in apps.values().flat_map(|a| a.values()) {
            for prefer in [Prefer::Ip, Prefer::Hostname] {
                if let Decoded::Serve(candidate) = decode_instance(instance, prefer) {
                    assert_eq!(instance["status"], "UP", "{candidate:?}: not UP but served");
                    assert_ne!(candidate.port, 0, "{candidate:?}: port 0");
                }
            }
        }
    };
    check(&apps);
    for document in documents {
        let Ok(delta) = serde_json::from_str::<serde_json::Value>(document) else {
            continue;
        };
        if apply_delta(&mut apps, &delta).is_ok() {
            check(&apps);
        }
    }
}

// === zookeeper_node ===

/// Decodes `data` as a Curator instance node's data and, when it is text, as a Dubbo
/// provider node's name.
pub fn zookeeper_node(data: &[u8]) {
    use switchyard_zookeeper::decode::{decode_curator, decode_dubbo, Decoded};
    if data.len() > MAX_INPUT {
        return;
    }
    let check = |decoded: Decoded, layout: &str| {
        if let Decoded::Instance(instance) = decoded {
            assert_ne!(instance.port, 0, "{layout}: {instance:?} has port 0");
            assert!(
                !instance.host.is_empty(),
                "{layout}: {instance:?} has no host"
            );
            assert!(
                !instance.host.starts_with('['),
                "{layout}: {instance:?} kept its brackets"
            );
        }
    };
    check(decode_curator(data), "curator");
    if let Ok(text) = std::str::from_utf8(data) {
        check(decode_dubbo(text), "dubbo");
    }
}

// === http_sd ===

/// Decodes an inventory answer: the first line is the `Content-Type`, the rest the body.
pub fn http_sd(data: &[u8]) {
    if data.len() > MAX_INPUT {
        return;
    }
    let (head, body) = match data.iter().position(|b| *b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &b""[..]),
    };
    let Ok(content_type) = std::str::from_utf8(head) else {
        return;
    };
    let ctx = RegistryContext::new("fuzz");
    let Ok(services) = switchyard_http_sd::answer::decode_answer(content_type, body, &ctx) else {
        return;
    };
    assert!(
        switchyard_http_sd::answer::is_json(content_type),
        "accepted Content-Type {content_type:?}"
    );
    for (service, endpoints) in &services {
        for endpoint in endpoints {
            assert_ne!(
                endpoint.address.port(),
                0,
                "service {service}: {endpoint:?} has port 0"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every target takes the empty input and a few plain ones without panicking.
    #[test]
    fn targets_accept_plain_inputs() {
        for (name, target) in TARGETS {
            for input in [
                &b""[..],
                b"\0",
                b"[]",
                b"{}",
                b"\xff\xfe",
                b"R - / - -\nQ GET - /",
            ] {
                target(input);
                let _ = name;
            }
        }
    }

    /// The reference matcher agrees with the router's own unit-test expectations.
    #[test]
    fn reference_router_examples() {
        let routes = fixed_routes();
        let none = HeaderMap::new();
        let find = |host: Option<&str>, method: Method, path: &str, headers: &HeaderMap| {
            reference_find(&routes, host, path, &method, headers)
        };
        assert_eq!(find(None, Method::GET, "/", &none), Some(0));
        assert_eq!(find(None, Method::GET, "/orders/1", &none), Some(1));
        assert_eq!(find(None, Method::GET, "/orders/special", &none), Some(2));
        assert_eq!(
            find(Some("API.Example.com:8080"), Method::GET, "/orders", &none),
            Some(3)
        );
        assert_eq!(
            find(Some("www.example.com"), Method::GET, "/orders", &none),
            Some(4)
        );
        assert_eq!(
            find(Some("a.deep.example.com"), Method::GET, "/", &none),
            Some(7)
        );
        assert_eq!(find(None, Method::POST, "/orders", &none), Some(5));
        let mut canary = HeaderMap::new();
        canary.insert("x-canary", HeaderValue::from_static("1"));
        assert_eq!(find(None, Method::GET, "/orders", &canary), Some(6));
        assert_eq!(
            find(Some("only.example"), Method::GET, "/x", &none),
            Some(0)
        );
    }
}
