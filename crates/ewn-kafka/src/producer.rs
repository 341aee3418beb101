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

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use prometheus::IntCounter;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Statistics};
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

pub(crate) struct Context<S> {
    sink: S,
    gate: InFlight,
    metrics: Option<(KafkaMetrics, String)>,
}

impl<S: DeliverySink> ClientContext for Context<S> {
    fn stats(&self, statistics: Statistics) {
        if let Some((metrics, role)) = &self.metrics {
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
        let outcome = match result {
            Ok(m) => Ok(Landed {
                partition: m.partition(),
                offset: m.offset(),
            }),
            Err((e, _)) => Err(e.to_string()),
        };
        // Room first, so a waiter can send as soon as this answer is out.
        self.gate.release();
        match *pending {
            Pending::Sink(id) => self.sink.on_delivery(id, outcome),
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
    inner: ThreadedProducer<Context<S>>,
    /// How long a send may wait for room.
    wait: Duration,
    full: Option<IntCounter>,
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
        let (gauge, full) = match &metrics {
            Some(m) => {
                m.client(role, false);
                let (g, f) = m.producer(role);
                (Some(g), Some(f))
            }
            None => (None, None),
        };
        let context = Context {
            sink,
            gate: InFlight::new(settings.max_in_flight_records, gauge),
            metrics: metrics.map(|m| (m, role.to_string())),
        };
        let inner = settings
            .producer_config(role)
            .create_with_context(context)
            .map_err(Error::kafka("create producer"))?;
        Ok(ConfirmingProducer {
            inner,
            wait: Duration::from_millis(settings.message_timeout_ms),
            full,
        })
    }

    pub fn sink(&self) -> &S {
        &self.inner.context().sink
    }

    fn gate(&self) -> &InFlight {
        &self.inner.context().gate
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
            if !self.gate().try_acquire() {
                self.count_full();
                let left = self.wait.saturating_sub(started.elapsed());
                if !self.gate().acquire(left).await {
                    return Err(self.queue_full(topic, started.elapsed()));
                }
            }
            match self.enqueue(topic, key, value, pending) {
                Ok(()) => return Ok(()),
                Err(Refused::Failed(_, e)) => return Err(e),
                Err(Refused::Full(back)) => {
                    if started.elapsed() >= self.wait {
                        return Err(self.queue_full(topic, started.elapsed()));
                    }
                    pending = back;
                    // librdkafka's byte bound: no release tells when it frees, so poll.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
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
            if !self.gate().try_acquire() {
                self.count_full();
                let left = self.wait.saturating_sub(started.elapsed());
                if !self.gate().acquire_blocking(left) {
                    return Err(self.queue_full(topic, started.elapsed()));
                }
            }
            match self.enqueue(topic, key, value, pending) {
                Ok(()) => return Ok(()),
                Err(Refused::Failed(_, e)) => return Err(e),
                Err(Refused::Full(back)) => {
                    if started.elapsed() >= self.wait {
                        return Err(self.queue_full(topic, started.elapsed()));
                    }
                    pending = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
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
        match self.inner.send(record) {
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
        self.inner.flush(timeout).map_err(Error::kafka("flush"))
    }

    /// Records queued or in flight, not yet reported.
    pub fn in_flight(&self) -> i32 {
        self.inner.in_flight_count()
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
        let (gauge, full) = p
            .inner
            .context()
            .metrics
            .as_ref()
            .unwrap()
            .0
            .producer("test");
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
