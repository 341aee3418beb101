//! `ewn demo`: the whole network on one machine. A local Tansu broker, five member states'
//! border posts (the simulator), the processor, the fan-out with two desks of different
//! clearance, a local webhook receiver standing in for the desks' systems, and the console.
//! Prints every alert as it fires and who received it, then a summary; leaves nothing
//! running.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use ewn_fanout::auth::Principal;
use ewn_fanout::policy::{self, Decision, Form};
use ewn_fanout::webhook::WebhookSecret;
use ewn_fanout::{FanoutConfig, FanoutSettings, SubscriptionConfig};
use ewn_kafka::{AssignedReader, KafkaSettings, StartAt, Topics};
use ewn_model::{Alert, AvroRecord, Level, MsgType, Subscription, Tlp};
use ewn_ops::http::{Health, router, serve};
use ewn_processor::{ProcessSettings, ProcessorConfig};
use ewn_sim::{DEFAULT_RATE, Scenario, SimConfig, SimKeys};
use ewn_trust::TrustSettings;
use serde::Serialize;

use crate::cli::Global;
use crate::cmd::{now_ms, shutdown_flag};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// How long the simulated network runs, in seconds (Ctrl-C stops it earlier).
    #[arg(long, value_name = "SECS", default_value_t = 90)]
    pub duration: u64,
    /// Background incidents per second.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_RATE)]
    pub rate: f64,
    /// Seed of the simulated traffic.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Scenarios to plant: all, none, or a comma-separated list (see `ewn simulate`).
    #[arg(long, value_name = "LIST", default_value = "all")]
    pub scenarios: String,
    /// Also write the summary as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub summary_json: Option<PathBuf>,
}

/// The two desks: the regional coordination centre, cleared for AMBER, and a national
/// desk cleared for GREEN only.
fn desks(receiver: SocketAddr, secrets: &BTreeMap<String, String>) -> Vec<SubscriptionConfig> {
    [
        ("rcc-desk", "RCC", Tlp::Amber),
        ("kg-desk", "KG-GKNB", Tlp::Green),
    ]
    .into_iter()
    .map(|(id, agency, clearance)| {
        SubscriptionConfig::webhook(
            id,
            agency,
            clearance,
            format!("http://{receiver}/desk/{id}"),
            secrets[id].clone(),
        )
    })
    .collect()
}

/// What the stand-in desk systems received, each delivery's signature checked.
#[derive(Default)]
struct Received {
    /// alert id -> desk -> signature verified
    by_alert: Mutex<HashMap<String, BTreeMap<String, bool>>>,
}

struct ReceiverState {
    received: Arc<Received>,
    secrets: BTreeMap<String, WebhookSecret>,
}

async fn receive(
    State(state): State<Arc<ReceiverState>>,
    Path(desk): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let Some(secret) = state.secrets.get(&desk) else {
        return StatusCode::NOT_FOUND;
    };
    let h = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).unwrap_or("");
    let verified = h("webhook-timestamp")
        .parse::<i64>()
        .is_ok_and(|ts| secret.sign(h("webhook-id"), ts, &body) == h("webhook-signature"));
    let alert_id = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["data"]["alert_id"].as_str().map(str::to_string));
    let Some(alert_id) = alert_id else {
        return StatusCode::BAD_REQUEST;
    };
    state
        .received
        .by_alert
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(alert_id)
        .or_default()
        .insert(desk, verified);
    if verified {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::UNAUTHORIZED
    }
}

fn random_token() -> String {
    let mut raw = [0u8; 24];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut raw);
    hex::encode(raw)
}

#[derive(Serialize, Default)]
struct ScenarioOutcome {
    scenario: String,
    rule: String,
    alert_id: Option<String>,
    tlp: Option<Tlp>,
    level: Option<Level>,
    received_by: Vec<String>,
    withheld_from: Vec<String>,
}

#[derive(Serialize, Default)]
struct DemoSummary {
    duration_secs: u64,
    seed: u64,
    background_rate: f64,
    incidents_confirmed: u64,
    per_state: BTreeMap<String, u64>,
    rejected: u64,
    /// Rejections by reason (a report a gateway sent again after a lost answer is a
    /// `duplicate`).
    rejected_by: BTreeMap<String, u64>,
    /// Correlation alerts; the operational ones (`source_silent`, `source_backlog`) apart.
    alerts: Vec<AlertOutcome>,
    operational: Vec<AlertOutcome>,
    gateway: crate::cmd::demo_posts::GatewayOutcome,
    scenarios: Vec<ScenarioOutcome>,
    desks: BTreeMap<String, Tlp>,
    ports: Vec<u16>,
    interrupted: bool,
}

#[derive(Serialize, Clone)]
struct AlertOutcome {
    alert_id: String,
    msg_type: MsgType,
    references: Vec<String>,
    rule: String,
    key: String,
    level: Level,
    tlp: Tlp,
    score: i32,
    states: Vec<String>,
    received_by: Vec<String>,
    withheld_from: Vec<String>,
}

/// Runs the demo. Prints for people; `--summary-json` is for scripts and the test.
#[allow(clippy::print_stdout)]
pub async fn run(global: &Global, args: Args) -> anyhow::Result<ExitCode> {
    let scenarios = Scenario::parse_list(&args.scenarios)?;
    let shutdown = shutdown_flag();
    // The demo's own lines are the show; service logs only when something is wrong.
    let mut global = global.clone();
    if global.log_level.is_none() {
        // The cut uplink makes the gateway's Kafka client warn about its broker on every
        // retry; the demo says what happens instead.
        global.log_level = Some("warn,librdkafka=error".into());
    }
    let mut settings = global.settings(Vec::new())?;
    println!("== EWN demo: a simulated regional border network on a real (local) broker");
    // Behind a relay that can cut one post's uplink while the rest of the network stays up.
    let (broker, relay) = tokio::task::spawn_blocking(|| {
        ewn_testkit::start_broker_behind_relay(ewn_testkit::Engine::Sqlite)
    })
    .await?
    .map_err(|e| anyhow::anyhow!("the local broker did not start: {e}"))?;
    settings.kafka.brokers = relay.addr.clone();
    let result = run_network(&args, scenarios, settings.kafka, &broker, &relay, shutdown).await;
    let stopped = tokio::task::spawn_blocking(move || broker.stop()).await?;
    let summary = result?;
    stopped.map_err(|e| anyhow::anyhow!(e))?;
    if let Some(path) = &args.summary_json {
        std::fs::write(path, serde_json::to_vec_pretty(&summary)?)
            .with_context(|| format!("write {}", path.display()))?;
    }
    println!("== stopped: broker, processor, fan-out and receiver are down; nothing left running");
    let missed = summary
        .scenarios
        .iter()
        .filter(|s| s.alert_id.is_none())
        .count();
    Ok(if missed == 0 || summary.interrupted {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[allow(clippy::print_stdout)]
async fn run_network(
    args: &Args,
    scenarios: Vec<Scenario>,
    kafka: KafkaSettings,
    broker: &ewn_testkit::Broker,
    relay: &ewn_testkit::LinkRelay,
    shutdown: Arc<AtomicBool>,
) -> anyhow::Result<DemoSummary> {
    let work = tempfile::Builder::new().prefix("ewn-demo-").tempdir()?;
    let trust_store = work.path().join("trust.toml");
    let keys = SimKeys::init(&work.path().join("keys"), &trust_store, now_ms())?;
    // KZ's gateway key, in the trust store before the processor reads it.
    let gateway_key = crate::cmd::demo_posts::enroll(work.path(), &trust_store)?;
    println!(
        "   broker     Tansu at {} (sqlite, {})",
        broker.addr,
        broker.dir.display()
    );
    println!(
        "   states     {} (a signing key each, in a trust store)",
        ewn_sim::network::state_codes().join(" ")
    );

    // The stand-in desk systems: verify each delivery's signature.
    let secrets: BTreeMap<String, String> = ["rcc-desk", "kg-desk"]
        .into_iter()
        .map(|d| (d.to_string(), WebhookSecret::generate()))
        .collect();
    let received = Arc::new(Received::default());
    let receiver_state = Arc::new(ReceiverState {
        received: received.clone(),
        secrets: secrets
            .iter()
            .map(|(k, v)| {
                Ok((
                    k.clone(),
                    WebhookSecret::parse(v).map_err(anyhow::Error::msg)?,
                ))
            })
            .collect::<anyhow::Result<_>>()?,
    });
    let stop_servers = {
        let s = shutdown.clone();
        move || crate::cmd::wait_for(s.clone())
    };
    let (receiver_addr, receiver_task) = serve(
        "127.0.0.1:0".parse()?,
        axum::Router::new()
            .route("/desk/{desk}", axum::routing::post(receive))
            .with_state(receiver_state),
        stop_servers(),
    )
    .await?;

    // Processor.
    let process_registry = ewn_ops::metrics::registry();
    let health = Arc::new(Health::default());
    let (process_admin, process_admin_task) = serve(
        "127.0.0.1:0".parse()?,
        router(process_registry.clone(), health.clone(), None),
        stop_servers(),
    )
    .await?;
    let processor_config = ProcessorConfig {
        kafka: kafka.clone(),
        trust: TrustSettings {
            trust_store: Some(trust_store.clone()),
            ..TrustSettings::default()
        },
        limits: Default::default(),
        process: ProcessSettings {
            // Short enough to be seen in a demo (300 s by default).
            sources: ewn_processor::sources::SourceSettings {
                silent_after_secs: 15,
                ..Default::default()
            },
            ..ProcessSettings::default()
        },
    };
    // The topics, made as `ewn topics create` makes them: the services only check theirs.
    let specs = ewn_kafka::Topics::new(&kafka.topic_prefix).network(
        &kafka.states,
        kafka.partitions,
        processor_config.rekeyed_partitions(),
    );
    ewn_kafka::admin::ensure_topics(&kafka, &specs).await?;
    let processor = {
        let (r, h, s) = (process_registry.clone(), health, shutdown.clone());
        tokio::spawn(async move { ewn_processor::run(processor_config, &r, h, s).await })
    };
    // The simulator's first report is a day old (the vanished exit): both stages must be
    // consuming before present-time traffic moves the watermark past it.
    let ready = Instant::now() + Duration::from_secs(60);
    loop {
        let text = ewn_ops::metrics::render(&process_registry);
        let assigned = |client: &str| {
            text.lines().any(|l| {
                l.starts_with(&format!(
                    "ewn_kafka_assigned_partitions{{client=\"{client}\"}}"
                )) && !l.ends_with(" 0")
            })
        };
        if assigned("process-ingest") && assigned("process-correlate") {
            break;
        }
        if processor.is_finished() || Instant::now() > ready || shutdown.load(Ordering::Relaxed) {
            shutdown.store(true, Ordering::Relaxed);
            let outcome = processor.await?;
            anyhow::bail!("the processor did not start consuming within 60 s: {outcome:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Fan-out, with the two desks and a console token each.
    let subs = desks(receiver_addr, &secrets);
    let tokens: Vec<(String, Principal)> = subs
        .iter()
        .map(|s| {
            (
                random_token(),
                Principal::Desk {
                    name: format!("{}-officer", s.id),
                    subscription: s.id.clone(),
                },
            )
        })
        .collect();
    let fanout_registry = ewn_ops::metrics::registry();
    let fanout_health = Arc::new(Health::default());
    let (fanout_admin, fanout_admin_task) = serve(
        "127.0.0.1:0".parse()?,
        router(fanout_registry.clone(), fanout_health.clone(), None),
        stop_servers(),
    )
    .await?;
    let fanout = ewn_fanout::start(
        FanoutConfig {
            kafka: kafka.clone(),
            fanout: FanoutSettings {
                listen: "127.0.0.1:0".parse()?,
                // The demo's desks are webhook receivers on this host, over plain http:
                // allowed here explicitly (the policy refuses both by default).
                webhook: ewn_fanout::settings::WebhookSettings {
                    allow_http_hosts: vec!["127.0.0.1".into()],
                    allow_private_cidrs: vec!["127.0.0.1/32".into()],
                    ..Default::default()
                },
                ..FanoutSettings::default()
            },
            subscriptions: subs.clone(),
            tokens: tokens.clone(),
            key: Some(ewn_fanout::keys::FanoutKey::generate()),
        },
        &fanout_registry,
        fanout_health,
        shutdown.clone(),
    )
    .await?;
    let records: Vec<Subscription> = subs
        .iter()
        .map(|s| s.to_record(0).map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<_>>()?;
    println!(
        "   desks      rcc-desk (RCC, cleared AMBER) and kg-desk (KG-GKNB, cleared GREEN), by signed webhook to a local receiver"
    );
    println!("   console    http://{}/console", fanout.api);
    for (token, p) in &tokens {
        if let Principal::Desk { subscription, .. } = p {
            println!("                log in as {subscription:<9} with token {token}");
        }
    }
    println!(
        "   metrics    http://{process_admin}/metrics (processor), http://{fanout_admin}/metrics (fan-out)"
    );
    // Kazakhstan's gateway at two border posts.
    let gateway = crate::cmd::demo_posts::start(
        work.path(),
        &kafka,
        gateway_key,
        &work.path().join("keys").join(ewn_sim::keys::BLINDING_FILE),
        shutdown.clone(),
    )
    .await?;
    println!(
        "   gateway    KZ's gateway at http://{}/api/v1/incidents for posts {} and {}",
        gateway.addr,
        crate::cmd::demo_posts::CUT_POST,
        crate::cmd::demo_posts::QUIET_POST
    );
    let names: Vec<&str> = scenarios.iter().map(|s| s.name()).collect();
    println!(
        "== running {} s: background {} incidents/s, planted scenarios: {}",
        args.duration,
        args.rate,
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        }
    );

    // The alert printer reads <prefix>alerts from the start.
    let alerts_seen: Arc<Mutex<Vec<Alert>>> = Arc::default();
    let printer = {
        let (kafka, seen, stop) = (kafka.clone(), alerts_seen.clone(), shutdown.clone());
        let (received, records) = (received.clone(), records.clone());
        tokio::task::spawn_blocking(move || print_alerts(&kafka, &seen, &received, &records, &stop))
    };

    let sim_stop = Arc::new(AtomicBool::new(false));
    let sim = {
        let config = SimConfig {
            seed: args.seed,
            rate_per_sec: args.rate,
            duration: Some(Duration::from_secs(args.duration)),
            scenarios: scenarios.clone(),
            ..SimConfig::new(kafka.clone())
        };
        let stop = sim_stop.clone();
        tokio::spawn(async move { ewn_sim::run(config, keys, stop).await })
    };
    // The posts report through KZ's gateway while the simulator runs.
    let stop_posts = shutdown.clone();
    let verified = || {
        ewn_ops::metrics::render(&process_registry)
            .lines()
            .filter(|l| l.starts_with("ewn_processor_incidents_verified_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
            >= 20.0
    };
    let posts = gateway.run_posts(
        relay,
        Duration::from_secs(args.duration),
        &stop_posts,
        verified,
    );
    // Ctrl-C stops the simulator too.
    let simulate = async {
        loop {
            if shutdown.load(Ordering::Relaxed) {
                sim_stop.store(true, Ordering::Relaxed);
            }
            if sim.is_finished() {
                break anyhow::Ok(sim.await??);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let (posted, sim_summary) = tokio::join!(posts, simulate);
    let sim_summary = sim_summary?;
    let (cut_post_ids, accepted_while_down) = posted?;
    let interrupted = shutdown.load(Ordering::Relaxed);

    // Give the planted scenarios' alerts time to arrive and be delivered.
    let expected: Vec<(String, String)> = sim_summary
        .planted
        .iter()
        .map(|p| (p.rule.clone(), p.key.clone()))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(45);
    while !shutdown.load(Ordering::Relaxed) && Instant::now() < deadline {
        let done = {
            let seen = alerts_seen.lock().unwrap_or_else(|p| p.into_inner());
            let by_alert = received.by_alert.lock().unwrap_or_else(|p| p.into_inner());
            expected.iter().all(|(rule, key)| {
                seen.iter().any(|a| {
                    a.msg_type == MsgType::Alert
                        && &a.rule == rule
                        && &a.key == key
                        && eligible(&records, a)
                            .iter()
                            .all(|d| by_alert.get(&a.alert_id).is_some_and(|m| m.contains_key(d)))
                })
            })
        };
        if done {
            // A moment for the printer to show the last alert.
            tokio::time::sleep(Duration::from_millis(1500)).await;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The cut post's gateway forwards what it spooled; then count what reached the broker.
    let drained = Instant::now() + Duration::from_secs(60);
    while gateway.spooled() > 0 && Instant::now() < drained && !shutdown.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let on_broker = {
        let (kafka, ids) = (kafka.clone(), cut_post_ids.clone());
        tokio::task::spawn_blocking(move || crate::cmd::demo_posts::on_broker(&kafka, &ids))
            .await??
    };
    let gateway_outcome = crate::cmd::demo_posts::GatewayOutcome {
        post: crate::cmd::demo_posts::CUT_POST.into(),
        accepted: cut_post_ids.len(),
        accepted_while_down,
        on_broker,
        lost: cut_post_ids.len().saturating_sub(on_broker),
        outage_secs: if accepted_while_down > 0 {
            crate::cmd::demo_posts::OUTAGE.as_secs()
        } else {
            0
        },
    };
    let mut rejected_by: BTreeMap<String, u64> = BTreeMap::new();
    for l in ewn_ops::metrics::render(&process_registry)
        .lines()
        .filter(|l| l.starts_with("ewn_processor_incidents_rejected_total{"))
    {
        let reason = l
            .split("reason=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or("?");
        let n = l
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0) as u64;
        if n > 0 {
            *rejected_by.entry(reason.to_string()).or_default() += n;
        }
    }
    let rejected = rejected_by.values().sum::<u64>();
    shutdown.store(true, Ordering::Relaxed);
    gateway.stop().await;
    let _ = printer.await;
    let _ = processor.await;
    let _ = fanout.task.await;
    let _ = tokio::join!(receiver_task, process_admin_task, fanout_admin_task);

    let seen = alerts_seen
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let by_alert = received
        .by_alert
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let outcome = |a: &Alert| {
        let got: BTreeSet<String> = by_alert
            .get(&a.alert_id)
            .map(|m| {
                m.iter()
                    .filter(|(_, ok)| **ok)
                    .map(|(d, _)| d.clone())
                    .collect()
            })
            .unwrap_or_default();
        let withheld: Vec<String> = records
            .iter()
            .filter(|s| !got.contains(&s.id))
            .map(|s| s.id.clone())
            .collect();
        (got.into_iter().collect::<Vec<_>>(), withheld)
    };
    let alert_outcome = |a: &Alert| {
        let (received_by, withheld_from) = outcome(a);
        AlertOutcome {
            alert_id: a.alert_id.clone(),
            msg_type: a.msg_type,
            references: a.references.clone(),
            rule: a.rule.clone(),
            key: a.key.clone(),
            level: a.level,
            tlp: a.tlp,
            score: a.score,
            states: a.states.clone(),
            received_by,
            withheld_from,
        }
    };
    let summary = DemoSummary {
        duration_secs: args.duration,
        seed: args.seed,
        background_rate: sim_summary.background_rate(),
        incidents_confirmed: sim_summary.confirmed,
        per_state: sim_summary.per_state.clone(),
        rejected,
        rejected_by,
        gateway: gateway_outcome,
        operational: seen
            .iter()
            .filter(|a| ewn_processor::sources::RULES.contains(&a.rule.as_str()))
            .map(alert_outcome)
            .collect(),
        alerts: seen
            .iter()
            .filter(|a| !ewn_processor::sources::RULES.contains(&a.rule.as_str()))
            .map(alert_outcome)
            .collect(),
        scenarios: sim_summary
            .planted
            .iter()
            .map(|p| {
                let alert = seen
                    .iter()
                    .find(|a| a.msg_type == MsgType::Alert && a.rule == p.rule && a.key == p.key);
                match alert {
                    Some(a) => {
                        let (received_by, withheld_from) = outcome(a);
                        ScenarioOutcome {
                            scenario: p.scenario.clone(),
                            rule: p.rule.clone(),
                            alert_id: Some(a.alert_id.clone()),
                            tlp: Some(a.tlp),
                            level: Some(a.level),
                            received_by,
                            withheld_from,
                        }
                    }
                    None => ScenarioOutcome {
                        scenario: p.scenario.clone(),
                        rule: p.rule.clone(),
                        ..Default::default()
                    },
                }
            })
            .collect(),
        desks: records
            .iter()
            .map(|s| (s.id.clone(), s.clearance))
            .collect(),
        ports: [broker
            .addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0)]
        .into_iter()
        .chain([receiver_addr, process_admin, fanout_admin, fanout.api].map(|a| a.port()))
        .collect(),
        interrupted,
    };
    print_summary(&summary);
    Ok(summary)
}

/// The desks the fan-out should deliver `a` to, by the same rule it applies.
fn eligible(records: &[Subscription], a: &Alert) -> Vec<String> {
    records
        .iter()
        .filter(|s| policy::decide(s, a) == Decision::Deliver(Form::Full))
        .map(|s| s.id.clone())
        .collect()
}

/// Prints each alert once its deliveries are in (or after 5 s), with who received it.
#[allow(clippy::print_stdout)]
fn print_alerts(
    kafka: &KafkaSettings,
    seen: &Mutex<Vec<Alert>>,
    received: &Received,
    records: &[Subscription],
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let topic = Topics::new(&kafka.topic_prefix).alerts();
    let reader = AssignedReader::new(
        kafka,
        "demo-printer",
        "alerts",
        |t| t == topic,
        StartAt::Beginning,
    )?;
    let mut waiting: Vec<(Alert, Instant)> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        if let Some(Some(Ok(a))) = reader.poll(Duration::from_millis(100), |r| {
            r.value.map(Alert::from_avro)
        })? {
            seen.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(a.clone());
            waiting.push((a, Instant::now()));
        }
        let by_alert = received
            .by_alert
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        waiting.retain(|(a, since)| {
            let want = eligible(records, a);
            let got = by_alert.get(&a.alert_id);
            let complete = want.iter().all(|d| got.is_some_and(|m| m.contains_key(d)));
            if complete || since.elapsed() > Duration::from_secs(5) {
                print!("{}", describe(a, got, records));
                false
            } else {
                true
            }
        });
    }
    Ok(())
}

fn describe(a: &Alert, got: Option<&BTreeMap<String, bool>>, records: &[Subscription]) -> String {
    let time = chrono::DateTime::from_timestamp_millis(a.created_at)
        .map(|t| t.format("%H:%M:%S").to_string())
        .unwrap_or_default();
    let mut reasons: Vec<_> = a.reasons.iter().collect();
    reasons.sort_by_key(|r| -r.contribution);
    let top: Vec<String> = reasons
        .iter()
        .take(3)
        .map(|r| format!("{} +{} ({})", r.factor, r.contribution, r.detail))
        .collect();
    let desks: Vec<String> = records
        .iter()
        .map(|s| match got.and_then(|m| m.get(&s.id)) {
            Some(true) => format!("{} received (signature verified)", s.id),
            Some(false) => format!("{} received a delivery that did NOT verify", s.id),
            None => match policy::decide(s, a) {
                Decision::Deliver(_) => format!("{} pending", s.id),
                _ => format!(
                    "{} withheld (cleared {}, alert {})",
                    s.id, s.clearance, a.tlp
                ),
            },
        })
        .collect();
    let mut out = format!(
        "[{time}] {} {:<8} {:<22} score {:>3}  TLP:{:<6} states {}\n",
        a.msg_type,
        a.level.as_str(),
        a.rule,
        a.score,
        a.tlp.as_str(),
        a.states.join(","),
    );
    if !a.references.is_empty() {
        out.push_str(&format!(
            "           refers to {}\n",
            a.references.join(", ")
        ));
    }
    out.push_str(&format!("           reasons: {}\n", top.join("; ")));
    out.push_str(&format!(
        "           evidence: {} signed report(s); desks: {}\n",
        a.evidence.len(),
        desks.join("; ")
    ));
    out
}

#[allow(clippy::print_stdout)]
fn print_summary(s: &DemoSummary) {
    println!("== summary");
    println!(
        "   incidents  {} confirmed ({}), background {:.1}/s, {} rejected{}",
        s.incidents_confirmed,
        s.per_state
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", "),
        s.background_rate,
        s.rejected,
        if s.rejected_by.is_empty() {
            String::new()
        } else {
            format!(
                " ({})",
                s.rejected_by
                    .iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    );
    let mut by_rule: BTreeMap<&str, usize> = BTreeMap::new();
    for a in s.alerts.iter().filter(|a| a.msg_type == MsgType::Alert) {
        *by_rule.entry(&a.rule).or_default() += 1;
    }
    let rules: Vec<String> = by_rule.iter().map(|(k, v)| format!("{k} {v}")).collect();
    if rules.is_empty() {
        println!("   alerts     {}", s.alerts.len());
    } else {
        println!("   alerts     {} ({})", s.alerts.len(), rules.join(", "));
    }
    for d in s.desks.keys() {
        let n = s
            .alerts
            .iter()
            .filter(|a| a.received_by.contains(d))
            .count();
        println!("   {d:<10} received {n} alert message(s)");
    }
    let g = &s.gateway;
    println!(
        "   gateway    {}: {} reports accepted by its gateway ({} while its uplink was down {} s), {} on the broker, {} lost",
        g.post, g.accepted, g.accepted_while_down, g.outage_secs, g.on_broker, g.lost
    );
    for a in &s.operational {
        let what = match a.msg_type {
            MsgType::Cancel => "cancelled (heard again)",
            _ => "raised",
        };
        println!(
            "   sources    {} {} {what}, received by {}",
            a.rule,
            a.key,
            if a.received_by.is_empty() {
                "nobody".into()
            } else {
                a.received_by.join(", ")
            }
        );
    }
    for sc in &s.scenarios {
        match &sc.alert_id {
            Some(_) => println!(
                "   scenario   {:<16} -> {} alert, {} TLP:{}, received by {}",
                sc.scenario,
                sc.rule,
                sc.level.map_or("", |l| l.as_str()),
                sc.tlp.map_or("", |t| t.as_str()),
                if sc.received_by.is_empty() {
                    "nobody".into()
                } else {
                    sc.received_by.join(", ")
                }
            ),
            None => println!("   scenario   {:<16} -> NO {} alert", sc.scenario, sc.rule),
        }
    }
}
