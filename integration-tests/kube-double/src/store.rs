//! The double's "etcd": objects, one global resourceVersion counter, and the event
//! history that watches are served from.
//!
//! As in the real API server (api-concepts, "Efficient detection of changes" and
//! "Resource versions"), every write gets the next resourceVersion of one counter shared by
//! all kinds; a watch from resourceVersion `R` replays the events after `R`; the history is
//! bounded, and a version older than what it still holds is "too old" (HTTP 410 Gone,
//! reason `Expired`). Consistent paginated lists are served at the version of their first
//! page by undoing later events, as etcd's MVCC store would.

use std::collections::{BTreeMap, VecDeque};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

/// The resources the double serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `discovery.k8s.io/v1` EndpointSlice (`endpointslices`).
    EndpointSlice,
    /// `v1` Service (`services`).
    Service,
}

impl Kind {
    /// The kind's `apiVersion`.
    pub fn api_version(self) -> &'static str {
        match self {
            Kind::EndpointSlice => "discovery.k8s.io/v1",
            Kind::Service => "v1",
        }
    }

    /// The kind's `kind`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Service => "Service",
        }
    }

    /// The resource name in URLs.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::EndpointSlice => "endpointslices",
            Kind::Service => "services",
        }
    }
}

/// An error the API server answers with a `Status` object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status code, also `Status.code`.
    pub code: u16,
    /// `Status.reason` (`NotFound`, `AlreadyExists`, `Conflict`, `Expired`, ...).
    pub reason: &'static str,
    /// `Status.message`.
    pub message: String,
}

impl ApiError {
    /// An error with the given code, reason and message.
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
        }
    }

    /// 410 Gone, reason `Expired`, for a resourceVersion older than the history.
    pub fn too_old(requested: u64, oldest: u64) -> Self {
        ApiError::new(
            410,
            "Expired",
            format!("too old resource version: {requested} ({oldest})"),
        )
    }

    /// The `metav1.Status` object for this error.
    pub fn status(&self) -> Value {
        json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        })
    }
}

/// One change, as the watch history keeps it.
#[derive(Clone, Debug)]
pub struct Event {
    /// The resourceVersion of the change.
    pub rv: u64,
    /// What kind of object changed.
    pub kind: Kind,
    /// Its namespace.
    pub namespace: String,
    /// The object before the change, if it existed.
    pub prev: Option<Value>,
    /// The object after the change; for a deletion, the last state with the deletion's
    /// resourceVersion (what a `DELETED` event carries).
    pub object: Value,
    /// Whether the change deleted the object.
    pub deleted: bool,
}

type Key = (Kind, String, String);

/// Objects and history. Guarded by a mutex in [`crate::KubeDouble`].
#[derive(Debug)]
pub struct Store {
    rv: u64,
    /// Watches and consistent lists from a version below this one are too old.
    compacted: u64,
    objects: BTreeMap<Key, Value>,
    history: VecDeque<Event>,
    history_limit: usize,
    uids: u64,
}

impl Store {
    /// An empty store keeping at most `history_limit` events.
    pub fn new(history_limit: usize) -> Self {
        Store {
            rv: 1,
            compacted: 1,
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            history_limit: history_limit.max(1),
            uids: 0,
        }
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    /// The oldest resourceVersion a watch may still start from.
    pub fn oldest(&self) -> u64 {
        self.compacted
    }

    /// Makes every resourceVersion handed out so far too old, as an etcd compaction
    /// followed by a write would: the counter moves on by one and the history is dropped.
    pub fn expire(&mut self) {
        self.rv += 1;
        self.compacted = self.rv;
        self.history.clear();
    }

    /// The events after `rv`, or 410 when the history no longer reaches back to `rv`.
    pub fn events_after(&self, rv: u64) -> Result<Vec<Event>, ApiError> {
        if rv < self.compacted {
            return Err(ApiError::too_old(rv, self.compacted));
        }
        Ok(self
            .history
            .iter()
            .skip_while(|e| e.rv <= rv)
            .cloned()
            .collect())
    }

    /// One object.
    pub fn get(&self, kind: Kind, namespace: &str, name: &str) -> Result<Value, ApiError> {
        self.objects
            .get(&(kind, namespace.to_owned(), name.to_owned()))
            .cloned()
            .ok_or_else(|| not_found(kind, name))
    }

    /// The objects of `kind` (in `namespace`, or all) as they were at `at`, or now.
    pub fn list(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        at: Option<u64>,
    ) -> Result<(u64, Vec<Value>), ApiError> {
        let mut objects: BTreeMap<Key, &Value> = self
            .objects
            .iter()
            .filter(|((k, ns, _), _)| *k == kind && namespace.is_none_or(|n| n == ns))
            .map(|(key, value)| (key.clone(), value))
            .collect();
        let rv = match at {
            None => self.rv,
            Some(at) => {
                if at < self.compacted {
                    return Err(ApiError::too_old(at, self.compacted));
                }
                // Undo the later events, newest last so that the oldest undo wins.
                let later: Vec<&Event> = self.history.iter().filter(|e| e.rv > at).collect();
                for event in later.into_iter().rev() {
                    if event.kind != kind || namespace.is_some_and(|n| n != event.namespace) {
                        continue;
                    }
                    let key = (kind, event.namespace.clone(), name_of(&event.object));
                    match &event.prev {
                        Some(prev) => {
                            objects.insert(key, prev);
                        }
                        None => {
                            objects.remove(&key);
                        }
                    }
                }
                at
            }
        };
        Ok((rv, objects.into_values().cloned().collect()))
    }

    /// Creates an object (already validated, with `metadata.name` set).
    pub fn create(
        &mut self,
        kind: Kind,
        namespace: &str,
        mut object: Value,
    ) -> Result<Value, ApiError> {
        let name = name_of(&object);
        let key = (kind, namespace.to_owned(), name.clone());
        if self.objects.contains_key(&key) {
            return Err(ApiError::new(
                409,
                "AlreadyExists",
                format!(
                    "{}.{} \"{name}\" already exists",
                    kind.plural(),
                    group_of(kind)
                ),
            ));
        }
        self.rv += 1;
        self.uids += 1;
        let meta = meta_mut(&mut object);
        meta.insert("namespace".into(), json!(namespace));
        meta.insert(
            "uid".into(),
            json!(format!("00000000-0000-4000-8000-{:012x}", self.uids)),
        );
        meta.insert("resourceVersion".into(), json!(self.rv.to_string()));
        meta.insert("creationTimestamp".into(), json!(rfc3339_now()));
        meta.insert("generation".into(), json!(1));
        self.objects.insert(key, object.clone());
        self.record(kind, namespace, None, object.clone(), false);
        Ok(object)
    }

    /// Replaces an object. A `metadata.resourceVersion` in the new object must be the
    /// current one (optimistic concurrency), else 409 Conflict.
    pub fn replace(
        &mut self,
        kind: Kind,
        namespace: &str,
        mut object: Value,
    ) -> Result<Value, ApiError> {
        let name = name_of(&object);
        let key = (kind, namespace.to_owned(), name.clone());
        let Some(prev) = self.objects.get(&key).cloned() else {
            return Err(not_found(kind, &name));
        };
        let given = object["metadata"]["resourceVersion"].as_str().unwrap_or("");
        let current = prev["metadata"]["resourceVersion"].as_str().unwrap_or("");
        if !given.is_empty() && given != current {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {}.{} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                    kind.plural(),
                    group_of(kind)
                ),
            ));
        }
        self.rv += 1;
        let generation = prev["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
        let meta = meta_mut(&mut object);
        meta.insert("namespace".into(), json!(namespace));
        for kept in ["uid", "creationTimestamp"] {
            meta.insert(kept.into(), prev["metadata"][kept].clone());
        }
        meta.insert("resourceVersion".into(), json!(self.rv.to_string()));
        meta.insert("generation".into(), json!(generation));
        self.objects.insert(key, object.clone());
        self.record(kind, namespace, Some(prev), object.clone(), false);
        Ok(object)
    }

    /// Deletes an object, returning its last state.
    pub fn delete(&mut self, kind: Kind, namespace: &str, name: &str) -> Result<Value, ApiError> {
        let key = (kind, namespace.to_owned(), name.to_owned());
        let Some(prev) = self.objects.remove(&key) else {
            return Err(not_found(kind, name));
        };
        self.rv += 1;
        let mut gone = prev.clone();
        meta_mut(&mut gone).insert("resourceVersion".into(), json!(self.rv.to_string()));
        self.record(kind, namespace, Some(prev), gone.clone(), true);
        Ok(gone)
    }

    fn record(
        &mut self,
        kind: Kind,
        namespace: &str,
        prev: Option<Value>,
        object: Value,
        deleted: bool,
    ) {
        self.history.push_back(Event {
            rv: self.rv,
            kind,
            namespace: namespace.to_owned(),
            prev,
            object,
            deleted,
        });
        while self.history.len() > self.history_limit {
            if let Some(oldest) = self.history.pop_front() {
                self.compacted = oldest.rv;
            }
        }
    }
}

fn group_of(kind: Kind) -> &'static str {
    match kind {
        Kind::EndpointSlice => "discovery.k8s.io",
        Kind::Service => "",
    }
}

fn not_found(kind: Kind, name: &str) -> ApiError {
    let plural = kind.plural();
    let resource = match group_of(kind) {
        "" => plural.to_owned(),
        group => format!("{plural}.{group}"),
    };
    ApiError::new(404, "NotFound", format!("{resource} \"{name}\" not found"))
}

/// The `metadata.name` of a validated object.
pub fn name_of(object: &Value) -> String {
    object["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn meta_mut(object: &mut Value) -> &mut serde_json::Map<String, Value> {
    if !object["metadata"].is_object() {
        object["metadata"] = json!({});
    }
    object["metadata"]
        .as_object_mut()
        .expect("metadata is an object")
}

/// Now as RFC 3339 UTC with second precision (the format of `metav1.Time`).
fn rfc3339_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(name: &str, label: &str) -> Value {
        json!({"metadata": {"name": name, "labels": {"kubernetes.io/service-name": label}},
               "addressType": "IPv4", "endpoints": []})
    }

    #[test]
    fn versions_history_and_expiry() {
        let mut store = Store::new(100);
        let start = store.resource_version();
        let a = store
            .create(Kind::EndpointSlice, "ns", slice("a", "web"))
            .unwrap();
        assert_eq!(
            a["metadata"]["resourceVersion"],
            json!((start + 1).to_string())
        );
        assert_eq!(
            store
                .create(Kind::EndpointSlice, "ns", slice("a", "web"))
                .unwrap_err()
                .code,
            409
        );
        store
            .replace(Kind::EndpointSlice, "ns", slice("a", "api"))
            .unwrap();
        let mut stale = slice("a", "x");
        stale["metadata"]["resourceVersion"] = json!((start + 1).to_string());
        assert_eq!(
            store
                .replace(Kind::EndpointSlice, "ns", stale)
                .unwrap_err()
                .code,
            409
        );
        store.delete(Kind::EndpointSlice, "ns", "a").unwrap();
        assert_eq!(
            store
                .delete(Kind::EndpointSlice, "ns", "a")
                .unwrap_err()
                .code,
            404
        );
        let events = store.events_after(start).unwrap();
        assert_eq!(events.len(), 3);
        assert!(events[2].deleted);

        // The list at start+1 sees "a" with its first labels.
        let (rv, items) = store
            .list(Kind::EndpointSlice, Some("ns"), Some(start + 1))
            .unwrap();
        assert_eq!(rv, start + 1);
        assert_eq!(
            items[0]["metadata"]["labels"]["kubernetes.io/service-name"],
            "web"
        );
        assert!(store
            .list(Kind::EndpointSlice, Some("ns"), None)
            .unwrap()
            .1
            .is_empty());

        store.expire();
        assert_eq!(store.events_after(start).unwrap_err().code, 410);
        assert_eq!(
            store
                .list(Kind::EndpointSlice, None, Some(start + 1))
                .unwrap_err()
                .reason,
            "Expired"
        );
        assert!(store
            .events_after(store.resource_version())
            .unwrap()
            .is_empty());
    }

    #[test]
    fn bounded_history_compacts() {
        let mut store = Store::new(2);
        for name in ["a", "b", "c"] {
            store
                .create(Kind::Service, "ns", json!({"metadata": {"name": name}}))
                .unwrap();
        }
        assert_eq!(store.events_after(1).unwrap_err().code, 410);
        assert_eq!(store.events_after(store.oldest()).unwrap().len(), 2);
    }

    #[test]
    fn timestamps_are_rfc3339() {
        let now = rfc3339_now();
        assert_eq!(now.len(), 20, "{now}");
        assert!(now.ends_with('Z') && now.as_bytes()[10] == b'T', "{now}");
    }
}
