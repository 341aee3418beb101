//! `ewn demo` end to end, as a newcomer runs it: the real binary, its own local broker,
//! the simulated network, the processor, the fan-out and two desks, and the case request
//! about KZ's watch-list hit (request, approval, opening, the verified audit bundle).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const TLPS: [&str; 5] = ["CLEAR", "GREEN", "AMBER", "AMBER_STRICT", "RED"];

fn rank(tlp: &str) -> usize {
    TLPS.iter()
        .position(|t| *t == tlp)
        .unwrap_or_else(|| panic!("unknown TLP {tlp}"))
}

/// Runs the demo for `secs` with `scenarios`; returns its summary and its output.
fn run_demo(dir: &Path, secs: u64, scenarios: &str) -> (Value, String) {
    let summary = dir.join("summary.json");
    let out = Command::new(env!("CARGO_BIN_EXE_ewn"))
        .args([
            "demo",
            "--duration",
            &secs.to_string(),
            "--scenarios",
            scenarios,
            "--summary-json",
            summary.to_str().unwrap(),
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "ewn demo failed ({}):\n{text}",
        out.status
    );
    let summary: Value = serde_json::from_slice(&std::fs::read(&summary).unwrap())
        .unwrap_or_else(|e| panic!("summary: {e}\n{text}"));
    (summary, text)
}

/// Nothing of the demo is left: every port it used is free again and no broker runs
/// from its directory.
fn assert_nothing_left(summary: &Value, output: &str) {
    let ports: Vec<u16> = summary["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_u64().unwrap() as u16)
        .collect();
    assert_eq!(
        ports.len(),
        5,
        "broker, receiver, two metrics servers, console"
    );
    for port in ports {
        assert!(
            TcpListener::bind(("127.0.0.1", port)).is_ok(),
            "port {port} still bound after the demo ended\n{output}"
        );
    }
    let broker_dir = output
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("broker")?
                .split('(')
                .nth(1)?
                .split(", ")
                .nth(1)
        })
        .map(|d| d.trim_end_matches(')').to_string())
        .unwrap_or_else(|| panic!("the demo did not print its broker directory\n{output}"));
    assert!(!Path::new(&broker_dir).exists(), "{broker_dir} left behind");
    // No process runs from the broker's directory or with the demo's arguments.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let ps = Command::new("ps").args(["-eo", "args"]).output().unwrap();
        let ps = String::from_utf8_lossy(&ps.stdout);
        let left: Vec<&str> = ps
            .lines()
            .filter(|l| {
                l.contains(&broker_dir)
                    || (l.contains("tansu") && l.contains(&summary_port(summary)))
            })
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "processes left: {left:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn summary_port(summary: &Value) -> String {
    format!("127.0.0.1:{}", summary["ports"][0])
}

#[test]
fn every_planted_scenario_alerts_and_reaches_exactly_the_cleared_desks() {
    let dir = tempfile::tempdir().unwrap();
    let (summary, output) = run_demo(dir.path(), 60, "all");
    eprintln!("{output}");
    let desks = summary["desks"].as_object().unwrap().clone();
    assert_eq!(desks.len(), 2);
    let clearances: BTreeSet<&str> = desks.values().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(clearances.len(), 2, "the desks hold different clearances");
    let scenarios = summary["scenarios"].as_array().unwrap();
    let rules: BTreeSet<&str> = scenarios
        .iter()
        .map(|s| s["rule"].as_str().unwrap())
        .collect();
    assert_eq!(
        rules,
        BTreeSet::from([
            "cross_border_movement",
            "area_burst",
            "watchlist_hit",
            "exit_without_entry",
            "ftf_returnee"
        ]),
        "one planted scenario per default rule"
    );
    let mut withheld_somewhere = false;
    for s in scenarios {
        let name = s["scenario"].as_str().unwrap();
        assert!(
            s["alert_id"].is_string(),
            "scenario {name} raised no alert\n{output}"
        );
        let tlp = s["tlp"].as_str().unwrap();
        let received: BTreeSet<&str> = s["received_by"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_str().unwrap())
            .collect();
        // Cleared: the desk's clearance is at least the alert's TLP (the demo's alerts are
        // never AMBER_STRICT or RED, which need naming).
        assert!(rank(tlp) <= rank("AMBER"), "{name}: {tlp}");
        let cleared: BTreeSet<&str> = desks
            .iter()
            .filter(|(_, c)| rank(tlp) <= rank(c.as_str().unwrap()))
            .map(|(d, _)| d.as_str())
            .collect();
        assert_eq!(received, cleared, "scenario {name} (TLP:{tlp})\n{output}");
        withheld_somewhere |= cleared.len() < desks.len();
    }
    assert!(
        withheld_somewhere,
        "some planted alert is above one desk's clearance"
    );
    // The case request about KZ's watch-list hit went through, each step checked by the
    // demo as it ran: the details opened are the line the post sent, the bundle verified.
    let case = &summary["case"];
    assert_eq!(case["failed"], Value::Null, "{case}\n{output}");
    assert_eq!(
        case["done"],
        serde_json::json!([
            "reported",
            "delivered",
            "requested",
            "pending",
            "approved",
            "opened",
            "verified"
        ]),
        "{case}\n{output}"
    );
    assert_eq!(case["desk"], "rcc-desk");
    assert_eq!(case["decided_by"], "kz-duty-officer");
    assert_eq!(case["recipient_key_id"], "rcc-x25519");
    assert_eq!(case["details_match_report"], true);
    assert!(
        case["revealed_fields"]
            .as_array()
            .unwrap()
            .contains(&Value::from("subjects")),
        "{case}"
    );
    assert_eq!(case["bundle"]["case requests"], 1, "{case}");
    assert!(case["checks_passed"].as_u64().unwrap() >= 5, "{case}");
    assert_eq!(case["checks_failed"], 0, "{case}");
    let case_alert = case["alert_id"].as_str().unwrap();
    let a = summary["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["alert_id"] == case_alert)
        .unwrap_or_else(|| panic!("no alert {case_alert} in the summary"));
    assert_eq!(a["rule"], "watchlist_hit");
    assert_eq!(a["states"], serde_json::json!(["KZ"]));
    for step in ["requested", "approved", "opened", "verified"] {
        assert!(
            output.contains(&format!("\n   {step:<10} ")),
            "the demo did not say `{step}`\n{output}"
        );
    }
    // The details reached the desk only: the raw name is nowhere in the output.
    assert!(!output.contains("NURLANOV"), "{output}");
    // Nothing else alerted: every alert belongs to a planted scenario or the case request.
    let planted: BTreeSet<&str> = scenarios
        .iter()
        .map(|s| s["alert_id"].as_str().unwrap())
        .chain([case_alert])
        .collect();
    for a in summary["alerts"].as_array().unwrap() {
        let ok = if a["msg_type"] == "ALERT" {
            planted.contains(a["alert_id"].as_str().unwrap())
        } else {
            a["references"]
                .as_array()
                .unwrap()
                .iter()
                .all(|r| planted.contains(r.as_str().unwrap()))
        };
        assert!(ok, "an alert no scenario planted: {a}\n{output}");
    }
    assert_eq!(summary["rejected"], 0, "{}", summary["rejected_by"]);
    // KZ's gateway: the post whose uplink dropped for 30 s lost nothing, and the network
    // noticed it go quiet and come back; the post that stopped is silent.
    let g = &summary["gateway"];
    assert!(g["accepted_while_down"].as_u64().unwrap() > 0, "{g}");
    assert_eq!(g["on_broker"], g["accepted"], "{g}");
    assert_eq!(g["lost"], 0, "{g}");
    let operational: BTreeSet<(String, String)> = summary["operational"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["key"].as_str().unwrap().to_string(),
                a["msg_type"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for (key, kind) in [
        ("post:KZ:KZ-ZHARKENT-02", "ALERT"),
        ("post:KZ:KZ-DOSTYK-03", "ALERT"),
        ("post:KZ:KZ-DOSTYK-03", "CANCEL"),
    ] {
        assert!(
            operational.contains(&(key.to_string(), kind.to_string())),
            "no {kind} for {key}: {operational:?}\n{output}"
        );
    }
    assert_nothing_left(&summary, &output);
}

#[test]
fn background_traffic_alone_raises_no_alert() {
    let dir = tempfile::tempdir().unwrap();
    let (summary, output) = run_demo(dir.path(), 60, "none");
    let rate = summary["background_rate"].as_f64().unwrap();
    eprintln!(
        "background only: {} incidents at {rate:.1}/s over {} s, {} alerts",
        summary["incidents_confirmed"],
        summary["duration_secs"],
        summary["alerts"].as_array().unwrap().len()
    );
    assert!(
        rate >= 15.0,
        "the default rate (20/s) was not reached: {rate}\n{output}"
    );
    assert_eq!(
        summary["alerts"],
        serde_json::json!([]),
        "false positives\n{output}"
    );
    assert_eq!(
        summary["case"],
        Value::Null,
        "no post's hit, no case request"
    );
    assert_eq!(summary["rejected"], 0);
    assert_nothing_left(&summary, &output);
}

#[test]
fn ctrl_c_stops_the_demo_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let summary_path = dir.path().join("summary.json");
    let log = dir.path().join("out.txt");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ewn"))
        .args([
            "demo",
            "--duration",
            "600",
            "--summary-json",
            summary_path.to_str().unwrap(),
        ])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    // Interrupt once the first alert is on screen: everything is running by then.
    while !std::fs::read_to_string(&log).unwrap().contains("] ALERT") {
        assert!(Instant::now() < deadline, "no alert within 120 s");
        assert!(child.try_wait().unwrap().is_none(), "the demo ended early");
        std::thread::sleep(Duration::from_millis(200));
    }
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let stop_deadline = Instant::now() + Duration::from_secs(60);
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < stop_deadline,
            "the demo did not stop within 60 s of Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = std::fs::read_to_string(&log).unwrap();
    assert!(exit.success(), "exit {exit}\n{output}");
    let summary: Value = serde_json::from_slice(&std::fs::read(&summary_path).unwrap()).unwrap();
    assert_eq!(summary["interrupted"], true);
    assert!(output.contains("== summary"), "{output}");
    assert_nothing_left(&summary, &output);
}

/// The broker's binary is what the command was given (the flag before `TANSU_BIN`); when it
/// is missing the demo says which file and how to get it, and starts nothing.
#[test]
fn a_missing_broker_binary_is_named_and_nothing_starts() {
    let out = Command::new(env!("CARGO_BIN_EXE_ewn"))
        .args([
            "demo",
            "--duration",
            "5",
            "--tansu-bin",
            "/nonexistent/tansu",
        ])
        .env("TANSU_BIN", "/elsewhere/tansu")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("/nonexistent/tansu not found"), "{text}");
    assert!(text.contains("make broker"), "{text}");
    assert!(!text.contains("/elsewhere/tansu"), "{text}");
}
