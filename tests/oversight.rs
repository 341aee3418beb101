//! The oversight role on a real broker (Tansu): an overseer reads who received an alert it
//! may not read in full and gets metadata only; it reads an alert at its clearance in full;
//! every read is on the audit topic, signed, and `ewn audit log --verify` accepts it and
//! shows it committing to the exact body returned; oversight tokens change nothing (403);
//! no token is 401; admin and desk tokens cannot read oversight endpoints (403); pages are
//! bounded and resume from their cursor; a fan-out without an audit log shows nothing; past
//! `max_concurrent_reads` a read is 429, and with the audit queue at its bound 503.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use common::hooks::*;
use common::{Net, now_ms, wait_until};
use ewn_fanout::auth::Principal;
use ewn_model::{Level, Tlp};
use ewn_trust::keys;
use serde_json::Value;

const OVERSIGHT_TOKEN: &str = "oversight-token-0123456789abcdef";
const OVERSEER: &str = "ombudsman";

fn ewn(net: &Net, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ewn"))
        .args(args)
        .env("EWN__KAFKA__BROKERS", &net.settings.brokers)
        .env("EWN__KAFKA__TOPIC_PREFIX", &net.prefix)
        .env("EWN__LOG__LEVEL", "warn")
        .output()
        .unwrap()
}

/// GET with an optional bearer token: status and body text.
fn get(url: &str, token: Option<&str>) -> (u16, String) {
    let r = reqwest::blocking::Client::new().get(url);
    let r = match token {
        Some(t) => r.bearer_auth(t),
        None => r,
    };
    let r = r.send().unwrap();
    (r.status().as_u16(), r.text().unwrap())
}

/// An alert whose content carries markers of its own, to search response bodies for.
fn marked_alert(n: u64, tlp: Tlp, named: &[&str]) -> ewn_model::Alert {
    let mut a = alert(n, tlp, Level::High);
    a.key = format!("{:064x}", now_ms() as u128 * 1000 + n as u128);
    a.incident_ids = vec![format!("incident-secret-{n}-{}", now_ms())];
    a.evidence[0].incident_id = a.incident_ids[0].clone();
    a.reasons[0].detail = format!("reason-secret-{n}");
    a.areas = vec![format!("AREA-SECRET-{n}")];
    a.rule = format!("rule_secret_{n}");
    a.named_agencies = named.iter().map(|s| s.to_string()).collect();
    a
}

/// What of `a` must never appear in a body of an overseer not cleared for it.
fn content_markers(a: &ewn_model::Alert) -> Vec<String> {
    let mut m = vec![a.key.clone(), a.reasons[0].detail.clone(), a.rule.clone()];
    m.extend(a.incident_ids.iter().cloned());
    m.extend(a.areas.iter().cloned());
    m
}

#[test]
fn an_overseer_reads_receipts_and_the_audit_log_at_its_clearance_and_every_read_is_logged() {
    let mut net = Net::new("oversight");
    let dir = tempfile::tempdir().unwrap();
    let (_, pem) = net.service_key(dir.path(), "fanout", "fanout-1", "fanout");
    let store_path = net.store.display().to_string();

    let hooks = Hooks::start();
    let kz = webhook_sub(&hooks, "kz-desk", "KZ-KNB", Tlp::Amber);
    let kg = webhook_sub(&hooks, "kg-desk", "KG-GKNB", Tlp::Red);
    let mut config = fanout_config(&net.settings, vec![kz, kg]);
    config.fanout.audit = ewn_fanout::settings::AuditSettings {
        signing_key_file: Some(pem.clone()),
        key_id: "fanout-1".into(),
        queue_max: 64,
    };
    config.tokens.push((
        OVERSIGHT_TOKEN.into(),
        Principal::Oversight {
            name: OVERSEER.into(),
            clearance: Tlp::Green,
        },
    ));
    let fanout = start_fanout(config);
    // The new series exist from the start, at 0, with the bound.
    let (_, scraped) = get(&format!("http://{}/metrics", fanout.admin), None);
    for outcome in ewn_fanout::metrics::OVERSIGHT_OUTCOMES {
        for endpoint in ewn_fanout::metrics::OVERSIGHT_ENDPOINTS {
            let line = format!(
                "ewn_fanout_oversight_reads_total{{endpoint=\"{endpoint}\",outcome=\"{outcome}\"}} 0"
            );
            assert!(scraped.lines().any(|l| l == line), "{line} missing");
        }
    }
    assert_eq!(
        fanout.metric("ewn_fanout_oversight_reads_in_flight_bound", ""),
        2.0
    );

    // A GREEN alert (the overseer's clearance) and a RED one for KG-GKNB only.
    let started = now_ms();
    let green = marked_alert(1, Tlp::Green, &[]);
    let red = marked_alert(2, Tlp::Red, &["KG-GKNB"]);
    net.publish_alerts(&[green.clone(), red.clone()]);
    wait_until("the deliveries", Duration::from_secs(60), || {
        hooks.delivered("kg-desk").len() >= 2 && !hooks.delivered("kz-desk").is_empty()
    });
    // Both desks acknowledge with a note (free text the overseer must not see for RED).
    for (desk, a, note) in [
        ("kz-desk", &green, "note-green-visible"),
        ("kg-desk", &red, "note-red-secret"),
    ] {
        let status = reqwest::blocking::Client::new()
            .post(fanout.url(&format!("/api/v1/alerts/{}/ack", a.alert_id)))
            .bearer_auth(format!("{DESK_TOKEN_PREFIX}{desk}"))
            .header("content-type", "application/json")
            .body(format!(r#"{{"actor":"{desk}-officer","note":"{note}"}}"#))
            .send()
            .unwrap()
            .status();
        assert!(status.is_success(), "{desk}: {status}");
    }

    let receipts_of = |a: &ewn_model::Alert| {
        fanout.url(&format!("/api/v1/oversight/receipts?alert={}", a.alert_id))
    };
    // 401 without a token or with an unknown one, 403 for admin and desk tokens.
    for path in [receipts_of(&red), fanout.url("/api/v1/oversight/audit")] {
        assert_eq!(get(&path, None).0, 401, "{path}");
        assert_eq!(get(&path, Some("not-a-token")).0, 401, "{path}");
        let (status, body) = get(&path, Some(ADMIN_TOKEN));
        assert_eq!(status, 403, "{path}: {body}");
        assert_eq!(
            get(&path, Some(&format!("{DESK_TOKEN_PREFIX}kg-desk"))).0,
            403
        );
    }

    // Receipts of the RED alert: its recipients and acknowledgement, metadata only.
    let mut red_body = String::new();
    wait_until(
        "the RED alert's receipt and ack",
        Duration::from_secs(60),
        || {
            let (status, body) = get(&receipts_of(&red), Some(OVERSIGHT_TOKEN));
            assert_eq!(status, 200, "{body}");
            let v: Value = serde_json::from_str(&body).unwrap();
            red_body = body;
            !v["receipts"].as_array().unwrap().is_empty()
                && !v["acks"].as_array().unwrap().is_empty()
        },
    );
    let v: Value = serde_json::from_str(&red_body).unwrap();
    let r = &v["receipts"][0];
    assert_eq!(r["alert_id"], red.alert_id.as_str());
    assert_eq!(r["agency"], "KG-GKNB");
    assert_eq!(r["tlp"], "RED");
    assert_eq!(r["outcome"], "DELIVERED");
    assert_eq!(v["receipts"].as_array().unwrap().len(), 1, "{red_body}");
    assert_eq!(v["acks"][0]["actor"], "kg-desk-officer");
    assert!(v["acks"][0]["note"].is_null(), "{red_body}");
    let meta = &v["alerts"][red.alert_id.as_str()];
    assert_eq!(meta["shown"], "metadata_only", "{red_body}");
    assert_eq!(meta["tlp"], "RED");
    assert!(meta["content"].is_null());
    assert!(meta["acknowledged_at"].is_string());
    for m in content_markers(&red) {
        assert!(!red_body.contains(&m), "`{m}` in {red_body}");
    }
    assert!(!red_body.contains("note-red-secret"));

    // The GREEN alert: in full, note included.
    let (status, green_body) = get(&receipts_of(&green), Some(OVERSIGHT_TOKEN));
    assert_eq!(status, 200);
    let g: Value = serde_json::from_str(&green_body).unwrap();
    let meta = &g["alerts"][green.alert_id.as_str()];
    assert_eq!(meta["shown"], "content", "{green_body}");
    assert_eq!(meta["content"]["key"], green.key.as_str());
    assert_eq!(meta["content"]["reasons"][0]["detail"], "reason-secret-1");
    let agencies: BTreeSet<&str> = g["receipts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["agency"].as_str().unwrap())
        .collect();
    assert_eq!(agencies, BTreeSet::from(["KG-GKNB", "KZ-KNB"]));
    assert_eq!(g["acks"][0]["note"], "note-green-visible");

    // Pages: since the start, one record a page, resumed from each page's cursor.
    let since = chrono::DateTime::from_timestamp_millis(started - 1000)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mut seen = Vec::new();
    let mut url = fanout.url(&format!(
        "/api/v1/oversight/receipts?since={}&limit=1",
        urlencode(&since)
    ));
    for page in 0.. {
        assert!(page < 20, "pages do not end");
        let (status, body) = get(&url, Some(OVERSIGHT_TOKEN));
        assert_eq!(status, 200, "{body}");
        let p: Value = serde_json::from_str(&body).unwrap();
        let n = p["receipts"].as_array().unwrap().len() + p["acks"].as_array().unwrap().len();
        assert!(n <= 1, "{body}");
        for r in p["receipts"].as_array().unwrap() {
            seen.push(format!("receipt {} {}", r["alert_id"], r["agency"]));
        }
        for a in p["acks"].as_array().unwrap() {
            seen.push(format!("ack {} {}", a["alert_id"], a["agency"]));
        }
        for m in content_markers(&red) {
            assert!(!body.contains(&m), "`{m}` in page {page}: {body}");
        }
        if p["more"] == false {
            break;
        }
        url = fanout.url(&format!(
            "/api/v1/oversight/receipts?after={}&limit=1",
            urlencode(p["next"].as_str().unwrap())
        ));
    }
    seen.sort();
    assert_eq!(seen.len(), 5, "3 receipts and 2 acks: {seen:?}");
    seen.dedup();
    assert_eq!(seen.len(), 5, "no record twice: {seen:?}");

    // A bad query: 400 naming the parameter, counted.
    let (status, body) = get(
        &fanout.url("/api/v1/oversight/receipts?alert=a&limit=100000"),
        Some(OVERSIGHT_TOKEN),
    );
    assert_eq!(status, 400);
    assert!(body.contains("limit: 1 to 200"), "{body}");

    // Oversight changes nothing: every endpoint that changes (or is for) something else
    // refuses it.
    let client = reqwest::blocking::Client::new();
    let refused = [
        client
            .post(fanout.url("/api/v1/subscriptions"))
            .body(r#"{"id":"x","agency":"X","clearance":"RED","channel":"stream"}"#),
        client.get(fanout.url("/api/v1/subscriptions")),
        client
            .put(fanout.url("/api/v1/subscriptions/kz-desk"))
            .body(r#"{"id":"kz-desk","agency":"X","clearance":"RED","channel":"stream"}"#),
        client.delete(fanout.url("/api/v1/subscriptions/kz-desk")),
        client.post(fanout.url(&format!("/api/v1/alerts/{}/ack", green.alert_id))),
        client
            .post(fanout.url("/api/v1/cap"))
            .header("content-type", "application/cap+xml")
            .body("<alert/>"),
        client.get(fanout.url("/api/v1/stream")),
    ];
    for r in refused {
        let r = r
            .bearer_auth(OVERSIGHT_TOKEN)
            .header("content-type", "application/json")
            .send()
            .unwrap();
        let url = r.url().to_string();
        assert_eq!(r.status().as_u16(), 403, "{url}");
    }
    let login = client
        .post(fanout.url("/api/v1/session"))
        .header("content-type", "application/json")
        .body(format!(r#"{{"token":"{OVERSIGHT_TOKEN}"}}"#))
        .send()
        .unwrap();
    assert_eq!(login.status().as_u16(), 403, "no console session");
    let (status, me) = get(&fanout.url("/api/v1/me"), Some(OVERSIGHT_TOKEN));
    assert_eq!(status, 200);
    let me: Value = serde_json::from_str(&me).unwrap();
    assert_eq!(
        (me["role"].as_str(), me["clearance"].as_str()),
        (Some("oversight"), Some("GREEN"))
    );
    // Nothing changed: both subscriptions are still there, as they were.
    let (_, subs) = get(&fanout.url("/api/v1/subscriptions"), Some(ADMIN_TOKEN));
    assert!(
        subs.contains("kz-desk") && !subs.contains("\"X\""),
        "{subs}"
    );

    // Every read is on the audit topic, signed by the fan-out, and names the overseer;
    // the read of the RED alert commits to the body it returned.
    let served = |endpoint: &str| {
        fanout.metric(
            "ewn_fanout_oversight_reads_total",
            &format!("endpoint=\"{endpoint}\",outcome=\"served\""),
        )
    };
    let reads = served("receipts") as usize;
    assert!(reads >= 5, "{reads}");
    assert_eq!(
        fanout.metric(
            "ewn_fanout_oversight_reads_total",
            "endpoint=\"receipts\",outcome=\"bad_request\""
        ),
        1.0
    );
    let mut lines: Vec<Value> = Vec::new();
    wait_until(
        "the reads on the audit log",
        Duration::from_secs(60),
        || {
            let out = ewn(
                &net,
                &[
                    "audit",
                    "log",
                    "--json",
                    "--verify",
                    "--actor",
                    OVERSEER,
                    "--trust-store",
                    &store_path,
                ],
            );
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            lines = String::from_utf8(out.stdout)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            lines.len() >= reads
        },
    );
    assert_eq!(lines.len(), reads, "one record per read served");
    for l in &lines {
        assert_eq!(l["verified"], true, "{l}");
        assert_eq!(l["action"], "oversight_read");
        assert_eq!(l["service"], "fanout");
        assert_eq!(l["actor"], OVERSEER);
    }
    let digest = ewn_fanout::audit::digest(red_body.as_bytes());
    let of_red: Vec<&Value> = lines
        .iter()
        .filter(|l| l["object"] == red.alert_id.as_str())
        .collect();
    assert!(!of_red.is_empty());
    // (`ewn audit log` shortens long values for display.)
    assert!(
        of_red.iter().any(|l| {
            let shown = l["after_sha256"].as_str().unwrap().trim_end_matches('…');
            shown.len() >= 32 && digest.starts_with(shown)
        }),
        "the read's record commits to the body returned: {of_red:?}"
    );

    // The overseer reads the audit log too (and that read is logged as well).
    let (status, body) = get(
        &fanout.url(&format!("/api/v1/oversight/audit?actor={OVERSEER}")),
        Some(OVERSIGHT_TOKEN),
    );
    assert_eq!(status, 200, "{body}");
    let a: Value = serde_json::from_str(&body).unwrap();
    let records = a["records"].as_array().unwrap();
    assert_eq!(records.len(), reads, "{body}");
    assert!(records.iter().all(|r| r["action"] == "oversight_read"));
    assert!(
        records
            .iter()
            .any(|r| r["object"] == red.alert_id.as_str() && r["after_sha256"] == digest.as_str()),
        "{body}"
    );
    // Each record's Avro bytes verify against the trust store, as the topic holds them.
    let store = ewn_trust::TrustStore::load(&net.store).unwrap();
    for r in records {
        let bytes = base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            r["avro"].as_str().unwrap(),
        )
        .unwrap();
        let record = <ewn_model::AuditRecord as ewn_model::AvroRecord>::from_avro(&bytes).unwrap();
        ewn_trust::audit::verify_record(&store, &record, now_ms(), 0).unwrap();
    }
    let (_, all) = get(
        &fanout.url("/api/v1/oversight/audit"),
        Some(OVERSIGHT_TOKEN),
    );
    let all: Value = serde_json::from_str(&all).unwrap();
    let acts: BTreeSet<&str> = all["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert!(
        acts.contains("ack") && acts.contains("subscription_created"),
        "{acts:?}"
    );
    for m in content_markers(&red) {
        assert!(!all.to_string().contains(&m), "`{m}` in the audit page");
    }
    wait_until("the audit reads counted", Duration::from_secs(10), || {
        served("audit") == 2.0
    });
    eprintln!(
        "oversight reads: {} receipts reads in {:.2} s",
        fanout.metric(
            "ewn_fanout_oversight_read_seconds_count",
            "endpoint=\"receipts\""
        ),
        fanout.metric(
            "ewn_fanout_oversight_read_seconds_sum",
            "endpoint=\"receipts\""
        )
    );
    fanout.stop();
}

/// A fan-out that writes no audit log cannot log a read, so it shows nothing.
#[test]
fn without_an_audit_log_an_oversight_read_shows_nothing() {
    let net = Net::new("oversight-unlogged");
    let hooks = Hooks::start();
    let mut config = fanout_config(
        &net.settings,
        vec![webhook_sub(&hooks, "kz-desk", "KZ-KNB", Tlp::Amber)],
    );
    config.tokens.push((
        OVERSIGHT_TOKEN.into(),
        Principal::Oversight {
            name: OVERSEER.into(),
            clearance: Tlp::Amber,
        },
    ));
    let fanout = start_fanout(config);
    let (status, body) = get(
        &fanout.url("/api/v1/oversight/audit"),
        Some(OVERSIGHT_TOKEN),
    );
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("fanout.audit.signing_key_file"), "{body}");
    assert_eq!(
        fanout.metric(
            "ewn_fanout_oversight_reads_total",
            "endpoint=\"audit\",outcome=\"unlogged\""
        ),
        1.0
    );
    fanout.stop();
}

/// A read that reaches `fanout.oversight.read_timeout_ms` returns what it read with
/// `cut_at_deadline` and a cursor, is still logged, and is counted `deadline`.
#[test]
fn a_read_cut_at_its_deadline_says_so_and_is_still_logged() {
    let mut net = Net::new("oversight-deadline");
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("fanout.pem");
    keys::save_signing_key(&pem, &keys::generate()).unwrap();
    let hooks = Hooks::start();
    let mut config = fanout_config(
        &net.settings,
        vec![webhook_sub(&hooks, "kz-desk", "KZ-KNB", Tlp::Amber)],
    );
    config.fanout.audit = ewn_fanout::settings::AuditSettings {
        signing_key_file: Some(pem),
        key_id: "fanout-1".into(),
        queue_max: 64,
    };
    // Shorter than opening a reader takes: every read ends at its deadline.
    config.fanout.oversight.read_timeout_ms = 1;
    config.tokens.push((
        OVERSIGHT_TOKEN.into(),
        Principal::Oversight {
            name: OVERSEER.into(),
            clearance: Tlp::Amber,
        },
    ));
    let fanout = start_fanout(config);
    let a = alert(1, Tlp::Green, Level::High);
    net.publish_alerts(std::slice::from_ref(&a));
    wait_until("the receipt on the topic", Duration::from_secs(60), || {
        !net.receipts().is_empty()
    });
    let (status, body) = get(
        &fanout.url(&format!("/api/v1/oversight/receipts?alert={}", a.alert_id)),
        Some(OVERSIGHT_TOKEN),
    );
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["cut_at_deadline"], true, "{body}");
    assert_eq!(v["more"], true);
    assert!(v["next"].is_string());
    assert_eq!(
        fanout.metric(
            "ewn_fanout_oversight_reads_total",
            "endpoint=\"receipts\",outcome=\"deadline\""
        ),
        1.0
    );
    wait_until(
        "the read's audit record written",
        Duration::from_secs(10),
        || fanout.metric("ewn_fanout_audit_records_total", "outcome=\"written\"") >= 2.0,
    );
    fanout.stop();
}

/// The two bounds of an oversight read, on a broker behind a relay that can cut the
/// fan-out's own Kafka link (`ewn_testkit::LinkRelay`), so the broker never confirms its
/// audit records while the overseer's readers still read:
///
/// - more than `fanout.oversight.max_concurrent_reads` reads at once: the next is answered
///   429 with `Retry-After` at once, counted `busy`;
/// - the audit queue at `fanout.audit.queue_max` (its writer stuck on an unconfirmed
///   record, the next record waiting): a read is answered 503 at once, shows nothing,
///   counted `unlogged`, and its record `dropped`. Once the link is back the waiting records
///   are written and a read is served again.
#[test]
fn reads_past_their_bound_are_429_and_with_the_audit_queue_full_503() {
    let (_broker, relay) = ewn_testkit::start_broker_behind_relay(ewn_testkit::Engine::Memory)
        .unwrap_or_else(|e| panic!("the broker did not start: {e}"));
    let settings = ewn_kafka::KafkaSettings {
        brokers: relay.addr.clone(),
        topic_prefix: ewn_testkit::unique_prefix("oversight-bounds"),
        partitions: 1,
        statistics_interval_ms: 0,
        client_id: "ovb".into(),
        // The stuck record stays stuck for the whole test.
        message_timeout_ms: 300_000,
        ..ewn_kafka::KafkaSettings::default()
    };
    let net = Net::on(settings);
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("fanout.pem");
    keys::save_signing_key(&pem, &keys::generate()).unwrap();
    let hooks = Hooks::start();
    let mut config = fanout_config(
        &net.settings,
        vec![webhook_sub(&hooks, "kz-desk", "KZ-KNB", Tlp::Amber)],
    );
    config.fanout.audit = ewn_fanout::settings::AuditSettings {
        signing_key_file: Some(pem),
        key_id: "fanout-1".into(),
        queue_max: 1,
    };
    config.fanout.oversight.max_concurrent_reads = 2;
    // Long enough that the two held reads are still in flight when the third comes, on a
    // loaded machine (3 s was not: the third was admitted, then refused 503).
    config.fanout.oversight.read_timeout_ms = 15_000;
    config.tokens.push((
        OVERSIGHT_TOKEN.into(),
        Principal::Oversight {
            name: OVERSEER.into(),
            clearance: Tlp::Amber,
        },
    ));
    let fanout = start_fanout(config);
    let url = fanout.url("/api/v1/oversight/audit");
    let metric = |name: &str, labels: &str| fanout.metric(name, labels);
    let reads = |outcome: &str| {
        metric(
            "ewn_fanout_oversight_reads_total",
            &format!("endpoint=\"audit\",outcome=\"{outcome}\""),
        )
    };
    assert_eq!(
        metric("ewn_fanout_oversight_reads_in_flight_bound", ""),
        2.0
    );
    assert_eq!(metric("ewn_fanout_audit_queue_bound_records", ""), 1.0);

    // The record of the configured subscription, written at start, is out of the way.
    wait_until(
        "the start's audit record written",
        Duration::from_secs(60),
        || {
            metric("ewn_fanout_audit_records_total", "outcome=\"written\"") == 1.0
                && metric("ewn_fanout_audit_queue_records", "") == 0.0
                && metric("ewn_fanout_audit_unconfirmed_records", "") == 0.0
        },
    );
    // The fan-out's producer and consumers (client id `ovb-fanout...`) lose the broker; the
    // oversight readers (`ovb-oversight`) do not.
    relay.cut("ovb-fanout");
    // One held read at a time: the first's record must be with the writer (stuck on the cut
    // link) before the second's is queued, or the second's would find the queue full.
    let hold = |waiting: f64| {
        let url = url.clone();
        let h = std::thread::spawn(move || get(&url, Some(OVERSIGHT_TOKEN)));
        wait_until(
            "a read's record with the writer",
            Duration::from_secs(30),
            || {
                metric("ewn_fanout_audit_unconfirmed_records", "") == 1.0
                    && metric("ewn_fanout_audit_queue_records", "") == waiting
            },
        );
        h
    };
    let held = [hold(0.0), hold(1.0)];
    assert_eq!(metric("ewn_fanout_oversight_reads_in_flight", ""), 2.0);
    // A third read at once: 429, with when to retry.
    let r = reqwest::blocking::Client::new()
        .get(&url)
        .bearer_auth(OVERSIGHT_TOKEN)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 429);
    assert_eq!(
        r.headers().get("retry-after").and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let body = r.text().unwrap();
    assert!(body.contains("max_concurrent_reads"), "{body}");
    assert_eq!(reads("busy"), 1.0);
    // The held reads were not confirmed in their time: nothing shown.
    for h in held {
        let (status, body) = h.join().unwrap();
        assert_eq!(status, 503, "{body}");
        assert!(!body.contains("records"), "{body}");
    }
    assert_eq!(metric("ewn_fanout_audit_queue_records", ""), 1.0);
    // A read now: its record cannot be queued, so it is refused without waiting for a
    // confirmation (its record counted `dropped`, not sent).
    let dropped = metric("ewn_fanout_audit_records_total", "outcome=\"dropped\"");
    let (status, body) = get(&url, Some(OVERSIGHT_TOKEN));
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("could not be logged"), "{body}");
    assert!(!body.contains("records"), "{body}");
    assert_eq!(
        metric("ewn_fanout_audit_records_total", "outcome=\"dropped\""),
        dropped + 1.0
    );
    assert_eq!(reads("unlogged"), 3.0);
    assert_eq!(reads("served"), 0.0);

    // The link comes back: the waiting records are written, and a read is served.
    relay.restore("ovb-fanout");
    wait_until(
        "the waiting records written",
        Duration::from_secs(60),
        || metric("ewn_fanout_audit_records_total", "outcome=\"written\"") >= 3.0,
    );
    wait_until("a read served again", Duration::from_secs(60), || {
        get(&url, Some(OVERSIGHT_TOKEN)).0 == 200
    });
    assert_eq!(metric("ewn_fanout_audit_queue_records", ""), 0.0);
    fanout.stop();
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
