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
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ewn_kafka::admin::ensure_topics;
use ewn_kafka::producer::{DeliverySink, Landed};
use ewn_kafka::{
    AssignedReader, Change, CommitOffset, GroupConsumer, KafkaMetrics, KafkaSettings,
    RecordProducer, StartAt, Subscription as TopicSubscription, Topics,
};
use ewn_model::{
    Ack, Alert, AvroRecord, Channel, DeliveryOutcome, DeliveryReceipt, Format, Subscription, Tlp,
};
use ewn_ops::http::Health;
use prometheus::Registry;
use tokio::sync::{mpsc, oneshot, watch};

use crate::auth::{Sessions, Tokens};
use crate::error::{Error, Result};
use crate::metrics::FanoutMetrics;
use crate::policy::{Decision, Form};
use crate::settings::{FanoutSettings, SubscriptionConfig};
use crate::stream::Hub;
use crate::subscriptions::{SubscriptionSet, same_definition};
use crate::webhook::{self, Attempt, WebhookSecret};
use crate::{cap, policy, render};

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

/// Outstanding work of one alert record: deliveries not yet terminal and escalations not
/// yet settled. Its offset may be committed once it reaches zero.
#[derive(Default)]
pub(crate) struct Ticket {
    remaining: AtomicUsize,
}

impl Ticket {
    fn hold(&self) {
        self.remaining.fetch_add(1, Ordering::AcqRel);
    }

    fn release(&self) {
        self.remaining.fetch_sub(1, Ordering::AcqRel);
    }

    fn settled(&self) -> bool {
        self.remaining.load(Ordering::Acquire) == 0
    }
}

/// What a body depends on besides the alert: its form, format and marking.
type BodyShape = (Form, Format, Tlp);

/// An alert being delivered, with its rendered bodies shared by all recipients.
pub(crate) struct Work {
    pub alert: Arc<Alert>,
    bodies: Mutex<HashMap<BodyShape, Arc<[u8]>>>,
}

impl Work {
    fn new(alert: Arc<Alert>) -> Arc<Work> {
        Arc::new(Work {
            alert,
            bodies: Mutex::new(HashMap::new()),
        })
    }

    /// The body `sub` receives under `form`, rendered once per distinct shape.
    fn body(&self, core: &Core, sub: &Subscription, form: Form) -> (Arc<[u8]>, Tlp, bool) {
        let marking = match form {
            Form::Full => self.alert.tlp,
            Form::Redacted => policy::redacted_tlp(sub),
        };
        let key = (form, sub.format, marking);
        let mut bodies = self.bodies.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = bodies.get(&key) {
            return (b.clone(), marking, form == Form::Redacted);
        }
        let (shaped, redacted) = policy::shape(sub, &self.alert, form);
        let body: Arc<[u8]> = match sub.format {
            Format::Json => render::webhook_json(&shaped, redacted).into(),
            Format::Cap => cap::render(&shaped, &core.config.fanout.sender, &|id| core.sent_of(id))
                .into_bytes()
                .into(),
        };
        bodies.insert(key, body.clone());
        (body, marking, redacted)
    }
}

struct Job {
    work: Arc<Work>,
    sub_id: String,
    step: i32,
    form: Form,
    ticket: Arc<Ticket>,
}

type Callback = Box<dyn FnOnce(std::result::Result<Landed, String>) + Send>;

/// Routes each confirmation of the shared producer to whoever waits for it.
#[derive(Default)]
struct Callbacks {
    next: AtomicUsize,
    waiting: Mutex<HashMap<usize, Callback>>,
}

impl DeliverySink for Callbacks {
    fn on_delivery(&self, id: usize, outcome: std::result::Result<Landed, String>) {
        let cb = self
            .waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        if let Some(cb) = cb {
            cb(outcome);
        }
    }
}

/// A delivery a receipt records: (alert id, subscription id, escalation step).
type DeliveryKey = (String, String, i32);

/// The deliveries known to have a receipt, bounded: the oldest are forgotten first, as
/// the start-up read of `<prefix>deliveries` forgets what lies beyond its lookback.
pub(crate) struct Seen {
    set: HashSet<DeliveryKey>,
    order: std::collections::VecDeque<DeliveryKey>,
    capacity: usize,
}

impl Seen {
    fn new(capacity: usize) -> Seen {
        Seen {
            set: HashSet::new(),
            order: std::collections::VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    fn insert(&mut self, key: DeliveryKey) {
        if self.set.insert(key.clone()) {
            self.order.push_back(key);
            while self.order.len() > self.capacity {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }

    fn contains(&self, key: &DeliveryKey) -> bool {
        self.set.contains(key)
    }
}

/// A pending escalation step of one alert, for one primary subscription.
struct Escalation {
    work: Arc<Work>,
    owner: String,
    step: usize,
    ticket: Arc<Ticket>,
}

pub(crate) struct Core {
    pub config: FanoutConfig,
    pub topics: Topics,
    pub subs: SubscriptionSet,
    pub hub: Hub,
    pub metrics: FanoutMetrics,
    pub tokens: Tokens,
    pub sessions: Sessions,
    producer: RecordProducer<Arc<Callbacks>>,
    callbacks: Arc<Callbacks>,
    client: webhook::Client,
    /// Seals and opens the records of `<prefix>subscriptions` (`sealed.rs`).
    seal: crate::sealed::SealKey,
    endpoints: Mutex<HashMap<String, mpsc::UnboundedSender<Job>>>,
    escalations: Mutex<BTreeMap<(i64, u64), Escalation>>,
    escalation_seq: AtomicUsize,
    /// Alert id -> when it was first acknowledged.
    acks: Mutex<HashMap<String, i64>>,
    /// (alert id, subscription id, escalation step) with a receipt on the topic.
    receipts: Mutex<Seen>,
    pub shutdown: Arc<AtomicBool>,
    pub stop: watch::Receiver<bool>,
    runtime: tokio::runtime::Handle,
    health: Arc<Health>,
    kafka_metrics: KafkaMetrics,
}

impl Core {
    pub fn stopping(&self) -> bool {
        self.shutdown.load(Ordering::Relaxed)
    }

    /// When an earlier alert was created, for CAP references.
    pub fn sent_of(&self, alert_id: &str) -> Option<i64> {
        self.hub.find(alert_id).map(|a| a.created_at)
    }

    pub fn acked(&self, alert: &Alert) -> bool {
        let acks = self.acks.lock().unwrap_or_else(|p| p.into_inner());
        acks.contains_key(&alert.alert_id) || alert.references.iter().any(|r| acks.contains_key(r))
    }

    pub fn ack_time(&self, alert_id: &str) -> Option<i64> {
        self.acks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(alert_id)
            .copied()
    }

    fn note_ack(&self, alert_id: &str, at: i64) {
        self.acks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(alert_id.to_string())
            .or_insert(at);
    }

    /// Queues a record; `done` runs with the broker's answer.
    fn produce(&self, topic: &str, key: &str, value: Option<&[u8]>, done: Callback) -> Result<()> {
        let id = self.callbacks.next.fetch_add(1, Ordering::Relaxed);
        self.callbacks
            .waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, done);
        if let Err(e) = self.producer.send(topic, Some(key.as_bytes()), value, id) {
            self.callbacks
                .waiting
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
            return Err(e.into());
        }
        Ok(())
    }

    /// Produces a record and waits for the broker to confirm it.
    pub async fn produce_confirmed(
        &self,
        topic: &str,
        key: &str,
        value: Option<&[u8]>,
    ) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.produce(
            topic,
            key,
            value,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        )?;
        let timeout = Duration::from_millis(self.config.kafka.message_timeout_ms + 5_000);
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(Ok(_))) => Ok(()),
            Ok(Ok(Err(e))) => Err(Error::Unconfirmed(e)),
            _ => Err(Error::Unconfirmed("no answer from the broker".into())),
        }
    }

    /// Writes a subscription record to the topic and applies it here at once (the topic
    /// read-back applies it again, harmlessly).
    pub async fn put_subscription(&self, sub: Subscription) -> Result<()> {
        let value = crate::sealed::seal(&sub, &self.seal)?;
        self.produce_confirmed(&self.topics.subscriptions(), &sub.id, Some(&value))
            .await?;
        self.subs.apply(&sub.id.clone(), Some(sub));
        self.metrics.subscriptions.set(self.subs.len() as i64);
        Ok(())
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

    pub async fn record_ack(&self, ack: &Ack) -> Result<()> {
        let value = ack.to_avro()?;
        self.produce_confirmed(&self.topics.acks(), &ack.alert_id, Some(&value))
            .await?;
        self.note_ack(&ack.alert_id, ack.acked_at);
        Ok(())
    }

    fn already_delivered(&self, alert_id: &str, sub_id: &str, step: i32) -> bool {
        self.receipts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&(alert_id.to_string(), sub_id.to_string(), step))
    }

    /// Starts the delivery of `work` to `sub`, holding `ticket` until it is terminal.
    fn deliver(
        self: &Arc<Self>,
        work: &Arc<Work>,
        sub: &Subscription,
        form: Form,
        step: i32,
        ticket: &Arc<Ticket>,
    ) {
        if self.already_delivered(&work.alert.alert_id, &sub.id, step) {
            self.metrics.skipped_replays.inc();
            return;
        }
        ticket.hold();
        match sub.channel {
            Channel::Webhook => {
                let job = Job {
                    work: work.clone(),
                    sub_id: sub.id.clone(),
                    step,
                    form,
                    ticket: ticket.clone(),
                };
                let mut endpoints = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
                let tx = endpoints.entry(sub.id.clone()).or_insert_with(|| {
                    let (tx, rx) = mpsc::unbounded_channel();
                    self.runtime
                        .spawn(endpoint_worker(self.clone(), sub.id.clone(), rx));
                    tx
                });
                if let Err(mpsc::error::SendError(job)) = tx.send(job) {
                    // The worker is gone (shutting down): leave the alert uncommitted.
                    tracing::debug!(subscription = %job.sub_id, "endpoint worker gone");
                }
            }
            Channel::Stream | Channel::Console => {
                // The stream keeps the alert for `Last-Event-ID` resume: "delivered" means
                // made available to the subscription's live stream and console.
                let marking = match form {
                    Form::Full => work.alert.tlp,
                    Form::Redacted => policy::redacted_tlp(sub),
                };
                let now = now_ms();
                self.finish(
                    &work.alert,
                    sub,
                    step,
                    Outcome {
                        outcome: DeliveryOutcome::Delivered,
                        tlp: marking,
                        redacted: form == Form::Redacted,
                        attempts: 1,
                        status: None,
                        error: None,
                        first_attempt_at: now,
                        webhook_id: None,
                    },
                    ticket.clone(),
                );
            }
        }
    }

    /// Writes the receipt of a terminal outcome; the ticket is released once the broker
    /// confirms it.
    fn finish(
        self: &Arc<Self>,
        alert: &Alert,
        sub: &Subscription,
        step: i32,
        o: Outcome,
        ticket: Arc<Ticket>,
    ) {
        let now = now_ms();
        let channel = sub.channel;
        let ch = channel_label(channel);
        self.metrics
            .deliveries
            .with_label_values(&[ch, outcome_label(o.outcome), &sub.agency])
            .inc();
        match o.outcome {
            DeliveryOutcome::Delivered => {
                self.metrics
                    .delivery_seconds
                    .with_label_values(&[ch])
                    .observe(((now - alert.created_at).max(0)) as f64 / 1000.0);
                self.metrics
                    .end_to_end_seconds
                    .observe(((now - alert.window_end).max(0)) as f64 / 1000.0);
            }
            DeliveryOutcome::DeadLetter => {
                self.metrics
                    .dead_letters
                    .with_label_values(&[&sub.agency])
                    .inc();
            }
            DeliveryOutcome::EndpointGone => {}
        }
        let receipt = DeliveryReceipt {
            alert_id: alert.alert_id.clone(),
            subscription_id: sub.id.clone(),
            agency: sub.agency.clone(),
            channel,
            format: sub.format,
            outcome: o.outcome,
            tlp: o.tlp,
            redacted: o.redacted,
            escalation_step: step,
            webhook_id: o.webhook_id,
            attempts: o.attempts,
            status_code: o.status.map(i32::from),
            error: o.error,
            first_attempt_at: o.first_attempt_at,
            completed_at: now,
        };
        tracing::info!(
            alert_id = %receipt.alert_id,
            subscription = %receipt.subscription_id,
            outcome = receipt.outcome.as_str(),
            attempts = receipt.attempts,
            step,
            "delivery terminal"
        );
        let seen = (
            receipt.alert_id.clone(),
            receipt.subscription_id.clone(),
            step,
        );
        let value = match receipt.to_avro() {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode a receipt; the alert stays uncommitted");
                return;
            }
        };
        let core = self.clone();
        let result = self.produce(
            &self.topics.deliveries(),
            &receipt.alert_id,
            Some(&value),
            Box::new(move |r| match r {
                Ok(_) => {
                    core.receipts
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(seen);
                    ticket.release();
                }
                Err(e) => {
                    // Not released: the alert stays uncommitted and a restart re-delivers
                    // it (same webhook-id) and writes the receipt again.
                    tracing::error!(error = %e, "receipt not confirmed by the broker");
                }
            }),
        );
        if let Err(e) = result {
            tracing::error!(error = %e, "cannot queue a receipt; the alert stays uncommitted");
        }
    }

    /// Stops deliveries to a subscription for good (410 Gone), on every instance.
    async fn disable(&self, sub: &Subscription, reason: &str) {
        let mut s = sub.clone();
        s.disabled_at = Some(now_ms());
        s.disabled_reason = Some(reason.to_string());
        s.updated_at = now_ms();
        tracing::warn!(subscription = %sub.id, reason, "endpoint disabled");
        if let Err(e) = self.put_subscription(s.clone()).await {
            tracing::error!(error = %e, subscription = %sub.id, "cannot record the disabled subscription; disabled here only");
            self.subs.apply(&s.id.clone(), Some(s));
        }
    }
}

struct Outcome {
    outcome: DeliveryOutcome,
    tlp: Tlp,
    redacted: bool,
    attempts: i32,
    status: Option<u16>,
    error: Option<String>,
    first_attempt_at: i64,
    webhook_id: Option<String>,
}

pub fn channel_label(c: Channel) -> &'static str {
    match c {
        Channel::Webhook => "webhook",
        Channel::Stream => "stream",
        Channel::Console => "console",
    }
}

fn outcome_label(o: DeliveryOutcome) -> &'static str {
    match o {
        DeliveryOutcome::Delivered => "delivered",
        DeliveryOutcome::DeadLetter => "dead_letter",
        DeliveryOutcome::EndpointGone => "endpoint_gone",
    }
}

/// Sleeps `d` unless the service stops first; false when it stopped.
async fn pause(core: &Core, d: Duration) -> bool {
    let mut stop = core.stop.clone();
    if *stop.borrow() {
        return false;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => !core.stopping(),
        _ = stop.changed() => false,
    }
}

/// One webhook endpoint: its alerts one at a time, in the order they were read, each
/// retried until terminal. Only this endpoint waits on its failures.
async fn endpoint_worker(core: Arc<Core>, sub_id: String, mut rx: mpsc::UnboundedReceiver<Job>) {
    let _span = tracing::info_span!("endpoint", service = "fanout", subscription = %sub_id);
    while let Some(job) = rx.recv().await {
        if core.stopping() {
            return;
        }
        deliver_webhook(&core, job).await;
    }
}

async fn deliver_webhook(core: &Arc<Core>, job: Job) {
    let settings = &core.config.fanout.webhook;
    let first_attempt_at = now_ms();
    let id = webhook::webhook_id(&job.work.alert.alert_id, &job.sub_id, job.step);
    let mut attempts: i32 = 0;
    loop {
        let Some(sub) = core.subs.get(&job.sub_id) else {
            // Deleted while queued: nobody is left to deliver to, nor an agency to name in
            // a receipt.
            tracing::warn!(subscription = %job.sub_id, "subscription deleted; alert dropped for it");
            job.ticket.release();
            return;
        };
        let (body, tlp, redacted) = job.work.body(core, &sub, job.form);
        let mut outcome = Outcome {
            outcome: DeliveryOutcome::DeadLetter,
            tlp,
            redacted,
            attempts,
            status: None,
            error: None,
            first_attempt_at,
            webhook_id: Some(id.clone()),
        };
        if sub.disabled_at.is_some() {
            outcome.outcome = DeliveryOutcome::EndpointGone;
            outcome.error = Some("endpoint disabled".into());
            core.finish(&job.work.alert, &sub, job.step, outcome, job.ticket);
            return;
        }
        let secret = sub.webhook_secret.as_deref().map(WebhookSecret::parse);
        let (Some(url), Some(Ok(secret))) = (sub.webhook_url.as_deref(), secret) else {
            outcome.error = Some("no valid webhook url and secret".into());
            core.finish(&job.work.alert, &sub, job.step, outcome, job.ticket);
            return;
        };
        let content_type = match sub.format {
            Format::Json => render::JSON_CONTENT_TYPE,
            Format::Cap => cap::CONTENT_TYPE,
        };
        attempts += 1;
        outcome.attempts = attempts;
        let (result, took) = webhook::attempt(
            &core.client,
            url,
            &secret,
            &id,
            content_type,
            &body,
            Duration::from_millis(settings.timeout_ms),
        )
        .await;
        core.metrics.attempt_seconds.observe(took.as_secs_f64());
        match result {
            Attempt::Delivered { status } => {
                outcome.outcome = DeliveryOutcome::Delivered;
                outcome.status = Some(status);
                core.finish(&job.work.alert, &sub, job.step, outcome, job.ticket);
                return;
            }
            Attempt::Gone => {
                core.disable(&sub, "the endpoint answered 410 Gone").await;
                outcome.outcome = DeliveryOutcome::EndpointGone;
                outcome.status = Some(410);
                core.finish(&job.work.alert, &sub, job.step, outcome, job.ticket);
                return;
            }
            Attempt::Failed { status, error } => {
                if attempts as u32 >= settings.max_attempts {
                    outcome.status = status;
                    outcome.error = Some(error);
                    core.finish(&job.work.alert, &sub, job.step, outcome, job.ticket);
                    return;
                }
                core.metrics
                    .retries
                    .with_label_values(&["webhook", &sub.agency])
                    .inc();
                let delay = webhook::backoff(
                    attempts as u32,
                    Duration::from_millis(settings.initial_backoff_ms),
                    Duration::from_millis(settings.max_backoff_ms),
                );
                tracing::debug!(attempts, error = %error, retry_in_ms = delay.as_millis() as u64, "delivery failed; retrying");
                if !pause(core, delay).await {
                    // Stopping: left unterminated, so the alert stays uncommitted and the
                    // next run re-delivers it with the same webhook-id.
                    return;
                }
            }
        }
    }
}

/// Decides one alert for every subscription and starts its deliveries and escalations.
fn dispatch(core: &Arc<Core>, subs: &[Arc<Subscription>], alert: Alert, ticket: &Arc<Ticket>) {
    let work = Work::new(Arc::new(alert));
    let alert = &work.alert;
    let min_level = core.config.fanout.escalation.min_level;
    for sub in subs {
        match policy::decide(sub, alert) {
            Decision::NotSubscribed => {}
            Decision::Withheld => {
                core.metrics
                    .withheld
                    .with_label_values(&[alert.tlp.as_str()])
                    .inc();
            }
            Decision::Deliver(form) => {
                core.deliver(&work, sub, form, 0, ticket);
                if !sub.escalation.is_empty()
                    && policy::escalates(alert, min_level)
                    && !core.acked(alert)
                {
                    schedule(core, &work, &sub.id, &sub.escalation, 0, ticket);
                }
            }
        }
    }
}

fn schedule(
    core: &Core,
    work: &Arc<Work>,
    owner: &str,
    steps: &[ewn_model::EscalationStep],
    step: usize,
    ticket: &Arc<Ticket>,
) {
    let Some(s) = steps.get(step) else {
        return;
    };
    // Counted from the alert's creation, so a restart re-arms the same deadlines.
    let due = work.alert.created_at + s.after_secs.saturating_mul(1000);
    let seq = core.escalation_seq.fetch_add(1, Ordering::Relaxed) as u64;
    ticket.hold();
    core.escalations
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(
            (due, seq),
            Escalation {
                work: work.clone(),
                owner: owner.to_string(),
                step,
                ticket: ticket.clone(),
            },
        );
}

/// Takes the escalation steps that are due: an alert still unacknowledged goes to the
/// step's targets (at their clearance), and the next step is armed.
async fn escalation_loop(core: Arc<Core>) {
    let tick = Duration::from_millis(core.config.fanout.escalation.tick_ms);
    while pause(&core, tick).await {
        let now = now_ms();
        let due: Vec<Escalation> = {
            let mut map = core.escalations.lock().unwrap_or_else(|p| p.into_inner());
            let later = map.split_off(&(now + 1, 0));
            std::mem::replace(&mut *map, later).into_values().collect()
        };
        for e in due {
            let alert = &e.work.alert;
            if core.acked(alert) {
                tracing::info!(alert_id = %alert.alert_id, "acknowledged; escalation stands down");
                e.ticket.release();
                continue;
            }
            let Some(owner) = core.subs.get(&e.owner) else {
                e.ticket.release();
                continue;
            };
            let Some(step) = owner.escalation.get(e.step) else {
                e.ticket.release();
                continue;
            };
            let n = (e.step + 1) as i32;
            core.metrics
                .escalations
                .with_label_values(&[&n.to_string()])
                .inc();
            tracing::warn!(alert_id = %alert.alert_id, step = n, subscription = %owner.id, "unacknowledged; escalating");
            for target in &step.targets {
                let Some(t) = core.subs.get(target) else {
                    tracing::warn!(target = %target, "escalation target is not a subscription");
                    continue;
                };
                // Named targets take the alert whatever their filters, never above their
                // clearance.
                match policy::decide_named(&t, alert) {
                    Decision::Deliver(form) => core.deliver(&e.work, &t, form, n, &e.ticket),
                    Decision::Withheld => core
                        .metrics
                        .withheld
                        .with_label_values(&[alert.tlp.as_str()])
                        .inc(),
                    Decision::NotSubscribed => {}
                }
            }
            schedule(
                &core,
                &e.work,
                &owner.id,
                &owner.escalation,
                e.step + 1,
                &e.ticket,
            );
            e.ticket.release();
        }
    }
}

/// Offsets in flight per partition, in order; the committable offset is the first one
/// still unsettled.
#[derive(Default)]
struct Tracker {
    partitions: HashMap<i32, BTreeMap<i64, Arc<Ticket>>>,
    committed: HashMap<i32, i64>,
}

impl Tracker {
    fn pending(&self) -> usize {
        self.partitions.values().map(BTreeMap::len).sum()
    }

    /// Drops settled offsets from the front of each partition and returns the offsets to
    /// commit (the next offset to read) that moved.
    fn advance(&mut self, topic: &str) -> Vec<CommitOffset> {
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

fn consume_loop(core: &Arc<Core>) -> Result<()> {
    let f = &core.config.fanout;
    let group = if f.group_id.is_empty() {
        format!("{}fanout", core.config.kafka.topic_prefix)
    } else {
        f.group_id.clone()
    };
    let alerts = core.topics.alerts();
    let consumer = GroupConsumer::new(
        &core.config.kafka,
        "fanout",
        &group,
        &TopicSubscription::Topics(vec![alerts.clone()]),
        Some(core.kafka_metrics.clone()),
    )?;
    let mut tracker = Tracker::default();
    let mut last_commit = Instant::now();
    while !core.stopping() {
        core.health.beat("consume");
        for change in consumer.take_changes() {
            if let Change::Revoked(parts) = change {
                for (_, p) in parts {
                    tracker.partitions.remove(&p);
                    tracker.committed.remove(&p);
                }
            }
        }
        if tracker.pending() >= f.max_pending_alerts {
            std::thread::sleep(Duration::from_millis(20));
        } else {
            let subs = core.subs.snapshot();
            let mut read = Vec::new();
            consumer.poll_batch(f.batch_max, Duration::from_millis(f.batch_wait_ms), |r| {
                let alert = r.value.map(Alert::from_avro);
                read.push((r.partition, r.offset, alert));
            })?;
            for (partition, offset, alert) in read {
                let ticket = Arc::new(Ticket::default());
                match alert {
                    Some(Ok(alert)) => {
                        core.metrics
                            .alerts
                            .with_label_values(&[alert.msg_type.as_str()])
                            .inc();
                        ticket.hold();
                        dispatch(core, &subs, alert, &ticket);
                        ticket.release();
                    }
                    _ => {
                        core.metrics
                            .undecodable
                            .with_label_values(&["alerts"])
                            .inc();
                        tracing::warn!(partition, offset, "undecodable alert record skipped");
                    }
                }
                tracker
                    .partitions
                    .entry(partition)
                    .or_default()
                    .insert(offset, ticket);
            }
        }
        core.metrics.pending_alerts.set(tracker.pending() as i64);
        if last_commit.elapsed() >= Duration::from_millis(200) {
            let offsets = tracker.advance(&alerts);
            consumer.commit(&offsets)?;
            last_commit = Instant::now();
        }
    }
    let offsets = tracker.advance(&alerts);
    consumer.commit(&offsets)?;
    Ok(())
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
    let mut behind: HashMap<(String, i32), i64> = reader
        .high_watermarks(timeout)?
        .into_iter()
        .filter(|(_, _, high)| *high > 0)
        .map(|(topic, p, high)| ((topic, p), high))
        .collect();
    let started = Instant::now();
    while !core.stopping() {
        core.health.beat("tail");
        let got = reader.poll(Duration::from_millis(50), |r| {
            if r.topic == subs_topic {
                if let Err(why) = crate::sealed::apply(&core.subs, r.key, r.value, &core.seal) {
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
                    Some(Ok(a)) => core.note_ack(&a.alert_id, a.acked_at),
                    _ => core.metrics.undecodable.with_label_values(&["acks"]).inc(),
                }
            } else {
                match r.value.map(DeliveryReceipt::from_avro) {
                    Some(Ok(d)) => {
                        core.receipts
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert((d.alert_id, d.subscription_id, d.escalation_step));
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
        if ready.is_some() {
            if let Some((tp, offset)) = got
                && behind.get(&tp).is_some_and(|&high| offset + 1 >= high)
            {
                behind.remove(&tp);
            }
            if behind.is_empty() {
                if let Some(tx) = ready.take() {
                    let _ = tx.send(());
                }
            } else if started.elapsed() > timeout * 6 {
                return Err(Error::Unconfirmed(format!(
                    "could not read {} partitions of subscriptions, acks and deliveries to their end",
                    behind.len()
                )));
            }
        }
    }
    Ok(())
}

/// Feeds the stream hub from every partition of `<prefix>alerts`.
fn hub_loop(core: &Arc<Core>) -> Result<()> {
    let alerts = core.topics.alerts();
    let reader = AssignedReader::new(
        &core.config.kafka,
        "fanout-stream",
        "alerts",
        |name| name == alerts,
        StartAt::Last(core.config.fanout.stream.buffer_alerts as i64),
    )?;
    while !core.stopping() {
        core.health.beat("stream");
        reader.poll(Duration::from_millis(100), |r| {
            match r.value.map(Alert::from_avro) {
                Some(Ok(a)) => core.hub.push(r.partition, r.offset, a),
                _ => core
                    .metrics
                    .undecodable
                    .with_label_values(&["alerts"])
                    .inc(),
            }
        })?;
    }
    Ok(())
}

/// A started fan-out: where its API listens, and the task to await.
pub struct Running {
    pub api: SocketAddr,
    pub task: tokio::task::JoinHandle<Result<()>>,
}

/// Starts the fan-out: creates its topics (idempotent), reads the subscription set,
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
    ensure_topics(
        &config.kafka,
        &topics.all(&config.kafka.states, config.kafka.partitions),
    )
    .await?;
    let mut tokens = match &config.fanout.tokens_file {
        Some(path) => Tokens::load(path)?,
        None => Tokens::default(),
    };
    tokens.extend(config.tokens.clone());
    let metrics = FanoutMetrics::register(registry)
        .map_err(|e| Error::Config(vec![format!("metrics: {e}")]))?;
    let kafka_metrics = KafkaMetrics::register(registry)
        .map_err(|e| Error::Config(vec![format!("metrics: {e}")]))?;
    let callbacks = Arc::new(Callbacks::default());
    let producer = RecordProducer::new(
        &config.kafka,
        "fanout",
        callbacks.clone(),
        Some(kafka_metrics.clone()),
    )?;
    let seal = crate::sealed::SealKey::new(&match (&config.key, &config.fanout.key_file) {
        (Some(key), _) => key.clone(),
        (None, Some(path)) => crate::keys::FanoutKey::load(path)?,
        (None, None) => return Err(Error::Config(vec!["fanout.key_file: required".into()])),
    });
    let client = webhook::client(&config.fanout.webhook)
        .map_err(|e| Error::Config(vec![format!("fanout.webhook: http client: {e}")]))?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let core = Arc::new(Core {
        topics,
        subs: SubscriptionSet::default(),
        hub: Hub::new(config.fanout.stream.buffer_alerts),
        metrics,
        tokens,
        sessions: Sessions::new(Duration::from_secs(config.fanout.session_ttl_secs)),
        producer,
        callbacks,
        client,
        seal,
        endpoints: Mutex::new(HashMap::new()),
        escalations: Mutex::new(BTreeMap::new()),
        escalation_seq: AtomicUsize::new(0),
        acks: Mutex::new(HashMap::new()),
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

    // The subscription set (and the receipts and acks) must be read before any alert is.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let tail = {
        let core = core.clone();
        tokio::task::spawn_blocking(move || {
            let _span = tracing::info_span!("stage", service = "fanout", stage = "tail").entered();
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

    let (api, server) = ewn_ops::http::serve(
        core.config.fanout.listen,
        crate::api::router(core.clone()),
        stopped(core.stop.clone()),
    )
    .await
    .map_err(|e| {
        Error::Config(vec![format!(
            "fanout.listen: {}: {e}",
            core.config.fanout.listen
        )])
    })?;
    tracing::info!(api = %api, subscriptions = core.subs.len(), "fan-out started");

    let task = tokio::spawn(async move {
        let mut tasks = vec![tail];
        for (name, stage) in [
            ("consume", consume_loop as fn(&Arc<Core>) -> Result<()>),
            ("stream", hub_loop),
        ] {
            let core = core.clone();
            tasks.push(tokio::task::spawn_blocking(move || {
                let _span =
                    tracing::info_span!("stage", service = "fanout", stage = name).entered();
                ewn_ops::supervise::supervise(
                    name,
                    &core.shutdown,
                    || stage(&core),
                    Error::is_config,
                )
            }));
        }
        let escalation = tokio::spawn(escalation_loop(core.clone()));
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
        let _ = server.await;
        // Dropping the queues ends the endpoint tasks, which hold the core (and with it the
        // producer's connection) alive.
        core.endpoints
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        // Receipts already queued get their confirmation before the producer goes.
        let _ = core.producer.flush(Duration::from_secs(5));
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
            _ => core.put_subscription(record).await?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_receipt_memory_forgets_the_oldest_first() {
        let key = |n: i32| ("a".to_string(), "s".to_string(), n);
        let mut seen = Seen::new(3);
        for n in 0..5 {
            seen.insert(key(n));
            seen.insert(key(n));
        }
        assert!(!seen.contains(&key(0)) && !seen.contains(&key(1)));
        assert!((2..5).all(|n| seen.contains(&key(n))));
        assert_eq!(seen.order.len(), 3);
    }
}
