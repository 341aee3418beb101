//! The forwarder: sends what the spool holds to the broker and lets go of each record only
//! once the broker confirmed it.
//!
//! **Order per post.** A post's records are sent in acceptance order (the spool's `seq`),
//! through one idempotent producer, so within a partition the topic holds them in that
//! order even when librdkafka retries. When a record fails (the broker unreachable past
//! `kafka.message_timeout_ms`), sending stops, every record in flight is let to settle, the
//! producer renews itself if the failure calls for it (a new producer id: Tansu 0.6.0
//! serves no producer whose records timed out, see `ewn_kafka::producer`), and after a backoff
//! (`gateway.forward.initial_backoff_ms`, doubling up to `max_backoff_ms`) every post starts
//! again from its oldest unconfirmed record. A record the broker did write but whose
//! confirmation was lost is sent again as the same signed bytes, which the processor's
//! replay guard rejects as `duplicate`: at least once, never two different versions.
//!
//! **Drain order.** Posts take turns (round robin, the starting post rotating each pass);
//! in its turn a post sends at most `quantum` records, oldest first, and never has more
//! than `window_per_post` in flight. A post that comes back with hours of backlog thus gets
//! its share of the link, not all of it: a report from any other post waits at most one
//! round of turns, not behind the backlog. Within one post the order is acceptance order,
//! which the order-per-post guarantee requires (a post's new report waits behind that
//! post's own older ones).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::{Duration, Instant};

use ewn_kafka::{ConfirmingProducer, KafkaMetrics, KafkaSettings, Outcome, Then};
use ewn_ops::http::Health;

use crate::error::Result;
use crate::intake::Clock;
use crate::metrics::GatewayMetrics;
use crate::settings::ForwardSettings;
use crate::spool::{SharedDepth, Spool, count_out};

/// What wakes the forwarder: the broker's answers, and new records in the spool.
pub enum Event {
    Wake,
    Answer {
        seq: i64,
        post: Arc<str>,
        bytes: u64,
        accepted_ms: i64,
        outcome: Outcome,
    },
}

/// Tells the forwarder the spool has something new.
#[derive(Clone)]
pub struct Wake(Sender<Event>);

impl Wake {
    pub fn wake(&self) {
        let _ = self.0.send(Event::Wake);
    }
}

/// The forwarder's inbox and the handle that wakes it.
pub fn channel_pair() -> (Wake, Sender<Event>, Receiver<Event>) {
    let (tx, rx) = channel();
    (Wake(tx.clone()), tx, rx)
}

#[derive(Default)]
struct Cursor {
    /// The last seq sent.
    after: i64,
    in_flight: usize,
}

pub struct Forwarder {
    pub spool: Spool,
    pub depth: SharedDepth,
    pub kafka: KafkaSettings,
    pub settings: ForwardSettings,
    pub metrics: GatewayMetrics,
    pub kafka_metrics: Option<KafkaMetrics>,
    pub clock: Clock,
    pub health: Arc<Health>,
    pub shutdown: Arc<AtomicBool>,
    /// Posts whose series exist from the start (the oldest-age gauge is set to 0 for them
    /// when they have nothing waiting).
    pub posts: BTreeSet<String>,
    /// Each post's oldest waiting report's acceptance time, as of the last tick (for
    /// heartbeats).
    pub oldest: Arc<std::sync::Mutex<std::collections::BTreeMap<String, i64>>>,
    /// `gateway.spool.remember_secs` and `remember_max_ids`.
    pub remember: (u64, u64),
    /// When accepted ids were last forgotten (gateway clock).
    pub last_forget: Option<i64>,
}

impl Forwarder {
    fn producer(&self) -> Result<ConfirmingProducer> {
        Ok(ConfirmingProducer::new(
            &self.kafka,
            "gateway",
            (),
            self.kafka_metrics.clone(),
        )?)
    }

    /// Runs until `shutdown`; then waits for the answers to what is in flight (at most
    /// `message_timeout_ms`).
    pub fn run(mut self, tx: Sender<Event>, events: Receiver<Event>) -> Result<()> {
        let _span = tracing::info_span!("gateway", stage = "forward").entered();
        let producer = self.producer()?;
        let mut cursors: BTreeMap<Arc<str>, Cursor> = BTreeMap::new();
        let mut in_flight = 0usize;
        let mut failing = false;
        let mut backoff = Duration::from_millis(self.settings.initial_backoff_ms);
        let mut turn = 0usize;
        let mut idle = false;
        let mut last_tick: Option<Instant> = None;
        let mut stopping_since: Option<Instant> = None;
        loop {
            self.health.beat("forward");
            // 1. The broker's answers (waiting a little when there is nothing to send).
            let mut answers = Vec::new();
            if idle {
                match events.recv_timeout(Duration::from_millis(100)) {
                    Ok(e) => answers.push(e),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => return Ok(()),
                }
            }
            while let Ok(e) = events.try_recv() {
                answers.push(e);
            }
            let mut confirmed = Vec::new();
            for e in answers {
                let Event::Answer {
                    seq,
                    post,
                    bytes,
                    accepted_ms,
                    outcome,
                } = e
                else {
                    continue;
                };
                in_flight -= 1;
                if let Some(c) = cursors.get_mut(&post) {
                    c.in_flight -= 1;
                }
                match outcome {
                    Ok(_) => confirmed.push((seq, post, bytes, accepted_ms)),
                    Err(error) => {
                        if !failing {
                            tracing::warn!(%error, "the broker did not confirm a report: backing off");
                        }
                        self.metrics.forward_failures.inc();
                        failing = true;
                    }
                }
            }
            if !confirmed.is_empty() {
                self.settle(&confirmed);
                backoff = Duration::from_millis(self.settings.initial_backoff_ms);
            }
            if last_tick.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                self.tick();
                last_tick = Some(Instant::now());
            }
            // 2. Stopping: no new sends; wait for what is in flight.
            if self.shutdown.load(Ordering::Relaxed) {
                let since = *stopping_since.get_or_insert_with(Instant::now);
                if in_flight == 0
                    || since.elapsed() > Duration::from_millis(self.kafka.message_timeout_ms)
                {
                    return Ok(());
                }
                idle = true;
                continue;
            }
            // 3. After a failure: let everything settle, renew the producer if it is stale,
            // back off, and start every post again from its oldest unconfirmed record.
            if failing {
                if in_flight > 0 {
                    idle = true;
                    continue;
                }
                if let Err(e) = producer.renew_if_stale() {
                    tracing::error!(error = %e, "cannot create a new producer");
                    self.pause(&events, backoff);
                    continue;
                }
                for c in cursors.values_mut() {
                    c.after = 0;
                }
                tracing::info!(
                    backoff_ms = backoff.as_millis() as u64,
                    "resending from the spool after a backoff"
                );
                self.pause(&events, backoff);
                backoff = (backoff * 2).min(Duration::from_millis(self.settings.max_backoff_ms));
                failing = false;
                continue;
            }
            // 4. Send: posts take turns, each at most a quantum, oldest first.
            let waiting: Vec<(String, u64)> = {
                let d = self.depth.lock().unwrap_or_else(|p| p.into_inner());
                d.posts
                    .iter()
                    .filter(|(_, pd)| pd.records > 0)
                    .map(|(p, pd)| (p.clone(), pd.records))
                    .collect()
            };
            let mut sent = 0usize;
            if !waiting.is_empty() {
                turn = turn.wrapping_add(1);
                let start = turn % waiting.len();
                'posts: for (post, records) in waiting[start..].iter().chain(&waiting[..start]) {
                    let key: Arc<str> = match cursors.get_key_value(post.as_str()) {
                        Some((k, _)) => k.clone(),
                        None => Arc::from(post.as_str()),
                    };
                    let c = cursors.entry(key.clone()).or_default();
                    if *records <= c.in_flight as u64
                        || c.in_flight >= self.settings.window_per_post
                    {
                        continue;
                    }
                    let room =
                        (self.settings.window_per_post - c.in_flight).min(self.settings.quantum);
                    let rows = match self.spool.next(post, c.after, room) {
                        Ok(rows) => rows,
                        Err(e) => {
                            tracing::error!(error = %e, "cannot read the spool");
                            break 'posts;
                        }
                    };
                    for row in rows {
                        let tx = tx.clone();
                        let post = key.clone();
                        let bytes = (row.key.len() + row.value.len()) as u64;
                        let (seq, accepted_ms) = (row.seq, row.accepted_ms);
                        let then = Then::call(move |outcome| {
                            let _ = tx.send(Event::Answer {
                                seq,
                                post,
                                bytes,
                                accepted_ms,
                                outcome,
                            });
                        });
                        match producer.send_with_blocking(
                            &row.topic,
                            Some(&row.key),
                            Some(&row.value),
                            then,
                        ) {
                            Ok(()) => {
                                c.after = row.seq;
                                c.in_flight += 1;
                                in_flight += 1;
                                sent += 1;
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "cannot queue a report: backing off");
                                self.metrics.forward_failures.inc();
                                failing = true;
                                break 'posts;
                            }
                        }
                    }
                }
            }
            idle = sent == 0;
        }
    }

    /// Removes what the broker confirmed, in one transaction, and counts it.
    fn settle(&mut self, confirmed: &[(i64, Arc<str>, u64, i64)]) {
        let seqs: Vec<i64> = confirmed.iter().map(|c| c.0).collect();
        if let Err(e) = self.spool.remove(&seqs) {
            // They stay and are sent again after the next rewind: duplicates of the same
            // signed bytes, never a loss.
            tracing::error!(error = %e, "cannot remove confirmed reports from the spool");
            return;
        }
        let now = (self.clock)();
        let mut per_post: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
        for (_, post, bytes, accepted_ms) in confirmed {
            let e = per_post.entry(post).or_default();
            e.0 += 1;
            e.1 += bytes;
            self.metrics
                .forward_seconds
                .observe((now - accepted_ms).max(0) as f64 / 1000.0);
        }
        for (post, (n, b)) in per_post {
            count_out(&self.depth, post, n, b);
            self.metrics.forwarded.with_label_values(&[post]).inc_by(n);
        }
        let d = self.depth.lock().unwrap_or_else(|p| p.into_inner());
        for (post, pd) in &d.posts {
            self.metrics.spool_depth(post, pd);
        }
    }

    /// Once a second: each post's oldest unsent age; once a minute, accepted ids past
    /// `gateway.spool.remember_*` are forgotten.
    fn tick(&mut self) {
        let now = (self.clock)();
        if self.last_forget.is_none_or(|t| now - t >= 60_000) {
            self.last_forget = Some(now);
            let (secs, max) = self.remember;
            match self
                .spool
                .forget_accepted(now - secs as i64 * 1000, max)
                .and_then(|_| self.spool.accepted_ids())
            {
                Ok(n) => self.metrics.accepted_ids.set(n as i64),
                Err(e) => tracing::error!(error = %e, "cannot forget old accepted ids"),
            }
        }
        let oldest = match self.spool.oldest() {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the spool");
                return;
            }
        };
        let now = (self.clock)();
        let known: BTreeSet<String> = {
            let d = self.depth.lock().unwrap_or_else(|p| p.into_inner());
            d.posts.keys().cloned().collect()
        };
        for post in known.iter().chain(&self.posts) {
            let age = oldest.get(post).map_or(0, |t| ((now - t) / 1000).max(0));
            self.metrics
                .oldest_unsent_age
                .with_label_values(&[post])
                .set(age);
        }
        *self.oldest.lock().unwrap_or_else(|p| p.into_inner()) = oldest;
    }

    /// Waits `d`, or until shutdown.
    fn pause(&self, events: &Receiver<Event>, d: Duration) {
        let until = Instant::now() + d;
        while Instant::now() < until && !self.shutdown.load(Ordering::Relaxed) {
            self.health.beat("forward");
            let left = until.saturating_duration_since(Instant::now());
            // Wakes (new reports) are dropped: the spool has them, the rewind finds them.
            let _ = events.recv_timeout(left.min(Duration::from_millis(100)));
        }
    }
}
