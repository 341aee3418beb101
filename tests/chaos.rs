//! The chaos campaign (issue 12): sustained load with planted scenarios through two
//! processors and two fan-outs (child processes) to webhook receivers that record every
//! delivery, while the harness kills services with SIGKILL at random points, kills the
//! broker (Tansu, sqlite) and starts it again on the same data, and makes one endpoint hang,
//! then fail, then come back. At the end it checks, from the topics and the receivers and
//! not from the services' own metrics:
//!
//! - every planted scenario raised its alert, and every alert reached every desk cleared
//!   for it;
//! - every delivery of one message to one desk carried one `webhook-id`;
//! - no alert id differs from an undisturbed run of the same input (the engine run offline
//!   over the reports as published, in order);
//! - every hostile report was rejected, with the expected reason, and no valid one was;
//! - every service stops cleanly on SIGTERM and no process is left behind.
//!
//! `make test` runs its short default configuration (CI); `make chaos` the long one. Knobs
//! (`make chaos` sets the long ones): `EWN_CHAOS_KILLS` kills per service (2 here),
//! `EWN_CHAOS_BROKER_RESTARTS` (0 by default: after a restart Tansu 0.6.0 can leave a
//! consumer group without partitions, README "Chaos"; `make chaos` runs 3),
//! `EWN_CHAOS_LINK_CUTS` (2), `EWN_CHAOS_TIMEOUT_MS` the services'
//! `kafka.message_timeout_ms` (30 s, the default; `make chaos` 5 s, which makes Tansu's
//! storage panic, README "Chaos"), `EWN_CHAOS_SECS` of load (60), `EWN_CHAOS_RATE`
//! background reports per second (10), `EWN_CHAOS_SEED` (printed; replays the schedule),
//! `EWN_CHAOS_DYNAMIC=1` (dynamic group membership instead of `kafka.group_instance_id`),
//! `EWN_CHAOS_KEEP=1` (the services' logs are kept; `EWN_TEST_LOG=info` makes them say more).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::hooks::*;
use common::posts::{Ledger, id, posts_sending, token};
use common::proc::Proc;
use common::{Net, blinding, now_ms, wait_until};
use ewn_kafka::admin::record_counts;
use ewn_kafka::{KafkaSettings, Topics};
use ewn_model::{Alert, AvroRecord, Incident, MsgType, Tlp};
use ewn_processor::correlate::EngineSettings;
use ewn_processor::rules::default_rules;
use ewn_processor::score::ScoreWeights;
use ewn_sim::{Generator, GeneratorConfig, Planted, Scenario};
use ewn_testkit::{Engine, free_port, start_broker_behind_relay, unique_prefix, write_file};
use sha2::{Digest, Sha256};

/// Allowed lateness of the processors (the default, which the simulator's day-old exit is
/// placed for) and of the offline run they are compared with.
const LATENESS_SECS: i64 = 300;
/// Desks: name, clearance. `flaky` hangs, then fails, then comes back.
const DESKS: [(&str, Tlp); 3] = [
    ("red", Tlp::Red),
    ("amber", Tlp::Amber),
    ("flaky", Tlp::Red),
];
/// Every this many reports, a forged copy (flipped payload byte) goes first: BAD_SIGNATURE.
const HOSTILE_EVERY: usize = 40;
/// A generator round: scenarios are planted anew every this long.
/// How long the group coordinator waits for a member to rejoin in a rebalance.
const MAX_POLL: &str = "max.poll.interval.ms=45000";
const ROUND: Duration = Duration::from_secs(20);

struct Knobs {
    kills: usize,
    broker_restarts: usize,
    link_cuts: usize,
    /// Whether the flaky desk hangs, then fails, through the first two thirds.
    flaky: bool,
    /// The services' `kafka.message_timeout_ms`.
    timeout_ms: u64,
    /// How often memory and lag are sampled.
    sample: Duration,
    load: Duration,
    rate: f64,
    seed: u64,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn knobs() -> Knobs {
    let random = now_ms() as u64 ^ u64::from(std::process::id()) << 32;
    Knobs {
        kills: env_or("EWN_CHAOS_KILLS", 2),
        broker_restarts: env_or("EWN_CHAOS_BROKER_RESTARTS", 0),
        link_cuts: env_or("EWN_CHAOS_LINK_CUTS", 2),
        flaky: env_or("EWN_CHAOS_FLAKY", 1) == 1,
        // the default of `kafka.message_timeout_ms`; see `make chaos` and README "Chaos"
        timeout_ms: env_or("EWN_CHAOS_TIMEOUT_MS", 30_000),
        sample: Duration::from_secs(env_or("EWN_CHAOS_SAMPLE_SECS", 10)),
        load: Duration::from_secs(env_or("EWN_CHAOS_SECS", 60)),
        rate: env_or("EWN_CHAOS_RATE", 10.0),
        seed: env_or("EWN_CHAOS_SEED", random),
    }
}

/// How to start one instance of a service; every start appends to its own log.
struct Service {
    name: &'static str,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    dir: PathBuf,
    instances: Vec<Option<Proc>>,
    starts: usize,
    kills: usize,
}

/// `EWN_CHAOS_DYNAMIC=1`: the services join their groups without `kafka.group_instance_id`
/// (dynamic membership), which Tansu 0.6.0 does not survive (README "Chaos").
fn dynamic_membership() -> bool {
    std::env::var("EWN_CHAOS_DYNAMIC").is_ok_and(|v| v == "1")
}

impl Service {
    fn spawn(&mut self, i: usize) {
        self.starts += 1;
        let log = self.dir.join(format!("{}-{i}.log", self.name));
        let mut args = self.args.clone();
        let mut envs = self.envs.clone();
        if !dynamic_membership() && self.name != "gateway" {
            // static group membership (`kafka.group_instance_id`, as README "Chaos" advises
            // on Tansu 0.6.0): a restarted instance takes its predecessor's place
            envs.push((
                "EWN__KAFKA__GROUP_INSTANCE_ID".into(),
                format!("{}-{i}", self.name),
            ));
        }
        if self.name == "process" {
            // each instance its own metrics port
            args.extend([
                "--admin-listen".into(),
                format!("127.0.0.1:{}", free_port()),
            ]);
        }
        self.instances[i] = Some(Proc::ewn(&args, &envs, Some(&log)));
    }

    fn kill_and_restart(&mut self, i: usize) {
        if let Some(mut p) = self.instances[i].take() {
            p.sigkill();
            self.kills += 1;
        }
        self.spawn(i);
    }

    fn logs(&self) -> String {
        (0..self.instances.len())
            .map(|i| {
                let path = self.dir.join(format!("{}-{i}.log", self.name));
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                // every change of partitions (EWN_TEST_LOG=info), then the last lines
                let changes = text
                    .lines()
                    .filter(|l| l.contains("partitions changed") || l.contains("re-joining"));
                let last: Vec<&str> = text.lines().rev().take(30).collect();
                let tail: Vec<&str> = changes.rev().chain(last).collect();
                format!(
                    "--- {} ---\n{}",
                    path.display(),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// What the load thread sent.
#[derive(Default)]
struct Sent {
    /// Valid reports in the order produced.
    valid: Vec<Incident>,
    /// SHA-256 of every hostile record sent, with its topic and when it was sent.
    hostile: BTreeMap<[u8; 32], String>,
    planted: Vec<Planted>,
}

/// The fan-out's configuration: the desks, quick retries, and an attempt budget that
/// outlasts the flaky desk's outage (a dead letter after `max_attempts` is the designed end
/// of a delivery, not a loss; here the desk comes back and must get everything).
fn fanout_toml(dir: &Path, settings: &KafkaSettings, hooks: &Hooks) -> PathBuf {
    let key_file = dir.join("fanout.key");
    ewn_trust::secret::write_secret(
        &key_file,
        &ewn_fanout::keys::FanoutKey::generate().to_file_text(),
    )
    .unwrap();
    let subs: String = DESKS
        .iter()
        .map(|(id, tlp)| {
            format!(
                "[[subscriptions]]\nid = \"{id}\"\nagency = \"AG-{id}\"\nclearance = \"{}\"\nwebhook = {{ url = \"{}\", secret = \"{}\" }}\n\n",
                tlp.as_str(),
                hooks.url(id),
                secret_of(id)
            )
        })
        .collect();
    let path = dir.join("fanout.toml");
    write_file(
        &path,
        &format!(
            "[kafka]\nbrokers = \"{}\"\ntopic_prefix = \"{}\"\nmessage_timeout_ms = {}\nstatistics_interval_ms = 0\n\n\
             [fanout]\nlisten = \"127.0.0.1:0\"\nkey_file = \"{}\"\n\n[fanout.admin]\nlisten = \"127.0.0.1:0\"\n\n\
             [fanout.webhook]\ninitial_backoff_ms = 100\nmax_backoff_ms = 2000\nmax_attempts = 100000\n{}\n{}",
            settings.brokers,
            settings.topic_prefix,
            settings.message_timeout_ms,
            key_file.display(),
            LOOPBACK_WEBHOOKS_TOML,
            subs,
        ),
    );
    path
}

/// The gateway's state, its posts, and the client-id prefix of its broker link (what the
/// relay cuts).
const GATEWAY_STATE: &str = "TJ";
const GATEWAY_POSTS: [&str; 3] = ["TJ-POST-1", "TJ-POST-2", "TJ-POST-3"];
const GATEWAY_LINK: &str = "tjgw";
/// Each post sends a report this often.
const GATEWAY_EVERY: Duration = Duration::from_millis(300);

/// Tajikistan's gateway (`ewn gateway`, one instance: its spool is its own disk): its
/// signing key (trusted in the network's store), the network's blinding key, its posts'
/// tokens, a spool, quick forwarding retries; it reaches the broker as client `tjgw`, whose
/// link the harness cuts.
fn gateway_toml(dir: &Path, settings: &KafkaSettings, store: &Path, port: u16) -> PathBuf {
    let key = ewn_trust::keys::generate();
    common::write_key_file(&dir.join("tj-gw.key"), "tj-gw-1", &key);
    common::trust_state_key(store, "tj-gw-1", GATEWAY_STATE, &key);
    blinding().save(&dir.join("blinding.key")).unwrap();
    let tokens: String = GATEWAY_POSTS
        .iter()
        .map(|p| {
            format!(
                "[[tokens]]\nname = \"terminal-{p}\"\npost_id = \"{p}\"\nsha256 = \"{}\"\n",
                hex::encode(ewn_ops::tokens::token_hash(&token(p)))
            )
        })
        .collect();
    ewn_trust::secret::write_secret(&dir.join("tj-tokens.toml"), &tokens).unwrap();
    let mut g = ewn_gateway::GatewaySettings {
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        state: GATEWAY_STATE.into(),
        signing_key_file: Some(dir.join("tj-gw.key")),
        blinding_key_file: Some(dir.join("blinding.key")),
        tokens_file: Some(dir.join("tj-tokens.toml")),
        ..ewn_gateway::GatewaySettings::default()
    };
    g.admin.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    g.spool.path = Some(dir.join("tj-spool.db"));
    g.forward.initial_backoff_ms = 200;
    g.forward.max_backoff_ms = 2_000;
    let kafka = KafkaSettings {
        client_id: GATEWAY_LINK.into(),
        statistics_interval_ms: 0,
        ..settings.clone()
    };
    let file = toml::to_string(&toml::Table::from_iter([
        ("kafka".to_string(), toml::Value::try_from(&kafka).unwrap()),
        ("gateway".to_string(), toml::Value::try_from(&g).unwrap()),
    ]))
    .unwrap();
    let path = dir.join("gateway.toml");
    write_file(&path, &file);
    path
}

/// Report `n` of a Tajik post, as its terminal writes it: a low-graded entry, each subject
/// and area its own, so that it raises no alert (the undisturbed run, which has no
/// gateway, is compared alert for alert); `reported_at` given, so a resend is the same
/// report.
fn gateway_line(post_index: usize, post: &str, n: u64) -> String {
    let t = chrono::DateTime::from_timestamp_millis(now_ms() - 1_000)
        .unwrap()
        .to_rfc3339();
    serde_json::json!({
        "incident_id": id(post_index, n),
        "occurred_at": t,
        "reported_at": t,
        "reporter": {"state": GATEWAY_STATE, "agency": "TJ-GKNB", "post_id": post},
        "category": "SUSPICIOUS_CROSSING",
        "severity": "LOW",
        "source_reliability": "C",
        "info_credibility": 3,
        "tlp": "GREEN",
        "location": {"lat": 38.5, "lon": 68.8, "area": format!("TJ-P{post_index}-{n}")},
        "direction": "ENTRY",
        "subjects": [{"kind": "PERSON", "id": format!("Traveller {post_index} {n}")}],
        "summary": "entered"
    })
    .to_string()
}

/// The load: generator rounds (every scenario in the first, all but the vanished exit,
/// whose day-old exit must come first in event time, in the later ones) plus background
/// reports; every [`HOSTILE_EVERY`]th report also goes out as a forgery (a flipped payload
/// byte under its signature) just before the real one. Paused while the broker is down (the harness's own producer is not under test):
/// `idle` says it has nothing in flight.
fn load(
    net: &mut Net,
    knobs: &Knobs,
    paused: &AtomicBool,
    idle: &AtomicBool,
    prelude_done: &AtomicBool,
    stop_at: Instant,
    sent: &Mutex<Sent>,
) {
    let topics = net.topics();
    let mut round = 0u64;
    let mut n = 0usize;
    while Instant::now() < stop_at {
        let scenarios = if round == 0 {
            Scenario::ALL.to_vec()
        } else {
            Scenario::ALL
                .into_iter()
                .filter(|s| *s != Scenario::VanishedExit)
                .collect()
        };
        let config = GeneratorConfig {
            seed: knobs.seed.wrapping_add(round),
            rate_per_sec: knobs.rate,
            scenarios,
        };
        let mut generator = Generator::new(&config, blinding(), now_ms());
        let mut batch: Vec<Incident> = generator
            .prelude(now_ms())
            .unwrap()
            .into_iter()
            .map(|g| g.incident)
            .collect();
        if round == 0 {
            // The day-old exit must be on the re-keyed topic before any present-time report
            // (the gateway's posts' included, which wait for `prelude_done`), or it is late
            // on its partition: the processors read the states' topics side by side.
            net.publish(&batch);
            let want = common::rekeyed_count(&batch);
            sent.lock().unwrap().valid.append(&mut batch);
            let rekeyed = topics.rekeyed();
            wait_until(
                "the prelude to be correlated",
                Duration::from_secs(120),
                || {
                    record_counts(&net.settings, |t| t == rekeyed)
                        .unwrap()
                        .iter()
                        .map(|(_, n)| *n as u64)
                        .sum::<u64>()
                        >= want
                },
            );
        }
        prelude_done.store(true, Ordering::Release);
        let round_end = (Instant::now() + ROUND).min(stop_at);
        loop {
            if paused.load(Ordering::Acquire) {
                while paused.load(Ordering::Acquire) {
                    idle.store(true, Ordering::Release);
                    std::thread::sleep(Duration::from_millis(20));
                }
                idle.store(false, Ordering::Release);
                net.renew_producer();
            }
            let mut out = Vec::new();
            let last = Instant::now() >= round_end;
            if last {
                generator.finish(now_ms(), &mut out).unwrap();
            } else {
                generator.tick(now_ms(), &mut out).unwrap();
            }
            batch.extend(out.into_iter().map(|g| g.incident));
            for incident in batch.drain(..) {
                n += 1;
                if n.is_multiple_of(HOSTILE_EVERY) {
                    let mut env = net
                        .signer(&incident.reporter.state)
                        .sign(&incident, incident.reported_at)
                        .unwrap();
                    let at = 16 + n % (env.payload.len() - 16);
                    env.payload[at] ^= 0x20;
                    let bytes = env.to_avro().unwrap();
                    let topic = topics.incidents(&incident.reporter.state);
                    sent.lock().unwrap().hostile.insert(
                        Sha256::digest(&bytes).into(),
                        format!("{topic} at {}", now_ms()),
                    );
                    net.send(&topic, b"h", &bytes);
                }
                net.publish(std::slice::from_ref(&incident));
                sent.lock().unwrap().valid.push(incident);
            }
            net.flush();
            if last {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        sent.lock().unwrap().planted.extend(generator.planted());
        round += 1;
    }
}

/// Messages of `topics` that `group` has not committed yet, per partition: the high
/// watermark minus the committed offset (the low watermark when none is committed).
fn group_lag(
    settings: &KafkaSettings,
    group: &str,
    topics: &[String],
) -> Result<Vec<(String, i32, i64)>, String> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{ClientConfig, Offset, TopicPartitionList};
    let timeout = Duration::from_secs(5);
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &settings.brokers)
        .set("group.id", group)
        .set("client.id", "chaos-lag")
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| e.to_string())?;
    let mut list = TopicPartitionList::new();
    for t in topics {
        let meta = consumer
            .fetch_metadata(Some(t), timeout)
            .map_err(|e| e.to_string())?;
        for topic in meta.topics() {
            for p in topic.partitions() {
                list.add_partition(t, p.id());
            }
        }
    }
    let committed = consumer
        .committed_offsets(list, timeout)
        .map_err(|e| e.to_string())?;
    let mut lag = Vec::new();
    for e in committed.elements() {
        let (low, high) = consumer
            .fetch_watermarks(e.topic(), e.partition(), timeout)
            .map_err(|e| e.to_string())?;
        let at = match e.offset() {
            Offset::Offset(n) => n,
            _ => low,
        };
        lag.push((e.topic().to_string(), e.partition(), (high - at).max(0)));
    }
    Ok(lag)
}

/// The services' consumer groups and the topics each reads.
fn groups(settings: &KafkaSettings) -> [(String, Vec<String>); 3] {
    let topics = Topics::new(&settings.topic_prefix);
    let prefix = &settings.topic_prefix;
    let incidents: Vec<String> = settings
        .states
        .iter()
        .map(|s| topics.incidents(s))
        .collect();
    [
        (format!("{prefix}process-ingest"), incidents),
        (format!("{prefix}process-correlate"), vec![topics.rekeyed()]),
        (format!("{prefix}fanout"), vec![topics.alerts()]),
    ]
}

/// What the harness samples while the load runs: each service's peak resident memory (the
/// highest VmHWM of any of its processes) and the lag of each consumer group, from the
/// broker.
#[derive(Default)]
struct Gauges {
    peak_rss_mib: [f64; 3],
    /// (offset into the load, lag of the processors' ingest and correlate groups and of
    /// the fan-outs' group).
    lag: Vec<(Duration, [i64; 3])>,
}

impl Gauges {
    fn sample(&mut self, at: Duration, settings: &KafkaSettings, services: &[Service]) {
        for (i, s) in services.iter().enumerate() {
            for p in s.instances.iter().flatten() {
                if let Some(m) = p.peak_rss_mib() {
                    self.peak_rss_mib[i] = self.peak_rss_mib[i].max(m);
                }
            }
        }
        let lag = groups(settings).map(|(group, topics)| {
            group_lag(settings, &group, &topics).map_or(-1, |l| l.iter().map(|(_, _, n)| n).sum())
        });
        eprintln!(
            "chaos: {:>6.1} s uncommitted (messages): ingest {}, fan-out {}, correlate {} (its open windows' records, replayed after a restart); peak RSS (MiB) process {:.0} fan-out {:.0} gateway {:.0}",
            at.as_secs_f64(),
            lag[0],
            lag[2],
            lag[1],
            self.peak_rss_mib[0],
            self.peak_rss_mib[1],
            self.peak_rss_mib[2]
        );
        self.lag.push((at, lag));
    }
}

/// Milliseconds from each message's creation by a processor to its first successful
/// delivery to `desk`, for the messages created in `[from_ms, to_ms)`.
fn delivery_latencies(
    alerts: &[Alert],
    hooks: &Hooks,
    desk: &str,
    from_ms: i64,
    to_ms: i64,
) -> Vec<i64> {
    let mut first: BTreeMap<String, i64> = BTreeMap::new();
    for h in hooks.delivered(desk) {
        let at = first.entry(h.alert_id()).or_insert(h.at_ms);
        *at = (*at).min(h.at_ms);
    }
    let mut out: Vec<i64> = alerts
        .iter()
        .filter(|a| (from_ms..to_ms).contains(&a.created_at))
        .filter_map(|a| first.get(&a.alert_id).map(|at| at - a.created_at))
        .collect();
    out.sort_unstable();
    out
}

/// p50/p95/p99 of sorted values, as text.
fn percentiles(sorted: &[i64]) -> String {
    if sorted.is_empty() {
        return "none".into();
    }
    let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
    format!(
        "p50 {} ms, p95 {} ms, p99 {} ms ({} messages)",
        at(0.5),
        at(0.95),
        at(0.99),
        sorted.len()
    )
}

/// An action of the chaos schedule, at an offset into the load.
#[derive(Debug)]
enum Action {
    Kill {
        service: usize,
        instance: usize,
    },
    Broker {
        down: Duration,
    },
    /// The gateway's link to the broker cut (its posts still reach it).
    Cut {
        down: Duration,
    },
}

fn schedule(knobs: &Knobs) -> Vec<(Duration, Action)> {
    let mut rng = ewn_sim::rng::Rng::new(knobs.seed);
    let span = knobs.load.as_millis() as u64;
    let mut plan = Vec::new();
    // processors and fan-outs run two instances each, the gateway one
    for (service, instances) in [(0, 2), (1, 2), (2, 1)] {
        for _ in 0..knobs.kills {
            plan.push((
                Duration::from_millis(1_000 + rng.below(span.saturating_sub(2_000).max(1))),
                Action::Kill {
                    service,
                    instance: rng.below(instances) as usize,
                },
            ));
        }
    }
    for _ in 0..knobs.link_cuts {
        plan.push((
            Duration::from_millis(2_000 + rng.below(span.saturating_sub(4_000).max(1))),
            Action::Cut {
                down: Duration::from_millis(2_000 + rng.below(8_000)),
            },
        ));
    }
    for _ in 0..knobs.broker_restarts {
        plan.push((
            Duration::from_millis(5_000 + rng.below(span.saturating_sub(10_000).max(1))),
            Action::Broker {
                down: Duration::from_millis(2_000 + rng.below(6_000)),
            },
        ));
    }
    plan.sort_by_key(|(at, _)| *at);
    plan
}

/// Processes whose command line mentions `needle` (this test's directory or prefix).
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    let me = std::process::id().to_string();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if !name.chars().all(|c| c.is_ascii_digit()) || name == me {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if text.contains(needle) {
            found.push(format!("{name}: {text}"));
        }
    }
    found
}

/// Whether the alerts raise `planted`: an episode of its rule and key whose messages name
/// every report of the scenario (background reports in the same area or of the same
/// subject may start the episode's window earlier than the scenario's own); or, when a
/// later round plants the same scenario inside an episode still open, a message of that
/// episode covering the scenario's start whose list of reports is a sample (an alert names
/// at most `evidence_sample` of them; its count and digest cover all).
fn raised(alerts: &[Alert], planted: &Planted) -> bool {
    let same: Vec<&Alert> = alerts
        .iter()
        .filter(|a| a.rule == planted.rule && a.key == planted.key)
        .collect();
    let named: BTreeSet<&String> = same.iter().flat_map(|a| a.incident_ids.iter()).collect();
    planted.incident_ids.iter().all(|i| named.contains(i))
        || same.iter().any(|a| {
            a.window_start <= planted.window_start
                && planted.window_start <= a.window_end
                && a.incident_count as usize > a.incident_ids.len()
        })
}

/// What a failed run prints: each group's uncommitted records per partition, the
/// services' logs (their partition changes at `EWN_TEST_LOG=info`) and the broker's.
fn failure_output(settings: &KafkaSettings, services: &[Service], broker: &ewn_testkit::Broker) {
    for (group, topics) in groups(settings) {
        let stuck: Vec<String> = group_lag(settings, &group, &topics)
            .unwrap_or_default()
            .into_iter()
            .filter(|(_, _, n)| *n > 0)
            .map(|(t, p, n)| format!("{t}[{p}] {n}"))
            .collect();
        eprintln!("chaos: uncommitted by {group}: {stuck:?}");
    }
    for s in services {
        eprintln!("{}", s.logs());
    }
    eprintln!(
        "--- broker: its first errors ---\n{}\n--- broker: the end of its log ---\n{}",
        broker.first_errors(30),
        broker.log()
    );
}

#[test]
fn chaos_kills_restarts_and_a_flaky_desk_lose_nothing() {
    let knobs = knobs();
    let began = Instant::now();
    let began_ms = now_ms();
    eprintln!(
        "chaos: seed {} ({} kills per service, {} broker restarts, {:?} of load at {}/s, the services' kafka.message_timeout_ms {})",
        knobs.seed, knobs.kills, knobs.broker_restarts, knobs.load, knobs.rate, knobs.timeout_ms
    );
    // every client reaches the broker through a relay that can cut the gateway's link
    let (broker, relay) = start_broker_behind_relay(Engine::Sqlite)
        .unwrap_or_else(|e| panic!("Tansu broker did not start: {e}"));
    // The broker's supervisor, from start to end (the checks read the topics too): Tansu
    // 0.6.0's storage may panic under this load and then answer only errors; it is
    // restarted on its data as a liveness probe would, at once (the load cannot pause while
    // its producer waits on a broker that answers only errors; what it had in flight is
    // sent again).
    let began_at = Instant::now();
    let failed_restarts = Arc::new(Mutex::new(Vec::new()));
    let supervisor = {
        let failed = failed_restarts.clone();
        broker.supervise(Duration::from_secs(1), move |restart| {
            eprintln!(
                "chaos: {:>6.1} s from the start (at {}) the broker's storage panicked: restarted on its data ({restart:?})",
                began_at.elapsed().as_secs_f64(),
                now_ms()
            );
            if let Err(e) = restart {
                failed.lock().unwrap().push(e);
            }
        })
    };
    let settings = KafkaSettings {
        brokers: relay.addr.clone(),
        topic_prefix: unique_prefix("chaos"),
        partitions: 3,
        statistics_interval_ms: 0,
        message_timeout_ms: knobs.timeout_ms,
        ..KafkaSettings::default()
    };
    // The harness's own producer waits out a loaded machine. The services get
    // `EWN_CHAOS_TIMEOUT_MS`: `make chaos` gives them 5 s, so a broker restart makes their
    // records time out (and their recovery is exercised).
    let mut net = Net::on(KafkaSettings {
        message_timeout_ms: 60_000,
        ..settings.clone()
    });
    let dir = net.dir.path().to_path_buf();
    if std::env::var("EWN_CHAOS_KEEP").is_ok_and(|v| v == "1") {
        // the services' whole logs and configurations, for a failure's diagnosis
        net.dir.disable_cleanup(true);
        eprintln!("chaos: EWN_CHAOS_KEEP=1: logs kept in {}", dir.display());
    }
    let hooks = Hooks::start();
    let fanout_config = fanout_toml(&dir, &settings, &hooks);
    let gateway_port = free_port();
    let gateway_config = gateway_toml(&dir, &settings, &net.store, gateway_port);
    let log_level = std::env::var("EWN_TEST_LOG").unwrap_or_else(|_| "warn".into());
    let mut services = [
        Service {
            name: "process",
            args: vec![
                "--log-level".into(),
                log_level.clone(),
                "-X".into(),
                MAX_POLL.into(),
                "process".into(),
                "--trust-store".into(),
                net.store.display().to_string(),
                "--brokers".into(),
                settings.brokers.clone(),
                "--topic-prefix".into(),
                settings.topic_prefix.clone(),
            ],
            envs: vec![
                (
                    "EWN__PROCESS__ALLOWED_LATENESS_SECS".into(),
                    LATENESS_SECS.to_string(),
                ),
                ("EWN__PROCESS__BATCH_WAIT_MS".into(), "10".into()),
                ("EWN__KAFKA__STATISTICS_INTERVAL_MS".into(), "0".into()),
                (
                    "EWN__KAFKA__MESSAGE_TIMEOUT_MS".into(),
                    settings.message_timeout_ms.to_string(),
                ),
            ],
            dir: dir.clone(),
            instances: vec![None, None],
            starts: 0,
            kills: 0,
        },
        Service {
            name: "fanout",
            args: vec![
                "--config".into(),
                fanout_config.display().to_string(),
                "--log-level".into(),
                log_level.clone(),
                "-X".into(),
                MAX_POLL.into(),
                "fanout".into(),
            ],
            envs: vec![],
            dir: dir.clone(),
            instances: vec![None, None],
            starts: 0,
            kills: 0,
        },
        Service {
            name: "gateway",
            args: vec![
                "--config".into(),
                gateway_config.display().to_string(),
                "--log-level".into(),
                log_level,
                "gateway".into(),
            ],
            envs: vec![],
            dir: dir.clone(),
            instances: vec![None],
            starts: 0,
            kills: 0,
        },
    ];
    for s in services.iter_mut() {
        for i in 0..s.instances.len() {
            s.spawn(i);
        }
    }
    let posts_stop = Arc::new(AtomicBool::new(false));
    let ledger = Arc::new(Ledger::default());
    let mut posts = Vec::new();
    let paused = Arc::new(AtomicBool::new(false));
    let idle = Arc::new(AtomicBool::new(false));
    let prelude_done = AtomicBool::new(false);
    let sent = Arc::new(Mutex::new(Sent::default()));
    let stop_at = Instant::now() + knobs.load;
    let plan = schedule(&knobs);
    let mut gauges = Gauges::default();
    let load_began_ms = now_ms();
    let result = std::thread::scope(|scope| {
        let loader = {
            let (paused, idle, sent, knobs) = (&paused, &idle, &sent, &knobs);
            let prelude_done = &prelude_done;
            let net = &mut net;
            scope.spawn(move || load(net, knobs, paused, idle, prelude_done, stop_at, sent))
        };
        // Nothing present-time may reach the re-keyed topic before the day-old exit, or it
        // is late (see `load`): the posts and the schedule start once the prelude is there.
        wait_until(
            "the prelude on the re-keyed topic",
            Duration::from_secs(180),
            || prelude_done.load(Ordering::Acquire) || loader.is_finished(),
        );
        // Tajikistan's posts report through its gateway, each retrying a report until the
        // gateway acknowledges it.
        posts = posts_sending(
            gateway_line,
            Arc::new(Mutex::new(format!("127.0.0.1:{gateway_port}"))),
            GATEWAY_POSTS.map(String::from).to_vec(),
            GATEWAY_EVERY,
            posts_stop.clone(),
            ledger.clone(),
        );
        let start = Instant::now();
        // The flaky desk: hangs through the first third, fails through the second.
        let third = knobs.load / 3;
        let mut flaky_phase = if knobs.flaky { 0 } else { 2 };
        if knobs.flaky {
            hooks.set("flaky", Mode::Hang);
        }
        // Kills the broker and starts it again on the same data after `down`; the harness's
        // producer has nothing in flight when the broker dies.
        let restart_broker = |down: Duration| {
            paused.store(true, Ordering::Release);
            wait_until("the load to pause", Duration::from_secs(30), || {
                idle.load(Ordering::Acquire) || loader.is_finished()
            });
            let _held = supervisor.hold();
            broker.kill9().unwrap();
            let until = Instant::now() + down;
            wait_until(
                "the broker's downtime",
                down * 2 + Duration::from_secs(1),
                || Instant::now() >= until,
            );
            broker.restart().unwrap();
            paused.store(false, Ordering::Release);
        };
        let mut plan = plan.into_iter().peekable();
        let mut next_sample = Instant::now();
        loop {
            if flaky_phase == 0 && start.elapsed() >= third {
                hooks.set("flaky", Mode::Status(503));
                flaky_phase = 1;
            }
            if flaky_phase == 1 && start.elapsed() >= 2 * third {
                hooks.set("flaky", Mode::Ok);
                flaky_phase = 2;
            }
            if Instant::now() >= next_sample {
                gauges.sample(start.elapsed(), &settings, &services);
                next_sample += knobs.sample;
            }
            let due = plan.peek().is_some_and(|(at, _)| start.elapsed() >= *at);
            if !due {
                if plan.peek().is_none() && loader.is_finished() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            let (_, action) = plan.next().unwrap();
            eprintln!(
                "chaos: {:>6.1} s (at {}) {action:?}",
                start.elapsed().as_secs_f64(),
                now_ms()
            );
            match action {
                Action::Kill { service, instance } => services[service].kill_and_restart(instance),
                Action::Broker { down } => restart_broker(down),
                Action::Cut { down } => {
                    relay.cut(GATEWAY_LINK);
                    let until = Instant::now() + down;
                    wait_until("the link's downtime", down * 2, || Instant::now() >= until);
                    relay.restore(GATEWAY_LINK);
                }
            }
        }
        hooks.set("flaky", Mode::Ok);
        loader.join()
    });
    posts_stop.store(true, Ordering::Relaxed);
    for p in posts {
        p.join().unwrap();
    }
    if let Err(e) = result {
        // the load failed (the broker stopped answering the harness, as a rule)
        failure_output(&settings, &services, &broker);
        std::panic::resume_unwind(e);
    }
    let sent = std::mem::take(&mut *sent.lock().unwrap());
    eprintln!(
        "chaos: load done after {:.0} s: {} valid reports, {} hostile, {} scenarios planted; kills: process {}, fanout {}",
        began.elapsed().as_secs_f64(),
        sent.valid.len(),
        sent.hostile.len(),
        sent.planted.len(),
        services[0].kills,
        services[1].kills,
    );

    // The undisturbed run: the same reports through the engine offline, in order.
    let offline = ewn_processor::offline::run(
        default_rules(),
        ScoreWeights::default(),
        EngineSettings::with_lateness(LATENESS_SECS * 1000),
        &sent.valid,
    )
    .unwrap();
    let offline_ids: BTreeSet<String> = offline
        .iter()
        .filter(|a| a.msg_type == MsgType::Alert)
        .map(|a| a.alert_id.clone())
        .collect();
    assert!(
        !sent.planted.is_empty(),
        "the load planted no scenario in full"
    );
    let offline_misses: Vec<String> = sent
        .planted
        .iter()
        .filter(|p| !raised(&offline, p))
        .map(|p| {
            let same: Vec<String> = offline
                .iter()
                .filter(|a| a.rule == p.rule && a.key == p.key)
                .map(|a| {
                    format!(
                        "{:?} {} [{}..{}] {} ids, {} of the scenario's",
                        a.msg_type,
                        a.alert_id,
                        a.window_start,
                        a.window_end,
                        a.incident_ids.len(),
                        p.incident_ids
                            .iter()
                            .filter(|i| a.incident_ids.contains(i))
                            .count()
                    )
                })
                .collect();
            format!(
                "{} {} {} at {} ({} reports): {same:?}",
                p.scenario,
                p.rule,
                p.key,
                p.window_start,
                p.incident_ids.len()
            )
        })
        .collect();
    assert!(
        offline_misses.is_empty(),
        "the undisturbed run does not raise {offline_misses:?}"
    );

    let check = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // every planted alert raised
        let live = || -> Vec<Alert> { net.alerts() };
        let mut alerts: Vec<Alert>;
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            alerts = live();
            let missing: Vec<String> = sent
                .planted
                .iter()
                .filter(|p| !raised(&alerts, p))
                .map(|p| {
                    format!(
                        "{} ({} {} at {})",
                        p.scenario, p.rule, p.key, p.window_start
                    )
                })
                .collect();
            if missing.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                // Told apart: reports never re-keyed (ingest) or re-keyed and not correlated.
                let rekeyed: BTreeSet<String> = net
                    .read_values(&net.topics().rekeyed())
                    .iter()
                    .map(|v| ewn_model::ScoredIncident::from_avro(v).unwrap().incident_id)
                    .collect();
                let stages: Vec<String> = sent
                    .planted
                    .iter()
                    .filter(|p| !raised(&alerts, p))
                    .map(|p| {
                        format!(
                            "{} {}: {} of {} reports re-keyed",
                            p.scenario,
                            p.key,
                            p.incident_ids
                                .iter()
                                .filter(|i| rekeyed.contains(*i))
                                .count(),
                            p.incident_ids.len()
                        )
                    })
                    .collect();
                panic!(
                    "planted scenarios without their alert after 180 s: {missing:?} ({stages:?}); {} alerts live; rejections {:?}",
                    alerts.len(),
                    net.rejections()
                        .iter()
                        .map(|r| format!("{} {}", r.reason.code(), r.detail))
                        .collect::<Vec<_>>(),
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        // every message reached every desk cleared for it
        let due = |desk: Tlp| -> BTreeSet<String> {
            alerts
                .iter()
                .filter(|a| a.tlp <= desk)
                .map(|a| a.alert_id.clone())
                .collect()
        };
        let missing = |desk: &str, tlp: Tlp| -> Vec<String> {
            let got: BTreeSet<String> = hooks.delivered(desk).iter().map(Hit::alert_id).collect();
            due(tlp)
                .difference(&got)
                .map(|id| {
                    let a = alerts.iter().find(|a| &a.alert_id == id).unwrap();
                    let tries: Vec<(u16, i64)> = hooks
                        .hits(desk)
                        .iter()
                        .filter(|h| &h.alert_id() == id)
                        .map(|h| (h.status, h.at_ms - a.created_at))
                        .collect();
                    let receipts: Vec<String> = net
                        .receipts()
                        .iter()
                        .filter(|r| &r.alert_id == id && r.subscription_id == desk)
                        .map(|r| format!("{:?}", r.outcome))
                        .collect();
                    format!(
                        "{id} {:?} {} {} created {}: attempts (status, ms after) {tries:?}, receipts {receipts:?}",
                        a.msg_type,
                        a.rule,
                        a.tlp.as_str(),
                        a.created_at
                    )
                })
                .collect()
        };
        let deadline = Instant::now() + Duration::from_secs(240);
        while DESKS
            .iter()
            .any(|(desk, tlp)| !missing(desk, *tlp).is_empty())
        {
            if Instant::now() >= deadline {
                let report: Vec<String> = DESKS
                    .iter()
                    .map(|(desk, tlp)| {
                        format!(
                            "{desk}: {} attempts, {} delivered, missing {:?}",
                            hooks.hits(desk).len(),
                            hooks.delivered(desk).len(),
                            missing(desk, *tlp)
                        )
                    })
                    .collect();
                panic!("messages not delivered after 240 s: {report:#?}");
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        alerts
    }));
    let alerts = match check {
        Ok(a) => a,
        Err(e) => {
            failure_output(&settings, &services, &broker);
            std::panic::resume_unwind(e);
        }
    };

    // one webhook-id per (desk, message), every attempt signed
    let mut ids: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for h in hooks.all() {
        verify_standard_webhook(&secret_of(&h.name), &h).unwrap();
        ids.entry((h.name.clone(), h.alert_id()))
            .or_default()
            .insert(h.webhook_id.clone());
    }
    let split: Vec<_> = ids.iter().filter(|(_, v)| v.len() > 1).collect();
    assert!(split.is_empty(), "messages with two webhook-ids: {split:?}");
    // the amber desk never got a red alert's id
    let red: BTreeSet<String> = alerts
        .iter()
        .filter(|a| a.tlp > Tlp::Amber)
        .map(|a| a.alert_id.clone())
        .collect();
    assert!(
        hooks
            .all()
            .iter()
            .all(|h| h.name != "amber" || !red.contains(&h.alert_id())),
        "the amber desk received a red alert's id"
    );

    // no alert id beyond the undisturbed run's (the sources' operational alerts, judged
    // on the processors' wall clock, are not in an offline run)
    let live_ids: BTreeSet<String> = alerts
        .iter()
        .filter(|a| a.msg_type == MsgType::Alert && !a.rule.starts_with("source_"))
        .map(|a| a.alert_id.clone())
        .collect();
    let extra: Vec<_> = live_ids.difference(&offline_ids).collect();
    assert!(
        extra.is_empty(),
        "alert ids an undisturbed run does not raise: {extra:?}"
    );
    let missing: Vec<_> = offline_ids.difference(&live_ids).collect();
    eprintln!(
        "chaos: {} alert ids live, {} offline; offline-only (decided by the final clock move, or never decided live): {}",
        live_ids.len(),
        offline_ids.len(),
        missing.len()
    );

    // every report the gateway acknowledged is on its state's topic in one version only,
    // and was verified and scored by a processor (and no report of the load's own in two)
    let gateway_topic = net.topics().incidents(GATEWAY_STATE);
    let acked = ledger.acked.lock().unwrap().clone();
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let mut versions: BTreeMap<String, BTreeSet<Vec<u8>>> = BTreeMap::new();
        for v in net.read_values(&gateway_topic) {
            // the forgeries of the load's own reports of this state: a flipped payload byte
            // that may leave the incident id readable
            let digest: [u8; 32] = Sha256::digest(&v).into();
            if sent.hostile.contains_key(&digest) {
                continue;
            }
            let signed = ewn_model::SignedIncident::from_avro(&v).unwrap();
            let incident = Incident::from_avro(&signed.payload).unwrap();
            versions.entry(incident.incident_id).or_default().insert(v);
        }
        let twice: Vec<&String> = versions
            .iter()
            .filter(|(_, v)| v.len() > 1)
            .map(|(id, _)| id)
            .collect();
        assert!(
            twice.is_empty(),
            "gateway reports in two versions: {twice:?}"
        );
        let scored: BTreeSet<String> = net
            .read_values(&net.topics().rekeyed())
            .iter()
            .map(|v| ewn_model::ScoredIncident::from_avro(v).unwrap().incident_id)
            .collect();
        let lost = acked.iter().filter(|i| !versions.contains_key(*i)).count();
        let unscored = acked.iter().filter(|i| !scored.contains(*i)).count();
        if lost == 0 && unscored == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "of {} reports the gateway acknowledged, {lost} are not on {gateway_topic} and {unscored} not scored after 180 s",
            acked.len()
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    eprintln!(
        "chaos: gateway: {} reports acknowledged, all on the topic once and scored; {} refusals or failed sends retried by the posts, {} resends answered duplicate",
        acked.len(),
        ledger.refused.load(Ordering::Relaxed),
        ledger.duplicates.load(Ordering::Relaxed)
    );

    // every hostile record rejected as BAD_SIGNATURE, and nothing else rejected; the last
    // forgeries may still be in the processors' hands when the alerts are all there
    let mut rejected: BTreeMap<(String, i32, i64), String> = BTreeMap::new();
    let mut hostile_seen = BTreeSet::new();
    let mut gateway_resends;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        rejected.clear();
        hostile_seen.clear();
        gateway_resends = 0;
        for r in net.rejections() {
            if r.reason.code() == "duplicate" && net.resent.contains(&r.record_sha256) {
                // the harness sent a report again after the broker refused it, and the
                // broker had written it after all
                continue;
            }
            if r.topic == gateway_topic && r.reason.code() == "duplicate" {
                // the gateway sent a record again after a lost confirmation (a kill or a
                // cut link): the same signed bytes, checked below
                gateway_resends += 1;
                continue;
            }
            rejected.insert((r.topic.clone(), r.partition, r.offset), r.reason.code());
            if sent.hostile.contains_key(&r.record_sha256) {
                hostile_seen.insert(r.record_sha256);
            } else {
                panic!(
                    "a valid report was rejected: {} {}",
                    r.reason.code(),
                    r.detail
                );
            }
        }
        if hostile_seen.len() == sent.hostile.len() || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let reasons: BTreeSet<&String> = rejected.values().collect();
    assert_eq!(
        reasons,
        BTreeSet::from([&"bad_signature".to_string()]),
        "rejection reasons"
    );
    let unrejected: Vec<String> = sent
        .hostile
        .iter()
        .filter(|(sha, _)| !hostile_seen.contains(*sha))
        .map(|(sha, what)| {
            // Told apart: lost by the broker (not on the topic) or by the processors.
            let topic = what.split(' ').next().unwrap_or_default();
            let held = net
                .read_values(topic)
                .iter()
                .any(|v| Sha256::digest(v).as_slice() == sha.as_slice());
            format!(
                "{what} ({})",
                if held {
                    "on the topic"
                } else {
                    "NOT on the topic"
                }
            )
        })
        .collect();
    assert!(
        unrejected.is_empty(),
        "forged records without a dead letter after 120 s: {unrejected:?} (the test began at {began_ms}; the schedule is above)"
    );
    assert_eq!(
        rejected.len(),
        sent.hostile.len(),
        "one rejection per record"
    );

    // what a soak reports: memory, lag, and latency at the start and at the end of the load
    let fifth = (knobs.load.as_millis() / 5) as i64;
    let load_end_ms = load_began_ms + knobs.load.as_millis() as i64;
    for desk in ["red", "amber"] {
        eprintln!(
            "chaos: alert-to-delivery at {desk}: first fifth of the load {}; last fifth {}",
            percentiles(&delivery_latencies(
                &alerts,
                &hooks,
                desk,
                load_began_ms,
                load_began_ms + fifth
            )),
            percentiles(&delivery_latencies(
                &alerts,
                &hooks,
                desk,
                load_end_ms - fifth,
                load_end_ms
            )),
        );
    }
    if let (Some(first), Some(last)) = (gauges.lag.first(), gauges.lag.last()) {
        eprintln!(
            "chaos: uncommitted (ingest, correlate, fan-out) at {:.0} s {:?}, at {:.0} s {:?}, largest {:?}; peak RSS (MiB) process {:.0}, fan-out {:.0}, gateway {:.0}",
            first.0.as_secs_f64(),
            first.1,
            last.0.as_secs_f64(),
            last.1,
            [0, 1, 2].map(|i| gauges.lag.iter().map(|(_, l)| l[i]).max().unwrap_or(0)),
            gauges.peak_rss_mib[0],
            gauges.peak_rss_mib[1],
            gauges.peak_rss_mib[2],
        );
    }

    // a clean stop, and nothing left behind
    for s in services.iter_mut() {
        for p in s.instances.iter_mut() {
            if let Some(mut p) = p.take() {
                p.terminate(Duration::from_secs(30))
                    .unwrap_or_else(|e| panic!("{}: {e}", s.name));
            }
        }
    }
    let failed = failed_restarts.lock().unwrap().clone();
    assert!(
        failed.is_empty(),
        "the supervisor's restarts failed: {failed:?}"
    );
    let left = processes_mentioning(&dir.display().to_string());
    assert!(left.is_empty(), "processes left behind: {left:?}");
    let left = processes_mentioning(&settings.topic_prefix);
    assert!(left.is_empty(), "processes left behind: {left:?}");
    eprintln!(
        "chaos: passed in {:.0} s: {} planted scenarios, {} messages, {} deliveries, kills process {} fanout {} gateway {}, broker restarts {} (and {} after its storage panicked), gateway link cuts {}; {} gateway reports, {gateway_resends} forwarded twice (rejected duplicate)",
        began.elapsed().as_secs_f64(),
        sent.planted.len(),
        alerts.len(),
        hooks.all().len(),
        services[0].kills,
        services[1].kills,
        services[2].kills,
        knobs.broker_restarts,
        supervisor.restarts(),
        knobs.link_cuts,
        acked.len(),
    );
    drop(supervisor);
    broker.stop().unwrap();
}
