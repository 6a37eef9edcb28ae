//! [`View`]: a consumer of one recovered watch, as the upstream cache is, that keeps the
//! current set and remembers every event, so a case can wait for a state and then ask how
//! it got there.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};

use crate::{recover, Registry, ServiceQuery, SourceEvent, Update};

/// One event as the view saw it.
#[derive(Clone, Debug)]
pub enum Seen {
    /// An update: its kind (`Reset`, `Add`, `Remove`, `DoesNotExist`) and the set after it.
    Update(&'static str, BTreeMap<SocketAddr, u32>),
    /// An error, with when it came.
    Error(String, Instant),
}

/// The set a recovered watch has built, and the events that built it.
pub struct View {
    stream: Box<dyn Stream<Item = SourceEvent> + Send + Unpin>,
    /// Address → weight.
    set: BTreeMap<SocketAddr, u32>,
    /// Every event so far.
    pub seen: Vec<Seen>,
    what: String,
    deadline: Duration,
}

impl View {
    /// Watches `query` on `registry` through [`recover`] with `backoff`.
    pub fn watch(
        registry: Arc<dyn Registry>,
        query: ServiceQuery,
        backoff: crate::Backoff,
        deadline: Duration,
    ) -> View {
        let what = format!("{} {query}", registry.kind());
        View {
            stream: Box::new(recover(registry, query, backoff)),
            set: BTreeMap::new(),
            seen: Vec::new(),
            what,
            deadline,
        }
    }

    /// The current set: address → weight.
    pub fn set(&self) -> &BTreeMap<SocketAddr, u32> {
        &self.set
    }

    /// Reads events until `done(set)` holds (checked before reading too); panics after the
    /// deadline with `step`, the set and the events seen.
    pub async fn until(
        &mut self,
        step: &str,
        mut done: impl FnMut(&BTreeMap<SocketAddr, u32>) -> bool,
    ) -> Duration {
        let started = Instant::now();
        while !done(&self.set) {
            let left = self.deadline.saturating_sub(started.elapsed());
            if self.next(left).await.is_none() {
                panic!(
                    "{}: {step}: not within {:?}; set {:?}; seen {:#?}",
                    self.what, self.deadline, self.set, self.seen
                );
            }
        }
        let took = started.elapsed();
        println!("{}: {step}: after {took:?}", self.what);
        took
    }

    /// Waits until the set is exactly `expected` (address → weight).
    pub async fn until_exactly(&mut self, step: &str, expected: &BTreeMap<SocketAddr, u32>) {
        self.until(step, |set| set == expected).await;
    }

    /// Reads events for `quiet` and returns how many arrived.
    pub async fn drain_for(&mut self, quiet: Duration) -> usize {
        let started = Instant::now();
        let mut count = 0;
        loop {
            let left = quiet.saturating_sub(started.elapsed());
            if left.is_zero() || self.next(left).await.is_none() {
                return count;
            }
            count += 1;
        }
    }

    /// The next event within `within`, applied to the set; `None` on timeout.
    pub async fn next(&mut self, within: Duration) -> Option<&Seen> {
        let event = match tokio::time::timeout(within, self.stream.next()).await {
            Ok(Some(event)) => event,
            Ok(None) => panic!("{}: recover's stream ended (it never should)", self.what),
            Err(_) => return None,
        };
        let seen = match event {
            SourceEvent::Update(update) => {
                let kind = self.apply(update);
                Seen::Update(kind, self.set.clone())
            }
            SourceEvent::Error(error) => Seen::Error(error.message().to_owned(), Instant::now()),
        };
        self.seen.push(seen);
        self.seen.last()
    }

    fn apply(&mut self, update: Update) -> &'static str {
        match update {
            Update::Reset(endpoints) => {
                self.set = endpoints.iter().map(|e| (e.address, e.weight)).collect();
                "Reset"
            }
            Update::Add(endpoints) => {
                self.set
                    .extend(endpoints.iter().map(|e| (e.address, e.weight)));
                "Add"
            }
            Update::Remove(addresses) => {
                for address in addresses {
                    self.set.remove(&address);
                }
                "Remove"
            }
            Update::DoesNotExist => {
                self.set.clear();
                "DoesNotExist"
            }
        }
    }

    /// Errors seen since event number `from`.
    pub fn errors_since(&self, from: usize) -> Vec<Instant> {
        self.seen[from.min(self.seen.len())..]
            .iter()
            .filter_map(|s| match s {
                Seen::Error(_, at) => Some(*at),
                Seen::Update(..) => None,
            })
            .collect()
    }
}
