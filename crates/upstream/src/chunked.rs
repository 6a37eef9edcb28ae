//! A persistent sequence cut into shared chunks: what a snapshot's endpoint lists (and the
//! consistent-hash ring) are made of.
//!
//! [`Chunked`] is a vector split into leaves of at most [`MAX_LEAF`] items, each leaf behind
//! an `Arc`, plus the running item count (and, for weighted items, the running weight) in
//! front of each leaf. Cloning it copies the leaf pointers, not the items; changing an item
//! copies its leaf only (copy on write through `Arc::make_mut`) and patches the running
//! counts. So a snapshot built from the previous one by one change costs O(leaf size +
//! number of leaves), about O(√n), instead of O(n), and the two snapshots share every
//! other leaf.
//!
//! Items that implement [`Item`] with `WEIGHTED = true` get a running-sum index too:
//! [`Chunked::find_weight`] finds the item covering a point of the cumulative weight line
//! with two binary searches (weighted round robin and weighted random pick that way).
//! Items with `HINTED = true`, kept sorted by their `hint`, get the first hint of each leaf
//! in one dense array, so [`Chunked::seek_hint`] searches without visiting the leaves
//! (the consistent-hash ring, sorted by hash).

use std::sync::Arc;

/// Most items in one leaf. A leaf that grows past it splits in two.
pub const MAX_LEAF: usize = 512;
/// A leaf smaller than this merges with a neighbour.
const MIN_LEAF: usize = MAX_LEAF / 8;
/// Leaf size when a sequence is built from a vector.
const BUILD_LEAF: usize = MAX_LEAF / 2;

/// What [`Chunked`] indexes about its items.
pub trait Item {
    /// Whether the items carry weights worth indexing. Default false: no weight index is
    /// kept (and [`Chunked::find_weight`] finds nothing).
    const WEIGHTED: bool = false;

    /// The item's weight. Default 0.
    fn weight(&self) -> u64 {
        0
    }

    /// Whether the items are sorted by a `u64` hint worth indexing per leaf. Default
    /// false (and [`Chunked::seek_hint`] must not be used).
    const HINTED: bool = false;

    /// The item's sort hint. Default 0.
    fn hint(&self) -> u64 {
        0
    }
}

/// One chunk of items, with running weights when the items are weighted.
#[derive(Clone, Debug)]
struct Leaf<T> {
    items: Vec<T>,
    /// `cum[i]` = weight of `items[..=i]`; empty when `T` is not weighted.
    cum: Vec<u64>,
}

impl<T: Item> Leaf<T> {
    fn new(items: Vec<T>) -> Self {
        let mut leaf = Leaf {
            items,
            cum: Vec::new(),
        };
        leaf.reweigh(0);
        leaf
    }

    /// Recomputes the running weights from item `from` on.
    fn reweigh(&mut self, from: usize) {
        if !T::WEIGHTED {
            return;
        }
        self.cum.truncate(from);
        // As much room as the items have (exact for a new leaf, a little to spare after
        // an insert).
        if self.cum.capacity() < self.items.len() {
            self.cum
                .reserve_exact(self.items.capacity() - self.cum.len());
        }
        let mut sum = from.checked_sub(1).map_or(0, |i| self.cum[i]);
        for item in &self.items[from..] {
            sum = sum.wrapping_add(item.weight());
            self.cum.push(sum);
        }
    }

    /// Gives back the room a split left behind.
    fn shrink(&mut self) {
        self.items.shrink_to_fit();
        self.cum.shrink_to_fit();
    }

    fn weight(&self) -> u64 {
        self.cum.last().copied().unwrap_or(0)
    }
}

/// Makes room in `vec` for `more` items with little slack: a leaf is copied (exactly
/// sized) on every change while a snapshot shares it, and `Vec`'s doubling would then leave
/// each changed leaf up to twice its size (1,000 upstreams of 100 endpoints under churn:
/// +1.6 MiB). An eighth to spare keeps repeated inserts into an unshared leaf amortized.
fn grow_for<T>(vec: &mut Vec<T>, more: usize) {
    let needed = vec.len() + more;
    if needed > vec.capacity() {
        // Relative to the length: room for `more`, and an eighth of the new size to spare.
        vec.reserve_exact(more + needed / 8);
    }
}

/// A persistent, chunked sequence (see the module documentation). Never holds an empty
/// leaf.
#[derive(Debug)]
pub struct Chunked<T> {
    leaves: Vec<Arc<Leaf<T>>>,
    /// Items before each leaf; one entry more than leaves, the last being the length.
    starts: Vec<usize>,
    /// Weight before each leaf, laid out like `starts` (all 0 for unweighted items).
    weights: Vec<u64>,
    /// The first item's hint of each leaf (empty for unhinted items).
    firsts: Vec<u64>,
}

impl<T> Clone for Chunked<T> {
    fn clone(&self) -> Self {
        Chunked {
            leaves: self.leaves.clone(),
            starts: self.starts.clone(),
            weights: self.weights.clone(),
            firsts: self.firsts.clone(),
        }
    }
}

impl<T> Default for Chunked<T> {
    fn default() -> Self {
        Chunked {
            leaves: Vec::new(),
            starts: vec![0],
            weights: vec![0],
            firsts: Vec::new(),
        }
    }
}

impl<T: Clone + Item> Chunked<T> {
    /// An empty sequence.
    pub fn new() -> Self {
        Self::default()
    }

    /// A sequence of `items`, in their order.
    pub fn from_vec(items: Vec<T>) -> Self {
        let mut out = Chunked::new();
        let mut items = items.into_iter().peekable();
        while items.peek().is_some() {
            let leaf: Vec<T> = items.by_ref().take(BUILD_LEAF).collect();
            out.leaves.push(Arc::new(Leaf::new(leaf)));
        }
        out.fix_from(0);
        out
    }

    /// Number of items.
    #[inline]
    pub fn len(&self) -> usize {
        self.starts[self.leaves.len()]
    }

    /// Whether there is no item.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.leaves.is_empty()
    }

    /// Sum of the items' weights.
    #[inline]
    pub fn total_weight(&self) -> u64 {
        self.weights[self.leaves.len()]
    }

    /// The leaf holding item `index` (< len) and the offset in it.
    #[inline]
    fn locate(&self, index: usize) -> (usize, usize) {
        if self.leaves.len() == 1 {
            return (0, index);
        }
        let leaf = self.starts[1..self.leaves.len()].partition_point(|&s| s <= index);
        (leaf, index - self.starts[leaf])
    }

    /// The item at `index`.
    #[inline]
    pub fn get(&self, index: usize) -> Option<&T> {
        if index >= self.len() {
            return None;
        }
        let (leaf, offset) = self.locate(index);
        self.leaves[leaf].items.get(offset)
    }

    /// The items of `start..end` (clamped to the length), in order.
    pub fn range(&self, start: usize, end: usize) -> Iter<'_, T> {
        let end = end.min(self.len());
        let start = start.min(end);
        let (leaf, offset) = if start < end {
            self.locate(start)
        } else {
            (self.leaves.len(), 0)
        };
        Iter {
            leaves: &self.leaves,
            leaf,
            offset,
            remaining: end - start,
        }
    }

    /// Every item, in order.
    pub fn iter(&self) -> Iter<'_, T> {
        self.range(0, self.len())
    }

    /// The number of leading items for which `pred` holds, for a `pred` that holds for a
    /// prefix of the sequence (a binary search, like `slice::partition_point`).
    pub fn partition_point(&self, mut pred: impl FnMut(&T) -> bool) -> usize {
        // Leaves whose first item is in the prefix; the boundary is in the last of them.
        let full = self.leaves.partition_point(|leaf| pred(&leaf.items[0]));
        match full.checked_sub(1) {
            None => 0,
            Some(leaf) => self.starts[leaf] + self.leaves[leaf].items.partition_point(pred),
        }
    }

    /// The weight of the items before `index` (`index` ≤ len).
    pub fn weight_before(&self, index: usize) -> u64 {
        if index >= self.len() {
            return self.total_weight();
        }
        let (leaf, offset) = self.locate(index);
        let inside = offset
            .checked_sub(1)
            .map_or(0, |i| self.leaves[leaf].cum[i]);
        self.weights[leaf] + inside
    }

    /// The item whose slice of the cumulative weight line holds `x` (the first item
    /// whose running weight, itself included, exceeds `x`), with its index. `None` when
    /// `x ≥` [`Chunked::total_weight`] or the items are not weighted.
    #[inline]
    pub fn find_weight(&self, x: u64) -> Option<(usize, &T)> {
        if !T::WEIGHTED || x >= self.total_weight() {
            return None;
        }
        let n = self.leaves.len();
        let leaf = self.weights[1..n].partition_point(|&w| w <= x);
        let rest = x - self.weights[leaf];
        let node = &self.leaves[leaf];
        let offset = node.cum.partition_point(|&c| c <= rest);
        Some((self.starts[leaf] + offset, node.items.get(offset)?))
    }

    /// The first item whose hint is at least `h`, with its index; wraps around to the
    /// first item when there is none (a ring). `None` when empty. For hinted items kept
    /// sorted by hint.
    #[inline]
    pub fn seek_hint(&self, h: u64) -> Option<(usize, &T)> {
        debug_assert!(T::HINTED);
        let before = self.firsts.partition_point(|&f| f < h);
        let Some(leaf) = before.checked_sub(1) else {
            return Some((0, self.leaves.first()?.items.first()?));
        };
        let items = &self.leaves[leaf].items;
        let offset = items.partition_point(|item| item.hint() < h);
        match items.get(offset) {
            Some(item) => Some((self.starts[leaf] + offset, item)),
            // Past this leaf: the next leaf's first item, or the ring's first.
            None => match self.leaves.get(leaf + 1) {
                Some(next) => Some((self.starts[leaf + 1], &next.items[0])),
                None => Some((0, &self.leaves[0].items[0])),
            },
        }
    }

    /// Inserts `item` at `index` (≤ len), shifting the rest.
    pub fn insert(&mut self, index: usize, item: T) {
        assert!(index <= self.len(), "insert at {index} past the end");
        if self.leaves.is_empty() {
            self.leaves.push(Arc::new(Leaf::new(vec![item])));
            self.fix_from(0);
            return;
        }
        let (leaf, offset) = if index == self.len() {
            let last = self.leaves.len() - 1;
            (last, self.leaves[last].items.len())
        } else {
            self.locate(index)
        };
        let weight = item.weight();
        let node = Arc::make_mut(&mut self.leaves[leaf]);
        grow_for(&mut node.items, 1);
        node.items.insert(offset, item);
        node.reweigh(offset);
        if T::HINTED && offset == 0 {
            self.firsts[leaf] = node.items[0].hint();
        }
        if node.items.len() > MAX_LEAF {
            let tail = node.items.split_off(node.items.len() / 2);
            node.reweigh(node.items.len());
            node.shrink();
            self.leaves.insert(leaf + 1, Arc::new(Leaf::new(tail)));
            self.fix_from(leaf);
        } else {
            self.shift_from(leaf, 1, weight);
        }
    }

    /// Removes and returns the item at `index` (< len).
    pub fn remove(&mut self, index: usize) -> T {
        assert!(index < self.len(), "remove at {index} past the end");
        let (leaf, offset) = self.locate(index);
        let node = Arc::make_mut(&mut self.leaves[leaf]);
        let item = node.items.remove(offset);
        node.reweigh(offset);
        let size = node.items.len();
        let weight = item.weight();
        if size == 0 {
            self.leaves.remove(leaf);
            self.fix_from(leaf);
        } else if size < MIN_LEAF && self.leaves.len() > 1 {
            // Merge with a neighbour (splitting again when the two are too big together).
            let left = if leaf + 1 < self.leaves.len() {
                leaf
            } else {
                leaf - 1
            };
            let right = Arc::unwrap_or_clone(self.leaves.remove(left + 1));
            let node = Arc::make_mut(&mut self.leaves[left]);
            let from = node.items.len();
            grow_for(&mut node.items, right.items.len());
            node.items.extend(right.items);
            node.reweigh(from);
            if node.items.len() > MAX_LEAF {
                let tail = node.items.split_off(node.items.len() / 2);
                node.reweigh(node.items.len());
                node.shrink();
                self.leaves.insert(left + 1, Arc::new(Leaf::new(tail)));
            }
            self.fix_from(left);
        } else {
            if T::HINTED && offset == 0 {
                self.firsts[leaf] = self.leaves[leaf].items[0].hint();
            }
            self.shift_from(leaf, usize::MAX, weight.wrapping_neg());
        }
        item
    }

    /// Replaces the item at `index` (< len); returns the old one.
    pub fn set(&mut self, index: usize, item: T) -> T {
        let (leaf, offset) = self.locate(index);
        let weight = item.weight();
        let node = Arc::make_mut(&mut self.leaves[leaf]);
        let old = std::mem::replace(&mut node.items[offset], item);
        node.reweigh(offset);
        if T::HINTED && offset == 0 {
            self.firsts[leaf] = node.items[0].hint();
        }
        self.shift_from(leaf, 0, weight.wrapping_sub(old.weight()));
        old
    }

    /// Replaces every item for which `f` returns a new one, copying only the leaves that
    /// change. O(n) calls of `f`; the order must not change.
    pub fn replace_all(&mut self, mut f: impl FnMut(&T) -> Option<T>) {
        let mut first = None;
        for (index, leaf) in self.leaves.iter_mut().enumerate() {
            let changes: Vec<(usize, T)> = leaf
                .items
                .iter()
                .enumerate()
                .filter_map(|(i, item)| f(item).map(|new| (i, new)))
                .collect();
            let Some(&(from, _)) = changes.first() else {
                continue;
            };
            let node = Arc::make_mut(leaf);
            for (i, new) in changes {
                node.items[i] = new;
            }
            node.reweigh(from);
            first.get_or_insert(index);
        }
        if let Some(leaf) = first {
            // Hints must not change order; the first ones may change value.
            self.fix_from(leaf);
        }
    }

    /// Adds `count` items and `weight` to the running sums after leaf `leaf`, whose size
    /// or weight changed by that much (both in two's complement, to subtract). A pass
    /// over two arrays, without reading the leaves.
    fn shift_from(&mut self, leaf: usize, count: usize, weight: u64) {
        if count != 0 {
            for start in &mut self.starts[leaf + 1..] {
                *start = start.wrapping_add(count);
            }
        }
        if T::WEIGHTED && weight != 0 {
            for sum in &mut self.weights[leaf + 1..] {
                *sum = sum.wrapping_add(weight);
            }
        }
    }

    /// Recomputes the running counts and weights from leaf `leaf` on (after a leaf was
    /// split, merged, inserted or removed there).
    fn fix_from(&mut self, leaf: usize) {
        let n = self.leaves.len();
        self.starts.resize(n + 1, 0);
        self.weights.resize(n + 1, 0);
        for i in leaf..n {
            self.starts[i + 1] = self.starts[i] + self.leaves[i].items.len();
            self.weights[i + 1] = self.weights[i].wrapping_add(self.leaves[i].weight());
        }
        if T::HINTED {
            self.firsts.resize(n, 0);
            for i in leaf..n {
                self.firsts[i] = self.leaves[i].items[0].hint();
            }
        }
    }

    /// Leaves and their sizes, for tests of the structure's invariants.
    #[cfg(test)]
    fn leaf_sizes(&self) -> Vec<usize> {
        self.leaves.iter().map(|l| l.items.len()).collect()
    }
}

/// Iterator over a [`Chunked`] range.
#[derive(Clone, Debug)]
pub struct Iter<'a, T> {
    leaves: &'a [Arc<Leaf<T>>],
    leaf: usize,
    offset: usize,
    remaining: usize,
}

impl<'a, T> Iterator for Iter<'a, T> {
    type Item = &'a T;

    #[inline]
    fn next(&mut self) -> Option<&'a T> {
        if self.remaining == 0 {
            return None;
        }
        let mut items = &self.leaves[self.leaf].items;
        if self.offset == items.len() {
            self.leaf += 1;
            self.offset = 0;
            items = &self.leaves[self.leaf].items;
        }
        let item = &items[self.offset];
        self.offset += 1;
        self.remaining -= 1;
        Some(item)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl<T> ExactSizeIterator for Iter<'_, T> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, PartialEq)]
    struct W(u64);
    impl Item for W {
        const WEIGHTED: bool = true;
        fn weight(&self) -> u64 {
            self.0
        }
    }

    /// Sorted by value, hinted by it.
    #[derive(Clone, Debug, PartialEq)]
    struct H(u64);
    impl Item for H {
        const HINTED: bool = true;
        fn hint(&self) -> u64 {
            self.0
        }
    }

    fn check(seq: &Chunked<W>, model: &[u64]) {
        assert_eq!(seq.len(), model.len());
        let got: Vec<u64> = seq.iter().map(|w| w.0).collect();
        assert_eq!(got, model);
        assert_eq!(seq.total_weight(), model.iter().sum::<u64>());
        for (i, w) in model.iter().enumerate() {
            assert_eq!(seq.get(i), Some(&W(*w)));
        }
        assert_eq!(seq.get(model.len()), None);
        let sizes = seq.leaf_sizes();
        assert!(sizes.iter().all(|&s| s > 0 && s <= MAX_LEAF), "{sizes:?}");
        // Every point of the weight line maps to its item (sampled).
        let mut before = 0;
        for (i, w) in model.iter().enumerate() {
            assert_eq!(seq.weight_before(i), before);
            if *w > 0 {
                assert_eq!(seq.find_weight(before), Some((i, &W(*w))));
                assert_eq!(seq.find_weight(before + w - 1), Some((i, &W(*w))));
            }
            before += w;
        }
        assert_eq!(seq.find_weight(before), None);
    }

    #[test]
    fn a_shared_leaf_changed_once_is_copied_without_doubling() {
        let mut seq = Chunked::from_vec((0..100).map(W).collect());
        let built = &seq.leaves[0];
        assert_eq!(built.items.capacity(), 100);
        assert_eq!(
            built.cum.capacity(),
            100,
            "a new leaf's weights are exactly sized"
        );
        let mut slack = Vec::new();
        for round in 0..20u64 {
            let published = seq.clone(); // what a snapshot keeps: every leaf shared
            if round % 2 == 0 {
                seq.remove(10);
            } else {
                seq.insert(10, W(round));
            }
            let leaf = &seq.leaves[0];
            slack.push((leaf.items.capacity(), leaf.cum.capacity(), leaf.items.len()));
            drop(published);
        }
        for (items, cum, len) in slack {
            assert!(items <= len + len / 8 + 1, "items: {items} for {len}");
            assert!(cum <= len + len / 8 + 1, "cum: {cum} for {len}");
        }
    }

    #[test]
    fn random_edits_match_a_vector() {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut model: Vec<u64> = (0..3000).map(|_| rng.u64(0..5)).collect();
        let mut seq = Chunked::from_vec(model.iter().map(|&w| W(w)).collect());
        check(&seq, &model);
        for step in 0..6000 {
            let kept = seq.clone();
            let kept_model = model.clone();
            match rng.u8(0..3) {
                0 => {
                    let i = rng.usize(..=model.len());
                    let w = rng.u64(0..5);
                    model.insert(i, w);
                    seq.insert(i, W(w));
                }
                1 if !model.is_empty() => {
                    let i = rng.usize(..model.len());
                    assert_eq!(seq.remove(i), W(model.remove(i)));
                }
                _ if !model.is_empty() => {
                    let i = rng.usize(..model.len());
                    let w = rng.u64(0..5);
                    model[i] = w;
                    seq.set(i, W(w));
                }
                _ => {}
            }
            if step % 500 == 0 {
                check(&seq, &model);
                // The clone taken before the edit did not see it.
                check(&kept, &kept_model);
            }
        }
        // Drain to empty through removals (merges), then grow through inserts (splits).
        while !model.is_empty() {
            let i = rng.usize(..model.len());
            model.remove(i);
            seq.remove(i);
        }
        check(&seq, &model);
        for i in 0..2000 {
            model.push(i % 3);
            seq.insert(seq.len(), W(i % 3));
        }
        check(&seq, &model);
    }

    #[test]
    fn seek_hint_on_a_ring_under_edits() {
        let mut rng = fastrand::Rng::with_seed(11);
        let mut model: Vec<u64> = (0..3000).map(|_| rng.u64(..1_000_000)).collect();
        model.sort_unstable();
        let mut seq = Chunked::from_vec(model.iter().map(|&h| H(h)).collect());
        for step in 0..4000 {
            if rng.bool() || model.is_empty() {
                let h = rng.u64(..1_000_000);
                let at = model.partition_point(|&x| x < h);
                model.insert(at, h);
                seq.insert(seq.partition_point(|x| x.0 < h), H(h));
            } else {
                let at = rng.usize(..model.len());
                model.remove(at);
                seq.remove(at);
            }
            if step % 100 == 0 {
                for _ in 0..50 {
                    let h = rng.u64(..1_000_001);
                    let at = model.partition_point(|&x| x < h);
                    let want = if at == model.len() { 0 } else { at };
                    assert_eq!(seq.seek_hint(h), Some((want, &H(model[want]))), "{h}");
                }
                assert_eq!(seq.leaf_sizes().len(), seq.firsts.len());
            }
        }
        assert_eq!(Chunked::<H>::new().seek_hint(5), None);
    }

    #[test]
    fn partition_point_and_ranges() {
        let seq = Chunked::from_vec((0..2000).map(W).collect());
        assert_eq!(seq.partition_point(|w| w.0 < 1234), 1234);
        assert_eq!(seq.partition_point(|_| true), 2000);
        assert_eq!(seq.partition_point(|_| false), 0);
        let got: Vec<u64> = seq.range(250, 800).map(|w| w.0).collect();
        assert_eq!(got, (250..800).collect::<Vec<_>>());
        assert_eq!(seq.range(5, 5).count(), 0);
        assert_eq!(seq.range(1990, 5000).len(), 10);
    }

    #[test]
    fn replace_all_copies_only_changed_leaves() {
        let mut seq = Chunked::from_vec((0..2000).map(W).collect());
        let before = seq.clone();
        seq.replace_all(|w| (w.0 == 1500).then_some(W(1)));
        assert_eq!(seq.get(1500), Some(&W(1)));
        assert_eq!(before.get(1500), Some(&W(1500)));
        let shared = seq
            .leaves
            .iter()
            .zip(&before.leaves)
            .filter(|(a, b)| Arc::ptr_eq(a, b))
            .count();
        assert_eq!(shared, seq.leaves.len() - 1);
        assert_eq!(seq.total_weight(), (0..2000u64).sum::<u64>() - 1500 + 1);
    }
}
