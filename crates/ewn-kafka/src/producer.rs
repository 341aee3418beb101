//! A producer that tells which records the broker confirmed.
//!
//! Deliveries are reported through a callback on librdkafka's polling thread (no future
//! per record): a [`DeliverySink`] receives the caller's record id and the outcome.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Statistics};

use crate::error::{Error, Result};
use crate::metrics::KafkaMetrics;
use crate::settings::KafkaSettings;

/// Where a confirmed record landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Landed {
    pub partition: i32,
    pub offset: i64,
}

/// Receives the outcome of every record sent with an id.
pub trait DeliverySink: Send + Sync + 'static {
    fn on_delivery(&self, id: usize, outcome: std::result::Result<Landed, String>);
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

pub struct Context<S> {
    sink: S,
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
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, id: usize) {
        let outcome = match result {
            Ok(m) => Ok(Landed {
                partition: m.partition(),
                offset: m.offset(),
            }),
            Err((e, _)) => Err(e.to_string()),
        };
        self.sink.on_delivery(id, outcome);
    }
}

/// An idempotent `acks=all` producer with a delivery sink.
pub struct RecordProducer<S: DeliverySink = Tally> {
    inner: ThreadedProducer<Context<S>>,
}

impl<S: DeliverySink> RecordProducer<S> {
    pub fn new(
        settings: &KafkaSettings,
        role: &str,
        sink: S,
        metrics: Option<KafkaMetrics>,
    ) -> Result<Self> {
        settings.check()?;
        let context = Context {
            sink,
            metrics: metrics.map(|m| (m, role.to_string())),
        };
        let inner = settings
            .producer_config(role)
            .create_with_context(context)
            .map_err(Error::kafka("create producer"))?;
        Ok(RecordProducer { inner })
    }

    pub fn sink(&self) -> &S {
        &self.inner.context().sink
    }

    /// Queues a record; `id` comes back through the sink. Waits while the local queue is
    /// full rather than dropping anything.
    pub fn send(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        id: usize,
    ) -> Result<()> {
        let mut record: BaseRecord<'_, [u8], [u8], usize> = BaseRecord::with_opaque_to(topic, id);
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(v) = value {
            record = record.payload(v);
        }
        loop {
            match self.inner.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => {
                    return Err(Error::Kafka {
                        context: format!("send to {topic}"),
                        source: e,
                    });
                }
            }
        }
    }

    /// Waits until every queued record is confirmed or failed, or `timeout` passes.
    pub fn flush(&self, timeout: Duration) -> Result<()> {
        self.inner.flush(timeout).map_err(Error::kafka("flush"))
    }

    /// Records queued or in flight, not yet reported to the sink.
    pub fn in_flight(&self) -> i32 {
        self.inner.in_flight_count()
    }
}
