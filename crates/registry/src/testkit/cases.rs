//! The cases of the conformance kit and [`run`], which runs them in order against one
//! [`Harness`].

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures::StreamExt;

use super::view::{Seen, View};
use super::{Harness, Instance, Supports, KIT_BACKOFF};
use crate::Update;

/// One check of the kit (see the table in the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Case {
    /// The first item of a watch is a `Reset` of exactly the registered set.
    FirstSync,
    /// A registration while watched reaches the set.
    Add,
    /// A deregistration while watched reaches the set.
    Remove,
    /// A weight change reaches the set.
    Weight,
    /// A malformed entry is skipped without breaking the watch.
    Malformed,
    /// The server down: errors, the last set kept.
    ServerDown,
    /// Retries while down are paced by the backoff and keep coming.
    Backoff,
    /// The server back: the first update is the full set.
    ServerBack,
    /// The service deleted: an authoritative empty set, no error.
    Deleted,
}

impl Case {
    /// Every case, in the order [`run`] runs them.
    pub const ALL: [Case; 9] = [
        Case::FirstSync,
        Case::Add,
        Case::Remove,
        Case::Weight,
        Case::Malformed,
        Case::ServerDown,
        Case::Backoff,
        Case::ServerBack,
        Case::Deleted,
    ];

    /// The case's name, as printed (`first_sync`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Case::FirstSync => "first_sync",
            Case::Add => "add",
            Case::Remove => "remove",
            Case::Weight => "weight",
            Case::Malformed => "malformed",
            Case::ServerDown => "server_down",
            Case::Backoff => "backoff",
            Case::ServerBack => "server_back",
            Case::Deleted => "deleted",
        }
    }

    /// Why the case cannot run on a backend that supports only `supports`, if it cannot.
    fn not_applicable(self, supports: Supports) -> Option<&'static str> {
        match self {
            Case::FirstSync => None,
            Case::Add | Case::Remove if !supports.changes => {
                Some("the set is fixed when the registry is built")
            }
            Case::Weight if !supports.changes => {
                Some("the set is fixed when the registry is built")
            }
            Case::Weight if !supports.weights => Some("the registry carries no weights"),
            Case::Malformed if !supports.malformed => Some(
                "malformed entries cannot be stored (refused by the server or by config checks)",
            ),
            Case::ServerDown | Case::Backoff | Case::ServerBack if !supports.restart => {
                Some("there is no server to stop")
            }
            Case::Deleted if !supports.delete => Some("a service cannot be deleted"),
            _ => None,
        }
    }
}

impl fmt::Display for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What became of one case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It ran and held.
    Passed,
    /// It did not run, and why.
    NotApplicable(&'static str),
}

/// What [`run`] did, case by case.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Each case and its outcome, in order.
    pub cases: Vec<(Case, Outcome)>,
}

impl Report {
    /// The cases that ran and passed.
    pub fn passed(&self) -> Vec<Case> {
        self.cases
            .iter()
            .filter(|(_, o)| *o == Outcome::Passed)
            .map(|(c, _)| *c)
            .collect()
    }
}

/// Runs every case against `harness`, printing each outcome; panics on the first failure,
/// naming the case. Returns the report (a backend's test may assert which cases ran).
pub async fn run(harness: &mut dyn Harness) -> Report {
    let supports = harness.supports();
    let mut report = Report::default();
    // server_down, backoff and server_back share one stop and start of the server.
    let mut restart: Option<Restart> = None;
    for case in Case::ALL {
        if let Some(why) = case.not_applicable(supports) {
            println!("conformance: {case}: not applicable: {why}");
            report.cases.push((case, Outcome::NotApplicable(why)));
            continue;
        }
        let started = Instant::now();
        match case {
            Case::FirstSync => first_sync(harness).await,
            Case::Add => add(harness).await,
            Case::Remove => remove(harness).await,
            Case::Weight => weight(harness, supports).await,
            Case::Malformed => malformed(harness).await,
            Case::ServerDown => restart = Some(server_down(harness).await),
            Case::Backoff => backoff(restart.as_ref().expect("server_down ran")),
            Case::ServerBack => {
                server_back(harness, restart.take().expect("server_down ran")).await;
            }
            Case::Deleted => deleted(harness).await,
        }
        println!("conformance: {case}: passed in {:?}", started.elapsed());
        report.cases.push((case, Outcome::Passed));
    }
    report
}

// === helpers ===

fn service(case: Case) -> String {
    format!("kit-{}", case.name().replace('_', "-"))
}

fn set_of(instances: &[Instance]) -> BTreeMap<SocketAddr, u32> {
    instances.iter().map(|i| (i.address, i.weight)).collect()
}

/// Compares addresses always, weights only when the registry carries them.
fn same(supports: Supports, a: &BTreeMap<SocketAddr, u32>, b: &BTreeMap<SocketAddr, u32>) -> bool {
    if supports.weights {
        a == b
    } else {
        a.keys().eq(b.keys())
    }
}

async fn register_all(harness: &mut dyn Harness, service: &str, instances: &[Instance]) {
    for instance in instances {
        harness.register(service, *instance).await;
    }
}

async fn view(harness: &mut dyn Harness, service: &str) -> View {
    let registry = harness.registry().await;
    View::watch(
        registry,
        harness.query(service),
        KIT_BACKOFF,
        harness.deadline(),
    )
}

// === the cases ===

async fn first_sync(harness: &mut dyn Harness) {
    let supports = harness.supports();
    let name = service(Case::FirstSync);
    let instances = [Instance::local(10_001, 1), Instance::local(10_002, 3)];
    register_all(harness, &name, &instances).await;
    let registry = harness.registry().await;
    let query = harness.query(&name);
    let mut stream = registry
        .watch(&query)
        .await
        .unwrap_or_else(|e| panic!("first_sync: watch {query}: {e}"));
    let started = Instant::now();
    let first = tokio::time::timeout(harness.deadline(), stream.next())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "first_sync: no first update within {:?}",
                harness.deadline()
            )
        })
        .unwrap_or_else(|| panic!("first_sync: the stream ended before its first update"))
        .unwrap_or_else(|e| panic!("first_sync: the first item is an error: {e}"));
    println!("first_sync: first update after {:?}", started.elapsed());
    let Update::Reset(endpoints) = first else {
        panic!("first_sync: the first update must be a Reset of the whole set, got {first:?}");
    };
    let got: BTreeMap<SocketAddr, u32> = endpoints.iter().map(|e| (e.address, e.weight)).collect();
    assert!(
        same(supports, &got, &set_of(&instances)),
        "first_sync: the first Reset must hold exactly the registered set: got {got:?}, registered {instances:?}"
    );
}

async fn add(harness: &mut dyn Harness) {
    let name = service(Case::Add);
    let a = Instance::local(10_011, 1);
    let b = Instance::local(10_012, 1);
    harness.register(&name, a).await;
    let mut view = view(harness, &name).await;
    view.until("add: first set", |s| {
        s.contains_key(&a.address) && s.len() == 1
    })
    .await;
    harness.register(&name, b).await;
    view.until("add: the new instance", |s| {
        s.contains_key(&a.address) && s.contains_key(&b.address) && s.len() == 2
    })
    .await;
}

async fn remove(harness: &mut dyn Harness) {
    let name = service(Case::Remove);
    let a = Instance::local(10_021, 1);
    let b = Instance::local(10_022, 1);
    register_all(harness, &name, &[a, b]).await;
    let mut view = view(harness, &name).await;
    view.until("remove: first set", |s| s.len() == 2).await;
    harness.deregister(&name, a.address).await;
    view.until("remove: the instance leaves, the other stays", |s| {
        s.len() == 1 && s.contains_key(&b.address)
    })
    .await;
}

async fn weight(harness: &mut dyn Harness, supports: Supports) {
    let name = service(Case::Weight);
    let a = Instance::local(10_031, 1);
    let b = Instance::local(10_032, 2);
    register_all(harness, &name, &[a, b]).await;
    let mut view = view(harness, &name).await;
    view.until_exactly("weight: first set", &set_of(&[a, b]))
        .await;
    let heavier = Instance::local(10_031, 7);
    harness.register(&name, heavier).await;
    let expected = set_of(&[heavier, b]);
    view.until("weight: the new weight", |s| same(supports, s, &expected))
        .await;
}

async fn malformed(harness: &mut dyn Harness) {
    let name = service(Case::Malformed);
    let a = Instance::local(10_041, 1);
    let b = Instance::local(10_042, 1);
    harness.register(&name, a).await;
    let mut view = view(harness, &name).await;
    view.until("malformed: first set", |s| s.len() == 1).await;
    let mark = view.seen.len();
    harness.write_malformed(&name).await;
    // A valid change after the malformed one proves the watch still follows the service.
    harness.register(&name, b).await;
    view.until("malformed: neighbours served, malformed skipped", |s| {
        s.contains_key(&a.address) && s.contains_key(&b.address)
    })
    .await;
    view.drain_for(Duration::from_millis(500)).await;
    assert_eq!(
        view.set().keys().copied().collect::<Vec<_>>(),
        vec![a.address, b.address],
        "malformed: only the valid instances are served; seen {:#?}",
        view.seen
    );
    let errors = view.errors_since(mark);
    assert!(
        errors.is_empty(),
        "malformed: a malformed entry must be skipped, not break the watch; seen {:#?}",
        view.seen
    );
}

/// What server_down leaves for backoff and server_back.
struct Restart {
    view: View,
    expected: BTreeMap<SocketAddr, u32>,
    errors: Vec<Instant>,
}

async fn server_down(harness: &mut dyn Harness) -> Restart {
    let name = service(Case::ServerDown);
    let instances = [Instance::local(10_051, 1), Instance::local(10_052, 1)];
    register_all(harness, &name, &instances).await;
    let expected = set_of(&instances);
    let mut view = view(harness, &name).await;
    view.until("server_down: first set", |s| s.keys().eq(expected.keys()))
        .await;
    let before = view.set().clone();
    let mark = view.seen.len();
    harness.stop_server().await;
    // Four errors: the first says the server is down, the gaps between them show the pacing.
    let started = Instant::now();
    let deadline = harness.deadline() * 2;
    while view.errors_since(mark).len() < 4 {
        let left = deadline.saturating_sub(started.elapsed());
        if view.next(left).await.is_none() {
            panic!(
                "server_down: fewer than 4 errors within {deadline:?} of stopping the server \
                 (a backend must report a down server and keep retrying); seen {:#?}",
                view.seen
            );
        }
    }
    println!("server_down: 4 errors after {:?}", started.elapsed());
    let emptied = view.seen[mark..]
        .iter()
        .any(|s| matches!(s, Seen::Update(_, set) if set.len() < before.len()));
    assert!(
        !emptied && view.set() == &before,
        "server_down: a down server must never shrink the set (last set kept, stale); seen {:#?}",
        view.seen
    );
    let errors = view.errors_since(mark);
    Restart {
        view,
        expected: before,
        errors,
    }
}

fn backoff(restart: &Restart) {
    // Between error i and i+1 recover waits at least half of min(initial * 2^i, max).
    for (i, pair) in restart.errors.windows(2).enumerate() {
        let gap = pair[1].duration_since(pair[0]);
        let exp = KIT_BACKOFF
            .initial
            .saturating_mul(1 << i.min(16))
            .min(KIT_BACKOFF.max);
        let floor = exp / 2;
        println!("backoff: retry {} after {gap:?} (floor {floor:?})", i + 1);
        assert!(
            gap + Duration::from_millis(5) >= floor,
            "backoff: retry {} came after {gap:?}, under the backoff floor {floor:?}: a hot loop",
            i + 1
        );
    }
}

async fn server_back(harness: &mut dyn Harness, restart: Restart) {
    let Restart {
        mut view, expected, ..
    } = restart;
    harness.start_server().await;
    let started = Instant::now();
    let deadline = harness.deadline() * 2;
    loop {
        let left = deadline.saturating_sub(started.elapsed());
        match view.next(left).await {
            None => panic!(
                "server_back: no update within {deadline:?} of starting the server; seen {:#?}",
                view.seen
            ),
            Some(Seen::Error(..)) => continue,
            Some(Seen::Update(kind, set)) => {
                println!("server_back: {kind} after {:?}", started.elapsed());
                assert!(
                    set.keys().eq(expected.keys()),
                    "server_back: the first update after the server came back must be the full set \
                     {expected:?}, got {kind} {set:?}"
                );
                break;
            }
        }
    }
}

async fn deleted(harness: &mut dyn Harness) {
    let name = service(Case::Deleted);
    let instances = [Instance::local(10_061, 1), Instance::local(10_062, 1)];
    register_all(harness, &name, &instances).await;
    let mut view = view(harness, &name).await;
    view.until("deleted: first set", |s| s.len() == 2).await;
    let mark = view.seen.len();
    harness.delete_service(&name).await;
    view.until("deleted: authoritative empty set", BTreeMap::is_empty)
        .await;
    assert!(
        view.errors_since(mark).is_empty(),
        "deleted: a deleted service is an answer (empty), not an error; seen {:#?}",
        view.seen
    );
}
