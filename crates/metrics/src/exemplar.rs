//! One OpenMetrics exemplar slot: the trace id, value and time of the latest traced
//! observation that fell into a histogram bucket.
//!
//! Lock-free: the slot is a sequence lock of plain atomics. A writer claims the slot by
//! moving its sequence from even to odd with one compare-exchange; if another writer holds
//! it (the sequence is odd or moved), the observation keeps no exemplar and goes on: the
//! request path never waits and never spins. A reader (a scrape) copies the fields and
//! keeps the copy only if the sequence was even and unchanged around it, retrying a
//! bounded number of times.

use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A W3C trace id (16 bytes; all zero is invalid and never stored).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceId(pub [u8; 16]);

impl std::fmt::Display for TraceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

/// An exemplar read out of a slot.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Exemplar {
    /// The traced request's trace id.
    pub trace_id: TraceId,
    /// The observed value (seconds).
    pub value: f64,
    /// When it was observed.
    pub at: SystemTime,
}

/// The slot (see the module docs). Empty until the first traced observation.
#[derive(Debug, Default)]
pub struct Slot {
    /// Even: stable; odd: a writer is storing. 0: never written.
    sequence: AtomicU64,
    trace_hi: AtomicU64,
    trace_lo: AtomicU64,
    value_bits: AtomicU64,
    /// Nanoseconds since the Unix epoch.
    at_ns: AtomicU64,
}

/// How often a reader retries a slot a writer is storing into, before leaving it out.
const READ_ATTEMPTS: usize = 4;

impl Slot {
    /// Stores an exemplar, unless another writer is storing into the slot right now (then
    /// this one is dropped: never a wait). Returns whether it was stored.
    pub fn store(&self, trace_id: TraceId, value: f64, at: SystemTime) -> bool {
        let sequence = self.sequence.load(Ordering::Relaxed);
        if sequence % 2 == 1
            || self
                .sequence
                .compare_exchange(sequence, sequence + 1, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
        {
            return false;
        }
        // The odd sequence is visible before any field changes.
        fence(Ordering::Release);
        let id = u128::from_be_bytes(trace_id.0);
        self.trace_hi.store((id >> 64) as u64, Ordering::Relaxed);
        self.trace_lo.store(id as u64, Ordering::Relaxed);
        self.value_bits.store(value.to_bits(), Ordering::Relaxed);
        let ns = at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos().min(u128::from(u64::MAX)) as u64);
        self.at_ns.store(ns, Ordering::Relaxed);
        self.sequence.store(sequence + 2, Ordering::Release);
        true
    }

    /// The exemplar stored last, if any (and if no writer kept the slot busy for every
    /// attempt).
    pub fn load(&self) -> Option<Exemplar> {
        for _ in 0..READ_ATTEMPTS {
            let before = self.sequence.load(Ordering::Acquire);
            if before == 0 {
                return None;
            }
            if before % 2 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let hi = self.trace_hi.load(Ordering::Relaxed);
            let lo = self.trace_lo.load(Ordering::Relaxed);
            let value = f64::from_bits(self.value_bits.load(Ordering::Relaxed));
            let at_ns = self.at_ns.load(Ordering::Relaxed);
            fence(Ordering::Acquire);
            if self.sequence.load(Ordering::Relaxed) == before {
                let id = (u128::from(hi) << 64) | u128::from(lo);
                return Some(Exemplar {
                    trace_id: TraceId(id.to_be_bytes()),
                    value,
                    at: UNIX_EPOCH + Duration::from_nanos(at_ns),
                });
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_latest() {
        let slot = Slot::default();
        assert_eq!(slot.load(), None);
        let at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert!(slot.store(TraceId([1; 16]), 0.5, at));
        assert!(slot.store(TraceId([0xab; 16]), 0.25, at));
        let read = slot.load().unwrap();
        assert_eq!(read.trace_id, TraceId([0xab; 16]));
        assert_eq!(read.value, 0.25);
        assert_eq!(read.at, at);
        assert_eq!(read.trace_id.to_string(), "ab".repeat(16));
    }

    #[test]
    fn a_busy_slot_drops_the_write_instead_of_waiting() {
        let slot = Slot::default();
        // A writer mid-store (odd sequence): the next one gives up at once.
        slot.sequence.store(1, Ordering::Relaxed);
        assert!(!slot.store(TraceId([2; 16]), 1.0, SystemTime::now()));
        assert_eq!(slot.load(), None, "a reader leaves a slot mid-store out");
    }

    #[test]
    fn readers_never_see_a_torn_exemplar() {
        let slot = Slot::default();
        std::thread::scope(|scope| {
            for t in 1..=3u8 {
                let slot = &slot;
                scope.spawn(move || {
                    for _ in 0..20_000 {
                        slot.store(TraceId([t; 16]), f64::from(t), UNIX_EPOCH);
                    }
                });
            }
            for _ in 0..20_000 {
                if let Some(e) = slot.load() {
                    // Every byte of the id and the value come from the same writer.
                    assert!(e.trace_id.0.iter().all(|&b| b == e.trace_id.0[0]), "{e:?}");
                    assert_eq!(f64::from(e.trace_id.0[0]), e.value);
                }
            }
        });
    }
}
