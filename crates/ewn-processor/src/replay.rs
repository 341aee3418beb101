//! The replay guard: incident ids seen within the replay window, in bounded memory.
//!
//! Ids are kept as 128-bit keyed hashes (two SipHash-1-3 keys drawn at start: a sender
//! who does not know them cannot aim for a collision), 16 bytes each, in arrival order, so
//! forgetting the expired costs what expires. At `process.replay_max_ids` the oldest id is
//! forgotten early and counted: the window then covers fewer reports than configured (a
//! replay of a forgotten report is still caught downstream: its event time is late, and
//! alert ids are deterministic, so it cannot raise a second alert).

use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};

/// A hasher for keys that are already uniformly random hashes.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // The first 8 bytes of a keyed hash are as good a table hash as any.
        let mut b = [0u8; 8];
        let n = bytes.len().min(8);
        b[..n].copy_from_slice(&bytes[..n]);
        self.0 ^= u64::from_le_bytes(b);
    }
    fn write_usize(&mut self, _: usize) {
        // the array's length prefix: constant, carries nothing
    }
}

pub struct ReplayGuard {
    keys: (RandomState, RandomState),
    window_ms: i64,
    max_ids: usize,
    seen: HashSet<[u8; 16], BuildHasherDefault<Prehashed>>,
    /// Arrival time and id; byte arrays keep an entry at 24 bytes (a u128 would align it
    /// to 32).
    order: VecDeque<(i64, [u8; 16])>,
    /// Ids forgotten before their window ended, since the last take.
    forgotten_early: u64,
}

impl ReplayGuard {
    pub fn new(window_ms: i64, max_ids: usize) -> Self {
        ReplayGuard {
            keys: (RandomState::new(), RandomState::new()),
            window_ms,
            max_ids,
            seen: HashSet::default(),
            order: VecDeque::new(),
            forgotten_early: 0,
        }
    }

    fn hash(&self, id: &str) -> [u8; 16] {
        let a = self.keys.0.hash_one(id);
        let b = self.keys.1.hash_one(id);
        let mut h = [0u8; 16];
        h[..8].copy_from_slice(&a.to_le_bytes());
        h[8..].copy_from_slice(&b.to_le_bytes());
        h
    }

    /// True when the id was seen within the window; records it otherwise.
    pub fn repeated(&mut self, id: &str, now: i64) -> bool {
        let cutoff = now.saturating_sub(self.window_ms);
        while let Some(&(at, h)) = self.order.front() {
            if at >= cutoff {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&h);
        }
        let h = self.hash(id);
        if self.seen.contains(&h) {
            return true;
        }
        if self.seen.len() >= self.max_ids
            && let Some((_, oldest)) = self.order.pop_front()
        {
            self.seen.remove(&oldest);
            self.forgotten_early += 1;
        }
        self.seen.insert(h);
        self.order.push_back((now, h));
        false
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    pub fn take_forgotten_early(&mut self) -> u64 {
        std::mem::take(&mut self.forgotten_early)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_within_the_window_and_forgets_after() {
        let mut g = ReplayGuard::new(1000, 100);
        assert!(!g.repeated("a", 0));
        assert!(g.repeated("a", 500));
        assert!(!g.repeated("a", 1001), "expired");
        assert_eq!(g.len(), 1);
    }

    #[test]
    fn bounded_and_counted_at_the_bound() {
        let mut g = ReplayGuard::new(1_000_000, 3);
        for (t, id) in ["a", "b", "c", "d"].iter().enumerate() {
            assert!(!g.repeated(id, t as i64));
        }
        assert_eq!(g.len(), 3);
        assert_eq!(g.take_forgotten_early(), 1);
        assert!(!g.repeated("a", 10), "the oldest was forgotten");
        assert!(g.repeated("d", 10));
    }
}
