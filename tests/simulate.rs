//! `ewn simulate` (ewn-sim) against the processor, in process, on a real broker (Tansu):
//! every planted scenario raises exactly the alert of its rule, and the background raises
//! nothing, at the default rate.
#![allow(clippy::unwrap_used)] // tests fail loudly on anything unexpected

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use common::*;
use ewn_model::{Category, MsgType};
use ewn_processor::correlate::alert_id;
use ewn_sim::{DEFAULT_RATE, Scenario, SimConfig, SimKeys, Summary};

/// How long the simulator runs in each test.
const RUN: Duration = Duration::from_secs(20);

/// Starts the processor (default settings: 300 s lateness, default rules) and waits until
/// both its stages consume, so the simulator's prelude is taken in before present-time
/// traffic (ewn_sim::scenario). The probe has no subject, matches no rule, and is older
/// than anything the simulator sends, so it makes nothing late.
fn start_processor(net: &mut Net) -> Running {
    let p = start(net.config(300));
    let probe = incident(1, "KZ", now_ms() - 48 * HOUR, Category::Other, &[]);
    net.publish(&[probe]);
    p.wait_correlated(1);
    p
}

/// The simulated states' keys, registered in the network's trust store (before the
/// processor starts, so it trusts them from the first record).
fn sim_keys(net: &Net) -> SimKeys {
    SimKeys::init(&net.dir.path().join("sim-keys"), &net.store, now_ms()).unwrap()
}

/// Runs the simulator on `net` for [`RUN`] at the default rate with `scenarios`.
fn simulate(net: &Net, keys: SimKeys, scenarios: Vec<Scenario>) -> Summary {
    let config = SimConfig {
        duration: Some(RUN),
        scenarios,
        ..SimConfig::new(net.settings.clone())
    };
    assert_eq!(config.rate_per_sec, DEFAULT_RATE);
    let summary = block_on(ewn_sim::run(config, keys, Arc::new(AtomicBool::new(false)))).unwrap();
    assert!(summary.success(), "every record confirmed: {summary:?}");
    assert!(summary.background > 0);
    summary
}

/// Waits until the processor has correlated everything the simulator sent (and the
/// probe); the rejections are shown if it never gets there.
fn wait_processed(net: &Net, p: &Running, s: &Summary) {
    // The default rules re-key each incident by area and by each subject.
    let want = 1 + s.confirmed + s.subjects;
    let deadline = Instant::now() + Duration::from_secs(90);
    while (p.metric("ewn_processor_correlated_events_total", "") as u64) < want {
        if Instant::now() > deadline {
            let rejected: Vec<_> = net
                .rejections()
                .into_iter()
                .map(|r| (r.reason, r.detail))
                .take(10)
                .collect();
            panic!(
                "correlated {} of {want} re-keyed events; rejections: {rejected:?}",
                p.metric("ewn_processor_correlated_events_total", "")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn every_planted_scenario_raises_its_alert_and_nothing_else() {
    let mut net = Net::new("simulate");
    let keys = sim_keys(&net);
    let p = start_processor(&mut net);
    let s = simulate(&net, keys, Scenario::ALL.to_vec());
    assert_eq!(
        s.planted
            .iter()
            .map(|p| p.scenario.as_str())
            .collect::<Vec<_>>(),
        Scenario::ALL.map(|s| s.name())
    );
    let want: BTreeSet<String> = s
        .planted
        .iter()
        .map(|p| alert_id(&p.rule, &p.key, p.window_start))
        .collect();
    wait_processed(&net, &p, &s);
    // The absence is decided on a tick after a present-time event passed the watermark.
    wait_until("every planted alert", Duration::from_secs(60), || {
        live_ids(&net.alerts()).is_superset(&want)
    });
    let alerts = net.alerts();
    let brief: Vec<_> = alerts
        .iter()
        .map(|a| (a.msg_type, a.rule.as_str(), a.key.as_str()))
        .collect();
    assert_eq!(
        alerts.len(),
        s.planted.len(),
        "only the planted alerts: {brief:?}"
    );
    for planted in &s.planted {
        let id = alert_id(&planted.rule, &planted.key, planted.window_start);
        let a = alerts.iter().find(|a| a.alert_id == id).unwrap();
        assert_eq!(a.msg_type, MsgType::Alert);
        assert_eq!(a.rule, planted.rule, "{}", planted.scenario);
        assert_eq!(a.key, planted.key, "{}", planted.scenario);
        let got: BTreeSet<&String> = a.incident_ids.iter().collect();
        let expected: BTreeSet<&String> = planted.incident_ids.iter().collect();
        assert_eq!(
            got, expected,
            "{}: the alert names its reports",
            planted.scenario
        );
    }
    let rejected: Vec<_> = net.rejections().into_iter().map(|r| r.reason).collect();
    assert!(
        rejected.is_empty(),
        "nothing rejected, nothing late: {rejected:?}"
    );
    p.stop();
}

#[test]
fn background_alone_raises_no_alert() {
    let mut net = Net::new("simbackground");
    let keys = sim_keys(&net);
    let p = start_processor(&mut net);
    let s = simulate(&net, keys, vec![]);
    assert!(s.planted.is_empty() && s.per_scenario.is_empty());
    wait_processed(&net, &p, &s);
    let alerts: Vec<_> = net.alerts().into_iter().map(|a| (a.rule, a.key)).collect();
    assert!(
        alerts.is_empty(),
        "{} background incidents raised {alerts:?}",
        s.sent
    );
    let rejected: Vec<_> = net.rejections().into_iter().map(|r| r.reason).collect();
    assert!(
        rejected.is_empty(),
        "nothing rejected, nothing late: {rejected:?}"
    );
    p.stop();
}
