//! The driver: signs each generated incident with its state's key and produces it to
//! `<prefix>incidents.<cc>` through the confirming producer, paced per tick, then waits for
//! the broker to confirm everything.
//!
//! Pacing. Every `tick_ms` the generator is asked for what is due by then (rate x elapsed
//! time, so a late tick catches up and the average rate holds), and the whole batch is
//! queued at once; no timer per record, so the rate is capped by signing and the broker,
//! not by sleeps. Confirmation is awaited once, at the end, on the delivery reports
//! (`Tally::wait_for`), not with rdkafka's `flush` (which sleeps in 100 ms rounds).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ewn_kafka::admin::ensure_topics;
use ewn_kafka::producer::{Tally, Then};
use ewn_kafka::{ConfirmingProducer, KafkaSettings, Topics};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::generator::{Generated, Generator, GeneratorConfig, Origin, Planted};
use crate::keys::SimKeys;
use crate::network::STATES;
use crate::scenario::Scenario;

/// Background incidents per second by default: a busy regional network (some 1.7 million
/// reports a day) that a 2-core laptop runs alongside the processor without strain.
pub const DEFAULT_RATE: f64 = 20.0;

/// What to simulate and where.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub kafka: KafkaSettings,
    pub seed: u64,
    /// Background incidents per second (0: scenarios only).
    pub rate_per_sec: f64,
    /// How long the present phase runs; `None`: until `shutdown`.
    pub duration: Option<Duration>,
    pub scenarios: Vec<Scenario>,
    /// How often the generator is asked for what is due.
    pub tick_ms: u64,
    /// Pause after the prelude (the past-placed absence exit) is confirmed, so a
    /// processor that is consuming takes it in before present-time traffic raises its
    /// watermark (see [`crate::scenario`]).
    pub prelude_gap_ms: u64,
}

impl SimConfig {
    /// Defaults: seed 1, [`DEFAULT_RATE`], until shutdown, every scenario, 50 ms ticks, a
    /// 2 s prelude gap.
    pub fn new(kafka: KafkaSettings) -> SimConfig {
        SimConfig {
            kafka,
            seed: 1,
            rate_per_sec: DEFAULT_RATE,
            duration: None,
            scenarios: Scenario::ALL.to_vec(),
            tick_ms: 50,
            prelude_gap_ms: 2_000,
        }
    }

    /// Every problem of the configuration, each naming its option.
    pub fn problems(&self) -> Vec<String> {
        let mut p = self.kafka.problems();
        if !(self.rate_per_sec.is_finite() && (0.0..=1_000_000.0).contains(&self.rate_per_sec)) {
            p.push("simulate.rate: must lie in 0..1000000 incidents per second".into());
        }
        if !(1..=10_000).contains(&self.tick_ms) {
            p.push("simulate.tick_ms: must lie in 1..10000".into());
        }
        p
    }
}

/// What a run did.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    pub seed: u64,
    /// When the run started (ms since the epoch).
    pub started_at: i64,
    /// The whole run, prelude and final confirmation included.
    pub elapsed_ms: u64,
    /// The present phase, over which the background rate is measured.
    pub present_ms: u64,
    pub target_rate: f64,
    /// Records queued to the broker.
    pub sent: u64,
    pub confirmed: u64,
    /// Records the broker did not confirm (failed or timed out).
    pub failed: u64,
    /// Distinct delivery errors, the first few.
    pub errors: Vec<String>,
    pub background: u64,
    /// Records per reporting state.
    pub per_state: BTreeMap<String, u64>,
    /// Records per scenario.
    pub per_scenario: BTreeMap<String, u64>,
    /// Subject entries over all records.
    pub subjects: u64,
    /// The scenarios sent in full, with the alerts to expect.
    pub planted: Vec<Planted>,
}

impl Summary {
    /// Background incidents per second achieved over the present phase.
    pub fn background_rate(&self) -> f64 {
        self.background as f64 / (self.present_ms.max(1) as f64 / 1000.0)
    }

    /// Every record confirmed.
    pub fn success(&self) -> bool {
        self.failed == 0 && self.confirmed == self.sent
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Runs the simulated network until `config.duration` has passed or `shutdown` is set,
/// then plants whatever scenario reports are left and waits for the broker to confirm
/// everything. Creates the network's topics first if they are missing.
pub async fn run(config: SimConfig, keys: SimKeys, shutdown: Arc<AtomicBool>) -> Result<Summary> {
    let mut problems = config.problems();
    let missing = keys.missing_states();
    if !missing.is_empty() {
        problems.push(format!("keys: no signing key for {}", missing.join(", ")));
    }
    if !problems.is_empty() {
        return Err(Error::Config(problems));
    }
    let states: Vec<String> = STATES.iter().map(|s| s.code.to_lowercase()).collect();
    let topics = Topics::new(&config.kafka.topic_prefix);
    ensure_topics(&config.kafka, &topics.all(&states, config.kafka.partitions)).await?;
    tokio::task::spawn_blocking(move || drive(&config, keys, &shutdown))
        .await
        .map_err(|e| Error::Bug(format!("the simulator thread failed: {e}")))?
}

/// Signs, produces and counts.
struct Sender {
    /// Used from the simulator's own thread, so a send may park it while the producer is
    /// full (at most `kafka.message_timeout_ms`).
    producer: ConfirmingProducer<Arc<Tally>>,
    topics: Topics,
    keys: SimKeys,
    value: Vec<u8>,
    summary: Summary,
}

impl Sender {
    fn send(&mut self, g: &Generated) -> Result<()> {
        let state = &g.incident.reporter.state;
        let signer = self
            .keys
            .signer(state)
            .ok_or_else(|| Error::Config(vec![format!("keys: no signing key for {state}")]))?;
        let key = ewn_gateway::seal(signer, &g.incident, now_ms(), &mut self.value)?;
        let id = self.summary.sent as usize;
        self.producer.send_with_blocking(
            &self.topics.incidents(state),
            Some(key),
            Some(&self.value),
            Then::sink(id),
        )?;
        let s = &mut self.summary;
        s.sent += 1;
        s.subjects += g.incident.subjects.len() as u64;
        *s.per_state.entry(state.clone()).or_default() += 1;
        match g.origin {
            Origin::Background => s.background += 1,
            Origin::Scenario(sc) => *s.per_scenario.entry(sc.name().into()).or_default() += 1,
        }
        Ok(())
    }
}

/// Sleeps `d`, waking early when `shutdown` is set.
fn pause(d: Duration, shutdown: &AtomicBool) {
    let end = Instant::now() + d;
    while !shutdown.load(Ordering::Relaxed) {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}

fn drive(config: &SimConfig, keys: SimKeys, shutdown: &AtomicBool) -> Result<Summary> {
    let started = Instant::now();
    let start_ms = now_ms();
    let tally = Arc::new(Tally::default());
    let producer = ConfirmingProducer::new(&config.kafka, "simulate", tally.clone(), None)?;
    let mut generator = Generator::new(
        &GeneratorConfig {
            seed: config.seed,
            rate_per_sec: config.rate_per_sec,
            scenarios: config.scenarios.clone(),
        },
        keys.blinding().clone(),
        start_ms,
    );
    let mut out = Sender {
        producer,
        topics: Topics::new(&config.kafka.topic_prefix),
        keys,
        value: Vec::with_capacity(1024),
        summary: Summary {
            seed: config.seed,
            started_at: start_ms,
            target_rate: config.rate_per_sec,
            ..Summary::default()
        },
    };
    let confirm_within =
        Duration::from_millis(config.kafka.message_timeout_ms + config.kafka.request_timeout_ms);
    tracing::info!(
        prefix = %config.kafka.topic_prefix,
        rate = config.rate_per_sec,
        seed = config.seed,
        scenarios = config.scenarios.len(),
        "simulation starting"
    );

    let prelude = generator.prelude(start_ms)?;
    if !prelude.is_empty() {
        for g in &prelude {
            out.send(g)?;
        }
        if !tally.wait_for(out.summary.sent, confirm_within) {
            tracing::warn!("the prelude was not confirmed in time; going on");
        }
        pause(Duration::from_millis(config.prelude_gap_ms), shutdown);
    }

    let present = Instant::now();
    let tick = Duration::from_millis(config.tick_ms.max(1));
    let end = config.duration.map(|d| present + d);
    let mut batch: Vec<Generated> = Vec::new();
    let mut ticks: u32 = 0;
    let mut logged = Instant::now();
    while !shutdown.load(Ordering::Relaxed) && end.is_none_or(|e| Instant::now() < e) {
        generator.tick(now_ms(), &mut batch)?;
        for g in batch.drain(..) {
            out.send(&g)?;
        }
        if logged.elapsed() >= Duration::from_secs(10) {
            logged = Instant::now();
            tracing::info!(
                sent = out.summary.sent,
                confirmed = tally.report().confirmed,
                "simulating"
            );
        }
        // A fixed schedule, so sleeps do not add up to drift; when behind, go on at once
        // (the generator catches up by rate x elapsed).
        ticks = ticks.saturating_add(1);
        let now = Instant::now();
        let mut next = present + tick * ticks;
        if next <= now {
            ticks = (now.duration_since(present).as_millis() / tick.as_millis().max(1)) as u32;
            next = now;
        }
        if let Some(e) = end {
            next = next.min(e);
        }
        std::thread::sleep(next.saturating_duration_since(now));
    }
    generator.finish(now_ms(), &mut batch)?;
    for g in batch.drain(..) {
        out.send(&g)?;
    }
    let present_ms = present.elapsed().as_millis() as u64;

    if !tally.wait_for(out.summary.sent, confirm_within) {
        tracing::warn!(
            sent = out.summary.sent,
            reported = tally.reported(),
            "not every record was confirmed in time"
        );
    }
    // Dropping the producer purges anything still in flight, each reported as failed:
    // afterwards every record is either confirmed or failed.
    let Sender {
        producer,
        mut summary,
        ..
    } = out;
    drop(producer);
    let report = tally.report();
    summary.confirmed = report.confirmed;
    summary.failed = summary.sent - report.confirmed.min(summary.sent);
    let mut errors: Vec<String> = report.failed.into_iter().map(|(_, e)| e).collect();
    errors.sort();
    errors.dedup();
    errors.truncate(5);
    summary.errors = errors;
    summary.planted = generator.planted();
    summary.present_ms = present_ms;
    summary.elapsed_ms = started.elapsed().as_millis() as u64;
    tracing::info!(
        sent = summary.sent,
        confirmed = summary.confirmed,
        failed = summary.failed,
        "simulation done"
    );
    Ok(summary)
}
