//! Golden files for scoring and correlation outputs (`tests/fixtures/golden/`).
//! Regenerate with `scripts/regen-golden.sh` (sets EWN_UPDATE_GOLDEN=1) after an intended
//! change, and review the diff: it is the change in behaviour.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use ewn_model::{Category, Direction, Level, SourceReliability, Tlp, samples};
use ewn_processor::correlate::{EngineSettings, Event, PartitionState, RuleSet};
use ewn_processor::event::Source;
use ewn_processor::rules::{GroupBy, default_rules};
use ewn_processor::score::ScoreWeights;

fn golden(name: &str, actual: &str) {
    let path = format!(
        "{}/../../tests/fixtures/golden/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    if std::env::var_os("EWN_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e} (run scripts/regen-golden.sh to create it)"));
    if expected != actual {
        let first = expected
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        panic!(
            "{name} differs from the golden file at line {}:\n  golden: {}\n  actual: {}\n(run scripts/regen-golden.sh if the change is intended)",
            first + 1,
            expected.lines().nth(first).unwrap_or(""),
            actual.lines().nth(first).unwrap_or("")
        );
    }
}

#[test]
fn scoring() {
    let w = ScoreWeights::default();
    let mut out = String::new();
    for category in Category::ALL {
        for severity in Level::ALL {
            for (rel, cred) in [
                (SourceReliability::A, 1),
                (SourceReliability::B, 2),
                (SourceReliability::C, 3),
                (SourceReliability::E, 5),
                (SourceReliability::F, 6),
            ] {
                for listed in [false, true] {
                    let mut i = samples::incident();
                    i.category = *category;
                    i.severity = *severity;
                    i.source_reliability = rel;
                    i.info_credibility = cred;
                    i.subjects[0].watchlist = listed.then(|| "UNSC-1267".to_string());
                    let s = w.score(&i);
                    assert_eq!(
                        s.reasons.iter().map(|r| r.contribution).sum::<i32>(),
                        s.score
                    );
                    let reasons: Vec<String> = s
                        .reasons
                        .iter()
                        .map(|r| format!("{}={}", r.factor, r.contribution))
                        .collect();
                    out.push_str(&format!(
                        "{category} {severity} {rel}{cred} listed={listed} -> {} {} [{}]\n",
                        s.score,
                        s.level,
                        reasons.join(" ")
                    ));
                }
            }
        }
    }
    golden("scoring.txt", &out);
}

fn event(
    n: u32,
    t_min: i64,
    state: &str,
    area: &str,
    subject: &str,
    category: Category,
    direction: Option<Direction>,
) -> Arc<Event> {
    let w = ScoreWeights::default();
    let mut i = samples::incident();
    i.category = category;
    i.severity = Level::Medium;
    i.subjects[0].watchlist = None;
    let s = w.score(&i);
    Arc::new(Event {
        incident_id: format!("00000000-0000-4000-8000-{n:012}").into(),
        occurred_at: 1_790_000_000_000 + t_min * 60_000,
        reported_at: 1_790_000_000_000 + t_min * 60_000,
        state: state.into(),
        post_id: None,
        agency: format!("{state}-A").into(),
        area: area.into(),
        crossing: direction.map(|_| format!("{state}-X").into()),
        category,
        direction,
        watchlist_hit: false,
        subjects: vec![subject.into()],
        score: s.score,
        level: s.level,
        reasons: s.reasons.into(),
        tlp: if n.is_multiple_of(7) {
            Tlp::Amber
        } else {
            Tlp::Green
        },
        lat: 40.0,
        lon: 70.0,
        source: Source {
            topic: format!("ewn.incidents.{}", state.to_lowercase()).into(),
            partition: 0,
            offset: n as i64,
            key_id: format!("{}-1", state.to_lowercase()).into(),
            signature: [n as u8; 64],
            payload_sha256: [n as u8; 32],
        },
    })
}

#[test]
fn correlation() {
    use Category::*;
    let rules = Arc::new(RuleSet::new(default_rules(), ScoreWeights::default()).unwrap());
    let mut p = PartitionState::new(rules, EngineSettings::with_lateness(5 * 60_000));
    // The processor's clock follows the reports (never backwards).
    let mut now = 0;
    let h = 60;
    let events = vec![
        // a subject crossing three states: ALERT, then UPDATE
        event(1, 0, "KZ", "KZ-ZHT", "traveller", SuspiciousCrossing, None),
        event(
            2,
            2 * h,
            "KG",
            "KG-C",
            "traveller",
            SuspiciousCrossing,
            None,
        ),
        event(3, 30 * h, "TJ", "TJ-S", "traveller", DocumentFraud, None),
        // a burst of six in one area within the hour
        event(4, 100 * h, "UZ", "UZ-TK", "b1", DocumentFraud, None),
        event(5, 100 * h + 5, "UZ", "UZ-TK", "b2", DocumentFraud, None),
        event(6, 100 * h + 10, "UZ", "UZ-TK", "b3", WeaponsSeizure, None),
        event(7, 100 * h + 20, "UZ", "UZ-TK", "b4", DocumentFraud, None),
        event(8, 100 * h + 40, "UZ", "UZ-TK", "b5", DocumentFraud, None),
        event(9, 100 * h + 50, "UZ", "UZ-TK", "b6", DocumentFraud, None),
        // an exit with no entry, an exit explained by an entry
        event(
            10,
            110 * h,
            "KZ",
            "KZ-ALA",
            "gone",
            SuspiciousCrossing,
            Some(Direction::Exit),
        ),
        event(
            11,
            110 * h,
            "KZ",
            "KZ-ALA",
            "back",
            SuspiciousCrossing,
            Some(Direction::Exit),
        ),
        event(
            12,
            112 * h,
            "KG",
            "KG-C",
            "back",
            SuspiciousCrossing,
            Some(Direction::Entry),
        ),
        // time moves on, deciding the absences
        event(13, 140 * h, "TM", "TM-A", "later", Other, None),
        // late by far: not merged
        event(
            14,
            90 * h,
            "KZ",
            "KZ-ZHT",
            "traveller",
            SuspiciousCrossing,
            None,
        ),
    ];
    let mut out = String::new();
    for (offset, e) in events.iter().enumerate() {
        now = e.occurred_at.max(now);
        let mut alerts = Vec::new();
        let mut fed = Vec::new();
        for group in [GroupBy::Subject, GroupBy::Area] {
            for key in e.keys(group) {
                fed.extend(
                    p.feed(group, key, e, offset as i64, now, &mut alerts)
                        .into_iter()
                        .map(|(_, f)| format!("{f:?}")),
                );
            }
        }
        p.tick(now, &mut alerts);
        fed.sort();
        fed.dedup();
        out.push_str(&format!(
            "event {} ({}) -> {}\n",
            e.incident_id,
            fed.join(","),
            p.commit_offset().unwrap_or(-1)
        ));
        for a in alerts {
            let reasons: Vec<String> = a
                .reasons
                .iter()
                .map(|r| format!("{}={}", r.factor, r.contribution))
                .collect();
            out.push_str(&format!(
                "  {} {} refs={:?} rule={} key={} level={} score={} [{}] window={}..{} states={:?} tlp={} incidents={} sample={} digest={}\n",
                a.msg_type,
                a.alert_id,
                a.references,
                a.rule,
                a.key,
                a.level,
                a.score,
                reasons.join(" "),
                a.window_start,
                a.window_end,
                a.states,
                a.tlp,
                a.incident_count,
                a.incident_ids.len(),
                hex::encode(&a.incident_digest[..a.incident_digest.len().min(4)])
            ));
        }
    }
    golden("correlation.txt", &out);
}
