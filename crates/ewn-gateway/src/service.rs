//! `ewn gateway` as a library: [`start`] wires the intake paths, the spool writer, the
//! forwarder and the key watcher, and serves the HTTP intake until shutdown.
//!
//! Threads: the spool writer (the only one appending), the forwarder (the only one
//! producing and deleting), the key watcher and the file-drop poller; each holds its own
//! SQLite connection. The HTTP intake runs on the async runtime and hands CPU work
//! (parsing, blinding, signing) to blocking tasks.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ewn_kafka::{KafkaMetrics, KafkaSettings, Topics};
use ewn_model::validate::Limits;
use ewn_ops::http::{Health, serve_with};
use ewn_trust::BlindingKey;
use prometheus::Registry;

use crate::drop::FileDrop;
use crate::error::{Error, Result};
use crate::forward::{Forwarder, channel_pair};
use crate::heartbeat::{HeartbeatConfig, HeartbeatMetrics, PostFigures};
use crate::http::{Api, router};
use crate::intake::{Budget, Clock, Contacts, Intake, SpoolWriter, load_tokens, system_clock};
use crate::metrics::GatewayMetrics;
use crate::settings::GatewaySettings;
use crate::signer::{Reload, ReloadingSigner};
use crate::spool::Depth;
use crate::spool::Spool;

pub struct GatewayConfig {
    pub kafka: KafkaSettings,
    pub limits: Limits,
    pub gateway: GatewaySettings,
    /// The time acceptance and `reported_at` defaults are taken from.
    pub clock: Clock,
}

impl GatewayConfig {
    pub fn new(kafka: KafkaSettings, limits: Limits, gateway: GatewaySettings) -> Self {
        GatewayConfig {
            kafka,
            limits,
            gateway,
            clock: system_clock(),
        }
    }
}

pub struct Running {
    /// Where the HTTP intake listens.
    pub addr: SocketAddr,
    /// Ends after `shutdown` is set, once the threads have stopped.
    pub task: tokio::task::JoinHandle<Result<()>>,
}

fn required<'a, T>(v: &'a Option<T>, key: &str) -> Result<&'a T> {
    v.as_ref()
        .ok_or_else(|| Error::Config(vec![format!("{key}: is required")]))
}

async fn wait_for(flag: Arc<AtomicBool>) {
    while !flag.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn spawn<F: FnOnce() + Send + 'static>(name: &str, f: F) -> Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map_err(|e| Error::Stopped(format!("cannot start {name}: {e}")))
}

/// Starts the gateway. It never creates topics; it reads only its state's case requests,
/// and only with `gateway.requests.enabled` (its Kafka principal's grants are in
/// deploy/README.md, "Topics and ACLs").
pub async fn start(
    config: GatewayConfig,
    registry: &Registry,
    health: Arc<Health>,
    shutdown: Arc<AtomicBool>,
) -> Result<Running> {
    let g = &config.gateway;
    let mut problems = g.problems(true);
    problems.extend(config.kafka.problems());
    if !problems.is_empty() {
        return Err(Error::Config(problems));
    }
    let key_path = required(&g.signing_key_file, "gateway.signing_key_file")?;
    let signer = Arc::new(ReloadingSigner::load(key_path, &g.key_id)?);
    let blinding = BlindingKey::load(required(&g.blinding_key_file, "gateway.blinding_key_file")?)?;
    let tokens = Arc::new(load_tokens(required(
        &g.tokens_file,
        "gateway.tokens_file",
    )?)?);
    let spool_path = required(&g.spool.path, "gateway.spool.path")?;
    let writer_spool = Spool::open(spool_path)?;
    let depth = Arc::new(std::sync::Mutex::new(writer_spool.depth()?));
    let mut posts: BTreeSet<String> = tokens.holders().cloned().collect();
    if let Some(dir) = &g.drop.dir {
        posts.extend(crate::drop::posts(dir)?);
    }
    let metrics = GatewayMetrics::register(registry, posts.iter().map(String::as_str))?;
    let kafka_metrics = if config.kafka.statistics_interval_ms > 0 {
        Some(KafkaMetrics::register(registry)?)
    } else {
        None
    };
    {
        let d = depth.lock().unwrap_or_else(|p| p.into_inner());
        for (post, pd) in &d.posts {
            metrics.post(post);
            metrics.spool_depth(post, pd);
        }
        if d.records > 0 {
            tracing::info!(
                reports = d.records,
                bytes = d.bytes,
                "reports waiting in the spool from before"
            );
        }
    }
    let cases = match &g.details.path {
        Some(path) => Some(Arc::new(crate::cases::CaseStore::open(
            path,
            g.details.clone(),
            g.requests.max_pending,
            metrics.clone(),
        )?)),
        None => None,
    };
    let (wake, events_tx, events_rx) = channel_pair();
    let (writer, writer_thread) = SpoolWriter::start(
        writer_spool,
        depth.clone(),
        Budget {
            max_records: g.spool.max_records,
            max_bytes: g.spool.max_bytes,
        },
        g.spool.group_commit,
        g.spool.group_max_requests,
        config.clock.clone(),
        metrics.clone(),
        wake,
        shutdown.clone(),
        cases.clone(),
    )?;
    let oldest = Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::new()));
    let contacts = Arc::new(Contacts::default());
    let forwarder = Forwarder {
        spool: Spool::open(spool_path)?,
        depth: depth.clone(),
        kafka: config.kafka.clone(),
        settings: g.forward.clone(),
        metrics: metrics.clone(),
        kafka_metrics,
        clock: config.clock.clone(),
        health: health.clone(),
        shutdown: shutdown.clone(),
        posts: posts.clone(),
        oldest: oldest.clone(),
        remember: (g.spool.remember_secs, g.spool.remember_max_ids),
        last_forget: None,
    };
    let forward_thread = spawn("gateway-forward", move || {
        if let Err(e) = forwarder.run(events_tx, events_rx) {
            tracing::error!(error = %e, "the forwarder stopped");
        }
    })?;
    let intake = Arc::new(Intake {
        state: g.state.clone(),
        contacts: contacts.clone(),
        blinding,
        limits: config.limits,
        signer: signer.clone(),
        topics: Topics::new(&config.kafka.topic_prefix),
        clock: config.clock.clone(),
        keep_details: cases.is_some(),
    });
    let mut threads = vec![writer_thread, forward_thread];
    threads.push(spawn("gateway-keys", {
        let signer = signer.clone();
        let metrics = metrics.clone();
        let shutdown = shutdown.clone();
        let health = health.clone();
        let every = Duration::from_millis(g.key_reload_interval_ms);
        move || watch_key(&signer, &metrics, &health, &shutdown, every)
    })?);
    if let Some(dir) = &g.drop.dir {
        let poller = FileDrop {
            dir: dir.clone(),
            interval: Duration::from_millis(g.drop.poll_interval_ms),
            intake: intake.clone(),
            writer: writer.clone(),
            spool: Spool::open(spool_path)?,
            metrics: metrics.clone(),
            health: health.clone(),
            shutdown: shutdown.clone(),
            max_file_bytes: g.spool.max_bytes,
        };
        threads.push(spawn("gateway-drop", move || poller.run())?);
    }
    // Signed heartbeats, with each post's spool figures and last contact.
    let heartbeats = tokio::spawn(crate::heartbeat::run(
        HeartbeatConfig {
            kafka: config.kafka.clone(),
            state: g.state.clone(),
            gateway_id: g.gateway_id(),
            settings: g.heartbeat.clone(),
        },
        signer.clone(),
        SpoolFigures {
            depth: depth.clone(),
            oldest,
            contacts,
            posts: posts.clone(),
        },
        {
            let clock = config.clock.clone();
            move || clock()
        },
        Some(HeartbeatMetrics::register(registry)?),
        None,
        shutdown.clone(),
    ));
    if let Some(cases) = &cases {
        // Erases expired details on the gateway's clock (tests inject theirs).
        let cases = cases.clone();
        let clock = config.clock.clone();
        let shutdown = shutdown.clone();
        threads.push(spawn("gateway-details", move || {
            let _span = tracing::info_span!("gateway", stage = "details").entered();
            while !shutdown.load(Ordering::Relaxed) {
                match cases.erase_expired(clock()) {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(erased = n, "raw details past their retention erased"),
                    Err(e) => tracing::error!(error = %e, "erasing expired details"),
                }
                let next = std::time::Instant::now() + cases.erase_interval();
                while std::time::Instant::now() < next && !shutdown.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        })?);
    }
    let desk = match (&cases, g.requests.enabled) {
        (Some(cases), true) => {
            let r = &g.requests;
            let audit_path = required(
                &r.audit_signing_key_file,
                "gateway.requests.audit_signing_key_file",
            )?;
            let audit_text = ewn_trust::secret::read_secret(audit_path)?;
            let audit_key = crate::signer::parse_key_file(&audit_text, "", audit_path)?;
            let desk = Arc::new(crate::requests::CaseDesk {
                store: cases.clone(),
                trust_store: required(&r.trust_store, "gateway.requests.trust_store")?.clone(),
                signer: signer.clone(),
                audit: ewn_trust::audit::AuditSigner::new(
                    audit_key.key_id,
                    "gateway",
                    audit_key.key,
                ),
                producer: ewn_kafka::ConfirmingProducer::new(
                    &config.kafka,
                    "gateway-requests",
                    (),
                    None,
                )?,
                kafka: config.kafka.clone(),
                topics: Topics::new(&config.kafka.topic_prefix),
                state: g.state.clone(),
                instance: g.gateway_id(),
                operators: crate::requests::load_operators(required(
                    &r.operators_file,
                    "gateway.requests.operators_file",
                )?)?,
                settings: r.clone(),
                clock: config.clock.clone(),
                metrics: metrics.clone(),
            });
            let reader = desk.clone();
            let stop = shutdown.clone();
            threads.push(spawn("gateway-requests", move || reader.read_loop(stop))?);
            Some(desk)
        }
        _ => None,
    };
    let api = Api {
        intake,
        tokens,
        writer,
        metrics,
        max_body_bytes: g.max_body_bytes,
    };
    let mut routes = router(api);
    if let Some(desk) = desk {
        routes = routes.merge(crate::requests::router(desk));
    }
    let (addr, server) = serve_with(g.listen, routes, wait_for(shutdown.clone()), g.http.clone())
        .await
        .map_err(|source| Error::Io {
            path: g.listen.to_string().into(),
            source,
        })?;
    tracing::info!(%addr, key_id = %signer.key_id(), "gateway intake on http://{addr}/api/v1/incidents");
    let task = tokio::spawn(async move {
        let served = server.await;
        shutdown.store(true, Ordering::Relaxed);
        match heartbeats.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "heartbeats stopped"),
            Err(e) => tracing::error!(error = %e, "heartbeats stopped"),
        }
        // The router (and with it the writer's last sender) is gone with the server.
        tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await
        .map_err(|e| Error::Stopped(format!("joining the gateway's threads: {e}")))?;
        match served {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Error::Stopped(format!("intake server: {e}"))),
            Err(e) => Err(Error::Stopped(format!("intake server: {e}"))),
        }
    });
    Ok(Running { addr, task })
}

/// Checks the signing key file every `every` and switches to a replacement.
fn watch_key(
    signer: &ReloadingSigner,
    metrics: &GatewayMetrics,
    health: &Health,
    shutdown: &AtomicBool,
    every: Duration,
) {
    let _span = tracing::info_span!("gateway", stage = "keys").entered();
    let mut last_error = String::new();
    while !shutdown.load(Ordering::Relaxed) {
        health.beat("keys");
        match signer.reload() {
            Ok(Reload::Unchanged) => {}
            Ok(Reload::Rotated(key_id)) => {
                last_error.clear();
                metrics.key_reloads.with_label_values(&["rotated"]).inc();
                tracing::info!(%key_id, "signing key replaced: new reports are signed with it");
            }
            Err(e) => {
                let message = e.to_string();
                if message != last_error {
                    metrics.key_reloads.with_label_values(&["refused"]).inc();
                    tracing::error!(error = %message, key_id = %signer.key_id(), "signing key file refused; still signing with the current key");
                    last_error = message;
                }
            }
        }
        let next = std::time::Instant::now() + every;
        while std::time::Instant::now() < next && !shutdown.load(Ordering::Relaxed) {
            std::thread::sleep(
                next.saturating_duration_since(std::time::Instant::now())
                    .min(Duration::from_millis(100)),
            );
        }
    }
}

/// Most posts one heartbeat names (the heartbeat schema's bound).
const MAX_HEARTBEAT_POSTS: usize = 1024;

/// The gateway's figures per post for its heartbeats: spool depth and bytes (kept by the
/// writer and the forwarder), the oldest waiting report (refreshed by the forwarder once a
/// second) and the post's last contact.
struct SpoolFigures {
    depth: Arc<std::sync::Mutex<Depth>>,
    oldest: Arc<std::sync::Mutex<std::collections::BTreeMap<String, i64>>>,
    contacts: Arc<Contacts>,
    /// Posts known from the start (tokens file, drop directories).
    posts: BTreeSet<String>,
}

impl PostFigures for SpoolFigures {
    fn posts(&self, now_ms: i64) -> Vec<ewn_model::PostStatus> {
        let depth = self.depth.lock().unwrap_or_else(|p| p.into_inner());
        let oldest = self.oldest.lock().unwrap_or_else(|p| p.into_inner());
        let mut posts: BTreeSet<&String> = self.posts.iter().collect();
        posts.extend(depth.posts.keys());
        posts
            .into_iter()
            .take(MAX_HEARTBEAT_POSTS)
            .map(|post| {
                let d = depth.posts.get(post);
                ewn_model::PostStatus {
                    post_id: post.clone(),
                    spool_depth: d.map_or(0, |d| d.records as i64),
                    spool_bytes: d.map_or(0, |d| d.bytes as i64),
                    oldest_unsent_age_ms: oldest.get(post).map(|t| (now_ms - t).max(0)),
                    last_contact_age_ms: self.contacts.last(post).map(|t| (now_ms - t).max(0)),
                }
            })
            .collect()
    }
}
