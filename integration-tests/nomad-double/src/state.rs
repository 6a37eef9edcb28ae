//! The double's state: jobs, their allocations and the service registrations those
//! allocations made, with one index over the registrations (Nomad's
//! `service_registrations` table index) and a change signal for blocking queries.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use serde_json::{json, Value};

/// The double's one client node.
pub const NODE_ID: &str = "9a5f1b4c-0000-4000-8000-00000000d0b1";

/// Everything behind one lock.
#[derive(Debug, Default)]
pub struct State {
    /// The registrations' index: bumped by every change.
    pub index: u64,
    /// Bumped by a rewind, so blocked queries answer.
    pub epoch: u64,
    node_address: String,
    /// Jobs by (namespace, ID): their allocation IDs (empty once stopped).
    jobs: BTreeMap<(String, String), Vec<String>>,
    /// Every registration, as Nomad serves it.
    registrations: Vec<Value>,
    /// Dynamic ports handed out so far.
    next_dynamic: u16,
}

/// The state and its change signal.
#[derive(Debug)]
pub struct Shared {
    state: Mutex<State>,
    changes: tokio::sync::watch::Sender<()>,
    acl_tokens: Vec<String>,
    /// Answer everything with `500 No cluster leader`.
    pub no_leader: std::sync::atomic::AtomicBool,
}

impl Shared {
    /// Empty state on a node at `node_address`.
    pub fn new(node_address: String, acl_tokens: Vec<String>) -> Self {
        Shared {
            state: Mutex::new(State {
                index: 1,
                node_address,
                next_dynamic: 20000,
                ..State::default()
            }),
            changes: tokio::sync::watch::channel(()).0,
            acl_tokens,
            no_leader: Default::default(),
        }
    }

    /// Reads the state.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes the state and wakes blocked queries.
    pub fn write<T>(&self, change: impl FnOnce(&mut State) -> T) -> T {
        let result = change(&mut self.lock());
        self.changes.send_replace(());
        result
    }

    /// A receiver that sees the next change.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<()> {
        self.changes.subscribe()
    }

    /// Why a request with `token` is refused, when ACLs are on.
    pub fn refuse(&self, token: Option<&str>) -> Option<&'static str> {
        if self.acl_tokens.is_empty() {
            return None;
        }
        match token.filter(|t| !t.is_empty()) {
            None => Some("Permission denied"),
            Some(t) if self.acl_tokens.iter().any(|known| known == t) => None,
            Some(_) => Some("ACL token not found"),
        }
    }
}

impl State {
    /// Registers (or replaces) a job and places its allocations; returns the new index.
    pub fn register_job(&mut self, job: &Value, namespace: &str) -> Result<u64, String> {
        let id = job["ID"]
            .as_str()
            .filter(|s| !s.is_empty())
            .ok_or("Missing job ID")?;
        let namespace = job["Namespace"].as_str().unwrap_or(namespace).to_owned();
        let datacenter = job["Datacenters"][0].as_str().unwrap_or("dc1").to_owned();
        let groups = job["TaskGroups"].as_array().cloned().unwrap_or_default();
        let key = (namespace.clone(), id.to_owned());
        self.index += 1;
        let index = self.index;
        // A destructive update: the old allocations stop first.
        if let Some(old) = self.jobs.remove(&key) {
            self.registrations
                .retain(|r| !old.iter().any(|a| r["AllocID"].as_str() == Some(a)));
        }
        let mut allocs = Vec::new();
        for group in &groups {
            let group_name = group["Name"].as_str().unwrap_or("group");
            let count = group["Count"].as_u64().unwrap_or(1);
            for _ in 0..count {
                let alloc = uuid();
                let ports = self.ports(group);
                let mut services: Vec<(String, &Value)> = group["Services"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|s| (format!("group-{group_name}"), s))
                    .collect();
                for task in group["Tasks"].as_array().into_iter().flatten() {
                    let task_name = task["Name"].as_str().unwrap_or("task").to_owned();
                    for service in task["Services"].as_array().into_iter().flatten() {
                        services.push((task_name.clone(), service));
                    }
                }
                for (owner, service) in services {
                    if service["Provider"].as_str() != Some("nomad") {
                        continue;
                    }
                    let name = service["Name"].as_str().unwrap_or_default();
                    let label = service["PortLabel"].as_str().unwrap_or_default();
                    let port = ports
                        .get(label)
                        .copied()
                        .or_else(|| label.parse().ok())
                        .unwrap_or(0);
                    let address = service["Address"]
                        .as_str()
                        .filter(|a| !a.is_empty())
                        .unwrap_or(&self.node_address)
                        .to_owned();
                    self.registrations.push(json!({
                        "ID": format!("_nomad-task-{alloc}-{owner}-{name}-{label}"),
                        "ServiceName": name,
                        "Namespace": namespace,
                        "NodeID": NODE_ID,
                        "Datacenter": datacenter,
                        "JobID": id,
                        "AllocID": alloc,
                        "Tags": service["Tags"].as_array().cloned().unwrap_or_default(),
                        "Address": address,
                        "Port": port,
                        "CreateIndex": index,
                        "ModifyIndex": index,
                    }));
                }
                allocs.push(alloc);
            }
        }
        self.jobs.insert(key, allocs);
        Ok(index)
    }

    /// Port labels of a group: static `ReservedPorts`, then `DynamicPorts` picked here.
    fn ports(&mut self, group: &Value) -> BTreeMap<String, u16> {
        let mut ports = BTreeMap::new();
        for network in group["Networks"].as_array().into_iter().flatten() {
            for port in network["ReservedPorts"].as_array().into_iter().flatten() {
                if let (Some(label), Some(value)) = (port["Label"].as_str(), port["Value"].as_u64())
                {
                    ports.insert(label.to_owned(), u16::try_from(value).unwrap_or(0));
                }
            }
            for port in network["DynamicPorts"].as_array().into_iter().flatten() {
                if let Some(label) = port["Label"].as_str() {
                    self.next_dynamic = if self.next_dynamic >= 32000 {
                        20000
                    } else {
                        self.next_dynamic + 1
                    };
                    ports.insert(label.to_owned(), self.next_dynamic);
                }
            }
        }
        ports
    }

    /// Stops a job: its allocations' registrations go. `None` when unknown.
    pub fn stop_job(&mut self, namespace: &str, id: &str, purge: bool) -> Option<u64> {
        let key = (namespace.to_owned(), id.to_owned());
        let allocs = if purge {
            self.jobs.remove(&key)?
        } else {
            std::mem::take(self.jobs.get_mut(&key)?)
        };
        self.registrations
            .retain(|r| !allocs.iter().any(|a| r["AllocID"].as_str() == Some(a)));
        self.index += 1;
        Some(self.index)
    }

    /// Stops one allocation: its registrations go. `None` when unknown.
    pub fn stop_alloc(&mut self, alloc: &str) -> Option<u64> {
        let allocs = self
            .jobs
            .values_mut()
            .find(|allocs| allocs.iter().any(|a| a == alloc))?;
        allocs.retain(|a| a != alloc);
        self.registrations
            .retain(|r| r["AllocID"].as_str() != Some(alloc));
        self.index += 1;
        Some(self.index)
    }

    /// Deletes one registration. `None` when unknown.
    pub fn delete_registration(&mut self, namespace: &str, name: &str, id: &str) -> Option<u64> {
        let before = self.registrations.len();
        self.registrations.retain(|r| {
            !(r["Namespace"] == namespace && r["ServiceName"] == name && r["ID"] == id)
        });
        if self.registrations.len() == before {
            return None;
        }
        self.index += 1;
        Some(self.index)
    }

    /// Adds a registration as given.
    pub fn inject(&mut self, mut registration: Value) {
        if registration.get("Namespace").is_none() {
            registration["Namespace"] = json!("default");
        }
        self.index += 1;
        self.registrations.push(registration);
    }

    /// The registrations of a service in a namespace, by ID as Nomad's state store orders them.
    pub fn service(&self, namespace: &str, name: &str) -> Vec<Value> {
        let mut list: Vec<Value> = self
            .registrations
            .iter()
            .filter(|r| r["Namespace"] == namespace && r["ServiceName"] == name)
            .cloned()
            .collect();
        list.sort_by(|a, b| a["ID"].as_str().cmp(&b["ID"].as_str()));
        list
    }

    /// `/v1/services`: `[{"Namespace","Services":[{"ServiceName","Tags"}]}]`.
    pub fn services(&self, namespace: &str) -> Value {
        let mut by_name: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
        for r in &self.registrations {
            if r["Namespace"] == namespace {
                let tags = by_name
                    .entry(r["ServiceName"].as_str().unwrap_or(""))
                    .or_default();
                for tag in r["Tags"].as_array().into_iter().flatten() {
                    if !tags.contains(tag) {
                        tags.push(tag.clone());
                    }
                }
            }
        }
        let services: Vec<Value> = by_name
            .into_iter()
            .map(|(name, tags)| json!({"ServiceName": name, "Tags": tags}))
            .collect();
        if services.is_empty() {
            json!([])
        } else {
            json!([{"Namespace": namespace, "Services": services}])
        }
    }
}

/// A random UUID (v4 layout), as Nomad's IDs are.
pub fn uuid() -> String {
    let hex = |n: usize| {
        (0..n)
            .map(|_| format!("{:x}", fastrand::u8(0..16)))
            .collect::<String>()
    };
    format!("{}-{}-4{}-8{}-{}", hex(8), hex(4), hex(3), hex(3), hex(12))
}
