//! The catalog the double keeps: datacenters, each with its own Raft-like index, nodes,
//! services and checks; and the JSON shapes real Consul gives them.
//!
//! Index rules follow Consul's state store: every write bumps the datacenter's index; a
//! service's index is the last write touching one of its instances or their checks; a query
//! for a service that has no instance answers with the index of the whole services table
//! (so it wakes on any registration); an index is never below 1.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::watch;

/// A check status, as Consul spells it.
pub const PASSING: &str = "passing";
/// A check status, as Consul spells it.
pub const WARNING: &str = "warning";
/// A check status, as Consul spells it.
pub const CRITICAL: &str = "critical";

/// The state shared by every agent of one cluster (several datacenters, WAN-joined).
#[derive(Debug)]
pub struct Shared {
    state: Mutex<Cluster>,
    /// Bumped after every write and every rewind, so blocked queries re-check.
    changed: watch::Sender<u64>,
}

impl Shared {
    pub fn new() -> Arc<Shared> {
        Arc::new(Shared {
            state: Mutex::new(Cluster::default()),
            changed: watch::Sender::new(0),
        })
    }

    pub fn lock(&self) -> MutexGuard<'_, Cluster> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs a write and wakes the blocked queries.
    pub fn write<T>(&self, f: impl FnOnce(&mut Cluster) -> T) -> T {
        let out = f(&mut self.lock());
        self.changed.send_modify(|generation| *generation += 1);
        out
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

/// Every datacenter of the cluster, by name.
#[derive(Debug, Default)]
pub struct Cluster {
    pub datacenters: BTreeMap<String, Datacenter>,
}

/// One datacenter: its own index and catalog.
#[derive(Debug)]
pub struct Datacenter {
    pub name: String,
    /// The Raft index of the last write.
    pub index: u64,
    /// The index of the last write to the services table (register, deregister).
    pub services_index: u64,
    /// Per service name, the index of the last write touching it.
    pub service_index: HashMap<String, u64>,
    /// Bumped when the state is replaced wholesale (snapshot restore): blocked queries
    /// return at once, as Consul's abandoned watches do.
    pub abandon: u64,
    pub nodes: BTreeMap<String, Node>,
}

/// One node (one agent).
#[derive(Debug)]
pub struct Node {
    pub id: String,
    pub name: String,
    pub address: String,
    pub services: BTreeMap<String, Service>,
    pub checks: BTreeMap<String, Check>,
    pub create_index: u64,
    pub modify_index: u64,
}

/// One registered service instance.
#[derive(Clone, Debug)]
pub struct Service {
    pub id: String,
    pub name: String,
    pub tags: Vec<String>,
    pub address: String,
    pub port: i64,
    pub meta: BTreeMap<String, String>,
    pub weights: (i64, i64),
    pub enable_tag_override: bool,
    /// `Locality` (`{"Region", "Zone"}`, Consul 1.17+), when registered with one.
    pub locality: Option<Value>,
    pub create_index: u64,
    pub modify_index: u64,
}

/// One health check (node-level when `service_id` is empty).
#[derive(Clone, Debug)]
pub struct Check {
    pub id: String,
    pub name: String,
    pub status: String,
    pub notes: String,
    pub output: String,
    pub service_id: String,
    pub service_name: String,
    pub service_tags: Vec<String>,
    /// TTL checks only: how long a pass/warn/fail keeps it from turning critical.
    pub ttl: Option<Duration>,
    pub expires: Option<Instant>,
    pub check_type: String,
    pub create_index: u64,
    pub modify_index: u64,
}

// === impl Cluster ===

impl Cluster {
    /// Adds a datacenter if needed and a node (an agent) to it; returns the node name.
    pub fn add_agent(&mut self, dc: &str, node: Option<&str>, address: &str) -> String {
        let datacenter = self
            .datacenters
            .entry(dc.to_owned())
            .or_insert_with(|| Datacenter {
                name: dc.to_owned(),
                index: 0,
                services_index: 0,
                service_index: HashMap::new(),
                abandon: 0,
                nodes: BTreeMap::new(),
            });
        let name = node.map_or_else(
            || format!("consul-double-{dc}-{}", datacenter.nodes.len() + 1),
            str::to_owned,
        );
        if datacenter.nodes.contains_key(&name) {
            return name;
        }
        let index = datacenter.bump(&["consul"], true);
        let mut node = Node {
            id: node_id(dc, &name),
            name: name.clone(),
            address: address.to_owned(),
            services: BTreeMap::new(),
            checks: BTreeMap::new(),
            create_index: index,
            modify_index: index,
        };
        // Every agent of the double is also a server: it carries the `consul` service and the
        // serfHealth node check, as real servers do.
        node.services.insert(
            "consul".into(),
            Service {
                id: "consul".into(),
                name: "consul".into(),
                tags: Vec::new(),
                address: String::new(),
                port: 8300,
                meta: BTreeMap::from([("raft_version".into(), "3".into())]),
                weights: (1, 1),
                enable_tag_override: false,
                locality: None,
                create_index: index,
                modify_index: index,
            },
        );
        node.checks.insert(
            "serfHealth".into(),
            Check {
                id: "serfHealth".into(),
                name: "Serf Health Status".into(),
                status: PASSING.into(),
                notes: String::new(),
                output: "Agent alive and reachable".into(),
                service_id: String::new(),
                service_name: String::new(),
                service_tags: Vec::new(),
                ttl: None,
                expires: None,
                check_type: String::new(),
                create_index: index,
                modify_index: index,
            },
        );
        datacenter.nodes.insert(name.clone(), node);
        name
    }

    pub fn dc(&self, name: &str) -> Option<&Datacenter> {
        self.datacenters.get(name)
    }

    pub fn dc_mut(&mut self, name: &str) -> Option<&mut Datacenter> {
        self.datacenters.get_mut(name)
    }

    /// Whether some TTL check's time ran out (a read, so that the ticker does not wake
    /// blocked queries for nothing).
    pub fn expire_ttls_pending(&self, now: Instant) -> bool {
        self.datacenters.values().any(|dc| {
            dc.nodes.values().any(|node| {
                node.checks
                    .values()
                    .any(|c| c.status != CRITICAL && c.expires.is_some_and(|at| at <= now))
            })
        })
    }

    /// Turns every TTL check whose time ran out critical. Returns whether anything changed.
    pub fn expire_ttls(&mut self, now: Instant) -> bool {
        let mut changed = false;
        for dc in self.datacenters.values_mut() {
            let mut expired = Vec::new();
            for node in dc.nodes.values() {
                for check in node.checks.values() {
                    if check.status != CRITICAL && check.expires.is_some_and(|at| at <= now) {
                        expired.push((node.name.clone(), check.id.clone()));
                    }
                }
            }
            for (node, check) in expired {
                let ttl = dc.nodes[&node].checks[&check].ttl.unwrap_or_default();
                let output = format!("TTL expired (last update more than {ttl:?} ago)");
                dc.set_check_status(&node, &check, CRITICAL, Some(output));
                changed = true;
            }
        }
        changed
    }
}

// === impl Datacenter ===

impl Datacenter {
    /// One write: bumps the index, the services touched and, for registrations, the
    /// services table. Returns the new index.
    pub fn bump(&mut self, services: &[&str], services_table: bool) -> u64 {
        self.index += 1;
        for name in services {
            self.service_index.insert((*name).to_owned(), self.index);
        }
        if services_table {
            self.services_index = self.index;
        }
        self.index
    }

    /// Moves every index back to `to` (at least 1), as a snapshot restore of an older
    /// cluster does, and wakes every blocked query.
    pub fn rewind(&mut self, to: u64) {
        let to = to.max(1);
        self.index = to;
        self.services_index = self.services_index.min(to);
        for index in self.service_index.values_mut() {
            *index = (*index).min(to);
        }
        for node in self.nodes.values_mut() {
            node.create_index = node.create_index.min(to);
            node.modify_index = node.modify_index.min(to);
            for service in node.services.values_mut() {
                service.create_index = service.create_index.min(to);
                service.modify_index = service.modify_index.min(to);
            }
            for check in node.checks.values_mut() {
                check.create_index = check.create_index.min(to);
                check.modify_index = check.modify_index.min(to);
            }
        }
        self.abandon += 1;
    }

    fn has_service(&self, name: &str) -> bool {
        self.nodes
            .values()
            .any(|node| node.services.values().any(|s| s.name == name))
    }

    /// The index a query for `name` reports: the service's own, or the services table's
    /// when it has no instance. Never below 1.
    pub fn index_for_service(&self, name: &str) -> u64 {
        let index = if self.has_service(name) {
            self.service_index
                .get(name)
                .copied()
                .unwrap_or(self.services_index)
        } else {
            self.services_index
        };
        index.max(1)
    }

    /// The index `/v1/catalog/services` reports. Never below 1.
    pub fn index_for_catalog(&self) -> u64 {
        self.services_index.max(1)
    }

    /// Sets a check's status (and output); bumps the index only when the status changed,
    /// as the agent's anti-entropy sync does. Returns whether it wrote.
    pub fn set_check_status(
        &mut self,
        node: &str,
        check_id: &str,
        status: &str,
        output: Option<String>,
    ) -> bool {
        let Some(check) = self
            .nodes
            .get_mut(node)
            .and_then(|n| n.checks.get_mut(check_id))
        else {
            return false;
        };
        if let Some(ttl) = check.ttl {
            check.expires = Some(Instant::now() + ttl);
        }
        if let Some(output) = output {
            check.output = output;
        }
        if check.status == status {
            return false;
        }
        check.status = status.to_owned();
        let touched: Vec<String> = if check.service_name.is_empty() {
            // A node check changes the health of every service on the node.
            self.nodes[node]
                .services
                .values()
                .map(|s| s.name.clone())
                .collect()
        } else {
            vec![check.service_name.clone()]
        };
        let refs: Vec<&str> = touched.iter().map(String::as_str).collect();
        let index = self.bump(&refs, false);
        if let Some(check) = self
            .nodes
            .get_mut(node)
            .and_then(|n| n.checks.get_mut(check_id))
        {
            check.modify_index = index;
        }
        true
    }

    /// The `/v1/health/service/<name>` entries, before ACL filtering.
    pub fn health_entries(&self, name: &str, tags: &[String], passing_only: bool) -> Vec<Value> {
        let mut out = Vec::new();
        for node in self.nodes.values() {
            for service in node.services.values() {
                // Tags match case-insensitively, as Consul's `serviceTagFilter`
                // (agent/consul/state/catalog.go) lowercases both sides.
                let has = |want: &String| {
                    let want = want.to_lowercase();
                    service.tags.iter().any(|t| t.to_lowercase() == want)
                };
                if service.name != name || !tags.iter().all(has) {
                    continue;
                }
                let checks: Vec<&Check> = node
                    .checks
                    .values()
                    .filter(|c| c.service_id.is_empty() || c.service_id == service.id)
                    .collect();
                if passing_only && checks.iter().any(|c| c.status != PASSING) {
                    continue;
                }
                out.push(json!({
                    "Node": self.node_json(node),
                    "Service": service_json(service),
                    "Checks": checks.iter().map(|c| check_json(&node.name, c)).collect::<Vec<_>>(),
                }));
            }
        }
        out
    }

    /// The `/v1/catalog/services` map: service name to the union of its tags.
    pub fn catalog_services(&self) -> BTreeMap<String, BTreeSet<String>> {
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for node in self.nodes.values() {
            for service in node.services.values() {
                out.entry(service.name.clone())
                    .or_default()
                    .extend(service.tags.iter().cloned());
            }
        }
        out
    }

    fn node_json(&self, node: &Node) -> Value {
        json!({
            "ID": node.id,
            "Node": node.name,
            "Address": node.address,
            "Datacenter": self.name,
            "TaggedAddresses": {
                "lan": node.address,
                "lan_ipv4": node.address,
                "wan": node.address,
                "wan_ipv4": node.address,
            },
            "Meta": {"consul-network-segment": ""},
            "CreateIndex": node.create_index,
            "ModifyIndex": node.modify_index,
        })
    }
}

/// The JSON of a service instance, as `/v1/health/service` gives it.
pub fn service_json(service: &Service) -> Value {
    let mut out = json!({
        "ID": service.id,
        "Service": service.name,
        "Tags": service.tags,
        "Address": service.address,
        "Meta": service.meta,
        "Port": service.port,
        "Weights": {"Passing": service.weights.0, "Warning": service.weights.1},
        "EnableTagOverride": service.enable_tag_override,
        "Proxy": {"Mode": "", "MeshGateway": {}, "Expose": {}},
        "Connect": {},
        "PeerName": "",
        "CreateIndex": service.create_index,
        "ModifyIndex": service.modify_index,
    });
    // `Locality *Locality `json:",omitempty"`` in structs.NodeService: absent when unset.
    if let Some(locality) = &service.locality {
        out["Locality"] = locality.clone();
    }
    out
}

/// The JSON of a check, as `/v1/health/service` gives it.
pub fn check_json(node: &str, check: &Check) -> Value {
    json!({
        "Node": node,
        "CheckID": check.id,
        "Name": check.name,
        "Status": check.status,
        "Notes": check.notes,
        "Output": check.output,
        "ServiceID": check.service_id,
        "ServiceName": check.service_name,
        "ServiceTags": check.service_tags,
        "Type": check.check_type,
        "Interval": "",
        "Timeout": "",
        "ExposedPort": 0,
        "Definition": {},
        "CreateIndex": check.create_index,
        "ModifyIndex": check.modify_index,
    })
}

/// A stable UUID-shaped node ID derived from the datacenter and node name.
fn node_id(dc: &str, name: &str) -> String {
    let mut h: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    for byte in dc.bytes().chain([0]).chain(name.bytes()) {
        h ^= u128::from(byte);
        h = h.wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013b);
    }
    let hex = format!("{h:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}
