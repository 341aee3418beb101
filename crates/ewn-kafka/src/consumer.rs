//! A consumer-group member that polls in batches, tells its caller about partition
//! assignments and revocations, and commits only the offsets it is told to (never
//! automatically): offsets move only when everything a record caused is confirmed.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::{ClientContext, Offset, Statistics, TopicPartitionList};

use crate::error::{Error, Result};
use crate::metrics::KafkaMetrics;
use crate::reader::RawRecord;
use crate::settings::KafkaSettings;

/// A change of this member's partitions, reported by [`GroupConsumer::take_changes`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Assigned(Vec<(String, i32)>),
    Revoked(Vec<(String, i32)>),
}

/// What to subscribe to.
#[derive(Clone, Debug)]
pub enum Subscription {
    Topics(Vec<String>),
    /// A regular expression over topic names; topics created later are picked up at the
    /// next metadata refresh (`topic.metadata.refresh.interval.ms`).
    Pattern(String),
}

pub struct GroupContext {
    changes: Mutex<Vec<Change>>,
    /// When the last assignment arrived and how many partitions it held.
    assigned_at: Mutex<Option<(Instant, usize)>>,
    metrics: Option<(KafkaMetrics, String)>,
}

fn list(tpl: &TopicPartitionList) -> Vec<(String, i32)> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition()))
        .collect()
}

impl ClientContext for GroupContext {
    fn stats(&self, statistics: Statistics) {
        if let Some((metrics, role)) = &self.metrics {
            metrics.observe(role, &statistics);
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(target: "librdkafka", %error, reason, "kafka client error");
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            if let Some((m, role)) = &self.metrics {
                m.set_assigned(role, 0);
            }
            self.changes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(Change::Revoked(list(tpl)));
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            self.changes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(Change::Assigned(list(tpl)));
            *self.assigned_at.lock().unwrap_or_else(|p| p.into_inner()) =
                Some((Instant::now(), tpl.count()));
            if let Some((m, role)) = &self.metrics {
                m.set_assigned(role, tpl.count());
            }
        }
    }
}

/// One offset to commit, with optional metadata stored beside it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitOffset {
    pub topic: String,
    pub partition: i32,
    /// The next offset to read.
    pub offset: i64,
    pub metadata: String,
}

pub struct GroupConsumer {
    consumer: BaseConsumer<GroupContext>,
    topics: Vec<String>,
    rejoin: Mutex<Rejoin>,
}

/// Tansu 0.6.0 workaround: when a group's leader dies, a member that joined meanwhile can
/// be handed an empty assignment that no later rebalance corrects. A member left with no
/// partitions after a rebalance re-joins, with backoff and a bounded number of attempts
/// (an over-provisioned group legitimately leaves some members idle).
struct Rejoin {
    last_assignment: Option<Instant>,
    attempts: u32,
}

const REJOIN_AFTER: Duration = Duration::from_secs(3);
const REJOIN_ATTEMPTS: u32 = 6;

impl GroupConsumer {
    pub fn new(
        settings: &KafkaSettings,
        role: &str,
        group_id: &str,
        subscription: &Subscription,
        metrics: Option<KafkaMetrics>,
    ) -> Result<Self> {
        settings.check()?;
        let config = settings.consumer_config(role, Some(group_id));
        if let Some(m) = &metrics {
            m.client(role, true);
        }
        let context = GroupContext {
            changes: Mutex::new(Vec::new()),
            assigned_at: Mutex::new(None),
            metrics: metrics.map(|m| (m, role.to_string())),
        };
        let consumer: BaseConsumer<GroupContext> = config
            .create_with_context(context)
            .map_err(Error::kafka("create consumer"))?;
        let topics: Vec<String> = match subscription {
            Subscription::Topics(t) => t.clone(),
            Subscription::Pattern(p) => vec![format!("^{p}")],
        };
        let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&refs)
            .map_err(Error::kafka("subscribe"))?;
        let rejoin = Mutex::new(Rejoin {
            last_assignment: None,
            attempts: 0,
        });
        Ok(GroupConsumer {
            consumer,
            topics,
            rejoin,
        })
    }

    /// Re-joins the group when a rebalance left this member without partitions (see
    /// [`Rejoin`]). Called from `poll_batch`.
    fn check_membership(&self) -> Result<()> {
        let mut r = self.rejoin.lock().unwrap_or_else(|p| p.into_inner());
        let assigned = self
            .consumer
            .context()
            .assigned_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some((at, count)) = assigned {
            if count > 0 {
                r.attempts = 0;
                r.last_assignment = None;
            } else if r.last_assignment.is_none() {
                r.last_assignment = Some(at);
            }
        }
        let Some(since) = r.last_assignment else {
            return Ok(());
        };
        let backoff = REJOIN_AFTER * 2u32.pow(r.attempts.min(6));
        if r.attempts >= REJOIN_ATTEMPTS || since.elapsed() < backoff {
            return Ok(());
        }
        let empty = self
            .consumer
            .assignment()
            .map(|a| a.count() == 0)
            .unwrap_or(false);
        if !empty {
            r.attempts = 0;
            r.last_assignment = None;
            return Ok(());
        }
        r.attempts += 1;
        r.last_assignment = Some(Instant::now());
        tracing::warn!(
            attempt = r.attempts,
            "no partitions after a rebalance; re-joining the group"
        );
        self.consumer.unsubscribe();
        let refs: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        self.consumer
            .subscribe(&refs)
            .map_err(Error::kafka("re-subscribe"))
    }

    /// Polls until `max` records arrived or `wait` passed since the first; each record
    /// goes to `f` while borrowed. Returns how many records came.
    pub fn poll_batch(
        &self,
        max: usize,
        wait: Duration,
        mut f: impl FnMut(RawRecord<'_>),
    ) -> Result<usize> {
        self.check_membership()?;
        let mut n = 0;
        let started = Instant::now();
        while n < max {
            let left = wait.saturating_sub(started.elapsed());
            if left.is_zero() && n > 0 {
                break;
            }
            let timeout = if n == 0 {
                wait
            } else {
                left.min(Duration::from_millis(5))
            };
            match self.consumer.poll(timeout) {
                None => {
                    if n > 0 || started.elapsed() >= wait {
                        break;
                    }
                }
                Some(Err(e)) => {
                    // Partition EOF and similar informational errors are not failures.
                    tracing::debug!(error = %e, "consumer poll");
                    if n == 0 && started.elapsed() >= wait {
                        break;
                    }
                }
                Some(Ok(m)) => {
                    f(RawRecord::of(&m));
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    /// Assignments and revocations since the last call, in order.
    pub fn take_changes(&self) -> Vec<Change> {
        std::mem::take(
            &mut *self
                .consumer
                .context()
                .changes
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        )
    }

    /// Commits exactly these offsets, synchronously.
    pub fn commit(&self, offsets: &[CommitOffset]) -> Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for o in offsets {
            let mut e = tpl.add_partition(&o.topic, o.partition);
            e.set_offset(Offset::Offset(o.offset))
                .map_err(Error::kafka("commit"))?;
            e.set_metadata(o.metadata.clone());
        }
        self.consumer
            .commit(&tpl, rdkafka::consumer::CommitMode::Sync)
            .map_err(Error::kafka("commit"))
    }
}
