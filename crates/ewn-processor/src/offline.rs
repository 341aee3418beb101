//! The engine without Kafka or signatures: incidents in, alerts out, for `ewn rules test`
//! (rule fixtures run through the real scoring, re-keying and correlation code).
//!
//! Each incident arrives in the order given, at its `reported_at` (the processing time
//! the engine sees), is scored, re-keyed for every stateful group exactly as the ingest
//! stage does (through the wire record the correlate stage reads) and fed to one
//! partition, which is ticked after each. At the end the clock is moved past the last
//! incident by the longest rule horizon plus the lateness, so every window closes and every
//! absence is decided. One partition holds every key: the real processor spreads keys over
//! partitions, each with its own watermark, which changes when a window is decided, not
//! what it contains.

use std::sync::Arc;

use ewn_model::{Alert, Evidence, Incident};

use crate::correlate::{EngineSettings, RuleSet};
use crate::event::event_of;
use crate::partitions::{Outputs, Partitions};
use crate::rules::RuleConfig;
use crate::score::ScoreWeights;

/// The alerts `rules` raise for `incidents`, in the order raised.
pub fn run(
    rules: Vec<RuleConfig>,
    weights: ScoreWeights,
    settings: EngineSettings,
    incidents: &[Incident],
) -> Result<Vec<Alert>, Vec<String>> {
    let rules = Arc::new(RuleSet::new(rules, weights)?.with_alerts(settings.alerts.clone()));
    let horizon = rules.rules.iter().map(|r| r.horizon()).max().unwrap_or(0);
    let lateness = settings.lateness_ms;
    let groups = rules.stateful_groups();
    let mut parts = Partitions::new(rules.clone(), settings);
    parts.assign(0);
    let mut out = Outputs::default();
    let mut offset = 0i64;
    let mut last = i64::MIN;
    for (n, incident) in incidents.iter().enumerate() {
        let now = incident.reported_at;
        last = last.max(now);
        let evidence = Evidence {
            incident_id: incident.incident_id.clone(),
            topic: "fixture".into(),
            partition: 0,
            offset: n as i64,
            key_id: "fixture".into(),
            signature: [0; 64],
            payload_sha256: [0; 32],
        };
        let event = event_of(incident, rules.weights.score(incident), evidence);
        rules.immediate(&event, now, &mut out.alerts);
        for group in &groups {
            for key in event.keys(*group) {
                let record = event.to_record(*group, key);
                parts.feed(0, offset, Some(record), now, &mut out);
                offset += 1;
            }
        }
        parts.tick(now, &mut out);
    }
    if last > i64::MIN {
        let end = last
            .saturating_add(horizon)
            .saturating_add(lateness)
            .saturating_add(1);
        parts.tick(end, &mut out);
    }
    Ok(out.alerts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::default_rules;
    use ewn_model::samples;

    const HOUR: i64 = 3_600_000;

    fn seen(state: &str, n: u64, at: i64) -> Incident {
        let mut i = samples::incident();
        i.incident_id = format!("fixture-{n}");
        i.reporter.state = state.into();
        i.occurred_at = at;
        i.reported_at = at + 60_000;
        i
    }

    #[test]
    fn one_subject_in_two_states_raises_cross_border_movement_once() {
        let start = samples::incident().occurred_at;
        let incidents = [seen("KZ", 1, start), seen("KG", 2, start + 5 * HOUR)];
        let alerts = run(
            default_rules(),
            ScoreWeights::default(),
            EngineSettings::with_lateness(300_000),
            &incidents,
        )
        .unwrap();
        let cross: Vec<&Alert> = alerts
            .iter()
            .filter(|a| a.rule == "cross_border_movement")
            .collect();
        assert_eq!(cross.len(), 1, "{alerts:#?}");
        assert_eq!(cross[0].states, ["KG", "KZ"]);
        // One state alone: no cross-border alert.
        let alone = run(
            default_rules(),
            ScoreWeights::default(),
            EngineSettings::with_lateness(300_000),
            &incidents[..1],
        )
        .unwrap();
        assert!(alone.iter().all(|a| a.rule != "cross_border_movement"));
    }

    #[test]
    fn invalid_rules_are_refused_with_their_problems() {
        let mut bad = default_rules();
        bad[0].count = 0;
        let e = run(
            bad,
            ScoreWeights::default(),
            EngineSettings::with_lateness(0),
            &[],
        )
        .unwrap_err();
        assert!(!e.is_empty());
    }
}
