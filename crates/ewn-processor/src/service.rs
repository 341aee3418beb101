//! The running processor: two stages, each a consumer-group member on its own thread.
//!
//! ```text
//! <prefix>incidents.<cc> --ingest--> verify (batched) -> score -> immediate rules --> <prefix>alerts
//!                                      | rejected ------------------------------------> <prefix>rejected
//!                                      '-> one record per group-by value -----------> <prefix>process.rekeyed
//! <prefix>process.rekeyed --correlate--> windows per (rule, key) --------------------> <prefix>alerts
//! ```
//!
//! Each stage commits a batch's offsets only after the broker confirmed everything the
//! batch produced (at-least-once with idempotent, deterministic outputs). The correlate
//! stage commits, per partition, the lowest offset its open windows still hold, so after a
//! crash or rebalance it replays exactly the input that rebuilds them.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use ewn_kafka::admin::ensure_topics;
use ewn_kafka::producer::Tally;
use ewn_kafka::{
    Change, CommitOffset, GroupConsumer, KafkaMetrics, KafkaSettings, RecordProducer, Subscription,
    TopicSpec, Topics,
};
use ewn_model::validate::Limits;
use ewn_model::{Alert, AvroRecord, Evidence, RejectReason, Rejection, ScoredIncident};
use ewn_ops::http::Health;
use ewn_trust::{
    Pending, Rejected, TrustSettings, TrustStore, Verified, Verifier, check_signatures,
};
use prometheus::Registry;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::correlate::{Event, EventKeys, Fed, PartitionState, RuleSet};
use crate::error::{Error, Result};
use crate::metrics::ProcessorMetrics;
use crate::rules::{GroupBy, RuleConfig, default_rules};
use crate::settings::ProcessSettings;

/// Everything the processor is configured with.
#[derive(Clone, Debug)]
pub struct ProcessorConfig {
    pub kafka: KafkaSettings,
    pub trust: TrustSettings,
    pub limits: Limits,
    pub process: ProcessSettings,
}

/// A value swapped whole on reload; readers take the current `Arc` once per batch.
struct Shared<T> {
    value: Mutex<Arc<T>>,
    version: AtomicU64,
}

impl<T> Shared<T> {
    fn new(v: T) -> Self {
        Shared {
            value: Mutex::new(Arc::new(v)),
            version: AtomicU64::new(0),
        }
    }

    fn get(&self) -> (Arc<T>, u64) {
        let v = self.value.lock().unwrap_or_else(|p| p.into_inner()).clone();
        (v, self.version.load(Ordering::Acquire))
    }

    fn set(&self, v: T) {
        *self.value.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(v);
        self.version.fetch_add(1, Ordering::AcqRel);
    }
}

struct Ctx {
    config: ProcessorConfig,
    topics: Topics,
    group: String,
    instance: String,
    rules: Shared<RuleSet>,
    verifier: Shared<Verifier>,
    metrics: ProcessorMetrics,
    kafka_metrics: KafkaMetrics,
    health: Arc<Health>,
    shutdown: Arc<AtomicBool>,
}

impl ProcessorConfig {
    /// Every configuration problem, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut p = self.kafka.problems();
        p.extend(self.process.problems());
        if self.trust.trust_store.is_none() {
            p.push(
                "trust.trust_store: the processor needs a trust store (--trust-store FILE)".into(),
            );
        }
        p
    }

    pub fn rekeyed_topic(&self) -> String {
        format!("{}process.rekeyed", self.kafka.topic_prefix)
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    rules: Vec<RuleConfig>,
}

/// The rules in force: the rules file, else the inline rules, else the defaults.
pub fn load_rules(settings: &ProcessSettings) -> Result<Vec<RuleConfig>> {
    let rules = match &settings.rules_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Error::Config(vec![format!("{}: {e}", path.display())]))?;
            let file: RulesFile = toml::from_str(&text)
                .map_err(|e| Error::Config(vec![format!("{}: {e}", path.display())]))?;
            file.rules
        }
        None if settings.rules.is_empty() => default_rules(),
        None => settings.rules.clone(),
    };
    let problems = crate::rules::problems(&rules);
    if problems.is_empty() {
        Ok(rules)
    } else {
        Err(Error::Config(problems))
    }
}

fn load_verifier(config: &ProcessorConfig) -> Result<Verifier> {
    let path = config
        .trust
        .trust_store
        .as_deref()
        .ok_or_else(|| Error::Config(vec!["trust.trust_store: not set".into()]))?;
    let store = TrustStore::load(path)?;
    Ok(Verifier::new(
        Arc::new(store),
        config.trust.policy(config.limits),
    ))
}

/// Runs the processor until `shutdown` is set. Creates its topics first (idempotent).
pub async fn run(
    config: ProcessorConfig,
    registry: &Registry,
    health: Arc<Health>,
    shutdown: Arc<AtomicBool>,
) -> Result<()> {
    let problems = config.problems();
    if !problems.is_empty() {
        return Err(Error::Config(problems));
    }
    let topics = Topics::new(&config.kafka.topic_prefix);
    let mut specs = topics.all(&config.kafka.states, config.kafka.partitions);
    let rekeyed_partitions = if config.process.rekeyed_partitions > 0 {
        config.process.rekeyed_partitions
    } else {
        config.kafka.partitions
    };
    specs.push(TopicSpec {
        name: config.rekeyed_topic(),
        partitions: rekeyed_partitions,
        compacted: false,
    });
    ensure_topics(&config.kafka, &specs).await?;

    // The files' times are taken before they are read, so a change made while they load
    // is seen by the first reload check rather than missed.
    let seen = (
        config.trust.trust_store.as_deref().and_then(mtime),
        config.process.rules_file.as_deref().and_then(mtime),
    );
    let rules = load_rules(&config.process)?;
    let verifier = load_verifier(&config)?;
    let group = if config.process.group_id.is_empty() {
        format!("{}process", config.kafka.topic_prefix)
    } else {
        config.process.group_id.clone()
    };
    let instance = if config.process.instance_id.is_empty() {
        format!("process-{}", std::process::id())
    } else {
        config.process.instance_id.clone()
    };
    let metrics = ProcessorMetrics::register(registry)
        .map_err(|e| Error::Config(vec![format!("metrics: {e}")]))?;
    let kafka_metrics = KafkaMetrics::register(registry)
        .map_err(|e| Error::Config(vec![format!("metrics: {e}")]))?;
    let ctx = Arc::new(Ctx {
        rules: Shared::new(RuleSet::new(rules, config.process.score.clone())),
        verifier: Shared::new(verifier),
        topics,
        group,
        instance,
        metrics,
        kafka_metrics,
        health,
        shutdown,
        config,
    });
    tracing::info!(group = %ctx.group, instance = %ctx.instance, "processor starting");

    let stages = [
        ("ingest", ingest_loop as fn(&Ctx) -> Result<()>),
        ("correlate", correlate_loop),
    ];
    let mut tasks = Vec::new();
    for (name, stage) in stages {
        let ctx = ctx.clone();
        tasks.push(tokio::task::spawn_blocking(move || {
            let _span = tracing::info_span!("stage", service = "process", stage = name).entered();
            ewn_ops::supervise::supervise(name, &ctx.shutdown, || stage(&ctx), Error::is_config)
        }));
    }
    let reload = {
        let ctx = ctx.clone();
        tokio::spawn(async move { reload_loop(&ctx, seen).await })
    };
    let mut result = Ok(());
    for t in tasks {
        match t.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => result = Err(e),
            Err(e) => result = Err(Error::Config(vec![format!("stage panicked: {e}")])),
        }
    }
    reload.abort();
    result
}

fn mtime(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Polls the rules file and the trust store; swaps them in when they change and parse.
async fn reload_loop(ctx: &Ctx, seen: (Option<SystemTime>, Option<SystemTime>)) {
    let interval = Duration::from_secs(ctx.config.process.reload_interval_secs);
    let trust_path: Option<PathBuf> = ctx.config.trust.trust_store.clone();
    let rules_path = ctx.config.process.rules_file.clone();
    let (mut trust_seen, mut rules_seen) = seen;
    loop {
        tokio::time::sleep(interval).await;
        if let Some(path) = &trust_path {
            let m = mtime(path);
            if m != trust_seen {
                trust_seen = m;
                match load_verifier(&ctx.config) {
                    Ok(v) => {
                        tracing::info!(keys = v.store().len(), "trust store reloaded");
                        ctx.verifier.set(v);
                        ctx.metrics.rule_reloads.with_label_values(&["ok"]).inc();
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "trust store reload failed; keeping the previous one");
                        ctx.metrics.rule_reloads.with_label_values(&["error"]).inc();
                    }
                }
            }
        }
        if let Some(path) = &rules_path {
            let m = mtime(path);
            if m != rules_seen {
                rules_seen = m;
                match load_rules(&ctx.config.process) {
                    Ok(rules) => {
                        tracing::info!(rules = rules.len(), "rules reloaded");
                        ctx.rules
                            .set(RuleSet::new(rules, ctx.config.process.score.clone()));
                        ctx.metrics.rule_reloads.with_label_values(&["ok"]).inc();
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "rules reload failed; keeping the previous rules");
                        ctx.metrics.rule_reloads.with_label_values(&["error"]).inc();
                    }
                }
            }
        }
    }
}

/// Where a record came from.
#[derive(Clone)]
struct Origin {
    topic: usize,
    partition: i32,
    offset: i64,
}

/// Remembers incident ids for the replay window.
#[derive(Default)]
struct ReplayGuard {
    seen: HashMap<String, i64>,
    last_prune: i64,
}

impl ReplayGuard {
    /// True when the id was seen within the window (and records it otherwise).
    fn repeated(&mut self, id: &str, now: i64, window_ms: i64) -> bool {
        if now - self.last_prune > 60_000 {
            self.seen.retain(|_, at| now - *at <= window_ms);
            self.last_prune = now;
        }
        match self.seen.get(id) {
            Some(at) if now - *at <= window_ms => true,
            _ => {
                self.seen.insert(id.to_string(), now);
                false
            }
        }
    }
}

/// Produces everything of one batch and waits for the broker to confirm it all.
struct Outbox {
    producer: RecordProducer<Arc<Tally>>,
    tally: Arc<Tally>,
    buf: Vec<u8>,
    /// Records queued since the last confirmation.
    queued: usize,
    /// Outcomes expected from the sink in all (every record ever queued).
    expected: u64,
    timeout: Duration,
}

impl Outbox {
    fn new(ctx: &Ctx, role: &str) -> Result<Self> {
        let tally = Arc::new(Tally::default());
        let producer = RecordProducer::new(
            &ctx.config.kafka,
            role,
            tally.clone(),
            Some(ctx.kafka_metrics.clone()),
        )?;
        let timeout = Duration::from_millis(
            ctx.config.kafka.message_timeout_ms + ctx.config.kafka.request_timeout_ms,
        );
        Ok(Outbox {
            producer,
            tally,
            buf: Vec::with_capacity(4096),
            queued: 0,
            expected: 0,
            timeout,
        })
    }

    fn send<T: AvroRecord>(&mut self, topic: &str, key: &[u8], record: &T) -> Result<()> {
        self.buf.clear();
        T::codec().encode_into(record, &mut self.buf)?;
        self.producer
            .send(topic, Some(key), Some(&self.buf), self.queued)?;
        self.queued += 1;
        Ok(())
    }

    /// Waits for every queued record; an error when any was not confirmed.
    fn confirm(&mut self) -> Result<()> {
        if self.queued == 0 {
            return Ok(());
        }
        let failed_before = self.tally.report().failed.len();
        self.expected += self.queued as u64;
        self.queued = 0;
        if !self.tally.wait_for(self.expected, self.timeout) {
            return Err(Error::Kafka(ewn_kafka::Error::Topic {
                topic: "outputs".into(),
                message: format!("not confirmed within {:?}", self.timeout),
            }));
        }
        let report = self.tally.report();
        if report.failed.len() > failed_before {
            let (_, why) = &report.failed[report.failed.len() - 1];
            return Err(Error::Kafka(ewn_kafka::Error::Topic {
                topic: "outputs".into(),
                message: format!("not confirmed: {why}"),
            }));
        }
        Ok(())
    }
}

/// Ends a batch: waits until the broker confirmed everything it produced, and only then
/// commits its offsets (at-least-once with idempotent outputs).
fn settle(
    ctx: &Ctx,
    stage: &str,
    out: &mut Outbox,
    consumer: &GroupConsumer,
    commits: &[CommitOffset],
) -> Result<()> {
    let t = Instant::now();
    out.confirm()?;
    ctx.metrics
        .confirm_seconds
        .with_label_values(&[stage])
        .observe(t.elapsed().as_secs_f64());
    let t = Instant::now();
    consumer.commit(commits)?;
    ctx.metrics
        .commit_seconds
        .with_label_values(&[stage])
        .observe(t.elapsed().as_secs_f64());
    Ok(())
}

fn incidents_pattern(prefix: &str) -> String {
    let escaped: String = prefix
        .chars()
        .flat_map(|c| {
            if c.is_ascii_alphanumeric() {
                vec![c]
            } else {
                vec!['\\', c]
            }
        })
        .collect();
    format!("{escaped}incidents\\.[a-z][a-z]$")
}

fn rejection(
    ctx: &Ctx,
    topic: &str,
    origin: &Origin,
    r: &Rejected,
    size: usize,
    sha: [u8; 32],
) -> Rejection {
    Rejection {
        reason: r.reason,
        detail: r.detail.clone(),
        topic: topic.to_string(),
        partition: origin.partition,
        offset: origin.offset,
        key_id: r.key_id.clone(),
        incident_id: r.incident_id.clone(),
        record_size: size as i64,
        record_sha256: sha,
        rejected_at: now_ms(),
        rejected_by: ctx.instance.clone(),
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn to_event(v: &Verified, scored: crate::score::Scored, topic: &str, origin: &Origin) -> Event {
    crate::correlate::event_of(
        &v.incident,
        scored,
        Evidence {
            incident_id: v.incident.incident_id.clone(),
            topic: topic.to_string(),
            partition: origin.partition,
            offset: origin.offset,
            key_id: v.envelope.key_id.clone(),
            signature: v.envelope.signature,
            payload_sha256: sha256(&v.envelope.payload),
        },
    )
}

fn record_alerts(ctx: &Ctx, out: &mut Outbox, alerts: &[Alert]) -> Result<()> {
    let topic = ctx.topics.alerts();
    for a in alerts {
        out.send(&topic, a.key.as_bytes(), a)?;
        ctx.metrics
            .alerts
            .with_label_values(&[a.rule.as_str(), a.level.as_str(), a.msg_type.as_str()])
            .inc();
    }
    Ok(())
}

/// The ingest stage: verify, score, immediate rules, re-key.
fn ingest_loop(ctx: &Ctx) -> Result<()> {
    let p = &ctx.config.process;
    let consumer = GroupConsumer::new(
        &ctx.config.kafka,
        "process-ingest",
        &format!("{}-ingest", ctx.group),
        &Subscription::Pattern(incidents_pattern(ctx.topics.prefix())),
        Some(ctx.kafka_metrics.clone()),
    )?;
    let mut out = Outbox::new(ctx, "process-ingest")?;
    let mut guard = ReplayGuard::default();
    let rekeyed = ctx.config.rekeyed_topic();
    let rejected_topic = ctx.topics.rejected();
    let replay_ms = p.replay_window_secs as i64 * 1000;
    let mut topic_names: Vec<String> = Vec::new();
    while !ctx.shutdown.load(Ordering::Relaxed) {
        ctx.health.beat("ingest");
        let (verifier, _) = ctx.verifier.get();
        let (rules, _) = ctx.rules.get();
        let now = now_ms();
        let mut origins: Vec<Origin> = Vec::new();
        let mut pending: Vec<Pending<'_>> = Vec::new();
        let mut rejections: Vec<Rejection> = Vec::new();
        let mut offsets: BTreeMap<(usize, i32), i64> = BTreeMap::new();
        let mut received: BTreeMap<String, u64> = BTreeMap::new();
        let n = consumer.poll_batch(
            p.batch_max,
            Duration::from_millis(p.batch_wait_ms.max(1)),
            |r| {
                let topic = match topic_names.iter().position(|t| t == r.topic) {
                    Some(i) => i,
                    None => {
                        topic_names.push(r.topic.to_string());
                        topic_names.len() - 1
                    }
                };
                let origin = Origin {
                    topic,
                    partition: r.partition,
                    offset: r.offset,
                };
                offsets.insert((topic, r.partition), r.offset + 1);
                let state = ctx.topics.state_of(r.topic);
                *received
                    .entry(state.unwrap_or("??").to_ascii_uppercase())
                    .or_default() += 1;
                let value = r.value.unwrap_or_default();
                match verifier.check_envelope(value, state, now) {
                    Ok(pending_record) => {
                        origins.push(origin);
                        pending.push(pending_record);
                    }
                    Err(rej) => rejections.push(rejection(
                        ctx,
                        r.topic,
                        &origin,
                        &rej,
                        value.len(),
                        sha256(value),
                    )),
                }
            },
        )?;
        for change in consumer.take_changes() {
            tracing::info!(?change, "ingest partitions changed");
        }
        if n == 0 {
            continue;
        }
        for (state, count) in &received {
            ctx.metrics
                .received
                .with_label_values(&[state])
                .inc_by(*count);
        }

        let started = Instant::now();
        let checked: Vec<std::result::Result<(), Rejected>> = if p.batch_verify {
            check_signatures(&pending)
        } else {
            let mut buf = Vec::new();
            pending
                .iter()
                .map(|p| ewn_trust::verify::check_signature(p, &mut buf))
                .collect()
        };
        ctx.metrics.verify_batch_size.observe(pending.len() as f64);
        let mut verified: Vec<(Origin, Verified)> = Vec::with_capacity(pending.len());
        for ((origin, pend), sig) in origins.into_iter().zip(pending).zip(checked) {
            let size = pend.envelope.payload.len();
            let result = sig.and_then(|()| verifier.check_payload(pend, now));
            match result {
                Ok(v) if guard.repeated(&v.incident.incident_id, now, replay_ms) => {
                    let rej = Rejected {
                        reason: RejectReason::Duplicate,
                        detail: "incident id seen within the replay window".into(),
                        key_id: Some(v.envelope.key_id.clone()),
                        incident_id: Some(v.incident.incident_id.clone()),
                    };
                    rejections.push(rejection(
                        ctx,
                        &topic_names[origin.topic],
                        &origin,
                        &rej,
                        size,
                        sha256(&v.envelope.payload),
                    ));
                }
                Ok(v) => verified.push((origin, v)),
                Err(rej) => rejections.push(rejection(
                    ctx,
                    &topic_names[origin.topic],
                    &origin,
                    &rej,
                    size,
                    [0; 32],
                )),
            }
        }
        ctx.metrics
            .verify_seconds
            .observe(started.elapsed().as_secs_f64());

        let started = Instant::now();
        let mut alerts = Vec::new();
        let groups = rules.stateful_groups();
        for (origin, v) in &verified {
            ctx.metrics
                .verified
                .with_label_values(&[v.incident.reporter.state.as_str()])
                .inc();
            let scored = rules.weights.score(&v.incident);
            let event = to_event(v, scored, &topic_names[origin.topic], origin);
            rules.immediate(&event, now, &mut alerts);
            let mut record = event.clone();
            for group in &groups {
                for key in event.keys(*group) {
                    record.group = group.as_str().to_string();
                    record.group_key = key.to_string();
                    let record_key = format!("{}:{key}", group.as_str());
                    out.send(&rekeyed, record_key.as_bytes(), &record)?;
                }
            }
        }
        ctx.metrics
            .score_seconds
            .observe(started.elapsed().as_secs_f64());
        for r in &rejections {
            ctx.metrics
                .rejected
                .with_label_values(&[r.reason.code().as_str()])
                .inc();
            let key = r
                .incident_id
                .clone()
                .unwrap_or_else(|| format!("{}/{}/{}", r.topic, r.partition, r.offset));
            out.send(&rejected_topic, key.as_bytes(), r)?;
        }
        record_alerts(ctx, &mut out, &alerts)?;
        observe_latency(
            ctx,
            &alerts,
            &verified
                .iter()
                .map(|(_, v)| {
                    (
                        &v.incident.incident_id,
                        v.incident.occurred_at,
                        v.incident.reported_at,
                    )
                })
                .collect::<Vec<_>>(),
        );
        let commits: Vec<CommitOffset> = offsets
            .into_iter()
            .map(|((t, partition), offset)| CommitOffset {
                topic: topic_names[t].clone(),
                partition,
                offset,
                metadata: String::new(),
            })
            .collect();
        settle(ctx, "ingest", &mut out, &consumer, &commits)?;
    }
    Ok(())
}

/// Latency of new alerts from their newest evidence's event time and report time.
fn observe_latency(ctx: &Ctx, alerts: &[Alert], incidents: &[(&String, i64, i64)]) {
    if alerts.is_empty() {
        return;
    }
    let times: HashMap<&str, (i64, i64)> = incidents
        .iter()
        .map(|(id, o, r)| (id.as_str(), (*o, *r)))
        .collect();
    let now = now_ms();
    for a in alerts
        .iter()
        .filter(|a| a.msg_type != ewn_model::MsgType::Cancel)
    {
        let newest = a
            .incident_ids
            .iter()
            .filter_map(|id| times.get(id.as_str()))
            .max_by_key(|(o, _)| *o);
        if let Some((occurred, reported)) = newest {
            ctx.metrics
                .event_to_alert
                .observe(((now - occurred).max(0)) as f64 / 1000.0);
            ctx.metrics
                .publish_to_alert
                .observe(((now - reported).max(0)) as f64 / 1000.0);
        }
    }
}

/// A LATE report: the incident is verified and kept on its topic, but was not merged into
/// the windows of these rules because its event time was behind the watermark.
fn late_report(ctx: &Ctx, event: &Event, watermark: i64, rules: &[&str]) -> Rejection {
    Rejection {
        reason: RejectReason::Late,
        detail: format!(
            "event time {} s behind the watermark; not merged into {}",
            (watermark - event.occurred_at) / 1000,
            rules.join(", ")
        ),
        topic: event.evidence.topic.clone(),
        partition: event.evidence.partition,
        offset: event.evidence.offset,
        key_id: Some(event.evidence.key_id.clone()),
        incident_id: Some(event.incident_id.clone()),
        record_size: 0,
        record_sha256: event.evidence.payload_sha256,
        rejected_at: now_ms(),
        rejected_by: ctx.instance.clone(),
    }
}

/// The correlate stage: event-time windows per (rule, key), per partition.
fn correlate_loop(ctx: &Ctx) -> Result<()> {
    let p = &ctx.config.process;
    let topic = ctx.config.rekeyed_topic();
    let consumer = GroupConsumer::new(
        &ctx.config.kafka,
        "process-correlate",
        &format!("{}-correlate", ctx.group),
        &Subscription::Topics(vec![topic.clone()]),
        Some(ctx.kafka_metrics.clone()),
    )?;
    let mut out = Outbox::new(ctx, "process-correlate")?;
    let lateness_ms = p.allowed_lateness_secs as i64 * 1000;
    let idle_ms = p.idle_watermark_secs as i64 * 1000;
    let (mut rules, mut rules_version) = ctx.rules.get();
    let mut partitions: HashMap<i32, (PartitionState, Instant)> = HashMap::new();
    while !ctx.shutdown.load(Ordering::Relaxed) {
        ctx.health.beat("correlate");
        let (current, version) = ctx.rules.get();
        if version != rules_version {
            rules = current;
            rules_version = version;
            for (state, _) in partitions.values_mut() {
                state.replace_rules(rules.clone());
            }
        }
        let now = now_ms();
        let mut alerts = Vec::new();
        let mut batch: Vec<(i32, i64, Option<ScoredIncident>)> = Vec::new();
        consumer.poll_batch(
            p.batch_max,
            Duration::from_millis(p.batch_wait_ms.max(1)),
            |r| {
                let decoded = r.value.and_then(|v| ScoredIncident::from_avro(v).ok());
                batch.push((r.partition, r.offset, decoded));
            },
        )?;
        for change in consumer.take_changes() {
            tracing::info!(?change, "correlate partitions changed");
            match change {
                Change::Revoked(list) => {
                    for (_, partition) in list {
                        partitions.remove(&partition);
                    }
                }
                Change::Assigned(list) => {
                    for (_, partition) in list {
                        partitions.insert(
                            partition,
                            (
                                PartitionState::new(rules.clone(), lateness_ms),
                                Instant::now(),
                            ),
                        );
                    }
                }
            }
        }
        let started = Instant::now();
        let mut late: BTreeMap<String, u64> = BTreeMap::new();
        let mut late_reports: Vec<Rejection> = Vec::new();
        let mut incidents: Vec<(String, i64, i64)> = Vec::new();
        let consumed = batch.len() as u64;
        for (partition, offset, record) in batch {
            let (state, last_seen) = partitions.entry(partition).or_insert_with(|| {
                (
                    PartitionState::new(rules.clone(), lateness_ms),
                    Instant::now(),
                )
            });
            *last_seen = Instant::now();
            let Some(record) = record else {
                tracing::error!(
                    partition,
                    offset,
                    "undecodable record on the internal re-keyed topic; skipped"
                );
                continue;
            };
            let Some(group) = GroupBy::parse(&record.group) else {
                continue;
            };
            let key = record.group_key.clone();
            let event = Arc::new(record);
            incidents.push((
                event.incident_id.clone(),
                event.occurred_at,
                event.reported_at,
            ));
            let watermark = state.watermark();
            let late_rules: Vec<&str> = state
                .feed(group, &key, &event, offset, now, &mut alerts)
                .into_iter()
                .filter(|(_, fed)| *fed == Fed::Late)
                .map(|(ri, _)| rules.rules[ri].config.name.as_str())
                .collect();
            for rule in &late_rules {
                *late.entry(rule.to_string()).or_default() += 1;
            }
            if !late_rules.is_empty() {
                late_reports.push(late_report(
                    ctx,
                    &event,
                    watermark.unwrap_or(event.occurred_at),
                    &late_rules,
                ));
            }
        }
        for (partition, (state, last_seen)) in partitions.iter_mut() {
            if idle_ms > 0 && last_seen.elapsed() >= Duration::from_millis(idle_ms as u64) {
                state.decide_until(now - lateness_ms);
            }
            state.tick(now, &mut alerts);
            if let Some(w) = state.watermark() {
                ctx.metrics
                    .watermark_lag
                    .with_label_values(&[partition.to_string().as_str()])
                    .set((now - w) / 1000);
            }
        }
        ctx.metrics
            .correlate_seconds
            .observe(started.elapsed().as_secs_f64());
        for (rule, n) in late {
            ctx.metrics
                .late
                .with_label_values(&[rule.as_str()])
                .inc_by(n);
        }
        let mut keys: BTreeMap<String, i64> = rules
            .rules
            .iter()
            .map(|r| (r.config.name.clone(), 0))
            .collect();
        for (state, _) in partitions.values() {
            for (rule, n) in state.keys_per_rule() {
                *keys.entry(rule.to_string()).or_default() += n as i64;
            }
        }
        for (rule, n) in keys {
            ctx.metrics
                .state_keys
                .with_label_values(&[rule.as_str()])
                .set(n);
        }
        let rejected_topic = ctx.topics.rejected();
        for r in &late_reports {
            ctx.metrics.rejected.with_label_values(&["late"]).inc();
            out.send(
                &rejected_topic,
                r.incident_id.as_deref().unwrap_or_default().as_bytes(),
                r,
            )?;
        }
        record_alerts(ctx, &mut out, &alerts)?;
        observe_latency(
            ctx,
            &alerts,
            &incidents
                .iter()
                .map(|(id, o, r)| (id, *o, *r))
                .collect::<Vec<_>>(),
        );
        let commits: Vec<CommitOffset> = partitions
            .iter()
            .filter_map(|(partition, (state, _))| {
                state.commit_offset().map(|offset| CommitOffset {
                    topic: topic.clone(),
                    partition: *partition,
                    offset,
                    metadata: String::new(),
                })
            })
            .collect();
        settle(ctx, "correlate", &mut out, &consumer, &commits)?;
        // Counted once everything the batch caused is confirmed and committed.
        ctx.metrics.correlated.inc_by(consumed);
    }
    Ok(())
}
