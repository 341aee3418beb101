//! The correlate stage's partitions: which re-keyed partitions this member owns, and the
//! engine state of each. No Kafka here: the stage applies the consumer's assignment
//! changes *before* feeding a polled batch, so a record of a partition revoked during the
//! poll neither re-creates its state nor leads to a commit for a partition another member
//! now owns; a partition assigned again starts empty and replays from its committed
//! offset.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use ewn_model::{Alert, ScoredIncident};

use crate::correlate::{EngineSettings, Fed, PartitionState, RuleSet, Stats};
use crate::event::{Event, Interner};

/// A verified event that was not merged into some rules' windows, and why.
#[derive(Debug)]
pub struct NotMerged {
    pub event: Arc<Event>,
    pub fed: Fed,
    /// The partition's watermark when it arrived (for `LATE`).
    pub watermark: Option<i64>,
    pub rules: Vec<String>,
}

/// What feeding a batch produced.
#[derive(Debug, Default)]
pub struct Outputs {
    pub alerts: Vec<Alert>,
    pub not_merged: Vec<NotMerged>,
    /// Records of partitions not owned (revoked during the poll): skipped, not committed.
    pub unowned: u64,
    /// Records of an old assignment of a partition assigned again in the same poll: passed
    /// over (the new assignment reads them again from the committed offset).
    pub superseded: u64,
    /// (partition, offset) of undecodable records on the internal topic (a bug or a
    /// foreign writer): passed over, and reported.
    pub undecodable: Vec<(i32, i64)>,
    /// Late events per rule name.
    pub late: BTreeMap<String, u64>,
    /// (incident id, occurred_at, reported_at) of what was fed, for latency metrics.
    pub fed: Vec<(String, i64, i64)>,
}

pub struct Partitions {
    rules: Arc<RuleSet>,
    settings: EngineSettings,
    owned: BTreeMap<i32, PartitionState>,
    /// Shares the repeated strings of the events held (bounded).
    interner: Interner,
    /// Revoked since the last batch, and of those, assigned again: a polled batch may hold
    /// records of the old assignment before the change and of the new one after it.
    revoked: BTreeSet<i32>,
    restarted: BTreeSet<i32>,
}

/// Distinct strings (and reason lists) shared between held events, at most.
const INTERNED_MAX: usize = 100_000;

impl Partitions {
    pub fn new(rules: Arc<RuleSet>, settings: EngineSettings) -> Self {
        Partitions {
            rules,
            settings,
            owned: BTreeMap::new(),
            interner: Interner::new(INTERNED_MAX),
            revoked: BTreeSet::new(),
            restarted: BTreeSet::new(),
        }
    }

    pub fn assign(&mut self, partition: i32) {
        if self.revoked.contains(&partition) {
            self.restarted.insert(partition);
        }
        self.owned.insert(
            partition,
            PartitionState::new(self.rules.clone(), self.settings.clone()),
        );
    }

    pub fn revoke(&mut self, partition: i32) {
        self.owned.remove(&partition);
        self.revoked.insert(partition);
    }

    /// Feeds a polled batch after the changes of its poll were applied. For a partition
    /// revoked and assigned again during the poll, the records before its offsets went
    /// back (those of the old assignment: the new one starts from the committed offset and
    /// reads them again) are passed over, so the fresh state starts where its replay does.
    pub fn feed_batch(
        &mut self,
        batch: Vec<(i32, i64, Option<ScoredIncident>)>,
        now: i64,
        out: &mut Outputs,
    ) {
        let mut skip: BTreeMap<i32, usize> = BTreeMap::new();
        for p in &self.restarted {
            let mut last: Option<i64> = None;
            let mut seen = 0;
            for (partition, offset, _) in &batch {
                if partition != p {
                    continue;
                }
                if last.is_some_and(|l| *offset < l) {
                    skip.insert(*p, seen);
                }
                last = Some(*offset);
                seen += 1;
            }
        }
        let mut seen: BTreeMap<i32, usize> = BTreeMap::new();
        for (partition, offset, record) in batch {
            let n = seen.entry(partition).or_default();
            *n += 1;
            if skip.get(&partition).is_some_and(|k| *n <= *k) {
                out.superseded += 1;
                continue;
            }
            self.feed(partition, offset, record, now, out);
        }
        self.revoked.clear();
        self.restarted.clear();
    }

    pub fn owned(&self) -> impl Iterator<Item = i32> + '_ {
        self.owned.keys().copied()
    }

    pub fn replace_rules(&mut self, rules: Arc<RuleSet>) {
        for state in self.owned.values_mut() {
            state.replace_rules(rules.clone());
        }
        self.rules = rules;
    }

    pub fn rules(&self) -> &Arc<RuleSet> {
        &self.rules
    }

    /// Feeds one polled record at processing time `now`.
    pub fn feed(
        &mut self,
        partition: i32,
        offset: i64,
        record: Option<ScoredIncident>,
        now: i64,
        out: &mut Outputs,
    ) {
        let Some(state) = self.owned.get_mut(&partition) else {
            out.unowned += 1;
            return;
        };
        let Some((group, key, event)) =
            record.and_then(|r| Event::from_record(r, &mut self.interner))
        else {
            out.undecodable.push((partition, offset));
            tracing::error!(
                partition,
                offset,
                "undecodable record on the internal re-keyed topic; skipped"
            );
            // Still read: the next commit moves past it.
            state.feed_nothing(offset);
            return;
        };
        let event = Arc::new(event);
        out.fed.push((
            event.incident_id.to_string(),
            event.occurred_at,
            event.reported_at,
        ));
        let watermark = state.watermark();
        let fed = state.feed(group, &key, &event, offset, now, &mut out.alerts);
        for kind in [Fed::Late, Fed::Refused] {
            let rules: Vec<String> = fed
                .iter()
                .filter(|(_, f)| *f == kind)
                .map(|(ri, _)| self.rules.rules[*ri].name().to_string())
                .collect();
            if rules.is_empty() {
                continue;
            }
            if kind == Fed::Late {
                for r in &rules {
                    *out.late.entry(r.clone()).or_default() += 1;
                }
            }
            out.not_merged.push(NotMerged {
                event: event.clone(),
                fed: kind,
                watermark,
                rules,
            });
        }
    }

    /// Decisions, coalesced UPDATEs and eviction after a batch.
    pub fn tick(&mut self, now: i64, out: &mut Outputs) {
        for state in self.owned.values_mut() {
            state.tick(now, &mut out.alerts);
        }
    }

    /// The offset each owned partition may commit.
    pub fn commits(&self) -> Vec<(i32, i64)> {
        self.owned
            .iter()
            .filter_map(|(p, s)| s.commit_offset().map(|o| (*p, o)))
            .collect()
    }

    pub fn states(&mut self) -> impl Iterator<Item = (i32, &mut PartitionState)> {
        self.owned.iter_mut().map(|(p, s)| (*p, s))
    }

    /// Counters of every owned partition since the last call, summed.
    pub fn take_stats(&mut self) -> Stats {
        let mut all = Stats::default();
        for s in self.owned.values_mut() {
            let st = s.take_stats();
            for (ri, n) in st.refused {
                *all.refused.entry(ri).or_default() += n;
            }
            for (ri, n) in st.keys_evicted {
                *all.keys_evicted.entry(ri).or_default() += n;
            }
            all.updates_coalesced += st.updates_coalesced;
            all.untracked_sources += st.untracked_sources;
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{GroupBy, default_rules};
    use crate::score::ScoreWeights;

    fn record(id: &str, t: i64, state: &str, subject: &str) -> ScoredIncident {
        let e = crate::correlate::tests::event(id, t, state, subject);
        e.to_record(GroupBy::Subject, subject)
    }

    fn parts() -> Partitions {
        let rules = Arc::new(RuleSet::new(default_rules(), ScoreWeights::default()).unwrap());
        Partitions::new(rules, EngineSettings::with_lateness(300_000))
    }

    #[test]
    fn records_of_a_partition_not_owned_are_skipped_and_never_committed() {
        let mut p = parts();
        let mut out = Outputs::default();
        p.assign(0);
        p.feed(0, 10, Some(record("a", 1_000, "KZ", "s")), 1_000, &mut out);
        p.revoke(0);
        p.feed(0, 11, Some(record("b", 2_000, "KG", "s")), 2_000, &mut out);
        assert_eq!(out.unowned, 1);
        assert!(out.alerts.is_empty(), "the revoked state did not come back");
        assert_eq!(p.commits(), vec![]);
        p.assign(1);
        p.feed(1, 5, Some(record("c", 3_000, "KG", "s")), 3_000, &mut out);
        assert_eq!(
            p.commits(),
            vec![(1, 5)],
            "held from the event's own offset"
        );
    }

    /// A poll that read records of the old assignment, then saw the partition revoked and
    /// assigned again, then read it again from the committed offset: the fresh state starts
    /// at the committed offset, not where the old assignment had got to.
    #[test]
    fn records_of_an_old_assignment_do_not_start_the_new_one() {
        let mut p = parts();
        let mut out = Outputs::default();
        p.assign(0);
        p.feed_batch(
            vec![(0, 10, Some(record("a", 1_000, "KZ", "s")))],
            1_000,
            &mut out,
        );
        p.revoke(0);
        p.assign(0);
        let batch = vec![
            (0, 13, Some(record("x", 4_000, "KZ", "t"))),
            (0, 14, Some(record("y", 5_000, "KZ", "u"))),
            (0, 10, Some(record("a", 1_000, "KZ", "s"))),
            (0, 11, Some(record("b", 2_000, "KG", "s"))),
        ];
        p.feed_batch(batch, 6_000, &mut out);
        assert_eq!(out.superseded, 2);
        assert_eq!(p.commits(), vec![(0, 10)], "held from the committed offset");
        assert_eq!(out.alerts.len(), 1, "s seen in KZ and KG");
        // A later batch of the same assignment is fed whole.
        let mut out = Outputs::default();
        p.feed_batch(
            vec![(0, 12, Some(record("c", 3_000, "TJ", "v")))],
            6_000,
            &mut out,
        );
        assert_eq!(out.superseded, 0);
    }

    #[test]
    fn an_undecodable_record_is_skipped_but_passed() {
        let mut p = parts();
        let mut out = Outputs::default();
        p.assign(0);
        p.feed(0, 7, None, 0, &mut out);
        assert_eq!(out.undecodable, [(0, 7)]);
        assert_eq!(p.commits(), vec![(0, 8)]);
    }
}
