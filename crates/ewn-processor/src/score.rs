//! Explainable scoring. An incident's score is the sum of integer factor contributions
//! (category, the reporter's severity, Admiralty source grading, watch-list hit), capped at
//! 100; when the cap bites, a `cap` factor with a negative contribution says so, so the
//! reasons always add up to the score exactly. Same input, same score: no floats, no clock.

use ewn_model::{Category, Incident, Level, ScoreReason, SourceReliability};
use serde::{Deserialize, Serialize};

/// Points per category.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CategoryWeights {
    pub watchlist_hit: i32,
    pub suspicious_crossing: i32,
    pub document_fraud: i32,
    pub weapons_seizure: i32,
    pub explosives_precursor: i32,
    pub ftf_returnee: i32,
    pub attack_planning: i32,
    pub cyber: i32,
    pub other: i32,
}

impl Default for CategoryWeights {
    fn default() -> Self {
        CategoryWeights {
            watchlist_hit: 30,
            suspicious_crossing: 10,
            document_fraud: 15,
            weapons_seizure: 30,
            explosives_precursor: 35,
            ftf_returnee: 30,
            attack_planning: 40,
            cyber: 15,
            other: 5,
        }
    }
}

impl CategoryWeights {
    pub fn get(&self, c: Category) -> i32 {
        match c {
            Category::WatchlistHit => self.watchlist_hit,
            Category::SuspiciousCrossing => self.suspicious_crossing,
            Category::DocumentFraud => self.document_fraud,
            Category::WeaponsSeizure => self.weapons_seizure,
            Category::ExplosivesPrecursor => self.explosives_precursor,
            Category::FtfReturnee => self.ftf_returnee,
            Category::AttackPlanning => self.attack_planning,
            Category::Cyber => self.cyber,
            Category::Other => self.other,
        }
    }
}

/// Points per reporter severity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SeverityWeights {
    pub low: i32,
    pub medium: i32,
    pub high: i32,
    pub critical: i32,
}

impl Default for SeverityWeights {
    fn default() -> Self {
        SeverityWeights {
            low: 0,
            medium: 10,
            high: 20,
            critical: 30,
        }
    }
}

/// Admiralty grading: `max_points` scaled by the source's reliability (percent, A..F) and
/// the information's credibility (percent, 1..6). F and 6 ("cannot be judged") sit in the
/// middle rather than at the bottom: unknown is not the same as unreliable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdmiraltyWeights {
    pub max_points: i32,
    /// Percent for A, B, C, D, E, F.
    pub reliability_percent: [i32; 6],
    /// Percent for 1, 2, 3, 4, 5, 6.
    pub credibility_percent: [i32; 6],
}

impl Default for AdmiraltyWeights {
    fn default() -> Self {
        AdmiraltyWeights {
            max_points: 25,
            reliability_percent: [100, 80, 60, 40, 20, 50],
            credibility_percent: [100, 80, 60, 40, 20, 50],
        }
    }
}

/// The `[process.score]` section.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScoreWeights {
    pub category: CategoryWeights,
    pub severity: SeverityWeights,
    pub admiralty: AdmiraltyWeights,
    /// Points when a subject is on a watch list (or the category is a watch-list hit).
    pub watchlist: i32,
    /// Alert-level points per reporting state beyond the first.
    pub corroboration_per_state: i32,
    pub corroboration_max: i32,
    /// Lowest score of MEDIUM, HIGH and CRITICAL.
    pub level_thresholds: [i32; 3],
}

impl Default for ScoreWeights {
    fn default() -> Self {
        ScoreWeights {
            category: CategoryWeights::default(),
            severity: SeverityWeights::default(),
            admiralty: AdmiraltyWeights::default(),
            watchlist: 15,
            corroboration_per_state: 10,
            corroboration_max: 20,
            level_thresholds: [25, 50, 75],
        }
    }
}

/// A score with the factors it is made of.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scored {
    pub score: i32,
    pub level: Level,
    pub reasons: Vec<ScoreReason>,
}

fn reason(factor: &str, contribution: i32, detail: String) -> ScoreReason {
    ScoreReason {
        factor: factor.to_string(),
        contribution,
        detail,
    }
}

/// Does the incident name a watch-list subject (or is it a watch-list hit)?
pub fn is_watchlist_hit(incident: &Incident) -> bool {
    incident.category == Category::WatchlistHit
        || incident.subjects.iter().any(|s| s.watchlist.is_some())
}

impl ScoreWeights {
    /// Every problem with the weights, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        let t = self.level_thresholds;
        if !(0 < t[0] && t[0] < t[1] && t[1] < t[2] && t[2] <= 100) {
            p.push("process.score.level_thresholds: must rise strictly within 1..100".into());
        }
        let pct = |v: &[i32; 6]| v.iter().all(|x| (0..=100).contains(x));
        if !pct(&self.admiralty.reliability_percent) || !pct(&self.admiralty.credibility_percent) {
            p.push("process.score.admiralty: percentages must lie in 0..100".into());
        }
        let c = &self.category;
        let all = [
            c.watchlist_hit,
            c.suspicious_crossing,
            c.document_fraud,
            c.weapons_seizure,
            c.explosives_precursor,
            c.ftf_returnee,
            c.attack_planning,
            c.cyber,
            c.other,
            self.severity.low,
            self.severity.medium,
            self.severity.high,
            self.severity.critical,
            self.admiralty.max_points,
            self.watchlist,
            self.corroboration_per_state,
            self.corroboration_max,
        ];
        if all.iter().any(|w| !(0..=100).contains(w)) {
            p.push("process.score: every weight must lie in 0..100".into());
        }
        p
    }

    pub fn level_of(&self, score: i32) -> Level {
        let t = self.level_thresholds;
        if score >= t[2] {
            Level::Critical
        } else if score >= t[1] {
            Level::High
        } else if score >= t[0] {
            Level::Medium
        } else {
            Level::Low
        }
    }

    fn severity(&self, level: Level) -> i32 {
        match level {
            Level::Low => self.severity.low,
            Level::Medium => self.severity.medium,
            Level::High => self.severity.high,
            Level::Critical => self.severity.critical,
        }
    }

    /// Scores one incident.
    pub fn score(&self, incident: &Incident) -> Scored {
        let mut reasons = Vec::with_capacity(5);
        reasons.push(reason(
            "category",
            self.category.get(incident.category),
            incident.category.to_string(),
        ));
        reasons.push(reason(
            "severity",
            self.severity(incident.severity),
            format!("reporter assessed {}", incident.severity),
        ));
        let rel = SourceReliability::ALL
            .iter()
            .position(|r| *r == incident.source_reliability)
            .unwrap_or(5);
        let cred = (incident.info_credibility.clamp(1, 6) - 1) as usize;
        let a = &self.admiralty;
        // Rounded half up, in integers.
        let admiralty = (a.max_points * a.reliability_percent[rel] * a.credibility_percent[cred]
            + 5_000)
            / 10_000;
        reasons.push(reason(
            "admiralty",
            admiralty,
            format!(
                "source {} information {}",
                incident.source_reliability, incident.info_credibility
            ),
        ));
        if is_watchlist_hit(incident) {
            let lists: Vec<&str> = incident
                .subjects
                .iter()
                .filter_map(|s| s.watchlist.as_deref())
                .collect();
            let detail = if lists.is_empty() {
                "watch-list hit".to_string()
            } else {
                format!("on {}", lists.join(", "))
            };
            reasons.push(reason("watchlist", self.watchlist, detail));
        }
        self.finish(reasons)
    }

    /// Sums `reasons`, adding a `cap` factor when the sum exceeds 100.
    pub fn finish(&self, mut reasons: Vec<ScoreReason>) -> Scored {
        let sum: i32 = reasons.iter().map(|r| r.contribution).sum();
        if sum > 100 {
            reasons.push(reason("cap", 100 - sum, "scores are capped at 100".into()));
        }
        let score = sum.clamp(0, 100);
        Scored {
            score,
            level: self.level_of(score),
            reasons,
        }
    }

    /// An alert's score: its strongest incident's factors plus corroboration by other
    /// states (`states` distinct reporting states).
    pub fn alert_score(&self, strongest: &Scored, states: usize) -> Scored {
        let mut reasons: Vec<ScoreReason> = strongest
            .reasons
            .iter()
            .filter(|r| r.factor != "cap")
            .cloned()
            .collect();
        if states > 1 {
            let points =
                (self.corroboration_per_state * (states as i32 - 1)).min(self.corroboration_max);
            reasons.push(reason(
                "corroboration",
                points,
                format!("reported by {states} states"),
            ));
        }
        self.finish(reasons)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ewn_model::samples;

    #[test]
    fn reasons_add_up_and_cap_is_explicit() {
        let w = ScoreWeights::default();
        let mut i = samples::incident();
        i.category = Category::AttackPlanning;
        i.severity = Level::Critical;
        i.source_reliability = SourceReliability::A;
        i.info_credibility = 1;
        let s = w.score(&i);
        assert_eq!(s.score, 100);
        assert_eq!(s.reasons.iter().map(|r| r.contribution).sum::<i32>(), 100);
        assert_eq!(s.reasons.last().map(|r| r.factor.as_str()), Some("cap"));
        assert_eq!(s.level, Level::Critical);
    }

    #[test]
    fn admiralty_rounds_in_integers() {
        let w = ScoreWeights::default();
        let mut i = samples::incident();
        i.subjects.clear();
        i.source_reliability = SourceReliability::C;
        i.info_credibility = 3;
        // 25 * 60% * 60% = 9
        let s = w.score(&i);
        assert_eq!(s.reasons[2].contribution, 9);
        assert_eq!(s, w.score(&i), "deterministic");
    }

    #[test]
    fn corroboration_is_bounded() {
        let w = ScoreWeights::default();
        let base = w.score(&samples::incident());
        let one = w.alert_score(&base, 1);
        let five = w.alert_score(&base, 5);
        assert_eq!(one.score, base.score);
        assert_eq!(five.score, (base.score + 20).min(100));
        assert_eq!(
            five.reasons.iter().map(|r| r.contribution).sum::<i32>(),
            five.score
        );
    }
}
