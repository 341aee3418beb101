//! The correlation engine: event-time windows per (rule, key), pure and deterministic.
//!
//! For each (rule, key) the engine keeps the matching events sorted by event time (and
//! incident id, to break ties), deduplicated by incident id. After every change it derives
//! the *canonical* episodes from that sorted state, the same whatever order the events
//! arrived in, and compares them with what it already emitted:
//!
//! - a new episode raises an `ALERT` (id = hash of rule, key and window start);
//! - an episode that gained evidence raises an `UPDATE` referencing the alert;
//! - an emitted episode that no longer exists (an out-of-order event moved the window, or
//!   an absence was explained after all) raises a `CANCEL` referencing it.
//!
//! Episodes are found by a greedy scan in event time: the earliest event at which the
//! rule's condition holds within `window` starts an episode `[start, start + cooldown]`;
//! every matching event inside it is evidence of that alert; the scan resumes after it.
//!
//! Watermarks are per input partition: the highest event time seen there minus the
//! allowed lateness. An event older than the watermark is *late*: counted and reported,
//! never merged. State older than every window that could still change is evicted, and
//! the lowest offset still held is what the caller may commit, so a restart replays
//! exactly the input that rebuilds the open windows.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use ewn_model::{Alert, Category, GeoPoint, MsgType, ScoredIncident, Tlp};
use sha2::{Digest, Sha256};

use crate::rules::{DistinctField, GroupBy, RuleConfig, RuleKind};
use crate::score::{ScoreWeights, Scored};

/// One verified, scored incident as the rules see it: the re-keyed wire record itself
/// (`group` and `group_key` say which key it came in under; the rules do not use them).
pub type Event = ScoredIncident;

/// Group-by values and distinct-field values of an event.
pub trait EventKeys {
    /// The group-by values for `group` (a subject rule sees every subject).
    fn keys(&self, group: GroupBy) -> Vec<&str>;
    fn distinct_value(&self, field: DistinctField) -> &str;
}

impl EventKeys for Event {
    fn keys(&self, group: GroupBy) -> Vec<&str> {
        match group {
            GroupBy::Subject => self.subjects.iter().map(String::as_str).collect(),
            GroupBy::Area => vec![self.area.as_str()],
            GroupBy::Crossing => self.crossing.as_deref().into_iter().collect(),
            GroupBy::State => vec![self.state.as_str()],
            GroupBy::Incident => vec![self.incident_id.as_str()],
        }
    }

    fn distinct_value(&self, field: DistinctField) -> &str {
        match field {
            DistinctField::State => &self.state,
            DistinctField::Area => &self.area,
            DistinctField::Crossing => self.crossing.as_deref().unwrap_or(""),
            DistinctField::Category => self.category.as_str(),
            DistinctField::Agency => &self.agency,
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
}

/// A deterministic 128-bit id, hex.
fn digest_id(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    hex::encode(&h.finalize()[..16])
}

/// The id of the first alert of an episode: rule, key and window start.
/// The correlation event of a verified, scored incident (group and key are set per
/// re-keyed record).
pub fn event_of(
    i: &ewn_model::Incident,
    scored: crate::score::Scored,
    evidence: ewn_model::Evidence,
) -> Event {
    Event {
        group: String::new(),
        group_key: String::new(),
        incident_id: i.incident_id.clone(),
        occurred_at: i.occurred_at,
        reported_at: i.reported_at,
        state: i.reporter.state.clone(),
        agency: i.reporter.agency.clone(),
        area: i.location.area.clone(),
        crossing: i.location.crossing.clone(),
        category: i.category,
        direction: i.direction,
        watchlist_hit: crate::score::is_watchlist_hit(i),
        subjects: i.subjects.iter().map(|s| s.subject_ref.clone()).collect(),
        score: scored.score,
        level: scored.level,
        reasons: scored.reasons,
        tlp: i.tlp,
        lat: i.location.lat,
        lon: i.location.lon,
        evidence,
    }
}

pub fn alert_id(rule: &str, key: &str, window_start: i64) -> String {
    digest_id(&[rule.as_bytes(), key.as_bytes(), &window_start.to_be_bytes()])
}

#[derive(Clone, Debug)]
struct Episode {
    start: i64,
    members: Vec<usize>,
}

#[derive(Clone, Debug)]
struct Emitted {
    id: String,
    members: usize,
}

/// The state of one (rule, key).
#[derive(Default)]
struct KeyState {
    /// Sorted by (t, incident_id); each with the input offset it came from.
    events: Vec<(Arc<Event>, i64)>,
    /// Emitted episodes by window start.
    emitted: BTreeMap<i64, Emitted>,
}

/// A rule with its precomputed bits.
pub struct Rule {
    pub config: RuleConfig,
    window: i64,
    cooldown: i64,
}

impl Rule {
    pub fn new(config: RuleConfig) -> Rule {
        Rule {
            window: config.window_ms(),
            cooldown: config.cooldown_ms(),
            config,
        }
    }

    /// Does the event belong in this rule's state at all?
    pub fn admits(&self, e: &Event) -> bool {
        if !self.config.filter.matches(e) {
            return false;
        }
        match self.config.kind {
            RuleKind::Sequence | RuleKind::Absence => {
                self.config.first.as_ref().is_some_and(|f| f.matches(e))
                    || self.config.then.as_ref().is_some_and(|f| f.matches(e))
            }
            _ => true,
        }
    }

    fn is_first(&self, e: &Event) -> bool {
        self.config.first.as_ref().is_some_and(|f| f.matches(e))
    }

    fn is_then(&self, e: &Event) -> bool {
        self.config.then.as_ref().is_some_and(|f| f.matches(e))
    }

    /// How far behind the watermark state must be kept.
    fn horizon(&self) -> i64 {
        self.cooldown + self.window
    }

    /// The canonical episodes of sorted `events`, given the watermark. Also returns the
    /// earliest time at which an undecided absence will be decided.
    fn episodes(
        &self,
        events: &[(Arc<Event>, i64)],
        watermark: i64,
    ) -> (Vec<Episode>, Option<i64>) {
        let t = |i: usize| events[i].0.occurred_at;
        let n = events.len();
        let mut out = Vec::new();
        let mut pending = None;
        let mut i = 0;
        while i < n {
            let s = t(i);
            let qualifies = match self.config.kind {
                RuleKind::Threshold => {
                    let within = events[i..]
                        .iter()
                        .take_while(|(e, _)| e.occurred_at <= s + self.window)
                        .count();
                    within >= self.config.count as usize
                }
                RuleKind::Distinct => {
                    let field = self.config.distinct.unwrap_or(DistinctField::State);
                    let values: BTreeSet<&str> = events[i..]
                        .iter()
                        .take_while(|(e, _)| e.occurred_at <= s + self.window)
                        .map(|(e, _)| e.distinct_value(field))
                        .collect();
                    values.len() >= self.config.count as usize
                }
                RuleKind::Sequence => {
                    self.is_first(&events[i].0)
                        && events[i + 1..]
                            .iter()
                            .take_while(|(e, _)| e.occurred_at <= s + self.window)
                            .any(|(e, _)| e.occurred_at > s && self.is_then(e))
                }
                RuleKind::Absence => {
                    if !self.is_first(&events[i].0) {
                        false
                    } else {
                        let from = if self.config.lookback {
                            s - self.window
                        } else {
                            s
                        };
                        let explained = events.iter().any(|(e, _)| {
                            e.occurred_at <= s + self.window
                                && (e.occurred_at > s
                                    || (self.config.lookback
                                        && e.occurred_at >= from
                                        && e.occurred_at < s))
                                && self.is_then(e)
                        });
                        if explained {
                            false
                        } else if watermark < s + self.window {
                            // Undecided: nothing after it can be decided either.
                            pending = Some(s + self.window);
                            break;
                        } else {
                            true
                        }
                    }
                }
            };
            if !qualifies {
                i += 1;
                continue;
            }
            let end = s + self.cooldown;
            let mut members = Vec::new();
            let mut j = i;
            while j < n && t(j) <= end {
                let e = &events[j].0;
                let member = match self.config.kind {
                    RuleKind::Sequence => self.is_first(e) || self.is_then(e),
                    RuleKind::Absence => self.is_first(e),
                    _ => true,
                };
                if member {
                    members.push(j);
                }
                j += 1;
            }
            out.push(Episode { start: s, members });
            i = j;
        }
        (out, pending)
    }
}

/// The rules of one processor, shared by every partition.
pub struct RuleSet {
    pub rules: Vec<Rule>,
    pub weights: ScoreWeights,
}

impl RuleSet {
    pub fn new(configs: Vec<RuleConfig>, weights: ScoreWeights) -> RuleSet {
        RuleSet {
            rules: configs
                .into_iter()
                .filter(|c| c.enabled)
                .map(Rule::new)
                .collect(),
            weights,
        }
    }

    /// The group-by fields some stateful rule uses.
    pub fn stateful_groups(&self) -> BTreeSet<GroupBy> {
        self.rules
            .iter()
            .map(|r| r.config.group_by)
            .filter(|g| *g != GroupBy::Incident)
            .collect()
    }

    /// Alerts of the immediate (`group_by = "incident"`) rules for one event: no state.
    pub fn immediate(&self, event: &Event, now_ms: i64, out: &mut Vec<Alert>) {
        for rule in self
            .rules
            .iter()
            .filter(|r| r.config.group_by == GroupBy::Incident)
        {
            if rule.admits(event) {
                let key = format!("incident:{}", event.incident_id);
                let id = alert_id(&rule.config.name, &key, event.occurred_at);
                out.push(self.build(
                    rule,
                    &key,
                    MsgType::Alert,
                    id,
                    vec![],
                    event.occurred_at,
                    &[event],
                    now_ms,
                ));
            }
        }
    }

    /// Builds an alert from its evidence.
    #[allow(clippy::too_many_arguments)]
    fn build(
        &self,
        rule: &Rule,
        key: &str,
        msg_type: MsgType,
        alert_id: String,
        references: Vec<String>,
        start: i64,
        members: &[&Event],
        now_ms: i64,
    ) -> Alert {
        let states: BTreeSet<&str> = members.iter().map(|e| e.state.as_str()).collect();
        let categories: BTreeSet<Category> = members.iter().map(|e| e.category).collect();
        let areas: BTreeSet<&str> = members.iter().map(|e| e.area.as_str()).collect();
        let strongest = members
            .iter()
            .max_by(|a, b| {
                a.score
                    .cmp(&b.score)
                    .then_with(|| b.occurred_at.cmp(&a.occurred_at))
            })
            .map(|e| Scored {
                score: e.score,
                level: e.level,
                reasons: e.reasons.clone(),
            });
        let scored = match strongest {
            Some(s) => self.weights.alert_score(&s, states.len()),
            None => self.weights.finish(vec![]),
        };
        let tlp = members.iter().map(|e| e.tlp).max().unwrap_or(Tlp::Clear);
        Alert {
            alert_id,
            msg_type,
            references,
            rule: rule.config.name.clone(),
            level: rule.config.level.max(scored.level),
            score: scored.score,
            reasons: scored.reasons,
            key: key.to_string(),
            window_start: start,
            window_end: start + rule.window,
            incident_ids: members.iter().map(|e| e.incident_id.clone()).collect(),
            states: states.into_iter().map(String::from).collect(),
            categories: categories.into_iter().collect(),
            areas: areas.into_iter().map(String::from).collect(),
            points: members
                .iter()
                .map(|e| GeoPoint {
                    lat: e.lat,
                    lon: e.lon,
                })
                .collect(),
            tlp,
            named_agencies: rule.config.named_agencies.clone(),
            created_at: now_ms,
            evidence: members.iter().map(|e| e.evidence.clone()).collect(),
        }
    }
}

/// Correlation state of one input partition (of the re-keyed stream).
pub struct PartitionState {
    rules: Arc<RuleSet>,
    lateness_ms: i64,
    max_t: Option<i64>,
    /// A floor for *deciding* absences, from the wall clock while the partition is idle.
    /// Never used for lateness: an event is late only by event time.
    decide_floor: Option<i64>,
    keys: HashMap<(usize, String), KeyState>,
    /// Absence decisions due at a time: (due, rule, key).
    timers: BTreeSet<(i64, usize, String)>,
    /// Offsets of the events held, with multiplicity.
    held: BTreeMap<i64, usize>,
    next_offset: Option<i64>,
}

impl PartitionState {
    pub fn new(rules: Arc<RuleSet>, lateness_ms: i64) -> Self {
        PartitionState {
            rules,
            lateness_ms,
            max_t: None,
            decide_floor: None,
            keys: HashMap::new(),
            timers: BTreeSet::new(),
            held: BTreeMap::new(),
            next_offset: None,
        }
    }

    /// The highest event time seen minus the allowed lateness.
    pub fn watermark(&self) -> Option<i64> {
        self.max_t.map(|t| t - self.lateness_ms)
    }

    /// Lets pending absences be decided up to `time` even without newer events (an idle
    /// partition follows the clock, so absence rules still decide in a quiet network).
    /// Lateness is unaffected: it is judged by event time alone, so a replay after a
    /// restart, or a report delayed in a quiet hour, is still merged.
    pub fn decide_until(&mut self, time: i64) {
        self.decide_floor = Some(self.decide_floor.map_or(time, |d| d.max(time)));
    }

    /// The time up to which absences are decided.
    fn decision_time(&self) -> Option<i64> {
        match (self.watermark(), self.decide_floor) {
            (Some(w), Some(d)) => Some(w.max(d)),
            (w, d) => w.or(d),
        }
    }

    /// Switches to a new rule set, keeping the state of every rule whose configuration is
    /// unchanged; a new or changed rule starts empty and sees events from now on.
    pub fn replace_rules(&mut self, rules: Arc<RuleSet>) {
        let map: HashMap<usize, usize> = self
            .rules
            .rules
            .iter()
            .enumerate()
            .filter_map(|(old, r)| {
                rules
                    .rules
                    .iter()
                    .position(|n| n.config == r.config)
                    .map(|new| (old, new))
            })
            .collect();
        let keys = std::mem::take(&mut self.keys);
        self.keys = keys
            .into_iter()
            .filter_map(|((ri, k), st)| map.get(&ri).map(|n| ((*n, k), st)))
            .collect();
        self.timers = std::mem::take(&mut self.timers)
            .into_iter()
            .filter_map(|(due, ri, k)| map.get(&ri).map(|n| (due, *n, k)))
            .collect();
        self.held.clear();
        for state in self.keys.values() {
            for (_, offset) in &state.events {
                *self.held.entry(*offset).or_default() += 1;
            }
        }
        self.rules = rules;
    }

    /// Number of (rule, key) states held.
    pub fn keys_held(&self) -> usize {
        self.keys.len()
    }

    /// Keys held per rule name.
    pub fn keys_per_rule(&self) -> BTreeMap<&str, usize> {
        let mut m = BTreeMap::new();
        for (rule, _) in self.keys.keys() {
            *m.entry(self.rules.rules[*rule].config.name.as_str())
                .or_default() += 1;
        }
        m
    }

    /// The offset a consumer may commit: the lowest offset still needed to rebuild the
    /// state, or the next unread offset when nothing is held.
    pub fn commit_offset(&self) -> Option<i64> {
        self.held.keys().next().copied().or(self.next_offset)
    }

    /// Feeds one event, received at `offset` for `group`. Alerts go to `out`; the result
    /// says, per rule of that group, what happened (for metrics and late reports).
    pub fn feed(
        &mut self,
        group: GroupBy,
        key: &str,
        event: &Arc<Event>,
        offset: i64,
        now_ms: i64,
        out: &mut Vec<Alert>,
    ) -> Vec<(usize, Fed)> {
        self.next_offset = Some(self.next_offset.map_or(offset + 1, |n| n.max(offset + 1)));
        let late = self.watermark().is_some_and(|w| event.occurred_at < w);
        let mut results = Vec::new();
        let rules = self.rules.clone();
        for (ri, rule) in rules.rules.iter().enumerate() {
            if rule.config.group_by != group {
                continue;
            }
            if !rule.admits(event) {
                results.push((ri, Fed::Ignored));
                continue;
            }
            if late {
                results.push((ri, Fed::Late));
                continue;
            }
            let state = self.keys.entry((ri, key.to_string())).or_default();
            let pos = state.events.binary_search_by(|(e, _)| {
                (e.occurred_at, e.incident_id.as_str())
                    .cmp(&(event.occurred_at, event.incident_id.as_str()))
            });
            let insert_at = match pos {
                Ok(_) => {
                    results.push((ri, Fed::Duplicate));
                    continue;
                }
                Err(at) => at,
            };
            if state
                .events
                .iter()
                .any(|(e, _)| e.incident_id == event.incident_id)
            {
                results.push((ri, Fed::Duplicate));
                continue;
            }
            state.events.insert(insert_at, (event.clone(), offset));
            *self.held.entry(offset).or_default() += 1;
            results.push((ri, Fed::Accepted));
            self.evaluate(ri, key, now_ms, out);
        }
        if !late {
            self.max_t = Some(
                self.max_t
                    .map_or(event.occurred_at, |m| m.max(event.occurred_at)),
            );
        }
        results
    }

    /// Decides the absence rules whose windows the watermark has passed, and evicts state
    /// no window can need any more. Call after each batch.
    pub fn tick(&mut self, now_ms: i64, out: &mut Vec<Alert>) {
        let Some(decide) = self.decision_time() else {
            return;
        };
        while let Some((due, ri, key)) = self.timers.first().cloned() {
            if due > decide {
                break;
            }
            self.timers.pop_first();
            self.evaluate(ri, &key, now_ms, out);
        }
        if let Some(watermark) = self.watermark() {
            self.evict(watermark);
        }
    }

    /// Recomputes the canonical episodes of (rule, key) and emits the difference.
    fn evaluate(&mut self, ri: usize, key: &str, now_ms: i64, out: &mut Vec<Alert>) {
        let rules = self.rules.clone();
        let rule = &rules.rules[ri];
        let decide = self.decision_time().unwrap_or(i64::MIN);
        let Some(state) = self.keys.get_mut(&(ri, key.to_string())) else {
            return;
        };
        let (episodes, pending) = rule.episodes(&state.events, decide);
        if let Some(due) = pending {
            self.timers.insert((due, ri, key.to_string()));
        }
        let full_key = format!("{}:{key}", rule.config.group_by.as_str());
        let mut live = BTreeSet::new();
        for ep in &episodes {
            live.insert(ep.start);
            let members: Vec<&Event> = ep
                .members
                .iter()
                .map(|&i| state.events[i].0.as_ref())
                .collect();
            match state.emitted.get(&ep.start) {
                None => {
                    let id = alert_id(&rule.config.name, &full_key, ep.start);
                    state.emitted.insert(
                        ep.start,
                        Emitted {
                            id: id.clone(),
                            members: members.len(),
                        },
                    );
                    out.push(rules.build(
                        rule,
                        &full_key,
                        MsgType::Alert,
                        id,
                        vec![],
                        ep.start,
                        &members,
                        now_ms,
                    ));
                }
                Some(prev) if prev.members != members.len() => {
                    let first = prev.id.clone();
                    let id = digest_id(&[
                        first.as_bytes(),
                        b"update",
                        &(members.len() as u64).to_be_bytes(),
                    ]);
                    state.emitted.insert(
                        ep.start,
                        Emitted {
                            id: first.clone(),
                            members: members.len(),
                        },
                    );
                    out.push(rules.build(
                        rule,
                        &full_key,
                        MsgType::Update,
                        id,
                        vec![first],
                        ep.start,
                        &members,
                        now_ms,
                    ));
                }
                Some(_) => {}
            }
        }
        let gone: Vec<i64> = state
            .emitted
            .keys()
            .filter(|s| !live.contains(s))
            .copied()
            .collect();
        for start in gone {
            if let Some(prev) = state.emitted.remove(&start) {
                let id = digest_id(&[prev.id.as_bytes(), b"cancel"]);
                out.push(rules.build(
                    rule,
                    &full_key,
                    MsgType::Cancel,
                    id,
                    vec![prev.id],
                    start,
                    &[],
                    now_ms,
                ));
            }
        }
    }

    /// Drops events and emitted records that no window can change any more.
    fn evict(&mut self, watermark: i64) {
        let rules = self.rules.clone();
        let mut empty = Vec::new();
        for ((ri, key), state) in self.keys.iter_mut() {
            let rule = &rules.rules[*ri];
            let horizon = watermark - rule.horizon();
            if state
                .events
                .first()
                .is_none_or(|(e, _)| e.occurred_at >= horizon)
            {
                continue;
            }
            let decide = self.decide_floor.map_or(watermark, |d| d.max(watermark));
            let (episodes, _) = rule.episodes(&state.events, decide);
            // Keep whole any episode still open at the horizon.
            let cut = episodes
                .iter()
                .filter(|ep| ep.start < horizon && ep.start + rule.cooldown >= horizon)
                .map(|ep| ep.start)
                .min()
                .unwrap_or(horizon);
            let keep_from = state.events.partition_point(|(e, _)| e.occurred_at < cut);
            for (_, offset) in state.events.drain(..keep_from) {
                if let Some(n) = self.held.get_mut(&offset) {
                    *n -= 1;
                    if *n == 0 {
                        self.held.remove(&offset);
                    }
                }
            }
            state.emitted.retain(|start, _| *start >= cut);
            if state.events.is_empty() && state.emitted.is_empty() {
                empty.push((*ri, key.clone()));
            }
        }
        for k in empty {
            self.keys.remove(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::default_rules;
    use ewn_model::{Direction, Evidence, Level, ScoreReason};

    const MIN: i64 = 60_000;
    const HOUR: i64 = 60 * MIN;

    pub(crate) fn event(id: &str, t: i64, state: &str, subject: &str) -> Arc<Event> {
        Arc::new(Event {
            group: String::new(),
            group_key: String::new(),
            incident_id: id.into(),
            occurred_at: t,
            reported_at: t,
            state: state.into(),
            agency: format!("{state}-AGENCY"),
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
            }],
            tlp: Tlp::Green,
            lat: 44.0,
            lon: 80.0,
            evidence: Evidence {
                incident_id: id.into(),
                topic: "t".into(),
                partition: 0,
                offset: 0,
                key_id: "k".into(),
                signature: [0; 64],
                payload_sha256: [0; 32],
            },
        })
    }

    fn engine() -> PartitionState {
        PartitionState::new(
            Arc::new(RuleSet::new(default_rules(), ScoreWeights::default())),
            5 * MIN,
        )
    }

    fn feed_all(p: &mut PartitionState, group: GroupBy, events: &[Arc<Event>]) -> Vec<Alert> {
        let mut out = Vec::new();
        for (i, e) in events.iter().enumerate() {
            for key in e.keys(group) {
                p.feed(group, key, e, i as i64, 0, &mut out);
            }
            p.tick(0, &mut out);
        }
        out
    }

    fn ids(alerts: &[Alert]) -> Vec<(MsgType, String)> {
        alerts
            .iter()
            .map(|a| (a.msg_type, a.alert_id.clone()))
            .collect()
    }

    #[test]
    fn cross_border_fires_once_then_updates() {
        let mut p = engine();
        let evs = [
            event("a", 0, "KZ", "s1"),
            event("b", 10 * HOUR, "KG", "s1"),
            event("c", 20 * HOUR, "TJ", "s1"),
        ];
        let out = feed_all(&mut p, GroupBy::Subject, &evs);
        let kinds: Vec<MsgType> = out.iter().map(|a| a.msg_type).collect();
        assert_eq!(kinds, [MsgType::Alert, MsgType::Update]);
        assert_eq!(
            out[0].alert_id,
            alert_id("cross_border_movement", "subject:s1", 0)
        );
        assert_eq!(out[1].references, [out[0].alert_id.clone()]);
        assert_eq!(out[1].states, ["KG", "KZ", "TJ"]);
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
            &[event("a", 0, "KZ", "s1"), event("b", HOUR, "KZ", "s1")],
        );
        assert!(out.is_empty());
    }

    #[test]
    fn window_exceeded_by_a_minute_is_silent() {
        let mut p = engine();
        let evs = [
            event("a", 0, "KZ", "s1"),
            event("b", 72 * HOUR + MIN, "KG", "s1"),
        ];
        assert!(feed_all(&mut p, GroupBy::Subject, &evs).is_empty());
        let mut p = engine();
        let evs = [event("a", 0, "KZ", "s1"), event("b", 72 * HOUR, "KG", "s1")];
        assert_eq!(
            feed_all(&mut p, GroupBy::Subject, &evs).len(),
            1,
            "exactly at the window edge fires"
        );
    }

    #[test]
    fn out_of_order_within_lateness_gives_the_same_live_alerts() {
        let in_order: Vec<Arc<Event>> = (0..7)
            .map(|i| {
                event(
                    &format!("e{i}"),
                    i * 30_000,
                    ["KZ", "KG"][i as usize % 2],
                    "s",
                )
            })
            .collect();
        let mut shuffled = in_order.clone();
        shuffled.reverse();
        shuffled.swap(1, 4);
        let live = |alerts: &[Alert]| -> BTreeSet<String> {
            let mut live = BTreeSet::new();
            for a in alerts {
                match a.msg_type {
                    MsgType::Alert => {
                        live.insert(a.alert_id.clone());
                    }
                    MsgType::Cancel => {
                        live.remove(&a.references[0]);
                    }
                    MsgType::Update => {}
                }
            }
            live
        };
        let a = feed_all(&mut engine(), GroupBy::Subject, &in_order);
        let b = feed_all(&mut engine(), GroupBy::Subject, &shuffled);
        assert_eq!(live(&a), live(&b));
        assert_eq!(live(&a).len(), 1);
    }

    #[test]
    fn late_events_are_not_merged() {
        let mut p = engine();
        let mut out = Vec::new();
        let a = event("a", 10 * HOUR, "KZ", "s");
        p.feed(GroupBy::Subject, "s", &a, 0, 0, &mut out);
        let late = event("b", 10 * HOUR - 6 * MIN, "KG", "s");
        let fed = p.feed(GroupBy::Subject, "s", &late, 1, 0, &mut out);
        assert!(fed.iter().any(|(_, f)| *f == Fed::Late));
        assert!(out.is_empty());
        let within = event("c", 10 * HOUR - 4 * MIN, "KG", "s");
        p.feed(GroupBy::Subject, "s", &within, 2, 0, &mut out);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn burst_counts_medium_and_above() {
        let mut p = engine();
        let evs: Vec<Arc<Event>> = (0..5)
            .map(|i| event(&format!("e{i}"), i * 10 * MIN, "KZ", &format!("s{i}")))
            .collect();
        let out = feed_all(&mut p, GroupBy::Area, &evs);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].rule, "area_burst");
        assert_eq!(out[0].incident_ids.len(), 5);
        let mut p = engine();
        let mut four = evs.clone();
        four.pop();
        four.push(event("late", 60 * MIN + 1, "KZ", "x"));
        assert!(
            feed_all(&mut p, GroupBy::Area, &four).is_empty(),
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
        let mut p = engine();
        let exit = with_direction(event("x", 0, "KZ", "s"), Direction::Exit);
        let mut out = Vec::new();
        p.feed(GroupBy::Subject, "s", &exit, 0, 0, &mut out);
        p.tick(0, &mut out);
        assert!(out.is_empty(), "undecided before the window ends");
        // an unrelated later event moves the watermark past the window
        let later = event("later", 24 * HOUR + 6 * MIN, "KZ", "other");
        p.feed(GroupBy::Subject, "other", &later, 1, 0, &mut out);
        p.tick(0, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].rule, "exit_without_entry");

        let mut p = engine();
        let mut out = Vec::new();
        p.feed(GroupBy::Subject, "s", &exit, 0, 0, &mut out);
        let entry = with_direction(event("y", 3 * HOUR, "KG", "s"), Direction::Entry);
        p.feed(GroupBy::Subject, "s", &entry, 1, 0, &mut out);
        p.feed(GroupBy::Subject, "other", &later, 2, 0, &mut out);
        p.tick(0, &mut out);
        assert!(
            out.iter().all(|a| a.rule != "exit_without_entry"),
            "explained by the entry"
        );
    }

    #[test]
    fn the_idle_clock_decides_absences_but_never_makes_events_late() {
        let mut p = engine();
        let mut out = Vec::new();
        let exit = with_direction(event("x", 0, "KZ", "s"), Direction::Exit);
        p.decide_until(100 * HOUR);
        p.feed(GroupBy::Subject, "s", &exit, 0, 0, &mut out);
        p.tick(0, &mut out);
        assert_eq!(out.len(), 1, "decided by the clock: {out:?}");
        // an entry 3 h later, delayed but not late by event time: the alert is withdrawn
        let entry = with_direction(event("y", 3 * HOUR, "KG", "s"), Direction::Entry);
        let fed = p.feed(GroupBy::Subject, "s", &entry, 1, 0, &mut out);
        assert!(fed.iter().all(|(_, f)| *f != Fed::Late));
        assert_eq!(out.last().map(|a| a.msg_type), Some(MsgType::Cancel));
    }

    #[test]
    fn eviction_releases_offsets_and_keeps_ids_stable() {
        let mut p = engine();
        let mut out = Vec::new();
        let a = event("a", 0, "KZ", "s");
        let b = event("b", HOUR, "KG", "s");
        p.feed(GroupBy::Subject, "s", &a, 10, 0, &mut out);
        p.feed(GroupBy::Subject, "s", &b, 11, 0, &mut out);
        assert_eq!(p.commit_offset(), Some(10));
        let far = event("far", 300 * HOUR, "KZ", "t");
        p.feed(GroupBy::Subject, "t", &far, 12, 0, &mut out);
        p.tick(0, &mut out);
        assert_eq!(p.commit_offset(), Some(12), "the closed episode is evicted");
        assert_eq!(
            out.iter().filter(|a| a.msg_type == MsgType::Cancel).count(),
            0
        );
    }

    #[test]
    fn replacing_rules_keeps_unchanged_state() {
        let mut p = engine();
        let mut out = Vec::new();
        p.feed(
            GroupBy::Subject,
            "s",
            &event("a", 0, "KZ", "s"),
            0,
            0,
            &mut out,
        );
        let mut changed = default_rules();
        changed.retain(|r| r.name != "area_burst");
        p.replace_rules(Arc::new(RuleSet::new(changed, ScoreWeights::default())));
        p.feed(
            GroupBy::Subject,
            "s",
            &event("b", HOUR, "KG", "s"),
            1,
            0,
            &mut out,
        );
        assert_eq!(out.len(), 1, "the cross-border state survived the reload");
        assert_eq!(p.commit_offset(), Some(0));
    }

    #[test]
    fn duplicates_are_ignored() {
        let mut p = engine();
        let mut out = Vec::new();
        let a = event("a", 0, "KZ", "s");
        p.feed(GroupBy::Subject, "s", &a, 0, 0, &mut out);
        let fed = p.feed(GroupBy::Subject, "s", &a, 1, 0, &mut out);
        assert!(
            fed.iter()
                .all(|(_, f)| *f == Fed::Duplicate || *f == Fed::Ignored)
        );
    }

    #[test]
    fn sequence_needs_first_then() {
        let seq = crate::rules::seizure_then_crossing();
        let rules = Arc::new(RuleSet::new(vec![seq], ScoreWeights::default()));
        let seizure = |id: &str, t| {
            let mut e = (*event(id, t, "KZ", "s")).clone();
            e.category = Category::WeaponsSeizure;
            Arc::new(e)
        };
        let run = |evs: &[Arc<Event>]| {
            let mut p = PartitionState::new(rules.clone(), 5 * MIN);
            feed_all(&mut p, GroupBy::Subject, evs)
        };
        assert_eq!(
            run(&[seizure("a", 0), event("b", 10 * MIN, "KG", "s")]).len(),
            1
        );
        assert!(
            run(&[event("b", 0, "KG", "s"), seizure("a", 10 * MIN)]).is_empty(),
            "B before A"
        );
        assert!(
            run(&[seizure("a", 0), event("b", 61 * MIN, "KG", "s")]).is_empty(),
            "beyond the window"
        );
        let _ = ids(&[]);
    }
}
