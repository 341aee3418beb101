//! The one producer every EWN service uses: idempotent, `acks=all`, and it tells the caller
//! what the broker answered for each record.
//!
//! Answers arrive on librdkafka's polling thread, with no task per record, in one of three
//! ways the caller picks per record ([`Then`]): a [`Confirmation`] future (a oneshot), a
//! callback, or a record id handed to the producer's [`DeliverySink`] (no allocation beyond
//! the record's own; the processor counts its batch this way).
//!
//! Records in flight are bounded (`kafka.max_in_flight_records`). When the bound is reached a
//! send never spins: `try_send*` refuses at once with [`Error::QueueFull`] (transient),
//! `send*_async` waits without blocking the thread, and `send*_blocking` (for std-thread
//! stages only) parks the thread; both waits end at `message_timeout_ms` with `QueueFull`.
//!
//! **Renewal.** Tansu 0.6.0 (the broker we test on) stops serving an idempotent producer
//! whose records timed out while it was down, or that lived through its restart: it answers
//! "unknown broker error", or its storage panics and answers nothing from then on
//! (`tests/broker_restart.rs`). A new producer, with a new producer id, is served. So a
//! record that fails that way ([`renews_after`]) marks the producer stale, and
//! [`ConfirmingProducer::renew_if_stale`] replaces the librdkafka producer inside, keeping
//! the sink, the in-flight bound and the metrics; each renewal counts in
//! `ewn_kafka_producer_renewals_total`. The caller picks the moment (the fan-out twice a
//! second, the gateway's forwarder once its records in flight have settled, so a post's
//! order holds): the producer cannot tell when a send is safe for the caller.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock, RwLockReadGuard};
use std::task::Poll;
use std::time::{Duration, Instant};

use prometheus::IntCounter;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, ClientContext, Statistics};
use tokio::sync::oneshot;

use crate::error::{Error, Result};
use crate::gate::InFlight;
use crate::metrics::KafkaMetrics;
use crate::settings::KafkaSettings;

/// Where a confirmed record landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Landed {
    pub partition: i32,
    pub offset: i64,
}

/// What the broker answered for one record: where it landed, or why it did not.
pub type Outcome = std::result::Result<Landed, String>;

/// Receives the outcome of every record sent with [`Then::sink`].
pub trait DeliverySink: Send + Sync + 'static {
    fn on_delivery(&self, id: usize, outcome: std::result::Result<Landed, String>);
}

/// No sink, for producers whose records all use confirmations or callbacks.
impl DeliverySink for () {
    fn on_delivery(&self, _: usize, _: Outcome) {}
}

impl<T: DeliverySink> DeliverySink for std::sync::Arc<T> {
    fn on_delivery(&self, id: usize, outcome: std::result::Result<Landed, String>) {
        (**self).on_delivery(id, outcome)
    }
}

/// Counts confirmations and keeps the failures (id and error), for one-shot producers
/// such as `ewn publish`.
#[derive(Default)]
pub struct Tally {
    confirmed: AtomicU64,
    failed: Mutex<Vec<(usize, String)>>,
    /// Outcomes reported so far, for [`Tally::wait_for`].
    reported: Mutex<u64>,
    changed: Condvar,
}

/// The state of a [`Tally`] at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeliveryReport {
    pub confirmed: u64,
    pub failed: Vec<(usize, String)>,
}

impl DeliverySink for Tally {
    fn on_delivery(&self, id: usize, outcome: std::result::Result<Landed, String>) {
        match outcome {
            Ok(_) => {
                self.confirmed.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => self
                .failed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((id, e)),
        }
        *self.reported.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.changed.notify_all();
    }
}

impl Tally {
    /// Outcomes (confirmed or failed) reported so far.
    pub fn reported(&self) -> u64 {
        *self.reported.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until `count` outcomes in all have been reported, or `timeout` passes;
    /// true when they have. Wakes at once on each delivery report (rdkafka's `flush`
    /// sleeps up to 100 ms a round when another thread serves the reports).
    pub fn wait_for(&self, count: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut reported = self.reported.lock().unwrap_or_else(|p| p.into_inner());
        while *reported < count {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            reported = self
                .changed
                .wait_timeout(reported, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }

    pub fn report(&self) -> DeliveryReport {
        let mut failed = self
            .failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        failed.sort();
        DeliveryReport {
            confirmed: self.confirmed.load(Ordering::Relaxed),
            failed,
        }
    }
}

/// A callback that receives one record's outcome, on librdkafka's polling thread: it
/// should be quick and must not block.
pub type Callback = Box<dyn FnOnce(Outcome) + Send>;

pub(crate) enum Pending {
    Sink(usize),
    Reply(oneshot::Sender<Outcome>),
    /// In a mutex only to make it `Sync` as librdkafka's opaque must be; never contended.
    Call(Mutex<Callback>),
}

/// Who hears the broker's answer for a record.
pub struct Then(Pending);

impl Then {
    /// The producer's [`DeliverySink`], with this id.
    pub fn sink(id: usize) -> Then {
        Then(Pending::Sink(id))
    }

    /// A callback, run on librdkafka's polling thread.
    pub fn call(f: impl FnOnce(Outcome) + Send + 'static) -> Then {
        Then(Pending::Call(Mutex::new(Box::new(f))))
    }
}

/// The broker's answer for one record, to await. Resolves within `message_timeout_ms` of
/// the send: librdkafka reports every record by then, and a dropped producer reports what
/// it purges as failed.
pub struct Confirmation {
    rx: oneshot::Receiver<Outcome>,
}

impl Future for Confirmation {
    type Output = Outcome;

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Outcome> {
        Pin::new(&mut self.rx).poll(cx).map(|r| {
            r.unwrap_or_else(|_| Err("the producer closed before the broker answered".into()))
        })
    }
}

impl Confirmation {
    fn pair() -> (Then, Confirmation) {
        let (tx, rx) = oneshot::channel();
        (Then(Pending::Reply(tx)), Confirmation { rx })
    }
}

/// What every librdkafka producer a [`ConfirmingProducer`] has had shares: who hears the
/// answers, the in-flight bound (records of a replaced producer give their room back as
/// they are purged) and the metrics.
pub(crate) struct Shared<S> {
    sink: S,
    gate: InFlight,
    metrics: Option<(KafkaMetrics, String)>,
    /// A record of the current producer failed in a way only a new producer cures.
    stale: AtomicBool,
    /// Which producer is current (counts renewals): a late answer of a replaced one marks
    /// nothing stale.
    generation: AtomicU64,
}

/// The context of one librdkafka producer: the shared part and its generation.
pub(crate) struct Context<S> {
    shared: Arc<Shared<S>>,
    generation: u64,
}

/// Whether a record that failed with `error` makes its producer stale: it timed out (the
/// broker was unreachable past `kafka.message_timeout_ms`), the broker answered "unknown
/// broker error" (Tansu 0.6.0, to a producer that lived through its restart), or librdkafka
/// raised a fatal error (an idempotent producer that can no longer guarantee its order
/// stops for good). See the module documentation.
pub fn renews_after(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageTimedOut | RDKafkaErrorCode::Unknown | RDKafkaErrorCode::Fatal
        )
    )
}

impl<S: DeliverySink> ClientContext for Context<S> {
    fn stats(&self, statistics: Statistics) {
        if let Some((metrics, role)) = &self.shared.metrics {
            metrics.observe(role, &statistics);
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(target: "librdkafka", %error, reason, "kafka client error");
    }
}

impl<S: DeliverySink> ProducerContext for Context<S> {
    type DeliveryOpaque = Box<Pending>;

    fn delivery(&self, result: &DeliveryResult<'_>, pending: Box<Pending>) {
        let shared = &*self.shared;
        let outcome = match result {
            Ok(m) => Ok(Landed {
                partition: m.partition(),
                offset: m.offset(),
            }),
            Err((e, _)) => {
                if renews_after(e) && self.generation == shared.generation.load(Ordering::Relaxed) {
                    shared.stale.store(true, Ordering::Relaxed);
                }
                Err(e.to_string())
            }
        };
        // Room first, so a waiter can send as soon as this answer is out.
        shared.gate.release();
        match *pending {
            Pending::Sink(id) => shared.sink.on_delivery(id, outcome),
            Pending::Reply(tx) => {
                let _ = tx.send(outcome);
            }
            Pending::Call(f) => (f.into_inner().unwrap_or_else(|p| p.into_inner()))(outcome),
        }
    }
}

/// Why a record with a permit was not queued.
enum Refused {
    /// librdkafka's own queue is full (its byte bound): the record comes back to retry.
    Full(Box<Pending>),
    /// Refused for another reason; who was to hear the answer comes back too.
    Failed(Box<Pending>, Error),
}

/// An idempotent `acks=all` producer with a bound on records in flight; see the module
/// documentation.
pub struct ConfirmingProducer<S: DeliverySink = ()> {
    /// The current librdkafka producer; [`renew_if_stale`](Self::renew_if_stale) replaces it.
    inner: RwLock<ThreadedProducer<Context<S>>>,
    shared: Arc<Shared<S>>,
    /// The configuration each new librdkafka producer is made with.
    config: ClientConfig,
    /// How long a send may wait for room.
    wait: Duration,
    full: Option<IntCounter>,
    renewals: Option<IntCounter>,
}

/// The former name, kept while the fan-out moves over to the new sends.
pub type RecordProducer<S> = ConfirmingProducer<S>;

impl<S: DeliverySink> ConfirmingProducer<S> {
    /// A producer for `role` (the `client` label of its metrics); `sink` receives the
    /// outcomes of records sent with [`Then::sink`].
    pub fn new(
        settings: &KafkaSettings,
        role: &str,
        sink: S,
        metrics: Option<KafkaMetrics>,
    ) -> Result<Self> {
        settings.check()?;
        let (gauge, full, renewals) = match &metrics {
            Some(m) => {
                m.client(role, false);
                let (g, f, r) = m.producer(role);
                (Some(g), Some(f), Some(r))
            }
            None => (None, None, None),
        };
        let shared = Arc::new(Shared {
            sink,
            gate: InFlight::new(settings.max_in_flight_records, gauge),
            metrics: metrics.map(|m| (m, role.to_string())),
            stale: AtomicBool::new(false),
            generation: AtomicU64::new(0),
        });
        let config = settings.producer_config(role);
        let inner = Self::create(&config, &shared, 0)?;
        Ok(ConfirmingProducer {
            inner: RwLock::new(inner),
            shared,
            config,
            wait: Duration::from_millis(settings.message_timeout_ms),
            full,
            renewals,
        })
    }

    fn create(
        config: &ClientConfig,
        shared: &Arc<Shared<S>>,
        generation: u64,
    ) -> Result<ThreadedProducer<Context<S>>> {
        let context = Context {
            shared: shared.clone(),
            generation,
        };
        config
            .create_with_context(context)
            .map_err(Error::kafka("create producer"))
    }

    pub fn sink(&self) -> &S {
        &self.shared.sink
    }

    fn gate(&self) -> &InFlight {
        &self.shared.gate
    }

    /// The current librdkafka producer, held only while a record is handed over.
    fn current(&self) -> RwLockReadGuard<'_, ThreadedProducer<Context<S>>> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a record failed in a way only a new producer cures ([`renews_after`]) since
    /// the last renewal.
    pub fn is_stale(&self) -> bool {
        self.shared.stale.load(Ordering::Relaxed)
    }

    /// Replaces the librdkafka producer by a new one (a new idempotent producer id) when it
    /// is stale; true when it did. The old one is dropped on a thread of its own: what it
    /// still holds is purged and answered as failed, for the caller to send again. When no
    /// new producer can be made the old one stays, still stale, and the error says why.
    pub fn renew_if_stale(&self) -> Result<bool> {
        if !self.shared.stale.swap(false, Ordering::Relaxed) {
            return Ok(false);
        }
        let generation = self.shared.generation.load(Ordering::Relaxed) + 1;
        let fresh = match Self::create(&self.config, &self.shared, generation) {
            Ok(p) => p,
            Err(e) => {
                self.shared.stale.store(true, Ordering::Relaxed);
                return Err(e);
            }
        };
        let old = {
            let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
            self.shared.generation.store(generation, Ordering::Relaxed);
            std::mem::replace(&mut *inner, fresh)
        };
        if let Some(r) = &self.renewals {
            r.inc();
        }
        tracing::warn!(
            client = self.shared.metrics.as_ref().map(|(_, role)| role.as_str()),
            "a record timed out or the broker no longer serves this producer: producing through a new one"
        );
        std::thread::spawn(move || drop(old));
        Ok(true)
    }

    /// Queues a record now, or refuses with [`Error::QueueFull`] when the in-flight bound is
    /// reached. Never waits.
    pub fn try_send(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
    ) -> Result<Confirmation> {
        let (then, confirmation) = Confirmation::pair();
        self.try_send_with(topic, key, value, then)?;
        Ok(confirmation)
    }

    /// Queues a record, waiting for room without blocking the thread, at most
    /// `message_timeout_ms`.
    pub async fn send_async(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
    ) -> Result<Confirmation> {
        let (then, confirmation) = Confirmation::pair();
        self.send_with_async(topic, key, value, then).await?;
        Ok(confirmation)
    }

    /// Queues a record, parking the thread while there is no room, at most
    /// `message_timeout_ms`. For std-thread stages only: never call it on a runtime worker.
    pub fn send_blocking(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
    ) -> Result<Confirmation> {
        let (then, confirmation) = Confirmation::pair();
        self.send_with_blocking(topic, key, value, then)?;
        Ok(confirmation)
    }

    /// [`try_send`](Self::try_send), with the answer going where `then` says.
    pub fn try_send_with(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        then: Then,
    ) -> Result<()> {
        if !self.gate().try_acquire() {
            return Err(self.refuse(topic, Duration::ZERO));
        }
        match self.enqueue(topic, key, value, Box::new(then.0)) {
            Ok(()) => Ok(()),
            Err(Refused::Full(_)) => Err(self.refuse(topic, Duration::ZERO)),
            Err(Refused::Failed(_, e)) => Err(e),
        }
    }

    /// [`try_send`](Self::try_send) with a callback that hears every outcome: the broker's
    /// answer, or, when the record is refused at once (no room, or librdkafka refused
    /// it), that refusal as an error, on the caller's thread before this returns. One
    /// path for every failure, and nothing to clone in case the record is refused.
    pub fn try_send_or_call(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        f: impl FnOnce(Outcome) + Send + 'static,
    ) {
        if !self.gate().try_acquire() {
            f(Err(self.refuse(topic, Duration::ZERO).to_string()));
            return;
        }
        let refused = match self.enqueue(topic, key, value, Box::new(Then::call(f).0)) {
            Ok(()) => return,
            Err(Refused::Full(back)) => (back, self.refuse(topic, Duration::ZERO)),
            Err(Refused::Failed(back, e)) => (back, e),
        };
        if let (Pending::Call(f), e) = (*refused.0, refused.1) {
            (f.into_inner().unwrap_or_else(|p| p.into_inner()))(Err(e.to_string()));
        }
    }

    /// [`send_async`](Self::send_async), with the answer going where `then` says.
    pub async fn send_with_async(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        then: Then,
    ) -> Result<()> {
        let started = Instant::now();
        let mut pending = Box::new(then.0);
        loop {
            if !self.gate().try_acquire() && !self.gate().acquire(self.room_wait(started)).await {
                return Err(self.queue_full(topic, started.elapsed()));
            }
            match self.queue_or_back(topic, key, value, pending, started)? {
                None => return Ok(()),
                Some(back) => pending = back,
            }
            // librdkafka's byte bound: no release tells when it frees, so poll.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// [`send_blocking`](Self::send_blocking), with the answer going where `then` says.
    pub fn send_with_blocking(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        then: Then,
    ) -> Result<()> {
        let started = Instant::now();
        let mut pending = Box::new(then.0);
        loop {
            if !self.gate().try_acquire() && !self.gate().acquire_blocking(self.room_wait(started))
            {
                return Err(self.queue_full(topic, started.elapsed()));
            }
            match self.queue_or_back(topic, key, value, pending, started)? {
                None => return Ok(()),
                Some(back) => pending = back,
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// For a waiting send that found no room: counts it, and says how long it may still
    /// wait (what is left of `message_timeout_ms` since it `started`).
    fn room_wait(&self, started: Instant) -> Duration {
        self.count_full();
        self.wait.saturating_sub(started.elapsed())
    }

    /// One try of a waiting send that holds a permit: queued (`None`), refused for good
    /// (the error), or librdkafka's own queue was full (its byte bound): the record back, to
    /// try again after a short pause, until `message_timeout_ms` since it `started`.
    fn queue_or_back(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        pending: Box<Pending>,
        started: Instant,
    ) -> Result<Option<Box<Pending>>> {
        match self.enqueue(topic, key, value, pending) {
            Ok(()) => Ok(None),
            Err(Refused::Failed(_, e)) => Err(e),
            Err(Refused::Full(_)) if started.elapsed() >= self.wait => {
                Err(self.queue_full(topic, started.elapsed()))
            }
            Err(Refused::Full(back)) => Ok(Some(back)),
        }
    }

    /// Queues a record for the sink with `id`, parking the thread while there is no room (at
    /// most `message_timeout_ms`): `send_with_blocking(.., Then::sink(id))`.
    pub fn send(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        id: usize,
    ) -> Result<()> {
        self.send_with_blocking(topic, key, value, Then::sink(id))
    }

    /// Hands a record holding a permit to librdkafka. On any refusal the permit is given
    /// back.
    fn enqueue(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        pending: Box<Pending>,
    ) -> std::result::Result<(), Refused> {
        let mut record: BaseRecord<'_, [u8], [u8], Box<Pending>> =
            BaseRecord::with_opaque_to(topic, pending);
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(v) = value {
            record = record.payload(v);
        }
        match self.current().send(record) {
            Ok(()) => Ok(()),
            Err((e, back)) => {
                self.gate().release();
                match e {
                    KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull) => {
                        Err(Refused::Full(back.delivery_opaque))
                    }
                    e => Err(Refused::Failed(
                        back.delivery_opaque,
                        Error::Kafka {
                            context: format!("send to {topic}"),
                            source: e,
                        },
                    )),
                }
            }
        }
    }

    fn count_full(&self) {
        if let Some(c) = &self.full {
            c.inc();
        }
    }

    fn refuse(&self, topic: &str, waited: Duration) -> Error {
        self.count_full();
        self.queue_full(topic, waited)
    }

    fn queue_full(&self, topic: &str, waited: Duration) -> Error {
        Error::QueueFull {
            topic: topic.to_string(),
            limit: self.gate().limit(),
            waited_ms: waited.as_millis() as u64,
        }
    }

    /// Waits until every queued record is confirmed or failed, or `timeout` passes.
    /// Blocking: from async code, call it through `spawn_blocking`.
    pub fn flush(&self, timeout: Duration) -> Result<()> {
        self.current().flush(timeout).map_err(Error::kafka("flush"))
    }

    /// Records queued or in flight, not yet reported.
    pub fn in_flight(&self) -> i32 {
        self.current().in_flight_count()
    }

    /// The in-flight bound.
    pub fn max_in_flight(&self) -> usize {
        self.gate().limit()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// No broker listens: records stay queued, so the bound is reached at once.
    fn unreachable(max_in_flight_records: usize) -> KafkaSettings {
        KafkaSettings {
            brokers: "127.0.0.1:9".into(),
            max_in_flight_records,
            statistics_interval_ms: 0,
            ..KafkaSettings::default()
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_full_producer_refuses_at_once_naming_the_topic() {
        let registry = prometheus::Registry::new();
        let metrics = KafkaMetrics::register(&registry).unwrap();
        let p = ConfirmingProducer::new(&unreachable(1), "test", (), Some(metrics)).unwrap();
        let (gauge, full, _) = p.shared.metrics.as_ref().unwrap().0.producer("test");
        assert_eq!((gauge.get(), full.get()), (0, 0));
        let first = p.try_send("ewn.t", None, Some(b"x")).unwrap();
        assert_eq!(gauge.get(), 1);
        let e = p.try_send("ewn.t", Some(b"k"), Some(b"y")).err().unwrap();
        assert!(matches!(e, Error::QueueFull { limit: 1, .. }), "{e}");
        assert!(e.is_transient());
        assert!(e.to_string().starts_with("topic ewn.t: "), "{e}");
        assert_eq!(full.get(), 1);
        // Dropping the producer purges what it holds, and each purged record is answered.
        drop(p);
        assert!(first.await.is_err());
        assert_eq!(gauge.get(), 0);
    }

    #[test]
    fn a_callback_hears_a_refusal_at_once_and_a_purge_later() {
        let p = ConfirmingProducer::new(&unreachable(2), "test", (), None).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let heard = |n: u32| {
            let tx = tx.clone();
            move |o: Outcome| {
                let _ = tx.send((n, o));
            }
        };
        p.try_send_or_call("ewn.t", None, Some(b"x"), heard(1));
        assert!(
            rx.try_recv().is_err(),
            "the first record waits for the broker"
        );
        // librdkafka refusing the record (larger than `message.max.bytes`) is heard at
        // once, and gives its permit back.
        p.try_send_or_call("ewn.t", None, Some(&vec![0; 2 << 20]), heard(2));
        let (n, o) = rx.try_recv().unwrap();
        assert!(n == 2 && o.is_err(), "{o:?}");
        assert_eq!(p.gate().count(), 1);
        p.try_send_or_call("ewn.t", None, Some(b"y"), heard(3));
        // No room: the callback runs before the call returns, with the reason.
        p.try_send_or_call("ewn.t", Some(b"k"), Some(b"z"), heard(4));
        let (n, o) = rx.try_recv().unwrap();
        assert_eq!(n, 4);
        assert!(o.unwrap_err().starts_with("topic ewn.t: "));
        drop(p);
        let mut purged = [
            rx.recv_timeout(Duration::from_secs(5)).unwrap(),
            rx.recv_timeout(Duration::from_secs(5)).unwrap(),
        ];
        purged.sort_by_key(|(n, _)| *n);
        assert!(purged[0].0 == 1 && purged[1].0 == 3);
        assert!(purged.iter().all(|(_, o)| o.is_err()));
        assert!(rx.try_recv().is_err(), "each record is heard once");
    }

    /// A record that times out marks the producer stale; a renewal replaces it once (the
    /// old one's purged records mark nothing), counts, and the new one takes records.
    #[tokio::test(flavor = "current_thread")]
    async fn a_timed_out_record_renews_the_producer_once() {
        let registry = prometheus::Registry::new();
        let metrics = KafkaMetrics::register(&registry).unwrap();
        let settings = KafkaSettings {
            message_timeout_ms: 200,
            ..unreachable(10)
        };
        let p = ConfirmingProducer::new(&settings, "test", (), Some(metrics.clone())).unwrap();
        let (gauge, _, renewals) = metrics.producer("test");
        assert!(
            ewn_ops::metrics::render(&registry)
                .contains("ewn_kafka_producer_renewals_total{client=\"test\"} 0")
        );
        assert!(!p.renew_if_stale().unwrap(), "nothing failed yet");
        let (tx, rx) = std::sync::mpsc::channel();
        let tx2 = tx.clone();
        p.try_send_with(
            "ewn.t",
            None,
            Some(b"a"),
            Then::call(move |o| tx.send(o).unwrap()),
        )
        .unwrap();
        let timed_out = rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap()
            .unwrap_err();
        assert!(timed_out.contains("timed out"), "{timed_out}");
        assert!(p.is_stale());
        // Queued on the old producer just before the renewal: purged, answered, not stale.
        p.try_send_with(
            "ewn.t",
            None,
            Some(b"b"),
            Then::call(move |o| tx2.send(o).unwrap()),
        )
        .unwrap();
        assert!(p.renew_if_stale().unwrap());
        assert_eq!(renewals.get(), 1);
        let purged = rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap()
            .unwrap_err();
        assert!(!purged.contains("timed out"), "{purged}");
        assert!(!p.is_stale());
        assert!(!p.renew_if_stale().unwrap());
        assert_eq!(renewals.get(), 1);
        assert_eq!(gauge.get(), 0, "the purged record gave its room back");
        let next = p.try_send("ewn.t", None, Some(b"c")).unwrap();
        assert_eq!((p.in_flight(), gauge.get()), (1, 1));
        drop(p);
        assert!(next.await.is_err());
    }

    #[test]
    fn callbacks_and_sink_ids_hear_a_purged_record() {
        #[derive(Default)]
        struct Ids(Mutex<Vec<usize>>);
        impl DeliverySink for Ids {
            fn on_delivery(&self, id: usize, outcome: Outcome) {
                assert!(outcome.is_err());
                self.0.lock().unwrap().push(id);
            }
        }
        let ids = std::sync::Arc::new(Ids::default());
        let p = ConfirmingProducer::new(&unreachable(10), "test", ids.clone(), None).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        p.try_send_with(
            "ewn.t",
            None,
            None,
            Then::call(move |o| tx.send(o.is_err()).unwrap()),
        )
        .unwrap();
        p.send_with_blocking("ewn.t", None, Some(b"v"), Then::sink(7))
            .unwrap();
        assert_eq!(p.max_in_flight(), 10);
        assert_eq!(p.gate().count(), 2);
        drop(p);
        assert!(rx.recv_timeout(Duration::from_secs(5)).unwrap());
        assert_eq!(*ids.0.lock().unwrap(), vec![7]);
    }
}
