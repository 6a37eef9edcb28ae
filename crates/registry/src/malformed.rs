//! The malformed entries of a watch's answers, each counted once while it stays malformed.

use std::collections::HashSet;

use crate::RegistryMetrics;

/// The malformed entries of one watch: an entry is counted and logged
/// ([`RegistryMetrics::malformed`]) in the first answer that carries it, not again in each
/// next answer that still does; once an answer no longer carries it, it counts anew.
#[derive(Debug, Default)]
pub struct MalformedEntries {
    /// The malformed entries of the previous answer.
    previous: HashSet<String>,
    /// Those of the answer being decoded.
    current: HashSet<String>,
}

impl MalformedEntries {
    /// Records `what` (the entry and why it is skipped) for the answer being decoded; counts
    /// it unless the previous answer had it too.
    pub fn report(&mut self, metrics: &RegistryMetrics, registry: &str, what: String) {
        if !self.previous.contains(&what) {
            metrics.malformed(registry, &what);
        }
        self.current.insert(what);
    }

    /// Ends the answer being decoded: its entries are the ones the next answer is compared
    /// with.
    pub fn end_answer(&mut self) {
        self.previous = std::mem::take(&mut self.current);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_once_while_it_stays() {
        let metrics = RegistryMetrics::default();
        let mut entries = MalformedEntries::default();
        for _ in 0..3 {
            entries.report(&metrics, "r", "a: bad".into());
            entries.end_answer();
        }
        assert_eq!(metrics.errors(), 1);
        entries.end_answer(); // an answer without it
        entries.report(&metrics, "r", "a: bad".into());
        assert_eq!(metrics.errors(), 2);
    }
}
