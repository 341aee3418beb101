//! Issue 11, item 3, against a real broker (Tansu) and the real processor: gateways'
//! signed heartbeats, sent by the `ewn-gateway` heartbeat loop, are verified by the
//! processor, which raises `source_silent` on `<prefix>alerts` when a post stops and
//! cancels it when the post returns, raises and clears `source_backlog` as a post's oldest
//! unsent report crosses the threshold, and rejects and counts a forged heartbeat. The
//! fan-out delivers the operational alerts to the desk subscribed to those rules, and only
//! to it.
#![allow(clippy::unwrap_used)] // tests fail loudly on anything unexpected

mod common;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::hooks::{Hooks, fanout_config, start_fanout, webhook_sub};
use common::*;
use ewn_gateway::heartbeat::{self, HeartbeatConfig, HeartbeatMetrics, HeartbeatSettings};
use ewn_model::{Alert, AvroRecord, Heartbeat, MsgType, PostStatus, RejectReason, Tlp};
use ewn_processor::sources::{SOURCE_BACKLOG, SOURCE_SILENT, SourceSettings};
use ewn_testkit::{kafka_settings, unique_prefix};
use ewn_trust::{IncidentSigner, KeyEntry, TrustStore, keys};

const SILENT_AFTER_SECS: u64 = 3;
const BACKLOG_AFTER_SECS: u64 = 5;

/// A gateway's heartbeat loop, in this process, for one post.
type Gateway = InProcess<ewn_gateway::Error>;

fn gateway(
    net: &Net,
    signer: Arc<Mutex<IncidentSigner>>,
    gateway_id: &str,
    post: &str,
    oldest_unsent_ms: Arc<AtomicI64>,
) -> Gateway {
    let config = HeartbeatConfig {
        kafka: net.settings.clone(),
        state: "KZ".into(),
        gateway_id: gateway_id.into(),
        settings: HeartbeatSettings { interval_secs: 1 },
    };
    let post = post.to_string();
    in_process(move |registry, shutdown| async move {
        // A gateway at the post itself: it hears from the post all the time; its spool's
        // oldest unsent report is what the test sets (negative: nothing waiting).
        let figures = move |_now: i64| {
            let oldest = oldest_unsent_ms.load(Ordering::Relaxed);
            vec![PostStatus {
                post_id: post.clone(),
                spool_depth: if oldest >= 0 { 7 } else { 0 },
                spool_bytes: if oldest >= 0 { 7_000 } else { 0 },
                oldest_unsent_age_ms: (oldest >= 0).then_some(oldest),
                last_contact_age_ms: Some(0),
            }]
        };
        heartbeat::run(
            config,
            signer,
            figures,
            now_ms,
            Some(HeartbeatMetrics::register(&registry).unwrap()),
            None,
            shutdown,
        )
        .await
    })
}

fn find<'a>(alerts: &'a [Alert], rule: &str, key: &str, kind: MsgType) -> Vec<&'a Alert> {
    alerts
        .iter()
        .filter(|a| a.rule == rule && a.key == key && a.msg_type == kind)
        .collect()
}

/// Waits for the first message of `kind` for `rule` and `key` on the alerts topic.
fn wait_alert(net: &Net, rule: &str, key: &str, kind: MsgType, timeout: Duration) -> Alert {
    let mut found = None;
    wait_until(&format!("{kind} {rule} {key}"), timeout, || {
        found = find(&net.alerts(), rule, key, kind)
            .first()
            .cloned()
            .cloned();
        found.is_some()
    });
    found.unwrap()
}

#[test]
fn silent_and_backlogged_posts_raise_operational_alerts_and_cancel_when_they_recover() {
    let mut settings = kafka_settings(&unique_prefix("heartbeats"));
    settings.states = vec!["kz".into(), "kg".into()];
    let mut net = Net::on(settings);
    let key = keys::generate();
    TrustStore::append_to_file(
        &net.store,
        &KeyEntry {
            key_id: "kz-gateway".into(),
            state: "KZ".into(),
            public_key: ewn_trust::PublicKey::from(&key),
            not_before: now_ms() - HOUR,
            not_after: now_ms() + HOUR,
            revoked_at: None,
        },
    )
    .unwrap();
    let signer = Arc::new(Mutex::new(IncidentSigner::new("kz-gateway", key)));
    let mut config = net.config(300);
    config.process.sources = SourceSettings {
        silent_after_secs: SILENT_AFTER_SECS,
        backlog_after_secs: BACKLOG_AFTER_SECS,
        check_interval_ms: 100,
        ..SourceSettings::default()
    };
    // The operators' desk subscribes to the operational rules; another desk to a
    // correlation rule only.
    let hooks = Hooks::start();
    let mut ops = webhook_sub(&hooks, "ops-desk", "KZ-OPS", Tlp::Green);
    ops.rules = vec![SOURCE_SILENT.into(), SOURCE_BACKLOG.into()];
    let mut other = webhook_sub(&hooks, "other-desk", "KG-GKNB", Tlp::Amber);
    other.rules = vec!["area_burst".into()];
    let fanout = start_fanout(fanout_config(&net.settings, vec![ops, other]));
    let started_secs = now_ms() / 1000;
    let processor = start(config);

    // Every configured state has its last-seen series from the start, at the processor's
    // start (nothing heard yet), and the rejection counters are at 0.
    wait_until("the processor's series", Duration::from_secs(30), || {
        ewn_ops::metrics::render(&processor.registry)
            .contains("ewn_processor_source_last_seen_timestamp_seconds{state=\"KG\"}")
    });
    let kg_seen = processor.metric(
        "ewn_processor_source_last_seen_timestamp_seconds",
        "state=\"KG\"",
    ) as i64;
    assert!(
        (started_secs..=started_secs + 30).contains(&kg_seen),
        "{kg_seen} vs start {started_secs}"
    );
    let text = ewn_ops::metrics::render(&processor.registry);
    assert!(
        text.contains(
            "ewn_processor_heartbeats_rejected_total{reason=\"bad_signature\",state=\"KZ\"} 0"
        ),
        "rejection series initialised"
    );

    let no_backlog = || Arc::new(AtomicI64::new(-1));
    let a_backlog = no_backlog();
    let b_backlog = no_backlog();
    let gw_a = gateway(&net, signer.clone(), "kz-gw-a", "KZ-A", a_backlog.clone());
    let gw_b = gateway(&net, signer.clone(), "kz-gw-b", "KZ-B", b_backlog.clone());
    let post_seen = |post: &str| {
        processor.metric(
            "ewn_processor_source_post_last_seen_timestamp_seconds",
            &format!("post=\"{post}\""),
        ) as i64
    };
    wait_until("both posts heard from", Duration::from_secs(60), || {
        post_seen("KZ-A") >= started_secs && post_seen("KZ-B") >= started_secs
    });
    assert!(processor.metric("ewn_processor_heartbeats_verified_total", "state=\"KZ\"") >= 2.0);

    // KG never sends anything: silent after the configured time from the processor start.
    let kg = wait_alert(
        &net,
        SOURCE_SILENT,
        "state:KG",
        MsgType::Alert,
        Duration::from_secs(30),
    );
    assert_eq!(kg.states, ["KG"]);
    assert!(
        kg.reasons[0]
            .detail
            .contains("since this processor started")
    );

    // Post A stops.
    let stopped = now_ms();
    gw_a.stop();
    let silent = wait_alert(
        &net,
        SOURCE_SILENT,
        "post:KZ:KZ-A",
        MsgType::Alert,
        Duration::from_secs(30),
    );
    let silent_ms = SILENT_AFTER_SECS as i64 * 1000;
    // Raised once the configured time passed since it was last heard, and promptly then
    // (the check runs every 100 ms; the 10 s margin is for a loaded 2-core machine).
    assert!(
        silent.window_start <= stopped && silent.window_start > stopped - 2_000,
        "last heard {} ms before the stop",
        stopped - silent.window_start
    );
    assert_eq!(silent.window_end, silent.window_start + silent_ms);
    assert!(silent.created_at >= silent.window_start + silent_ms);
    assert!(
        silent.created_at < silent.window_start + silent_ms + 10_000,
        "raised {} ms after it became silent",
        silent.created_at - silent.window_end
    );
    assert_eq!(silent.states, ["KZ"]);
    assert!(silent.reasons[0].detail.contains("post KZ-A of KZ"));
    // The state is still heard through post B's gateway, and B is not silent.
    let alerts = net.alerts();
    assert!(find(&alerts, SOURCE_SILENT, "state:KZ", MsgType::Alert).is_empty());
    assert!(find(&alerts, SOURCE_SILENT, "post:KZ:KZ-B", MsgType::Alert).is_empty());

    // Post A comes back: the alert is cancelled.
    let gw_a = gateway(&net, signer.clone(), "kz-gw-a", "KZ-A", a_backlog.clone());
    let cancel = wait_alert(
        &net,
        SOURCE_SILENT,
        "post:KZ:KZ-A",
        MsgType::Cancel,
        Duration::from_secs(30),
    );
    assert_eq!(cancel.references, std::slice::from_ref(&silent.alert_id));
    assert!(cancel.reasons[0].detail.contains("heard from again"));

    // Post B's oldest unsent report crosses the threshold, then the spool drains.
    b_backlog.store(BACKLOG_AFTER_SECS as i64 * 1000 + 4_000, Ordering::Relaxed);
    let backlog = wait_alert(
        &net,
        SOURCE_BACKLOG,
        "post:KZ:KZ-B",
        MsgType::Alert,
        Duration::from_secs(30),
    );
    assert!(
        backlog.reasons[0].detail.contains("9 s old"),
        "{}",
        backlog.reasons[0].detail
    );
    wait_until("the backlog gauge", Duration::from_secs(10), || {
        processor.metric(
            "ewn_processor_source_post_oldest_unsent_age_seconds",
            "post=\"KZ-B\"",
        ) == 9.0
    });
    b_backlog.store(-1, Ordering::Relaxed);
    let cleared = wait_alert(
        &net,
        SOURCE_BACKLOG,
        "post:KZ:KZ-B",
        MsgType::Cancel,
        Duration::from_secs(30),
    );
    assert_eq!(cleared.references, std::slice::from_ref(&backlog.alert_id));

    // A forged heartbeat: the gateway's key id, another key. Rejected, counted, written to
    // the rejected topic, and the post it names is not tracked.
    let mut forger = IncidentSigner::new("kz-gateway", keys::generate());
    let forged = Heartbeat {
        state: "KZ".into(),
        gateway_id: "kz-gw-forged".into(),
        instance_id: "f0".into(),
        sequence: 0,
        sent_at: now_ms(),
        interval_ms: 1000,
        posts: vec![PostStatus {
            post_id: "KZ-FORGED".into(),
            spool_depth: 0,
            spool_bytes: 0,
            oldest_unsent_age_ms: None,
            last_contact_age_ms: Some(0),
        }],
    };
    let value = forger
        .sign_heartbeat(&forged, now_ms())
        .unwrap()
        .to_avro()
        .unwrap();
    let topic = net.topics().heartbeats("KZ");
    net.send(&topic, b"kz-gw-forged", &value);
    net.flush();
    let bad = "reason=\"bad_signature\",state=\"KZ\"";
    wait_until(
        "the forged heartbeat counted",
        Duration::from_secs(30),
        || processor.metric("ewn_processor_heartbeats_rejected_total", bad) == 1.0,
    );
    let rejected: Vec<_> = net
        .rejections()
        .into_iter()
        .filter(|r| r.topic == topic)
        .collect();
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].reason, RejectReason::BadSignature);
    assert_eq!(rejected[0].key_id.as_deref(), Some("kz-gateway"));
    assert!(
        !ewn_ops::metrics::render(&processor.registry).contains("KZ-FORGED"),
        "a forged heartbeat tracks nothing"
    );

    // The fan-out delivered each of those messages to the operators' desk, none to the
    // other desk.
    let expected = [
        &silent.alert_id,
        &cancel.alert_id,
        &backlog.alert_id,
        &cleared.alert_id,
        &kg.alert_id,
    ];
    wait_until(
        "deliveries to the operators' desk",
        Duration::from_secs(60),
        || {
            let got: Vec<String> = hooks
                .delivered("ops-desk")
                .iter()
                .map(|h| h.alert_id())
                .collect();
            expected.iter().all(|id| got.contains(id))
        },
    );
    assert!(hooks.delivered("other-desk").is_empty());

    // Nothing was raised twice.
    let alerts = net.alerts();
    for (rule, key) in [
        (SOURCE_SILENT, "post:KZ:KZ-A"),
        (SOURCE_BACKLOG, "post:KZ:KZ-B"),
    ] {
        assert_eq!(
            find(&alerts, rule, key, MsgType::Alert).len(),
            1,
            "{rule} {key}"
        );
        assert_eq!(
            find(&alerts, rule, key, MsgType::Cancel).len(),
            1,
            "{rule} {key}"
        );
    }
    let deadline = Instant::now();
    gw_a.stop();
    gw_b.stop();
    processor.stop();
    fanout.stop();
    assert!(
        deadline.elapsed() < Duration::from_secs(30),
        "stopped promptly"
    );
}

/// The real `ewn gateway` service: its heartbeats name every post of its tokens file with
/// the post's last contact, so a post that never reaches it goes silent while the gateway
/// itself beats, and an empty `POST` (a post with nothing to report) brings it back.
#[test]
fn a_gateway_reports_a_quiet_post_silent_until_it_calls_in() {
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;

    let mut settings = kafka_settings(&unique_prefix("gw-heartbeats"));
    settings.states = vec!["kz".into()];
    let net = Net::on(settings);
    let key = keys::generate();
    TrustStore::append_to_file(
        &net.store,
        &KeyEntry {
            key_id: "kz-gw".into(),
            state: "KZ".into(),
            public_key: ewn_trust::PublicKey::from(&key),
            not_before: now_ms() - HOUR,
            not_after: now_ms() + HOUR,
            revoked_at: None,
        },
    )
    .unwrap();
    let d = net.dir.path();
    let pem = key.to_pkcs8_pem(LineEnding::LF).unwrap();
    ewn_trust::secret::write_secret(
        &d.join("kz-gw.key"),
        &format!("key_id = kz-gw\n{}", pem.as_str()),
    )
    .unwrap();
    blinding().save(&d.join("gw-blinding.key")).unwrap();
    let token = |post: &str| format!("token-of-{post}-0123456789abcdef");
    let mut tokens = String::new();
    for post in ["KZ-BUSY", "KZ-QUIET"] {
        let hash = hex::encode(ewn_ops::tokens::token_hash(&token(post)));
        tokens.push_str(&format!(
            "[[tokens]]\nname = \"{post}\"\npost_id = \"{post}\"\nsha256 = \"{hash}\"\n"
        ));
    }
    ewn_trust::secret::write_secret(&d.join("gw-tokens.toml"), &tokens).unwrap();
    let mut g = ewn_gateway::GatewaySettings {
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        state: "KZ".into(),
        signing_key_file: Some(d.join("kz-gw.key")),
        blinding_key_file: Some(d.join("gw-blinding.key")),
        tokens_file: Some(d.join("gw-tokens.toml")),
        ..ewn_gateway::GatewaySettings::default()
    };
    g.spool.path = Some(d.join("gw-spool.db"));
    g.heartbeat.interval_secs = 1;

    let mut config = net.config(300);
    config.process.sources = SourceSettings {
        silent_after_secs: SILENT_AFTER_SECS,
        backlog_after_secs: BACKLOG_AFTER_SECS,
        check_interval_ms: 100,
        ..SourceSettings::default()
    };
    let processor = start(config);
    let kafka = net.settings.clone();
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let gateway: InProcess<ewn_gateway::Error> = in_process(move |registry, shutdown| async move {
        let running = ewn_gateway::start(
            ewn_gateway::GatewayConfig::new(kafka, Default::default(), g),
            &registry,
            Arc::new(ewn_ops::http::Health::default()),
            shutdown,
        )
        .await?;
        addr_tx.send(running.addr).unwrap();
        running.task.await.unwrap()
    });
    let addr = addr_rx.recv_timeout(Duration::from_secs(60)).unwrap();
    let post = |who: &str, body: String| {
        reqwest::blocking::Client::new()
            .post(format!("http://{addr}/api/v1/incidents"))
            .bearer_auth(token(who))
            .body(body)
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    // The busy post reports; the quiet one never calls.
    let line = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../schemas/examples/valid.jsonl"
    ))
    .unwrap()
    .lines()
    .next()
    .unwrap()
    .replace("KZ-KHORGOS-01", "KZ-BUSY");
    assert_eq!(post("KZ-BUSY", line), 202);
    // ... and keeps calling in (an empty POST every 300 ms: nothing to report).
    let calling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let busy = {
        let calling = calling.clone();
        let url = format!("http://{addr}/api/v1/incidents");
        let t = token("KZ-BUSY");
        std::thread::spawn(move || {
            let client = reqwest::blocking::Client::new();
            while calling.load(Ordering::Relaxed) {
                let _ = client.post(&url).bearer_auth(&t).send();
                std::thread::sleep(Duration::from_millis(300));
            }
        })
    };
    let silent = wait_alert(
        &net,
        SOURCE_SILENT,
        "post:KZ:KZ-QUIET",
        MsgType::Alert,
        Duration::from_secs(60),
    );
    assert!(
        silent.reasons[0].detail.contains("post KZ-QUIET of KZ"),
        "{}",
        silent.reasons[0].detail
    );
    // The gateway beats and the busy post called in: neither the state nor it is silent.
    let alerts = net.alerts();
    assert!(find(&alerts, SOURCE_SILENT, "state:KZ", MsgType::Alert).is_empty());
    assert!(find(&alerts, SOURCE_SILENT, "post:KZ:KZ-BUSY", MsgType::Alert).is_empty());
    assert!(
        gateway.metric("ewn_gateway_heartbeats_total", "outcome=\"confirmed\"") >= 1.0,
        "heartbeats confirmed"
    );
    // The quiet post calls in with nothing to report: heard again, the alert is cancelled.
    assert_eq!(post("KZ-QUIET", String::new()), 422);
    let cancel = wait_alert(
        &net,
        SOURCE_SILENT,
        "post:KZ:KZ-QUIET",
        MsgType::Cancel,
        Duration::from_secs(60),
    );
    assert_eq!(cancel.references, std::slice::from_ref(&silent.alert_id));
    calling.store(false, Ordering::Relaxed);
    busy.join().unwrap();
    gateway.stop();
    drop(processor);
}
