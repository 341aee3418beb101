//! Issue 3 against a real broker (Tansu): `ewn process` verifies, scores and correlates.
#![allow(clippy::unwrap_used)] // tests fail loudly on anything unexpected

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

use common::proc::Proc;
use common::*;
use ewn_model::{AvroRecord, Category, Direction, Level, MsgType, RejectReason};
use ewn_processor::correlate::alert_id;
use ewn_processor::rules::{default_rules, seizure_then_crossing};
use ewn_testkit::{broker, free_port};

#[test]
fn distinct_fires_on_two_states_and_not_on_its_near_misses() {
    let mut net = Net::new("distinct");
    let p = start(net.config(100 * 3600));
    let base = now_ms() - 74 * HOUR;
    let incidents = vec![
        incident(1, "KZ", base, Category::SuspiciousCrossing, &["mover"]),
        incident(
            2,
            "KG",
            base + 10 * HOUR,
            Category::SuspiciousCrossing,
            &["mover"],
        ),
        // near miss: the same state twice
        incident(3, "KZ", base, Category::SuspiciousCrossing, &["stayer"]),
        incident(
            4,
            "KZ",
            base + 5 * HOUR,
            Category::SuspiciousCrossing,
            &["stayer"],
        ),
        // near miss: the window exceeded by a minute
        incident(5, "KZ", base, Category::SuspiciousCrossing, &["slow"]),
        incident(
            6,
            "KG",
            base + 72 * HOUR + MIN,
            Category::SuspiciousCrossing,
            &["slow"],
        ),
    ];
    net.publish(&incidents);
    p.wait_correlated(rekeyed_count(&incidents));
    let alerts = net.alerts();
    let cross: Vec<_> = alerts
        .iter()
        .filter(|a| a.rule == "cross_border_movement")
        .collect();
    assert_eq!(cross.len(), 1, "{cross:?}");
    let a = cross[0];
    assert_eq!(
        a.alert_id,
        alert_id(
            "cross_border_movement",
            &format!("subject:{}", subject_ref("mover")),
            base
        )
    );
    assert_eq!(a.states, ["KG", "KZ"]);
    assert_eq!(a.level, Level::High);
    assert_eq!(
        a.reasons.iter().map(|r| r.contribution).sum::<i32>(),
        a.score
    );
    assert!(a.reasons.iter().any(|r| r.factor == "corroboration"));
    assert_eq!(a.evidence.len(), 2, "the signed evidence of both reports");
    assert!(
        a.evidence
            .iter()
            .all(|e| e.topic.starts_with(&net.prefix) && e.signature != [0; 64])
    );
    // `ewn tail --topic alerts` shows it, decoded.
    let count = alerts.len().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_ewn"))
        .args([
            "tail",
            "--topic",
            "alerts",
            "--from-beginning",
            "--count",
            &count,
            "--timeout-secs",
            "60",
        ])
        .args(["--brokers", &broker().addr, "--topic-prefix", &net.prefix])
        .env("EWN__LOG__LEVEL", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let tailed = shown
        .iter()
        .find(|r| r["value"]["rule"] == "cross_border_movement")
        .unwrap();
    assert_eq!(tailed["schema"], "Alert");
    assert_eq!(tailed["value"]["alert_id"], a.alert_id.as_str());
    assert_eq!(tailed["value"]["msg_type"], "ALERT");
    assert!(
        tailed["value"]["window_start"]
            .as_str()
            .unwrap()
            .ends_with('Z'),
        "times are RFC 3339"
    );
    p.stop();
}

#[test]
fn threshold_fires_on_a_burst_and_not_a_minute_late() {
    let mut net = Net::new("threshold");
    let p = start(net.config(100 * 3600));
    let base = now_ms() - 3 * HOUR;
    let mut incidents = Vec::new();
    for n in 0..5 {
        let i = incident(
            10 + n,
            "KZ",
            base + n as i64 * 10 * MIN,
            Category::DocumentFraud,
            &[&format!("b{n}")],
        );
        incidents.push(in_area(i, "KZ-ALA"));
    }
    for n in 0..5 {
        // the fifth falls one minute outside the hour
        let t = if n == 4 {
            base + 61 * MIN
        } else {
            base + n as i64 * 10 * MIN
        };
        let i = incident(
            20 + n,
            "KZ",
            t,
            Category::DocumentFraud,
            &[&format!("c{n}")],
        );
        incidents.push(in_area(i, "KZ-OSH"));
    }
    // below the MEDIUM filter: these would make a burst of LOW incidents
    for n in 0..5 {
        let mut i = incident(
            30 + n,
            "KZ",
            base + n as i64 * MIN,
            Category::Other,
            &[&format!("d{n}")],
        );
        i.severity = Level::Low;
        i.source_reliability = ewn_model::SourceReliability::E;
        incidents.push(in_area(i, "KZ-TRZ"));
    }
    net.publish(&incidents);
    p.wait_correlated(rekeyed_count(&incidents));
    let alerts = net.alerts();
    let bursts: Vec<_> = alerts.iter().filter(|a| a.rule == "area_burst").collect();
    assert_eq!(bursts.len(), 1, "{bursts:?}");
    assert_eq!(bursts[0].key, "area:KZ-ALA");
    assert_eq!(bursts[0].incident_ids.len(), 5);
    assert_eq!(
        bursts[0].alert_id,
        alert_id("area_burst", "area:KZ-ALA", base)
    );
    p.stop();
}

#[test]
fn sequence_fires_on_a_then_b_and_not_b_then_a() {
    let mut net = Net::new("sequence");
    let mut config = net.config(100 * 3600);
    config.process.rules = vec![seizure_then_crossing()];
    let p = start(config);
    let base = now_ms() - 2 * HOUR;
    let incidents = vec![
        incident(1, "KZ", base, Category::WeaponsSeizure, &["armed"]),
        incident(
            2,
            "KG",
            base + 10 * MIN,
            Category::SuspiciousCrossing,
            &["armed"],
        ),
        // near miss: B before A
        incident(3, "KZ", base, Category::SuspiciousCrossing, &["reversed"]),
        incident(
            4,
            "KG",
            base + 10 * MIN,
            Category::WeaponsSeizure,
            &["reversed"],
        ),
    ];
    net.publish(&incidents);
    p.wait_correlated(rekeyed_by_subject(&incidents));
    let live = live_rules(&net.alerts());
    assert_eq!(live.get("seizure_then_crossing"), Some(&1), "{live:?}");
    let ids = live_ids(&net.alerts());
    assert!(ids.contains(&alert_id(
        "seizure_then_crossing",
        &format!("subject:{}", subject_ref("armed")),
        base
    )));
    p.stop();
}

#[test]
fn absence_fires_on_an_unexplained_exit_and_not_when_an_entry_follows() {
    let mut net = Net::new("absence");
    let mut config = net.config(30);
    config.process.idle_watermark_secs = 1;
    let mut rules = default_rules();
    for r in &mut rules {
        if r.name == "exit_without_entry" {
            r.window_secs = 10;
        }
    }
    config.process.rules = rules;
    let p = start(config);
    let t = now_ms() - 60_000;
    let incidents = vec![
        at_crossing(
            incident(1, "KZ", t, Category::SuspiciousCrossing, &["vanished"]),
            Direction::Exit,
        ),
        at_crossing(
            incident(2, "KZ", t, Category::SuspiciousCrossing, &["arrived"]),
            Direction::Exit,
        ),
        at_crossing(
            incident(
                3,
                "KG",
                t + 5_000,
                Category::SuspiciousCrossing,
                &["arrived"],
            ),
            Direction::Entry,
        ),
    ];
    net.publish(&incidents);
    p.wait_correlated(rekeyed_count(&incidents));
    let want = alert_id(
        "exit_without_entry",
        &format!("subject:{}", subject_ref("vanished")),
        t,
    );
    wait_until("the absence alert", Duration::from_secs(60), || {
        live_ids(&net.alerts()).contains(&want)
    });
    let live = live_rules(&net.alerts());
    assert_eq!(
        live.get("exit_without_entry"),
        Some(&1),
        "only the unexplained exit: {live:?}"
    );
    p.stop();
}

/// A scenario with all four default stateful patterns, in event-time order.
fn scenario(base: i64) -> Vec<ewn_model::Incident> {
    let mut v = vec![
        incident(
            100,
            "KZ",
            base,
            Category::SuspiciousCrossing,
            &["traveller"],
        ),
        incident(
            101,
            "KG",
            base + 20 * MIN,
            Category::SuspiciousCrossing,
            &["traveller"],
        ),
        incident(
            102,
            "TJ",
            base + 40 * MIN,
            Category::SuspiciousCrossing,
            &["traveller"],
        ),
    ];
    for n in 0..6 {
        v.push(in_area(
            incident(
                110 + n,
                "UZ",
                base + n as i64 * 5 * MIN,
                Category::DocumentFraud,
                &[&format!("u{n}")],
            ),
            "UZ-TK",
        ));
    }
    v.sort_by_key(|i| i.occurred_at);
    v
}

#[test]
fn out_of_order_within_lateness_gives_the_same_alerts() {
    let base = now_ms() - 2 * HOUR;
    let in_order = scenario(base);
    let mut shuffled = in_order.clone();
    shuffled.reverse();
    shuffled.rotate_left(3);
    let mut runs = Vec::new();
    for (name, incidents) in [("inorder", &in_order), ("shuffled", &shuffled)] {
        let mut net = Net::new(name);
        let p = start(net.config(2 * 3600));
        for i in incidents.iter() {
            // one at a time, so the arrival order is the given order
            net.publish(std::slice::from_ref(i));
        }
        p.wait_correlated(rekeyed_count(incidents));
        runs.push(live_ids(&net.alerts()));
        p.stop();
    }
    assert_eq!(runs[0], runs[1]);
    assert_eq!(
        runs[0].len(),
        2,
        "one cross-border and one burst alert: {:?}",
        runs[0]
    );
}

#[test]
fn an_event_beyond_the_lateness_is_counted_and_reported() {
    let mut net = Net::new("late");
    let p = start(net.config(300));
    let base = now_ms() - 5 * HOUR;
    let first = vec![incident(
        1,
        "KZ",
        base + 2 * HOUR,
        Category::SuspiciousCrossing,
        &["x"],
    )];
    net.publish(&first);
    p.wait_correlated(rekeyed_count(&first));
    let late = vec![incident(
        2,
        "KG",
        base,
        Category::SuspiciousCrossing,
        &["x"],
    )];
    net.publish(&late);
    p.wait_correlated(rekeyed_count(&first) + rekeyed_count(&late));
    assert!(
        p.metric(
            "ewn_processor_late_events_total",
            "rule=\"cross_border_movement\""
        ) >= 1.0
    );
    assert!(
        net.alerts()
            .iter()
            .all(|a| a.rule != "cross_border_movement"),
        "not merged"
    );
    let reports: Vec<_> = net
        .rejections()
        .into_iter()
        .filter(|r| r.reason == RejectReason::Late)
        .collect();
    assert!(!reports.is_empty());
    assert_eq!(
        reports[0].incident_id.as_deref(),
        Some(late[0].incident_id.as_str())
    );
    p.stop();
}

fn expected_ids(base: i64) -> BTreeSet<String> {
    [
        alert_id(
            "cross_border_movement",
            &format!("subject:{}", subject_ref("traveller")),
            base,
        ),
        alert_id("area_burst", "area:UZ-TK", base),
    ]
    .into()
}

#[test]
fn two_instances_yield_the_same_alert_ids_as_one() {
    let mut net = Net::new("twoinst");
    let a = start(net.config(2 * 3600));
    let b = start(net.config(2 * 3600));
    let base = now_ms() - 2 * HOUR;
    let incidents = scenario(base);
    net.publish(&incidents);
    // The instances' counters are no measure of completion here: a rebalance between them
    // replays records, which both count. The alerts themselves are.
    let expected = expected_ids(base);
    wait_until(
        "both instances to raise the expected alerts",
        Duration::from_secs(90),
        || live_ids(&net.alerts()).is_superset(&expected),
    );
    assert_eq!(live_ids(&net.alerts()), expected);
    a.stop();
    b.stop();
}

/// `ewn process` as a child process, its metrics on `admin`.
fn spawn_process(net: &Net, admin: &str) -> Proc {
    let args: Vec<String> = [
        "process",
        "--trust-store",
        net.store.to_str().unwrap(),
        "--admin-listen",
        admin,
        "--brokers",
        &broker().addr,
        "--topic-prefix",
        &net.prefix,
    ]
    .map(String::from)
    .to_vec();
    let envs: Vec<(String, String)> = [
        ("EWN__PROCESS__ALLOWED_LATENESS_SECS", "7200".to_string()),
        ("EWN__PROCESS__BATCH_WAIT_MS", "10".into()),
        ("EWN__KAFKA__STATISTICS_INTERVAL_MS", "0".into()),
        (
            "EWN__LOG__LEVEL",
            std::env::var("EWN_TEST_LOG").unwrap_or_else(|_| "warn".into()),
        ),
    ]
    .map(|(k, v)| (k.to_string(), v))
    .to_vec();
    Proc::ewn(&args, &envs, None)
}

fn scrape(admin: &str, name: &str) -> f64 {
    let out = Command::new("curl")
        .args(["-s", &format!("http://{admin}/metrics")])
        .output();
    out.map(|o| metric(&String::from_utf8_lossy(&o.stdout), name, ""))
        .unwrap_or(0.0)
}

#[test]
fn sigkill_mid_window_and_restart_yields_the_same_alert_ids() {
    let mut net = Net::new("sigkill");
    let base = now_ms() - 2 * HOUR;
    let incidents = scenario(base);
    // Kill after the first half: the burst and the cross-border windows are both open.
    let (first, second) = incidents.split_at(incidents.len() / 2);
    let admin = format!("127.0.0.1:{}", free_port());
    let mut child = spawn_process(&net, &admin);
    net.publish(first);
    wait_until(
        "the first half to be correlated",
        Duration::from_secs(90),
        || scrape(&admin, "ewn_processor_correlated_events_total") >= rekeyed_count(first) as f64,
    );
    let before = live_ids(&net.alerts());
    child.sigkill();

    let admin = format!("127.0.0.1:{}", free_port());
    let mut child = spawn_process(&net, &admin);
    net.publish(second);
    let want = expected_ids(base);
    let mut last = BTreeSet::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while last != want && std::time::Instant::now() < deadline {
        last = live_ids(&net.alerts());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        last, want,
        "every alert after the restart (before the kill: {before:?})"
    );
    child.sigkill();
    eprintln!("live after restart: {last:?}");
    assert!(before.is_subset(&want), "nothing different before the kill");
    let all: BTreeSet<String> = net
        .alerts()
        .iter()
        .filter(|a| a.msg_type == MsgType::Alert)
        .map(|a| a.alert_id.clone())
        .collect();
    assert_eq!(
        all, want,
        "no alert id beyond those of an uninterrupted run"
    );
}

#[test]
fn a_hostile_burst_is_rejected_by_reason_while_valid_traffic_flows() {
    let mut net = Net::new("hostile");
    let p = start(net.config(2 * 3600));
    let base = now_ms() - HOUR;
    let topics = net.topics();
    let (kz, kg) = (topics.incidents("kz"), topics.incidents("kg"));
    let victim = incident(900, "KZ", base, Category::SuspiciousCrossing, &["replayed"]);
    let victim_bytes = net
        .signer("KZ")
        .sign(&victim, victim.reported_at)
        .unwrap()
        .to_avro()
        .unwrap();
    net.send(&kz, b"v", &victim_bytes);
    for n in 0..1000u64 {
        let i = incident(1000 + n, "KZ", base, Category::Other, &[&format!("h{n}")]);
        match n % 4 {
            0 => {
                let mut env = net.signer("KZ").sign(&i, i.reported_at).unwrap();
                env.payload[20 + (n as usize % 50)] ^= 0x10;
                net.send(&kz, b"h", &env.to_avro().unwrap());
            }
            1 => {
                // a Kyrgyz key signing a Kazakh report, on either topic
                let bytes = net
                    .signer("KG")
                    .sign(&i, i.reported_at)
                    .unwrap()
                    .to_avro()
                    .unwrap();
                net.send(if n % 8 == 1 { &kz } else { &kg }, b"h", &bytes);
            }
            2 => net.send(&kz, b"v", &victim_bytes),
            _ => net.send(&kz, b"h", format!("\u{c3}\u{01}garbage {n}").as_bytes()),
        }
    }
    net.flush();
    // valid traffic beside it
    let valid = vec![
        incident(
            2000,
            "KZ",
            base + MIN,
            Category::SuspiciousCrossing,
            &["honest"],
        ),
        incident(
            2001,
            "KG",
            base + 2 * MIN,
            Category::SuspiciousCrossing,
            &["honest"],
        ),
    ];
    net.publish(&valid);
    p.wait_correlated(rekeyed_count(&valid) + rekeyed_count(&[victim]));
    wait_until(
        "every hostile record rejected",
        Duration::from_secs(60),
        || net.rejections().len() >= 1000,
    );
    let mut by_reason: BTreeMap<String, usize> = BTreeMap::new();
    for r in net.rejections() {
        *by_reason.entry(r.reason.code()).or_default() += 1;
    }
    let want: BTreeMap<String, usize> = [
        ("bad_signature", 250),
        ("topic_mismatch", 125),
        ("key_state_mismatch", 125),
        ("duplicate", 250),
        ("undecodable", 250),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(by_reason, want);
    let honest = alert_id(
        "cross_border_movement",
        &format!("subject:{}", subject_ref("honest")),
        base + MIN,
    );
    assert!(
        live_ids(&net.alerts()).contains(&honest),
        "valid traffic still correlated"
    );
    assert_eq!(
        p.metric("ewn_processor_incidents_rejected_total", ""),
        1000.0
    );
    p.stop();
}

#[test]
fn a_member_state_topic_created_later_is_picked_up() {
    let mut net = Net::new("newtopic");
    let p = start(net.config(3600));
    // Afghanistan joins the network after the processor started: its topic, its key.
    let topics = net.topics();
    let spec = ewn_kafka::TopicSpec {
        name: topics.incidents("af"),
        partitions: 1,
        compacted: false,
    };
    block_on(ewn_kafka::admin::ensure_topics(&net.settings, &[spec])).unwrap();
    let key = ewn_trust::keys::generate();
    let now = now_ms();
    ewn_trust::TrustStore::append_to_file(
        &net.store,
        &ewn_trust::KeyEntry {
            key_id: "af-test".into(),
            state: "AF".into(),
            public_key: ewn_trust::PublicKey::from(&key),
            not_before: now - HOUR,
            not_after: now + HOUR,
            revoked_at: None,
        },
    )
    .unwrap();
    // the trust store reloads within a second (reload_interval_secs = 1)
    let mut signer = ewn_trust::IncidentSigner::new("af-test", key);
    let mut i = incident(1, "AF", now - MIN, Category::FtfReturnee, &["returnee"]);
    i.reporter.state = "AF".into();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut tries = 0;
    wait_until(
        "the new topic's incident to be verified",
        Duration::from_secs(120),
        || {
            tries += 1;
            if Instant::now() > deadline {
                let mut reasons = std::collections::BTreeMap::new();
                for r in net.rejections() {
                    *reasons.entry(r.reason.code()).or_insert(0) += 1;
                }
                panic!(
                    "after {tries} tries: received AF {}, rejections {reasons:?}\n{}",
                    p.metric("ewn_processor_incidents_received_total", "state=\"AF\""),
                    ewn_ops::metrics::render(&p.registry)
                        .lines()
                        .filter(|l| l.contains("assigned") || l.contains("received_total"))
                        .collect::<Vec<_>>()
                        .join("\n")
                );
            }
            // re-sent until the processor knows both the topic and the key; later copies are
            // rejected as duplicates, which is fine here
            let value = signer.sign(&i, i.reported_at).unwrap().to_avro().unwrap();
            net.send(&topics.incidents("af"), b"af", &value);
            net.flush();
            std::thread::sleep(Duration::from_millis(500));
            p.metric("ewn_processor_incidents_verified_total", "state=\"AF\"") >= 1.0
        },
    );
    wait_until("its alert", Duration::from_secs(30), || {
        net.alerts().iter().any(|a| a.rule == "ftf_returnee")
    });
    p.stop();
}

#[test]
fn rules_reload_without_a_restart() {
    let mut net = Net::new("reload");
    let rules_file = net.dir.path().join("rules.toml");
    let write_rules = |extra: &str| {
        let text = format!(
            "{}\n{extra}",
            include_str!("../deploy/config/rules.default.toml")
        );
        std::fs::write(&rules_file, text).unwrap();
    };
    write_rules("");
    let mut config = net.config(3600);
    config.process.rules_file = Some(rules_file.clone());
    let p = start(config);
    let base = now_ms() - HOUR;
    let first = vec![incident(1, "KZ", base, Category::Cyber, &["hacker"])];
    net.publish(&first);
    p.wait_correlated(rekeyed_count(&first));
    assert!(
        net.alerts().is_empty(),
        "no rule for a single cyber incident yet"
    );
    // A new rule: any CYBER incident is an immediate alert.
    std::thread::sleep(Duration::from_millis(1100)); // a visibly newer modification time
    write_rules(
        "[[rules]]\nname = \"any_cyber\"\nkind = \"threshold\"\ngroup_by = \"incident\"\nwindow_secs = 0\nlevel = \"MEDIUM\"\nfilter = { categories = [\"CYBER\"] }\n",
    );
    wait_until("the reload", Duration::from_secs(30), || {
        p.metric("ewn_processor_rule_reloads_total", "outcome=\"ok\"") >= 1.0
    });
    let second = vec![incident(2, "KZ", base + MIN, Category::Cyber, &["hacker2"])];
    net.publish(&second);
    wait_until(
        "an alert from the new rule",
        Duration::from_secs(30),
        || net.alerts().iter().any(|a| a.rule == "any_cyber"),
    );
    // A broken file is refused and the rules in force stay.
    std::fs::write(&rules_file, "[[rules]]\nname = \"broken\"\n").unwrap();
    wait_until("the refused reload", Duration::from_secs(30), || {
        p.metric("ewn_processor_rule_reloads_total", "outcome=\"error\"") >= 1.0
    });
    let third = vec![incident(
        3,
        "KZ",
        base + 2 * MIN,
        Category::Cyber,
        &["hacker3"],
    )];
    net.publish(&third);
    wait_until("the rule still in force", Duration::from_secs(30), || {
        net.alerts()
            .iter()
            .filter(|a| a.rule == "any_cyber")
            .count()
            == 2
    });
    p.stop();
}
