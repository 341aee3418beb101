//! The alert rules see the services as they really start: the processor and the fan-out run
//! on Tansu, and before any incident or alert is published their `/metrics` must already
//! hold every series each rule of `deploy/prometheus/alerts.yml` selects (with the label
//! values its matchers name). A counter that only appears at its first increment would make
//! `increase()` miss that first event: the first forged report, the first dead letter.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::hooks::*;
use common::{Net, in_process, serve_admin};
use ewn_fanout::settings::StepConfig;
use ewn_model::Tlp;

const ALERTS_YML: &str = include_str!("../deploy/prometheus/alerts.yml");

/// Series that exist only once what they describe does, by design: a post's gauges appear
/// when the post is first heard of (a post never heard of is not silent; the state-level
/// `ewn_processor_source_last_seen_timestamp_seconds`, required here, covers a state never
/// heard from). Gauges, so no first event is lost to `increase()`.
const APPEAR_WITH_THEIR_POST: [&str; 2] = [
    "ewn_processor_source_post_last_seen_timestamp_seconds",
    "ewn_processor_source_post_oldest_unsent_age_seconds",
];

/// One selector of a rule: a metric name and its matchers (label, operator, value).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Selector {
    name: String,
    matchers: Vec<(String, String, String)>,
}

/// Each alert's name and expression, from the YAML text (single-line `expr: ...` or a
/// block scalar `expr: |-` / `>-`).
fn alert_exprs(yaml: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut out = Vec::new();
    let mut alert = None;
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim_start();
        if let Some(name) = trimmed.strip_prefix("- alert:") {
            alert = Some(name.trim().to_string());
        } else if let Some(rest) = trimmed.strip_prefix("expr:") {
            let indent = line.len() - trimmed.len();
            let rest = rest.trim();
            let expr = if matches!(rest, "|" | "|-" | ">" | ">-") {
                let mut block = Vec::new();
                while i + 1 < lines.len() {
                    let next = lines[i + 1];
                    let next_indent = next.len() - next.trim_start().len();
                    if !next.trim().is_empty() && next_indent <= indent {
                        break;
                    }
                    block.push(next.trim());
                    i += 1;
                }
                block.join(" ")
            } else {
                rest.to_string()
            };
            out.push((alert.clone().expect("expr before any alert"), expr));
        }
        i += 1;
    }
    out
}

/// The selectors of EWN's own series (`ewn_*`, `process_*`) in an expression.
fn selectors(expr: &str) -> Vec<Selector> {
    let bytes = expr.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
    while i < bytes.len() {
        if bytes[i] == b'"' {
            // Skip string literals (label values).
            i += 1;
            while i < bytes.len() && bytes[i] != b'"' {
                i += 1;
            }
            i += 1;
            continue;
        }
        if !ident(bytes[i]) || (i > 0 && ident(bytes[i - 1])) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && ident(bytes[i]) {
            i += 1;
        }
        let name = &expr[start..i];
        if !(name.starts_with("ewn_") || name.starts_with("process_")) {
            continue;
        }
        let mut matchers = Vec::new();
        if bytes.get(i) == Some(&b'{') {
            let end = expr[i..].find('}').map(|e| i + e).unwrap();
            for m in expr[i + 1..end].split(',').filter(|m| !m.trim().is_empty()) {
                let op_at = m.find(['=', '!']).unwrap();
                let label = m[..op_at].trim().to_string();
                let rest = &m[op_at..];
                let op_len =
                    if rest.starts_with("=~") || rest.starts_with("!~") || rest.starts_with("!=") {
                        2
                    } else {
                        1
                    };
                let value = rest[op_len..].trim().trim_matches('"').to_string();
                matchers.push((label, rest[..op_len].to_string(), value));
            }
            i = end + 1;
        }
        out.push(Selector {
            name: name.to_string(),
            matchers,
        });
    }
    out
}

/// The label sets that must exist for a selector: one per alternative of each `=~` made of
/// plain names (`a|b|c`), with every `=` matcher. Negative matchers only need the name.
fn required(sel: &Selector) -> Vec<Vec<(String, String)>> {
    let equal: Vec<(String, String)> = sel
        .matchers
        .iter()
        .filter(|(_, op, _)| op == "=")
        .map(|(l, _, v)| (l.clone(), v.clone()))
        .collect();
    let mut sets = vec![equal];
    for (label, op, value) in &sel.matchers {
        let plain = value
            .split('|')
            .all(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
        if op == "=~" && plain {
            sets = sets
                .iter()
                .flat_map(|set| {
                    value.split('|').map(move |alt| {
                        let mut s = set.clone();
                        s.push((label.clone(), alt.to_string()));
                        s
                    })
                })
                .collect();
        }
    }
    sets
}

/// Does the exposition text hold a sample of `name` with all of `labels`?
fn has_series(text: &str, name: &str, labels: &[(String, String)]) -> bool {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .any(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
}

fn scrape(admin: SocketAddr) -> String {
    reqwest::blocking::Client::new()
        .get(format!("http://{admin}/metrics"))
        .timeout(Duration::from_secs(5))
        .send()
        .and_then(|r| r.error_for_status())
        .and_then(|r| r.text())
        .unwrap_or_default()
}

/// What is missing from the scrapes, one line per selector and label set, for the families
/// `in_scope` accepts.
fn missing(rules: &[(String, String)], text: &str, in_scope: impl Fn(&str) -> bool) -> Vec<String> {
    let mut out = BTreeSet::new();
    for (alert, expr) in rules {
        for sel in selectors(expr).into_iter().filter(|s| in_scope(&s.name)) {
            for labels in required(&sel) {
                if !has_series(text, &sel.name, &labels) {
                    out.insert(format!("{alert}: {}{labels:?}", sel.name));
                }
            }
        }
    }
    out.into_iter().collect()
}

#[test]
fn the_parser_reads_every_rule_and_its_series() {
    let rules = alert_exprs(ALERTS_YML);
    let alerts = ALERTS_YML.matches("- alert:").count();
    assert_eq!(rules.len(), alerts, "every alert has one expr");
    let by_alert: BTreeMap<&str, &str> = rules
        .iter()
        .map(|(a, e)| (a.as_str(), e.as_str()))
        .collect();
    let forged = selectors(by_alert["EwnUnauthenticatedIncidents"]);
    assert_eq!(forged.len(), 1, "{forged:?}");
    assert_eq!(
        required(&forged[0]).len(),
        5,
        "one label set per reason of the regex"
    );
    let gone = selectors(by_alert["EwnWebhookEndpointGone"]);
    assert_eq!(
        required(&gone[0]),
        vec![vec![
            ("channel".to_string(), "webhook".to_string()),
            ("outcome".to_string(), "endpoint_gone".to_string())
        ]]
    );
    // A series that appears only at its first event is reported missing.
    let text =
        "ewn_fanout_deliveries_total{agency=\"a\",channel=\"webhook\",outcome=\"delivered\"} 0\n";
    assert_eq!(
        missing(
            &[("X".into(), by_alert["EwnWebhookEndpointGone"].into())],
            text,
            |_| true
        )
        .len(),
        1
    );
}

#[test]
fn every_series_the_alert_rules_use_exists_before_any_traffic() {
    let mut net = Net::new("metrics_start");
    // Statistics on (the tests' default is off), so the librdkafka series are reported.
    net.settings.statistics_interval_ms = 500;

    // The processor, served as `ewn process` serves it.
    let (tx, rx) = std::sync::mpsc::channel();
    let config = net.config(3600);
    let processor = in_process(move |r, s| async move {
        let (health, admin) = serve_admin(&r, s.clone()).await;
        tx.send(admin).unwrap();
        ewn_processor::run(config, &r, health, s).await
    });
    let process_admin = rx.recv_timeout(Duration::from_secs(30)).unwrap();

    // The fan-out with two webhook desks, one escalating to the other (an agency's series
    // appear with its subscription, an escalation step's with the first subscription that
    // has that step: a network without escalations has no step to count).
    let hooks = Hooks::start();
    let mut kz = webhook_sub(&hooks, "desk-kz", "NCTC-KZ", Tlp::Amber);
    kz.escalation = vec![StepConfig {
        after_secs: 600,
        targets: vec!["desk-kg".into()],
    }];
    let kg = webhook_sub(&hooks, "desk-kg", "GKNB-KG", Tlp::Amber);
    let fanout = start_fanout(fanout_config(&net.settings, vec![kz, kg]));

    let rules = alert_exprs(ALERTS_YML);
    // The families the processor or the fan-out export (`ewn metrics`); the gateway's run at
    // a member state, and tests/gateway.rs covers them.
    let ours: BTreeSet<String> = ewn::cmd::metrics::exported()
        .unwrap()
        .into_iter()
        .filter(|e| e.services.iter().any(|s| *s == "process" || *s == "fanout"))
        .map(|e| e.info.name)
        .collect();
    let in_scope = |name: &str| {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| ours.contains(*f)))
            .unwrap_or(name);
        ours.contains(family) && !APPEAR_WITH_THEIR_POST.contains(&family)
    };
    let checked: BTreeSet<String> = rules
        .iter()
        .flat_map(|(_, e)| selectors(e))
        .map(|s| s.name)
        .filter(|n| in_scope(n))
        .collect();
    assert!(
        checked.len() >= 30,
        "only {} families checked: {checked:?}",
        checked.len()
    );
    let deadline = Instant::now() + Duration::from_secs(90);
    let gaps = loop {
        let text = format!("{}\n{}", scrape(process_admin), scrape(fanout.admin));
        let gaps = missing(&rules, &text, in_scope);
        if gaps.is_empty() || Instant::now() >= deadline {
            break gaps;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    assert!(
        gaps.is_empty(),
        "series the alert rules use, missing from /metrics before any traffic:\n{}",
        gaps.join("\n")
    );
    // The oversight API's series (which no rule watches yet) exist too: every closed label
    // set of the reads counter at 0, the duration per endpoint, the in-flight bound.
    let text = scrape(fanout.admin);
    for endpoint in ewn_fanout::metrics::OVERSIGHT_ENDPOINTS {
        for outcome in ewn_fanout::metrics::OVERSIGHT_OUTCOMES {
            let labels = [
                ("endpoint".to_string(), endpoint.to_string()),
                ("outcome".to_string(), outcome.to_string()),
            ];
            assert!(
                has_series(&text, "ewn_fanout_oversight_reads_total", &labels),
                "ewn_fanout_oversight_reads_total{labels:?} missing"
            );
        }
        let labels = [("endpoint".to_string(), endpoint.to_string())];
        assert!(has_series(
            &text,
            "ewn_fanout_oversight_read_seconds_count",
            &labels
        ));
    }
    assert_eq!(
        common::metric(&text, "ewn_fanout_oversight_reads_total", ""),
        0.0
    );
    assert!(has_series(
        &text,
        "ewn_fanout_oversight_reads_in_flight_bound",
        &[]
    ));
    // The alert index's bound of incidents per episode (case requests), and nothing over it.
    assert_eq!(
        common::metric(&text, "ewn_fanout_index_episode_incidents_bound", ""),
        ewn_fanout::index::MAX_EPISODE_INCIDENTS as f64
    );
    assert_eq!(
        common::metric(
            &text,
            "ewn_fanout_index_episode_incidents_over_bound_total",
            ""
        ),
        0.0
    );
    // Nothing was published: the counters the rules watch are all still 0.
    let text = scrape(process_admin);
    assert_eq!(
        common::metric(&text, "ewn_processor_incidents_received_total", ""),
        0.0
    );
    assert!(
        text.contains("ewn_build_info{") && text.contains("process_resident_memory_bytes"),
        "{text}"
    );
    // Prometheus' own linter on both expositions (names, units, types, help).
    for (service, admin) in [("process", process_admin), ("fanout", fanout.admin)] {
        let report = promtool_check_metrics(&scrape(admin));
        assert!(
            report.is_empty(),
            "promtool check metrics on {service}:\n{report}"
        );
    }
    fanout.stop();
    processor.stop();
}

/// What `promtool check metrics` says about an exposition (empty: nothing). promtool comes
/// with `make test-deps` and `make lint` (Debian's prometheus package).
fn promtool_check_metrics(text: &str) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("promtool: {e} (install it: make promtool)"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() && said.trim().is_empty() {
        String::new()
    } else {
        said
    }
}
