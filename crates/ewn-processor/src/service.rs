//! The running processor: two stages, each a consumer-group member on its own thread.
//!
//! ```text
//! <prefix>incidents.<cc> --ingest--> verify (batched) -> score -> immediate rules --> <prefix>alerts
//!                                      | rejected ------------------------------------> <prefix>rejected
//!                                      '-> one record per group-by value -----------> <prefix>process.rekeyed
//! <prefix>process.rekeyed --correlate--> windows per (rule, key) --------------------> <prefix>alerts
//! <prefix>heartbeats.<cc> --sources--> verify -> last seen per state and post --------> <prefix>alerts
//!                        (and the ingest stage's verified reports)  source_silent, source_backlog
//! ```
//!
//! The sources stage is no consumer-group member: every instance reads every configured
//! state's heartbeats (re-reading `process.sources.lookback_records` per partition at
//! start to rebuild when each source was last heard from) and judges silence on its
//! injected clock. Reports count as hearing from their source too, but each instance sees
//! only the reports of its own partitions; heartbeats, which every instance sees, are what
//! keeps the instances in agreement. Alert ids are deterministic (rule, key, last time
//! heard), so instances that saw the same heartbeats raise the same ids; with several
//! instances, desks may receive the same operational alert once per instance.
//!
//! Each stage commits a batch's offsets only after the broker confirmed everything the
//! batch produced (at-least-once with idempotent, deterministic outputs). The correlate
//! stage commits, per partition, the lowest offset its open windows still hold, so after a
//! crash or rebalance it replays exactly the input that rebuilds them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use ewn_kafka::admin::check_topics;
use ewn_kafka::producer::{Tally, Then};
use ewn_kafka::{
    AssignedReader, Change, CommitOffset, ConfirmingProducer, GroupConsumer, KafkaMetrics,
    KafkaSettings, StartAt, Subscription, Topics,
};
use ewn_model::validate::Limits;
use ewn_model::{Alert, AvroRecord, RejectReason, Rejection, ScoredIncident};
use ewn_ops::http::Health;
use ewn_trust::{TrustSettings, TrustStore, Verifier};
use prometheus::Registry;
use sha2::Digest as _;

use crate::audit::{Reload, ReloadAudit, file_digest};
use crate::correlate::{Fed, RuleSet};
use crate::error::{Error, Result};
use crate::event::Event;
use crate::ingest::IngestBatch;
use crate::metrics::ProcessorMetrics;
use crate::partitions::{Outputs, Partitions};
use crate::replay::ReplayGuard;
use crate::rules::{RuleConfig, default_rules};
use crate::settings::ProcessSettings;
use crate::sources::SourceTracker;

/// The clock the processor judges silence by: epoch milliseconds.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

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
    clock: Clock,
    sources: Mutex<SourceTracker>,
    /// Operational alerts made and not yet confirmed by the broker: kept across restarts of
    /// the sources stage, so none is lost to a broker outage.
    source_alerts: Mutex<Vec<Alert>>,
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
        Topics::new(&self.kafka.topic_prefix).rekeyed()
    }

    /// Partitions of the repartition topic (`process.rekeyed_partitions`, 0: `kafka.partitions`).
    pub fn rekeyed_partitions(&self) -> i32 {
        if self.process.rekeyed_partitions > 0 {
            self.process.rekeyed_partitions
        } else {
            self.kafka.partitions
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The rules in force: the rules file, else the inline rules, else the defaults.
pub fn load_rules(settings: &ProcessSettings) -> Result<Vec<RuleConfig>> {
    let rules = match &settings.rules_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Error::Config(vec![format!("{}: {e}", path.display())]))?;
            crate::rules::parse_rules_file(&text)
                .map_err(|e| Error::Config(vec![format!("{}: {e}", path.display())]))?
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

/// The rule set the engine runs: typed rules, weights and alert bounds.
fn rule_set(p: &ProcessSettings, rules: Vec<RuleConfig>) -> Result<RuleSet> {
    RuleSet::new(rules, p.score.clone())
        .map(|r| r.with_alerts(p.alerts.clone()))
        .map_err(Error::Config)
}

/// Every series with a closed label set at 0 from the start, so alert rules fire on the
/// first event.
fn init_series(m: &ProcessorMetrics, config: &ProcessorConfig) {
    let mut states: Vec<String> = config
        .kafka
        .states
        .iter()
        .map(|s| s.to_ascii_uppercase())
        .collect();
    states.push("??".into());
    for reason in RejectReason::ALL.iter() {
        for state in &states {
            m.rejected.with_label_values(&[&reason.code(), state]);
        }
    }
    for state in &states {
        m.received.with_label_values(&[state]);
        m.verified.with_label_values(&[state]);
    }
    for limit in crate::alert::limit::ALL {
        m.alert_limits.with_label_values(&[limit]);
    }
    for action in ["trust_store_reloaded", "rules_reloaded"] {
        for outcome in ["written", "failed"] {
            m.audit_records.with_label_values(&[action, outcome]);
        }
    }
    for outcome in ["ok", "error"] {
        m.rule_reloads.with_label_values(&[outcome]);
        m.trust_reloads.with_label_values(&[outcome]);
    }
    if let Ok(rules) = load_rules(&config.process) {
        for r in &rules {
            init_rule(m, &r.name);
        }
    }
    for rule in crate::sources::RULES {
        for kind in ewn_model::MsgType::ALL {
            m.alerts.with_label_values(&[
                rule,
                config.process.sources.level.as_str(),
                kind.as_str(),
            ]);
        }
    }
    for state in &states {
        m.heartbeats_verified.with_label_values(&[state]);
        for reason in RejectReason::ALL.iter() {
            m.heartbeats_rejected
                .with_label_values(&[&reason.code(), state]);
        }
    }
}

fn init_rule(m: &ProcessorMetrics, rule: &str) {
    for level in ewn_model::Level::ALL {
        for kind in ewn_model::MsgType::ALL {
            m.alerts
                .with_label_values(&[rule, level.as_str(), kind.as_str()]);
        }
    }
    m.late.with_label_values(&[rule]);
    m.state_refused.with_label_values(&[rule]);
    m.state_keys_evicted.with_label_values(&[rule]);
    m.state_keys.with_label_values(&[rule]);
    m.state_events.with_label_values(&[rule]);
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

/// Runs the processor until `shutdown` is set. Checks its topics first: it fails, naming
/// each, when one is missing or misconfigured (`ewn topics create` makes them). Its stages
/// `ingest` and `correlate` each say on `health` when their group first gave them
/// partitions ([`Health::ready`] waits for that).
pub async fn run(
    config: ProcessorConfig,
    registry: &Registry,
    health: Arc<Health>,
    shutdown: Arc<AtomicBool>,
) -> Result<()> {
    run_with_clock(config, registry, health, shutdown, Arc::new(now_ms)).await
}

/// [`run`], judging silent sources by `clock` (the other stages keep the system clock).
pub async fn run_with_clock(
    config: ProcessorConfig,
    registry: &Registry,
    health: Arc<Health>,
    shutdown: Arc<AtomicBool>,
    clock: Clock,
) -> Result<()> {
    let problems = config.problems();
    if !problems.is_empty() {
        return Err(Error::Config(problems));
    }
    let topics = Topics::new(&config.kafka.topic_prefix);
    // Checked, never created here: the processor's principal needs no Create ACL.
    let specs = topics.for_processor(
        &config.kafka.states,
        config.kafka.partitions,
        config.rekeyed_partitions(),
    );
    for note in check_topics(&config.kafka, &specs).await? {
        tracing::warn!(note = %note, "topic");
    }

    // The files' times are taken before they are read, so a change made while they load
    // is seen by the first reload check rather than missed.
    let seen = (
        config.trust.trust_store.as_deref().and_then(mtime),
        config.process.rules_file.as_deref().and_then(mtime),
    );
    // ... and their digests before they are read, for the audit records of later reloads.
    let digests = (
        config.trust.trust_store.as_deref().and_then(file_digest),
        config.process.rules_file.as_deref().and_then(file_digest),
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
    init_series(&metrics, &config);
    let audit = ReloadAudit::new(
        &config.process,
        &config.kafka,
        &topics,
        &instance,
        metrics.clone(),
        kafka_metrics.clone(),
    )?;
    let started = clock();
    let sources = SourceTracker::new(
        config.process.sources.clone(),
        &config.kafka.states,
        started,
    );
    observe_sources(&metrics, &sources);
    let ctx = Arc::new(Ctx {
        clock,
        sources: Mutex::new(sources),
        source_alerts: Mutex::new(Vec::new()),
        rules: Shared::new(rule_set(&config.process, rules)?),
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
        ("sources", sources_loop),
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
        tokio::spawn(async move { reload_loop(&ctx, seen, digests, audit).await })
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
/// Each change noticed, applied or refused, is an audit record when `audit` is set.
async fn reload_loop(
    ctx: &Ctx,
    seen: (Option<SystemTime>, Option<SystemTime>),
    digests: (Option<String>, Option<String>),
    audit: Option<ReloadAudit>,
) {
    let interval = Duration::from_secs(ctx.config.process.reload_interval_secs);
    let trust_path: Option<PathBuf> = ctx.config.trust.trust_store.clone();
    let rules_path = ctx.config.process.rules_file.clone();
    let (mut trust_seen, mut rules_seen) = seen;
    let (mut trust_digest, mut rules_digest) = digests;
    loop {
        tokio::time::sleep(interval).await;
        if let Some(path) = &trust_path {
            let m = mtime(path);
            if m != trust_seen {
                trust_seen = m;
                let digest = file_digest(path);
                let detail = match load_verifier(&ctx.config) {
                    Ok(v) => {
                        tracing::info!(keys = v.store().len(), "trust store reloaded");
                        let detail = format!("applied: {} keys", v.store().len());
                        ctx.verifier.set(v);
                        ctx.metrics.trust_reloads.with_label_values(&["ok"]).inc();
                        detail
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "trust store reload failed; keeping the previous one");
                        ctx.metrics
                            .trust_reloads
                            .with_label_values(&["error"])
                            .inc();
                        format!("refused, the previous one kept: {e}")
                    }
                };
                let applied = detail.starts_with("applied");
                if let Some(audit) = &audit {
                    audit
                        .record(Reload {
                            action: "trust_store_reloaded",
                            path,
                            before: trust_digest.clone(),
                            after: digest.clone(),
                            detail,
                            at: (ctx.clock)(),
                        })
                        .await;
                }
                if applied {
                    trust_digest = digest;
                }
            }
        }
        if let Some(path) = &rules_path {
            let m = mtime(path);
            if m != rules_seen {
                rules_seen = m;
                let digest = file_digest(path);
                let loaded = load_rules(&ctx.config.process)
                    .and_then(|rules| Ok((rules.len(), rule_set(&ctx.config.process, rules)?)));
                let detail = match loaded {
                    Ok((n, set)) => {
                        tracing::info!(rules = n, "rules reloaded");
                        ctx.rules.set(set);
                        ctx.metrics.rule_reloads.with_label_values(&["ok"]).inc();
                        format!("applied: {n} rules")
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "rules reload failed; keeping the previous rules");
                        ctx.metrics.rule_reloads.with_label_values(&["error"]).inc();
                        format!("refused, the previous rules kept: {e}")
                    }
                };
                let applied = detail.starts_with("applied");
                if let Some(audit) = &audit {
                    audit
                        .record(Reload {
                            action: "rules_reloaded",
                            path,
                            before: rules_digest.clone(),
                            after: digest.clone(),
                            detail,
                            at: (ctx.clock)(),
                        })
                        .await;
                }
                if applied {
                    rules_digest = digest;
                }
            }
        }
    }
}

/// Produces everything of one batch and waits for the broker to confirm it all. The stages
/// are std threads, so a send may park the thread while the producer is full (bounded by
/// `kafka.message_timeout_ms`); outcomes go to a counting sink (no future or callback per
/// record).
struct Outbox {
    producer: ConfirmingProducer<Arc<Tally>>,
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
        let producer = ConfirmingProducer::new(
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
        self.producer.send_with_blocking(
            topic,
            Some(key),
            Some(&self.buf),
            Then::sink(self.queued),
        )?;
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

fn record_alerts(ctx: &Ctx, out: &mut Outbox, alerts: &[Alert]) -> Result<()> {
    let topic = ctx.topics.alerts();
    for a in alerts {
        out.send(&topic, a.key.as_bytes(), a)?;
        ctx.metrics
            .alerts
            .with_label_values(&[a.rule.as_str(), a.level.as_str(), a.msg_type.as_str()])
            .inc();
        for limit in &a.limits_reached {
            if crate::alert::limit::ALL.contains(&limit.as_str()) {
                ctx.metrics.alert_limits.with_label_values(&[limit]).inc();
            }
        }
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
    let mut guard = ReplayGuard::new(p.replay_window_secs as i64 * 1000, p.replay_max_ids);
    let rekeyed = ctx.config.rekeyed_topic();
    let rejected_topic = ctx.topics.rejected();
    while !ctx.shutdown.load(Ordering::Relaxed) {
        ctx.health.beat("ingest");
        let (verifier, _) = ctx.verifier.get();
        let (rules, _) = ctx.rules.get();
        let mut batch = IngestBatch::new(&verifier, now_ms());
        consumer.poll_batch(
            p.batch_max,
            Duration::from_millis(p.batch_wait_ms.max(1)),
            |r| {
                batch.add(
                    r.topic,
                    ctx.topics.state_of(r.topic),
                    r.partition,
                    r.offset,
                    r.value,
                )
            },
        )?;
        for change in consumer.take_changes() {
            tracing::info!(?change, "ingest partitions changed");
            if matches!(&change, Change::Assigned(list) if !list.is_empty()) {
                ctx.health.set_ready("ingest");
            }
        }
        if batch.is_empty() {
            continue;
        }
        let done = batch.finish(&rules, &mut guard, p.batch_verify, &ctx.instance);
        let m = &ctx.metrics;
        for (state, n) in &done.received {
            m.received.with_label_values(&[state]).inc_by(*n);
        }
        for (state, n) in &done.verified {
            m.verified.with_label_values(&[state]).inc_by(*n);
        }
        for ((reason, state), n) in &done.rejected {
            m.rejected.with_label_values(&[reason, state]).inc_by(*n);
        }
        m.verify_batch_size.observe(done.verify_batch as f64);
        m.verify_seconds.observe(done.verify_time.as_secs_f64());
        m.score_seconds.observe(done.score_time.as_secs_f64());
        if !done.heard.is_empty() {
            let now = (ctx.clock)();
            let mut sources = ctx.sources.lock().unwrap_or_else(|p| p.into_inner());
            for ((state, post), at) in &done.heard {
                sources.report(state, post.as_deref(), *at, now);
            }
        }
        m.replay_ids.set(guard.len() as i64);
        m.replay_forgotten_early
            .inc_by(guard.take_forgotten_early());
        for (key, record) in &done.rekeyed {
            out.send(&rekeyed, key.as_bytes(), record)?;
        }
        for r in &done.rejections {
            let key = r
                .incident_id
                .clone()
                .unwrap_or_else(|| format!("{}/{}/{}", r.topic, r.partition, r.offset));
            out.send(&rejected_topic, key.as_bytes(), r)?;
        }
        record_alerts(ctx, &mut out, &done.alerts)?;
        observe_latency(ctx, &done.alerts, &done.times);
        let commits: Vec<CommitOffset> = done
            .commits
            .into_iter()
            .map(|(topic, partition, offset)| CommitOffset {
                topic,
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
fn observe_latency(ctx: &Ctx, alerts: &[Alert], incidents: &[(String, i64, i64)]) {
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

/// A verified incident not merged into some rules' windows: `LATE` (its event time was
/// behind the watermark) or `STATE_LIMIT` (its key's state was full). The incident stays
/// on its topic; this record says what correlation did not see.
fn not_merged_report(
    ctx: &Ctx,
    event: &Event,
    fed: Fed,
    watermark: Option<i64>,
    rules: &[String],
) -> Rejection {
    let (reason, detail) = match fed {
        Fed::Late => (
            RejectReason::Late,
            format!(
                "event time {} s behind the watermark; not merged into {}",
                watermark
                    .unwrap_or(event.occurred_at)
                    .saturating_sub(event.occurred_at)
                    / 1000,
                rules.join(", ")
            ),
        ),
        _ => (
            RejectReason::StateLimit,
            format!(
                "the key's state is at process.state.max_events_per_key; not merged into {}",
                rules.join(", ")
            ),
        ),
    };
    Rejection {
        reason,
        detail,
        topic: event.source.topic.to_string(),
        partition: event.source.partition,
        offset: event.source.offset,
        key_id: Some(event.source.key_id.to_string()),
        incident_id: Some(event.incident_id.to_string()),
        record_size: 0,
        record_sha256: event.source.payload_sha256,
        rejected_at: now_ms(),
        rejected_by: ctx.instance.clone(),
    }
}

/// The correlate stage: event-time windows per (rule, key), per owned partition.
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
    let (rules, mut rules_version) = ctx.rules.get();
    let mut parts = Partitions::new(rules, p.engine());
    let rejected_topic = ctx.topics.rejected();
    while !ctx.shutdown.load(Ordering::Relaxed) {
        ctx.health.beat("correlate");
        let (current, version) = ctx.rules.get();
        if version != rules_version {
            for r in &current.rules {
                init_rule(&ctx.metrics, r.name());
            }
            // Gauges of rules no longer held go; their counters stay (they count history).
            for old in &parts.rules().rules {
                if !current.rules.iter().any(|r| r.name() == old.name()) {
                    let _ = ctx.metrics.state_keys.remove_label_values(&[old.name()]);
                    let _ = ctx.metrics.state_events.remove_label_values(&[old.name()]);
                }
            }
            parts.replace_rules(current);
            rules_version = version;
        }
        let mut batch: Vec<(i32, i64, Option<ScoredIncident>)> = Vec::new();
        consumer.poll_batch(
            p.batch_max,
            Duration::from_millis(p.batch_wait_ms.max(1)),
            |r| {
                let decoded = r.value.and_then(|v| ScoredIncident::from_avro(v).ok());
                batch.push((r.partition, r.offset, decoded));
            },
        )?;
        // Ownership first: what was revoked during the poll is not fed nor committed.
        for change in consumer.take_changes() {
            tracing::info!(?change, "correlate partitions changed");
            match change {
                Change::Revoked(list) => {
                    for (_, partition) in list {
                        parts.revoke(partition);
                        let label = partition.to_string();
                        let _ = ctx.metrics.watermark_lag.remove_label_values(&[&label]);
                    }
                }
                Change::Assigned(list) => {
                    if !list.is_empty() {
                        ctx.health.set_ready("correlate");
                    }
                    for (_, partition) in list {
                        parts.assign(partition);
                    }
                }
            }
        }
        let started = Instant::now();
        let now = now_ms();
        let consumed = batch.len() as u64;
        let mut done = Outputs::default();
        parts.feed_batch(batch, now, &mut done);
        parts.tick(now, &mut done);
        ctx.metrics
            .correlate_seconds
            .observe(started.elapsed().as_secs_f64());
        observe_state(ctx, &mut parts, now);
        ctx.metrics
            .unowned_records
            .inc_by(done.unowned + done.superseded);
        for (rule, n) in &done.late {
            ctx.metrics.late.with_label_values(&[rule]).inc_by(*n);
        }
        for nm in &done.not_merged {
            let r = not_merged_report(ctx, &nm.event, nm.fed, nm.watermark, &nm.rules);
            ctx.metrics
                .rejected
                .with_label_values(&[r.reason.code().as_str(), &*nm.event.state])
                .inc();
            out.send(
                &rejected_topic,
                r.incident_id.as_deref().unwrap_or_default().as_bytes(),
                &r,
            )?;
        }
        for (partition, offset) in &done.undecodable {
            let r = Rejection {
                reason: RejectReason::Undecodable,
                detail: "undecodable record on the internal re-keyed topic".into(),
                topic: topic.clone(),
                partition: *partition,
                offset: *offset,
                key_id: None,
                incident_id: None,
                record_size: 0,
                record_sha256: [0; 32],
                rejected_at: now_ms(),
                rejected_by: ctx.instance.clone(),
            };
            ctx.metrics
                .rejected
                .with_label_values(&["undecodable", "??"])
                .inc();
            out.send(
                &rejected_topic,
                format!("{topic}/{partition}/{offset}").as_bytes(),
                &r,
            )?;
        }
        record_alerts(ctx, &mut out, &done.alerts)?;
        observe_latency(ctx, &done.alerts, &done.fed);
        let commits: Vec<CommitOffset> = parts
            .commits()
            .into_iter()
            .map(|(partition, offset)| CommitOffset {
                topic: topic.clone(),
                partition,
                offset,
                metadata: String::new(),
            })
            .collect();
        settle(ctx, "correlate", &mut out, &consumer, &commits)?;
        // Counted once everything the batch caused is confirmed and committed.
        ctx.metrics.correlated.inc_by(consumed);
    }
    Ok(())
}

/// The state gauges and budget counters, after a batch.
fn observe_state(ctx: &Ctx, parts: &mut Partitions, now: i64) {
    let m = &ctx.metrics;
    let rules = parts.rules().clone();
    let mut keys = vec![0usize; rules.rules.len()];
    let mut events = vec![0usize; rules.rules.len()];
    let mut bytes = 0;
    let mut sources = 0;
    for (partition, state) in parts.states() {
        for (ri, n) in state.keys_per_rule() {
            keys[ri] += n;
        }
        for (ri, n) in state.events_per_rule() {
            events[ri] += n;
        }
        bytes += state.bytes();
        sources += state.sources(now);
        if let Some(w) = state.watermark() {
            m.watermark_lag
                .with_label_values(&[partition.to_string().as_str()])
                .set(now.saturating_sub(w) / 1000);
        }
    }
    for (ri, rule) in rules.rules.iter().enumerate() {
        m.state_keys
            .with_label_values(&[rule.name()])
            .set(keys[ri] as i64);
        m.state_events
            .with_label_values(&[rule.name()])
            .set(events[ri] as i64);
    }
    m.state_bytes.set(bytes as i64);
    m.watermark_sources.set(sources as i64);
    let stats = parts.take_stats();
    for (ri, n) in stats.refused {
        m.state_refused
            .with_label_values(&[rules.rules[ri].name()])
            .inc_by(n);
    }
    for (ri, n) in stats.keys_evicted {
        m.state_keys_evicted
            .with_label_values(&[rules.rules[ri].name()])
            .inc_by(n);
    }
    m.updates_coalesced.inc_by(stats.updates_coalesced);
    m.watermark_untracked.inc_by(stats.untracked_sources);
}

/// The sources stage: verify heartbeats, judge silence and backlog on the injected clock.
fn sources_loop(ctx: &Ctx) -> Result<()> {
    let settings = ctx.config.process.sources.clone();
    let wanted: Vec<String> = ctx
        .config
        .kafka
        .states
        .iter()
        .map(|s| ctx.topics.heartbeats(s))
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    let reader = AssignedReader::new(
        &ctx.config.kafka,
        "process-sources",
        "heartbeats",
        |t| wanted.iter().any(|w| w == t),
        StartAt::Last(settings.lookback_records),
    )?;
    let mut out = Outbox::new(ctx, "process-sources")?;
    let rejected_topic = ctx.topics.rejected();
    let check = Duration::from_millis(settings.check_interval_ms);
    let batch_max = ctx.config.process.batch_max;
    // Silence is not judged until the heartbeats re-read at start are in (or for at most
    // the silence bound), so a restart does not raise what the history would cancel.
    let started = Instant::now();
    let mut caught_up = false;
    let mut next_check = Instant::now();
    while !ctx.shutdown.load(Ordering::Relaxed) {
        ctx.health.beat("sources");
        let (verifier, _) = ctx.verifier.get();
        let mut rejections = Vec::new();
        for _ in 0..batch_max {
            // While catching up nothing is judged, so there is no check to wait for.
            let wait = if caught_up {
                next_check
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(100))
            } else {
                Duration::from_millis(100)
            };
            let got = reader.poll(wait, |r| {
                let now = (ctx.clock)();
                let state = ctx.topics.heartbeats_state_of(r.topic);
                let label = state.map_or_else(|| "??".to_string(), str::to_ascii_uppercase);
                let value = r.value.unwrap_or_default();
                match verifier.verify_heartbeat(value, state, now) {
                    Ok(v) => {
                        ctx.metrics
                            .heartbeats_verified
                            .with_label_values(&[&label])
                            .inc();
                        ctx.sources
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .heartbeat(&v.heartbeat, v.envelope.signed_at, now);
                    }
                    Err(rej) => {
                        ctx.metrics
                            .heartbeats_rejected
                            .with_label_values(&[&rej.reason.code(), &label])
                            .inc();
                        rejections.push(Rejection {
                            reason: rej.reason,
                            detail: format!("heartbeat: {}", rej.detail),
                            topic: r.topic.to_string(),
                            partition: r.partition,
                            offset: r.offset,
                            key_id: rej.key_id,
                            incident_id: None,
                            record_size: value.len() as i64,
                            record_sha256: sha2::Sha256::digest(value).into(),
                            rejected_at: now_ms(),
                            rejected_by: ctx.instance.clone(),
                        });
                    }
                }
            })?;
            if got.is_none() || (caught_up && Instant::now() >= next_check) {
                break;
            }
        }
        if !caught_up {
            caught_up = reader.caught_up()?
                || started.elapsed() >= Duration::from_secs(settings.silent_after_secs);
        }
        let mut pending = ctx.source_alerts.lock().unwrap_or_else(|p| p.into_inner());
        if caught_up && Instant::now() >= next_check {
            let now = (ctx.clock)();
            let mut sources = ctx.sources.lock().unwrap_or_else(|p| p.into_inner());
            sources.tick(now, &mut pending);
            observe_sources(&ctx.metrics, &sources);
            ctx.metrics
                .source_posts_untracked
                .inc_by(sources.take_untracked());
            next_check = Instant::now() + check;
        }
        for r in &rejections {
            let key = format!("{}/{}/{}", r.topic, r.partition, r.offset);
            out.send(&rejected_topic, key.as_bytes(), r)?;
        }
        record_alerts(ctx, &mut out, &pending)?;
        out.confirm()?;
        for a in pending.iter() {
            tracing::info!(rule = %a.rule, key = %a.key, msg_type = %a.msg_type, "source alert");
        }
        pending.clear();
    }
    Ok(())
}

/// The last-seen gauges and the posts' spool figures.
fn observe_sources(m: &ProcessorMetrics, sources: &SourceTracker) {
    for seen in sources.seen() {
        let secs = seen.last_seen_or_start.div_euclid(1000);
        match seen.post {
            None => m
                .source_last_seen
                .with_label_values(&[seen.state])
                .set(secs),
            Some(post) => {
                let labels = [seen.state, post];
                m.post_last_seen.with_label_values(&labels).set(secs);
                if let Some(f) = seen.figures {
                    m.post_oldest_unsent
                        .with_label_values(&labels)
                        .set(f.oldest_unsent_age_ms.unwrap_or(0).div_euclid(1000));
                    m.post_spool_reports
                        .with_label_values(&labels)
                        .set(f.spool_depth);
                }
            }
        }
    }
    m.source_posts.set(sources.post_count() as i64);
}
