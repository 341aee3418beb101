//! The fan-out against a real broker (Tansu) and real HTTP endpoints on loopback.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::hooks::*;
use common::{Net, now_ms, wait_until};
use ewn_fanout::SubscriptionConfig;
use ewn_fanout::settings::ChannelName;
use ewn_model::{Alert, Category, DeliveryOutcome, Level, Tlp};

const TLPS: [Tlp; 5] = [Tlp::Clear, Tlp::Green, Tlp::Amber, Tlp::AmberStrict, Tlp::Red];
const LEVELS: [Level; 4] = [Level::Low, Level::Medium, Level::High, Level::Critical];
const AGENCIES: [&str; 4] = ["KZ-KNB", "KG-GKNB", "TJ-GKNB", "UZ-SGB"];
const STATES: [&str; 5] = ["KZ", "KG", "TJ", "UZ", "TM"];
const AREAS: [&str; 4] = ["KZ-ALM", "KG-C", "TJ-SU", "UZ-AN"];
const RULES: [&str; 3] = ["cross_border_movement", "area_burst", "watchlist_hit"];

/// Waits until the fan-out has read `n` alerts and every delivery they caused is terminal.
fn wait_settled(f: &Fanout, n: u64) {
    wait_until(
        &format!("{n} alerts read and settled"),
        Duration::from_secs(120),
        || {
            f.metric("ewn_fanout_alerts_total", "") as u64 >= n
                && f.metric("ewn_fanout_pending_alerts", "") == 0.0
        },
    );
}

/// A small deterministic generator (xorshift64*), seeded per run and printed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<T: Clone>(&mut self, from: &[T]) -> T {
        from[self.below(from.len())].clone()
    }
    fn subset<T: Clone + PartialEq>(&mut self, from: &[T], max: usize) -> Vec<T> {
        let n = self.below(max + 1);
        let mut v = Vec::new();
        for _ in 0..n {
            let x = self.pick(from);
            if !v.contains(&x) {
                v.push(x);
            }
        }
        v
    }
}

fn rank<T: PartialEq>(order: &[T], x: &T) -> usize {
    order.iter().position(|o| o == x).unwrap()
}

/// The oracle, written from DESIGN.md independently of the fan-out's code: `None` when the
/// subscriber must get nothing, `Some(redacted)` otherwise.
fn oracle(s: &SubscriptionConfig, a: &Alert) -> Option<bool> {
    let any = |filter: &[String], values: &[String]| {
        filter.is_empty() || filter.iter().any(|f| values.contains(f))
    };
    let selected = rank(&LEVELS, &a.level) >= rank(&LEVELS, &s.min_level)
        && (s.categories.is_empty() || s.categories.iter().any(|c| a.categories.contains(c)))
        && any(&s.states, &a.states)
        && any(&s.areas, &a.areas)
        && (s.rules.is_empty() || s.rules.contains(&a.rule));
    if !selected {
        return None;
    }
    let strict = matches!(a.tlp, Tlp::AmberStrict | Tlp::Red);
    let full = rank(&TLPS, &a.tlp) <= rank(&TLPS, &s.clearance)
        && (!strict || a.named_agencies.contains(&s.agency));
    if full {
        Some(false)
    } else if s.redacted {
        Some(true)
    } else {
        None
    }
}

#[test]
fn random_alerts_reach_exactly_the_cleared_and_selected_subscribers_signed() {
    let seed = std::env::var("EWN_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| now_ms() as u64 | 1);
    println!("seed {seed} (set EWN_TEST_SEED to replay)");
    let mut rng = Rng(seed);
    let mut net = Net::new("fanout-prop");
    let hooks = Hooks::start();
    let subs: Vec<SubscriptionConfig> = (0..12)
        .map(|i| {
            let mut s = webhook_sub(
                &hooks,
                &format!("sub-{i}"),
                AGENCIES[rng.below(4)],
                rng.pick(&TLPS),
            );
            s.min_level = rng.pick(&LEVELS);
            s.categories = rng.subset(
                &[Category::WatchlistHit, Category::FtfReturnee, Category::SuspiciousCrossing],
                2,
            );
            s.states = rng.subset(&STATES.map(String::from), 2);
            s.areas = rng.subset(&AREAS.map(String::from), 1);
            s.rules = rng.subset(&RULES.map(String::from), 1);
            s.redacted = rng.below(3) == 0;
            s
        })
        .collect();
    let alerts: Vec<Alert> = (0..80)
        .map(|n| {
            let mut a = alert(n, rng.pick(&TLPS), rng.pick(&LEVELS));
            a.categories = rng.subset(
                &[Category::WatchlistHit, Category::FtfReturnee, Category::SuspiciousCrossing],
                2,
            );
            a.states = rng.subset(&STATES.map(String::from), 2);
            a.areas = rng.subset(&AREAS.map(String::from), 2);
            a.rule = rng.pick(&RULES).to_string();
            a.named_agencies = rng.subset(&AGENCIES.map(String::from), 2);
            a
        })
        .collect();
    let expected: BTreeMap<(String, String), bool> = subs
        .iter()
        .flat_map(|s| {
            alerts.iter().filter_map(|a| {
                oracle(s, a).map(|r| ((s.id.clone(), a.alert_id.clone()), r))
            })
        })
        .collect();
    println!("{} eligible deliveries of {} pairs", expected.len(), subs.len() * alerts.len());
    assert!(!expected.is_empty());

    let fanout = start_fanout(fanout_config(&net.settings, subs.clone()));
    net.publish_alerts(&alerts);
    wait_settled(&fanout, alerts.len() as u64);

    // What the endpoints got: every delivery verifies, is within clearance, and the set
    // of (subscriber, alert) pairs is exactly the eligible one.
    let mut got = BTreeMap::new();
    for h in hooks.all() {
        verify_standard_webhook(&secret_of(&h.name), &h)
            .unwrap_or_else(|e| panic!("{}: {e}", h.name));
        let sub = subs.iter().find(|s| s.id == h.name).unwrap();
        let data = &h.json()["data"];
        let tlp: Tlp = data["tlp"].as_str().unwrap().parse().unwrap();
        assert!(
            rank(&TLPS, &tlp) <= rank(&TLPS, &sub.clearance),
            "{} (clearance {}) got {tlp}",
            h.name,
            sub.clearance
        );
        let redacted = data["redacted"].as_bool().unwrap();
        if redacted {
            assert!(data["incident_ids"].as_array().unwrap().is_empty());
            assert!(data["evidence"].as_array().unwrap().is_empty());
            assert_eq!(data["key"], "");
        }
        assert!(
            got.insert((h.name.clone(), h.alert_id()), redacted).is_none(),
            "{} got {} twice",
            h.name,
            h.alert_id()
        );
    }
    let missing: Vec<_> = expected.keys().filter(|k| !got.contains_key(*k)).collect();
    let extra: Vec<_> = got.keys().filter(|k| !expected.contains_key(*k)).collect();
    assert!(missing.is_empty() && extra.is_empty(), "missing {missing:?}\nextra {extra:?}");
    assert_eq!(got, expected, "redacted forms differ");

    // One receipt per delivery, naming the same webhook-id the endpoint saw.
    let receipts = net.receipts();
    assert_eq!(receipts.len(), expected.len());
    let ids: BTreeMap<(String, String), String> = hooks
        .all()
        .into_iter()
        .map(|h| ((h.name.clone(), h.alert_id()), h.webhook_id))
        .collect();
    for r in &receipts {
        assert_eq!(r.outcome, DeliveryOutcome::Delivered);
        let key = (r.subscription_id.clone(), r.alert_id.clone());
        assert_eq!(r.redacted, expected[&key]);
        assert_eq!(r.webhook_id.as_ref(), Some(&ids[&key]));
    }
    let withheld: u64 = subs
        .iter()
        .map(|s| {
            alerts
                .iter()
                .filter(|a| {
                    let mut open = s.clone();
                    open.clearance = Tlp::Red;
                    open.redacted = false;
                    let mut named = (*a).clone();
                    named.named_agencies.push(s.agency.clone());
                    oracle(&open, &named).is_some() && oracle(s, a).is_none()
                })
                .count() as u64
        })
        .sum();
    assert_eq!(fanout.metric("ewn_fanout_withheld_total", "") as u64, withheld);
    fanout.stop();
}

#[test]
fn gone_disables_the_endpoint_and_a_failing_one_ends_in_dead_letters() {
    let mut net = Net::new("fanout-gone");
    let hooks = Hooks::start();
    hooks.set("gone", Mode::Status(410));
    hooks.set("broken", Mode::Status(500));
    let subs = vec![
        webhook_sub(&hooks, "gone", "KG-GKNB", Tlp::Amber),
        webhook_sub(&hooks, "broken", "TJ-GKNB", Tlp::Amber),
        webhook_sub(&hooks, "fine", "KZ-KNB", Tlp::Amber),
    ];
    let mut config = fanout_config(&net.settings, subs);
    config.fanout.webhook.max_attempts = 3;
    let fanout = start_fanout(config);
    let alerts: Vec<Alert> = (0..3).map(|n| alert(n, Tlp::Green, Level::High)).collect();
    net.publish_alerts(&alerts);
    wait_settled(&fanout, 3);

    assert_eq!(hooks.hits("gone").len(), 1, "410 stops every later attempt");
    assert_eq!(hooks.hits("broken").len(), 9, "3 attempts per alert");
    assert_eq!(hooks.delivered("fine").len(), 3);
    let receipts = net.receipts();
    let of = |id: &str| -> Vec<_> { receipts.iter().filter(|r| r.subscription_id == id).collect() };
    assert!(of("gone").iter().all(|r| r.outcome == DeliveryOutcome::EndpointGone));
    assert_eq!(of("gone").len(), 3);
    assert_eq!(of("broken").len(), 3);
    for r in of("broken") {
        assert_eq!(r.outcome, DeliveryOutcome::DeadLetter);
        assert_eq!((r.attempts, r.status_code), (3, Some(500)));
    }
    assert_eq!(fanout.metric("ewn_fanout_dead_letters_total", "") as u64, 3);

    // The disabled state is on the topic, visible through the admin API.
    let client = reqwest::blocking::Client::new();
    let view: serde_json::Value = client
        .get(fanout.url("/api/v1/subscriptions/gone"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .unwrap()
        .json_value();
    assert!(view["disabled_at"].is_i64(), "{view}");
    assert!(view.get("webhook_secret").is_none(), "the secret never leaves: {view}");

    // A later alert is not even attempted at the gone endpoint.
    net.publish_alerts(&[alert(3, Tlp::Green, Level::High)]);
    wait_settled(&fanout, 4);
    assert_eq!(hooks.hits("gone").len(), 1);
    assert_eq!(hooks.delivered("fine").len(), 4);
    fanout.stop();
}

trait JsonValue {
    fn json_value(self) -> serde_json::Value;
}

impl JsonValue for reqwest::blocking::Response {
    fn json_value(self) -> serde_json::Value {
        let status = self.status();
        let text = self.text().unwrap();
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{status}: {e}: {text}"))
    }
}

/// One server-sent event.
#[derive(Debug, Clone)]
struct Sse {
    id: String,
    event: String,
    data: String,
}

/// A live-stream client on its own thread; events arrive on a channel.
struct StreamClient {
    events: mpsc::Receiver<Sse>,
    stop: Arc<AtomicBool>,
}

impl StreamClient {
    fn connect(url: &str, token: &str, last_event_id: Option<&str>) -> StreamClient {
        let mut req = reqwest::blocking::Client::builder()
            .timeout(None)
            .build()
            .unwrap()
            .get(url)
            .bearer_auth(token);
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        let resp = req.send().unwrap();
        assert_eq!(resp.status(), 200, "stream refused");
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(resp);
            let mut cur = Sse {
                id: String::new(),
                event: String::new(),
                data: String::new(),
            };
            let mut line = String::new();
            while !s.load(Ordering::Relaxed) {
                line.clear();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                let l = line.trim_end_matches(['\r', '\n']);
                if l.is_empty() {
                    if !cur.event.is_empty() && tx.send(cur.clone()).is_err() {
                        return;
                    }
                    cur.event.clear();
                    cur.data.clear();
                } else if let Some(v) = l.strip_prefix("id:") {
                    cur.id = v.trim_start().to_string();
                } else if let Some(v) = l.strip_prefix("event:") {
                    cur.event = v.trim_start().to_string();
                } else if let Some(v) = l.strip_prefix("data:") {
                    cur.data.push_str(v.trim_start());
                }
            }
        });
        StreamClient { events: rx, stop }
    }

    /// The next `alert` event's (id, alert id), or a failure after `timeout`.
    fn next_alert(&self, timeout: Duration) -> Option<(String, String)> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let e = self.events.recv_timeout(left).ok()?;
            if e.event == "alert" {
                let v: serde_json::Value = serde_json::from_str(&e.data).unwrap();
                return Some((e.id, v["alert_id"].as_str().unwrap().to_string()));
            }
            assert_ne!(e.event, "gap", "unexpected gap: {}", e.data);
        }
    }

    fn close(self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[test]
fn a_stream_client_resumes_with_last_event_id_and_gets_exactly_what_it_missed() {
    let mut net = Net::new("fanout-sse");
    let hooks = Hooks::start();
    let mut desk = webhook_sub(&hooks, "desk", "KG-GKNB", Tlp::Amber);
    desk.webhook = None;
    desk.channel = Some(ChannelName::Stream);
    let mut config = fanout_config(&net.settings, vec![desk]);
    config.fanout.stream.keepalive_secs = 1;
    let fanout = start_fanout(config);
    let url = fanout.url("/api/v1/stream");
    let desk_token = format!("{DESK_TOKEN_PREFIX}desk");

    // Authentication first: nothing without a token, nothing for a non-desk.
    let client = reqwest::blocking::Client::new();
    assert_eq!(client.get(&url).send().unwrap().status(), 401);
    assert_eq!(client.get(&url).bearer_auth("nope").send().unwrap().status(), 401);
    assert_eq!(client.get(&url).bearer_auth(ADMIN_TOKEN).send().unwrap().status(), 403);

    let first = StreamClient::connect(&url, &desk_token, None);
    let batch = |from: u64| -> Vec<Alert> {
        // Two the desk may see, and a RED one it may not.
        vec![
            alert(from, Tlp::Amber, Level::High),
            alert(from + 1, Tlp::Red, Level::High),
            alert(from + 2, Tlp::Green, Level::Low),
        ]
    };
    let b1 = batch(0);
    net.publish_alerts(&b1);
    let seen: Vec<(String, String)> = (0..2)
        .map(|_| first.next_alert(Duration::from_secs(30)).expect("live alert"))
        .collect();
    let ids: BTreeSet<&str> = seen.iter().map(|(_, a)| a.as_str()).collect();
    assert_eq!(ids, BTreeSet::from([b1[0].alert_id.as_str(), b1[2].alert_id.as_str()]));
    first.close();

    // Missed while away: two visible, one not.
    let b2 = batch(10);
    net.publish_alerts(&b2);
    wait_settled(&fanout, 6);
    let last_id = &seen[1].0;
    let again = StreamClient::connect(&url, &desk_token, Some(last_id));
    let missed: BTreeSet<String> = (0..2)
        .map(|_| again.next_alert(Duration::from_secs(30)).expect("missed alert").1)
        .collect();
    assert_eq!(
        missed,
        BTreeSet::from([b2[0].alert_id.clone(), b2[2].alert_id.clone()])
    );
    // Nothing else was owed: the next event is the next new alert.
    let next = alert(20, Tlp::Clear, Level::Low);
    net.publish_alerts(std::slice::from_ref(&next));
    assert_eq!(again.next_alert(Duration::from_secs(30)).unwrap().1, next.alert_id);
    again.close();

    // The stream channel's receipts say the alerts were made available to the desk.
    let receipts = net.receipts();
    assert_eq!(receipts.len(), 5);
    assert!(receipts.iter().all(|r| r.channel == ewn_model::Channel::Stream));
    fanout.stop();
}
