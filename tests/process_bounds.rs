//! Issue 9 against a real broker (Tansu): correlation that no member state can blind,
//! flood or exhaust, and a correlate stage that stays correct through rebalances.
#![allow(clippy::unwrap_used)] // tests fail loudly on anything unexpected

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;
use ewn_model::{Alert, AvroRecord, Category, Direction, Level, MsgType, RejectReason};
use ewn_processor::rules::{Filter, GroupBy, RuleConfig, RuleKind};
use sha2::{Digest, Sha256};

fn high(mut i: ewn_model::Incident) -> ewn_model::Incident {
    i.severity = Level::High;
    i
}

/// The case: one state's report dated ahead of the clock (but inside the future
/// skew) does not make another state's recent reports late, and the burst still fires;
/// dated beyond the skew, it is rejected `FUTURE` and counted for its state.
#[test]
fn a_clock_ahead_moves_nobody_and_beyond_the_skew_is_future() {
    let mut net = Net::new("ahead");
    let p = start(net.config(300));
    let now = now_ms();
    // KG: one LOW report 55 s ahead (signed 58 s ahead), in KZ's area.
    let mut ahead = incident(1, "KG", now + 55_000, Category::Other, &["x"]);
    ahead.severity = Level::Low;
    ahead.reported_at = now + 58_000;
    let ahead = in_area(ahead, "KZ-ZHT");
    net.publish(std::slice::from_ref(&ahead));
    p.wait_correlated(rekeyed_count(std::slice::from_ref(&ahead)));
    // KZ: five HIGH weapons seizures 90 s old.
    let burst: Vec<_> = (0..5)
        .map(|n| {
            high(in_area(
                incident(
                    10 + n,
                    "KZ",
                    now - 90_000 + n as i64,
                    Category::WeaponsSeizure,
                    &[&format!("s{n}")],
                ),
                "KZ-ZHT",
            ))
        })
        .collect();
    net.publish(&burst);
    p.wait_correlated(rekeyed_count(std::slice::from_ref(&ahead)) + rekeyed_count(&burst));
    let alerts = net.alerts();
    assert!(
        alerts
            .iter()
            .any(|a| a.rule == "area_burst" && a.key == "area:KZ-ZHT"),
        "{alerts:?}"
    );
    let rejections = net.rejections();
    assert!(
        rejections.iter().all(|r| r.reason != RejectReason::Late),
        "{rejections:?}"
    );
    // 280 s ahead (signed 290 s ahead, inside the 300 s signing skew): FUTURE.
    let mut far = incident(2, "KG", now + 280_000, Category::Other, &["y"]);
    far.reported_at = now + 290_000;
    net.publish(std::slice::from_ref(&far));
    wait_until("the FUTURE rejection", Duration::from_secs(60), || {
        p.metric(
            "ewn_processor_incidents_rejected_total",
            "reason=\"future\",state=\"KG\"",
        ) >= 1.0
    });
    let future: Vec<_> = net
        .rejections()
        .into_iter()
        .filter(|r| r.reason == RejectReason::Future)
        .collect();
    assert_eq!(future.len(), 1);
    assert_eq!(
        future[0].incident_id.as_deref(),
        Some(far.incident_id.as_str())
    );
    assert!(future[0].detail.contains("ahead"), "{}", future[0].detail);
    p.stop();
}

/// A state whose clock lags (TJ, an hour behind) keeps sending; another state's exit
/// without entry is still decided while TJ is active, even where TJ is the only source
/// still sending: held back by the idle timeout at most, not by TJ's hour.
#[test]
fn a_lagging_clock_holds_back_the_others_by_the_idle_timeout_at_most() {
    let mut net = Net::new("lagging");
    let mut config = net.config(300);
    config.process.rules = vec![RuleConfig {
        first: Some(Filter {
            direction: Some(Direction::Exit),
            ..Filter::default()
        }),
        then: Some(Filter {
            direction: Some(Direction::Entry),
            ..Filter::default()
        }),
        ..RuleConfig::new(
            "quick_exit",
            RuleKind::Absence,
            GroupBy::Subject,
            60,
            Level::Medium,
        )
    }];
    let p = start(config);
    let lag = |n: u64| {
        let mut i = incident(
            1000 + n,
            "TJ",
            now_ms() - 3_600_000,
            Category::Other,
            &["tj"],
        );
        i.reported_at = now_ms();
        i
    };
    net.publish(&[lag(0)]);
    // (the one rule groups by subject: one re-keyed record a report)
    p.wait_correlated(1);
    // KZ: an exit 400 s ago (its window ended 340 s ago), correlated first (read after
    // KZ's present it would be late: 400 s is beyond the lateness), then reports of now
    // under many keys, so every partition of the re-keyed topic sees KZ's present.
    let now = now_ms();
    let exit = at_crossing(
        incident(
            1,
            "KZ",
            now - 400_000,
            Category::SuspiciousCrossing,
            &["gone"],
        ),
        Direction::Exit,
    );
    net.publish(std::slice::from_ref(&exit));
    p.wait_correlated(1 + rekeyed_by_subject(std::slice::from_ref(&exit)));
    let kz: Vec<_> = (0..24)
        .map(|n| {
            in_area(
                incident(2 + n, "KZ", now, Category::Other, &[&format!("here{n}")]),
                &format!("KZ-A{n}"),
            )
        })
        .collect();
    net.publish(&kz);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut n = 1;
    let fired = loop {
        // TJ stays active throughout, an hour behind.
        net.publish(&[lag(n)]);
        n += 1;
        if net.alerts().iter().any(|a| a.rule == "quick_exit") {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(fired, "the exit was never decided while TJ lagged");
    assert!(
        p.metric("ewn_processor_watermark_sources", "") >= 1.0,
        "sources are tracked"
    );
    p.stop();
}

/// 10,000 MEDIUM+ reports in one area within an hour, through the broker: every alert
/// record within the documented size, UPDATEs bounded by the interval, and the last
/// UPDATE's digest equal to the digest of the 10,000 ids computed here.
#[test]
fn ten_thousand_reports_in_one_area_stay_bounded() {
    let mut net = Net::new("flood");
    let mut config = net.config(3600);
    config.process.alerts.update_interval_secs = 2;
    let max_bytes = config.process.alerts.max_bytes;
    let p = start(config);
    let base = now_ms() - 3_500_000;
    let incidents: Vec<_> = (0..10_000u64)
        .map(|n| {
            high(in_area(
                incident(
                    n,
                    "KZ",
                    base + n as i64 * 340,
                    Category::WeaponsSeizure,
                    &[&format!("f{n}")],
                ),
                "KZ-ZHT",
            ))
        })
        .collect();
    let started = Instant::now();
    net.publish(&incidents);
    p.wait_correlated(rekeyed_count(&incidents));
    let mut ids: Vec<&str> = incidents.iter().map(|i| i.incident_id.as_str()).collect();
    ids.sort_unstable();
    let mut h = Sha256::new();
    for id in &ids {
        h.update(id.as_bytes());
        h.update(b"\n");
    }
    let expected: [u8; 32] = h.finalize().into();
    let mut burst: Vec<Alert> = Vec::new();
    wait_until("an UPDATE with all 10,000", Duration::from_secs(60), || {
        burst = net
            .alerts()
            .into_iter()
            .filter(|a| a.rule == "area_burst")
            .collect();
        burst.last().is_some_and(|a| a.incident_count == 10_000)
    });
    let elapsed = started.elapsed().as_secs_f64();
    let last = burst.last().unwrap();
    assert_eq!(last.incident_digest, expected);
    assert_eq!(last.msg_type, MsgType::Update);
    // Reports reach the area's key a little out of order (three partitions read side by
    // side), so an early ALERT may be withdrawn for the canonical one: one stands.
    assert_eq!(live_ids(&burst).len(), 1, "one episode");
    let updates = burst
        .iter()
        .filter(|a| a.msg_type == MsgType::Update)
        .count();
    let bound = (elapsed / 2.0).ceil() as usize + 2;
    assert!(
        updates <= bound,
        "{updates} UPDATEs in {elapsed:.1} s with a 2 s interval"
    );
    let largest = burst
        .iter()
        .map(|a| a.to_avro().unwrap().len())
        .max()
        .unwrap();
    assert!(largest <= max_bytes, "{largest} bytes");
    assert!(last.evidence.len() <= 20);
    eprintln!(
        "10,000 reports: {} alert records, {updates} UPDATEs in {elapsed:.1} s, largest {largest} bytes",
        burst.len()
    );
    p.stop();
}

/// Six travellers over three states and six bursts, in event-time order.
fn traffic(base: i64) -> Vec<ewn_model::Incident> {
    let mut v = Vec::new();
    for k in 0..6u64 {
        let t = base + k as i64 * 10 * MIN;
        for (j, state) in ["KZ", "KG", "TJ"].iter().enumerate() {
            let i = incident(
                100 * k + j as u64,
                state,
                t + j as i64 * 20 * MIN,
                Category::SuspiciousCrossing,
                &[&format!("traveller{k}")],
            );
            // each crossing in its own area, so the travellers make no burst
            v.push(in_area(i, &format!("{state}-T{k}")));
        }
        for n in 0..6u64 {
            v.push(in_area(
                incident(
                    100 * k + 10 + n,
                    "UZ",
                    t + n as i64 * 5 * MIN,
                    Category::DocumentFraud,
                    &[&format!("u{k}-{n}")],
                ),
                &format!("UZ-A{k}"),
            ));
        }
    }
    v.sort_by_key(|i| i.occurred_at);
    v
}

fn alert_ids(alerts: &[Alert]) -> BTreeSet<String> {
    alerts
        .iter()
        .filter(|a| a.msg_type == MsgType::Alert)
        .map(|a| a.alert_id.clone())
        .collect()
}

/// A third processor joins and leaves while traffic flows: the alert ids equal those of
/// one uninterrupted instance, and nothing is reported late.
#[test]
fn a_member_joining_and_leaving_changes_no_alert() {
    let base = now_ms() - 3 * HOUR;
    let incidents = traffic(base);
    // The reference: one instance, uninterrupted.
    let mut reference = Net::new("rebal-ref");
    let one = start(reference.config(4 * 3600));
    reference.publish(&incidents);
    one.wait_correlated(rekeyed_count(&incidents));
    // Live ids: reports of one key reach it from several topics and partitions in an
    // order no run controls, so an ALERT may be withdrawn for the canonical one; what
    // stands is the same whatever the order.
    let want = live_ids(&reference.alerts());
    one.stop();
    assert_eq!(want.len(), 12, "{want:?}");

    let mut net = Net::new("rebal");
    let a = start(net.config(4 * 3600));
    let b = start(net.config(4 * 3600));
    let chunks: Vec<&[ewn_model::Incident]> = incidents.chunks(incidents.len() / 3 + 1).collect();
    net.publish(chunks[0]);
    let c = start(net.config(4 * 3600));
    wait_until(
        "the third member to hold partitions",
        Duration::from_secs(60),
        || c.metric("ewn_kafka_assigned_partitions", "process-correlate") >= 1.0,
    );
    net.publish(chunks[1]);
    wait_until(
        "the third member to correlate",
        Duration::from_secs(60),
        || c.metric("ewn_processor_correlated_events_total", "") >= 1.0,
    );
    c.stop();
    net.publish(chunks[2]);
    let mut got = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while got != want && Instant::now() < deadline {
        got = live_ids(&net.alerts());
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(
        got, want,
        "the same alert ids as one uninterrupted instance"
    );
    let all = alert_ids(&net.alerts());
    eprintln!(
        "rebalanced: {} live, {} ALERT ids in all (reference: {})",
        got.len(),
        all.len(),
        alert_ids(&reference.alerts()).len()
    );
    let late: Vec<_> = net
        .rejections()
        .into_iter()
        .filter(|r| r.reason == RejectReason::Late)
        .collect();
    assert!(late.is_empty(), "no spurious LATE: {late:?}");
    a.stop();
    b.stop();
}
