//! The fan-out across a broker crash: Tansu (sqlite) killed with SIGKILL in the middle of
//! deliveries and started again on the same data. Its own broker, so the crash touches no
//! other test.
//!
//! The clients' `message_timeout_ms` is 5 s here (30 s by default), so a receipt the dead
//! broker cannot take fails, and is queued to be written again, well inside the downtime;
//! `/healthz` turns red 10 s (receipt grace) + 30 s (stale) after that.
//!
//! One test is `#[ignore]`d, with the reason: it reproduces a defect of Tansu 0.6.0 (its
//! sqlite storage panics after a restart when an idempotent producer whose records timed
//! out while it was down produces again, and answers nothing from then on), which the
//! fan-out works around by renewing its producer after a timeout (`ConfirmingProducer::
//! renew_if_stale`, from `Core::renew_producer`);
//! `make test-broker-restart` runs it. The other tests show what the broker survives and
//! that the fan-out loses nothing across the crash.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::hooks::*;
use common::{Net, wait_until};
use ewn_kafka::KafkaSettings;
use ewn_model::{Alert, DeliveryOutcome, Level, Tlp};
use ewn_testkit::{Broker, Engine, start_broker, unique_prefix};

const SUBS: [&str; 3] = ["slow", "fast-1", "fast-2"];

/// Publishes alerts `from..from + n`, one every `every`, each confirmed by the broker.
fn pace(net: &mut Net, from: u64, n: u64, every: Duration) -> Vec<Alert> {
    let mut out = Vec::new();
    for i in from..from + n {
        let a = alert(i, Tlp::Green, Level::High);
        net.publish_alerts(std::slice::from_ref(&a));
        out.push(a);
        let next = Instant::now() + every;
        wait_until("pace", Duration::from_secs(5), || Instant::now() >= next);
    }
    out
}

/// Polls `/healthz` until it answers `want`, up to `timeout`; the time it took and the body.
fn wait_health(fanout: &Fanout, want: u16, timeout: Duration) -> (Duration, String) {
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < timeout {
        match fanout.healthz() {
            Ok((s, body)) if s == want => return (start.elapsed(), body),
            Ok((s, body)) => last = format!("{s} {body}"),
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("/healthz did not answer {want} within {timeout:?}; last: {last}");
}

/// Prints the end of Tansu's log when the test fails.
struct LogOnPanic<'a>(&'a Broker);

impl Drop for LogOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // The first errors after the restart, then the end.
            let log = std::fs::read_to_string(self.0.dir.join("tansu.log")).unwrap_or_default();
            let after: Vec<&str> = log
                .split("--- restarted ---")
                .nth(1)
                .unwrap_or("")
                .lines()
                .filter(|l| l.contains("ERROR") || l.contains("WARN") || l.contains("panic"))
                .take(15)
                .collect();
            eprintln!(
                "--- tansu log: first errors after the restart ---\n{}\n--- tansu log (end) ---\n{}",
                after.join("\n"),
                self.0.log()
            );
        }
    }
}

#[test]
fn a_broker_killed_mid_delivery_loses_no_delivery_and_no_receipt() {
    let began = Instant::now();
    let broker =
        start_broker(Engine::Sqlite).unwrap_or_else(|e| panic!("Tansu broker did not start: {e}"));
    let _log = LogOnPanic(&broker);
    let settings = KafkaSettings {
        brokers: broker.addr.clone(),
        topic_prefix: unique_prefix("broker-restart"),
        partitions: 3,
        statistics_interval_ms: 0,
        message_timeout_ms: 5_000,
        ..KafkaSettings::default()
    };
    let mut net = Net::on(settings.clone());
    let hooks = Hooks::start();
    // 1 s a delivery until the kill, so the kill lands mid-delivery however long the fast
    // endpoints take on a loaded machine (at 200 ms the slow one caught up once, in CI);
    // 200 ms after it.
    hooks.set("slow", Mode::Slow(Duration::from_secs(1)));
    let subs = SUBS
        .map(|id| webhook_sub(&hooks, id, "KZ-KNB", Tlp::Amber))
        .to_vec();
    let fanout = start_fanout(fanout_config(&settings, subs));
    wait_health(&fanout, 200, Duration::from_secs(30));

    // 150 alerts at 20/s; the slow endpoint (1/s) is far behind when the broker dies.
    let mut alerts = pace(&mut net, 0, 150, Duration::from_millis(50));
    wait_until(
        "the fast endpoints got every alert",
        Duration::from_secs(60),
        || {
            hooks.delivered("fast-1").len() >= alerts.len()
                && hooks.delivered("fast-2").len() >= alerts.len()
        },
    );
    let slow_at_kill = hooks.hits("slow").len();
    assert!(
        slow_at_kill < alerts.len() - 20,
        "the kill must land mid-delivery (slow endpoint already at {slow_at_kill})"
    );
    broker.kill9().unwrap();
    let killed = Instant::now();
    hooks.set("slow", Mode::Slow(Duration::from_millis(200)));
    eprintln!(
        "broker killed at {:.1} s; slow endpoint at {slow_at_kill}/{}",
        began.elapsed().as_secs_f64(),
        alerts.len()
    );

    // Deliveries go on from what the fan-out holds; their receipts cannot be written.
    // `/healthz` must turn red, and its `receipts` part must stall (10 s grace + 30 s
    // stale after the first receipt fails, which is up to 5 s after the kill).
    let mut red_after = None;
    let mut receipts_red_after = None;
    let mut max_failing = 0.0f64;
    let mut last = String::new();
    while killed.elapsed() < Duration::from_secs(75) && receipts_red_after.is_none() {
        max_failing = max_failing.max(fanout.metric("ewn_fanout_receipts_failing", ""));
        if let Ok((503, body)) = fanout.healthz() {
            red_after.get_or_insert(killed.elapsed());
            if body.contains("receipts") {
                receipts_red_after = Some(killed.elapsed());
            }
            last = body.trim().to_string();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let slow_while_down = hooks.hits("slow").len() - slow_at_kill;
    eprintln!(
        "/healthz red {:?} after the kill, its receipts part {:?} (last: {last}); at most {max_failing} receipts queued as failing; {slow_while_down} slow deliveries while down",
        red_after, receipts_red_after
    );
    let red_after = red_after.expect("/healthz red while the broker was down");
    assert!(
        max_failing > 0.0,
        "receipts were failing while the broker was down"
    );

    broker
        .restart()
        .unwrap_or_else(|e| panic!("Tansu did not start again: {e}"));
    let restarted = Instant::now();
    let killed_for = restarted.duration_since(killed);
    eprintln!(
        "broker restarted after {:.1} s down",
        restarted.duration_since(killed).as_secs_f64()
    );
    // And more alerts after the restart, from a producer of its own (the test's, not
    // the fan-out's). Known failure (2026-12-01): Tansu 0.6.0's sqlite storage panics
    // ("more or less than one row", tansu-storage lite.rs:503) on a Produce soon after
    // the restart, and every storage request fails after that. Reproduced without the
    // fan-out by `a_producer_whose_records_timed_out_while_down_produces_after_the_restart`.
    let mut after = Net::on(settings.clone());
    alerts.extend(pace(&mut after, 1_000, 50, Duration::from_millis(50)));

    let complete = |name: &str| {
        let got: BTreeSet<String> = hooks.delivered(name).iter().map(Hit::alert_id).collect();
        alerts.iter().all(|a| got.contains(&a.alert_id))
    };
    let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_until(
            "every alert at every endpoint",
            Duration::from_secs(180),
            || SUBS.iter().all(|s| complete(s)),
        );
        wait_until("nothing pending", Duration::from_secs(120), || {
            fanout.metric("ewn_fanout_pending_alerts", "") == 0.0
                && fanout.metric("ewn_fanout_receipts_failing", "") == 0.0
                && fanout.metric("ewn_fanout_retries_settled_total", "")
                    >= fanout.metric("ewn_fanout_parked_deliveries_total", "")
        });
    }));
    if let Err(e) = done {
        eprintln!(
            "delivered: {:?}; pending {}; receipts failing {}; alerts read {}\n--- tansu log ---\n{}",
            SUBS.map(|s| hooks.delivered(s).len()),
            fanout.metric("ewn_fanout_pending_alerts", ""),
            fanout.metric("ewn_fanout_receipts_failing", ""),
            fanout.metric("ewn_fanout_alerts_total", ""),
            broker.log()
        );
        std::panic::resume_unwind(e);
    }
    let settled = restarted.elapsed();
    wait_health(&fanout, 200, Duration::from_secs(60));
    // Receipts timed out while the broker was down: the producer renewed itself (Tansu
    // 0.6.0 serves no producer whose records timed out), and the renewal counted.
    let renewals = fanout.metric("ewn_kafka_producer_renewals_total", "client=\"fanout\"");
    assert!(renewals >= 1.0, "{renewals} producer renewals");
    eprintln!(
        "settled {:.1} s after the restart; /healthz green {:.1} s after it",
        settled.as_secs_f64(),
        restarted.elapsed().as_secs_f64()
    );

    // Every attempt at an alert carried one webhook-id, and every one verifies.
    let mut ids: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for h in hooks.all() {
        verify_standard_webhook(&secret_of(&h.name), &h).unwrap();
        ids.entry((h.name.clone(), h.alert_id()))
            .or_default()
            .insert(h.webhook_id.clone());
    }
    let mixed: Vec<_> = ids.iter().filter(|(_, s)| s.len() > 1).collect();
    assert!(
        mixed.is_empty(),
        "re-deliveries with a new webhook-id: {mixed:?}"
    );
    assert_eq!(ids.len(), SUBS.len() * alerts.len());

    // Every delivery has its receipt on <prefix>deliveries, with the webhook-id sent.
    let receipts = net.receipts();
    let mut by_key: BTreeMap<(String, String, i32), Vec<&ewn_model::DeliveryReceipt>> =
        BTreeMap::new();
    for r in &receipts {
        by_key
            .entry((
                r.alert_id.clone(),
                r.subscription_id.clone(),
                r.escalation_step,
            ))
            .or_default()
            .push(r);
    }
    let mut missing = Vec::new();
    for a in &alerts {
        for s in SUBS {
            match by_key.get(&(a.alert_id.clone(), s.to_string(), 0)) {
                None => missing.push(format!("{s}/{}", a.alert_id)),
                Some(rs) => {
                    for r in rs {
                        assert_eq!(r.outcome, DeliveryOutcome::Delivered, "{r:?}");
                        let sent = &ids[&(s.to_string(), a.alert_id.clone())];
                        assert!(
                            r.webhook_id.as_ref().is_some_and(|w| sent.contains(w)),
                            "receipt's webhook-id is not the one sent: {r:?} vs {sent:?}"
                        );
                    }
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "{} deliveries without a receipt: {missing:?}",
        missing.len()
    );
    let duplicates = receipts.len() - by_key.len();
    let resent = hooks.all().len() - ids.len();
    eprintln!(
        "{} alerts x {} subscriptions: {} receipts ({duplicates} duplicates), {resent} repeated webhook attempts; total {:.1} s",
        alerts.len(),
        SUBS.len(),
        receipts.len(),
        began.elapsed().as_secs_f64()
    );
    fanout.stop();
    broker.stop().unwrap();
    // Checked last, so the recovery above is checked whatever this says.
    assert!(
        receipts_red_after.is_some(),
        "the `receipts` health part kept beating while receipts could not be written for {:.0} s (healthz was red after {:.1} s only for: {last})",
        killed_for.as_secs_f64(),
        red_after.as_secs_f64()
    );
}

/// The broker alone: records produced before a `kill -9`, then after the restart on the
/// same sqlite data, from a fresh producer. Separates Tansu's recovery from the fan-out's.
#[test]
fn a_broker_killed_and_restarted_takes_records_again() {
    let broker =
        start_broker(Engine::Sqlite).unwrap_or_else(|e| panic!("Tansu broker did not start: {e}"));
    let _log = LogOnPanic(&broker);
    let settings = KafkaSettings {
        brokers: broker.addr.clone(),
        topic_prefix: unique_prefix("broker-restart-alone"),
        partitions: 3,
        statistics_interval_ms: 0,
        message_timeout_ms: 5_000,
        ..KafkaSettings::default()
    };
    let mut net = Net::on(settings.clone());
    pace(&mut net, 0, 30, Duration::from_millis(20));
    broker.kill9().unwrap();
    broker.restart().unwrap();
    let mut after = Net::on(settings);
    pace(&mut after, 100, 30, Duration::from_millis(20));
    assert_eq!(after.alerts().len(), 60);
    broker.stop().unwrap();
}

/// As above, but the producer that lived through the crash goes on producing after the
/// restart, as a long-running service's producer (the fan-out's receipts) does.
#[test]
fn a_producer_that_lived_through_the_crash_produces_after_the_restart() {
    let broker =
        start_broker(Engine::Sqlite).unwrap_or_else(|e| panic!("Tansu broker did not start: {e}"));
    let _log = LogOnPanic(&broker);
    let settings = KafkaSettings {
        brokers: broker.addr.clone(),
        topic_prefix: unique_prefix("broker-restart-producer"),
        partitions: 3,
        statistics_interval_ms: 0,
        message_timeout_ms: 5_000,
        ..KafkaSettings::default()
    };
    let mut net = Net::on(settings);
    pace(&mut net, 0, 30, Duration::from_millis(20));
    broker.kill9().unwrap();
    broker.restart().unwrap();
    pace(&mut net, 100, 30, Duration::from_millis(20));
    assert_eq!(net.alerts().len(), 60);
    broker.stop().unwrap();
}

/// A producer whose records timed out while the broker was down (as the fan-out's
/// receipts do) produces again after the restart. Known failure (2026-12-01, Tansu 0.6.0
/// sqlite): the first Produce of such a producer after the restart panics Tansu's storage
/// task (tansu-storage lite.rs:503, "more or less than one row") and nothing is confirmed
/// again; a producer without timed-out records is fine (the test above).
#[test]
#[ignore = "Tansu 0.6.0's storage panics here (tansu-storage lite.rs:503, \"more or less than one row\"); run with `make test-broker-restart`"]
fn a_producer_whose_records_timed_out_while_down_produces_after_the_restart() {
    use std::sync::Arc;

    use ewn_kafka::RecordProducer;
    use ewn_kafka::producer::Tally;

    let broker =
        start_broker(Engine::Sqlite).unwrap_or_else(|e| panic!("Tansu broker did not start: {e}"));
    let _log = LogOnPanic(&broker);
    let settings = KafkaSettings {
        brokers: broker.addr.clone(),
        topic_prefix: unique_prefix("broker-restart-timedout"),
        partitions: 3,
        statistics_interval_ms: 0,
        message_timeout_ms: 5_000,
        ..KafkaSettings::default()
    };
    let net = Net::on(settings.clone());
    let topic = net.topics().alerts();
    let tally = Arc::new(Tally::default());
    let producer = RecordProducer::new(&settings, "survivor", tally.clone(), None).unwrap();
    let send = |from: usize, to: usize| {
        for k in from..to {
            producer
                .send(&topic, Some(b"key"), Some(b"value"), k)
                .unwrap();
        }
    };
    send(0, 10);
    producer.flush(Duration::from_secs(30)).unwrap();
    broker.kill9().unwrap();
    send(10, 15);
    // They time out (5 s).
    wait_until(
        "the records sent while down fail",
        Duration::from_secs(30),
        || tally.report().failed.len() == 5,
    );
    broker.restart().unwrap();
    // Written again every half second until one is confirmed (as the fan-out does).
    let restarted = Instant::now();
    let mut k = 15;
    while tally.report().confirmed == 10 {
        assert!(
            restarted.elapsed() < Duration::from_secs(90),
            "nothing confirmed 90 s after the restart: {:?}",
            tally.report().failed.last()
        );
        send(k, k + 1);
        k += 1;
        let next = Instant::now() + Duration::from_millis(500);
        wait_until("pace", Duration::from_secs(5), || Instant::now() >= next);
    }
    eprintln!(
        "first record confirmed {:.1} s after the restart; {} failed",
        restarted.elapsed().as_secs_f64(),
        tally.report().failed.len()
    );
    producer.flush(Duration::from_secs(30)).unwrap();
    let before = tally.report().confirmed;
    send(1_000, 1_010);
    producer.flush(Duration::from_secs(30)).unwrap();
    let report = tally.report();
    assert_eq!(
        report.confirmed,
        before + 10,
        "failed: {:?}",
        report.failed.last()
    );
    broker.stop().unwrap();
}
