//! The live subscription set, mirrored from the compacted `<prefix>subscriptions` topic.
//! Every instance reads the whole topic, so an update made through any instance's admin
//! API (or a 410 that disabled an endpoint) reaches all of them.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use ewn_model::Subscription;

pub struct SubscriptionSet {
    map: RwLock<BTreeMap<String, Arc<Subscription>>>,
    /// Id -> when it was deleted (by an authenticated deletion record), so an older record
    /// read after the deletion does not bring the subscription back. Bounded like the
    /// set: past it the oldest deletion is forgotten (by then compaction has removed the
    /// records it guards against).
    deleted: RwLock<HashMap<String, i64>>,
    /// At most this many subscriptions (`fanout.max_subscriptions`).
    capacity: usize,
}

/// A new subscription past `fanout.max_subscriptions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

impl Default for SubscriptionSet {
    fn default() -> Self {
        SubscriptionSet::new(usize::MAX)
    }
}

impl SubscriptionSet {
    pub fn new(capacity: usize) -> Self {
        SubscriptionSet {
            map: RwLock::new(BTreeMap::new()),
            deleted: RwLock::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Would a subscription with this id be refused as one too many?
    pub fn is_full_for(&self, id: &str) -> bool {
        let map = self.map.read().unwrap_or_else(|p| p.into_inner());
        !map.contains_key(id) && map.len() >= self.capacity
    }

    /// A snapshot for one batch: cheap (`Arc`s), and consistent within the batch.
    pub fn snapshot(&self) -> Vec<Arc<Subscription>> {
        self.map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    pub fn get(&self, id: &str) -> Option<Arc<Subscription>> {
        self.map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    /// Applies a record of the topic: a value upserts (unless older than what is held, so
    /// a replayed record cannot undo a newer one), none deletes.
    pub fn apply(&self, id: &str, value: Option<Subscription>) -> Result<(), Full> {
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        match value {
            None => {
                map.remove(id);
            }
            Some(s) => {
                if map.get(id).is_some_and(|old| old.updated_at > s.updated_at) {
                    return Ok(());
                }
                let deleted = self.deleted.read().unwrap_or_else(|p| p.into_inner());
                if deleted.get(id).is_some_and(|&at| at >= s.updated_at) {
                    return Ok(());
                }
                if !map.contains_key(id) && map.len() >= self.capacity {
                    return Err(Full);
                }
                map.insert(id.to_string(), Arc::new(s));
            }
        }
        Ok(())
    }

    /// Applies a deletion made at `at`: removes the subscription unless it was written
    /// later, and remembers the deletion.
    pub fn delete(&self, id: &str, at: i64) {
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        if map.get(id).is_some_and(|held| held.updated_at > at) {
            return;
        }
        map.remove(id);
        let mut deleted = self.deleted.write().unwrap_or_else(|p| p.into_inner());
        let when = deleted.entry(id.to_string()).or_insert(at);
        *when = (*when).max(at);
        if deleted.len() > self.capacity {
            let oldest = deleted
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(id, _)| id.clone());
            if let Some(oldest) = oldest {
                deleted.remove(&oldest);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.map.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Does `a` define the same subscription as `b`, ignoring when it was written and whether
/// it was disabled? (A restart re-seeds configured subscriptions only when they changed,
/// so a 410 that disabled one is not undone by a restart.)
pub fn same_definition(a: &Subscription, b: &Subscription) -> bool {
    let strip = |s: &Subscription| Subscription {
        updated_at: 0,
        disabled_at: None,
        disabled_reason: None,
        ..s.clone()
    };
    strip(a) == strip(b)
}
