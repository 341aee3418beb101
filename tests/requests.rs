//! Case requests on Tansu, end to end: a desk that received an alert asks for the details
//! of one of its incidents at the fan-out; the originating state's gateway, which kept the
//! report's raw line when it signed it, lists the request; its operator approves (the
//! details HPKE-encrypted to the agency's key, signed by the state) or declines (a reason);
//! the requesting agency opens the reply with `ewn requests open`, and a third agency
//! holding every topic cannot. Refusals: an alert above the desk's clearance or never
//! delivered to it, an incident not in the alert. Every step is a signed audit record. The
//! details are erased after their retention, on the gateway's (injected) clock.
//!
//! In most tests the alert is written to `<prefix>alerts` by the test, naming the
//! gateway-signed incident in its evidence as the processor would, so each can shape the
//! alert it needs; the round trip test has none of that: the post's watch-list hit goes
//! through the gateway, the real processor and the real fan-out to the desk, and the request
//! is about the alert the processor made. Every other part is the real service on a real
//! broker.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use common::hooks::*;
use common::{
    InProcess, Net, in_process, now_ms, start, trust_service_key, trust_state_key, wait_until,
    write_key_file,
};
use ewn_gateway::GatewaySettings;
use ewn_gateway::intake::Clock;
use ewn_model::validate::Limits;
use ewn_model::{
    Alert, AuditRecord, AvroRecord, CaseResponse, Category, Evidence, Level, MsgType,
    SignedIncident, Tlp,
};
use ewn_ops::http::Health;
use ewn_trust::audit::AuditSigner;
use ewn_trust::{TrustStore, keys};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const OPERATOR_TOKEN: &str = "operator-token-0123456789";
const POST_TOKEN: &str = "post-token-0123456789";

fn ewn(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ewn"))
        .args(args)
        .output()
        .unwrap()
}

/// KZ's gateway files in the network's directory: its signing key (trusted for KZ), its
/// audit key (service `gateway`), blinding key, the post's and the operator's tokens.
struct Site {
    dir: PathBuf,
    store: PathBuf,
}

impl Site {
    fn new(net: &Net) -> Site {
        let dir = net.dir.path().join("kz-gateway");
        std::fs::create_dir_all(&dir).unwrap();
        let key = keys::generate();
        write_key_file(&dir.join("kz.key"), "kz-gw", &key);
        trust_state_key(&net.store, "kz-gw", "KZ", &key);
        let audit = keys::generate();
        write_key_file(&dir.join("audit.key"), "kz-gw-audit", &audit);
        trust_service_key(&net.store, "kz-gw-audit", "gateway", &audit);
        common::blinding().save(&dir.join("blinding.key")).unwrap();
        let hash = |t: &str| hex::encode(ewn_ops::tokens::token_hash(t));
        ewn_trust::secret::write_secret(
            &dir.join("tokens.toml"),
            &format!(
                "[[tokens]]\nname = \"terminal\"\npost_id = \"kz-post-1\"\nsha256 = \"{}\"\n",
                hash(POST_TOKEN)
            ),
        )
        .unwrap();
        ewn_trust::secret::write_secret(
            &dir.join("operators.toml"),
            &format!(
                "[[tokens]]\nname = \"kz-duty-officer\"\nsha256 = \"{}\"\n",
                hash(OPERATOR_TOKEN)
            ),
        )
        .unwrap();
        ewn_trust::secret::write_secret(&dir.join("operator.token"), OPERATOR_TOKEN).unwrap();
        Site {
            dir,
            store: net.store.clone(),
        }
    }

    fn settings(&self, retention_secs: u64) -> GatewaySettings {
        let d = &self.dir;
        let mut g = GatewaySettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            state: "KZ".into(),
            signing_key_file: Some(d.join("kz.key")),
            blinding_key_file: Some(d.join("blinding.key")),
            tokens_file: Some(d.join("tokens.toml")),
            ..GatewaySettings::default()
        };
        g.spool.path = Some(d.join("spool.db"));
        g.forward.initial_backoff_ms = 100;
        g.details.path = Some(d.join("cases.db"));
        g.details.retention_secs = retention_secs;
        g.details.erase_interval_secs = 1;
        g.requests.enabled = true;
        g.requests.operators_file = Some(d.join("operators.toml"));
        g.requests.trust_store = Some(self.store.clone());
        g.requests.audit_signing_key_file = Some(d.join("audit.key"));
        g
    }
}

struct Gateway {
    addr: String,
    service: InProcess<String>,
}

fn start_gateway(net: &Net, gateway: GatewaySettings, clock: Clock) -> Gateway {
    let config = ewn_gateway::GatewayConfig {
        kafka: net.settings.clone(),
        limits: Limits::default(),
        gateway,
        clock,
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let service = in_process(move |r, s| async move {
        match ewn_gateway::start(config, &r, Arc::new(Health::default()), s).await {
            Ok(running) => {
                tx.send(Ok(running.addr)).unwrap();
                running.task.await.unwrap().map_err(|e| e.to_string())
            }
            Err(e) => {
                tx.send(Err(e.to_string())).unwrap();
                Err(e.to_string())
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap()
        .unwrap_or_else(|e| panic!("the gateway did not start: {e}"));
    Gateway {
        addr: addr.to_string(),
        service,
    }
}

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// A report line whose person has a raw name (what only the state keeps).
fn report(incident_id: &str, person: &str) -> String {
    let t = chrono::DateTime::from_timestamp_millis(now_ms() - 60_000)
        .unwrap()
        .to_rfc3339();
    json!({
        "incident_id": incident_id,
        "occurred_at": t,
        "reported_at": t,
        "reporter": {"state": "KZ", "agency": "KZ-KNB", "post_id": "kz-post-1"},
        "category": "WATCHLIST_HIT",
        "severity": "HIGH",
        "source_reliability": "B",
        "info_credibility": 2,
        "tlp": "GREEN",
        "location": {"lat": 44.2, "lon": 80.3, "area": "KZ-ZHT", "crossing": "KZ-KHORGOS"},
        "direction": "ENTRY",
        "subjects": [{"kind": "PERSON", "id": person, "watchlist": "regional"}],
        "summary": "watch-list hit at the crossing"
    })
    .to_string()
}

/// Posts the reports through the gateway and waits for them on `<prefix>incidents.kz`;
/// returns each signed record with its partition and offset.
fn post_reports(net: &Net, gw: &Gateway, lines: &[String]) -> Vec<(Evidence, SignedIncident)> {
    let r = http()
        .post(format!("http://{}/api/v1/incidents", gw.addr))
        .bearer_auth(POST_TOKEN)
        .body(lines.join("\n"))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 202, "{}", r.text().unwrap());
    let topic = net.topics().incidents("KZ");
    let mut found = Vec::new();
    wait_until(
        "the reports on the incidents topic",
        Duration::from_secs(60),
        || {
            found = read(net, &topic)
                .into_iter()
                .map(|(partition, offset, value)| {
                    let signed = SignedIncident::from_avro(&value).unwrap();
                    let incident = ewn_model::Incident::from_avro(&signed.payload).unwrap();
                    let evidence = Evidence {
                        incident_id: incident.incident_id,
                        topic: topic.clone(),
                        partition,
                        offset,
                        key_id: signed.key_id.clone(),
                        signature: signed.signature,
                        payload_sha256: Sha256::digest(&signed.payload).into(),
                    };
                    (evidence, signed)
                })
                .collect();
            found.len() >= lines.len()
        },
    );
    found
}

/// Every record of `topic`: (partition, offset, value).
fn read(net: &Net, topic: &str) -> Vec<(i32, i64, Vec<u8>)> {
    common::read_topic(&net.settings, topic, |r| {
        (r.partition, r.offset, r.value.unwrap_or_default().to_vec())
    })
}

/// An ALERT at `tlp` resting on `evidence`, as the processor writes one.
fn alert(id: &str, tlp: Tlp, evidence: Vec<Evidence>) -> Alert {
    let mut a = ewn_model::samples::alert();
    a.alert_id = id.into();
    a.msg_type = MsgType::Alert;
    a.references.clear();
    a.rule = "watchlist_hit".into();
    a.level = Level::High;
    a.tlp = tlp;
    a.named_agencies.clear();
    a.states = vec!["KZ".into()];
    a.categories = vec![Category::WatchlistHit];
    a.created_at = now_ms();
    a.incident_ids = evidence.iter().map(|e| e.incident_id.clone()).collect();
    a.incident_count = evidence.len() as i32;
    a.evidence = evidence;
    a
}

fn request(fanout: &Fanout, desk: &str, alert_id: &str, incident_id: &str) -> (u16, Value) {
    let r = http()
        .post(fanout.url(&format!("/api/v1/alerts/{alert_id}/requests")))
        .bearer_auth(format!("{DESK_TOKEN_PREFIX}{desk}"))
        .json(&json!({
            "incident_id": incident_id,
            "justification": "the watch-list hit matches a returning suspect",
            "legal_basis": "Art. 7 of the regional agreement",
        }))
        .send()
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

fn operator(
    gw: &Gateway,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut r = http()
        .request(method, format!("http://{}{path}", gw.addr))
        .bearer_auth(OPERATOR_TOKEN);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().unwrap();
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

fn pending(gw: &Gateway) -> Vec<Value> {
    let (status, body) = operator(gw, reqwest::Method::GET, "/api/v1/requests", None);
    assert_eq!(status, 200, "{body}");
    body["requests"].as_array().unwrap().clone()
}

/// An agency key pair in `dir`, its public half trusted for `agency`.
fn agency(net: &Net, dir: &Path, agency: &str) -> PathBuf {
    let secret = dir.join(format!("{agency}.key"));
    let public = dir.join(format!("{agency}.pub"));
    let out = ewn(&[
        "requests",
        "keygen",
        "--secret-out",
        secret.to_str().unwrap(),
        "--public-out",
        public.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let store = net.store.display().to_string();
    let key_id = format!("{}-x25519", agency.to_lowercase());
    let out = ewn(&[
        "trust",
        "add",
        "--trust-store",
        &store,
        "--key-id",
        &key_id,
        "--role",
        "agency",
        "--agency",
        agency,
        "--public-key",
        public.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    secret
}

/// `ewn requests open`: the reply names neither alert nor incident, so the requester gives
/// them (`ids`: alert id, incident id, as its request named them).
fn open(net: &Net, request_id: &str, ids: (&str, &str), key: &Path) -> std::process::Output {
    ewn(&[
        "--brokers",
        &net.settings.brokers,
        "--topic-prefix",
        &net.prefix,
        "requests",
        "open",
        request_id,
        "--alert",
        ids.0,
        "--incident",
        ids.1,
        "--key",
        key.to_str().unwrap(),
        "--trust-store",
        net.store.to_str().unwrap(),
    ])
}

#[test]
fn a_request_is_answered_to_the_requester_only_and_refused_beyond_what_the_desk_received() {
    let net = Net::new("requests");
    let site = Site::new(&net);
    // The fan-out with its service key (it signs requests on behalf of desks).
    let fanout_key = keys::generate();
    let fanout_pem = net.dir.path().join("fanout-audit.pem");
    keys::save_signing_key(&fanout_pem, &fanout_key).unwrap();
    trust_service_key(&net.store, "fanout-test", "fanout", &fanout_key);
    let keys_dir = tempfile::tempdir().unwrap();
    let rcc_key = agency(&net, keys_dir.path(), "RCC");
    let third_key = agency(&net, keys_dir.path(), "THIRD");

    let gw = start_gateway(
        &net,
        site.settings(30 * 86_400),
        ewn_gateway::intake::system_clock(),
    );
    let hooks = Hooks::start();
    let rcc = webhook_sub(&hooks, "rcc", "RCC", Tlp::Amber);
    let low = webhook_sub(&hooks, "low", "LOW", Tlp::Clear);
    let third = webhook_sub(&hooks, "third", "THIRD", Tlp::Amber);
    let mut config = fanout_config(&net.settings, vec![rcc, low, third]);
    config.fanout.audit.signing_key_file = Some(fanout_pem);
    config.fanout.audit.key_id = "fanout-test".into();
    let fanout = start_fanout(config);

    let ids = [
        "3f2b1c4d-5e6f-4a7b-8c9d-0e1f2a3b4c51",
        "3f2b1c4d-5e6f-4a7b-8c9d-0e1f2a3b4c52",
        "3f2b1c4d-5e6f-4a7b-8c9d-0e1f2a3b4c53",
    ];
    let signed = post_reports(
        &net,
        &gw,
        &[
            report(ids[0], "Ivanov Ivan 1980-01-02"),
            report(ids[1], "Petrov Petr 1975-03-04"),
            report(ids[2], "Sidorov Sidor 1990-05-06"),
        ],
    );
    let ev = |id: &str| {
        signed
            .iter()
            .find(|(e, _)| e.incident_id == id)
            .unwrap()
            .0
            .clone()
    };
    // A GREEN alert on the first two incidents, and an AMBER one on the third.
    let green = alert(
        "a0000000000000000000000000000001",
        Tlp::Green,
        vec![ev(ids[0]), ev(ids[1])],
    );
    let amber = alert(
        "a0000000000000000000000000000002",
        Tlp::Amber,
        vec![ev(ids[2])],
    );
    let mut net = net;
    let topic = net.topics().alerts();
    for a in [&green, &amber] {
        net.send(&topic, a.key.as_bytes(), &a.to_avro().unwrap());
    }
    net.flush();
    wait_until(
        "both alerts delivered to rcc",
        Duration::from_secs(90),
        || hooks.delivered("rcc").len() >= 2,
    );

    // Refused: an alert above the desk's clearance (AMBER to a CLEAR desk), one never
    // delivered (no such alert), an incident the alert does not rest on.
    let (s, b) = request(&fanout, "low", &amber.alert_id, ids[2]);
    assert_eq!(s, 403, "{b}");
    assert!(
        b["error"]
            .as_str()
            .unwrap()
            .contains("did not receive this alert in full"),
        "{b}"
    );
    let (s, b) = request(&fanout, "rcc", "a00000000000000000000000000000ff", ids[0]);
    assert_eq!(s, 403, "{b}");
    let (s, b) = request(&fanout, "rcc", &green.alert_id, ids[2]);
    assert_eq!(s, 403, "{b}");
    assert_eq!(b["field"], "incident_id", "{b}");
    // Hostile bodies are named by field and never echoed.
    let r = http()
        .post(fanout.url(&format!("/api/v1/alerts/{}/requests", green.alert_id)))
        .bearer_auth(format!("{DESK_TOKEN_PREFIX}rcc"))
        .json(
            &json!({"incident_id": ids[0], "justification": "x".repeat(5000), "legal_basis": "b"}),
        )
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert!(r.text().unwrap().contains("\"field\":\"justification\""));
    // Unauthenticated: refused.
    let r = http()
        .post(fanout.url(&format!("/api/v1/alerts/{}/requests", green.alert_id)))
        .json(&json!({"incident_id": ids[0], "justification": "a", "legal_basis": "b"}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);

    // The desk cleared for the alert asks; the gateway lists it.
    let (s, b) = request(&fanout, "rcc", &green.alert_id, ids[0]);
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["state"], "KZ");
    let approved_id = b["request_id"].as_str().unwrap().to_string();
    // And, through the command line, a second request about the other incident.
    let desk_token = keys_dir.path().join("desk.token");
    ewn_trust::secret::write_secret(&desk_token, &format!("{DESK_TOKEN_PREFIX}rcc")).unwrap();
    let out = ewn(&[
        "requests",
        "create",
        "--url",
        &fanout.url(""),
        "--token-file",
        desk_token.to_str().unwrap(),
        &green.alert_id,
        "--incident",
        ids[1],
        "--justification",
        "a second subject travelled with the first",
        "--legal-basis",
        "Art. 7",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created: Value = serde_json::from_slice(&out.stdout).unwrap();
    let second_id = created["request_id"].as_str().unwrap().to_string();

    let count = |o: &str| {
        fanout.metric(
            "ewn_fanout_case_requests_total",
            &format!("outcome=\"{o}\""),
        )
    };
    assert_eq!(
        (
            count("sent"),
            count("refused"),
            count("invalid"),
            count("failed")
        ),
        (2.0, 3.0, 1.0, 0.0)
    );
    wait_until(
        "both requests pending at the gateway",
        Duration::from_secs(60),
        || pending(&gw).len() == 2,
    );
    let listed = pending(&gw);
    let first = listed
        .iter()
        .find(|r| r["request_id"] == approved_id.as_str())
        .unwrap();
    assert_eq!(first["agency"], "RCC");
    assert_eq!(first["legal_basis"], "Art. 7 of the regional agreement");
    // Operators authenticate.
    let r = http()
        .get(format!("http://{}/api/v1/requests", gw.addr))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);

    // Approve through the command line; decline through the API.
    let out = ewn(&[
        "requests",
        "approve",
        "--url",
        &format!("http://{}", gw.addr),
        "--token-file",
        site.dir.join("operator.token").to_str().unwrap(),
        &approved_id,
    ]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let (s, b) = operator(
        &gw,
        reqwest::Method::POST,
        &format!("/api/v1/requests/{second_id}/approve"),
        None,
    );
    assert_eq!(s, 200, "{b}");
    let (s, b) = operator(
        &gw,
        reqwest::Method::POST,
        &format!("/api/v1/requests/{second_id}/decline"),
        Some(json!({"reason": "decided already"})),
    );
    assert_eq!(s, 409, "decided once: {b}");
    assert!(pending(&gw).is_empty());

    // The requester opens the reply: the raw name only the state held.
    let out = open(&net, &approved_id, (&green.alert_id, ids[0]), &rcc_key);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let opened: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(opened["decision"], "APPROVE");
    assert_eq!(opened["signed_by"], "kz-gw");
    assert!(
        opened["details"]
            .as_str()
            .unwrap()
            .contains("Ivanov Ivan 1980-01-02"),
        "{opened}"
    );
    // Opened again, logged this time with the desk's own service key.
    let desk_key = keys::generate();
    let desk_pem = keys_dir.path().join("desk-audit.pem");
    keys::save_signing_key(&desk_pem, &desk_key).unwrap();
    trust_service_key(&net.store, "rcc-desk-audit", "desk", &desk_key);
    let out = ewn(&[
        "--brokers",
        &net.settings.brokers,
        "--topic-prefix",
        &net.prefix,
        "requests",
        "open",
        &approved_id,
        "--alert",
        &green.alert_id,
        "--incident",
        ids[0],
        "--key",
        rcc_key.to_str().unwrap(),
        "--trust-store",
        net.store.to_str().unwrap(),
        "--audit-signing-key",
        desk_pem.to_str().unwrap(),
        "--audit-key-id",
        "rcc-desk-audit",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A third agency holding every topic (and the reply) cannot.
    let out = open(&net, &approved_id, (&green.alert_id, ids[0]), &third_key);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success());
    assert!(stderr.contains("does not open with this key"), "{stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("Ivanov"));
    // Nor is the raw name anywhere on the broker.
    for t in [
        net.topics().responses(),
        net.topics().requests("KZ"),
        net.topics().incidents("KZ"),
        net.topics().audit(),
    ] {
        for (_, _, v) in read(&net, &t) {
            assert!(
                !String::from_utf8_lossy(&v).contains("Ivanov"),
                "a raw name on {t}"
            );
        }
    }
    // Every step is a signed audit record: the request by the fan-out, the answers by the
    // gateway.
    let store = TrustStore::load(&net.store).unwrap();
    wait_until("the audit records", Duration::from_secs(60), || {
        let records: Vec<AuditRecord> = read(&net, &net.topics().audit())
            .into_iter()
            .map(|(_, _, v)| AuditRecord::from_avro(&v).unwrap())
            .collect();
        let of = |action: &str| records.iter().filter(|r| r.action == action).count();
        of("case_requested") == 2 && of("case_approved") == 2 && of("case_opened") == 1
    });
    for r in read(&net, &net.topics().audit())
        .into_iter()
        .map(|(_, _, v)| AuditRecord::from_avro(&v).unwrap())
        .filter(|r| r.action.starts_with("case_"))
    {
        let key = ewn_trust::audit::verify_record(&store, &r, now_ms(), 0).unwrap();
        let by = match r.action.as_str() {
            "case_requested" => "fanout",
            "case_opened" => "desk",
            _ => "gateway",
        };
        assert_eq!(key.service, by, "{}", r.action);
        // Named by request, never by alert or incident (overseers of any clearance read it).
        assert!(
            [&approved_id, &second_id].contains(&&r.object),
            "{}",
            r.object
        );
        let bytes = r.to_avro().unwrap();
        for id in [green.alert_id.as_str(), ids[0], ids[1]] {
            assert!(!contains(&bytes, id.as_bytes()), "{} names {id}", r.action);
        }
    }
    // The alert's audit bundle lists both requests and their outcome, not their content.
    let auditor = keys::generate();
    trust_service_key(&net.store, "audit-test", "audit", &auditor);
    let bundle = ewn::cmd::audit::assemble(
        &net.settings,
        &green.alert_id,
        &AuditSigner::new("audit-test", "audit", auditor),
        now_ms(),
        Duration::from_secs(60),
    )
    .unwrap();
    assert_eq!(bundle.cases.len(), 2);
    assert!(bundle.cases.iter().all(|c| c.record.decision == "APPROVE"
        && c.record.decided_by.as_deref() == Some("kz-duty-officer")
        && c.record.agency == "RCC"));
    let text = serde_json::to_string(&bundle).unwrap();
    assert!(!text.contains("Ivanov"));
    let report = ewn::cmd::audit::verify(&text, &TrustStore::load(&net.store).unwrap(), now_ms());
    let cases: Vec<_> = report
        .checks
        .iter()
        .filter(|c| c.check == "cases")
        .collect();
    assert_eq!(cases.len(), 2, "{:#?}", report.checks);
    assert!(cases.iter().all(|c| c.ok), "{cases:#?}");
    assert!(
        report
            .checks
            .iter()
            .filter(|c| c.check == "attestation" && c.what.starts_with("cases"))
            .all(|c| c.ok)
    );
    drop(hooks);
    fanout.stop();
    gw.service.stop();
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn ids_other() -> &'static str {
    "00000000-0000-4000-8000-000000000000"
}

#[test]
fn a_declined_request_carries_its_reason_and_every_step_is_audited() {
    let mut net = Net::new("requests-decline");
    let site = Site::new(&net);
    let fanout_key = keys::generate();
    trust_service_key(&net.store, "fanout-test", "fanout", &fanout_key);
    let keys_dir = tempfile::tempdir().unwrap();
    let rcc_key = agency(&net, keys_dir.path(), "RCC");
    let gw = start_gateway(
        &net,
        site.settings(30 * 86_400),
        ewn_gateway::intake::system_clock(),
    );
    let id = "4f2b1c4d-5e6f-4a7b-8c9d-0e1f2a3b4c51";
    post_reports(&net, &gw, &[report(id, "Ivanov Ivan 1980-01-02")]);
    // A request as the fan-out signs it.
    let signer = AuditSigner::new("fanout-test", "fanout", fanout_key);
    let mut req = ewn_model::samples::case_request();
    req.request_id = "5e1d2c3b-0000-4000-8000-000000000001".into();
    req.incident_id = id.into();
    req.agency = "RCC".into();
    let req = ewn_trust::case::sign_request(&signer, req, now_ms()).unwrap();
    // And a forged one (signed by a key the store does not hold): never listed.
    let mut forged = req.clone();
    forged.request_id = "5e1d2c3b-0000-4000-8000-000000000002".into();
    let forged = ewn_trust::case::sign_request(
        &AuditSigner::new("fanout-test", "fanout", keys::generate()),
        forged,
        now_ms(),
    )
    .unwrap();
    let topic = net.topics().requests("KZ");
    for r in [&forged, &req] {
        net.send(&topic, r.request_id.as_bytes(), &r.to_avro().unwrap());
    }
    net.flush();
    wait_until("the request pending", Duration::from_secs(60), || {
        pending(&gw).len() == 1
    });
    assert!(
        gw.service
            .metric("ewn_gateway_case_requests_total", "outcome=\"invalid\"")
            >= 1.0
    );
    // Hostile or mistaken answers are refused, naming what is wrong.
    let (s, b) = operator(
        &gw,
        reqwest::Method::POST,
        &format!("/api/v1/requests/{}/decline", req.request_id),
        Some(json!({"reason": "   "})),
    );
    assert_eq!(s, 422, "{b}");
    assert_eq!(b["field"], "reason");
    let (s, b) = operator(
        &gw,
        reqwest::Method::POST,
        &format!("/api/v1/requests/{}/decline", req.request_id),
        Some(json!({"reason": "x", "secret": "never echoed"})),
    );
    assert_eq!(s, 422, "{b}");
    assert!(!b.to_string().contains("never echoed"), "{b}");
    let (s, b) = operator(
        &gw,
        reqwest::Method::POST,
        "/api/v1/requests/no-such-request/approve",
        None,
    );
    assert_eq!(s, 404, "{b}");
    let (s, b) = operator(
        &gw,
        reqwest::Method::POST,
        &format!("/api/v1/requests/{}/decline", req.request_id),
        Some(json!({"reason": "the legal basis does not cover this category"})),
    );
    assert_eq!(s, 200, "{b}");
    // With ids other than the request's, the sealed reason does not open.
    let out = open(
        &net,
        &req.request_id,
        (&req.alert_id, ids_other()),
        &rcc_key,
    );
    assert!(!out.status.success());
    assert!(!String::from_utf8_lossy(&out.stdout).contains("legal basis"));
    let out = open(&net, &req.request_id, (&req.alert_id, id), &rcc_key);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "declined: {stdout}");
    let opened: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(opened["decision"], "DECLINE");
    assert_eq!(
        opened["reason"],
        "the legal basis does not cover this category"
    );
    // The reply and its audit record are signed and verify against the trust store.
    let store = TrustStore::load(&net.store).unwrap();
    let replies: Vec<CaseResponse> = read(&net, &net.topics().responses())
        .into_iter()
        .map(|(_, _, v)| CaseResponse::from_avro(&v).unwrap())
        .collect();
    assert_eq!(replies.len(), 1);
    assert!(ewn_trust::case::verify_response(&store, &replies[0], now_ms(), 0).is_ok());
    // Every desk reads the topic: the reason, alert and incident are sealed, not in clear.
    assert!(replies[0].ciphertext.is_some());
    for (_, _, v) in read(&net, &net.topics().responses()) {
        for clear in [req.alert_id.as_str(), id, "legal basis does not cover"] {
            assert!(!contains(&v, clear.as_bytes()), "{clear} in clear");
        }
    }
    let audit: Vec<AuditRecord> = read(&net, &net.topics().audit())
        .into_iter()
        .map(|(_, _, v)| AuditRecord::from_avro(&v).unwrap())
        .collect();
    let declined = audit.iter().find(|r| r.action == "case_declined").unwrap();
    assert_eq!(declined.actor, "kz-duty-officer");
    assert_eq!(declined.service, "gateway");
    assert!(ewn_trust::audit::verify_record(&store, declined, now_ms(), 0).is_ok());
    gw.service.stop();
}

#[test]
fn raw_details_are_erased_after_their_retention_on_the_gateways_clock() {
    let mut net = Net::new("requests-retention");
    let site = Site::new(&net);
    let fanout_key = keys::generate();
    trust_service_key(&net.store, "fanout-test", "fanout", &fanout_key);
    let keys_dir = tempfile::tempdir().unwrap();
    agency(&net, keys_dir.path(), "RCC");
    let offset = Arc::new(AtomicI64::new(0));
    let o = offset.clone();
    let clock: Clock = Arc::new(move || now_ms() + o.load(Ordering::Relaxed));
    let gw = start_gateway(&net, site.settings(3600), clock);
    let id = "6f2b1c4d-5e6f-4a7b-8c9d-0e1f2a3b4c51";
    post_reports(&net, &gw, &[report(id, "Ivanov Ivan 1980-01-02")]);
    assert_eq!(gw.service.metric("ewn_gateway_details_reports", ""), 1.0);
    // A request before the retention ends: approved would work; after it, nothing to send.
    let signer = AuditSigner::new("fanout-test", "fanout", fanout_key);
    let mut req = ewn_model::samples::case_request();
    req.request_id = "7e1d2c3b-0000-4000-8000-000000000001".into();
    req.incident_id = id.into();
    req.agency = "RCC".into();
    // Signed on the gateway's clock, so it is not judged ahead of it.
    let req = ewn_trust::case::sign_request(&signer, req, now_ms()).unwrap();
    let topic = net.topics().requests("KZ");
    net.send(&topic, b"r", &req.to_avro().unwrap());
    net.flush();
    wait_until("the request pending", Duration::from_secs(60), || {
        pending(&gw).len() == 1
    });
    // Held while the gateway's clock is inside the hour (the unit test in cases.rs pins the
    // boundary to the millisecond).
    assert_eq!(
        gw.service
            .metric("ewn_gateway_details_erased_total", "reason=\"retention\""),
        0.0
    );
    // Past the hour: erased by the gateway's own schedule.
    offset.store(61 * 60_000, Ordering::Relaxed);
    wait_until("details erased", Duration::from_secs(30), || {
        gw.service
            .metric("ewn_gateway_details_erased_total", "reason=\"retention\"")
            == 1.0
    });
    assert_eq!(gw.service.metric("ewn_gateway_details_reports", ""), 0.0);
    let (s, b) = operator(
        &gw,
        reqwest::Method::POST,
        &format!("/api/v1/requests/{}/approve", req.request_id),
        None,
    );
    assert_eq!(s, 409, "{b}");
    assert!(
        b["reason"].as_str().unwrap().contains("no longer held"),
        "{b}"
    );
    assert_eq!(pending(&gw).len(), 1, "still pending: it may be declined");
    gw.service.stop();
}

/// The whole chain on the alert the processor made: the post's watch-list hit goes through
/// `ewn gateway` (which keeps the raw line), the processor verifies, scores and correlates
/// it into a `watchlist_hit` alert, the fan-out delivers it to the desk; the desk requests
/// the incident's details, KZ's operator approves with `ewn requests approve`, the desk
/// opens the reply with `ewn requests open`, and the alert's audit bundle verifies, the
/// request listed in it.
#[test]
fn a_watchlist_hit_through_the_gateway_and_the_processor_is_requested_approved_and_opened() {
    let net = Net::new("requests-chain");
    let site = Site::new(&net);
    let fanout_key = keys::generate();
    let fanout_pem = net.dir.path().join("fanout-audit.pem");
    keys::save_signing_key(&fanout_pem, &fanout_key).unwrap();
    trust_service_key(&net.store, "fanout-test", "fanout", &fanout_key);
    let keys_dir = tempfile::tempdir().unwrap();
    let rcc_key = agency(&net, keys_dir.path(), "RCC");
    // The processor reads the trust store holding the gateway's key.
    let processor = start(net.config(120));
    let gw = start_gateway(
        &net,
        site.settings(30 * 86_400),
        ewn_gateway::intake::system_clock(),
    );
    let hooks = Hooks::start();
    let rcc = webhook_sub(&hooks, "rcc", "RCC", Tlp::Amber);
    let mut config = fanout_config(&net.settings, vec![rcc]);
    config.fanout.audit.signing_key_file = Some(fanout_pem);
    config.fanout.audit.key_id = "fanout-test".into();
    let fanout = start_fanout(config);

    let id = "8f2b1c4d-5e6f-4a7b-8c9d-0e1f2a3b4c51";
    let line = report(id, "Ivanov Ivan 1980-01-02");
    post_reports(&net, &gw, std::slice::from_ref(&line));
    let mut alert = None;
    wait_until(
        "the processor's watch-list alert on the gateway's report",
        Duration::from_secs(90),
        || {
            alert = net
                .alerts()
                .into_iter()
                .find(|a| a.msg_type == MsgType::Alert && a.incident_ids.iter().any(|i| i == id));
            alert.is_some()
        },
    );
    let alert = alert.unwrap();
    assert_eq!(alert.rule, "watchlist_hit");
    assert_eq!(alert.states, vec!["KZ".to_string()]);
    assert_eq!(alert.evidence.len(), 1);
    assert_eq!(
        alert.evidence[0].key_id, "kz-gw",
        "signed by the gateway's key"
    );
    assert!(
        !serde_json::to_string(&alert.evidence)
            .unwrap()
            .contains("Ivanov"),
        "the alert carries no raw name"
    );
    wait_until(
        "the alert delivered to the desk",
        Duration::from_secs(60),
        || {
            hooks
                .delivered("rcc")
                .iter()
                .any(|h| h.alert_id() == alert.alert_id)
        },
    );

    let (s, b) = request(&fanout, "rcc", &alert.alert_id, id);
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["state"], "KZ");
    let request_id = b["request_id"].as_str().unwrap().to_string();
    wait_until(
        "the request pending at the gateway",
        Duration::from_secs(60),
        || {
            pending(&gw)
                .iter()
                .any(|r| r["request_id"] == request_id.as_str())
        },
    );
    let out = ewn(&[
        "requests",
        "approve",
        "--url",
        &format!("http://{}", gw.addr),
        "--token-file",
        site.dir.join("operator.token").to_str().unwrap(),
        &request_id,
    ]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = open(&net, &request_id, (&alert.alert_id, id), &rcc_key);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let opened: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(opened["decision"], "APPROVE");
    assert_eq!(opened["decided_by"], "kz-duty-officer");
    assert_eq!(
        opened["details"],
        line.as_str(),
        "the line the post sent, as the gateway kept it"
    );

    // The bundle of the processor's alert: its signed incident, the delivery, the request.
    let auditor = keys::generate();
    trust_service_key(&net.store, "audit-test", "audit", &auditor);
    let mut bundle = None;
    wait_until(
        "a bundle with the receipt and the request",
        Duration::from_secs(60),
        || {
            let b = ewn::cmd::audit::assemble(
                &net.settings,
                &alert.alert_id,
                &AuditSigner::new("audit-test", "audit", auditor.clone()),
                now_ms(),
                Duration::from_secs(60),
            )
            .unwrap();
            let whole = !b.receipts.is_empty() && b.cases.len() == 1;
            bundle = Some(b);
            whole
        },
    );
    let bundle = bundle.unwrap();
    assert_eq!(bundle.incidents.len(), 1);
    assert_eq!(bundle.cases[0].record.decision, "APPROVE");
    let text = serde_json::to_string(&bundle).unwrap();
    assert!(!text.contains("Ivanov"));
    let report = ewn::cmd::audit::verify(&text, &TrustStore::load(&net.store).unwrap(), now_ms());
    assert!(report.ok(), "{:#?}", report.failures());
    assert!(report.checks.iter().any(|c| c.check == "cases" && c.ok));
    drop(hooks);
    fanout.stop();
    gw.service.stop();
    processor.stop();
}
