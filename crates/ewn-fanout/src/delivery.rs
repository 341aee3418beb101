//! Delivering one alert message to one recipient: rendering (once per shape), the
//! decision made again at every attempt, webhook attempts on the live path and on the
//! retry path, and the receipt that makes a delivery terminal.
//!
//! A webhook delivery gets one attempt on the live path. If it fails or hangs it is
//! parked on `<prefix>retries` and the alert's hold is released, so the alert's offset
//! commits and no other desk waits on this endpoint; the retry path (a consumer group
//! on `<prefix>retries`) retries it with backoff, in order per endpoint.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ewn_model::{
    Alert, AvroRecord, Channel, DeliveryOutcome, DeliveryReceipt, Format, Subscription, Tlp,
};
use tokio::sync::mpsc;

use crate::policy::{Decision, Form};
use crate::retry;
use crate::service::{Core, now_ms};
use crate::webhook::{self, Attempt, WebhookSecret};
use crate::{cap, policy, render};

/// Outstanding work of one alert record: deliveries not yet terminal and escalations not
/// yet settled. Its offset may be committed once it reaches zero.
#[derive(Default)]
pub(crate) struct Ticket {
    remaining: AtomicUsize,
}

impl Ticket {
    pub(crate) fn hold(&self) {
        self.remaining.fetch_add(1, Ordering::AcqRel);
    }

    pub(crate) fn release(&self) {
        self.remaining.fetch_sub(1, Ordering::AcqRel);
    }

    pub(crate) fn settled(&self) -> bool {
        self.remaining.load(Ordering::Acquire) == 0
    }
}

/// What a body depends on besides the message: its form, format and marking, the
/// recipient for a redacted form (its ids are the recipient's own), and the episode's
/// marking (which only grows, so its sizes identify it), and the languages of a JSON body.
type BodyShape = (Form, Format, Tlp, Option<String>, [usize; 6], Vec<String>);

/// A rendered body and the id it shows.
type Rendered = (Arc<[u8]>, String);

/// A rendered body and what a receipt records of it.
pub(crate) struct Body {
    pub bytes: Arc<[u8]>,
    /// The marking the recipient received.
    pub tlp: Tlp,
    pub redacted: bool,
    /// The id the recipient knows the alert by (its own for a redacted form).
    pub shown_id: String,
}

/// An alert message being delivered, with its rendered bodies shared by all recipients
/// of the same shape.
pub(crate) struct Work {
    /// The message as read.
    pub alert: Arc<Alert>,
    /// Its id, shared by the keys of its deliveries.
    pub alert_id: Arc<str>,
    /// Its episode (the id of the ALERT it belongs to).
    pub episode: Arc<str>,
    /// The message as policy decides on it: carrying its episode's marking up to it,
    /// which is fixed once the index has seen it (`index.rs`), so it is computed once
    /// for every recipient and attempt. (What is decided again at each attempt is the
    /// subscription.)
    pub view: Alert,
    bodies: Mutex<HashMap<BodyShape, Rendered>>,
}

impl Work {
    pub(crate) fn new(alert: Arc<Alert>, known: crate::index::Known) -> Arc<Work> {
        Arc::new(Work {
            alert_id: alert.alert_id.as_str().into(),
            alert,
            episode: known.episode_id,
            view: known.view,
            bodies: Mutex::new(HashMap::new()),
        })
    }

    /// The body `sub` receives under `form`, `view` being the message with its episode's
    /// marking as it stands now; rendered once per distinct shape.
    fn body(&self, core: &Core, sub: &Subscription, form: Form, view: &Alert) -> Body {
        let marking = match form {
            Form::Full => view.tlp,
            Form::Redacted => policy::redacted_tlp(sub),
        };
        let redacted = form == Form::Redacted;
        let sizes = [
            view.tlp as usize,
            view.level as usize,
            view.named_agencies.len(),
            view.categories.len(),
            view.states.len(),
            view.areas.len(),
        ];
        // A JSON body carries the texts of the subscription's languages; CAP every
        // configured language's, whatever the subscription asks.
        let languages = match sub.format {
            Format::Json => sub.languages.clone(),
            Format::Cap => Vec::new(),
        };
        let key = (
            form,
            sub.format,
            marking,
            redacted.then(|| sub.id.clone()),
            sizes,
            languages,
        );
        let mut bodies = self.bodies.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((b, id)) = bodies.get(&key) {
            return Body {
                bytes: b.clone(),
                tlp: marking,
                redacted,
                shown_id: id.clone(),
            };
        }
        let (shaped, redacted) = policy::shape(sub, view, form, &core.ids);
        // CAP references carry the referenced alert's `sent`: looked up by the original id
        // (a redacted form's references are the recipient's own ids).
        let originals: HashMap<&str, &str> = shaped
            .references
            .iter()
            .map(String::as_str)
            .zip(view.references.iter().map(String::as_str))
            .collect();
        let bytes: Arc<[u8]> = match sub.format {
            Format::Json => {
                render::webhook_json(&shaped, redacted, &core.catalogue, &sub.languages).into()
            }
            Format::Cap => cap::render(
                &shaped,
                &core.config.fanout.sender,
                &|id| core.sent_of(originals.get(id).copied().unwrap_or(id)),
                &core.catalogue,
            )
            .into_bytes()
            .into(),
        };
        bodies.insert(key, (bytes.clone(), shaped.alert_id.clone()));
        Body {
            bytes,
            tlp: marking,
            redacted,
            shown_id: shaped.alert_id,
        }
    }
}

/// One webhook delivery: the form is decided at each attempt, not here.
pub(crate) struct Job {
    pub work: Arc<Work>,
    /// The alert, the subscription and the escalation step.
    pub key: DeliveryKey,
    pub ticket: Arc<Ticket>,
}

/// A delivery a receipt records: (alert id, subscription id, escalation step). Its ids
/// are shared: a delivery's key is made once and cloned by reference count into the
/// in-flight set, its job and its receipt.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct DeliveryKey {
    pub alert: Arc<str>,
    pub sub: Arc<str>,
    pub step: i32,
}

impl DeliveryKey {
    pub(crate) fn new(alert: &str, sub: &str, step: i32) -> DeliveryKey {
        DeliveryKey {
            alert: alert.into(),
            sub: sub.into(),
            step,
        }
    }
}

/// A bounded set: the oldest members are forgotten first (as the start-up read of
/// `<prefix>deliveries` forgets what lies beyond its lookback).
pub(crate) struct Seen<K: std::hash::Hash + Eq + Clone = DeliveryKey> {
    set: HashSet<K>,
    order: std::collections::VecDeque<K>,
    capacity: usize,
}

impl<K: std::hash::Hash + Eq + Clone> Seen<K> {
    pub(crate) fn new(capacity: usize) -> Seen<K> {
        Seen {
            set: HashSet::new(),
            order: std::collections::VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// True when `key` was not a member.
    pub(crate) fn insert(&mut self, key: K) -> bool {
        if self.set.insert(key.clone()) {
            self.order.push_back(key);
            while self.order.len() > self.capacity {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
            return true;
        }
        false
    }

    pub(crate) fn contains(&self, key: &K) -> bool {
        self.set.contains(key)
    }

    pub(crate) fn len(&self) -> usize {
        self.set.len()
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }
}

pub(crate) struct Outcome {
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
    let [delivered, dead_letter, endpoint_gone] = crate::metrics::OUTCOMES;
    match o {
        DeliveryOutcome::Delivered => delivered,
        DeliveryOutcome::DeadLetter => dead_letter,
        DeliveryOutcome::EndpointGone => endpoint_gone,
    }
}

/// Sleeps `d` unless the service stops first; false when it stopped.
pub(crate) async fn pause(core: &Core, d: Duration) -> bool {
    let mut stop = core.stop.clone();
    if *stop.borrow() {
        return false;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => !core.stopping(),
        _ = stop.changed() => false,
    }
}

/// A receipt to write (again).
pub(crate) struct PendingReceipt {
    /// Its delivery; the alert id is the record's key.
    key: DeliveryKey,
    value: Arc<[u8]>,
    ticket: Arc<Ticket>,
    /// Its entry in `Core::failing_receipts` once it has failed.
    failing: Option<u64>,
}

/// How long receipts may keep failing before `/healthz` says so.
const RECEIPT_HEALTH_GRACE: Duration = Duration::from_secs(10);

/// Writes again the receipts the broker did not confirm, every half second; beats the
/// `receipts` health part unless one has been failing longer than `RECEIPT_HEALTH_GRACE`.
pub(crate) async fn receipt_loop(core: Arc<Core>) {
    loop {
        let failed: Vec<PendingReceipt> = core
            .failed_receipts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
            .collect();
        // Failing until the broker confirms them, queued or in flight again: a retry in
        // flight is not a success.
        let (failing, oldest) = {
            let f = core
                .failing_receipts
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            (f.len(), f.values().min().copied())
        };
        core.metrics.receipts_failing.set(failing as i64);
        if oldest.is_none_or(|t| t.elapsed() < RECEIPT_HEALTH_GRACE) {
            core.health.beat("receipts");
        } else {
            tracing::error!(
                receipts = failing,
                "receipts cannot be written; deliveries stay uncommitted"
            );
        }
        core.observe_memory();
        core.renew_producer();
        for r in failed {
            core.write_receipt(r);
        }
        if !pause(&core, Duration::from_millis(500)).await {
            return;
        }
    }
}

/// One webhook endpoint on the live path: its alerts one at a time, in the order they
/// were read. Each gets one attempt here; a delivery that fails or hangs (past
/// `fanout.webhook.timeout_ms`) is parked on `<prefix>retries` and retried from there, so
/// its alert's offset commits and nothing queues behind it. While this instance has
/// parked deliveries for the endpoint that have no receipt yet, later ones are parked
/// behind them without an attempt: the endpoint gets them in order once it answers.
async fn endpoint_worker(core: Arc<Core>, sub_id: Arc<str>, mut rx: mpsc::UnboundedReceiver<Job>) {
    let _span = tracing::info_span!("endpoint", service = "fanout", subscription = %sub_id);
    while let Some(job) = rx.recv().await {
        if core.stopping() {
            return;
        }
        let first_attempt_at = now_ms();
        let key = job.key.clone();
        if core.parked_here(&sub_id) {
            park(&core, job, 0, first_attempt_at, None).await;
        } else {
            match attempt_once(&core, &job.work, &key.sub, key.step, 0, first_attempt_at).await {
                // With a receipt, the in-flight mark goes when the broker confirms it.
                Attempted::Terminal(End::Receipt(sub, outcome)) => {
                    core.finish(key, &job.work.alert, &sub, outcome, job.ticket);
                    continue;
                }
                Attempted::Terminal(End::Dropped) => job.ticket.release(),
                Attempted::Failed { outcome, .. } => {
                    let error = outcome.error.clone();
                    park(&core, job, outcome.attempts, first_attempt_at, error).await;
                }
            }
        }
        core.inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
    }
}

/// How one attempt ended.
enum Attempted {
    /// Nothing more to do: delivered, gone, refused, or no longer for this recipient.
    Terminal(End),
    /// Failed; may be tried again. `outcome` is the dead letter it becomes at the last
    /// attempt.
    Failed {
        outcome: Outcome,
        sub: Arc<Subscription>,
    },
}

/// A terminal end of a delivery.
enum End {
    /// With a receipt.
    Receipt(Arc<Subscription>, Outcome),
    /// Without one: the subscription was deleted, or the recipient is no longer selected
    /// or cleared (counted as withheld); nothing was sent.
    Dropped,
}

impl End {
    pub(crate) fn finish(
        self,
        core: &Arc<Core>,
        key: DeliveryKey,
        alert: &Alert,
        ticket: Arc<Ticket>,
    ) {
        match self {
            End::Receipt(sub, outcome) => core.finish(key, alert, &sub, outcome, ticket),
            End::Dropped => ticket.release(),
        }
    }
}

/// One attempt of a webhook delivery, decided afresh: clearance at push time, on the
/// subscription as it stands and the episode's marking as it stands.
async fn attempt_once(
    core: &Arc<Core>,
    work: &Work,
    sub_id: &str,
    step: i32,
    attempts_before: i32,
    first_attempt_at: i64,
) -> Attempted {
    let settings = &core.config.fanout.webhook;
    let Some(sub) = core.subs.get(sub_id) else {
        // Deleted while queued: nobody is left to deliver to, nor an agency to name in a
        // receipt.
        tracing::warn!(subscription = %sub_id, "subscription deleted; alert dropped for it");
        return Attempted::Terminal(End::Dropped);
    };
    let view = &work.view;
    if sub.disabled_at.is_some() {
        // Nothing was sent: the receipt says so, marked CLEAR.
        let outcome = Outcome {
            outcome: DeliveryOutcome::EndpointGone,
            tlp: Tlp::Clear,
            redacted: false,
            attempts: attempts_before,
            status: None,
            error: Some("endpoint disabled".into()),
            first_attempt_at,
            webhook_id: None,
        };
        return Attempted::Terminal(End::Receipt(sub, outcome));
    }
    let decision = if step == 0 {
        policy::decide(&sub, view)
    } else {
        policy::decide_named(&sub, view)
    };
    let form = match decision {
        Decision::Deliver(form) => form,
        Decision::Withheld | Decision::NotSubscribed => {
            if decision == Decision::Withheld {
                core.metrics
                    .withheld
                    .with_label_values(&[view.tlp.as_str()])
                    .inc();
            }
            tracing::info!(subscription = %sub_id, attempts_before, "no longer cleared or subscribed; not delivered");
            return Attempted::Terminal(End::Dropped);
        }
    };
    let body = work.body(core, &sub, form, view);
    let id = webhook::webhook_id(&body.shown_id, sub_id, step);
    let mut outcome = Outcome {
        outcome: DeliveryOutcome::DeadLetter,
        tlp: body.tlp,
        redacted: body.redacted,
        attempts: attempts_before,
        status: None,
        error: None,
        first_attempt_at,
        webhook_id: Some(id.clone()),
    };
    let secret = sub.webhook_secret.as_deref().map(WebhookSecret::parse);
    let (Some(url), Some(Ok(secret))) = (sub.webhook_url.as_deref(), secret) else {
        outcome.error = Some("no valid webhook url and secret".into());
        return Attempted::Terminal(End::Receipt(sub, outcome));
    };
    let content_type = match sub.format {
        Format::Json => render::JSON_CONTENT_TYPE,
        Format::Cap => cap::CONTENT_TYPE,
    };
    outcome.attempts = attempts_before + 1;
    if attempts_before > 0 {
        core.metrics
            .retries
            .with_label_values(&["webhook", &sub.agency])
            .inc();
    }
    let (result, took) = webhook::attempt(
        &core.client,
        url,
        &secret,
        &id,
        content_type,
        &body.bytes,
        Duration::from_millis(settings.timeout_ms),
    )
    .await;
    core.metrics.attempt_seconds.observe(took.as_secs_f64());
    match result {
        Attempt::Delivered { status } => {
            outcome.outcome = DeliveryOutcome::Delivered;
            outcome.status = Some(status);
            Attempted::Terminal(End::Receipt(sub, outcome))
        }
        Attempt::Gone => {
            core.disable(&sub, "the endpoint answered 410 Gone").await;
            outcome.outcome = DeliveryOutcome::EndpointGone;
            outcome.status = Some(410);
            Attempted::Terminal(End::Receipt(sub, outcome))
        }
        Attempt::Failed { status, error } => {
            outcome.status = status;
            outcome.error = Some(error);
            Attempted::Failed { outcome, sub }
        }
    }
}

/// Parks a delivery on `<prefix>retries` (keyed by subscription, so one endpoint's
/// parked deliveries stay in order on one partition), then releases its hold on the
/// alert. Until the broker confirms it the hold stays: a crash re-delivers from the alert.
async fn park(
    core: &Arc<Core>,
    job: Job,
    attempts: i32,
    first_attempt_at: i64,
    last_error: Option<String>,
) {
    let Some(value) = retry::seal(core, &job, attempts, first_attempt_at, last_error) else {
        job.ticket.release();
        return;
    };
    let mut wait = Duration::from_millis(200);
    while let Err(e) = core
        .produce_confirmed(&core.topic_names.retries, &job.key.sub, Some(&value))
        .await
    {
        tracing::warn!(error = %e, subscription = %job.key.sub, "cannot park a delivery yet; retrying");
        if !pause(core, wait).await {
            return;
        }
        wait = (wait * 2).min(Duration::from_secs(5));
    }
    let agency = core
        .subs
        .get(&job.key.sub)
        .map(|s| s.agency.clone())
        .unwrap_or_default();
    core.metrics.parked.with_label_values(&[&agency]).inc();
    core.parked
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(job.key, Instant::now());
    job.ticket.release();
}

/// One endpoint on the retry path: its parked deliveries one at a time, in the order
/// they were parked, each retried with backoff until terminal (delivered, gone, or a dead
/// letter after `fanout.webhook.max_attempts`).
pub(crate) async fn retry_worker(
    core: Arc<Core>,
    sub_id: Arc<str>,
    mut rx: mpsc::UnboundedReceiver<retry::Parked>,
) {
    let _span = tracing::info_span!("retry", service = "fanout", subscription = %sub_id);
    let settings = &core.config.fanout.webhook;
    while let Some(p) = rx.recv().await {
        let key = DeliveryKey {
            alert: p.work.alert_id.clone(),
            sub: sub_id.clone(),
            step: p.step,
        };
        if core.already_delivered(&key) {
            core.metrics.skipped_replays.inc();
            p.ticket.release();
            continue;
        }
        let mut attempts = p.attempts;
        loop {
            if core.stopping() {
                return;
            }
            let wait = webhook::backoff(
                attempts.max(1) as u32,
                Duration::from_millis(settings.initial_backoff_ms),
                Duration::from_millis(settings.max_backoff_ms),
            );
            // The first retry of a delivery parked here waits out its backoff from when
            // it was parked; later ones their own.
            let due = if attempts == p.attempts {
                Duration::from_millis(
                    (p.parked_at + wait.as_millis() as i64 - now_ms()).max(0) as u64
                )
            } else {
                wait
            };
            if !pause(&core, due).await {
                return;
            }
            match attempt_once(
                &core,
                &p.work,
                &sub_id,
                p.step,
                attempts,
                p.first_attempt_at,
            )
            .await
            {
                Attempted::Terminal(end) => {
                    end.finish(&core, key, &p.work.alert, p.ticket);
                    break;
                }
                Attempted::Failed { outcome, sub } => {
                    attempts = outcome.attempts;
                    if attempts as u32 >= settings.max_attempts {
                        core.finish(key, &p.work.alert, &sub, outcome, p.ticket);
                        break;
                    }
                    tracing::debug!(attempts, error = ?outcome.error, "delivery failed; retrying");
                }
            }
        }
    }
}

impl Core {
    /// Sets the entries of each in-memory set (`metrics::MEMORY_SETS`) and, once, their
    /// bounds.
    pub(crate) fn observe_memory(&self) {
        fn len<T>(m: &Mutex<T>, f: impl FnOnce(&T) -> usize) -> usize {
            f(&m.lock().unwrap_or_else(|p| p.into_inner()))
        }
        fn len2(m: &Mutex<Seen>) -> (usize, usize) {
            let s = m.lock().unwrap_or_else(|p| p.into_inner());
            (s.len(), s.capacity())
        }
        let f = &self.config.fanout;
        let per_pending = f.max_pending_alerts.saturating_mul(f.max_subscriptions);
        let (receipts, receipts_bound) = len2(&self.receipts);
        let sets = [
            ("receipts_seen", receipts, receipts_bound),
            (
                "escalated",
                len(&self.escalated, Seen::len),
                f.index.max_messages,
            ),
            (
                "escalation_chains",
                self.escalation.chains(),
                f.index.max_messages,
            ),
            ("inflight", len(&self.inflight, HashSet::len), per_pending),
            ("parked", len(&self.parked, HashMap::len), per_pending),
            (
                "endpoint_workers",
                len(&self.endpoints, HashMap::len),
                f.max_subscriptions,
            ),
            (
                "revoked_sessions",
                self.sessions.revoked(),
                f.max_revoked_sessions,
            ),
        ];
        for (set, entries, bound) in sets {
            let m = &self.metrics;
            m.memory_entries
                .with_label_values(&[set])
                .set(entries as i64);
            m.memory_bound
                .with_label_values(&[set])
                .set(bound.min(i64::MAX as usize) as i64);
        }
    }

    /// Has this instance parked deliveries for `sub_id` that have no receipt yet? Later
    /// ones then queue behind them on the retry path. A parked delivery that never gets
    /// a receipt (its recipient was no longer cleared, say) stops counting after the
    /// longest the retry path can take with it.
    pub(crate) fn parked_here(&self, sub_id: &str) -> bool {
        let w = &self.config.fanout.webhook;
        let horizon = Duration::from_millis(
            (w.timeout_ms + w.max_backoff_ms).saturating_mul(u64::from(w.max_attempts)),
        );
        let receipts = self.receipts.lock().unwrap_or_else(|p| p.into_inner());
        let mut parked = self.parked.lock().unwrap_or_else(|p| p.into_inner());
        parked.retain(|k, at| !receipts.contains(k) && at.elapsed() < horizon);
        parked.keys().any(|k| &*k.sub == sub_id)
    }

    pub(crate) fn already_delivered(&self, key: &DeliveryKey) -> bool {
        self.receipts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(key)
    }

    /// Starts the delivery of `work` to `sub`, holding `ticket` until it is terminal.
    pub(crate) fn deliver(
        self: &Arc<Self>,
        work: &Arc<Work>,
        sub: &Subscription,
        form: Form,
        step: i32,
        ticket: &Arc<Ticket>,
    ) {
        let key = DeliveryKey {
            alert: work.alert_id.clone(),
            sub: sub.id.as_str().into(),
            step,
        };
        if self.already_delivered(&key) {
            self.metrics.skipped_replays.inc();
            return;
        }
        // The same delivery already under way (an escalation target named by two desks,
        // say): one is enough, under one webhook-id.
        if !self
            .inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone())
        {
            return;
        }
        ticket.hold();
        match sub.channel {
            Channel::Webhook => {
                let mut endpoints = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
                let tx = match endpoints.get(&key.sub) {
                    Some(tx) => tx,
                    None => {
                        let (tx, rx) = mpsc::unbounded_channel();
                        self.runtime
                            .spawn(endpoint_worker(self.clone(), key.sub.clone(), rx));
                        endpoints.entry(key.sub.clone()).or_insert(tx)
                    }
                };
                let job = Job {
                    work: work.clone(),
                    key,
                    ticket: ticket.clone(),
                };
                if let Err(mpsc::error::SendError(job)) = tx.send(job) {
                    // The worker is gone (shutting down): leave the alert uncommitted.
                    tracing::debug!(subscription = %job.key.sub, "endpoint worker gone");
                }
            }
            Channel::Stream | Channel::Console => {
                // The stream keeps the alert for `Last-Event-ID` resume: "delivered" means
                // made available to the subscription's live stream and console.
                let marking = match form {
                    Form::Full => work.view.tlp,
                    Form::Redacted => policy::redacted_tlp(sub),
                };
                let now = now_ms();
                self.finish(
                    key,
                    &work.alert,
                    sub,
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
        key: DeliveryKey,
        alert: &Alert,
        sub: &Subscription,
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
            escalation_step: key.step,
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
            step = key.step,
            "delivery terminal"
        );
        let value = match receipt.to_avro() {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode a receipt; the alert stays uncommitted");
                return;
            }
        };
        self.write_receipt(PendingReceipt {
            value: value.into(),
            key,
            ticket,
            failing: None,
        });
    }

    /// Produces a receipt; its delivery's hold is released once the broker confirms it.
    /// One the broker refuses (or cannot take) goes to the receipt retry queue, retried
    /// until written: the alert stays uncommitted meanwhile, and `/healthz` fails while a
    /// receipt has been failing for longer than `RECEIPT_HEALTH_GRACE`.
    pub(crate) fn write_receipt(self: &Arc<Self>, r: PendingReceipt) {
        let core = self.clone();
        // The callback owns the receipt: it hears the broker's answer, or the refusal at
        // once, and either way the receipt is either marked written or queued again.
        let producer = self.producer();
        let topic = &self.topic_names.deliveries;
        let (key, value) = (r.key.alert.clone(), r.value.clone());
        producer.try_send_or_call(topic, Some(key.as_bytes()), Some(&value), move |outcome| {
            match outcome {
                Ok(_) => {
                    if let Some(id) = r.failing {
                        core.failing_receipts
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(&id);
                    }
                    core.inflight
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&r.key);
                    core.receipts
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(r.key);
                    r.ticket.release();
                }
                Err(e) => {
                    tracing::error!(error = %e, "receipt not written; will retry");
                    core.retry_receipt(r);
                }
            }
        });
    }

    /// Queues a receipt to write again; from its first failure it counts as failing
    /// until the broker confirms it.
    fn retry_receipt(&self, mut r: PendingReceipt) {
        if r.failing.is_none() {
            let id = self.receipt_failures.fetch_add(1, Ordering::Relaxed) as u64;
            self.failing_receipts
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id, Instant::now());
            r.failing = Some(id);
        }
        self.failed_receipts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(r);
    }

    /// Stops deliveries to a subscription for good (410 Gone), on every instance.
    pub(crate) async fn disable(&self, sub: &Subscription, reason: &str) {
        let mut s = sub.clone();
        s.disabled_at = Some(now_ms());
        s.disabled_reason = Some(reason.to_string());
        s.updated_at = now_ms();
        tracing::warn!(subscription = %sub.id, reason, "endpoint disabled");
        if let Err(e) = self.put_subscription(s.clone()).await {
            tracing::error!(error = %e, subscription = %sub.id, "cannot record the disabled subscription; disabled here only");
            // A held subscription: never refused as one too many.
            let _ = self.subs.apply(&s.id.clone(), Some(s));
        } else {
            self.audit_subscription("system", Some(sub), Some(&s));
        }
    }
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
