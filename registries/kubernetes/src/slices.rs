//! From a service's EndpointSlices to its endpoint set, and from two sets to the update
//! that turns one into the other. Pure functions: no client, no I/O.
//!
//! The rules are kube-proxy's (discovery.k8s.io/v1 reference, "EndpointSlices" concept page):
//! - a service's endpoints are the union of all slices labelled
//!   `kubernetes.io/service-name=<name>` in its namespace, each endpoint identified by its
//!   first address (consumers may ignore the others);
//! - an endpoint serves when `conditions.ready` is true or absent; when none is ready, the
//!   endpoints that are `serving` (absent = true) and `terminating` serve instead
//!   (kube-proxy's terminating fallback, KEP-1669);
//! - slices of `addressType` IPv4 and IPv6 are used, one family at a time as kube-proxy
//!   does ([`AddressFamily`]: IPv4 when the Service has IPv4 slices, unless configured), so
//!   a dual-stack Service's pods are not served twice; FQDN slices are skipped (no
//!   semantics are defined for them);
//! - the port is picked per slice, by name or number, or the slice's only port.
//!
//! [`resolve`] (with [`crate::PortSpec`]) is the decoder's public face, for fuzzing and tools.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use k8s_openapi::api::discovery::v1::EndpointSlice;
use switchyard_registry::{diff_sorted, Endpoint, Update, META_HINTS_FOR_ZONES};

use crate::settings::{AddressFamily, PortSpec};

/// The endpoints of one service and what was wrong on the way.
#[derive(Debug, Default, PartialEq)]
pub struct Resolved {
    /// The serving endpoints, sorted by address.
    pub endpoints: Vec<Endpoint>,
    /// Malformed entries that were skipped (counted as registry errors).
    pub malformed: Vec<String>,
    /// Slices skipped for a reason that is not an error (FQDN, no such port).
    pub skipped: Vec<String>,
}

/// Resolves the endpoints of one service from its slices, with the default family (IPv4
/// when there are IPv4 slices, else IPv6). See [`resolve_family`].
pub fn resolve<'a>(
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    port: &PortSpec,
) -> Resolved {
    resolve_family(slices, port, None)
}

/// Resolves the endpoints of one service from its slices (keyed by slice name), serving
/// the slices of `family` (`None`: IPv4 when the Service has IPv4 slices, else IPv6). Never
/// panics, whatever the slices hold; the endpoints come sorted by address, each once.
pub fn resolve_family<'a>(
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    port: &PortSpec,
    family: Option<AddressFamily>,
) -> Resolved {
    let slices: Vec<&EndpointSlice> = slices.into_iter().collect();
    let family = family.unwrap_or_else(|| {
        if slices.iter().any(|s| s.address_type == "IPv4") {
            AddressFamily::Ipv4
        } else {
            AddressFamily::Ipv6
        }
    });
    // With `any`, IPv4 slices first, so that a pod's IPv4 address is the one kept.
    let mut slices = slices;
    slices.sort_by_key(|s| s.address_type != "IPv4");
    let mut out = Resolved::default();
    // address -> (endpoint, ready, serving-and-terminating)
    let mut seen: BTreeMap<SocketAddr, (Endpoint, bool, bool)> = BTreeMap::new();
    // Pods (targetRef kind/namespace/name) served by an IPv4 address, for `any`.
    let mut v4_pods: std::collections::HashSet<String> = std::collections::HashSet::new();
    for slice in slices {
        let slice_name = slice.metadata.name.as_deref().unwrap_or("?");
        let wanted = !matches!(
            (family, slice.address_type.as_str()),
            (AddressFamily::Ipv4, "IPv6") | (AddressFamily::Ipv6, "IPv4")
        );
        if !wanted {
            out.skipped.push(format!(
                "EndpointSlice {slice_name}: addressType {} is not the family served ({family:?})",
                slice.address_type
            ));
            continue;
        }
        let is_v6 = match slice.address_type.as_str() {
            "IPv4" => false,
            "IPv6" => true,
            "FQDN" => {
                out.skipped.push(format!(
                    "EndpointSlice {slice_name}: addressType FQDN is not used"
                ));
                continue;
            }
            other => {
                out.malformed.push(format!(
                    "EndpointSlice {slice_name}: unknown addressType {other:?}"
                ));
                continue;
            }
        };
        let number = match pick_port(slice, port) {
            Ok(Some(number)) => number,
            Ok(None) => {
                out.skipped.push(format!(
                    "EndpointSlice {slice_name}: {}",
                    missing_port(slice, port)
                ));
                continue;
            }
            Err(problem) => {
                out.malformed
                    .push(format!("EndpointSlice {slice_name}: {problem}"));
                continue;
            }
        };
        // The port's appProtocol (`kubernetes.io/h2c`, `grpc`, ...) as the endpoints'
        // `protocol` label, which `protocol = "auto"` upstreams read.
        let app_protocol = slice
            .ports
            .iter()
            .flatten()
            .find(|p| p.port == Some(i32::from(number)))
            .and_then(|p| p.app_protocol.clone());
        for endpoint in slice.endpoints.iter().flatten() {
            let Some(first) = endpoint.addresses.first() else {
                out.malformed.push(format!(
                    "EndpointSlice {slice_name}: an endpoint has no address"
                ));
                continue;
            };
            let ip: IpAddr = match first.parse() {
                Ok(ip) => ip,
                Err(_) => {
                    out.malformed.push(format!(
                        "EndpointSlice {slice_name}: {first:?} is not an IP address"
                    ));
                    continue;
                }
            };
            if ip.is_ipv6() != is_v6 {
                out.malformed.push(format!(
                    "EndpointSlice {slice_name}: {first} does not match addressType {}",
                    slice.address_type
                ));
                continue;
            }
            let pod = endpoint.target_ref.as_ref().and_then(|target| {
                Some(format!(
                    "{}/{}/{}",
                    target.kind.as_deref().unwrap_or("Pod"),
                    target.namespace.as_deref().unwrap_or(""),
                    target.name.as_deref()?
                ))
            });
            match (&pod, is_v6) {
                (Some(pod), false) => {
                    v4_pods.insert(pod.clone());
                }
                // The same pod's other family: already served (only with `any`).
                (Some(pod), true) if v4_pods.contains(pod) => continue,
                _ => {}
            }
            let conditions = endpoint.conditions.clone().unwrap_or_default();
            let ready = conditions.ready.unwrap_or(true);
            let fallback =
                conditions.serving.unwrap_or(true) && conditions.terminating.unwrap_or(false);
            if !ready && !fallback {
                continue;
            }
            let address = SocketAddr::new(ip, number);
            let mut e = Endpoint::new(address);
            e.set_zone(endpoint.zone.clone());
            if let Some(node) = &endpoint.node_name {
                e.metadata_mut().insert("node".into(), node.clone());
            }
            if let Some(target) = &endpoint.target_ref {
                if let Some(name) = &target.name {
                    let kind = target.kind.as_deref().unwrap_or("Pod").to_lowercase();
                    e.metadata_mut().insert(kind, name.clone());
                }
            }
            if !ready {
                e.metadata_mut().insert("terminating".into(), "true".into());
            }
            // Topology hints (discovery.k8s.io/v1 EndpointHints.forZones), for zone-aware
            // routing as kube-proxy applies them.
            let zones: Vec<&str> = endpoint
                .hints
                .iter()
                .flat_map(|hints| hints.for_zones.iter().flatten())
                .map(|zone| zone.name.as_str())
                .collect();
            if !zones.is_empty() {
                e.metadata_mut()
                    .insert(META_HINTS_FOR_ZONES.into(), zones.join(","));
            }
            if let Some(protocol) = &app_protocol {
                e.metadata_mut().insert("protocol".into(), protocol.clone());
            }
            // The same address in two slices (a pod moving between slices): ready wins.
            match seen.get(&address) {
                Some((_, true, _)) => {}
                _ => {
                    seen.insert(address, (e, ready, fallback));
                }
            }
        }
    }
    let any_ready = seen.values().any(|(_, ready, _)| *ready);
    out.endpoints = seen
        .into_values()
        .filter(|(_, ready, fallback)| if any_ready { *ready } else { *fallback })
        .map(|(e, _, _)| e)
        .collect();
    out
}

/// The port number of `slice` for `spec`: `Ok(None)` when the slice has no such port.
fn pick_port(slice: &EndpointSlice, spec: &PortSpec) -> Result<Option<u16>, String> {
    let ports = slice.ports.as_deref().unwrap_or_default();
    let number = |p: i32| {
        u16::try_from(p)
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("port {p} is out of range"))
    };
    match spec {
        PortSpec::Name(name) => match ports
            .iter()
            .find(|p| p.name.as_deref().unwrap_or("") == name)
        {
            Some(p) => match p.port {
                Some(n) => number(n).map(Some),
                None => Err(format!("port {name:?} has no number")),
            },
            None => Ok(None),
        },
        PortSpec::Number(n) => {
            // A port entry without a number means "all ports" (EndpointPort reference).
            let found = ports
                .iter()
                .any(|p| p.port == Some(i32::from(*n)) || p.port.is_none());
            Ok(found.then_some(*n))
        }
        PortSpec::Only => match ports {
            [] => Ok(None),
            [only] => match only.port {
                Some(n) => number(n).map(Some),
                None => Err("its only port has no number; set `port` in the source".to_owned()),
            },
            several => Err(format!(
                "it has several ports ({}); set `port` in the source to pick one by name or number",
                several
                    .iter()
                    .map(|p| match (&p.name, p.port) {
                        (Some(name), Some(n)) if !name.is_empty() => format!("{name}={n}"),
                        (_, Some(n)) => n.to_string(),
                        (_, None) => "all".to_owned(),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        },
    }
}

fn missing_port(slice: &EndpointSlice, spec: &PortSpec) -> String {
    let ports: Vec<String> = slice
        .ports
        .iter()
        .flatten()
        .map(|p| {
            format!(
                "{}={}",
                p.name.as_deref().unwrap_or(""),
                p.port.map_or("all".into(), |n| n.to_string())
            )
        })
        .collect();
    match spec {
        PortSpec::Number(n) => format!(
            "no port {n} (ports: {}); a numeric `port` is the endpoints' port (the Service's targetPort), not the Service port: use the port name to select by Service port",
            ports.join(", ")
        ),
        PortSpec::Name(name) => format!("no port named {name:?} (ports: {})", ports.join(", ")),
        PortSpec::Only => "it has no ports".to_owned(),
    }
}

/// What a watcher last told its consumer about a service.
#[derive(Clone, Debug, PartialEq)]
pub enum Published {
    /// No EndpointSlice carries the service's label.
    Missing,
    /// The endpoint set, sorted by address. Shared with the updates sent (and so with the
    /// upstream cache): see [`Published::set`].
    Set(Vec<Arc<Endpoint>>),
}

impl Published {
    /// A set of freshly resolved endpoints (sorted by address) that keeps `before`'s
    /// allocation for every endpoint that did not change, so that the copy held here and the
    /// one the cache holds stay the same one.
    pub fn set(before: Option<&Published>, now: Vec<Endpoint>) -> Published {
        let old: &[Arc<Endpoint>] = match before {
            Some(Published::Set(old)) => old,
            _ => &[],
        };
        let mut old = old.iter().peekable();
        let shared = now
            .into_iter()
            .map(|endpoint| {
                while old.next_if(|o| o.address < endpoint.address).is_some() {}
                match old.next_if(|o| o.address == endpoint.address) {
                    Some(o) if **o == endpoint => Arc::clone(o),
                    _ => Arc::new(endpoint),
                }
            })
            .collect();
        Published::Set(shared)
    }
}

/// The updates that take a consumer from `before` (nothing yet: `None`) to `now`; empty
/// when nothing changed. After a relist (`relisted`) a change is sent as one `Reset`;
/// otherwise as `Add` (new or changed endpoints) then `Remove`, so that a replaced endpoint
/// never leaves the set empty in between.
pub fn diff(before: Option<&Published>, now: &Published, relisted: bool) -> Vec<Update> {
    match (before, now) {
        (Some(b), n) if b == n => Vec::new(),
        (_, Published::Missing) => vec![Update::DoesNotExist],
        (None | Some(Published::Missing), Published::Set(set)) => vec![Update::Reset(set.clone())],
        (Some(Published::Set(_)), Published::Set(set)) if relisted => {
            vec![Update::Reset(set.clone())]
        }
        (Some(Published::Set(old)), Published::Set(set)) => diff_sorted(old, set),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn slice(value: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(value).unwrap()
    }

    fn ep(
        ip: &str,
        ready: Option<bool>,
        serving: Option<bool>,
        terminating: Option<bool>,
    ) -> serde_json::Value {
        json!({"addresses": [ip], "conditions": {"ready": ready, "serving": serving, "terminating": terminating}})
    }

    fn check(slices: &[serde_json::Value], port: PortSpec, expected: &[&str], malformed: usize) {
        check_family(slices, port, None, expected, malformed);
    }

    fn check_family(
        slices: &[serde_json::Value],
        port: PortSpec,
        family: Option<AddressFamily>,
        expected: &[&str],
        malformed: usize,
    ) {
        let slices: Vec<EndpointSlice> = slices.iter().cloned().map(slice).collect();
        let resolved = resolve_family(&slices, &port, family);
        let got: Vec<String> = resolved
            .endpoints
            .iter()
            .map(|e| e.address.to_string())
            .collect();
        assert_eq!(got, expected, "{resolved:?}");
        assert_eq!(resolved.malformed.len(), malformed, "{resolved:?}");
    }

    fn web(name: &str, endpoints: Vec<serde_json::Value>) -> serde_json::Value {
        json!({"metadata": {"name": name}, "addressType": "IPv4",
               "ports": [{"name": "http", "port": 8080}], "endpoints": endpoints})
    }

    #[test]
    fn readiness_and_terminating_fallback() {
        let t = Some(true);
        let f = Some(false);
        // Ready (absent = ready) serve; not-ready do not.
        check(
            &[web(
                "a",
                vec![
                    ep("10.0.0.1", None, None, None),
                    ep("10.0.0.2", f, f, None),
                    ep("10.0.0.3", t, None, None),
                ],
            )],
            PortSpec::Only,
            &["10.0.0.1:8080", "10.0.0.3:8080"],
            0,
        );
        // A ready endpoint hides the terminating ones.
        check(
            &[web(
                "a",
                vec![ep("10.0.0.1", t, t, None), ep("10.0.0.2", f, t, t)],
            )],
            PortSpec::Only,
            &["10.0.0.1:8080"],
            0,
        );
        // None ready: serving and terminating ones serve, not-serving ones do not.
        check(
            &[web(
                "a",
                vec![
                    ep("10.0.0.1", f, f, t),
                    ep("10.0.0.2", f, t, t),
                    ep("10.0.0.3", f, None, t),
                ],
            )],
            PortSpec::Only,
            &["10.0.0.2:8080", "10.0.0.3:8080"],
            0,
        );
        // None ready, none terminating: empty.
        check(
            &[web("a", vec![ep("10.0.0.1", f, f, f)])],
            PortSpec::Only,
            &[],
            0,
        );
        // Null endpoints.
        check(
            &[
                json!({"metadata": {"name": "a"}, "addressType": "IPv4", "endpoints": null, "ports": null}),
            ],
            PortSpec::Only,
            &[],
            0,
        );
    }

    #[test]
    fn slices_merge_and_dedupe() {
        check(
            &[
                web("a", vec![ep("10.0.0.2", None, None, None)]),
                web(
                    "b",
                    vec![
                        ep("10.0.0.1", None, None, None),
                        ep("10.0.0.2", Some(false), None, None),
                    ],
                ),
            ],
            PortSpec::Only,
            &["10.0.0.1:8080", "10.0.0.2:8080"],
            0,
        );
    }

    #[test]
    fn ports_by_name_number_and_only() {
        let two = json!({"metadata": {"name": "m"}, "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080}, {"name": "metrics", "port": 9090}],
            "endpoints": [{"addresses": ["10.0.0.1"]}]});
        check(
            std::slice::from_ref(&two),
            PortSpec::Name("metrics".into()),
            &["10.0.0.1:9090"],
            0,
        );
        check(
            std::slice::from_ref(&two),
            PortSpec::Number(8080),
            &["10.0.0.1:8080"],
            0,
        );
        check(std::slice::from_ref(&two), PortSpec::Number(80), &[], 0);
        check(
            std::slice::from_ref(&two),
            PortSpec::Name("grpc".into()),
            &[],
            0,
        );
        // Several ports and no `port`: skipped, with an error.
        check(std::slice::from_ref(&two), PortSpec::Only, &[], 1);
        // An unnamed single port; "all ports" entries take the number asked for.
        let unnamed = json!({"metadata": {"name": "u"}, "addressType": "IPv4",
            "ports": [{"port": 7000}], "endpoints": [{"addresses": ["10.0.0.1"]}]});
        check(
            std::slice::from_ref(&unnamed),
            PortSpec::Only,
            &["10.0.0.1:7000"],
            0,
        );
        let all = json!({"metadata": {"name": "all"}, "addressType": "IPv4",
            "ports": [{"name": ""}], "endpoints": [{"addresses": ["10.0.0.1"]}]});
        check(
            std::slice::from_ref(&all),
            PortSpec::Number(1234),
            &["10.0.0.1:1234"],
            0,
        );
    }

    #[test]
    fn address_types() {
        let v6 = json!({"metadata": {"name": "v6"}, "addressType": "IPv6", "ports": [{"port": 80}],
            "endpoints": [{"addresses": ["fd00::1"], "zone": "z1", "nodeName": "n1",
                           "targetRef": {"kind": "Pod", "name": "web-0"}}, {"addresses": ["10.0.0.9"]}]});
        let fqdn = json!({"metadata": {"name": "f"}, "addressType": "FQDN", "ports": [{"port": 80}],
            "endpoints": [{"addresses": ["web.example.com"]}]});
        let bad = json!({"metadata": {"name": "b"}, "addressType": "IPv4", "ports": [{"port": 80}],
            "endpoints": [{"addresses": ["not-an-ip"]}, {"addresses": ["10.0.0.1"]}]});
        check_family(
            &[v6.clone(), fqdn.clone(), bad.clone()],
            PortSpec::Only,
            Some(AddressFamily::Any),
            &["10.0.0.1:80", "[fd00::1]:80"],
            2,
        );
        // The default serves the IPv4 slices of a Service that has some.
        check(
            &[v6.clone(), fqdn, bad],
            PortSpec::Only,
            &["10.0.0.1:80"],
            1,
        );
        let resolved = resolve(&[slice(v6)], &PortSpec::Only);
        let e = &resolved.endpoints[0];
        assert_eq!(e.zone(), Some("z1"));
        assert_eq!(e.metadata().get("node").map(String::as_str), Some("n1"));
        assert_eq!(e.metadata().get("pod").map(String::as_str), Some("web-0"));
    }

    #[test]
    fn topology_hints_are_kept_for_zone_aware_routing() {
        let hinted = json!({"metadata": {"name": "h"}, "addressType": "IPv4", "ports": [{"port": 80}],
            "endpoints": [{"addresses": ["10.0.0.1"], "zone": "a",
                           "hints": {"forZones": [{"name": "a"}, {"name": "b"}]}},
                          {"addresses": ["10.0.0.2"], "zone": "b"}]});
        let resolved = resolve(&[slice(hinted)], &PortSpec::Only);
        let hints: Vec<Option<&str>> = resolved
            .endpoints
            .iter()
            .map(|e| e.metadata().get(META_HINTS_FOR_ZONES).map(String::as_str))
            .collect();
        assert_eq!(hints, [Some("a,b"), None]);
        assert_eq!(resolved.endpoints[1].zone(), Some("b"));
    }

    #[test]
    fn dual_stack_services_serve_each_pod_once() {
        // As the EndpointSlice controller writes a dual-stack Service: one slice per family,
        // naming the same pods.
        let pod = |ip: &str, name: &str| json!({"addresses": [ip], "targetRef": {"kind": "Pod", "namespace": "shop", "name": name}});
        let v4 = json!({"metadata": {"name": "web-v4"}, "addressType": "IPv4", "ports": [{"port": 80}],
            "endpoints": [pod("10.0.0.1", "web-0"), pod("10.0.0.2", "web-1")]});
        let v6 = json!({"metadata": {"name": "web-v6"}, "addressType": "IPv6", "ports": [{"port": 80}],
            "endpoints": [pod("fd00::1", "web-0"), pod("fd00::2", "web-1"), pod("fd00::3", "web-2")]});
        let both = [v6.clone(), v4.clone()];
        check(&both, PortSpec::Only, &["10.0.0.1:80", "10.0.0.2:80"], 0);
        let only = |family| Some(family);
        check_family(
            &both,
            PortSpec::Only,
            only(AddressFamily::Ipv4),
            &["10.0.0.1:80", "10.0.0.2:80"],
            0,
        );
        check_family(
            &both,
            PortSpec::Only,
            only(AddressFamily::Ipv6),
            &["[fd00::1]:80", "[fd00::2]:80", "[fd00::3]:80"],
            0,
        );
        // Any: each pod once, its IPv4 address where it has one.
        check_family(
            &both,
            PortSpec::Only,
            only(AddressFamily::Any),
            &["10.0.0.1:80", "10.0.0.2:80", "[fd00::3]:80"],
            0,
        );
        // An IPv6-only Service serves its IPv6 slices by default.
        check(
            std::slice::from_ref(&v6),
            PortSpec::Only,
            &["[fd00::1]:80", "[fd00::2]:80", "[fd00::3]:80"],
            0,
        );
        // Asking for IPv4 of an IPv6-only Service: nothing (and no error).
        check_family(&[v6], PortSpec::Only, only(AddressFamily::Ipv4), &[], 0);
    }

    fn set(addrs: &[&str]) -> Published {
        Published::set(
            None,
            addrs
                .iter()
                .map(|a| Endpoint::new(a.parse().unwrap()))
                .collect(),
        )
    }

    #[test]
    fn a_new_set_keeps_the_allocation_of_every_unchanged_endpoint() {
        let ep = |a: &str| Endpoint::new(a.parse().unwrap());
        let before = set(&["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"]);
        let now = Published::set(
            Some(&before),
            vec![
                ep("10.0.0.0:80"),
                ep("10.0.0.1:80"),
                ep("10.0.0.2:80").with_weight(5),
                ep("10.0.0.3:80"),
            ],
        );
        let (Published::Set(old), Published::Set(new)) = (&before, &now) else {
            panic!("sets")
        };
        assert_eq!(new.len(), 4);
        assert!(Arc::ptr_eq(&new[1], &old[0]), "unchanged: shared");
        assert!(!Arc::ptr_eq(&new[2], &old[1]), "changed weight: a new one");
        assert_eq!(new[2].weight, 5);
        assert!(Arc::ptr_eq(&new[3], &old[2]), "unchanged: shared");
        // And the update sent for the change carries the new set's own allocation.
        let updates = diff(Some(&before), &now, false);
        let [Update::Add(added)] = updates.as_slice() else {
            panic!("{updates:?}")
        };
        assert_eq!(added.len(), 2);
        assert!(added.iter().any(|a| Arc::ptr_eq(a, &new[2])));
    }

    #[test]
    fn diffs() {
        let a = set(&["10.0.0.1:80"]);
        let ab = set(&["10.0.0.1:80", "10.0.0.2:80"]);
        let b = set(&["10.0.0.2:80"]);
        assert_eq!(
            diff(None, &Published::Missing, false),
            [Update::DoesNotExist]
        );
        assert!(matches!(diff(None, &a, false).as_slice(), [Update::Reset(v)] if v.len() == 1));
        assert!(diff(Some(&a), &a, true).is_empty());
        assert!(matches!(diff(Some(&a), &ab, false).as_slice(), [Update::Add(v)] if v.len() == 1));
        assert!(
            matches!(diff(Some(&ab), &a, false).as_slice(), [Update::Remove(v)] if v.len() == 1)
        );
        assert!(matches!(
            diff(Some(&a), &b, false).as_slice(),
            [Update::Add(_), Update::Remove(_)]
        ));
        assert!(matches!(
            diff(Some(&a), &b, true).as_slice(),
            [Update::Reset(_)]
        ));
        assert_eq!(
            diff(Some(&a), &Published::Missing, false),
            [Update::DoesNotExist]
        );
        assert!(matches!(
            diff(Some(&Published::Missing), &a, false).as_slice(),
            [Update::Reset(_)]
        ));
        // A changed zone on the same address is an Add (replace in place).
        let mut zoned = a.clone();
        if let Published::Set(v) = &mut zoned {
            Arc::make_mut(&mut v[0]).set_zone(Some("z".into()));
        }
        assert!(matches!(
            diff(Some(&a), &zoned, false).as_slice(),
            [Update::Add(_)]
        ));
    }
}
