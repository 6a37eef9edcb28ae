//! The EndpointSlices the EndpointSlice controller would write for a Service and its pods,
//! for tests to create through the API as the real controller does.
//!
//! Followed from kubernetes/kubernetes (pkg/controller/endpointslice and
//! staging/src/k8s.io/endpointslice, `utils.go` and `reconciler.go`):
//!
//! - `getAddressTypesForService`: one address type per entry of the Service's
//!   `spec.ipFamilies` (`IPv4` → `IPv4`, `IPv6` → `IPv6`); a dual-stack Service gets both;
//! - the reconciler runs once per address type, so each family has its own slices, every
//!   one naming the same pods;
//! - `getEndpointAddresses`: an endpoint's `addresses` are the pod's `status.podIPs` of the
//!   slice's family only;
//! - each slice holds at most `--max-endpoints-per-slice` endpoints (default 100), is
//!   labelled `kubernetes.io/service-name` and `endpointslice.kubernetes.io/managed-by:
//!   endpointslice-controller.k8s.io`, and named by `generateName: <service>-`;
//! - each endpoint carries `conditions` (`ready`, `serving`, `terminating`), `nodeName`,
//!   `zone` (the node's `topology.kubernetes.io/zone`) and a `targetRef` to its pod.

use std::net::IpAddr;

use serde_json::{json, Value};

/// The controller's default `--max-endpoints-per-slice`.
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;

/// An IP family of a Service (`spec.ipFamilies`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpFamily {
    /// `IPv4`.
    Ipv4,
    /// `IPv6`.
    Ipv6,
}

impl IpFamily {
    fn address_type(self) -> &'static str {
        match self {
            IpFamily::Ipv4 => "IPv4",
            IpFamily::Ipv6 => "IPv6",
        }
    }

    fn holds(self, ip: &IpAddr) -> bool {
        match self {
            IpFamily::Ipv4 => ip.is_ipv4(),
            IpFamily::Ipv6 => ip.is_ipv6(),
        }
    }
}

/// A pod as the controller sees it.
#[derive(Clone, Debug)]
pub struct Pod {
    /// `metadata.name`.
    pub name: String,
    /// `status.podIPs` (one per family on a dual-stack cluster).
    pub ips: Vec<IpAddr>,
    /// The Ready condition.
    pub ready: bool,
    /// The node's `topology.kubernetes.io/zone`, if any.
    pub zone: Option<String>,
}

impl Pod {
    /// A ready pod with `ips`, no zone.
    pub fn ready(name: &str, ips: &[IpAddr]) -> Pod {
        Pod {
            name: name.to_owned(),
            ips: ips.to_vec(),
            ready: true,
            zone: None,
        }
    }
}

/// The slices for Service `namespace/service` with `families` and `ports` (`(name, port)`)
/// selecting `pods`, as JSON objects to create (names made unique from `service`).
pub fn endpoint_slices(
    namespace: &str,
    service: &str,
    families: &[IpFamily],
    ports: &[(&str, u16)],
    pods: &[Pod],
) -> Vec<Value> {
    let mut slices = Vec::new();
    for family in families {
        let endpoints: Vec<Value> = pods
            .iter()
            .filter_map(|pod| {
                let addresses: Vec<String> = pod
                    .ips
                    .iter()
                    .filter(|ip| family.holds(ip))
                    .map(ToString::to_string)
                    .collect();
                // A pod without an IP of this family has no endpoint in its slices.
                let first = addresses.first()?.clone();
                let mut endpoint = json!({
                    "addresses": [first],
                    "conditions": {"ready": pod.ready, "serving": pod.ready, "terminating": false},
                    "nodeName": format!("node-{}", pod.name),
                    "targetRef": {"kind": "Pod", "namespace": namespace, "name": pod.name},
                });
                if let Some(zone) = &pod.zone {
                    endpoint["zone"] = json!(zone);
                }
                Some(endpoint)
            })
            .collect();
        for (i, chunk) in endpoints.chunks(MAX_ENDPOINTS_PER_SLICE.max(1)).enumerate() {
            slices.push(json!({
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": format!("{service}-{}{i}", family.address_type().to_lowercase()),
                    "namespace": namespace,
                    "labels": {
                        "kubernetes.io/service-name": service,
                        "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
                    },
                },
                "addressType": family.address_type(),
                "ports": ports.iter().map(|(name, port)| json!({"name": name, "port": port, "protocol": "TCP"})).collect::<Vec<_>>(),
                "endpoints": chunk,
            }));
        }
    }
    slices
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dual_stack_service_has_one_slice_per_family_naming_the_same_pods() {
        let pods = [
            Pod::ready(
                "web-0",
                &["10.0.0.1".parse().unwrap(), "fd00::1".parse().unwrap()],
            ),
            Pod::ready("web-1", &["10.0.0.2".parse().unwrap()]),
        ];
        let slices = endpoint_slices(
            "shop",
            "web",
            &[IpFamily::Ipv4, IpFamily::Ipv6],
            &[("http", 80)],
            &pods,
        );
        assert_eq!(slices.len(), 2);
        assert_eq!(slices[0]["addressType"], "IPv4");
        assert_eq!(slices[0]["endpoints"].as_array().unwrap().len(), 2);
        assert_eq!(slices[1]["addressType"], "IPv6");
        let v6 = slices[1]["endpoints"].as_array().unwrap();
        assert_eq!(v6.len(), 1);
        assert_eq!(v6[0]["addresses"][0], "fd00::1");
        assert_eq!(v6[0]["targetRef"]["name"], "web-0");
    }
}
