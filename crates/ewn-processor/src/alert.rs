//! Building alert records of a bounded size, whatever the episode.
//!
//! An episode may hold tens of thousands of reports; its alert carries their count, the
//! states, categories and areas (each capped), a sample of the earliest and most recent
//! reports (ids, points and signed evidence), and a digest committing to the full set of
//! incident ids: SHA-256 over the ids sorted bytewise, each followed by `\n`, so anyone
//! holding the reports can check the set (`LC_ALL=C sort ids | sha256sum`).

use std::collections::BTreeSet;

use ewn_model::{Alert, AvroRecord, Category, GeoPoint, MsgType, Tlp};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::event::Event;
use crate::rules::Rule;
use crate::score::{ScoreWeights, Scored};

/// The `[process.alerts]` section: bounds of one alert record and of UPDATE traffic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertSettings {
    /// Reports sampled into an alert (half the earliest, half the most recent).
    pub evidence_sample: usize,
    /// At most this many states and areas are listed (`limits_reached` says when cut).
    pub max_list: usize,
    /// No alert record is larger: samples are halved until it fits (`ALERT_BYTES`).
    pub max_bytes: usize,
    /// At most one UPDATE per alert per interval, carrying the latest state.
    pub update_interval_secs: u64,
}

impl Default for AlertSettings {
    fn default() -> Self {
        AlertSettings {
            evidence_sample: 20,
            max_list: 32,
            max_bytes: 64 * 1024,
            update_interval_secs: 30,
        }
    }
}

impl AlertSettings {
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.evidence_sample == 0 || self.evidence_sample > 200 {
            p.push("process.alerts.evidence_sample: 1..200".into());
        }
        if self.max_list == 0 || self.max_list > 256 {
            p.push("process.alerts.max_list: 1..256".into());
        }
        if !(16 * 1024..=1024 * 1024).contains(&self.max_bytes) {
            p.push("process.alerts.max_bytes: 16384..1048576 (librdkafka's default message limit is 1 MB)".into());
        }
        if self.update_interval_secs > 3600 {
            p.push("process.alerts.update_interval_secs: at most 3600".into());
        }
        p
    }
}

/// The bound names an alert can carry in `limits_reached`.
pub mod limit {
    pub const EVENTS_PER_KEY: &str = "EVENTS_PER_KEY";
    pub const AREAS: &str = "AREAS";
    pub const STATES: &str = "STATES";
    pub const ALERT_BYTES: &str = "ALERT_BYTES";
    /// The key was evicted at `process.state.max_keys_per_rule` or `max_events_per_rule`
    /// while the episode was open: no more UPDATEs will come for it.
    pub const KEY_EVICTED: &str = "KEY_EVICTED";
    pub const ALL: [&str; 5] = [EVENTS_PER_KEY, AREAS, STATES, ALERT_BYTES, KEY_EVICTED];
}

/// SHA-256 over the ids sorted bytewise, each followed by a newline.
pub fn incident_digest<'a>(ids: impl IntoIterator<Item = &'a str>) -> [u8; 32] {
    let mut ids: Vec<&str> = ids.into_iter().collect();
    ids.sort_unstable();
    let mut h = Sha256::new();
    for id in ids {
        h.update(id.as_bytes());
        h.update(b"\n");
    }
    h.finalize().into()
}

/// A deterministic 128-bit id, hex.
pub fn digest_id(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    hex::encode(&h.finalize()[..16])
}

/// The id of the first alert of an episode: rule, key and window start.
pub fn alert_id(rule: &str, key: &str, window_start: i64) -> String {
    digest_id(&[rule.as_bytes(), key.as_bytes(), &window_start.to_be_bytes()])
}

/// The id of an UPDATE of the episode `first` once it holds `count` incidents and refused
/// `refused`: a reprocessed episode yields the same ids.
pub fn update_id(first: &str, count: u64, refused: u64) -> String {
    digest_id(&[
        first.as_bytes(),
        b"update",
        &count.to_be_bytes(),
        &refused.to_be_bytes(),
    ])
}

/// The id of the UPDATE saying the episode `first` lost its key to the state budget.
pub fn evicted_id(first: &str) -> String {
    digest_id(&[first.as_bytes(), b"evicted"])
}

/// The id of the CANCEL ending the episode `first`.
pub fn cancel_id(first: &str) -> String {
    digest_id(&[first.as_bytes(), b"cancel"])
}

/// What an alert message is about, apart from its evidence.
pub struct Head<'a> {
    pub rule: &'a Rule,
    pub key: &'a str,
    pub msg_type: MsgType,
    pub alert_id: String,
    pub references: Vec<String>,
    pub start: i64,
    pub now_ms: i64,
    /// Reports refused at the key's budget while the episode was open.
    pub refused: u64,
}

/// Builds an alert from an episode's members, in event-time order.
pub fn build(
    head: Head<'_>,
    members: &[&Event],
    weights: &ScoreWeights,
    settings: &AlertSettings,
) -> Alert {
    let Head {
        rule,
        key,
        msg_type,
        alert_id,
        references,
        start,
        now_ms,
        refused,
    } = head;
    let mut limits = Vec::new();
    if refused > 0 {
        limits.push(limit::EVENTS_PER_KEY.to_string());
    }
    let mut capped = |set: BTreeSet<&str>, name: &str| -> Vec<String> {
        if set.len() > settings.max_list {
            limits.push(name.to_string());
        }
        set.into_iter()
            .take(settings.max_list)
            .map(String::from)
            .collect()
    };
    let states = members.iter().map(|e| &*e.state).collect();
    let states = capped(states, limit::STATES);
    let areas = members.iter().map(|e| &*e.area).collect();
    let areas = capped(areas, limit::AREAS);
    let distinct_states: BTreeSet<&str> = members.iter().map(|e| &*e.state).collect();
    let categories: BTreeSet<Category> = members.iter().map(|e| e.category).collect();
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
            reasons: e.reasons.to_vec(),
        });
    let scored = match strongest {
        Some(s) => weights.alert_score(&s, distinct_states.len()),
        None => weights.finish(vec![]),
    };
    let tlp = members.iter().map(|e| e.tlp).max().unwrap_or(Tlp::Clear);
    let sample = sample(members, settings.evidence_sample);
    let mut alert = Alert {
        alert_id,
        msg_type,
        references,
        rule: rule.name().to_string(),
        level: rule.config.level.max(scored.level),
        score: scored.score,
        reasons: scored.reasons,
        key: key.to_string(),
        window_start: start,
        window_end: start.saturating_add(rule.window),
        incident_ids: sample.iter().map(|e| e.incident_id.to_string()).collect(),
        states,
        categories: categories.into_iter().collect(),
        areas,
        points: sample
            .iter()
            .map(|e| GeoPoint {
                lat: e.lat,
                lon: e.lon,
            })
            .collect(),
        tlp,
        named_agencies: rule.config.named_agencies.clone(),
        created_at: now_ms,
        evidence: sample.iter().map(|e| e.evidence()).collect(),
        incident_count: i32::try_from(members.len()).unwrap_or(i32::MAX),
        incident_digest: incident_digest(members.iter().map(|e| &*e.incident_id)).to_vec(),
        limits_reached: limits,
        refused_count: i32::try_from(refused).unwrap_or(i32::MAX),
    };
    fit(&mut alert, settings.max_bytes);
    alert
}

/// The earliest `n / 2` and the most recent `n - n / 2` of `members`.
fn sample<'a>(members: &[&'a Event], n: usize) -> Vec<&'a Event> {
    if members.len() <= n {
        return members.to_vec();
    }
    let head = n / 2;
    let tail = n - head;
    members[..head]
        .iter()
        .chain(&members[members.len() - tail..])
        .copied()
        .collect()
}

/// Halves the sample until the encoded record fits `max_bytes`, and says so.
fn fit(alert: &mut Alert, max_bytes: usize) {
    let size = |a: &Alert| a.to_avro().map(|v| v.len()).unwrap_or(usize::MAX);
    let mut cut = false;
    while size(alert) > max_bytes && !alert.evidence.is_empty() {
        let keep = alert.evidence.len() / 2;
        alert.evidence.truncate(keep);
        alert.incident_ids.truncate(keep);
        alert.points.truncate(keep);
        cut = true;
    }
    // Then the lists (a configuration with long lists and a small bound).
    while size(alert) > max_bytes && (alert.areas.len() > 1 || alert.states.len() > 1) {
        let (a, s) = (
            alert.areas.len().div_ceil(2),
            alert.states.len().div_ceil(2),
        );
        alert.areas.truncate(a);
        alert.states.truncate(s);
        cut = true;
    }
    if cut {
        alert.limits_reached.push(limit::ALERT_BYTES.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Source;
    use crate::rules::default_rules;
    use ewn_model::{Level, ScoreReason};

    fn worst_event(n: usize) -> Event {
        let long = |c: char| std::iter::repeat_n(c, 128).collect::<String>();
        Event {
            incident_id: format!("00000000-0000-4000-8000-{n:012}").into(),
            occurred_at: 1_800_000_000_000 + n as i64,
            reported_at: 1_800_000_000_000 + n as i64,
            state: format!(
                "{}{}",
                (b'A' + (n % 26) as u8) as char,
                (b'A' + (n / 26 % 26) as u8) as char
            )
            .into(),
            post_id: Some(long('p').into()),
            agency: long('a').into(),
            area: format!("{}{n}", long('x')).into(),
            crossing: Some(long('c').into()),
            category: Category::WeaponsSeizure,
            direction: None,
            watchlist_hit: true,
            subjects: vec!["f".repeat(64); 32],
            score: 90,
            level: Level::Critical,
            reasons: vec![
                ScoreReason {
                    factor: "category".into(),
                    contribution: 90,
                    detail: long('d'),
                };
                8
            ]
            .into(),
            tlp: Tlp::Red,
            lat: 1.0,
            lon: 2.0,
            source: Source {
                topic: long('t').into(),
                partition: 1,
                offset: 1,
                key_id: long('k').into(),
                signature: [1; 64],
                payload_sha256: [2; 32],
            },
        }
    }

    /// 10,000 members with the longest fields validation allows: the record stays under
    /// the bound with the default sample, and a tiny bound halves the sample and says so.
    #[test]
    fn an_alert_stays_bounded_whatever_the_episode() {
        let rule = Rule::try_from(default_rules().remove(0)).unwrap();
        let events: Vec<Event> = (0..10_000).map(worst_event).collect();
        let members: Vec<&Event> = events.iter().collect();
        let key = "k".repeat(200);
        let head = |refused| Head {
            rule: &rule,
            key: &key,
            msg_type: MsgType::Update,
            alert_id: "a".into(),
            references: vec!["b".into()],
            start: 1_800_000_000_000,
            now_ms: 1_800_000_000_000,
            refused,
        };
        let settings = AlertSettings::default();
        let a = build(head(3), &members, &ScoreWeights::default(), &settings);
        let size = a.to_avro().unwrap().len();
        assert!(size <= settings.max_bytes, "{size} bytes");
        assert_eq!(a.incident_count, 10_000);
        assert_eq!(a.evidence.len(), 20);
        assert_eq!(a.incident_ids[0], &*events[0].incident_id);
        assert_eq!(a.incident_ids[19], &*events[9_999].incident_id);
        assert_eq!(a.areas.len(), 32);
        assert_eq!(a.limits_reached, ["EVENTS_PER_KEY", "STATES", "AREAS"]);
        assert_eq!(a.refused_count, 3);
        let mut a = build(head(0), &members, &ScoreWeights::default(), &settings);
        fit(&mut a, 8 * 1024);
        assert!(a.to_avro().unwrap().len() <= 8 * 1024);
        assert!(a.evidence.len() < 20);
        assert_eq!(a.evidence.len(), a.incident_ids.len());
        assert_eq!(
            a.limits_reached.last().map(String::as_str),
            Some("ALERT_BYTES")
        );
    }

    #[test]
    fn the_digest_is_of_the_sorted_ids_one_per_line() {
        let d = incident_digest(["b", "a", "c"]);
        let expected: [u8; 32] = Sha256::digest(b"a\nb\nc\n").into();
        assert_eq!(d, expected);
    }
}
