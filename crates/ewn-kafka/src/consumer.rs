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
    /// The last rebalance event not yet seen by `check_membership`: when, and how many
    /// partitions were assigned (`None`: a revocation).
    assigned_at: Mutex<Option<(Instant, Option<usize>)>>,
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
            *self.assigned_at.lock().unwrap_or_else(|p| p.into_inner()) =
                Some((Instant::now(), None));
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
                Some((Instant::now(), Some(tpl.count())));
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

/// Tansu 0.6.0 workarounds, harmless on Apache Kafka:
///
/// - when a group's leader dies, a member that joined meanwhile can be handed an empty
///   assignment that no later rebalance corrects. A member left with no partitions after a
///   rebalance re-joins, with backoff and a bounded number of attempts (an over-provisioned
///   group legitimately leaves some members idle);
/// - after a broker restart a member can have its partitions revoked and then never be given
///   an assignment at all, empty or not (seen in the chaos campaign: the correlate group
///   held nothing until the next broker restart). A member whose revocation is not followed
///   by an assignment within [`LIMBO_AFTER`] re-joins, with backoff up to [`LIMBO_MAX`] and
///   no bound on attempts: holding nothing without being told so is never legitimate.
///
/// Each re-join is counted in `ewn_kafka_consumer_rejoins_total{client}`.
struct Rejoin {
    /// Since when the member holds nothing, and whether it was told so (an empty
    /// assignment) or only lost its partitions (a revocation).
    empty_since: Option<(Instant, Empty)>,
    attempts: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Empty {
    Assigned,
    Revoked,
}

const REJOIN_AFTER: Duration = Duration::from_secs(3);
const REJOIN_ATTEMPTS: u32 = 6;
/// A rebalance on a loaded 2-core machine takes a few seconds; the session timeout is 10 s.
const LIMBO_AFTER: Duration = Duration::from_secs(20);
const LIMBO_MAX: Duration = Duration::from_secs(120);

impl Rejoin {
    /// Whether to re-join now, given what the rebalance callbacks reported since the last
    /// call (`event`: when, and how many partitions were assigned, or `None` for a
    /// revocation) and whether the member holds no partition now.
    fn due(&mut self, event: Option<(Instant, Option<usize>)>, empty: bool, now: Instant) -> bool {
        match event {
            Some((_, Some(n))) if n > 0 => {
                self.attempts = 0;
                self.empty_since = None;
            }
            Some((at, Some(_))) if self.empty_since.is_none_or(|(_, e)| e == Empty::Revoked) => {
                self.empty_since = Some((at, Empty::Assigned));
            }
            Some((at, None)) if self.empty_since.is_none() => {
                self.empty_since = Some((at, Empty::Revoked));
            }
            _ => {}
        }
        let Some((since, kind)) = self.empty_since else {
            return false;
        };
        let wait = match kind {
            Empty::Assigned if self.attempts >= REJOIN_ATTEMPTS => return false,
            Empty::Assigned => REJOIN_AFTER * 2u32.pow(self.attempts.min(6)),
            Empty::Revoked => (LIMBO_AFTER * 2u32.pow(self.attempts.min(6))).min(LIMBO_MAX),
        };
        if now.saturating_duration_since(since) < wait {
            return false;
        }
        if !empty {
            self.attempts = 0;
            self.empty_since = None;
            return false;
        }
        self.attempts += 1;
        self.empty_since = Some((now, kind));
        true
    }
}

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
            empty_since: None,
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
        let event = self
            .consumer
            .context()
            .assigned_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let empty = self
            .consumer
            .assignment()
            .map(|a| a.count() == 0)
            .unwrap_or(false);
        if !r.due(event, empty, Instant::now()) {
            return Ok(());
        }
        tracing::warn!(
            attempt = r.attempts,
            "no partitions after a rebalance or a revocation; re-joining the group"
        );
        if let Some((m, role)) = &self.consumer.context().metrics {
            m.rejoined(role);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh() -> Rejoin {
        Rejoin {
            empty_since: None,
            attempts: 0,
        }
    }

    #[test]
    fn a_member_holding_partitions_never_rejoins() {
        let t0 = Instant::now();
        let mut r = fresh();
        assert!(!r.due(Some((t0, Some(3))), false, t0));
        for s in [1, 30, 600] {
            assert!(!r.due(None, false, t0 + Duration::from_secs(s)));
        }
    }

    #[test]
    fn an_empty_assignment_rejoins_with_backoff_a_bounded_number_of_times() {
        let t0 = Instant::now();
        let mut r = fresh();
        assert!(!r.due(Some((t0, Some(0))), true, t0));
        assert!(!r.due(None, true, t0 + Duration::from_secs(2)));
        let mut at = t0 + REJOIN_AFTER;
        let mut joins = 0;
        for _ in 0..100 {
            if r.due(None, true, at) {
                joins += 1;
            }
            at += Duration::from_secs(60);
        }
        assert_eq!(
            joins, REJOIN_ATTEMPTS,
            "an idle member of a large group stays idle"
        );
    }

    #[test]
    fn a_revocation_not_followed_by_an_assignment_rejoins_until_one_comes() {
        let t0 = Instant::now();
        let mut r = fresh();
        assert!(!r.due(Some((t0, None)), true, t0));
        // an ordinary rebalance: the assignment comes within the wait
        assert!(!r.due(None, true, t0 + Duration::from_secs(5)));
        assert!(!r.due(
            Some((t0 + Duration::from_secs(6), Some(2))),
            false,
            t0 + Duration::from_secs(6)
        ));
        assert!(!r.due(None, false, t0 + Duration::from_secs(60)));

        // limbo: revoked, and nothing after
        let t1 = t0 + Duration::from_secs(100);
        assert!(!r.due(Some((t1, None)), true, t1));
        assert!(!r.due(None, true, t1 + LIMBO_AFTER - Duration::from_millis(1)));
        assert!(r.due(None, true, t1 + LIMBO_AFTER));
        // backoff doubles up to LIMBO_MAX, and it never gives up
        let mut at = t1 + LIMBO_AFTER;
        let mut gaps = Vec::new();
        let mut last = at;
        for _ in 0..2000 {
            at += Duration::from_secs(1);
            if r.due(None, true, at) {
                gaps.push((at - last).as_secs());
                last = at;
            }
        }
        assert_eq!(gaps[..3], [40, 80, 120]);
        assert!(gaps.len() > REJOIN_ATTEMPTS as usize);
        assert!(gaps.iter().all(|g| *g <= LIMBO_MAX.as_secs()));
        // an assignment ends it
        assert!(!r.due(Some((at, Some(1))), false, at));
        assert_eq!((r.attempts, r.empty_since), (0, None));
    }

    #[test]
    fn an_empty_assignment_after_a_revocation_is_bounded_again() {
        let t0 = Instant::now();
        let mut r = fresh();
        assert!(!r.due(Some((t0, None)), true, t0));
        assert!(!r.due(
            Some((t0 + Duration::from_secs(1), Some(0))),
            true,
            t0 + Duration::from_secs(1)
        ));
        assert_eq!(r.empty_since.map(|(_, e)| e), Some(Empty::Assigned));
    }
}
