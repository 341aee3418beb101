//! `ewn alerts` end to end through the binary, against a fan-out running in process on a
//! real broker (Tansu) with two desks on the live stream: an AMBER desk and a GREEN one.
//! The GREEN desk never sees the AMBER alert (list, show, follow), may not acknowledge it,
//! and the AMBER desk may; filters, formats and `--follow` receiving a new alert, with
//! every wait a poll against a deadline.
#![allow(clippy::unwrap_used)] // tests fail loudly on anything unexpected

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::cases::wait_settled;
use common::hooks::*;
use common::{Net, now_ms, wait_until};
use ewn_fanout::SubscriptionConfig;
use ewn_fanout::settings::ChannelName;
use ewn_model::{Alert, Level, Tlp};

fn stream_sub(id: &str, agency: &str, clearance: Tlp) -> SubscriptionConfig {
    let mut s = SubscriptionConfig::webhook(id, agency, clearance, String::new(), String::new());
    s.webhook = None;
    s.channel = Some(ChannelName::Stream);
    s
}

fn token(sub: &str) -> String {
    format!("{DESK_TOKEN_PREFIX}{sub}")
}

/// `ewn alerts ARGS` as desk `sub` (token from the environment).
fn alerts(fanout: &Fanout, sub: &str, args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ewn"));
    c.arg("alerts")
        .args(["--url", &fanout.url("")])
        .args(args)
        .env("EWN_DESK_TOKEN", token(sub));
    bounded(c)
}

/// Runs a command that must end by itself (a `list` that missed the end of the backlog
/// would wait for ever): killed and failed after 60 s.
fn bounded(mut c: Command) -> Output {
    let child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let id = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").arg(id.to_string()).status();
            panic!("{c:?} did not end within 60 s");
        }
    }
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The alert ids of `ewn alerts list --format json ...`.
fn listed(fanout: &Fanout, sub: &str, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["list", "--format", "json"];
    args.extend(extra);
    let out = alerts(fanout, sub, &args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["alert_id"].as_str().unwrap().to_string()
        })
        .collect()
}

fn keyed(n: u64, tlp: Tlp, level: Level, key: &str, rule: &str) -> Alert {
    let mut a = alert(n, tlp, level);
    a.key = key.to_string();
    a.rule = rule.to_string();
    a
}

#[test]
fn a_desk_lists_shows_acks_and_follows_only_what_it_may_see() {
    let mut net = Net::new("alerts-cmd");
    let subs = vec![
        stream_sub("amber-desk", "KZ-KNB", Tlp::Amber),
        stream_sub("green-desk", "KG-GKNB", Tlp::Green),
    ];
    let fanout = start_fanout(fanout_config(&net.settings, subs));

    let key = format!("{:064x}", now_ms() as u128 * 0x9e37_79b9_7f4a_7c15);
    let amber = keyed(1, Tlp::Amber, Level::High, &key, "cross_border_movement");
    let green = keyed(2, Tlp::Green, Level::Medium, &key, "watchlist_cluster");
    // Last on the same key (one partition, in order): once a desk sees it, the rest has
    // been decided for that desk.
    let sentinel = keyed(3, Tlp::Clear, Level::Low, &key, "watchlist_cluster");
    net.publish_alerts(&[amber.clone(), green.clone(), sentinel.clone()]);
    wait_settled(&fanout, 3, Duration::from_secs(180));
    for desk in ["amber-desk", "green-desk"] {
        wait_until(
            &format!("{desk} lists the sentinel"),
            Duration::from_secs(30),
            || listed(&fanout, desk, &[]).contains(&sentinel.alert_id),
        );
    }

    // list: each desk what its clearance allows, nothing more.
    let ids = [&amber, &green, &sentinel].map(|a| a.alert_id.clone());
    assert_eq!(listed(&fanout, "amber-desk", &[]), ids.to_vec());
    assert_eq!(
        listed(&fanout, "green-desk", &[]),
        [green.alert_id.clone(), sentinel.alert_id.clone()],
        "a GREEN desk never sees an AMBER alert"
    );
    // Filters: level (a minimum), rule, state, time, acknowledgement, message type.
    assert_eq!(
        listed(&fanout, "amber-desk", &["--level", "medium"]),
        [amber.alert_id.clone(), green.alert_id.clone()]
    );
    assert_eq!(
        listed(&fanout, "amber-desk", &["--rule", "cross_border_movement"]),
        vec![amber.alert_id.clone()]
    );
    assert_eq!(listed(&fanout, "green-desk", &["--state", "kz"]).len(), 2);
    assert!(listed(&fanout, "green-desk", &["--state", "TJ"]).is_empty());
    assert_eq!(listed(&fanout, "amber-desk", &["--since", "1h"]).len(), 3);
    assert!(listed(&fanout, "amber-desk", &["--since", "2099-01-01T00:00:00Z"]).is_empty());
    assert!(listed(&fanout, "amber-desk", &["--msg-type", "CANCEL"]).is_empty());
    let out = alerts(&fanout, "amber-desk", &["list", "--level", "urgent"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("`urgent`: one of LOW, MEDIUM, HIGH, CRITICAL"));
    // The table, for people.
    let out = alerts(&fanout, "green-desk", &["list"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.starts_with("ALERT_ID"), "{table}");
    assert!(table.contains(&green.alert_id) && !table.contains(&amber.alert_id));

    // show: the alert in full for the desk cleared for it; nothing for the other.
    let out = alerts(
        &fanout,
        "amber-desk",
        &["show", &amber.alert_id, "--format", "json"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["alert_id"], amber.alert_id.as_str());
    assert_eq!(shown["tlp"], "AMBER");
    assert_eq!(shown["redacted"], false);
    assert_eq!(
        shown["reasons"].as_array().unwrap().len(),
        amber.reasons.len()
    );
    let out = alerts(&fanout, "green-desk", &["show", &amber.alert_id]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(out.stdout.is_empty(), "{}", text(&out));

    // ack: refused for a desk that is not a recipient, 201 for the one that is.
    let out = alerts(&fanout, "green-desk", &["ack", &amber.alert_id]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("no such alert"), "{}", text(&out));
    let out = alerts(
        &fanout,
        "amber-desk",
        &["ack", &amber.alert_id, "--note", "post informed"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["status"], 201);
    assert_eq!(answer["alert_id"], amber.alert_id.as_str());
    wait_until("the ack shows in the list", Duration::from_secs(30), || {
        listed(&fanout, "amber-desk", &["--acked"]) == vec![amber.alert_id.clone()]
    });
    assert_eq!(listed(&fanout, "amber-desk", &["--unacked"]).len(), 2);

    // The token: a file of mode 0600 works, a readable one is refused, a wrong token is
    // refused, and no token is ever printed.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("desk.token");
    std::fs::write(&file, format!("{}\n", token("green-desk"))).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let run = |file: &std::path::Path, env: Option<&str>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_ewn"));
        c.args(["alerts", "--url", &fanout.url(""), "--token-file"])
            .arg(file)
            .args(["list", "--format", "json"])
            .env_remove("EWN_DESK_TOKEN");
        if let Some(t) = env {
            c.env("EWN_DESK_TOKEN", t);
        }
        bounded(c)
    };
    let out = run(&file, None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2);
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = run(&file, None);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("chmod 600"), "{}", text(&out));
    assert!(!text(&out).contains(&token("green-desk")));
    let out = alerts(&fanout, "no-such-desk", &["list"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("refused the token"), "{}", text(&out));
    assert!(
        !text(&out).contains(&token("no-such-desk")),
        "{}",
        text(&out)
    );
    let mut c = Command::new(env!("CARGO_BIN_EXE_ewn"));
    c.args(["alerts", "--url", &fanout.url(""), "list"])
        .env_remove("EWN_DESK_TOKEN");
    let out = bounded(c);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("no desk token"), "{}", text(&out));

    // --follow: the GREEN desk's follower prints the backlog, then a new GREEN alert, and
    // never the AMBER one published just before it on the same partition.
    let mut child = Command::new(env!("CARGO_BIN_EXE_ewn"))
        .args([
            "alerts",
            "--url",
            &fanout.url(""),
            "list",
            "--follow",
            "--format",
            "json",
        ])
        .env("EWN_DESK_TOKEN", token("green-desk"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            if tx
                .send(v["alert_id"].as_str().unwrap().to_string())
                .is_err()
            {
                return;
            }
        }
    });
    let mut seen = Vec::new();
    let until = |seen: &mut Vec<String>, id: &str, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !seen.iter().any(|s| s == id) {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => seen.push(line),
                Err(_) => panic!("{what}: not followed within 60 s; saw {seen:?}"),
            }
        }
    };
    until(&mut seen, &sentinel.alert_id, "the backlog");
    let amber_later = keyed(
        4,
        Tlp::Amber,
        Level::Critical,
        &key,
        "cross_border_movement",
    );
    let green_later = keyed(5, Tlp::Green, Level::High, &key, "watchlist_cluster");
    net.publish_alerts(&[amber_later.clone(), green_later.clone()]);
    until(&mut seen, &green_later.alert_id, "a new GREEN alert");
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        seen,
        [
            green.alert_id.clone(),
            sentinel.alert_id.clone(),
            green_later.alert_id.clone()
        ],
        "the follower saw exactly what a GREEN desk may"
    );
    fanout.stop();
}
