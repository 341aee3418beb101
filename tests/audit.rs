//! `ewn audit`: an alert's bundle assembled from a real broker verifies offline; any field
//! changed makes verify fail naming it; trust-store roles keep service and state keys apart.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::hooks::*;
use common::{HOUR, Net, incident, now_ms, rekeyed_count, start, wait_until};
use ewn::cmd::audit::{assemble, verify};
use ewn_model::{Category, Tlp};
use ewn_trust::audit::AuditSigner;
use ewn_trust::{KeyEntry, TrustStore};
use serde_json::Value;

fn ewn(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ewn"))
        .args(args)
        .output()
        .unwrap()
}

/// Every leaf of `v` with its path (`messages[0].record.offset`).
fn leaves(v: &Value, path: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                leaves(x, p, out);
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                leaves(x, format!("{path}[{i}]"), out);
            }
        }
        _ => out.push(path),
    }
}

fn pointer(path: &str) -> String {
    let mut p = String::new();
    for part in path.split('.') {
        let (name, rest) = part.split_once('[').unwrap_or((part, ""));
        p.push('/');
        p.push_str(name);
        for idx in rest.split('[').filter(|s| !s.is_empty()) {
            p.push('/');
            p.push_str(idx.trim_end_matches(']'));
        }
    }
    p
}

/// The item a leaf belongs to: `messages[0]`, `header`, `format`.
fn item_of(path: &str) -> &str {
    path.split('.').next().unwrap()
}

fn flip(v: &mut Value) {
    *v = match v {
        Value::String(s) => {
            // Change one character, keeping base64 text base64 where it is.
            let mut chars: Vec<char> = s.chars().collect();
            match chars.first_mut() {
                Some(c) => *c = if *c == 'A' { 'B' } else { 'A' },
                None => chars.push('A'),
            }
            Value::String(chars.into_iter().collect())
        }
        Value::Number(n) => Value::from(n.as_i64().unwrap_or(0) + 1),
        Value::Bool(b) => Value::Bool(!*b),
        Value::Null => Value::from(0),
        _ => unreachable!("leaves only"),
    };
}

#[test]
fn a_bundle_verifies_offline_and_any_changed_field_is_named() {
    let net = Net::new("audit");
    let mut net = net;
    let mut config = net.config(24 * 3600);
    config.process.alerts.update_interval_secs = 1;
    let p = start(config);
    let hooks = Hooks::start();
    let full = webhook_sub(&hooks, "full", "KZ-DESK", Tlp::Green);
    let mut low = webhook_sub(&hooks, "low", "TM-DESK", Tlp::Clear);
    low.redacted = true;
    let fanout = start_fanout(fanout_config(&net.settings, vec![full, low]));

    let base = now_ms() - 10 * HOUR;
    let incidents = vec![
        incident(1, "KZ", base, Category::SuspiciousCrossing, &["mover"]),
        incident(
            2,
            "KG",
            base + HOUR,
            Category::SuspiciousCrossing,
            &["mover"],
        ),
        incident(
            3,
            "TJ",
            base + 2 * HOUR,
            Category::SuspiciousCrossing,
            &["mover"],
        ),
    ];
    net.publish(&incidents);
    p.wait_correlated(rekeyed_count(&incidents));
    // The episode's three incidents and a receipt for each message and subscription.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let id = loop {
        let alerts = net.alerts();
        let receipts = net.receipts();
        // An earlier report arriving after the ALERT moves the window's start: the
        // processor cancels that episode and opens another; the full one holds all three.
        if let Some(a) = alerts
            .iter()
            .find(|a| a.rule == "cross_border_movement" && a.incident_count == 3)
        {
            let first = ewn_fanout::index::episode_id(a);
            let ids: Vec<_> = alerts
                .iter()
                .filter(|m| ewn_fanout::index::episode_id(m) == first)
                .map(|m| m.alert_id.clone())
                .collect();
            let received = receipts
                .iter()
                .filter(|r| ids.contains(&r.alert_id))
                .count();
            if received >= 2 * ids.len() {
                break a.alert_id.clone();
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no full episode: alerts {:?}, receipts {:?}, rejections {:?}",
            alerts
                .iter()
                .map(|a| (&a.rule, a.msg_type, a.incident_count))
                .collect::<Vec<_>>(),
            receipts
                .iter()
                .map(|r| (&r.subscription_id, r.outcome))
                .collect::<Vec<_>>(),
            net.rejections()
                .iter()
                .map(|r| r.reason)
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(200));
    };

    // The assembling service's key, added to the trust store with role `service`.
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = net.service_key(dir.path(), "audit", "audit-1", "audit");
    let store_path = net.store.display().to_string();
    let listed = ewn(&[
        "trust",
        "list",
        "--trust-store",
        &store_path,
        "--format",
        "json",
    ]);
    let listed = String::from_utf8(listed.stdout).unwrap();
    assert!(
        listed
            .lines()
            .any(|l| l.contains("\"audit-1\"") && l.contains("\"role\":\"service\"")),
        "{listed}"
    );

    let signer = AuditSigner::new("audit-1", "audit", key.clone());
    let bundle = assemble(
        &net.settings,
        &id,
        &signer,
        now_ms(),
        Duration::from_secs(60),
    )
    .unwrap();
    assert!(!bundle.messages.is_empty());
    assert_eq!(bundle.incidents.len(), 3, "the full incident set");
    assert!(bundle.receipts.len() >= 2);
    assert!(!bundle.subscriptions.is_empty());
    let text = serde_json::to_string_pretty(&bundle).unwrap();
    assert!(!text.contains("whsec_"), "no webhook secret in a bundle");
    let store = TrustStore::load(&net.store).unwrap();
    let report = verify(&text, &store, now_ms());
    assert!(report.ok(), "{:#?}", report.failures());
    for check in [
        "attestation",
        "signature",
        "digest",
        "derivation",
        "score",
        "clearance",
    ] {
        assert!(
            report.checks.iter().any(|c| c.check == check && c.ok),
            "{check} ran"
        );
    }
    let redacted = report.checks.iter().any(|c| {
        c.check == "clearance"
            && c.detail
                .contains("low (TM-DESK, clearance CLEAR) received the redacted form")
    });
    assert!(redacted, "{:#?}", report.checks);

    // The command line: a verdict per check, exit 0; --json.
    let file = dir.path().join("bundle.json");
    std::fs::write(&file, &text).unwrap();
    let out = ewn(&[
        "audit",
        "verify",
        file.to_str().unwrap(),
        "--trust-store",
        &store_path,
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("ok    clearance"), "{stdout}");
    assert!(stdout.contains("VERIFIED"), "{stdout}");

    // Flip every field in turn: verify fails, naming the item the field belongs to.
    let original: Value = serde_json::from_str(&text).unwrap();
    let mut paths = Vec::new();
    leaves(&original, String::new(), &mut paths);
    assert!(paths.len() > 50, "{}", paths.len());
    eprintln!("{} fields flipped one at a time", paths.len());
    for path in &paths {
        let mut v = original.clone();
        flip(v.pointer_mut(&pointer(path)).unwrap());
        let report = verify(&v.to_string(), &store, now_ms());
        let item = item_of(path);
        assert!(!report.ok(), "{path} changed, still verified");
        assert!(
            report.failures().iter().any(|c| c.what.starts_with(item)),
            "{path} changed: no failure names {item}: {:#?}",
            report.failures()
        );
    }
    let mut changed = original.clone();
    flip(changed.pointer_mut("/receipts/0/record/value").unwrap());
    std::fs::write(&file, changed.to_string()).unwrap();
    let out = ewn(&[
        "audit",
        "verify",
        file.to_str().unwrap(),
        "--trust-store",
        &store_path,
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["ok"], false);

    // Roles: the same key held as a state key may not attest audit records.
    let mut as_state = TrustStore::default();
    for k in store.entries() {
        as_state.insert(k.clone());
    }
    as_state.insert(KeyEntry {
        key_id: "audit-1".into(),
        state: "KZ".into(),
        public_key: signer.public_key(),
        not_before: 0,
        not_after: i64::MAX,
        revoked_at: None,
    });
    let report = verify(&text, &as_state, now_ms());
    assert!(!report.ok());
    assert!(
        report.failures().iter().any(|c| c.check == "attestation"
            && c.detail.contains("a state key may not sign audit records")),
        "{:#?}",
        report.failures()
    );
    fanout.stop();
    p.stop();
}

fn audit_record(actor: &str, action: &str, object: &str, at: i64) -> ewn_model::AuditRecord {
    ewn_model::AuditRecord {
        record_id: format!("r-{actor}-{object}-{at}"),
        service: String::new(),
        instance_id: "fanout-a".into(),
        actor: actor.into(),
        action: action.into(),
        object: object.into(),
        at,
        before_sha256: None,
        after_sha256: Some("ab".repeat(32)),
        detail: None,
        key_id: String::new(),
        signed_at: 0,
        signature: [0; 64],
    }
}

#[test]
fn the_audit_log_is_read_filtered_and_verified() {
    use ewn_model::AvroRecord;
    use ewn_trust::audit::sign_record;
    let mut net = Net::new("auditlog");
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = net.service_key(dir.path(), "fanout", "fanout-1", "fanout");
    let store_path = net.store.display().to_string();
    let signer = AuditSigner::new("fanout-1", "fanout", key);
    let now = now_ms();
    let topic = net.topics().audit();
    let records = [
        audit_record(
            "ops-admin",
            "subscription_created",
            "kz-desk",
            now - 3 * HOUR,
        ),
        audit_record("ops-admin", "subscription_changed", "kz-desk", now - 1000),
        audit_record("kz-desk-officer", "ack", "al-1", now - 500),
    ];
    for r in records {
        let signed = sign_record(&signer, r, now).unwrap();
        net.send(&topic, b"k", &signed.to_avro().unwrap());
    }
    // A record changed after signing, and one signed by a state's key id.
    let mut forged = sign_record(
        &signer,
        audit_record("ops-admin", "subscription_deleted", "kg-desk", now - 100),
        now,
    )
    .unwrap();
    forged.object = "tj-desk".into();
    net.send(&topic, b"k", &forged.to_avro().unwrap());
    let mut by_state = sign_record(
        &signer,
        audit_record("ops-admin", "subscription_deleted", "kg-desk", now - 50),
        now,
    )
    .unwrap();
    by_state.key_id = "kz-test".into();
    net.send(&topic, b"k", &by_state.to_avro().unwrap());
    net.flush();

    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_ewn"))
            .args(args)
            .env("EWN__KAFKA__BROKERS", &net.settings.brokers)
            .env("EWN__KAFKA__TOPIC_PREFIX", &net.prefix)
            .env("EWN__LOG__LEVEL", "warn")
            .output()
            .unwrap()
    };
    let out = run(&[
        "audit",
        "log",
        "--json",
        "--verify",
        "--trust-store",
        &store_path,
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5);
    let verified: Vec<bool> = lines.iter().map(|l| l["verified"] == true).collect();
    assert_eq!(verified, [true, true, true, false, false]);
    assert!(
        lines[3]["why"]
            .as_str()
            .unwrap()
            .contains("signature does not verify")
    );
    assert!(
        lines[4]["why"]
            .as_str()
            .unwrap()
            .contains("a state key may not sign audit records"),
        "{}",
        lines[4]
    );

    // Filters: --since and --actor; without the two bad records every one verifies.
    let out = run(&[
        "audit",
        "log",
        "--json",
        "--since",
        "1h",
        "--actor",
        "ops-admin",
        "--verify",
        "--trust-store",
        &store_path,
    ]);
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let actions: Vec<&str> = lines
        .iter()
        .map(|l| l["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "subscription_changed",
            "subscription_deleted",
            "subscription_deleted"
        ]
    );
    let out = run(&[
        "audit",
        "log",
        "--actor",
        "kz-desk-officer",
        "--verify",
        "--trust-store",
        &store_path,
    ]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("ack  al-1"), "{text}");
    assert!(text.contains("1 records, 0 not verified"), "{text}");
}

#[test]
fn the_fanout_logs_each_administrative_act_signed_by_its_own_key() {
    let mut net = Net::new("auditfan");
    let dir = tempfile::tempdir().unwrap();
    let (_, pem) = net.service_key(dir.path(), "fanout", "fanout-1", "fanout");
    let store_path = net.store.display().to_string();

    let hooks = Hooks::start();
    let mut config = fanout_config(
        &net.settings,
        vec![webhook_sub(&hooks, "kz-desk", "KZ-DESK", Tlp::Amber)],
    );
    config.fanout.audit = ewn_fanout::settings::AuditSettings {
        signing_key_file: Some(pem.clone()),
        key_id: "fanout-1".into(),
        queue_max: 16,
    };
    let fanout = start_fanout(config);
    // The series exist from the start, at 0, with the bound.
    assert_eq!(
        fanout.metric("ewn_fanout_audit_queue_bound_records", ""),
        16.0
    );
    assert_eq!(
        fanout.metric("ewn_fanout_audit_records_total", "outcome=\"dropped\""),
        0.0
    );

    // An administrator creates, changes and deletes a subscription.
    let client = reqwest::blocking::Client::new();
    let send = |r: reqwest::blocking::RequestBuilder, body: Option<&Value>| {
        let r = r.bearer_auth(ADMIN_TOKEN);
        let r = match body {
            Some(b) => r
                .header("content-type", "application/json")
                .body(b.to_string()),
            None => r,
        };
        r.send().unwrap().status().as_u16()
    };
    let mut body = serde_json::json!({
        "id": "kg-desk", "agency": "KG-GKNB", "clearance": "AMBER", "min_level": "MEDIUM",
        "format": "json",
        "webhook": { "url": hooks.url("kg-desk"), "secret": secret_of("kg-desk") },
    });
    let url = fanout.url("/api/v1/subscriptions/kg-desk");
    assert_eq!(
        send(
            client.post(fanout.url("/api/v1/subscriptions")),
            Some(&body)
        ),
        201
    );
    body["min_level"] = "CRITICAL".into();
    assert_eq!(send(client.put(&url), Some(&body)), 200);
    assert_eq!(send(client.delete(&url), None), 204);

    // A desk acknowledges an alert it received.
    let a = alert(1, Tlp::Green, ewn_model::Level::High);
    net.publish_alerts(std::slice::from_ref(&a));
    wait_until("the desk's delivery", Duration::from_secs(60), || {
        !hooks.delivered("kz-desk").is_empty()
    });
    let status = client
        .post(fanout.url(&format!("/api/v1/alerts/{}/ack", a.alert_id)))
        .bearer_auth(format!("{DESK_TOKEN_PREFIX}kz-desk"))
        .header("content-type", "application/json")
        .body(r#"{"actor":"duty-officer","note":"seen"}"#)
        .send()
        .unwrap()
        .status();
    assert!(status.is_success(), "{status}");

    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_ewn"))
            .args(args)
            .env("EWN__KAFKA__BROKERS", &net.settings.brokers)
            .env("EWN__KAFKA__TOPIC_PREFIX", &net.prefix)
            .env("EWN__LOG__LEVEL", "warn")
            .output()
            .unwrap()
    };
    let mut lines: Vec<Value> = Vec::new();
    wait_until("five audit records", Duration::from_secs(60), || {
        let out = run(&[
            "audit",
            "log",
            "--json",
            "--verify",
            "--trust-store",
            &store_path,
        ]);
        lines = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        lines.len() >= 5
    });
    let acts: Vec<(&str, &str, &str)> = lines
        .iter()
        .map(|l| {
            (
                l["actor"].as_str().unwrap(),
                l["action"].as_str().unwrap(),
                l["object"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        acts,
        [
            ("config", "subscription_created", "kz-desk"),
            ("test-admin", "subscription_created", "kg-desk"),
            ("test-admin", "subscription_changed", "kg-desk"),
            ("test-admin", "subscription_deleted", "kg-desk"),
            ("duty-officer", "ack", a.alert_id.as_str()),
        ]
    );
    for l in &lines {
        assert_eq!(l["verified"], true, "{l}");
        assert_eq!(l["service"], "fanout");
    }
    // Before and after: created has no before, deleted no after, a change both, differing.
    assert!(lines[1]["before_sha256"].is_null() && lines[1]["after_sha256"].is_string());
    assert_eq!(lines[2]["before_sha256"], lines[1]["after_sha256"]);
    assert_ne!(lines[2]["before_sha256"], lines[2]["after_sha256"]);
    assert!(lines[3]["after_sha256"].is_null());
    let text = lines.iter().map(Value::to_string).collect::<String>();
    assert!(!text.contains("whsec_"), "no secret in the audit log");
    wait_until("the written count", Duration::from_secs(10), || {
        fanout.metric("ewn_fanout_audit_records_total", "outcome=\"written\"") == 5.0
    });
    fanout.stop();
}

/// The processor logs every change of its trust store and rules file that it noticed,
/// applied or refused, signed with its own key (`process.audit`), with the file's digest
/// before and after; `ewn audit log --verify` checks each against the trust store.
#[test]
fn the_processor_logs_its_trust_store_and_rules_reloads() {
    use sha2::Digest as _;
    let net = Net::new("auditproc");
    let dir = tempfile::tempdir().unwrap();
    let (_, pem) = net.service_key(dir.path(), "process", "process-1", "process");
    let rules_path = dir.path().join("rules.toml");
    let rules = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/config/rules.default.toml"
    ))
    .unwrap();
    std::fs::write(&rules_path, &rules).unwrap();
    let sha = |p: &std::path::Path| hex::encode(sha2::Sha256::digest(std::fs::read(p).unwrap()));
    let first_rules = sha(&rules_path);
    let first_store = sha(&net.store);

    let mut config = net.config(300);
    config.process.rules_file = Some(rules_path.clone());
    config.process.audit = ewn_processor::settings::ProcessAuditSettings {
        signing_key_file: Some(pem),
        key_id: "process-1".into(),
    };
    let processor = start(config);
    let written = |action: &str| {
        processor.metric(
            "ewn_processor_audit_records_total",
            &format!("action=\"{action}\",outcome=\"written\""),
        )
    };
    // exported at 0 from the start
    wait_until("the processor's metrics", Duration::from_secs(60), || {
        ewn_ops::metrics::render(&processor.registry).contains(
            "ewn_processor_audit_records_total{action=\"rules_reloaded\",outcome=\"failed\"} 0",
        )
    });

    // A rules change (applied), then a broken rules file (refused: the previous rules kept).
    std::fs::write(
        &rules_path,
        rules.replacen("level = \"MEDIUM\"", "level = \"HIGH\"", 1),
    )
    .unwrap();
    let second_rules = sha(&rules_path);
    wait_until("the rules change logged", Duration::from_secs(60), || {
        written("rules_reloaded") >= 1.0
    });
    std::fs::write(&rules_path, "[[rules]]\nname = 1\n").unwrap();
    let broken_rules = sha(&rules_path);
    wait_until("the refused rules logged", Duration::from_secs(60), || {
        written("rules_reloaded") >= 2.0
    });
    // A key added to the trust store (applied).
    net.service_key(dir.path(), "other", "other-1", "fanout");
    let second_store = sha(&net.store);
    wait_until(
        "the trust store change logged",
        Duration::from_secs(60),
        || written("trust_store_reloaded") >= 1.0,
    );

    let out = Command::new(env!("CARGO_BIN_EXE_ewn"))
        .args(["audit", "log", "--json", "--verify", "--trust-store"])
        .arg(&net.store)
        .env("EWN__KAFKA__BROKERS", &net.settings.brokers)
        .env("EWN__KAFKA__TOPIC_PREFIX", &net.prefix)
        .env("EWN__LOG__LEVEL", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let of =
        |action: &str| -> Vec<&Value> { lines.iter().filter(|l| l["action"] == action).collect() };
    // `ewn audit log` shows a digest's first 40 hex digits
    let names = |shown: &Value, full: &str| {
        let shown = shown.as_str().unwrap_or("").trim_end_matches('…');
        shown.len() >= 32 && full.starts_with(shown)
    };
    let rules_lines = of("rules_reloaded");
    assert_eq!(rules_lines.len(), 2, "{lines:?}");
    for l in lines.iter() {
        assert_eq!(l["verified"], true, "{l}");
        assert_eq!(l["service"], "process", "{l}");
    }
    assert!(
        names(&rules_lines[0]["before_sha256"], &first_rules),
        "{}",
        rules_lines[0]
    );
    assert!(
        names(&rules_lines[0]["after_sha256"], &second_rules),
        "{}",
        rules_lines[0]
    );
    assert!(
        rules_lines[0]["detail"]
            .as_str()
            .unwrap()
            .starts_with("applied")
    );
    // refused: before is still the rules in force
    assert!(
        names(&rules_lines[1]["before_sha256"], &second_rules),
        "{}",
        rules_lines[1]
    );
    assert!(
        names(&rules_lines[1]["after_sha256"], &broken_rules),
        "{}",
        rules_lines[1]
    );
    assert!(
        rules_lines[1]["detail"]
            .as_str()
            .unwrap()
            .starts_with("refused"),
        "{}",
        rules_lines[1]
    );
    let store_lines = of("trust_store_reloaded");
    assert_eq!(store_lines.len(), 1, "{lines:?}");
    assert!(
        names(&store_lines[0]["before_sha256"], &first_store),
        "{}",
        store_lines[0]
    );
    assert!(
        names(&store_lines[0]["after_sha256"], &second_store),
        "{}",
        store_lines[0]
    );
    assert_eq!(
        processor.metric("ewn_processor_audit_records_total", "outcome=\"failed\""),
        0.0
    );
    processor.stop();
}
