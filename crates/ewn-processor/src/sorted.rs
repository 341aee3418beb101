//! A sorted sequence for the engine's per-key state, in a ring buffer.
//!
//! Most keys hold one to a few events, and a `BTreeMap` allocates a whole node (eleven
//! slots) for its first entry; a `VecDeque` holds a few in a few slots. In-order appends
//! and eviction of the oldest are O(1) at the two ends, lookups are binary searches, and
//! an out-of-order insertion moves the shorter side (bounded by the key's event budget).

use std::collections::VecDeque;
use std::sync::Arc;

/// A key ordered by event time first.
pub trait Timed: Ord {
    fn time(&self) -> i64;
}

impl Timed for (i64, Arc<str>) {
    fn time(&self) -> i64 {
        self.0
    }
}

impl Timed for (i64, Box<str>) {
    fn time(&self) -> i64 {
        self.0
    }
}

#[derive(Debug, Clone)]
pub struct Sorted<K, V = ()> {
    items: VecDeque<(K, V)>,
}

impl<K, V> Default for Sorted<K, V> {
    fn default() -> Self {
        Sorted {
            items: VecDeque::new(),
        }
    }
}

impl<K: Timed, V> Sorted<K, V> {
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    fn search(&self, k: &K) -> Result<usize, usize> {
        self.items.binary_search_by(|(x, _)| x.cmp(k))
    }

    /// The index of the first item at or after time `t`.
    fn at(&self, t: i64) -> usize {
        self.items.partition_point(|(k, _)| k.time() < t)
    }

    pub fn contains_key(&self, k: &K) -> bool {
        self.search(k).is_ok()
    }

    /// Inserts unless present; false when it was.
    pub fn insert(&mut self, k: K, v: V) -> bool {
        match self.search(&k) {
            Ok(_) => false,
            Err(i) if i == self.items.len() => {
                self.items.push_back((k, v));
                true
            }
            Err(i) => {
                self.items.insert(i, (k, v));
                true
            }
        }
    }

    pub fn remove(&mut self, k: &K) -> Option<V> {
        let i = self.search(k).ok()?;
        self.items.remove(i).map(|(_, v)| v)
    }

    pub fn first(&self) -> Option<&(K, V)> {
        self.items.front()
    }

    pub fn last(&self) -> Option<&(K, V)> {
        self.items.back()
    }

    pub fn pop_first(&mut self) -> Option<(K, V)> {
        self.items.pop_front()
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &(K, V)> {
        self.items.iter()
    }

    /// Items with `from <= time`.
    pub fn from_time(&self, from: i64) -> impl DoubleEndedIterator<Item = &(K, V)> {
        self.items.range(self.at(from)..)
    }

    /// Items with `from <= time <= to`.
    pub fn between(&self, from: i64, to: i64) -> impl DoubleEndedIterator<Item = &(K, V)> {
        let lo = self.at(from);
        let hi = self.at(to.saturating_add(1)).max(lo);
        self.items.range(lo..hi)
    }

    /// Removes and returns the items with `time < cut` (cost: what is removed).
    pub fn drain_before(&mut self, cut: i64) -> Vec<(K, V)> {
        let mut gone = Vec::new();
        while self.items.front().is_some_and(|(k, _)| k.time() < cut) {
            if let Some(x) = self.items.pop_front() {
                gone.push(x);
            }
        }
        gone
    }

    /// Removes the items with `from <= time < to`.
    pub fn remove_between(&mut self, from: i64, to: i64) {
        let lo = self.at(from);
        let hi = self.at(to).max(lo);
        self.items.drain(lo..hi);
    }

    /// Removes items for which `f` is true (linear; for small sets).
    pub fn remove_where(&mut self, mut f: impl FnMut(&K) -> bool) {
        self.items.retain(|(k, _)| !f(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(t: i64, id: &str) -> (i64, Arc<str>) {
        (t, Arc::from(id))
    }

    #[test]
    fn stays_sorted_and_answers_ranges() {
        let mut s: Sorted<(i64, Arc<str>), u32> = Sorted::default();
        for (t, id) in [(5, "e"), (1, "a"), (3, "c"), (3, "b"), (9, "z")] {
            assert!(s.insert(k(t, id), t as u32));
        }
        assert!(!s.insert(k(3, "b"), 0), "no duplicates");
        let order: Vec<i64> = s.iter().map(|(k, _)| k.0).collect();
        assert_eq!(order, [1, 3, 3, 5, 9]);
        assert_eq!(s.between(3, 5).count(), 3);
        assert_eq!(s.between(6, 8).count(), 0);
        assert_eq!(s.from_time(4).count(), 2);
        assert_eq!(s.drain_before(4).len(), 3);
        assert_eq!(s.first().map(|(k, _)| k.0), Some(5));
        s.remove_between(5, 6);
        assert_eq!(s.len(), 1);
        assert_eq!(s.remove(&k(9, "z")), Some(9));
        assert!(s.is_empty());
    }
}
