//! The correlation engine: event-time windows per (rule, key), pure and deterministic.
//!
//! For each (rule, key) the engine keeps the matching events sorted by (event time,
//! incident id) and the *canonical* episodes of them, the same whatever order the events
//! arrived in: scanning in event time, the earliest event at which the rule's condition
//! holds within `window` starts an episode `[start, start + cooldown]`; every matching
//! event inside it is evidence of that alert; the scan resumes after it.
//!
//! - a new episode raises an `ALERT` (id = hash of rule, key and window start);
//! - an episode that gained evidence raises an `UPDATE` referencing the alert, at most one
//!   per `process.alerts.update_interval_secs` (coalesced, carrying the latest state);
//! - an emitted episode that no longer exists (an out-of-order event moved the window, or
//!   an absence was explained after all) raises a `CANCEL` referencing it.
//!
//! Cost. An event that arrives in event-time order for its key (the common case) is
//! decided by a constant number of ordered-index lookups, whatever the key holds: the
//! earliest start it can complete is found directly (threshold: the first event within
//! `window` before it; distinct: the latest time of each value; sequence and absence:
//! separate indexes of the `first` and `then` events). An event that arrives out of order
//! re-scans the key from the last episode that ended before anything it can change (at
//! most lateness + window + cooldown of events). Eviction walks only the keys whose oldest
//! event expired (an index by expiry time), and counts are kept, not recounted.
//!
//! Bounds. Per partition, each rule holds at most `process.state.max_keys_per_rule` keys
//! (at the bound the key whose events are oldest is evicted and counted) and each key at
//! most `max_events_per_key` events (further events are refused, reported `STATE_LIMIT`,
//! counted, and the open episode's alert says `EVENTS_PER_KEY` with the refused count).
//!
//! Event time: see [`crate::watermark`]. An event older than the partition's watermark is
//! *late*: counted and reported, never merged. State older than every window that could
//! still change is evicted, and the lowest offset still held is what the caller may
//! commit, so a restart replays exactly the input that rebuilds the open windows.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use ewn_model::{Alert, MsgType, Tlp};
use serde::{Deserialize, Serialize};

pub use crate::alert::alert_id;
use crate::alert::{AlertSettings, Head, build, cancel_id, evicted_id, update_id};
use crate::event::Sym;
pub use crate::event::{Event, event_of};
use crate::rules::{Condition, GroupBy, Rule, RuleConfig};
use crate::score::ScoreWeights;
use crate::sorted::Sorted;
use crate::watermark::Watermarks;

/// The `[process.state]` section: what one partition's correlation state may hold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateSettings {
    /// Keys per rule per partition; at the bound the key with the oldest events goes.
    pub max_keys_per_rule: usize,
    /// Events per (rule, key); further events are refused (`STATE_LIMIT`).
    pub max_events_per_key: usize,
    /// Events per rule per partition, whatever the keys: at the bound the keys with the
    /// oldest events go (counted) until a new one fits. With `max_keys_per_rule`, what
    /// bounds a partition's memory.
    pub max_events_per_rule: usize,
    /// Event-time sources tracked per partition (see the watermark).
    pub max_sources: usize,
}

impl Default for StateSettings {
    fn default() -> Self {
        StateSettings {
            max_keys_per_rule: 60_000,
            max_events_per_key: 20_000,
            max_events_per_rule: 100_000,
            max_sources: 10_000,
        }
    }
}

impl StateSettings {
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        for (name, v) in [
            ("max_keys_per_rule", self.max_keys_per_rule),
            ("max_events_per_key", self.max_events_per_key),
            ("max_events_per_rule", self.max_events_per_rule),
            ("max_sources", self.max_sources),
        ] {
            if v == 0 {
                p.push(format!("process.state.{name}: must be at least 1"));
            }
        }
        p
    }
}

/// Everything a partition's engine is configured with apart from the rules.
#[derive(Clone, Debug, PartialEq)]
pub struct EngineSettings {
    pub lateness_ms: i64,
    /// A source silent this long stops holding the watermark; a partition with no active
    /// source lets absences be decided by the clock.
    pub idle_ms: i64,
    pub state: StateSettings,
    pub alerts: AlertSettings,
}

impl EngineSettings {
    /// Defaults with the given lateness (tests and tools).
    pub fn with_lateness(lateness_ms: i64) -> Self {
        EngineSettings {
            lateness_ms,
            idle_ms: 10_000,
            state: StateSettings::default(),
            alerts: AlertSettings::default(),
        }
    }
}

/// What the engine did with an event for one rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fed {
    Accepted,
    /// Older than the partition's watermark: not merged.
    Late,
    Duplicate,
    /// The rule's filter does not match.
    Ignored,
    /// The key's state budget is full: not merged (reported `STATE_LIMIT`).
    Refused,
}

/// The rules of one processor, shared by every partition.
pub struct RuleSet {
    pub rules: Vec<Rule>,
    pub weights: ScoreWeights,
    pub alerts: AlertSettings,
}

impl RuleSet {
    /// The enabled rules; every problem of every rule otherwise.
    pub fn new(configs: Vec<RuleConfig>, weights: ScoreWeights) -> Result<RuleSet, Vec<String>> {
        let mut rules = Vec::new();
        let mut problems = Vec::new();
        for c in configs.into_iter().filter(|c| c.enabled) {
            match Rule::try_from(c) {
                Ok(r) => rules.push(r),
                Err(p) => problems.extend(p),
            }
        }
        if problems.is_empty() {
            Ok(RuleSet {
                rules,
                weights,
                alerts: AlertSettings::default(),
            })
        } else {
            Err(problems)
        }
    }

    pub fn with_alerts(mut self, alerts: AlertSettings) -> Self {
        self.alerts = alerts;
        self
    }

    /// An alert of `rule` from its evidence, bounded by the alert settings.
    pub fn build(&self, head: Head<'_>, members: &[&Event]) -> Alert {
        build(head, members, &self.weights, &self.alerts)
    }

    /// The group-by fields some stateful rule uses.
    pub fn stateful_groups(&self) -> BTreeSet<GroupBy> {
        self.rules
            .iter()
            .map(|r| r.group_by())
            .filter(|g| *g != GroupBy::Incident)
            .collect()
    }

    /// Alerts of the immediate (`group_by = "incident"`) rules for one event: no state.
    pub fn immediate(&self, event: &Event, now_ms: i64, out: &mut Vec<Alert>) {
        for rule in self
            .rules
            .iter()
            .filter(|r| r.group_by() == GroupBy::Incident && r.admits(event))
        {
            let key = rule.alert_key(&event.incident_id);
            let head = Head {
                rule,
                key: &key,
                msg_type: MsgType::Alert,
                alert_id: alert_id(rule.name(), &key, event.occurred_at),
                references: vec![],
                start: event.occurred_at,
                now_ms,
                refused: 0,
            };
            out.push(self.build(head, &[event]));
        }
    }
}

type Id = Arc<str>;
/// Events sorted by (event time, incident id).
type Pos = (i64, Id);

#[derive(Clone, Debug)]
struct Held {
    offset: i64,
    event: Arc<Event>,
}

#[derive(Clone, Debug)]
struct Episode {
    id: String,
    /// Member events now.
    members: usize,
    /// Members and refused count in the last message emitted.
    emitted: (usize, u64),
    /// Processing time of the last message emitted.
    emitted_at: i64,
    /// The strictest TLP and the level of the last message emitted: a CANCEL carries them.
    tlp: Tlp,
    level: ewn_model::Level,
    flush_scheduled: bool,
}

/// The state of one (rule, key).
#[derive(Default)]
struct KeyState {
    events: Sorted<Pos, Held>,
    /// Sequence and absence rules: the positions of `first` and `then` events.
    firsts: Sorted<Pos>,
    thens: Sorted<Pos>,
    /// Absence rules: `first` events after the last episode, not explained yet.
    pending: Sorted<Pos>,
    /// Distinct rules: each value by the latest time it was seen (one entry per value).
    by_latest: Sorted<(i64, Box<str>)>,
    /// Canonical episodes by window start.
    episodes: BTreeMap<i64, Episode>,
    /// The entry of this key in the rule's expiry index.
    expiry: i64,
    /// Events refused at the budget (reported in the open episode's alert).
    refused: u64,
    /// Events per reporting state, kept only while the key holds at least half its budget
    /// (see [`state_share`]).
    by_state: Option<HashMap<Sym, usize>>,
    /// Estimated bytes held.
    bytes: usize,
}

impl KeyState {
    fn last_end(&self, rule: &Rule) -> Option<i64> {
        self.episodes
            .last_key_value()
            .map(|(s, _)| s.saturating_add(rule.cooldown))
    }

    fn members(&self, rule: &Rule, start: i64) -> Vec<&Event> {
        self.range(start, start.saturating_add(rule.cooldown))
            .filter(|h| rule.is_member(&h.event))
            .map(|h| h.event.as_ref())
            .collect()
    }

    /// Events with `from <= t <= to`.
    fn range(&self, from: i64, to: i64) -> impl Iterator<Item = &Held> {
        self.events.between(from, to).map(|(_, h)| h)
    }
}

fn first_at_or_after(set: &Sorted<Pos>, t: i64) -> Option<i64> {
    set.from_time(t).next().map(|((t, _), _)| *t)
}

/// Is there a `then` event with `from <= t <= to` (and not at `except`)?
/// Events of `state` in a key holding at least half its budget (the counts are kept from
/// then on; built once when the key gets there).
fn state_share(ks: &KeyState, state: &str) -> usize {
    ks.by_state
        .as_ref()
        .map_or(0, |c| c.get(state).copied().unwrap_or(0))
}

fn count_states(events: &Sorted<Pos, Held>) -> HashMap<Sym, usize> {
    let mut c: HashMap<Sym, usize> = HashMap::new();
    for (_, h) in events.iter() {
        *c.entry(h.event.state.clone()).or_default() += 1;
    }
    c
}

/// Two ordered lookups whatever the key holds (a flood of `then` events at `except` is
/// not walked).
fn any_then(ks: &KeyState, from: i64, to: i64, except: Option<i64>) -> bool {
    match except {
        Some(x) if (from..=to).contains(&x) => {
            ks.thens.between(from, x.saturating_sub(1)).next().is_some()
                || ks.thens.between(x.saturating_add(1), to).next().is_some()
        }
        _ => ks.thens.between(from, to).next().is_some(),
    }
}

/// Rough bytes of a key held for one rule: its entry in the key map and the expiry index,
/// and its state's buffers (measured by `make soak-state` against RSS).
fn key_bytes(key: &str) -> usize {
    2 * (std::mem::size_of::<KeyState>() + 48) + 2 * key.len() + 256
}

/// Rough bytes of an event held for one rule: the event, its id, and the index entries
/// (the strings and reasons it shares with other events are not counted per event).
fn event_bytes(e: &Event) -> usize {
    std::mem::size_of::<Event>()
        + 2 * 16
        + e.incident_id.len()
        + e.subjects.iter().map(|s| s.len() + 24).sum::<usize>()
        + 96
}

#[derive(Default)]
struct RuleState {
    keys: HashMap<Id, KeyState>,
    /// (time at which the key's oldest event may be evicted, key).
    expiry: BTreeSet<(i64, Id)>,
    events: usize,
    bytes: usize,
}

/// Counters since the last [`PartitionState::take_stats`], per rule index.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    pub refused: BTreeMap<usize, u64>,
    pub keys_evicted: BTreeMap<usize, u64>,
    pub updates_coalesced: u64,
    pub untracked_sources: u64,
}

/// Correlation state of one input partition (of the re-keyed stream).
pub struct PartitionState {
    rules: Arc<RuleSet>,
    settings: EngineSettings,
    marks: Watermarks,
    /// A floor for *deciding* absences, from the clock while no source is active. Never
    /// used for lateness: an event is late only by event time.
    decide_floor: Option<i64>,
    states: Vec<RuleState>,
    /// Absence decisions due at an event time: (due, rule, key).
    timers: BTreeSet<(i64, usize, Id)>,
    /// Coalesced UPDATEs due at a processing time: (due, rule, key, start).
    flushes: BTreeSet<(i64, usize, Id, i64)>,
    /// Offsets of the events held, with multiplicity.
    held: BTreeMap<i64, usize>,
    next_offset: Option<i64>,
    stats: Stats,
}

impl PartitionState {
    pub fn new(rules: Arc<RuleSet>, settings: EngineSettings) -> Self {
        let states = rules.rules.iter().map(|_| RuleState::default()).collect();
        PartitionState {
            marks: Watermarks::new(
                settings.lateness_ms,
                settings.idle_ms,
                settings.state.max_sources,
            ),
            rules,
            settings,
            decide_floor: None,
            states,
            timers: BTreeSet::new(),
            flushes: BTreeSet::new(),
            held: BTreeMap::new(),
            next_offset: None,
            stats: Stats::default(),
        }
    }

    /// The partition's watermark (see [`crate::watermark`]).
    pub fn watermark(&self) -> Option<i64> {
        self.marks.watermark()
    }

    /// Lets pending absences be decided up to `time` even without newer events (a quiet
    /// partition follows the clock, so absence rules still decide in a quiet network).
    /// Lateness is unaffected: it is judged by event time alone, so a replay after a
    /// restart, or a report delayed in a quiet hour, is still merged.
    pub fn decide_until(&mut self, time: i64) {
        self.decide_floor = Some(self.decide_floor.map_or(time, |d| d.max(time)));
    }

    fn decision_time(&self) -> Option<i64> {
        match (self.watermark(), self.decide_floor) {
            (Some(w), Some(d)) => Some(w.max(d)),
            (w, d) => w.or(d),
        }
    }

    /// Event-time sources active now.
    pub fn sources(&mut self, now_ms: i64) -> usize {
        self.marks.expire(now_ms);
        self.marks.active()
    }

    /// Keys held per rule (by rule index).
    pub fn keys_per_rule(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.states.iter().map(|s| s.keys.len()).enumerate()
    }

    /// Events held per rule (by rule index).
    pub fn events_per_rule(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.states.iter().map(|s| s.events).enumerate()
    }

    /// Estimated bytes held.
    pub fn bytes(&self) -> usize {
        self.states.iter().map(|s| s.bytes).sum()
    }

    pub fn take_stats(&mut self) -> Stats {
        let mut s = std::mem::take(&mut self.stats);
        s.untracked_sources = self.marks.take_untracked();
        s
    }

    /// The offset a consumer may commit: the lowest offset still needed to rebuild the
    /// state, or the next unread offset when nothing is held.
    pub fn commit_offset(&self) -> Option<i64> {
        self.held.keys().next().copied().or(self.next_offset)
    }

    /// Switches to a new rule set, keeping the state of every rule whose configuration is
    /// unchanged; a new or changed rule starts empty and sees events from now on.
    pub fn replace_rules(&mut self, rules: Arc<RuleSet>) {
        let mut old: Vec<Option<RuleState>> = std::mem::take(&mut self.states)
            .into_iter()
            .map(Some)
            .collect();
        let map: HashMap<usize, usize> = self
            .rules
            .rules
            .iter()
            .enumerate()
            .filter_map(|(o, r)| {
                rules
                    .rules
                    .iter()
                    .position(|n| n.config == r.config)
                    .map(|n| (o, n))
            })
            .collect();
        self.states = rules
            .rules
            .iter()
            .enumerate()
            .map(|(n, _)| {
                map.iter()
                    .find(|(_, new)| **new == n)
                    .and_then(|(o, _)| old[*o].take())
                    .unwrap_or_default()
            })
            .collect();
        let remap = |ri: usize| map.get(&ri).copied();
        self.timers = std::mem::take(&mut self.timers)
            .into_iter()
            .filter_map(|(due, ri, k)| remap(ri).map(|n| (due, n, k)))
            .collect();
        self.flushes = std::mem::take(&mut self.flushes)
            .into_iter()
            .filter_map(|(due, ri, k, s)| remap(ri).map(|n| (due, n, k, s)))
            .collect();
        self.held.clear();
        for state in &self.states {
            for ks in state.keys.values() {
                for (_, h) in ks.events.iter() {
                    *self.held.entry(h.offset).or_default() += 1;
                }
            }
        }
        self.rules = rules;
    }

    /// Notes a record read at `offset` that carries no event (undecodable): passed over.
    pub fn feed_nothing(&mut self, offset: i64) {
        self.next_offset = Some(self.next_offset.map_or(offset.saturating_add(1), |n| {
            n.max(offset.saturating_add(1))
        }));
    }

    /// Feeds one event, received at `offset` for `group`, at processing time `now_ms`.
    /// Alerts go to `out`; the result says, per rule of that group, what happened.
    pub fn feed(
        &mut self,
        group: GroupBy,
        key: &str,
        event: &Arc<Event>,
        offset: i64,
        now_ms: i64,
        out: &mut Vec<Alert>,
    ) -> Vec<(usize, Fed)> {
        self.next_offset = Some(self.next_offset.map_or(offset.saturating_add(1), |n| {
            n.max(offset.saturating_add(1))
        }));
        let late = self.watermark().is_some_and(|w| event.occurred_at < w);
        let source = Watermarks::source_id(&event.state, event.post_id.as_deref());
        let rules = self.rules.clone();
        let mut results = Vec::new();
        let key: Id = Arc::from(key);
        let id: Id = event.incident_id.clone();
        for (ri, rule) in rules.rules.iter().enumerate() {
            if rule.group_by() != group {
                continue;
            }
            let fed = if !rule.admits(event) {
                Fed::Ignored
            } else if late {
                Fed::Late
            } else {
                self.insert(ri, rule, &key, &id, event, offset, now_ms, out)
            };
            results.push((ri, fed));
        }
        if !late {
            self.marks.observe(&source, event.occurred_at, now_ms);
        }
        results
    }

    #[allow(clippy::too_many_arguments)]
    fn insert(
        &mut self,
        ri: usize,
        rule: &Rule,
        key: &Id,
        id: &Id,
        event: &Arc<Event>,
        offset: i64,
        now: i64,
        out: &mut Vec<Alert>,
    ) -> Fed {
        let t = event.occurred_at;
        let pos: Pos = (t, id.clone());
        let max_keys = self.settings.state.max_keys_per_rule;
        let max_events = self.settings.state.max_events_per_key;
        if let Some(ks) = self.states[ri].keys.get(key) {
            if ks.events.contains_key(&pos) {
                return Fed::Duplicate;
            }
            if ks.events.len() >= max_events {
                self.refuse(ri, rule, key, t, now, out);
                return Fed::Refused;
            }
            // No state may take more than half a key's budget: one member's flood of a
            // subject cannot crowd out the others' reports of it.
            if ks.events.len() >= max_events / 2 && state_share(ks, &event.state) >= max_events / 2
            {
                self.refuse(ri, rule, key, t, now, out);
                return Fed::Refused;
            }
        } else if self.states[ri].keys.len() >= max_keys {
            self.evict_oldest_key(ri, rule, now, out);
        }
        // The rule's share of the partition: the oldest keys make room, never this one.
        while self.states[ri].events >= self.settings.state.max_events_per_rule {
            let oldest_is_this = self.states[ri].expiry.first().is_none_or(|(_, k)| k == key);
            if oldest_is_this {
                self.refuse(ri, rule, key, t, now, out);
                return Fed::Refused;
            }
            self.evict_oldest_key(ri, rule, now, out);
        }
        let rs = &mut self.states[ri];
        let bytes = event_bytes(event)
            + if rs.keys.contains_key(key) {
                0
            } else {
                key_bytes(key)
            };
        let ks = rs.keys.entry(key.clone()).or_default();
        // In order by event time: ties at the newest time (whatever their ids) change
        // nothing the fast path decides, since episodes are spans of time.
        let in_order = ks.events.last().is_none_or(|((last, _), _)| t >= *last);
        ks.events.insert(
            pos.clone(),
            Held {
                offset,
                event: event.clone(),
            },
        );
        ks.bytes += bytes;
        if let Some(counts) = &mut ks.by_state {
            *counts.entry(event.state.clone()).or_default() += 1;
        } else if ks.events.len() >= max_events / 2 {
            ks.by_state = Some(count_states(&ks.events));
        }
        rs.events += 1;
        rs.bytes += bytes;
        if rule.is_first(event) {
            ks.firsts.insert(pos.clone(), ());
        }
        if rule.is_then(event) {
            ks.thens.insert(pos.clone(), ());
        }
        if let Condition::Distinct { field, .. } = rule.condition {
            let value = event.distinct_value(field);
            // One entry per value (values per key are few: a linear search).
            let old = ks
                .by_latest
                .iter()
                .find(|((_, v), _)| **v == *value)
                .map(|((o, _), _)| *o);
            if old.is_none_or(|o| t > o) {
                if let Some(o) = old {
                    ks.by_latest.remove(&(o, Box::from(value)));
                }
                ks.by_latest.insert((t, Box::from(value)), ());
            }
        }
        *self.held.entry(offset).or_default() += 1;
        self.reindex(ri, rule, key);
        if in_order {
            self.append(ri, rule, key, event, now, out);
        } else if !self.joins_open_episode(ri, rule, key, event, now, out) {
            self.rescan(ri, rule, key, t, now, out);
        }
        Fed::Accepted
    }

    /// An out-of-order event inside an episode that it cannot move (no earlier start can
    /// now qualify): only more evidence. Checked from the indexes in time independent of
    /// the episode's size; anything else re-scans.
    fn joins_open_episode(
        &mut self,
        ri: usize,
        rule: &Rule,
        key: &Id,
        e: &Event,
        now: i64,
        out: &mut Vec<Alert>,
    ) -> bool {
        let t = e.occurred_at;
        let Some(ks) = self.states[ri].keys.get_mut(key) else {
            return false;
        };
        if matches!(rule.condition, Condition::Absence { .. }) {
            return false;
        }
        let Some((&start, _)) = ks.episodes.range(..t).next_back() else {
            return false;
        };
        if t > start.saturating_add(rule.cooldown) {
            return false;
        }
        // Earlier starts the event can complete lie in [t - window, start), after the
        // previous episode.
        let prev_end = ks
            .episodes
            .range(..start)
            .next_back()
            .map_or(i64::MIN, |(s, _)| {
                s.saturating_add(rule.cooldown).saturating_add(1)
            });
        let lo = t.saturating_sub(rule.window).max(prev_end);
        if lo < start {
            let candidates: Vec<i64> = ks
                .range(lo, start.saturating_sub(1))
                .map(|h| h.event.occurred_at)
                .collect();
            if candidates.len() > 64 {
                return false;
            }
            let moved = match &rule.condition {
                // At most count - 1 such events exist (else the first would have started).
                Condition::Threshold { count } => candidates.iter().any(|u| {
                    ks.range(*u, u.saturating_add(rule.window))
                        .take(*count)
                        .count()
                        >= *count
                }),
                // Counting distinct values over each candidate's window could walk the
                // whole episode per candidate: one re-scan is cheaper.
                Condition::Distinct { .. } => true,
                Condition::Sequence { .. } => {
                    rule.is_then(e)
                        && first_at_or_after(&ks.firsts, lo).is_some_and(|a| a < t && a < start)
                }
                Condition::Absence { .. } => true,
            };
            if moved {
                return false;
            }
        }
        if rule.is_member(e)
            && let Some(ep) = ks.episodes.get_mut(&start)
        {
            ep.members += 1;
            self.touch(ri, rule, key, start, now, out);
        }
        true
    }

    /// Keeps the key's entry in the rule's expiry index current.
    fn reindex(&mut self, ri: usize, rule: &Rule, key: &Id) {
        let rs = &mut self.states[ri];
        let Some(ks) = rs.keys.get_mut(key) else {
            return;
        };
        let Some(((first, _), _)) = ks.events.first() else {
            return;
        };
        // Evictable once the watermark passes first + horizon.
        let due = first.saturating_add(rule.horizon()).saturating_add(1);
        if due != ks.expiry || !rs.expiry.contains(&(due, key.clone())) {
            rs.expiry.remove(&(ks.expiry, key.clone()));
            ks.expiry = due;
            rs.expiry.insert((due, key.clone()));
        }
    }

    /// The event is the newest of its key: decide it from the indexes alone.
    fn append(
        &mut self,
        ri: usize,
        rule: &Rule,
        key: &Id,
        e: &Event,
        now: i64,
        out: &mut Vec<Alert>,
    ) {
        let t = e.occurred_at;
        let Some(ks) = self.states[ri].keys.get_mut(key) else {
            return;
        };
        let last_end = ks.last_end(rule);
        if let Some(end) = last_end
            && t <= end
        {
            // Inside the open episode: more evidence (an absence's `then` inside it can
            // only come from a clock-decided window: re-scan, it may explain the start).
            if matches!(rule.condition, Condition::Absence { .. }) && rule.is_then(e) {
                self.rescan(ri, rule, key, t, now, out);
                return;
            }
            if rule.is_member(e)
                && let Some((start, ep)) = ks.episodes.iter_mut().next_back()
            {
                ep.members += 1;
                let start = *start;
                self.touch(ri, rule, key, start, now, out);
            }
            return;
        }
        // The free region begins after the last episode.
        let free_from = last_end.map_or(i64::MIN, |e| e.saturating_add(1));
        let lo = t.saturating_sub(rule.window).max(free_from);
        let start = match &rule.condition {
            Condition::Threshold { count } => {
                let n = ks.range(lo, t).take(*count).count();
                (n >= *count)
                    .then(|| ks.range(lo, t).next().map(|h| h.event.occurred_at))
                    .flatten()
            }
            Condition::Distinct { count, .. } => {
                let n = ks.by_latest.from_time(lo).take(*count).count();
                (n >= *count)
                    .then(|| ks.range(lo, t).next().map(|h| h.event.occurred_at))
                    .flatten()
            }
            Condition::Sequence { .. } => {
                if rule.is_then(e) {
                    first_at_or_after(&ks.firsts, lo).filter(|s| *s < t)
                } else {
                    None
                }
            }
            Condition::Absence { lookback, .. } => {
                let lookback = *lookback;
                if rule.is_then(e) {
                    // Explains the pending `first` events in [t - window, t).
                    ks.pending.remove_between(t.saturating_sub(rule.window), t);
                }
                if rule.is_first(e) {
                    let explained = lookback
                        && any_then(ks, t.saturating_sub(rule.window), t.saturating_sub(1), None);
                    if !explained {
                        ks.pending.insert((t, e.incident_id.clone()), ());
                        self.timers
                            .insert((t.saturating_add(rule.window), ri, key.clone()));
                    }
                }
                None
            }
        };
        if let Some(start) = start {
            self.open(ri, rule, key, start, now, out);
        }
    }

    /// Opens an episode at `start` (an ALERT with its members).
    fn open(
        &mut self,
        ri: usize,
        rule: &Rule,
        key: &Id,
        start: i64,
        now: i64,
        out: &mut Vec<Alert>,
    ) {
        let Some(ks) = self.states[ri].keys.get_mut(key) else {
            return;
        };
        let full_key = rule.alert_key(key);
        let id = alert_id(rule.name(), &full_key, start);
        // Refusals before this episode are not its own.
        ks.refused = 0;
        let members = ks.members(rule, start);
        let alert = self.rules.build(
            Head {
                rule,
                key: &full_key,
                msg_type: MsgType::Alert,
                alert_id: id.clone(),
                references: vec![],
                start,
                now_ms: now,
                refused: 0,
            },
            &members,
        );
        let end = start.saturating_add(rule.cooldown);
        let count = members.len();
        ks.episodes.insert(
            start,
            Episode {
                id,
                members: count,
                emitted: (count, 0),
                emitted_at: now,
                tlp: alert.tlp,
                level: alert.level,
                flush_scheduled: false,
            },
        );
        // Pending absences inside the episode are its members now.
        ks.pending.drain_before(end.saturating_add(1));
        out.push(alert);
    }

    /// Notes new evidence (or refusals) of an episode: an UPDATE now, or at the end of the
    /// coalescing interval.
    fn touch(
        &mut self,
        ri: usize,
        rule: &Rule,
        key: &Id,
        start: i64,
        now: i64,
        out: &mut Vec<Alert>,
    ) {
        let interval = (self.rules.alerts.update_interval_secs as i64).saturating_mul(1000);
        let Some(ks) = self.states[ri].keys.get_mut(key) else {
            return;
        };
        let refused = ks.refused;
        let Some(ep) = ks.episodes.get_mut(&start) else {
            return;
        };
        if ep.emitted == (ep.members, refused) {
            return;
        }
        let due = ep.emitted_at.saturating_add(interval);
        if now >= due {
            self.emit_update(ri, rule, key, start, now, out);
        } else {
            if !ep.flush_scheduled {
                ep.flush_scheduled = true;
                self.flushes.insert((due, ri, key.clone(), start));
            }
            self.stats.updates_coalesced += 1;
        }
    }

    fn emit_update(
        &mut self,
        ri: usize,
        rule: &Rule,
        key: &Id,
        start: i64,
        now: i64,
        out: &mut Vec<Alert>,
    ) {
        let Some(ks) = self.states[ri].keys.get_mut(key) else {
            return;
        };
        let refused = ks.refused;
        let members = ks.members(rule, start);
        let Some(ep) = ks.episodes.get(&start) else {
            return;
        };
        if ep.emitted == (members.len(), refused) {
            return;
        }
        let full_key = rule.alert_key(key);
        let first = ep.id.clone();
        let id = update_id(&first, members.len() as u64, refused);
        let alert = self.rules.build(
            Head {
                rule,
                key: &full_key,
                msg_type: MsgType::Update,
                alert_id: id,
                references: vec![first],
                start,
                now_ms: now,
                refused,
            },
            &members,
        );
        let count = members.len();
        if let Some(ep) = ks.episodes.get_mut(&start) {
            ep.members = count;
            ep.emitted = (count, refused);
            ep.emitted_at = now;
            ep.tlp = ep.tlp.max(alert.tlp);
            ep.level = alert.level;
            ep.flush_scheduled = false;
        }
        out.push(alert);
    }

    /// The last message of an episode whose key is evicted at a budget: its latest state,
    /// with `KEY_EVICTED` in `limits_reached`.
    fn announce_eviction(
        &mut self,
        ri: usize,
        rule: &Rule,
        key: &Id,
        start: i64,
        now: i64,
        out: &mut Vec<Alert>,
    ) {
        let Some(ks) = self.states[ri].keys.get(key) else {
            return;
        };
        let Some(ep) = ks.episodes.get(&start) else {
            return;
        };
        let members = ks.members(rule, start);
        let full_key = rule.alert_key(key);
        let mut alert = self.rules.build(
            Head {
                rule,
                key: &full_key,
                msg_type: MsgType::Update,
                alert_id: evicted_id(&ep.id),
                references: vec![ep.id.clone()],
                start,
                now_ms: now,
                refused: ks.refused,
            },
            &members,
        );
        alert
            .limits_reached
            .push(crate::alert::limit::KEY_EVICTED.to_string());
        out.push(alert);
    }

    fn cancel(
        &mut self,
        ri: usize,
        rule: &Rule,
        key: &Id,
        start: i64,
        now: i64,
        out: &mut Vec<Alert>,
    ) {
        let Some(ks) = self.states[ri].keys.get_mut(key) else {
            return;
        };
        let Some(ep) = ks.episodes.remove(&start) else {
            return;
        };
        let full_key = rule.alert_key(key);
        let mut alert = self.rules.build(
            Head {
                rule,
                key: &full_key,
                msg_type: MsgType::Cancel,
                alert_id: cancel_id(&ep.id),
                references: vec![ep.id],
                start,
                now_ms: now,
                refused: 0,
            },
            &[],
        );
        // A CANCEL is as sensitive as what it withdraws.
        alert.tlp = ep.tlp;
        alert.level = ep.level;
        out.push(alert);
    }

    /// A refused event: counted, and the open episode it falls in says so.
    fn refuse(&mut self, ri: usize, rule: &Rule, key: &Id, t: i64, now: i64, out: &mut Vec<Alert>) {
        *self.stats.refused.entry(ri).or_default() += 1;
        let Some(ks) = self.states[ri].keys.get_mut(key) else {
            return;
        };
        ks.refused += 1;
        let open = ks
            .episodes
            .range(..=t)
            .next_back()
            .filter(|(s, _)| t <= s.saturating_add(rule.cooldown))
            .map(|(s, _)| *s);
        if let Some(start) = open {
            self.touch(ri, rule, key, start, now, out);
        }
    }

    /// Re-derives the key's episodes after an out-of-order change at `t`, from the last
    /// episode that ended before anything `t` can affect, and emits the difference.
    fn rescan(&mut self, ri: usize, rule: &Rule, key: &Id, t: i64, now: i64, out: &mut Vec<Alert>) {
        let decide = self.decision_time().unwrap_or(i64::MIN);
        let Some(ks) = self.states[ri].keys.get(key) else {
            return;
        };
        let reach = t.saturating_sub(rule.window);
        let after = ks
            .episodes
            .iter()
            .rev()
            .map(|(s, _)| s.saturating_add(rule.cooldown))
            .find(|end| *end < reach);
        let (found, pending_due) = scan(rule, ks, after, decide);
        let old: Vec<i64> = ks
            .episodes
            .range(after.map_or(i64::MIN, |a| a.saturating_add(1))..)
            .map(|(s, _)| *s)
            .collect();
        let new: BTreeMap<i64, usize> = found.into_iter().collect();
        for start in old.iter().filter(|s| !new.contains_key(s)) {
            self.cancel(ri, rule, key, *start, now, out);
        }
        for (start, members) in &new {
            let exists = self.states[ri]
                .keys
                .get(key)
                .is_some_and(|ks| ks.episodes.contains_key(start));
            if exists {
                if let Some(ep) = self.states[ri]
                    .keys
                    .get_mut(key)
                    .and_then(|ks| ks.episodes.get_mut(start))
                {
                    ep.members = *members;
                }
                self.touch(ri, rule, key, *start, now, out);
            } else {
                self.open(ri, rule, key, *start, now, out);
            }
        }
        if let Some(due) = pending_due {
            self.timers.insert((due, ri, key.clone()));
        }
        if matches!(rule.condition, Condition::Absence { .. })
            && let Some(ks) = self.states[ri].keys.get_mut(key)
        {
            ks.pending = unexplained_after(rule, ks, ks.last_end(rule));
            for ((s, _), _) in ks.pending.iter() {
                self.timers
                    .insert((s.saturating_add(rule.window), ri, key.clone()));
            }
        }
    }

    /// Decides the absences of one key up to `decide`.
    fn decide(
        &mut self,
        ri: usize,
        rule: &Rule,
        key: &Id,
        decide: i64,
        now: i64,
        out: &mut Vec<Alert>,
    ) {
        loop {
            let Some(ks) = self.states[ri].keys.get_mut(key) else {
                return;
            };
            let Some(((s, _), _)) = ks.pending.first() else {
                return;
            };
            let s = *s;
            // Decided once the watermark is past the window's end: a `then` exactly at the
            // end is not late yet, so deciding at the end could be withdrawn at once.
            if s.saturating_add(rule.window) >= decide {
                return;
            }
            ks.pending.pop_first();
            if ks.last_end(rule).is_some_and(|end| s <= end) {
                continue;
            }
            self.open(ri, rule, key, s, now, out);
        }
    }

    /// Decides the absence rules whose windows the watermark (or, in a quiet partition,
    /// the clock) has passed, sends the UPDATEs whose interval ended, and evicts state no
    /// window can need any more. Call after each batch with the processing time.
    pub fn tick(&mut self, now_ms: i64, out: &mut Vec<Alert>) {
        self.marks.expire(now_ms);
        // A partition that has seen reports and whose sources all fell silent follows the
        // clock for absences; a partition just assigned (nothing read yet: its replay is
        // on the way) does not.
        if self.marks.active() == 0 && self.marks.has_seen() {
            self.decide_until(now_ms.saturating_sub(self.settings.lateness_ms));
        }
        let rules = self.rules.clone();
        if let Some(decide) = self.decision_time() {
            while let Some((due, ri, key)) = self.timers.first().cloned() {
                if due >= decide {
                    break;
                }
                self.timers.pop_first();
                if let Some(rule) = rules.rules.get(ri) {
                    self.decide(ri, rule, &key, decide, now_ms, out);
                }
            }
        }
        while let Some((due, ri, key, start)) = self.flushes.first().cloned() {
            if due > now_ms {
                break;
            }
            self.flushes.pop_first();
            if let Some(rule) = rules.rules.get(ri) {
                self.emit_update(ri, rule, &key, start, now_ms, out);
            }
        }
        if let Some(w) = self.watermark() {
            for (ri, rule) in rules.rules.iter().enumerate() {
                self.evict(ri, rule, w, now_ms, out);
            }
        }
    }

    /// Evicts, for one rule, the events no window can change any more: only the keys
    /// whose oldest event expired are visited.
    fn evict(&mut self, ri: usize, rule: &Rule, watermark: i64, now: i64, out: &mut Vec<Alert>) {
        let horizon = watermark.saturating_sub(rule.horizon());
        loop {
            let Some((due, key)) = self.states[ri].expiry.first().cloned() else {
                return;
            };
            if due > watermark {
                return;
            }
            self.states[ri].expiry.pop_first();
            // A pending UPDATE of an episode about to go is sent first.
            let closing: Vec<i64> = self.states[ri]
                .keys
                .get(&key)
                .map(|ks| {
                    ks.episodes
                        .range(..horizon)
                        .filter(|(s, ep)| {
                            s.saturating_add(rule.cooldown) < horizon && ep.flush_scheduled
                        })
                        .map(|(s, _)| *s)
                        .collect()
                })
                .unwrap_or_default();
            for start in closing {
                self.emit_update(ri, rule, &key, start, now, out);
            }
            let Some(ks) = self.states[ri].keys.get_mut(&key) else {
                continue;
            };
            // Keep whole any episode still open at the horizon.
            // (episodes do not overlap: only the last one starting before it can be open)
            let open = ks
                .episodes
                .range(..horizon)
                .next_back()
                .filter(|(s, _)| s.saturating_add(rule.cooldown) >= horizon)
                .map(|(s, _)| *s);
            let cut = open.unwrap_or(horizon);
            let gone = ks.events.drain_before(cut);
            let mut bytes = 0;
            for (_, h) in &gone {
                bytes += event_bytes(&h.event);
                if let Some(n) = self.held.get_mut(&h.offset) {
                    *n -= 1;
                    if *n == 0 {
                        self.held.remove(&h.offset);
                    }
                }
            }
            let n = gone.len();
            if let Some(counts) = &mut ks.by_state {
                for (_, h) in &gone {
                    if let Some(c) = counts.get_mut(&h.event.state) {
                        *c = c.saturating_sub(1);
                    }
                }
                if ks.events.len() < self.settings.state.max_events_per_key / 4 {
                    ks.by_state = None;
                }
            }
            ks.firsts.drain_before(cut);
            ks.thens.drain_before(cut);
            ks.pending.drain_before(cut);
            ks.by_latest.drain_before(cut);
            ks.episodes = ks.episodes.split_off(&cut);
            ks.bytes = ks.bytes.saturating_sub(bytes);
            let empty_key = ks.events.is_empty() && ks.episodes.is_empty();
            // The next time something of this key can go: its oldest event's horizon, or
            // the end of the episode that kept it; never now again.
            let next = match (ks.events.first(), open) {
                _ if empty_key => None,
                (Some(((first, _), _)), open) => Some(
                    first
                        .saturating_add(rule.horizon())
                        .max(open.map_or(i64::MIN, |s| {
                            s.saturating_add(rule.cooldown)
                                .saturating_add(rule.horizon())
                        }))
                        .saturating_add(1)
                        .max(watermark.saturating_add(1)),
                ),
                (None, _) => Some(watermark.saturating_add(rule.horizon())),
            };
            let rs = &mut self.states[ri];
            rs.events -= n;
            rs.bytes = rs.bytes.saturating_sub(bytes);
            match next {
                Some(due) => {
                    if let Some(ks) = rs.keys.get_mut(&key) {
                        ks.expiry = due;
                    }
                    rs.expiry.insert((due, key));
                }
                None => {
                    rs.keys.remove(&key);
                    rs.bytes = rs.bytes.saturating_sub(key_bytes(&key));
                }
            }
        }
    }

    /// At the key budget: the key whose oldest event is oldest goes, counted.
    fn evict_oldest_key(&mut self, ri: usize, rule: &Rule, now: i64, out: &mut Vec<Alert>) {
        let Some((_, key)) = self.states[ri].expiry.pop_first() else {
            return;
        };
        // Its episodes still open say, one last time, that they will not be updated.
        let watermark = self.watermark().unwrap_or(i64::MIN);
        let open: Vec<i64> = self.states[ri]
            .keys
            .get(&key)
            .map(|ks| {
                ks.episodes
                    .keys()
                    .filter(|s| s.saturating_add(rule.cooldown) >= watermark)
                    .copied()
                    .collect()
            })
            .unwrap_or_default();
        for start in open {
            self.announce_eviction(ri, rule, &key, start, now, out);
        }
        let rs = &mut self.states[ri];
        if let Some(ks) = rs.keys.remove(&key) {
            // Its pending absence decisions go with it (they would only find nothing).
            for ((s, _), _) in ks.pending.iter() {
                self.timers
                    .remove(&(s.saturating_add(rule.window), ri, key.clone()));
            }
            rs.events -= ks.events.len();
            rs.bytes = rs.bytes.saturating_sub(ks.bytes);
            for (_, h) in ks.events.iter() {
                if let Some(n) = self.held.get_mut(&h.offset) {
                    *n -= 1;
                    if *n == 0 {
                        self.held.remove(&h.offset);
                    }
                }
            }
        }
        *self.stats.keys_evicted.entry(ri).or_default() += 1;
    }
}

/// The canonical episodes of a key's events after `after` (exclusive; `None`: all held),
/// as (start, member count), given the absence decision time. Also the time at which the
/// first undecided absence will be decided. Linear in the events scanned.
fn scan(
    rule: &Rule,
    ks: &KeyState,
    after: Option<i64>,
    decide: i64,
) -> (Vec<(i64, usize)>, Option<i64>) {
    let events: Vec<&Event> = ks
        .events
        .from_time(after.map_or(i64::MIN, |a| a.saturating_add(1)))
        .map(|(_, h)| h.event.as_ref())
        .collect();
    let n = events.len();
    let t = |i: usize| events[i].occurred_at;
    let mut out = Vec::new();
    let mut pending = None;
    let mut i = 0;
    // Sliding-window state for threshold and distinct: events [i, j) are within window of i.
    let mut j = 0;
    let mut counts: HashMap<&str, usize> = HashMap::new();
    while i < n {
        let s = t(i);
        let limit = s.saturating_add(rule.window);
        let qualifies = match &rule.condition {
            Condition::Threshold { count } => {
                j = j.max(i);
                while j < n && t(j) <= limit {
                    j += 1;
                }
                j - i >= *count
            }
            Condition::Distinct { count, field } => {
                if j < i {
                    j = i;
                    counts.clear();
                }
                while j < n && t(j) <= limit {
                    *counts.entry(events[j].distinct_value(*field)).or_default() += 1;
                    j += 1;
                }
                counts.len() >= *count
            }
            Condition::Sequence { .. } => {
                rule.is_first(events[i]) && any_then(ks, s.saturating_add(1), limit, None)
            }
            Condition::Absence { lookback, .. } => {
                if !rule.is_first(events[i]) {
                    false
                } else {
                    let from = if *lookback {
                        s.saturating_sub(rule.window)
                    } else {
                        s
                    };
                    let explained = any_then(ks, from, limit, Some(s));
                    if explained {
                        false
                    } else if decide <= limit {
                        // Undecided: nothing after it can be decided either.
                        pending = Some(limit);
                        break;
                    } else {
                        true
                    }
                }
            }
        };
        if !qualifies {
            if let Condition::Distinct { field, .. } = &rule.condition
                && j > i
            {
                let v = events[i].distinct_value(*field);
                if let Some(c) = counts.get_mut(v) {
                    *c -= 1;
                    if *c == 0 {
                        counts.remove(v);
                    }
                }
            }
            i += 1;
            continue;
        }
        // The episode is [s, s + cooldown] in time: events at s sorted before the start
        // event (by id) are in it too.
        let end = s.saturating_add(rule.cooldown);
        let mut members = events[..i]
            .iter()
            .rev()
            .take_while(|e| e.occurred_at == s)
            .filter(|e| rule.is_member(e))
            .count();
        let mut k = i;
        while k < n && t(k) <= end {
            if rule.is_member(events[k]) {
                members += 1;
            }
            k += 1;
        }
        out.push((s, members));
        i = k;
        j = i;
        counts.clear();
    }
    (out, pending)
}

/// Absence rules: the `first` events after `after` not explained by any `then` event.
fn unexplained_after(rule: &Rule, ks: &KeyState, after: Option<i64>) -> Sorted<Pos> {
    let mut out = Sorted::default();
    let Condition::Absence { lookback, .. } = rule.condition else {
        return out;
    };
    for ((s, id), _) in ks
        .firsts
        .from_time(after.map_or(i64::MIN, |a| a.saturating_add(1)))
    {
        let from = if lookback {
            s.saturating_sub(rule.window)
        } else {
            *s
        };
        if !any_then(ks, from, s.saturating_add(rule.window), Some(*s)) {
            out.insert((*s, id.clone()), ());
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::rules::{DistinctField, Filter, RuleKind, default_rules, seizure_then_crossing};
    use ewn_model::{Category, Direction, Level, ScoreReason};
    use proptest::prelude::*;

    const MIN: i64 = 60_000;
    const HOUR: i64 = 60 * MIN;
    /// Event times in tests start here; processing time follows event time.
    pub(crate) const T0: i64 = 1_800_000_000_000;

    pub(crate) fn event(id: &str, t: i64, state: &str, subject: &str) -> Event {
        Event {
            incident_id: id.into(),
            occurred_at: t,
            reported_at: t,
            state: state.into(),
            post_id: None,
            agency: format!("{state}-AGENCY").into(),
            area: "KZ-ZHT".into(),
            crossing: Some("KZ-KHORGOS".into()),
            category: Category::SuspiciousCrossing,
            direction: None,
            watchlist_hit: false,
            subjects: vec![subject.into()],
            score: 40,
            level: Level::Medium,
            reasons: vec![ScoreReason {
                factor: "category".into(),
                contribution: 40,
                detail: String::new(),
            }]
            .into(),
            tlp: Tlp::Green,
            lat: 44.0,
            lon: 80.0,
            source: crate::event::Source {
                topic: "t".into(),
                partition: 0,
                offset: 0,
                key_id: "k".into(),
                signature: [0; 64],
                payload_sha256: [0; 32],
            },
        }
    }

    fn ev(id: &str, t: i64, state: &str, subject: &str) -> Arc<Event> {
        Arc::new(event(id, T0 + t, state, subject))
    }

    fn rules_of(configs: Vec<RuleConfig>) -> Arc<RuleSet> {
        let mut r = RuleSet::new(configs, ScoreWeights::default()).unwrap();
        r.alerts.update_interval_secs = 0;
        Arc::new(r)
    }

    fn engine() -> PartitionState {
        PartitionState::new(
            rules_of(default_rules()),
            EngineSettings::with_lateness(5 * MIN),
        )
    }

    /// Feeds in order of the slice, processing time = event time, a tick after each.
    fn feed_all(p: &mut PartitionState, group: GroupBy, events: &[Arc<Event>]) -> Vec<Alert> {
        let mut out = Vec::new();
        for (i, e) in events.iter().enumerate() {
            for key in e.keys(group) {
                p.feed(group, key, e, i as i64, e.occurred_at, &mut out);
            }
            p.tick(e.occurred_at, &mut out);
        }
        out
    }

    #[test]
    fn cross_border_fires_once_then_updates() {
        let mut p = engine();
        let evs = [
            ev("a", 0, "KZ", "s1"),
            ev("b", 10 * HOUR, "KG", "s1"),
            ev("c", 20 * HOUR, "TJ", "s1"),
        ];
        let out = feed_all(&mut p, GroupBy::Subject, &evs);
        let kinds: Vec<MsgType> = out.iter().map(|a| a.msg_type).collect();
        assert_eq!(kinds, [MsgType::Alert, MsgType::Update]);
        assert_eq!(
            out[0].alert_id,
            alert_id("cross_border_movement", "subject:s1", T0)
        );
        assert_eq!(out[1].references, [out[0].alert_id.clone()]);
        assert_eq!(out[1].states, ["KG", "KZ", "TJ"]);
        assert_eq!(out[1].incident_count, 3);
        assert_eq!(
            out[1].incident_digest,
            crate::alert::incident_digest(["a", "b", "c"])
        );
        assert_eq!(
            out[0].reasons.iter().map(|r| r.contribution).sum::<i32>(),
            out[0].score
        );
    }

    #[test]
    fn same_state_twice_is_silent() {
        let mut p = engine();
        let out = feed_all(
            &mut p,
            GroupBy::Subject,
            &[ev("a", 0, "KZ", "s1"), ev("b", HOUR, "KZ", "s1")],
        );
        assert!(out.is_empty());
    }

    #[test]
    fn window_exceeded_by_a_minute_is_silent() {
        let evs = [ev("a", 0, "KZ", "s1"), ev("b", 72 * HOUR + MIN, "KG", "s1")];
        assert!(feed_all(&mut engine(), GroupBy::Subject, &evs).is_empty());
        let evs = [ev("a", 0, "KZ", "s1"), ev("b", 72 * HOUR, "KG", "s1")];
        assert_eq!(
            feed_all(&mut engine(), GroupBy::Subject, &evs).len(),
            1,
            "exactly at the window edge fires"
        );
    }

    #[test]
    fn late_events_are_not_merged() {
        let mut p = engine();
        let mut out = Vec::new();
        let a = ev("a", 10 * HOUR, "KZ", "s");
        p.feed(GroupBy::Subject, "s", &a, 0, a.occurred_at, &mut out);
        let late = ev("b", 10 * HOUR - 6 * MIN, "KZ", "s");
        let fed = p.feed(GroupBy::Subject, "s", &late, 1, a.occurred_at, &mut out);
        assert!(fed.iter().any(|(_, f)| *f == Fed::Late));
        assert!(out.is_empty());
        let within = ev("c", 10 * HOUR - 4 * MIN, "KG", "s");
        p.feed(GroupBy::Subject, "s", &within, 2, a.occurred_at, &mut out);
        assert_eq!(out.len(), 1);
    }

    /// The case: KG dated 280 s ahead in an area, then five KZ reports 90 s old.
    #[test]
    fn a_source_ahead_does_not_make_another_late() {
        let mut p = engine();
        let mut out = Vec::new();
        let now = T0 + HOUR;
        let mut ahead = event("kg", now + 280_000, "KG", "x");
        ahead.level = Level::Low;
        let ahead = Arc::new(ahead);
        p.feed(GroupBy::Area, "KZ-ZHT", &ahead, 0, now, &mut out);
        p.tick(now, &mut out);
        for i in 0..5 {
            let mut e = event(&format!("kz{i}"), now - 90_000 + i, "KZ", "y");
            e.level = Level::High;
            let fed = p.feed(
                GroupBy::Area,
                "KZ-ZHT",
                &Arc::new(e),
                1 + i,
                now + 1000,
                &mut out,
            );
            assert!(fed.iter().all(|(_, f)| *f == Fed::Accepted), "{fed:?}");
        }
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].rule, "area_burst");
    }

    #[test]
    fn burst_counts_medium_and_above() {
        let evs: Vec<Arc<Event>> = (0..5)
            .map(|i| ev(&format!("e{i}"), i * 10 * MIN, "KZ", &format!("s{i}")))
            .collect();
        let out = feed_all(&mut engine(), GroupBy::Area, &evs);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].rule, "area_burst");
        assert_eq!(out[0].incident_ids.len(), 5);
        let mut four = evs.clone();
        four.pop();
        four.push(ev("late", 60 * MIN + 1, "KZ", "x"));
        assert!(
            feed_all(&mut engine(), GroupBy::Area, &four).is_empty(),
            "fifth one minute beyond the hour"
        );
    }

    fn with_direction(e: Arc<Event>, d: Direction) -> Arc<Event> {
        let mut e = (*e).clone();
        e.direction = Some(d);
        Arc::new(e)
    }

    #[test]
    fn absence_waits_for_the_window_then_fires_unless_explained() {
        let exit = with_direction(ev("x", 0, "KZ", "s"), Direction::Exit);
        let later = ev("later", 24 * HOUR + 6 * MIN, "KZ", "other");
        let mut p = engine();
        let out = feed_all(&mut p, GroupBy::Subject, std::slice::from_ref(&exit));
        assert!(out.is_empty(), "undecided before the window ends");
        let out = feed_all(&mut p, GroupBy::Subject, std::slice::from_ref(&later));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].rule, "exit_without_entry");

        let entry = with_direction(ev("y", 3 * HOUR, "KG", "s"), Direction::Entry);
        let out = feed_all(&mut engine(), GroupBy::Subject, &[exit, entry, later]);
        assert!(
            out.iter().all(|a| a.rule != "exit_without_entry"),
            "explained by the entry"
        );
    }

    #[test]
    fn the_idle_clock_decides_absences_but_never_makes_events_late() {
        let mut p = engine();
        let mut out = Vec::new();
        let exit = with_direction(ev("x", 0, "KZ", "s"), Direction::Exit);
        p.feed(GroupBy::Subject, "s", &exit, 0, exit.occurred_at, &mut out);
        // Nothing more for 100 hours: the source is idle, the clock decides.
        p.tick(T0 + 100 * HOUR, &mut out);
        assert_eq!(out.len(), 1, "decided by the clock: {out:?}");
        // an entry 3 h later, delayed but not late by event time: the alert is withdrawn
        let entry = with_direction(ev("y", 3 * HOUR, "KG", "s"), Direction::Entry);
        let fed = p.feed(GroupBy::Subject, "s", &entry, 1, T0 + 100 * HOUR, &mut out);
        assert!(fed.iter().all(|(_, f)| *f != Fed::Late), "{fed:?}");
        assert_eq!(out.last().map(|a| a.msg_type), Some(MsgType::Cancel));
        assert_eq!(
            out.last().map(|a| a.tlp),
            Some(Tlp::Green),
            "as marked as what it withdraws"
        );
    }

    #[test]
    fn eviction_releases_offsets_and_keeps_ids_stable() {
        let mut p = engine();
        let mut out = Vec::new();
        let a = ev("a", 0, "KZ", "s");
        let b = ev("b", HOUR, "KG", "s");
        p.feed(GroupBy::Subject, "s", &a, 10, a.occurred_at, &mut out);
        p.feed(GroupBy::Subject, "s", &b, 11, b.occurred_at, &mut out);
        assert_eq!(p.commit_offset(), Some(10));
        let far = ev("far", 300 * HOUR, "KZ", "t");
        p.feed(GroupBy::Subject, "t", &far, 12, far.occurred_at, &mut out);
        p.tick(far.occurred_at, &mut out);
        assert_eq!(p.commit_offset(), Some(12), "the closed episode is evicted");
        assert_eq!(
            out.iter().filter(|a| a.msg_type == MsgType::Cancel).count(),
            0
        );
        assert_eq!(p.keys_per_rule().map(|(_, n)| n).sum::<usize>(), 1);
    }

    #[test]
    fn replacing_rules_keeps_unchanged_state() {
        let mut p = engine();
        let mut out = Vec::new();
        let a = ev("a", 0, "KZ", "s");
        p.feed(GroupBy::Subject, "s", &a, 0, a.occurred_at, &mut out);
        let mut changed = default_rules();
        changed.retain(|r| r.name != "area_burst");
        p.replace_rules(rules_of(changed));
        let b = ev("b", HOUR, "KG", "s");
        p.feed(GroupBy::Subject, "s", &b, 1, b.occurred_at, &mut out);
        assert_eq!(out.len(), 1, "the cross-border state survived the reload");
        assert_eq!(p.commit_offset(), Some(0));
    }

    #[test]
    fn duplicates_are_ignored() {
        let mut p = engine();
        let mut out = Vec::new();
        let a = ev("a", 0, "KZ", "s");
        p.feed(GroupBy::Subject, "s", &a, 0, a.occurred_at, &mut out);
        let fed = p.feed(GroupBy::Subject, "s", &a, 1, a.occurred_at, &mut out);
        assert!(
            fed.iter()
                .all(|(_, f)| *f == Fed::Duplicate || *f == Fed::Ignored)
        );
    }

    #[test]
    fn sequence_needs_first_then() {
        let rules = rules_of(vec![seizure_then_crossing()]);
        let seizure = |id: &str, t| {
            let mut e = (*ev(id, t, "KZ", "s")).clone();
            e.category = Category::WeaponsSeizure;
            Arc::new(e)
        };
        let run = |evs: &[Arc<Event>]| {
            let mut p = PartitionState::new(rules.clone(), EngineSettings::with_lateness(5 * MIN));
            feed_all(&mut p, GroupBy::Subject, evs)
        };
        assert_eq!(
            run(&[seizure("a", 0), ev("b", 10 * MIN, "KG", "s")]).len(),
            1
        );
        assert!(
            run(&[ev("b", 0, "KG", "s"), seizure("a", 10 * MIN)]).is_empty(),
            "B before A"
        );
        assert!(
            run(&[seizure("a", 0), ev("b", 61 * MIN, "KG", "s")]).is_empty(),
            "beyond the window"
        );
    }

    #[test]
    fn updates_are_coalesced_per_interval_and_flushed() {
        let mut r = RuleSet::new(default_rules(), ScoreWeights::default()).unwrap();
        r.alerts.update_interval_secs = 60;
        let mut p = PartitionState::new(Arc::new(r), EngineSettings::with_lateness(5 * MIN));
        let mut out = Vec::new();
        // 100 MEDIUM reports in one area, one a second.
        for i in 0..100 {
            let e = ev(&format!("e{i:03}"), i * 1000, "KZ", &format!("s{i}"));
            p.feed(GroupBy::Area, "KZ-ZHT", &e, i, e.occurred_at, &mut out);
            p.tick(e.occurred_at, &mut out);
        }
        let updates = out.iter().filter(|a| a.msg_type == MsgType::Update).count();
        assert_eq!(out[0].msg_type, MsgType::Alert);
        assert_eq!(updates, 1, "100 s with a 60 s interval: {out:?}");
        p.tick(T0 + 200_000, &mut out);
        let last = out.last().unwrap();
        assert_eq!(last.msg_type, MsgType::Update);
        assert_eq!(
            last.incident_count, 100,
            "the flush carries the latest state"
        );
        assert!(p.take_stats().updates_coalesced > 0);
    }

    /// One state floods a subject to its key's budget: the other states' reports of it
    /// still get in (no state takes more than half a key), and cross-border fires.
    #[test]
    fn one_state_cannot_fill_a_key_for_the_others() {
        let rules = rules_of(default_rules());
        let mut settings = EngineSettings::with_lateness(5 * MIN);
        settings.state.max_events_per_key = 100;
        let mut p = PartitionState::new(rules, settings);
        let mut out = Vec::new();
        let mut refused = 0;
        for i in 0..300 {
            let e = ev(&format!("f{i:03}"), i * 1000, "KZ", "target");
            let fed = p.feed(GroupBy::Subject, "target", &e, i, e.occurred_at, &mut out);
            refused += fed.iter().filter(|(_, f)| *f == Fed::Refused).count();
        }
        assert_eq!(refused, 250, "KZ holds half the key");
        assert!(out.is_empty());
        let kg = ev("kg", 301_000, "KG", "target");
        let fed = p.feed(
            GroupBy::Subject,
            "target",
            &kg,
            301,
            kg.occurred_at,
            &mut out,
        );
        assert!(fed.iter().any(|(_, f)| *f == Fed::Accepted), "{fed:?}");
        assert_eq!(
            out.first().map(|a| a.rule.as_str()),
            Some("cross_border_movement")
        );
    }

    #[test]
    fn a_full_key_refuses_and_says_so() {
        let rules = rules_of(default_rules());
        let mut settings = EngineSettings::with_lateness(5 * MIN);
        settings.state.max_events_per_key = 10;
        let mut p = PartitionState::new(rules, settings);
        let mut out = Vec::new();
        let mut refused = 0;
        for i in 0..15 {
            // two states, so the key's budget binds before either's half share
            let state = ["KZ", "KG"][i as usize % 2];
            let e = ev(&format!("e{i:02}"), i * 1000, state, &format!("s{i}"));
            let fed = p.feed(GroupBy::Area, "KZ-ZHT", &e, i, e.occurred_at, &mut out);
            refused += fed.iter().filter(|(_, f)| *f == Fed::Refused).count();
        }
        assert_eq!(refused, 5);
        let last = out.last().unwrap();
        assert_eq!(last.incident_count, 10);
        assert_eq!(last.refused_count, 5);
        assert_eq!(last.limits_reached, ["EVENTS_PER_KEY"]);
        assert_eq!(p.take_stats().refused.values().sum::<u64>(), 5);
    }

    /// A key evicted at the budget while its episode is open: the alert's last UPDATE says
    /// so, with its latest state.
    #[test]
    fn an_open_episode_of_an_evicted_key_says_so() {
        let rules = rules_of(default_rules());
        let mut settings = EngineSettings::with_lateness(5 * MIN);
        settings.state.max_keys_per_rule = 2;
        let mut p = PartitionState::new(rules, settings);
        let mut out = Vec::new();
        for (i, (state, key)) in [("KZ", "a"), ("KG", "a"), ("KZ", "b"), ("KZ", "c")]
            .iter()
            .enumerate()
        {
            let e = ev(&format!("e{i}"), i as i64 * 1000, state, key);
            p.feed(GroupBy::Subject, key, &e, i as i64, e.occurred_at, &mut out);
        }
        let last = out.last().unwrap();
        assert_eq!(out[0].msg_type, MsgType::Alert);
        assert_eq!(last.msg_type, MsgType::Update);
        assert_eq!(last.references, [out[0].alert_id.clone()]);
        assert_eq!(last.limits_reached, ["KEY_EVICTED"]);
        assert_eq!(last.incident_count, 2);
    }

    #[test]
    fn a_rule_holds_at_most_its_events_budget() {
        let rules = rules_of(default_rules());
        let mut settings = EngineSettings::with_lateness(5 * MIN);
        settings.state.max_events_per_rule = 50;
        let mut p = PartitionState::new(rules, settings);
        let mut out = Vec::new();
        for i in 0..500 {
            let e = ev(&format!("e{i}"), i * 1000, "KZ", &format!("s{}", i % 200));
            let key = format!("s{}", i % 200);
            p.feed(GroupBy::Subject, &key, &e, i, e.occurred_at, &mut out);
            assert!(p.events_per_rule().all(|(_, n)| n <= 50));
        }
        assert!(p.take_stats().keys_evicted.values().sum::<u64>() > 0);
    }

    #[test]
    fn keys_are_bounded_oldest_first() {
        let rules = rules_of(default_rules());
        let mut settings = EngineSettings::with_lateness(5 * MIN);
        settings.state.max_keys_per_rule = 100;
        let mut p = PartitionState::new(rules, settings);
        let mut out = Vec::new();
        for i in 0..1000 {
            let e = ev(&format!("e{i}"), i * 1000, "KZ", &format!("s{i}"));
            p.feed(
                GroupBy::Subject,
                &format!("s{i}"),
                &e,
                i,
                e.occurred_at,
                &mut out,
            );
        }
        let held: Vec<usize> = p.keys_per_rule().map(|(_, n)| n).collect();
        assert!(held.iter().all(|n| *n <= 100), "{held:?}");
        // (only cross_border_movement admits these: no direction for the absence rule)
        assert_eq!(p.take_stats().keys_evicted.values().sum::<u64>(), 900);
        assert!(
            out.iter().all(|a| a.limits_reached.is_empty()),
            "no episode was open in an evicted key"
        );
        // the newest keys are the ones kept
        let e = ev("again", 1000 * 1000, "KG", "s999");
        p.feed(GroupBy::Subject, "s999", &e, 1000, e.occurred_at, &mut out);
        assert_eq!(
            out.last().map(|a| a.rule.as_str()),
            Some("cross_border_movement")
        );
    }

    // ---- the engine against an independent, naive oracle ----

    /// The canonical episodes of sorted events, by the definition (quadratic, obvious).
    fn oracle(rule: &Rule, events: &[Event]) -> BTreeMap<i64, usize> {
        let mut evs: Vec<&Event> = events.iter().filter(|e| rule.admits(e)).collect();
        evs.sort_by(|a, b| (a.occurred_at, &a.incident_id).cmp(&(b.occurred_at, &b.incident_id)));
        let mut out = BTreeMap::new();
        let mut i = 0;
        while i < evs.len() {
            let s = evs[i].occurred_at;
            let within: Vec<&&Event> = evs[i..]
                .iter()
                .take_while(|e| e.occurred_at <= s + rule.window)
                .collect();
            let qualifies = match &rule.condition {
                Condition::Threshold { count } => within.len() >= *count,
                Condition::Distinct { count, field } => {
                    within
                        .iter()
                        .map(|e| e.distinct_value(*field))
                        .collect::<BTreeSet<_>>()
                        .len()
                        >= *count
                }
                Condition::Sequence { .. } => {
                    rule.is_first(evs[i])
                        && within.iter().any(|e| e.occurred_at > s && rule.is_then(e))
                }
                Condition::Absence { lookback, .. } => {
                    rule.is_first(evs[i])
                        && !evs.iter().any(|e| {
                            rule.is_then(e)
                                && ((e.occurred_at > s && e.occurred_at <= s + rule.window)
                                    || (*lookback
                                        && e.occurred_at >= s - rule.window
                                        && e.occurred_at < s))
                        })
                }
            };
            if !qualifies {
                i += 1;
                continue;
            }
            // [s, s + cooldown] in time, whatever the ids at s.
            let members = evs
                .iter()
                .filter(|e| e.occurred_at >= s && e.occurred_at <= s + rule.cooldown)
                .filter(|e| rule.is_member(e))
                .count();
            while i < evs.len() && evs[i].occurred_at <= s + rule.cooldown {
                i += 1;
            }
            out.insert(s, members);
        }
        out
    }

    fn kinds() -> Vec<RuleConfig> {
        let exit = Filter {
            direction: Some(Direction::Exit),
            ..Filter::default()
        };
        let entry = Filter {
            direction: Some(Direction::Entry),
            ..Filter::default()
        };
        let base = |name, kind| RuleConfig::new(name, kind, GroupBy::Area, 600, Level::High);
        vec![
            RuleConfig {
                count: 3,
                cooldown_secs: Some(900),
                ..base("t", RuleKind::Threshold)
            },
            RuleConfig {
                count: 2,
                distinct: Some(DistinctField::State),
                ..base("d", RuleKind::Distinct)
            },
            RuleConfig {
                first: Some(exit.clone()),
                then: Some(entry.clone()),
                ..base("s", RuleKind::Sequence)
            },
            RuleConfig {
                first: Some(exit.clone()),
                then: Some(entry.clone()),
                lookback: true,
                ..base("a", RuleKind::Absence)
            },
        ]
    }

    proptest! {
        /// Event times and clocks anywhere in i64 (a debug build panics on overflow): every
        /// rule kind feeds, ticks and evicts without a panic.
        #[test]
        fn any_time_anywhere_never_panics(
            times in proptest::collection::vec((any::<i64>(), 0usize..3), 1..20),
            now in any::<i64>(),
        ) {
            let mut rules = kinds();
            rules.extend(default_rules());
            let mut p = PartitionState::new(rules_of(rules), EngineSettings::with_lateness(5 * MIN));
            let mut out = Vec::new();
            for (n, (t, dir)) in times.iter().enumerate() {
                let mut e = event(&format!("i{n}"), *t, "KZ", "s");
                e.direction = [None, Some(Direction::Exit), Some(Direction::Entry)][*dir];
                let e = Arc::new(e);
                for group in [GroupBy::Subject, GroupBy::Area] {
                    let key = e.keys(group)[0].to_string();
                    p.feed(group, &key, &e, n as i64, now, &mut out);
                }
                p.tick(now, &mut out);
            }
            p.decide_until(i64::MAX);
            p.tick(i64::MAX, &mut out);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        /// Random events of one key, fed in a random order (nothing late): the live
        /// episodes and their member counts equal the oracle's, for every rule kind.
        #[test]
        fn any_arrival_order_gives_the_canonical_episodes(
            spec in proptest::collection::vec((0i64..3_600, 0usize..3, 0usize..3), 1..40),
            order in proptest::collection::vec(any::<proptest::sample::Index>(), 40),
        ) {
            let events: Vec<Event> = spec
                .iter()
                .enumerate()
                .map(|(n, (secs, state, dir))| {
                    let mut e = event(&format!("i{n:02}"), T0 + secs * 1000, ["KZ", "KG", "TJ"][*state], "s");
                    e.direction = [None, Some(Direction::Exit), Some(Direction::Entry)][*dir];
                    e
                })
                .collect();
            let mut shuffled: Vec<Arc<Event>> = events.iter().cloned().map(Arc::new).collect();
            for (i, ix) in order.iter().enumerate().take(shuffled.len()) {
                let j = ix.index(shuffled.len());
                shuffled.swap(i, j);
            }
            let rules = rules_of(kinds());
            let mut settings = EngineSettings::with_lateness(10 * HOUR);
            settings.idle_ms = 100 * HOUR;
            let mut p = PartitionState::new(rules.clone(), settings);
            let mut out = Vec::new();
            for (n, e) in shuffled.iter().enumerate() {
                let fed = p.feed(GroupBy::Area, "KZ-ZHT", e, n as i64, T0 + 3_600_000, &mut out);
                prop_assert!(fed.iter().all(|(_, f)| *f != Fed::Late));
            }
            p.decide_until(i64::MAX / 4);
            p.tick(T0 + 3_600_000, &mut out);
            for rule in &rules.rules {
                let mut live: BTreeMap<String, (i64, i32)> = BTreeMap::new();
                for a in out.iter().filter(|a| a.rule == rule.name()) {
                    match a.msg_type {
                        MsgType::Alert => { live.insert(a.alert_id.clone(), (a.window_start, a.incident_count)); }
                        MsgType::Update => { live.insert(a.references[0].clone(), (a.window_start, a.incident_count)); }
                        MsgType::Cancel => { live.remove(&a.references[0]); }
                    }
                }
                let got: BTreeMap<i64, usize> = live.values().map(|(s, n)| (*s, *n as usize)).collect();
                prop_assert_eq!(&got, &oracle(rule, &events), "rule {}", rule.name());
            }
        }
    }
}
