//! The correlation engine's event: what the rules and alerts need of a verified, scored
//! incident, apart from the re-keyed wire record (`ScoredIncident`) that carries it between
//! the stages.

use std::collections::HashSet;
use std::sync::Arc;

use ewn_model::{Category, Direction, Evidence, Incident, Level, ScoreReason, ScoredIncident, Tlp};
use serde::{Deserialize, Serialize};

use crate::score::Scored;

/// What a rule's state is keyed by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    /// Each blinded subject of the incident (an incident with two subjects counts for both).
    Subject,
    Area,
    Crossing,
    State,
    /// Each incident on its own: an immediate rule, no state.
    Incident,
}

impl GroupBy {
    pub const STATEFUL: [GroupBy; 4] = [
        GroupBy::Subject,
        GroupBy::Area,
        GroupBy::Crossing,
        GroupBy::State,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            GroupBy::Subject => "subject",
            GroupBy::Area => "area",
            GroupBy::Crossing => "crossing",
            GroupBy::State => "state",
            GroupBy::Incident => "incident",
        }
    }

    pub fn parse(s: &str) -> Option<GroupBy> {
        [
            GroupBy::Subject,
            GroupBy::Area,
            GroupBy::Crossing,
            GroupBy::State,
            GroupBy::Incident,
        ]
        .into_iter()
        .find(|g| g.as_str() == s)
    }
}

/// The field a `distinct` rule counts values of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DistinctField {
    State,
    Area,
    Crossing,
    Category,
    Agency,
}

/// A shared, immutable string: the engine holds many events naming the same few states,
/// agencies, areas, posts, topics and keys.
pub type Sym = Arc<str>;

/// Shares equal strings and reason lists between the events of a partition, up to `cap`
/// distinct values of each (beyond that, values are held unshared: memory stays bounded
/// by the events' own budgets either way).
#[derive(Debug)]
pub struct Interner {
    cap: usize,
    strs: HashSet<Sym>,
    reasons: HashSet<Arc<[ScoreReason]>>,
}

impl Interner {
    pub fn new(cap: usize) -> Self {
        Interner {
            cap,
            strs: HashSet::new(),
            reasons: HashSet::new(),
        }
    }

    pub fn str(&mut self, s: String) -> Sym {
        if let Some(a) = self.strs.get(s.as_str()) {
            return a.clone();
        }
        let a: Sym = Arc::from(s);
        if self.strs.len() < self.cap {
            self.strs.insert(a.clone());
        }
        a
    }

    pub fn reasons(&mut self, r: Vec<ScoreReason>) -> Arc<[ScoreReason]> {
        if let Some(a) = self.reasons.get(r.as_slice()) {
            return a.clone();
        }
        let a: Arc<[ScoreReason]> = Arc::from(r);
        if self.reasons.len() < self.cap {
            self.reasons.insert(a.clone());
        }
        a
    }

    /// Values shared now.
    pub fn len(&self) -> usize {
        self.strs.len() + self.reasons.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where the signed report of an event is, and what checks it.
#[derive(Clone, Debug, PartialEq)]
pub struct Source {
    pub topic: Sym,
    pub partition: i32,
    pub offset: i64,
    pub key_id: Sym,
    pub signature: [u8; 64],
    pub payload_sha256: [u8; 32],
}

/// One verified, scored incident as the rules see it.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub incident_id: Sym,
    /// Event time (ms), inside `ewn_model::validate::{EARLIEST_MS, LATEST_MS}` once verified.
    pub occurred_at: i64,
    pub reported_at: i64,
    pub state: Sym,
    /// The reporting post, if the report names one; with the state, the event-time source.
    pub post_id: Option<Sym>,
    pub agency: Sym,
    pub area: Sym,
    pub crossing: Option<Sym>,
    pub category: Category,
    pub direction: Option<Direction>,
    pub watchlist_hit: bool,
    /// The blinded subjects (for re-keying at ingest; the correlate stage, which is given
    /// each event's key, does not keep them).
    pub subjects: Vec<String>,
    pub score: i32,
    pub level: Level,
    pub reasons: Arc<[ScoreReason]>,
    pub tlp: Tlp,
    pub lat: f64,
    pub lon: f64,
    pub source: Source,
}

/// The correlation event of a verified, scored incident.
pub fn event_of(i: &Incident, scored: Scored, evidence: Evidence) -> Event {
    Event {
        incident_id: Arc::from(i.incident_id.as_str()),
        occurred_at: i.occurred_at,
        reported_at: i.reported_at,
        state: Arc::from(i.reporter.state.as_str()),
        post_id: i.reporter.post_id.as_deref().map(Arc::from),
        agency: Arc::from(i.reporter.agency.as_str()),
        area: Arc::from(i.location.area.as_str()),
        crossing: i.location.crossing.as_deref().map(Arc::from),
        category: i.category,
        direction: i.direction,
        watchlist_hit: crate::score::is_watchlist_hit(i),
        subjects: i.subjects.iter().map(|s| s.subject_ref.clone()).collect(),
        score: scored.score,
        level: scored.level,
        reasons: Arc::from(scored.reasons),
        tlp: i.tlp,
        lat: i.location.lat,
        lon: i.location.lon,
        source: Source {
            topic: Arc::from(evidence.topic),
            partition: evidence.partition,
            offset: evidence.offset,
            key_id: Arc::from(evidence.key_id),
            signature: evidence.signature,
            payload_sha256: evidence.payload_sha256,
        },
    }
}

impl Event {
    /// The group-by values for `group` (a subject rule sees every subject).
    pub fn keys(&self, group: GroupBy) -> Vec<&str> {
        match group {
            GroupBy::Subject => self.subjects.iter().map(String::as_str).collect(),
            GroupBy::Area => vec![&*self.area],
            GroupBy::Crossing => self.crossing.as_deref().into_iter().collect(),
            GroupBy::State => vec![&*self.state],
            GroupBy::Incident => vec![&*self.incident_id],
        }
    }

    pub fn distinct_value(&self, field: DistinctField) -> &str {
        match field {
            DistinctField::State => &self.state,
            DistinctField::Area => &self.area,
            DistinctField::Crossing => self.crossing.as_deref().unwrap_or(""),
            DistinctField::Category => self.category.as_str(),
            DistinctField::Agency => &self.agency,
        }
    }

    /// The signed evidence of this event, as alerts carry it.
    pub fn evidence(&self) -> Evidence {
        Evidence {
            incident_id: self.incident_id.to_string(),
            topic: self.source.topic.to_string(),
            partition: self.source.partition,
            offset: self.source.offset,
            key_id: self.source.key_id.to_string(),
            signature: self.source.signature,
            payload_sha256: self.source.payload_sha256,
        }
    }

    /// The re-keyed wire record of this event under one group-by value.
    pub fn to_record(&self, group: GroupBy, key: &str) -> ScoredIncident {
        let s = |x: &Sym| x.to_string();
        ScoredIncident {
            group: group.as_str().to_string(),
            group_key: key.to_string(),
            incident_id: s(&self.incident_id),
            occurred_at: self.occurred_at,
            reported_at: self.reported_at,
            state: s(&self.state),
            agency: s(&self.agency),
            area: s(&self.area),
            crossing: self.crossing.as_ref().map(s),
            category: self.category,
            direction: self.direction,
            watchlist_hit: self.watchlist_hit,
            subjects: self.subjects.clone(),
            score: self.score,
            level: self.level,
            reasons: self.reasons.to_vec(),
            tlp: self.tlp,
            lat: self.lat,
            lon: self.lon,
            evidence: self.evidence(),
            post_id: self.post_id.as_ref().map(s),
        }
    }

    /// The event of a re-keyed record, with the group and key it came under, its repeated
    /// values shared through `interner`; `None` for a group no rule knows.
    pub fn from_record(
        r: ScoredIncident,
        interner: &mut Interner,
    ) -> Option<(GroupBy, String, Event)> {
        let group = GroupBy::parse(&r.group)?;
        let mut i = |x: String| interner.str(x);
        let event = Event {
            incident_id: Arc::from(r.incident_id),
            occurred_at: r.occurred_at,
            reported_at: r.reported_at,
            state: i(r.state),
            post_id: r.post_id.map(&mut i),
            agency: i(r.agency),
            area: i(r.area),
            crossing: r.crossing.map(&mut i),
            category: r.category,
            direction: r.direction,
            watchlist_hit: r.watchlist_hit,
            subjects: Vec::new(),
            score: r.score,
            level: r.level,
            reasons: Arc::from(Vec::<ScoreReason>::new()),
            tlp: r.tlp,
            lat: r.lat,
            lon: r.lon,
            source: Source {
                topic: i(r.evidence.topic),
                partition: r.evidence.partition,
                offset: r.evidence.offset,
                key_id: i(r.evidence.key_id),
                signature: r.evidence.signature,
                payload_sha256: r.evidence.payload_sha256,
            },
        };
        let event = Event {
            reasons: interner.reasons(r.reasons),
            ..event
        };
        Some((group, r.group_key, event))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_record_round_trips() {
        let r = ewn_model::samples::scored_incident();
        let mut interner = Interner::new(10);
        let (group, key, e) = Event::from_record(r.clone(), &mut interner).unwrap();
        // The correlate stage keeps no subjects: it is given each event's key.
        let back = ScoredIncident {
            subjects: r.subjects.clone(),
            ..e.to_record(group, &key)
        };
        assert_eq!(back, r);
        let (_, _, again) = Event::from_record(r, &mut interner).unwrap();
        assert!(Arc::ptr_eq(&e.area, &again.area), "shared");
        assert!(Arc::ptr_eq(&e.reasons, &again.reasons), "shared");
    }
}
