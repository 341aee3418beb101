//! The correlation engine's event: what the rules and alerts need of a verified, scored
//! incident, apart from the re-keyed wire record (`ScoredIncident`) that carries it between
//! the stages.

use ewn_model::{Category, Direction, Evidence, Incident, Level, ScoreReason, ScoredIncident, Tlp};

use crate::score::Scored;
use serde::{Deserialize, Serialize};

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

/// One verified, scored incident as the rules see it.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub incident_id: String,
    /// Event time (ms), inside `ewn_model::validate::{EARLIEST_MS, LATEST_MS}` once verified.
    pub occurred_at: i64,
    pub reported_at: i64,
    pub state: String,
    /// The reporting post, if the report names one; with the state, the event-time source.
    pub post_id: Option<String>,
    pub agency: String,
    pub area: String,
    pub crossing: Option<String>,
    pub category: Category,
    pub direction: Option<Direction>,
    pub watchlist_hit: bool,
    pub subjects: Vec<String>,
    pub score: i32,
    pub level: Level,
    pub reasons: Vec<ScoreReason>,
    pub tlp: Tlp,
    pub lat: f64,
    pub lon: f64,
    pub evidence: Evidence,
}

/// The correlation event of a verified, scored incident.
pub fn event_of(i: &Incident, scored: Scored, evidence: Evidence) -> Event {
    Event {
        incident_id: i.incident_id.clone(),
        occurred_at: i.occurred_at,
        reported_at: i.reported_at,
        state: i.reporter.state.clone(),
        post_id: i.reporter.post_id.clone(),
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

impl Event {
    /// The group-by values for `group` (a subject rule sees every subject).
    pub fn keys(&self, group: GroupBy) -> Vec<&str> {
        match group {
            GroupBy::Subject => self.subjects.iter().map(String::as_str).collect(),
            GroupBy::Area => vec![self.area.as_str()],
            GroupBy::Crossing => self.crossing.as_deref().into_iter().collect(),
            GroupBy::State => vec![self.state.as_str()],
            GroupBy::Incident => vec![self.incident_id.as_str()],
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

    /// The re-keyed wire record of this event under one group-by value.
    pub fn to_record(&self, group: GroupBy, key: &str) -> ScoredIncident {
        ScoredIncident {
            group: group.as_str().to_string(),
            group_key: key.to_string(),
            incident_id: self.incident_id.clone(),
            occurred_at: self.occurred_at,
            reported_at: self.reported_at,
            state: self.state.clone(),
            agency: self.agency.clone(),
            area: self.area.clone(),
            crossing: self.crossing.clone(),
            category: self.category,
            direction: self.direction,
            watchlist_hit: self.watchlist_hit,
            subjects: self.subjects.clone(),
            score: self.score,
            level: self.level,
            reasons: self.reasons.clone(),
            tlp: self.tlp,
            lat: self.lat,
            lon: self.lon,
            evidence: self.evidence.clone(),
            post_id: self.post_id.clone(),
        }
    }

    /// The event of a re-keyed record, with the group and key it came under; `None` for a
    /// group no rule knows.
    pub fn from_record(r: ScoredIncident) -> Option<(GroupBy, String, Event)> {
        let group = GroupBy::parse(&r.group)?;
        let event = Event {
            incident_id: r.incident_id,
            occurred_at: r.occurred_at,
            reported_at: r.reported_at,
            state: r.state,
            post_id: r.post_id,
            agency: r.agency,
            area: r.area,
            crossing: r.crossing,
            category: r.category,
            direction: r.direction,
            watchlist_hit: r.watchlist_hit,
            subjects: r.subjects,
            score: r.score,
            level: r.level,
            reasons: r.reasons,
            tlp: r.tlp,
            lat: r.lat,
            lon: r.lon,
            evidence: r.evidence,
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
        let (group, key, e) = Event::from_record(r.clone()).unwrap();
        assert_eq!(e.to_record(group, &key), r);
    }
}
