//! Soak: 24 hours of event time at 50 incidents/s from the simulator, accelerated (event
//! time runs ahead of the wall clock on the processor's own injected clock), through the
//! processor's state-holding path: the replay guard, scoring, immediate rules, re-keying
//! into the default 3 partitions, and each partition's correlation engine with the
//! shipped budgets. Prints, per simulated hour and at the end, the state held, what the
//! budgets turned away, the alerts, and this process's peak RSS (VmHWM), to compare with
//! the 1 GiB pod limit in `deploy/k8s`.
//!
//! `make soak-state` (`cargo bench -p ewn --bench soak`); `EWN_SOAK_HOURS` (24) and
//! `EWN_SOAK_RATE` (50) change the load. Not part of CI.
//!
//! What it leaves out, and why that is fair: signature checks and Kafka I/O hold no state
//! (librdkafka's queues are bounded by its own settings, `queued.max.messages.kbytes`);
//! everything that grows with traffic in the processor is here.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::collections::BTreeMap;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::sync::Arc;
use std::time::Instant;

use ewn_model::{Evidence, MsgType};
use ewn_processor::ProcessSettings;
use ewn_processor::correlate::{PartitionState, RuleSet, event_of};
use ewn_processor::event::{Event, Interner};
use ewn_processor::replay::ReplayGuard;
use ewn_processor::rules::default_rules;
use ewn_sim::generator::{Generator, GeneratorConfig};
use ewn_sim::scenario::Scenario;
use ewn_trust::BlindingKey;

fn env_or(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A line of /proc/self/status in MiB (VmRSS, VmHWM).
fn status_mib(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn main() {
    let hours = env_or("EWN_SOAK_HOURS", 24.0);
    let rate = env_or("EWN_SOAK_RATE", 50.0);
    let settings = ProcessSettings::default();
    let rules = Arc::new(
        RuleSet::new(default_rules(), settings.score.clone())
            .unwrap()
            .with_alerts(settings.alerts.clone()),
    );
    let partitions = 3;
    let mut parts: Vec<PartitionState> = (0..partitions)
        .map(|_| PartitionState::new(rules.clone(), settings.engine()))
        .collect();
    let mut guard = ReplayGuard::new(
        settings.replay_window_secs as i64 * 1000,
        settings.replay_max_ids,
    );
    let start = 1_800_000_000_000i64;
    let config = GeneratorConfig {
        seed: 42,
        rate_per_sec: rate,
        scenarios: Scenario::ALL.to_vec(),
    };
    let mut generator = Generator::new(&config, BlindingKey::from_bytes([7; 32]), start);
    let route = BuildHasherDefault::<DefaultHasher>::default();
    let groups = rules.stateful_groups();
    let mut interner = Interner::new(100_000);
    let mut batch = generator.prelude(start).unwrap();
    let mut alerts: BTreeMap<(String, MsgType), u64> = BTreeMap::new();
    let mut out = Vec::new();
    let mut incidents = 0u64;
    let mut records = 0u64;
    let mut offset = 0i64;
    let mut refused = 0u64;
    let mut evicted = 0u64;
    let end = start + (hours * 3_600_000.0) as i64;
    let wall = Instant::now();
    let mut t = start + 2_000;
    let mut next_report = start + 3_600_000;
    println!(
        "soak: {hours} h of event time at {rate}/s, {partitions} partitions, shipped budgets \
         (max_keys_per_rule {}, max_events_per_key {}, replay_max_ids {})",
        settings.state.max_keys_per_rule,
        settings.state.max_events_per_key,
        settings.replay_max_ids
    );
    println!(
        "hour  incidents  events_held  keys_held  state_mib(est)  replay_ids  rss_mib  peak_mib"
    );
    while t < end {
        generator.tick(t, &mut batch).unwrap();
        for g in batch.drain(..) {
            let i = &g.incident;
            incidents += 1;
            if guard.repeated(&i.incident_id, t) {
                continue;
            }
            let scored = rules.weights.score(i);
            let event = event_of(
                i,
                scored,
                Evidence {
                    incident_id: i.incident_id.clone(),
                    topic: format!("ewn.incidents.{}", i.reporter.state.to_lowercase()),
                    partition: 0,
                    offset,
                    key_id: format!("{}-2026", i.reporter.state.to_lowercase()),
                    signature: [1; 64],
                    payload_sha256: [2; 32],
                },
            );
            rules.immediate(&event, t, &mut out);
            for group in &groups {
                for key in event.keys(*group) {
                    // The re-keyed record, decoded as the correlate stage decodes it.
                    let (_, _, decoded) =
                        Event::from_record(event.to_record(*group, key), &mut interner).unwrap();
                    let record = Arc::new(decoded);
                    let p =
                        route.hash_one(format!("{}:{key}", group.as_str())) as usize % partitions;
                    parts[p].feed(*group, key, &record, offset, t, &mut out);
                    records += 1;
                }
            }
            offset += 1;
        }
        if (t - start) % 1_000 == 0 {
            for p in &mut parts {
                p.tick(t, &mut out);
                let s = p.take_stats();
                refused += s.refused.values().sum::<u64>();
                evicted += s.keys_evicted.values().sum::<u64>();
            }
            for a in out.drain(..) {
                *alerts.entry((a.rule.clone(), a.msg_type)).or_default() += 1;
            }
        }
        if t >= next_report {
            report(&parts, &guard, (t - start) / 3_600_000, incidents);
            next_report += 3_600_000;
        }
        t += 50;
    }
    let secs = wall.elapsed().as_secs_f64();
    report(&parts, &guard, (t - start) / 3_600_000, incidents);
    println!(
        "\n{incidents} incidents ({records} re-keyed records) in {secs:.0} s of wall time \
         ({:.0} incidents/s); refused at max_events_per_key: {refused}; keys evicted at \
         max_keys_per_rule: {evicted}; replay ids forgotten early: {}",
        incidents as f64 / secs,
        guard.take_forgotten_early()
    );
    println!("alerts by rule and type:");
    for ((rule, kind), n) in &alerts {
        println!("  {rule:24} {kind:7} {n}");
    }
    println!(
        "peak RSS (VmHWM): {:.0} MiB; pod limit in deploy/k8s: 1024 MiB",
        status_mib("VmHWM:")
    );
}

fn report(parts: &[PartitionState], guard: &ReplayGuard, hour: i64, incidents: u64) {
    let events: usize = parts
        .iter()
        .flat_map(|p| p.events_per_rule().map(|(_, n)| n))
        .sum();
    let keys: usize = parts
        .iter()
        .flat_map(|p| p.keys_per_rule().map(|(_, n)| n))
        .sum();
    let bytes: usize = parts.iter().map(|p| p.bytes()).sum();
    println!(
        "{hour:4}  {incidents:9}  {events:11}  {keys:9}  {:14.0}  {:10}  {:7.0}  {:8.0}",
        bytes as f64 / 1_048_576.0,
        guard.len(),
        status_mib("VmRSS:"),
        status_mib("VmHWM:")
    );
}
