//! Issue 11, item 2, against a real broker (Tansu) and the real processor: key validity is
//! judged at the signing time the envelope carries under its signature, bounded by the
//! processor's clock; envelopes written before the signing time existed are judged at
//! their `reported_at`.
#![allow(clippy::unwrap_used)] // tests fail loudly on anything unexpected

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Output};
use std::time::Duration;

use common::*;
use ewn_model::{AvroRecord, Category, Incident, RejectReason, SignedIncident};
use ewn_testkit::{broker, write_file};
use ewn_trust::{IncidentSigner, KeyEntry, TrustStore, keys};
use serde_json::json;

fn ewn(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ewn"))
        .args(args)
        .env("EWN__LOG__LEVEL", "warn")
        .output()
        .unwrap_or_else(|e| panic!("cannot run ewn: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A KZ key valid from `not_before` until `not_after`, added to the network's trust store.
fn add_key(net: &Net, key_id: &str, not_before: i64, not_after: i64) -> IncidentSigner {
    let key = keys::generate();
    TrustStore::append_to_file(
        &net.store,
        &KeyEntry {
            key_id: key_id.into(),
            state: "KZ".into(),
            public_key: ewn_trust::PublicKey::from(&key),
            not_before,
            not_after,
            revoked_at: None,
        },
    )
    .unwrap();
    IncidentSigner::new(key_id, key)
}

/// The bytes an EWN from before the signing time wrote: the envelope's first schema
/// version (`schemas/history/SignedIncident.v1.avsc`, its fingerprint in the header) and
/// the legacy signature over `"ewn/incident/v1" || payload`.
fn old_envelope(signer: &mut IncidentSigner, incident: &Incident) -> Vec<u8> {
    use apache_avro::types::Value;
    let env = signer.sign_legacy_payload(incident.to_avro().unwrap());
    let v1 =
        apache_avro::Schema::parse_str(include_str!("../schemas/history/SignedIncident.v1.avsc"))
            .unwrap();
    let datum = apache_avro::writer::datum::GenericDatumWriter::builder(&v1)
        .build()
        .unwrap()
        .write_value_to_vec(Value::Record(vec![
            ("key_id".into(), Value::String(env.key_id.clone())),
            ("signature".into(), Value::Fixed(64, env.signature.to_vec())),
            ("payload".into(), Value::Bytes(env.payload.clone())),
        ]))
        .unwrap();
    let mut bytes = vec![0xC3, 0x01];
    bytes.extend_from_slice(&v1.fingerprint::<apache_avro::rabin::Rabin>().bytes);
    bytes.extend_from_slice(&datum);
    let read = SignedIncident::from_avro(&bytes).unwrap();
    assert_eq!(
        read.signed_at, None,
        "the old form decodes, without a signing time"
    );
    bytes
}

/// One `ewn publish` input line for KZ, recorded at `reported_at`.
fn input_line(n: u64, reported_at: i64) -> String {
    let rfc = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .unwrap()
            .to_rfc3339()
    };
    json!({
        "incident_id": format!("0000000b-0000-4000-8000-{n:012x}"),
        "occurred_at": rfc(reported_at - MIN),
        "reported_at": rfc(reported_at),
        "reporter": {"state": "KZ", "agency": "KZ-KNB-BORDER", "post_id": "KZ-KHORGOS-01"},
        "category": "SUSPICIOUS_CROSSING",
        "severity": "MEDIUM",
        "source_reliability": "C",
        "info_credibility": 3,
        "tlp": "GREEN",
        "location": {"lat": 44.21, "lon": 80.41, "area": "KZ-ZHT", "crossing": "KZ-KHORGOS"},
        "subjects": [{"kind": "PERSON", "id": format!("Offline Person{n:06}")}],
        "summary": "recorded offline, uploaded later"
    })
    .to_string()
}

#[test]
fn key_validity_is_judged_at_the_signing_time_by_the_processor() {
    let mut net = Net::new("signtime");
    let dir = net.dir.path().to_path_buf();
    let p = |name: &str| dir.join(name).display().to_string();
    // The issue's user: a key made with `ewn keygen` now (not_before = now) ...
    let out = ewn(&[
        "keygen",
        "--state",
        "KZ",
        "--key-id",
        "kz-new",
        "--secret-out",
        &p("kz-new.pem"),
        "--trust-store",
        &p("trust.toml"),
    ]);
    assert!(out.status.success(), "keygen: {}", text(&out.stderr));
    let keygen_done = now_ms();
    let out = ewn(&["keygen", "--blinding-out", &p("blind.key")]);
    assert!(out.status.success(), "keygen: {}", text(&out.stderr));
    let mut fresh = IncidentSigner::new(
        "kz-new",
        keys::load_signing_key(&dir.join("kz-new.pem")).unwrap(),
    );
    let mut not_yet = add_key(
        &net,
        "kz-tomorrow",
        now_ms() + 24 * HOUR,
        now_ms() + 400 * 24 * HOUR,
    );
    // A rotation 30 minutes ago: the retired key expired 10 minutes ago.
    let mut retired = add_key(
        &net,
        "kz-retired",
        now_ms() - 400 * 24 * HOUR,
        now_ms() - 10 * MIN,
    );
    let mut rotated = add_key(
        &net,
        "kz-rotated",
        now_ms() - 30 * MIN,
        now_ms() + 365 * 24 * HOUR,
    );
    let p_run = start(net.config(2 * 3600));

    // ... publishes, with `ewn publish`, a report recorded 20 minutes ago.
    let recorded = now_ms() - 20 * MIN;
    let input = dir.join("offline.jsonl");
    write_file(&input, &(input_line(1, recorded) + "\n"));
    let out = ewn(&[
        "publish",
        "--key",
        &p("kz-new.pem"),
        "--key-id",
        "kz-new",
        "--blinding-key",
        &p("blind.key"),
        "--input",
        input.to_str().unwrap(),
        "--brokers",
        broker().addr.as_str(),
        "--topic-prefix",
        net.prefix.as_str(),
    ]);
    assert!(
        out.status.success(),
        "publish: {} {}",
        text(&out.stdout),
        text(&out.stderr)
    );

    let now = now_ms();
    let kz = net.topics().incidents("kz");
    // A key not valid until tomorrow, signing now.
    let early = incident(2, "KZ", now - 2 * MIN, Category::Other, &["early"]);
    let bytes = not_yet.sign(&early, now).unwrap().to_avro().unwrap();
    net.send(&kz, b"e", &bytes);
    // A signing time an hour ahead of the processor's clock (skew: 300 s).
    let ahead = incident(3, "KZ", now - 2 * MIN, Category::Other, &["ahead"]);
    let bytes = net
        .signer("KZ")
        .sign(&ahead, now + HOUR)
        .unwrap()
        .to_avro()
        .unwrap();
    net.send(&kz, b"a", &bytes);
    // Old envelopes: judged at reported_at. A key valid then: accepted.
    let old_ok = incident(4, "KZ", now - 2 * MIN, Category::Other, &["old-ok"]);
    let bytes = old_envelope(net.signer("KZ"), &old_ok);
    net.send(&kz, b"o", &bytes);
    // The fresh key in the old form, for the report recorded 20 minutes ago: its
    // reported_at is before the key's not_before, so not yet valid (the former rule).
    let mut old_early = incident(5, "KZ", recorded - MIN, Category::Other, &["old-early"]);
    old_early.reported_at = recorded;
    let bytes = old_envelope(&mut fresh, &old_early);
    net.send(&kz, b"x", &bytes);
    // Recorded offline two hours ago, before the rotation, uploaded now: signed at upload
    // with the key in force, accepted; the retired key cannot sign it today.
    let mut offline = incident(6, "KZ", now - 121 * MIN, Category::Other, &["offline"]);
    offline.reported_at = now - 120 * MIN;
    let bytes = rotated.sign(&offline, now).unwrap().to_avro().unwrap();
    net.send(&kz, b"r", &bytes);
    let mut stale = offline.clone();
    stale.incident_id = incident(7, "KZ", now, Category::Other, &[]).incident_id;
    let bytes = retired.sign(&stale, now).unwrap().to_avro().unwrap();
    net.send(&kz, b"s", &bytes);
    net.flush();

    // Seven records in: wait for a verdict on each, then check them one by one.
    wait_until(
        "a verdict on all seven records",
        Duration::from_secs(90),
        || {
            p_run.metric("ewn_processor_incidents_rejected_total", "")
                + p_run.metric("ewn_processor_incidents_verified_total", "")
                >= 7.0
        },
    );
    let rejected: BTreeMap<String, (RejectReason, String)> = net
        .rejections()
        .into_iter()
        .map(|r| (r.incident_id.clone().unwrap(), (r.reason, r.detail)))
        .collect();
    let reason = |i: &Incident| rejected.get(&i.incident_id).map(|(r, _)| *r);
    assert_eq!(reason(&early), Some(RejectReason::KeyNotYetValid));
    assert_eq!(reason(&ahead), Some(RejectReason::ClockSkew));
    assert!(
        rejected[&ahead.incident_id].1.contains("signed_at"),
        "{:?}",
        rejected[&ahead.incident_id]
    );
    assert_eq!(reason(&old_ok), None);
    assert_eq!(reason(&old_early), Some(RejectReason::KeyNotYetValid));
    assert_eq!(reason(&offline), None);
    assert_eq!(reason(&stale), Some(RejectReason::KeyExpired));
    assert_eq!(rejected.len(), 4, "nothing else rejected: {rejected:?}");
    assert_eq!(
        p_run.metric("ewn_processor_incidents_verified_total", ""),
        3.0,
        "the published report, the old envelope of a valid key, the offline report"
    );
    assert_eq!(
        p_run.metric(
            "ewn_processor_incidents_rejected_total",
            r#"reason="key_not_yet_valid""#
        ),
        2.0
    );
    assert_eq!(
        p_run.metric(
            "ewn_processor_incidents_rejected_total",
            r#"reason="key_expired""#
        ),
        1.0,
        "only the retired key: a key not yet valid is not called expired (the issue's report)"
    );

    // The published record carries its signing time, stamped at publish, after keygen.
    let out = ewn(&[
        "tail",
        "--topic",
        "incidents",
        "--state",
        "KZ",
        "--trust-store",
        &p("trust.toml"),
        "--offset",
        "beginning",
        "--exit-at-end",
        "--brokers",
        broker().addr.as_str(),
        "--topic-prefix",
        net.prefix.as_str(),
    ]);
    assert!(out.status.success(), "tail: {}", text(&out.stderr));
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let published = lines
        .iter()
        .find(|l| l["key_id"] == "kz-new" && l["verified"] == json!(true))
        .unwrap_or_else(|| panic!("tail shows the published report verified: {lines:?}"));
    let signed_at = chrono::DateTime::parse_from_rfc3339(published["signed_at"].as_str().unwrap())
        .unwrap()
        .timestamp_millis();
    assert!(
        signed_at >= keygen_done && signed_at <= now_ms(),
        "signed at publish: {signed_at}"
    );
    // tail gives every other record the processor's verdict too
    let verdicts: BTreeMap<&str, &str> = lines
        .iter()
        .filter(|l| l["verified"] == json!(false))
        .map(|l| {
            (
                l["incident_id"].as_str().unwrap(),
                l["reason"].as_str().unwrap(),
            )
        })
        .collect();
    let want: BTreeMap<&str, &str> = [
        (early.incident_id.as_str(), "key_not_yet_valid"),
        (ahead.incident_id.as_str(), "clock_skew"),
        (old_early.incident_id.as_str(), "key_not_yet_valid"),
        (stale.incident_id.as_str(), "key_expired"),
    ]
    .into_iter()
    .collect();
    assert_eq!(verdicts, want);
    p_run.stop();
}
