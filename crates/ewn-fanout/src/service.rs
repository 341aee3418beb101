//! The running fan-out.
//!
//! ```text
//! <prefix>alerts --(group consumer)--> decide per subscription --> endpoint queue (one task
//!        |                                  |                      per webhook, in order,
//!        |                                  |                      retries with backoff)
//!        |                                  '--> escalation timers        |
//!        '--(every instance, all partitions)--> stream hub --> SSE / console
//! <prefix>subscriptions, acks, deliveries --(every instance)--> subscription set, acks, receipts seen
//! receipts --> <prefix>deliveries        acks (API) --> <prefix>acks
//! ```
//!
//! An alert's offset is committed only when every delivery it caused is terminal (its
//! receipt confirmed by the broker) and its escalation is settled, so a crash loses
//! nothing: the replay re-delivers with the same `webhook-id`, and deliveries whose receipt
//! is already on `<prefix>deliveries` are skipped. Each endpoint has its own queue and
//! task, so a slow or dead endpoint only ever delays itself.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ewn_kafka::admin::check_topics;
use ewn_kafka::producer::ConfirmingProducer;
use ewn_kafka::{
    AssignedReader, Change, CommitOffset, GroupConsumer, KafkaMetrics, KafkaSettings, StartAt,
    Subscription as TopicSubscription, Topics,
};
use ewn_model::{Ack, Alert, AvroRecord, DeliveryReceipt, Subscription};
use ewn_ops::http::Health;
use prometheus::Registry;
use tokio::sync::{mpsc, watch};

use crate::auth::{Sessions, Tokens};
use crate::delivery::{DeliveryKey, Job, PendingReceipt, Seen, Ticket, Work, receipt_loop};
use crate::error::{Error, Result};
use crate::escalation::{Scheduler, SystemClock, escalation_loop};
use crate::index::AlertIndex;
use crate::keys::FanoutKey;
use crate::metrics::FanoutMetrics;
use crate::policy::{Decision, RedactedIds};
use crate::settings::{FanoutSettings, SubscriptionConfig};
use crate::stream::Hub;
use crate::subscriptions::{SubscriptionSet, same_definition};
use crate::{policy, webhook};

/// Everything the fan-out is configured with. (`Debug` shows token names, never tokens.)
#[derive(Clone)]
pub struct FanoutConfig {
    pub kafka: KafkaSettings,
    pub fanout: FanoutSettings,
    /// The `[[subscriptions]]` of the configuration file, seeded into the topic at start.
    pub subscriptions: Vec<SubscriptionConfig>,
    /// Tokens given directly (tests, the demo); added to those of `fanout.tokens_file`.
    pub tokens: Vec<(String, crate::auth::Principal)>,
    /// The fan-out key given directly (tests, the demo); otherwise read from
    /// `fanout.key_file`. One of the two is required.
    pub key: Option<crate::keys::FanoutKey>,
}

impl std::fmt::Debug for FanoutConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FanoutConfig")
            .field("kafka", &self.kafka)
            .field("fanout", &self.fanout)
            .field("subscriptions", &self.subscriptions)
            .field(
                "tokens",
                &self
                    .tokens
                    .iter()
                    .map(|(_, p)| p.name())
                    .collect::<Vec<_>>(),
            )
            .field("key", &self.key.as_ref().map(|_| "(given)"))
            .finish()
    }
}

impl FanoutConfig {
    pub fn problems(&self) -> Vec<String> {
        let mut p = self.kafka.problems();
        p.extend(self.fanout.problems());
        if self.key.is_none() && self.fanout.key_file.is_none() {
            p.push("fanout.key_file: required (a 0600 file of 64 hex digits, shared by every instance; `ewn keygen --fanout-key FILE` writes one)".into());
        }
        let mut ids = HashSet::new();
        for (i, s) in self.subscriptions.iter().enumerate() {
            p.extend(s.problems(&format!("subscriptions[{i}]"), &self.fanout.webhook));
            p.extend(s.language_problems(&format!("subscriptions[{i}]"), &self.fanout.languages));
            if !ids.insert(s.id.as_str()) {
                p.push(format!("subscriptions[{i}].id: `{}` given twice", s.id));
            }
        }
        p
    }
}

pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Topic names written per delivery.
pub(crate) struct TopicNames {
    pub deliveries: String,
    pub retries: String,
}

pub(crate) struct Core {
    pub config: FanoutConfig,
    /// The CAP texts of `fanout.languages`, checked complete at start.
    pub catalogue: crate::i18n::Catalogue,
    pub topics: Topics,
    /// The names of the topics written per delivery, made once.
    pub topic_names: TopicNames,
    pub subs: SubscriptionSet,
    pub hub: Hub,
    pub index: AlertIndex,
    /// Set once the index has been rebuilt from `<prefix>alerts`; no alert is dispatched
    /// before.
    index_ready: AtomicBool,
    pub ids: RedactedIds,
    pub metrics: FanoutMetrics,
    pub tokens: Tokens,
    pub sessions: Sessions,
    pub key: FanoutKey,
    /// The one producer of receipts, acks, subscription records and parked deliveries;
    /// bounded by `kafka.max_in_flight_records`, it never blocks a runtime thread. Renewed
    /// by the receipt loop when stale (`ewn_kafka::producer`, renewal).
    producer: ConfirmingProducer,
    pub client: webhook::Client,
    /// Seals and opens the records of `<prefix>subscriptions` (`sealed.rs`).
    seal: crate::sealed::SealKey,
    /// The live path's queue of each webhook endpoint.
    pub endpoints: Mutex<HashMap<Arc<str>, mpsc::UnboundedSender<Job>>>,
    pub escalation: Scheduler,
    /// The audit log of administrative acts (`audit.rs`): never waits.
    pub audit: crate::audit::AuditLog,
    /// The fan-out's service key, which also signs case requests on behalf of desks
    /// (`requests.rs`); none without `fanout.audit.signing_key_file`.
    pub case_signer: Option<Arc<ewn_trust::audit::AuditSigner>>,
    /// (alert id, subscription id, escalation step) with a receipt on the topic.
    pub receipts: Mutex<Seen>,
    /// Deliveries started on the live path and not yet terminal (or parked).
    pub inflight: Mutex<HashSet<DeliveryKey>>,
    /// (episode, subscription) of every escalation step taken: those targets received
    /// the episode by name, so they may acknowledge it and their stream shows it.
    pub escalated: Mutex<Seen<(Arc<str>, String)>>,
    /// Deliveries this instance parked on `<prefix>retries`, and when, until their receipt.
    pub parked: Mutex<HashMap<DeliveryKey, Instant>>,
    /// Receipts the broker did not confirm, to write again.
    pub failed_receipts: Mutex<std::collections::VecDeque<PendingReceipt>>,
    /// Every receipt failing (queued or in flight again) and since when, by a number.
    pub failing_receipts: Mutex<HashMap<u64, Instant>>,
    pub receipt_failures: std::sync::atomic::AtomicUsize,
    pub shutdown: Arc<AtomicBool>,
    pub stop: watch::Receiver<bool>,
    pub runtime: tokio::runtime::Handle,
    pub health: Arc<Health>,
    pub kafka_metrics: KafkaMetrics,
}

impl Core {
    pub fn stopping(&self) -> bool {
        self.shutdown.load(Ordering::Relaxed)
    }

    /// When an earlier alert was created, for CAP references.
    pub fn sent_of(&self, alert_id: &str) -> Option<i64> {
        self.index.created_at(alert_id)
    }

    /// Did an escalation step name `sub_id` for this episode?
    pub fn escalated_to(&self, episode_id: &str, sub_id: &str) -> bool {
        self.escalated
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&(Arc::from(episode_id), sub_id.to_string()))
    }

    pub fn index_ready(&self) -> bool {
        self.index_ready.load(Ordering::Acquire)
    }

    fn index_metrics(&self) {
        let s = self.index.stats();
        let m = &self.metrics;
        m.index_messages.set(s.messages as i64);
        m.index_episodes.set(s.episodes as i64);
        m.index_evicted
            .inc_by(s.evicted.saturating_sub(m.index_evicted.get()));
        m.orphans.inc_by(s.orphans.saturating_sub(m.orphans.get()));
        m.index_incidents_over_bound.inc_by(
            s.incidents_over_bound
                .saturating_sub(m.index_incidents_over_bound.get()),
        );
    }

    pub(crate) fn producer(&self) -> &ConfirmingProducer {
        &self.producer
    }

    /// Replaces the producer when one of its records timed out (or the broker stopped
    /// serving it), before the broker comes back: Tansu 0.6.0 serves no idempotent producer
    /// whose records timed out while it was down (`tests/broker_restart.rs` reproduces it).
    /// What the old one still held comes back as failed and is written again.
    pub(crate) fn renew_producer(&self) {
        if let Err(e) = self.producer.renew_if_stale() {
            tracing::error!(error = %e, "cannot create a new producer; keeping the old one");
        }
    }

    /// Produces a record and waits for the broker to confirm it; waits for room in the
    /// producer without blocking the thread.
    pub async fn produce_confirmed(
        &self,
        topic: &str,
        key: &str,
        value: Option<&[u8]>,
    ) -> Result<()> {
        let confirmation = self
            .producer
            .send_async(topic, Some(key.as_bytes()), value)
            .await?;
        confirmation.await.map(|_| ()).map_err(Error::Unconfirmed)
    }

    /// Writes a subscription record to the topic and applies it here at once (the topic
    /// read-back applies it again, harmlessly).
    pub async fn put_subscription(&self, sub: Subscription) -> Result<()> {
        let value = crate::sealed::seal(&sub, &self.seal)?;
        self.produce_confirmed(&self.topics.subscriptions(), &sub.id, Some(&value))
            .await?;
        self.metrics.subscription(&sub);
        if self.subs.apply(&sub.id.clone(), Some(sub)).is_err() {
            // Filled by other instances meanwhile: on the topic, refused by every reader.
            tracing::error!("subscription written but over fanout.max_subscriptions; not applied");
        }
        self.metrics.subscriptions.set(self.subs.len() as i64);
        Ok(())
    }

    /// Queues the audit record of a subscription change: created, changed, disabled (it
    /// became disabled) or deleted (`after` none), with SHA-256 digests of its definition
    /// before and after (the Avro form, secret removed).
    pub fn audit_subscription(
        &self,
        actor: &str,
        before: Option<&Subscription>,
        after: Option<&Subscription>,
    ) {
        let digest = |s: &Subscription| {
            let mut s = s.clone();
            s.webhook_secret = None;
            s.to_avro().ok().map(|b| crate::audit::digest(&b))
        };
        let action = match (before, after) {
            (_, None) => "subscription_deleted",
            (None, Some(_)) => "subscription_created",
            (Some(b), Some(a)) if a.disabled_at.is_some() && b.disabled_at.is_none() => {
                "subscription_disabled"
            }
            _ => "subscription_changed",
        };
        let object = after.or(before).map(|s| s.id.as_str()).unwrap_or_default();
        self.audit.record(crate::audit::Act {
            actor,
            action,
            object,
            at: now_ms(),
            before: before.and_then(digest),
            after: after.and_then(digest),
            detail: after.and_then(|s| s.disabled_reason.clone()),
        });
    }

    /// The escalation scheduler's clock.
    pub fn escalation_now(&self) -> i64 {
        self.escalation.now_ms()
    }

    /// Deletes by an authenticated deletion record, then a tombstone for compaction (a
    /// tombstone alone is not trusted: `sealed.rs`).
    pub async fn delete_subscription(&self, id: &str) -> Result<()> {
        let at = now_ms();
        let value = crate::sealed::seal_deletion(id, at, &self.seal);
        self.produce_confirmed(&self.topics.subscriptions(), id, Some(&value))
            .await?;
        self.subs.delete(id, at);
        self.produce_confirmed(&self.topics.subscriptions(), id, None)
            .await?;
        self.metrics.subscriptions.set(self.subs.len() as i64);
        Ok(())
    }

    /// This instance's name in logs: `fanout.instance_id` (on Kubernetes the pod name), else
    /// `fanout-<pid>`.
    pub fn instance(&self) -> String {
        match self.config.fanout.instance_id.as_str() {
            "" => format!("fanout-{}", std::process::id()),
            id => id.to_string(),
        }
    }

    pub async fn record_ack(&self, ack: &Ack) -> Result<()> {
        let value = ack.to_avro()?;
        self.produce_confirmed(&self.topics.acks(), &ack.alert_id, Some(&value))
            .await?;
        self.index.ack(&ack.alert_id, ack.acked_at);
        Ok(())
    }
}

/// Decides one alert message for every subscription, on its episode's marking, and
/// starts its deliveries and escalations.
fn dispatch(core: &Arc<Core>, subs: &[Arc<Subscription>], alert: Alert, ticket: &Arc<Ticket>) {
    let known = core.index.observe(&alert);
    let work = Work::new(Arc::new(alert), known);
    let view = &work.view;
    let min_level = core.config.fanout.escalation.min_level;
    for sub in subs {
        match policy::decide(sub, view) {
            Decision::NotSubscribed => {}
            Decision::Withheld => {
                core.metrics
                    .withheld
                    .with_label_values(&[view.tlp.as_str()])
                    .inc();
            }
            Decision::Deliver(form) => {
                core.deliver(&work, sub, form, 0, ticket);
                if !sub.escalation.is_empty()
                    && policy::escalates(view, min_level)
                    && !core.index.settled(&work.episode)
                {
                    core.escalation
                        .start_chain(&work, &sub.id, &sub.escalation, ticket);
                }
            }
        }
    }
}

/// Offsets in flight per partition, in order; the committable offset is the first one
/// still unsettled.
#[derive(Default)]
pub(crate) struct Tracker {
    partitions: HashMap<i32, BTreeMap<i64, Arc<Ticket>>>,
    committed: HashMap<i32, i64>,
    /// Records settled so far.
    pub settled: u64,
}

impl Tracker {
    pub(crate) fn pending(&self) -> usize {
        self.partitions.values().map(BTreeMap::len).sum()
    }

    pub(crate) fn insert(&mut self, partition: i32, offset: i64, ticket: Arc<Ticket>) {
        self.partitions
            .entry(partition)
            .or_default()
            .insert(offset, ticket);
    }

    /// A revoked partition: its offsets are another instance's to commit now.
    pub(crate) fn forget(&mut self, partition: i32) {
        self.partitions.remove(&partition);
        self.committed.remove(&partition);
    }

    /// Drops settled offsets from the front of each partition and returns the offsets to
    /// commit (the next offset to read) that moved.
    pub(crate) fn advance(&mut self, topic: &str) -> Vec<CommitOffset> {
        let mut out = Vec::new();
        for (p, q) in &mut self.partitions {
            let mut next = None;
            while let Some(entry) = q.first_entry() {
                if !entry.get().settled() {
                    next = Some(*entry.key());
                    break;
                }
                next = Some(*entry.key() + 1);
                entry.remove();
                self.settled += 1;
            }
            if let Some(n) = next
                && self.committed.get(p) != Some(&n)
            {
                self.committed.insert(*p, n);
                out.push(CommitOffset {
                    topic: topic.to_string(),
                    partition: *p,
                    offset: n,
                    metadata: String::new(),
                });
            }
        }
        out
    }
}

/// One record of a ticketed read: where it is, what it decoded to, and the ticket that
/// holds its offset until its work is terminal.
pub(crate) struct Ticketed<T> {
    pub partition: i32,
    pub offset: i64,
    pub value: T,
    pub ticket: Arc<Ticket>,
}

/// What a ticketed read of one topic is: who reads, as which group, and how its records
/// decode; the alerts and the parked deliveries are read this way.
pub(crate) struct TicketedRead<'a> {
    /// The health part beaten while reading.
    pub part: &'static str,
    /// The Kafka client's role name (metrics).
    pub role: &'a str,
    pub group: String,
    pub topic: String,
    /// Updated with the records read and not yet settled.
    pub pending: &'a prometheus::IntGauge,
}

/// Reads `read.topic` as its group, hands each batch to `handle` (each record with a
/// ticket, which `handle`'s work holds until terminal) and commits, every 200 ms and at the
/// end, each partition's offsets up to its oldest record not yet settled. Reading pauses
/// while `fanout.max_pending_alerts` records are unsettled; a revoked partition's records
/// are forgotten (their new owner reads them again). `settled` is told how many records
/// have settled in all, at each commit.
pub(crate) fn ticketed_loop<T>(
    core: &Arc<Core>,
    read: TicketedRead<'_>,
    decode: impl Fn(Option<&[u8]>) -> T,
    mut handle: impl FnMut(Vec<Ticketed<T>>),
    mut settled: impl FnMut(u64),
) -> Result<()> {
    let f = &core.config.fanout;
    let consumer = GroupConsumer::new(
        &core.config.kafka,
        read.role,
        &read.group,
        &TopicSubscription::Topics(vec![read.topic.clone()]),
        Some(core.kafka_metrics.clone()),
    )?;
    let mut tracker = Tracker::default();
    let mut last_commit = Instant::now();
    while !core.stopping() {
        core.health.beat(read.part);
        for change in consumer.take_changes() {
            if let Change::Revoked(parts) = change {
                for (_, p) in parts {
                    tracker.forget(p);
                }
            }
        }
        if tracker.pending() >= f.max_pending_alerts {
            std::thread::sleep(Duration::from_millis(20));
        } else {
            let mut batch = Vec::new();
            consumer.poll_batch(f.batch_max, Duration::from_millis(f.batch_wait_ms), |r| {
                batch.push(Ticketed {
                    partition: r.partition,
                    offset: r.offset,
                    value: decode(r.value),
                    ticket: Arc::new(Ticket::default()),
                });
            })?;
            let held: Vec<(i32, i64, Arc<Ticket>)> = batch
                .iter()
                .map(|t| (t.partition, t.offset, t.ticket.clone()))
                .collect();
            if !batch.is_empty() {
                handle(batch);
            }
            for (partition, offset, ticket) in held {
                tracker.insert(partition, offset, ticket);
            }
        }
        read.pending.set(tracker.pending() as i64);
        if last_commit.elapsed() >= Duration::from_millis(200) {
            consumer.commit(&tracker.advance(&read.topic))?;
            last_commit = Instant::now();
            settled(tracker.settled);
        }
    }
    consumer.commit(&tracker.advance(&read.topic))?;
    Ok(())
}

/// The group of the fan-out's alert readers (and, suffixed, of its retry readers).
pub(crate) fn group(core: &Core, suffix: &str) -> String {
    let f = &core.config.fanout;
    if f.group_id.is_empty() {
        format!("{}fanout{suffix}", core.config.kafka.topic_prefix)
    } else {
        format!("{}{suffix}", f.group_id)
    }
}

fn consume_loop(core: &Arc<Core>) -> Result<()> {
    // Every decision reads the alert index: none before it is rebuilt.
    while !core.index_ready.load(Ordering::Acquire) {
        if core.stopping() {
            return Ok(());
        }
        core.health.beat("consume");
        std::thread::sleep(Duration::from_millis(20));
    }
    let read = TicketedRead {
        part: "consume",
        role: "fanout",
        group: group(core, ""),
        topic: core.topics.alerts(),
        pending: &core.metrics.pending_alerts,
    };
    let decode = |value: Option<&[u8]>| value.map(Alert::from_avro);
    ticketed_loop(
        core,
        read,
        decode,
        |batch| {
            let subs = core.subs.snapshot();
            for t in batch {
                match t.value {
                    Some(Ok(alert)) => {
                        core.metrics
                            .alerts
                            .with_label_values(&[alert.msg_type.as_str()])
                            .inc();
                        t.ticket.hold();
                        dispatch(core, &subs, alert, &t.ticket);
                        t.ticket.release();
                    }
                    _ => {
                        core.metrics
                            .undecodable
                            .with_label_values(&["alerts"])
                            .inc();
                        let (partition, offset) = (t.partition, t.offset);
                        tracing::warn!(partition, offset, "undecodable alert record skipped");
                    }
                }
            }
        },
        |_| {},
    )
}

/// Reads `<prefix>subscriptions` (whole), `<prefix>acks` and `<prefix>deliveries` (their
/// recent past), first up to their ends (then `ready` fires), then as they grow.
fn tail_loop(core: &Arc<Core>, ready: &mut Option<std::sync::mpsc::Sender<()>>) -> Result<()> {
    let t = &core.topics;
    let (subs_topic, acks_topic, deliveries_topic) = (t.subscriptions(), t.acks(), t.deliveries());
    let lookback = core.config.fanout.receipts_lookback;
    let reader = AssignedReader::with_starts(
        &core.config.kafka,
        "fanout-tail",
        "subscriptions, acks, deliveries",
        |name| name == subs_topic || name == acks_topic || name == deliveries_topic,
        |name| {
            if name == subs_topic {
                StartAt::Beginning
            } else {
                StartAt::Last(lookback)
            }
        },
    )?;
    let timeout = Duration::from_millis(core.config.kafka.request_timeout_ms);
    let mut catch_up = CatchUp::new(&reader, timeout)?;
    while !core.stopping() {
        core.health.beat("tail");
        let got = reader.poll(Duration::from_millis(50), |r| {
            if r.topic == subs_topic {
                let applied = crate::sealed::apply(&core.subs, r.key, r.value, &core.seal);
                if applied.is_ok()
                    && let Some(sub) = r
                        .key
                        .and_then(|k| std::str::from_utf8(k).ok())
                        .and_then(|id| core.subs.get(id))
                {
                    core.metrics.subscription(&sub);
                }
                if let Err(why) = applied {
                    let m = &core.metrics.subscription_records_refused;
                    m.with_label_values(&[why.label()]).inc();
                    tracing::warn!(
                        reason = why.label(),
                        partition = r.partition,
                        offset = r.offset,
                        "subscription record refused"
                    );
                }
                core.metrics.subscriptions.set(core.subs.len() as i64);
            } else if r.topic == acks_topic {
                match r.value.map(Ack::from_avro) {
                    Some(Ok(a)) => core.index.ack(&a.alert_id, a.acked_at),
                    _ => core.metrics.undecodable.with_label_values(&["acks"]).inc(),
                }
            } else {
                match r.value.map(DeliveryReceipt::from_avro) {
                    Some(Ok(d)) => {
                        core.receipts
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(DeliveryKey::new(
                                &d.alert_id,
                                &d.subscription_id,
                                d.escalation_step,
                            ));
                    }
                    _ => core
                        .metrics
                        .undecodable
                        .with_label_values(&["deliveries"])
                        .inc(),
                }
            }
            ((r.topic.to_string(), r.partition), r.offset)
        })?;
        if ready.is_some()
            && catch_up.seen(got, timeout * 6, "subscriptions, acks and deliveries")?
            && let Some(tx) = ready.take()
        {
            let _ = tx.send(());
        }
    }
    Ok(())
}

/// Tells when a reader that started in the past has read every partition up to the end
/// it had at start.
struct CatchUp {
    behind: HashMap<(String, i32), i64>,
    started: Instant,
}

impl CatchUp {
    fn new(reader: &AssignedReader, timeout: Duration) -> Result<CatchUp> {
        Ok(CatchUp {
            behind: reader
                .high_watermarks(timeout)?
                .into_iter()
                .filter(|(_, _, high)| *high > 0)
                .map(|(topic, p, high)| ((topic, p), high))
                .collect(),
            started: Instant::now(),
        })
    }

    /// Notes the last record a poll read; true once caught up, an error when it takes
    /// longer than `limit`.
    fn seen(
        &mut self,
        last: Option<((String, i32), i64)>,
        limit: Duration,
        what: &str,
    ) -> Result<bool> {
        if let Some((tp, offset)) = last
            && self.behind.get(&tp).is_some_and(|&high| offset + 1 >= high)
        {
            self.behind.remove(&tp);
        }
        if self.behind.is_empty() {
            Ok(true)
        } else if self.started.elapsed() > limit {
            Err(Error::Unconfirmed(format!(
                "could not read {} partitions of {what} to their end",
                self.behind.len()
            )))
        } else {
            Ok(false)
        }
    }
}

/// Mirrors every partition of `<prefix>alerts` into the alert index and the stream hub:
/// first the recent past (`fanout.index.rebuild_lookback` per partition; no alert is
/// dispatched before it is read), then as it grows.
fn mirror_loop(core: &Arc<Core>) -> Result<()> {
    let alerts = core.topics.alerts();
    let f = &core.config.fanout;
    let lookback = f.index.rebuild_lookback.max(f.stream.buffer_alerts as i64);
    let reader = AssignedReader::new(
        &core.config.kafka,
        "fanout-stream",
        "alerts",
        |name| name == alerts,
        StartAt::Last(lookback),
    )?;
    let timeout = Duration::from_millis(core.config.kafka.request_timeout_ms);
    let mut catch_up = (!core.index_ready.load(Ordering::Acquire))
        .then(|| CatchUp::new(&reader, timeout))
        .transpose()?;
    while !core.stopping() {
        core.health.beat("stream");
        let last = reader.poll(Duration::from_millis(100), |r| {
            match r.value.map(Alert::from_avro) {
                Some(Ok(a)) => {
                    core.index.observe(&a);
                    core.hub.push(r.partition, r.offset, a);
                }
                _ => core
                    .metrics
                    .undecodable
                    .with_label_values(&["alerts"])
                    .inc(),
            }
            ((r.topic.to_string(), r.partition), r.offset)
        })?;
        core.index_metrics();
        if let Some(c) = &mut catch_up
            && c.seen(last, timeout * 30, "alerts (the alert index)")?
        {
            core.index_ready.store(true, Ordering::Release);
            catch_up = None;
            tracing::info!(
                messages = core.index.stats().messages,
                "alert index rebuilt"
            );
        }
    }
    Ok(())
}

/// A started fan-out: where its API listens, and the task to await.
pub struct Running {
    pub api: SocketAddr,
    pub task: tokio::task::JoinHandle<Result<()>>,
}

/// Starts the fan-out: checks its topics (missing or misconfigured: an error naming each),
/// reads the subscription set,
/// seeds the configured subscriptions, then serves the API and delivers alerts until
/// `shutdown` is set.
pub async fn start(
    config: FanoutConfig,
    registry: &Registry,
    health: Arc<Health>,
    shutdown: Arc<AtomicBool>,
) -> Result<Running> {
    let problems = config.problems();
    if !problems.is_empty() {
        return Err(Error::Config(problems));
    }
    let topics = Topics::new(&config.kafka.topic_prefix);
    // Checked, never created here: the fan-out's principal needs no Create ACL.
    for note in check_topics(&config.kafka, &topics.for_fanout(config.kafka.partitions)).await? {
        tracing::warn!(note = %note, "topic");
    }
    let mut tokens = match &config.fanout.tokens_file {
        Some(path) => Tokens::load(path)?,
        None => Tokens::default(),
    };
    tokens.extend(config.tokens.clone());
    let metrics = FanoutMetrics::register(registry)
        .map_err(|e| Error::Config(vec![format!("metrics: {e}")]))?;
    metrics
        .pending_alerts_bound
        .set(config.fanout.max_pending_alerts.min(i64::MAX as usize) as i64);
    let kafka_metrics = KafkaMetrics::register(registry)
        .map_err(|e| Error::Config(vec![format!("metrics: {e}")]))?;
    let key = match (&config.key, &config.fanout.key_file) {
        (Some(k), _) => k.clone(),
        (None, Some(path)) => FanoutKey::load(path)?,
        (None, None) => {
            return Err(Error::Config(vec!["fanout.key_file: required".into()]));
        }
    };
    let producer =
        ConfirmingProducer::new(&config.kafka, "fanout", (), Some(kafka_metrics.clone()))?;
    let seal = crate::sealed::SealKey::new(&key);
    let instance = match config.fanout.instance_id.as_str() {
        "" => format!("fanout-{}", std::process::id()),
        id => id.to_string(),
    };
    let (audit, audit_queue) = match &config.fanout.audit.signing_key_file {
        Some(path) => {
            let key = ewn_trust::keys::load_signing_key(path)
                .map_err(|e| Error::Config(vec![format!("fanout.audit.signing_key_file: {e}")]))?;
            let signer = ewn_trust::audit::AuditSigner::new(
                config.fanout.audit.key_id.clone(),
                "fanout",
                key,
            );
            let (log, rx) = crate::audit::AuditLog::new(
                config.fanout.audit.queue_max,
                instance,
                metrics.clone(),
            );
            (log, Some((rx, Arc::new(signer))))
        }
        None => (crate::audit::AuditLog::disabled(metrics.clone()), None),
    };
    let client = webhook::client(&config.fanout.webhook)
        .map_err(|e| Error::Config(vec![format!("fanout.webhook: http client: {e}")]))?;
    let catalogue =
        crate::i18n::Catalogue::load(&config.fanout.languages).map_err(Error::Config)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let core = Arc::new(Core {
        catalogue,
        topic_names: TopicNames {
            deliveries: topics.deliveries(),
            retries: topics.retries(),
        },
        topics,
        subs: SubscriptionSet::new(config.fanout.max_subscriptions),
        hub: Hub::new(config.fanout.stream.buffer_alerts),
        index: AlertIndex::new(config.fanout.index.max_messages)
            .with_max_episode_incidents(config.fanout.index.max_episode_incidents),
        index_ready: AtomicBool::new(false),
        ids: RedactedIds::new(&key),
        metrics,
        tokens,
        sessions: Sessions::new(
            &key,
            Duration::from_secs(config.fanout.session_ttl_secs),
            config.fanout.max_revoked_sessions,
        ),
        key,
        producer,
        client,
        seal,
        endpoints: Mutex::new(HashMap::new()),
        escalation: Scheduler::new(config.fanout.index.max_messages, Arc::new(SystemClock)),
        case_signer: audit_queue.as_ref().map(|(_, s)| s.clone()),
        audit,
        parked: Mutex::new(HashMap::new()),
        inflight: Mutex::new(HashSet::new()),
        escalated: Mutex::new(Seen::new(config.fanout.index.max_messages)),
        failed_receipts: Mutex::new(std::collections::VecDeque::new()),
        failing_receipts: Mutex::new(HashMap::new()),
        receipt_failures: std::sync::atomic::AtomicUsize::new(0),
        receipts: Mutex::new(Seen::new(
            (config.fanout.receipts_lookback.max(1) as usize)
                .saturating_mul(config.kafka.partitions.max(1) as usize),
        )),
        shutdown: shutdown.clone(),
        stop: stop_rx,
        runtime: tokio::runtime::Handle::current(),
        health,
        kafka_metrics,
        config,
    });
    core.metrics
        .index_incidents_bound
        .set(core.index.max_episode_incidents() as i64);

    // The subscription set (and the receipts and acks) must be read before any alert is.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let tail = {
        let core = core.clone();
        tokio::task::spawn_blocking(move || {
            let _span = tracing::info_span!("stage", service = "fanout", instance = %core.instance(), stage = "tail").entered();
            let mut ready = Some(ready_tx);
            ewn_ops::supervise::supervise(
                "tail",
                &core.shutdown,
                || tail_loop(&core, &mut ready),
                Error::is_config,
            )
        })
    };
    let waited =
        tokio::task::spawn_blocking(move || ready_rx.recv_timeout(Duration::from_secs(60)))
            .await
            .map_err(|e| Error::Unconfirmed(format!("start-up: {e}")))?;
    if waited.is_err() {
        shutdown.store(true, Ordering::Relaxed);
        let _ = tail.await;
        return Err(Error::Unconfirmed(
            "could not read the subscriptions topic to its end within 60 s".into(),
        ));
    }
    seed(&core).await?;

    let (api, server) = ewn_ops::http::serve_with(
        core.config.fanout.listen,
        crate::api::router(core.clone()),
        stopped(core.stop.clone()),
        core.config.fanout.http.clone(),
    )
    .await
    .map_err(|e| {
        Error::Config(vec![format!(
            "fanout.listen: {}: {e}",
            core.config.fanout.listen
        )])
    })?;
    tracing::info!(api = %api, instance = %core.instance(), subscriptions = core.subs.len(), "fan-out started");

    let task = tokio::spawn(async move {
        let mut tasks = vec![tail];
        for (name, stage) in [
            ("consume", consume_loop as fn(&Arc<Core>) -> Result<()>),
            ("stream", mirror_loop),
            ("retries", crate::retry::retry_loop),
        ] {
            let core = core.clone();
            tasks.push(tokio::task::spawn_blocking(move || {
                let _span =
                    tracing::info_span!("stage", service = "fanout", instance = %core.instance(), stage = name).entered();
                ewn_ops::supervise::supervise(
                    name,
                    &core.shutdown,
                    || stage(&core),
                    Error::is_config,
                )
            }));
        }
        let escalation = tokio::spawn(escalation_loop(core.clone()));
        let audit = audit_queue.map(|(rx, signer)| {
            let writer_core = core.clone();
            let topic = core.topics.audit();
            let mut stop = core.stop.clone();
            tokio::spawn(async move {
                let metrics = writer_core.metrics.clone();
                let produce = move |key: String, value: Vec<u8>| {
                    let core = writer_core.clone();
                    let topic = topic.clone();
                    async move {
                        core.produce_confirmed(&topic, &key, Some(&value))
                            .await
                            .is_ok()
                    }
                };
                tokio::select! {
                    _ = crate::audit::writer(rx, signer, metrics, now_ms, produce) => {}
                    _ = stop.wait_for(|s| *s) => {}
                }
            })
        });
        let receipts = tokio::spawn(receipt_loop(core.clone()));
        // Turns the shared flag into a wake-up for every sleeping task and stream.
        let watcher = {
            let core = core.clone();
            tokio::spawn(async move {
                while !core.stopping() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                let _ = stop_tx.send(true);
            })
        };
        let mut result = Ok(());
        for t in tasks {
            match t.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    core.shutdown.store(true, Ordering::Relaxed);
                    result = Err(e);
                }
                Err(e) => result = Err(Error::Unconfirmed(format!("stage panicked: {e}"))),
            }
        }
        let _ = watcher.await;
        let _ = escalation.await;
        if let Some(a) = audit {
            let _ = a.await;
        }
        let _ = receipts.await;
        let _ = server.await;
        // Dropping the queues ends the endpoint tasks, which hold the core (and with it the
        // producer's connection) alive.
        core.endpoints
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        // Receipts already queued get their confirmation before the producer goes.
        let _ = core.producer().flush(Duration::from_secs(5));
        result
    });
    Ok(Running { api, task })
}

/// Runs the fan-out until `shutdown` is set.
pub async fn run(
    config: FanoutConfig,
    registry: &Registry,
    health: Arc<Health>,
    shutdown: Arc<AtomicBool>,
) -> Result<()> {
    let running = start(config, registry, health, shutdown).await?;
    running
        .task
        .await
        .map_err(|e| Error::Unconfirmed(format!("fan-out task: {e}")))?
}

async fn stopped(mut stop: watch::Receiver<bool>) {
    while !*stop.borrow() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// Writes the configured subscriptions whose definition differs from the topic's.
async fn seed(core: &Arc<Core>) -> Result<()> {
    for c in &core.config.subscriptions {
        let record = c.to_record(now_ms()).map_err(|e| Error::Config(vec![e]))?;
        match core.subs.get(&c.id) {
            Some(held) if same_definition(&held, &record) => {}
            held => {
                core.put_subscription(record.clone()).await?;
                core.audit_subscription("config", held.as_deref(), Some(&record));
            }
        }
    }
    Ok(())
}
