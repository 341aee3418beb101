//! The whole network, started in order and stopped as one. Each part starts once the one
//! before it is ready by its own signal: the broker listens, the processor's two stages
//! have their partitions ([`Health::ready`]), the fan-out, the receiver and the gateway
//! have bound their listeners (their start functions return then). Only then does traffic
//! begin.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ewn_fanout::auth::Principal;
use ewn_fanout::webhook::WebhookSecret;
use ewn_fanout::{FanoutConfig, FanoutSettings, SubscriptionConfig};
use ewn_kafka::{KafkaSettings, Topics};
use ewn_model::{Alert, Level, MsgType, Subscription, Tlp};
use ewn_ops::http::{Health, router, serve};
use ewn_processor::{ProcessSettings, ProcessorConfig};
use ewn_sim::{Scenario, SimConfig, SimKeys};
use ewn_trust::TrustSettings;
use serde::Serialize;
use tokio::sync::mpsc::UnboundedSender;

use crate::Event;
use crate::broker::{Engine, LocalBroker};
use crate::case::{CaseOps, CaseSite, CaseSummary};
use crate::desk::DeskReceiver;
use crate::error::{Error, Result};
use crate::observer::{AlertObserver, eligible};
use crate::posts::{self, DemoGateway, GatewayOutcome};
use crate::relay::LinkRelay;

/// How long the processor may take to be given its partitions.
const PROCESSOR_READY: Duration = Duration::from_secs(60);
/// How long the posts wait for the processor to take the simulator's first reports.
const FIRST_REPORTS: Duration = Duration::from_secs(30);
/// Records of the processor's repartition topic that show it has taken the simulator's
/// first reports (each verified report gives one per grouping it has).
const FIRST_REPORTS_REKEYED: i64 = 20;
/// After the traffic: how long the planted scenarios' alerts have to arrive and be
/// delivered, and the cut post's spooled reports to reach the broker.
const ALERTS_SETTLE: Duration = Duration::from_secs(45);
const SPOOL_DRAIN: Duration = Duration::from_secs(60);

/// What to run.
#[derive(Clone, Debug)]
pub struct DemoConfig {
    /// Client settings; `brokers` is replaced by the local broker's relay.
    pub kafka: KafkaSettings,
    /// The Tansu binary.
    pub tansu_bin: PathBuf,
    pub duration: Duration,
    /// Background incidents per second.
    pub rate: f64,
    pub seed: u64,
    pub scenarios: Vec<Scenario>,
    /// Run the case request of [`crate::case`]: KZ's gateway keeps details and serves its
    /// operators, and its post reports a watch-list hit.
    pub case_request: bool,
}

/// The desks: the regional coordination centre, cleared for AMBER, and a national desk
/// cleared for GREEN only. (subscription id, agency, clearance)
pub const DESKS: [(&str, &str, Tlp); 2] = [
    ("rcc-desk", "RCC", Tlp::Amber),
    ("kg-desk", "KG-GKNB", Tlp::Green),
];

/// Where everything listens, for the caller to show.
#[derive(Clone, Debug)]
pub struct Started {
    pub broker: String,
    pub broker_dir: PathBuf,
    pub receiver: SocketAddr,
    pub process_admin: SocketAddr,
    pub fanout_admin: SocketAddr,
    /// The fan-out's API and console.
    pub fanout_api: SocketAddr,
    pub gateway: SocketAddr,
    /// Console login per desk: (subscription id, token).
    pub tokens: Vec<(String, String)>,
}

/// The network, running.
pub struct Network {
    config: DemoConfig,
    kafka: KafkaSettings,
    shutdown: Arc<AtomicBool>,
    events: UnboundedSender<Event>,
    broker: LocalBroker,
    relay: LinkRelay,
    _work: tempfile::TempDir,
    keys: SimKeys,
    started: Started,
    desks: Vec<Subscription>,
    receiver: DeskReceiver,
    process_registry: prometheus::Registry,
    processor: tokio::task::JoinHandle<ewn_processor::Result<()>>,
    fanout: tokio::task::JoinHandle<ewn_fanout::Result<()>>,
    servers: Vec<tokio::task::JoinHandle<std::io::Result<()>>>,
    gateway: DemoGateway,
    case: Option<CaseSite>,
}

#[derive(Serialize, Default, Clone, Debug)]
pub struct ScenarioOutcome {
    pub scenario: String,
    pub rule: String,
    pub alert_id: Option<String>,
    pub tlp: Option<Tlp>,
    pub level: Option<Level>,
    pub received_by: Vec<String>,
    pub withheld_from: Vec<String>,
}

#[derive(Serialize, Clone, Debug)]
pub struct AlertOutcome {
    pub alert_id: String,
    pub msg_type: MsgType,
    pub references: Vec<String>,
    pub rule: String,
    pub key: String,
    pub level: Level,
    pub tlp: Tlp,
    pub score: i32,
    pub states: Vec<String>,
    pub received_by: Vec<String>,
    pub withheld_from: Vec<String>,
}

/// What a run did (`ewn demo --summary-json` writes it).
#[derive(Serialize, Default, Clone, Debug)]
pub struct Summary {
    pub duration_secs: u64,
    pub seed: u64,
    pub background_rate: f64,
    pub incidents_confirmed: u64,
    pub per_state: BTreeMap<String, u64>,
    pub rejected: u64,
    /// Rejections by reason (a report a gateway sent again after a lost answer is a
    /// `duplicate`).
    pub rejected_by: BTreeMap<String, u64>,
    /// Correlation alerts; the operational ones (`source_silent`, `source_backlog`) apart.
    pub alerts: Vec<AlertOutcome>,
    pub operational: Vec<AlertOutcome>,
    pub gateway: GatewayOutcome,
    pub scenarios: Vec<ScenarioOutcome>,
    /// The case request, when the run had one.
    pub case: Option<CaseSummary>,
    pub desks: BTreeMap<String, Tlp>,
    /// Every port the run listened on: the broker's first.
    pub ports: Vec<u16>,
    pub interrupted: bool,
}

async fn wait_for(flag: Arc<AtomicBool>) {
    while !flag.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn random_token() -> String {
    let mut raw = [0u8; 24];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut raw);
    hex::encode(raw)
}

const LOOPBACK: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

/// Sums of a counter of `registry` per value of `label` (non-zero ones), read from the
/// registry's own values.
fn counter_by_label(
    registry: &prometheus::Registry,
    name: &str,
    label: &str,
) -> BTreeMap<String, u64> {
    let mut out: BTreeMap<String, u64> = BTreeMap::new();
    for family in registry.gather().iter().filter(|f| f.name() == name) {
        for m in family.get_metric() {
            let n = m.get_counter().get_value() as u64;
            if n == 0 {
                continue;
            }
            let value = m
                .get_label()
                .iter()
                .find(|l| l.name() == label)
                .map_or("?", |l| l.value());
            *out.entry(value.to_string()).or_default() += n;
        }
    }
    out
}

impl Network {
    /// Starts the broker and every service, each once the one before is ready, with no
    /// traffic yet. `shutdown` (Ctrl-C) stops it all; `events` receives what happens.
    pub async fn start(
        config: DemoConfig,
        shutdown: Arc<AtomicBool>,
        events: UnboundedSender<Event>,
    ) -> Result<Network> {
        let bin = config.tansu_bin.clone();
        // Behind a relay that can cut one post's uplink while the rest stays up.
        let (broker, relay) = tokio::task::spawn_blocking(move || {
            LocalBroker::start_behind_relay(&bin, Engine::Sqlite)
        })
        .await??;
        let mut kafka = config.kafka.clone();
        kafka.brokers = relay.addr.clone();
        match start_services(&kafka, config.case_request, &shutdown).await {
            Ok(parts) => Ok(Network {
                started: Started {
                    broker: broker.addr.clone(),
                    broker_dir: broker.dir.clone(),
                    receiver: parts.receiver.addr,
                    process_admin: parts.process_admin,
                    fanout_admin: parts.fanout_admin,
                    fanout_api: parts.fanout_api,
                    gateway: parts.gateway.addr,
                    tokens: parts.tokens,
                },
                config,
                kafka,
                shutdown,
                events,
                broker,
                relay,
                _work: parts.work,
                keys: parts.keys,
                desks: parts.desks,
                receiver: parts.receiver,
                process_registry: parts.process_registry,
                processor: parts.processor,
                fanout: parts.fanout,
                servers: parts.servers,
                gateway: parts.gateway,
                case: parts.case,
            }),
            Err(e) => {
                // What did start stops with the flag; the broker is stopped here.
                shutdown.store(true, Ordering::Relaxed);
                let _ = tokio::task::spawn_blocking(move || broker.stop()).await;
                Err(e)
            }
        }
    }

    pub fn started(&self) -> &Started {
        &self.started
    }

    /// The desks' subscriptions, as the fan-out holds them.
    pub fn desks(&self) -> &[Subscription] {
        &self.desks
    }

    /// The client settings of the network (through the relay).
    pub fn kafka(&self) -> &KafkaSettings {
        &self.kafka
    }

    /// Runs the traffic for the configured duration (or until `shutdown`), with the case
    /// request done by `case_ops` when the network was started for one (with `None`, the
    /// post still reports its hit but nobody asks about it), waits for the planted
    /// scenarios' alerts and the cut post's spool, then stops every service and the broker,
    /// and says what happened.
    pub async fn run(self, case_ops: Option<&dyn CaseOps>) -> Result<Summary> {
        let Network {
            config,
            kafka,
            shutdown,
            events,
            broker,
            relay,
            _work,
            keys,
            started,
            desks,
            receiver,
            process_registry,
            processor,
            fanout,
            servers,
            gateway,
            case,
        } = self;
        let case = match (case, case_ops) {
            (Some(site), Some(ops)) => Some(CaseRun {
                site,
                ops,
                fanout_url: format!("http://{}", started.fanout_api),
                desk_token: started
                    .tokens
                    .iter()
                    .find(|(s, _)| s == crate::case::DESK)
                    .map(|(_, t)| zeroize::Zeroizing::new(t.clone()))
                    .unwrap_or_default(),
            }),
            _ => None,
        };
        let outcome = traffic(
            &config,
            &kafka,
            &shutdown,
            &events,
            &relay,
            keys,
            &desks,
            &receiver,
            &process_registry,
            &gateway,
            case,
        )
        .await;
        // Everything stops, whatever the outcome.
        shutdown.store(true, Ordering::Relaxed);
        gateway.stop().await;
        let processed = processor.await;
        let fanned = fanout.await;
        let received = receiver.received();
        let _ = receiver.task.await;
        for s in servers {
            let _ = s.await;
        }
        let stopped = tokio::task::spawn_blocking(move || broker.stop()).await;
        let (observed, traffic) = outcome?;
        if let Ok(Err(e)) = processed {
            tracing::warn!(error = %e, "the processor ended with an error");
        }
        if let Ok(Err(e)) = fanned {
            tracing::warn!(error = %e, "the fan-out ended with an error");
        }
        stopped??;
        Ok(summarise(
            &config, &started, &desks, &received, &observed, traffic,
        ))
    }
}

/// Parts started by [`start_services`].
struct Parts {
    work: tempfile::TempDir,
    keys: SimKeys,
    desks: Vec<Subscription>,
    tokens: Vec<(String, String)>,
    receiver: DeskReceiver,
    process_registry: prometheus::Registry,
    process_admin: SocketAddr,
    processor: tokio::task::JoinHandle<ewn_processor::Result<()>>,
    fanout_admin: SocketAddr,
    fanout_api: SocketAddr,
    fanout: tokio::task::JoinHandle<ewn_fanout::Result<()>>,
    servers: Vec<tokio::task::JoinHandle<std::io::Result<()>>>,
    gateway: DemoGateway,
    case: Option<CaseSite>,
}

/// The case request's set-up and steps, for the traffic phase.
struct CaseRun<'a> {
    site: CaseSite,
    ops: &'a dyn CaseOps,
    fanout_url: String,
    desk_token: zeroize::Zeroizing<String>,
}

async fn start_services(
    kafka: &KafkaSettings,
    case_request: bool,
    shutdown: &Arc<AtomicBool>,
) -> Result<Parts> {
    let work = tempfile::Builder::new()
        .prefix("ewn-demo-")
        .tempdir()
        .map_err(|e| Error::Io("the demo's work directory", e))?;
    let trust_store = work.path().join("trust.toml");
    let keys = SimKeys::init(&work.path().join("keys"), &trust_store, crate::now_ms())?;
    // KZ's gateway key, in the trust store before the processor reads it.
    let gateway_key = posts::enroll(work.path(), &trust_store)?;
    // The case request's keys, likewise.
    let case = case_request
        .then(|| CaseSite::enroll(work.path(), &trust_store))
        .transpose()?;

    // The stand-in desk systems.
    let secrets: BTreeMap<String, String> = DESKS
        .iter()
        .map(|(d, _, _)| (d.to_string(), WebhookSecret::generate()))
        .collect();
    let receiver = DeskReceiver::start(&secrets, wait_for(shutdown.clone())).await?;
    let mut servers = Vec::new();

    // Processor.
    let process_registry = ewn_ops::metrics::registry();
    let health = Arc::new(Health::default());
    let (process_admin, task) = serve(
        LOOPBACK,
        router(process_registry.clone(), health.clone(), None),
        wait_for(shutdown.clone()),
    )
    .await
    .map_err(|e| Error::Io("the processor's admin server", e))?;
    servers.push(task);
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
    let specs = Topics::new(&kafka.topic_prefix).network(
        &kafka.states,
        kafka.partitions,
        processor_config.rekeyed_partitions(),
    );
    ewn_kafka::admin::ensure_topics(kafka, &specs).await?;
    let processor = {
        let (r, h, s) = (process_registry.clone(), health.clone(), shutdown.clone());
        tokio::spawn(async move { ewn_processor::run(processor_config, &r, h, s).await })
    };
    // The simulator's first report is a day old (the vanished exit): both stages must be
    // consuming before present-time traffic moves the watermark past it. Each says so
    // when its group gives it partitions.
    tokio::select! {
        () = health.ready(&["ingest", "correlate"]) => {}
        () = tokio::time::sleep(PROCESSOR_READY) => {
            return Err(Error::Start("the processor", format!(
                "no partitions for its stages within {} s", PROCESSOR_READY.as_secs())));
        }
        () = wait_for(shutdown.clone()) => {
            return Err(Error::Start("the processor", "interrupted".into()));
        }
        () = ended(&processor) => {
            let outcome = processor.await?;
            return Err(Error::Start("the processor", format!("it ended: {outcome:?}")));
        }
    }

    // Fan-out, with the two desks and a console token each.
    let subs: Vec<SubscriptionConfig> = DESKS
        .iter()
        .map(|(id, agency, clearance)| {
            SubscriptionConfig::webhook(
                id,
                agency,
                *clearance,
                receiver.url(id),
                secrets[*id].clone(),
            )
        })
        .collect();
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
    let (fanout_admin, task) = serve(
        LOOPBACK,
        router(fanout_registry.clone(), fanout_health.clone(), None),
        wait_for(shutdown.clone()),
    )
    .await
    .map_err(|e| Error::Io("the fan-out's admin server", e))?;
    servers.push(task);
    let fanout = ewn_fanout::start(
        FanoutConfig {
            kafka: kafka.clone(),
            fanout: FanoutSettings {
                listen: LOOPBACK,
                // The demo's desks are webhook receivers on this host, over plain http:
                // allowed here explicitly (the policy refuses both by default).
                webhook: ewn_fanout::settings::WebhookSettings {
                    allow_http_hosts: vec!["127.0.0.1".into()],
                    allow_private_cidrs: vec!["127.0.0.1/32".into()],
                    ..Default::default()
                },
                // Its service key signs the desks' case requests (and its audit records).
                audit: ewn_fanout::settings::AuditSettings {
                    signing_key_file: case.as_ref().map(|c| c.fanout_audit_key.clone()),
                    key_id: case
                        .as_ref()
                        .map(|_| crate::case::FANOUT_AUDIT_KEY_ID.into())
                        .unwrap_or_default(),
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
    let desks: Vec<Subscription> = subs
        .iter()
        .map(|s| s.to_record(0).map_err(Error::Setup))
        .collect::<Result<_>>()?;
    // Kazakhstan's gateway at two border posts.
    let gateway = posts::start(
        work.path(),
        kafka,
        gateway_key,
        &work.path().join("keys").join(ewn_sim::keys::BLINDING_FILE),
        case.as_ref(),
        shutdown.clone(),
    )
    .await?;
    Ok(Parts {
        case,
        keys,
        desks,
        tokens: tokens
            .into_iter()
            .filter_map(|(token, p)| match p {
                Principal::Desk { subscription, .. } => Some((subscription, token)),
                _ => None,
            })
            .collect(),
        receiver,
        process_registry,
        process_admin,
        processor,
        fanout_admin,
        fanout_api: fanout.api,
        fanout: fanout.task,
        servers,
        gateway,
        work,
    })
}

/// Resolves when `task` has ended (without taking its outcome).
async fn ended<T>(task: &tokio::task::JoinHandle<T>) {
    while !task.is_finished() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the traffic phase found, for the summary.
struct Traffic {
    sim: ewn_sim::Summary,
    gateway: GatewayOutcome,
    rejected_by: BTreeMap<String, u64>,
    interrupted: bool,
    case: Option<CaseSummary>,
}

/// Resolves once the processor has put [`FIRST_REPORTS_REKEYED`] records on its
/// repartition topic (the broker confirmed them), or after [`FIRST_REPORTS`].
async fn first_reports_taken(kafka: &KafkaSettings, stop: &AtomicBool) {
    let rekeyed = Topics::new(&kafka.topic_prefix).rekeyed();
    let deadline = Instant::now() + FIRST_REPORTS;
    while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
        let (k, t) = (kafka.clone(), rekeyed.clone());
        let counted =
            tokio::task::spawn_blocking(move || ewn_kafka::admin::record_counts(&k, |n| n == t))
                .await;
        if let Ok(Ok(counts)) = counted
            && counts.iter().map(|(_, n)| n).sum::<i64>() >= FIRST_REPORTS_REKEYED
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tracing::warn!(
        "the processor had not taken the simulator's first reports; the posts start anyway"
    );
}

#[allow(clippy::too_many_arguments)]
async fn traffic(
    config: &DemoConfig,
    kafka: &KafkaSettings,
    shutdown: &Arc<AtomicBool>,
    events: &UnboundedSender<Event>,
    relay: &LinkRelay,
    keys: SimKeys,
    desks: &[Subscription],
    receiver: &DeskReceiver,
    process_registry: &prometheus::Registry,
    gateway: &DemoGateway,
    case: Option<CaseRun<'_>>,
) -> Result<(Vec<Alert>, Traffic)> {
    let observer = AlertObserver::start(
        kafka,
        receiver.deliveries(),
        desks.to_vec(),
        events.clone(),
        shutdown.clone(),
    )?;
    let sim_stop = Arc::new(AtomicBool::new(false));
    let sim = {
        let sim_config = SimConfig {
            seed: config.seed,
            rate_per_sec: config.rate,
            duration: Some(config.duration),
            scenarios: config.scenarios.clone(),
            ..SimConfig::new(kafka.clone())
        };
        let stop = sim_stop.clone();
        tokio::spawn(async move { ewn_sim::run(sim_config, keys, stop).await })
    };
    // The posts report through KZ's gateway while the simulator runs. The simulator's
    // first report is a day old (the vanished exit): the posts' reports of today wait
    // until the processor has taken it, or the partition's event time would be past it.
    let posts_done = AtomicBool::new(false);
    let posts = async {
        let posted = gateway
            .run_posts(
                relay,
                config.duration,
                shutdown,
                first_reports_taken(kafka, shutdown),
                events,
            )
            .await;
        posts_done.store(true, Ordering::Relaxed);
        posted
    };
    // The case request runs alongside, from the post's watch-list hit on.
    let case = async {
        let c = case?;
        let watch = crate::case::Watch {
            kafka,
            fanout_url: c.fanout_url,
            desk_token: c.desk_token,
            gateway,
            observer: &observer,
            receiver,
            posts_done: &posts_done,
            stop: shutdown,
            events,
        };
        Some(crate::case::run(c.ops, &c.site, watch).await)
    };
    // Ctrl-C stops the simulator too.
    let simulate = async {
        tokio::select! {
            () = wait_for(shutdown.clone()) => sim_stop.store(true, Ordering::Relaxed),
            () = ended(&sim) => {}
        }
        Ok::<_, Error>(sim.await??)
    };
    let (posted, sim_summary, case) = tokio::join!(posts, simulate, case);
    let sim_summary = sim_summary?;
    let (cut_post_ids, accepted_while_down) = posted?;
    let interrupted = shutdown.load(Ordering::Relaxed);

    // The planted scenarios' alerts arrive and are delivered, and the observer hands
    // every alert on.
    let expected: Vec<(String, String)> = sim_summary
        .planted
        .iter()
        .map(|p| (p.rule.clone(), p.key.clone()))
        .collect();
    let deadline = Instant::now() + ALERTS_SETTLE;
    while !shutdown.load(Ordering::Relaxed) && Instant::now() < deadline {
        let seen = observer.alerts();
        let received = receiver.received();
        let delivered = expected.iter().all(|(rule, key)| {
            seen.iter().any(|a| {
                a.msg_type == MsgType::Alert
                    && &a.rule == rule
                    && &a.key == key
                    && eligible(desks, a)
                        .iter()
                        .all(|d| received.get(&a.alert_id).is_some_and(|m| m.contains_key(d)))
            })
        });
        if delivered && observer.all_shown() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The cut post's gateway forwards what it spooled: count what reached the broker.
    let on_broker = {
        let (kafka, ids) = (kafka.clone(), cut_post_ids.clone());
        let until_end = shutdown.load(Ordering::Relaxed);
        tokio::task::spawn_blocking(move || posts::on_broker(&kafka, &ids, SPOOL_DRAIN, until_end))
            .await??
    };
    let gateway_outcome = GatewayOutcome {
        post: posts::CUT_POST.into(),
        accepted: cut_post_ids.len(),
        accepted_while_down,
        on_broker,
        lost: cut_post_ids.len().saturating_sub(on_broker),
        outage_secs: if accepted_while_down > 0 {
            posts::OUTAGE.as_secs()
        } else {
            0
        },
    };
    let rejected_by = counter_by_label(
        process_registry,
        "ewn_processor_incidents_rejected_total",
        "reason",
    );
    shutdown.store(true, Ordering::Relaxed);
    let seen = observer.alerts();
    observer.join().await?;
    Ok((
        seen,
        Traffic {
            sim: sim_summary,
            gateway: gateway_outcome,
            rejected_by,
            interrupted,
            case,
        },
    ))
}

fn summarise(
    config: &DemoConfig,
    started: &Started,
    desks: &[Subscription],
    received: &crate::desk::Received,
    seen: &[Alert],
    traffic: Traffic,
) -> Summary {
    let outcome = |a: &Alert| {
        let got: BTreeSet<String> = received
            .get(&a.alert_id)
            .map(|m| {
                m.iter()
                    .filter(|(_, ok)| **ok)
                    .map(|(d, _)| d.clone())
                    .collect()
            })
            .unwrap_or_default();
        let withheld: Vec<String> = desks
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
    let operational = |a: &&Alert| ewn_processor::sources::RULES.contains(&a.rule.as_str());
    let sim = &traffic.sim;
    Summary {
        duration_secs: config.duration.as_secs(),
        seed: config.seed,
        background_rate: sim.background_rate(),
        incidents_confirmed: sim.confirmed,
        per_state: sim.per_state.clone(),
        rejected: traffic.rejected_by.values().sum(),
        rejected_by: traffic.rejected_by.clone(),
        gateway: traffic.gateway.clone(),
        operational: seen.iter().filter(operational).map(alert_outcome).collect(),
        alerts: seen
            .iter()
            .filter(|a| !operational(a))
            .map(alert_outcome)
            .collect(),
        scenarios: sim
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
        case: traffic.case.clone(),
        desks: desks.iter().map(|s| (s.id.clone(), s.clearance)).collect(),
        ports: [started
            .broker
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0)]
        .into_iter()
        .chain(
            [
                started.receiver,
                started.process_admin,
                started.fanout_admin,
                started.fanout_api,
            ]
            .map(|a| a.port()),
        )
        .collect(),
        interrupted: traffic.interrupted,
    }
}
