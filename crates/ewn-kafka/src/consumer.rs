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

/// Tansu 0.6.0 workarounds:
///
/// - when a group's leader dies, a member that joined meanwhile can be handed an empty
///   assignment that no later rebalance corrects. A member left with no partitions after a
///   rebalance re-joins, with backoff and a bounded number of attempts (an over-provisioned
///   group legitimately leaves some members idle);
/// - after a broker restart a member can have its partitions revoked and then never be given
///   an assignment at all, empty or not (seen in the chaos campaign: the correlate group
///   held nothing until the next broker restart). A member that holds nothing and was given
///   no assignment for [`LIMBO_AFTER`] since its revocation (or since it subscribed) re-joins,
///   with backoff up to [`LIMBO_MAX`] and no bound on attempts: holding nothing without
///   being told so is never the steady state.
///
/// On Apache Kafka the second costs, at most, a repeated join in a rebalance that takes
/// longer than [`LIMBO_AFTER`] (a member slower than that to poll again: the processor's
/// stages confirm their outputs for up to `message_timeout_ms`, 30 s by default, before
/// polling). Each re-join is counted in `ewn_kafka_consumer_rejoins_total{client}`.
struct Rejoin {
    /// Since when the member holds nothing, and whether it was told so (an empty
    /// assignment) or only lost its partitions (a revocation, or none yet).
    empty_since: Option<(Instant, Empty)>,
    attempts: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Empty {
    Assigned,
    Revoked,
}

impl Empty {
    fn label(self) -> &'static str {
        match self {
            Empty::Assigned => "an empty assignment",
            Empty::Revoked => "no assignment since a revocation or the subscription",
        }
    }
}

const REJOIN_AFTER: Duration = Duration::from_secs(3);
const REJOIN_ATTEMPTS: u32 = 6;
/// Twice the default `message_timeout_ms` (how long a stage may take to poll again while it
/// confirms its outputs), so that an ordinary rebalance is not joined again.
const LIMBO_AFTER: Duration = Duration::from_secs(60);
const LIMBO_MAX: Duration = Duration::from_secs(240);

impl Rejoin {
    /// A member that has just subscribed: it holds nothing, and has not been told anything.
    fn subscribed(now: Instant) -> Rejoin {
        Rejoin {
            empty_since: Some((now, Empty::Revoked)),
            attempts: 0,
        }
    }

    /// Whether to re-join now, given what the rebalance callbacks reported since the last
    /// call (`event`: when, and how many partitions were assigned, or `None` for a
    /// revocation) and whether the member holds no partition now. Returns the case.
    fn due(
        &mut self,
        event: Option<(Instant, Option<usize>)>,
        empty: bool,
        now: Instant,
    ) -> Option<Empty> {
        let enter = |at: Instant, kind: Empty, r: &mut Rejoin| {
            if r.empty_since.is_none_or(|(_, k)| k != kind) {
                // each case counts its own attempts
                r.attempts = 0;
                r.empty_since = Some((at, kind));
            }
        };
        match event {
            Some((_, Some(n))) if n > 0 => {
                self.attempts = 0;
                self.empty_since = None;
            }
            Some((at, Some(_))) => enter(at, Empty::Assigned, self),
            Some((at, None)) if self.empty_since.is_none() => enter(at, Empty::Revoked, self),
            _ => {}
        }
        let (since, kind) = self.empty_since?;
        let wait = match kind {
            Empty::Assigned if self.attempts >= REJOIN_ATTEMPTS => return None,
            Empty::Assigned => REJOIN_AFTER * 2u32.pow(self.attempts.min(6)),
            Empty::Revoked => (LIMBO_AFTER * 2u32.pow(self.attempts.min(6))).min(LIMBO_MAX),
        };
        if now.saturating_duration_since(since) < wait {
            return None;
        }
        if !empty {
            self.attempts = 0;
            self.empty_since = None;
            return None;
        }
        self.attempts += 1;
        // after the re-join, nothing is assigned until the group says so
        self.empty_since = Some((now, kind));
        Some(kind)
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
        let rejoin = Mutex::new(Rejoin::subscribed(Instant::now()));
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
        let Some(kind) = r.due(event, empty, Instant::now()) else {
            return Ok(());
        };
        tracing::warn!(
            attempt = r.attempts,
            after = kind.label(),
            "holding no partitions; re-joining the group"
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

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    /// A member that has held partitions (nothing pending).
    fn settled() -> Rejoin {
        Rejoin {
            empty_since: None,
            attempts: 0,
        }
    }

    /// The re-joins in `span` seconds of a member that stays empty, polled every second,
    /// as gaps between them (the first from `t`).
    fn gaps(r: &mut Rejoin, t: Instant, span: u64) -> Vec<u64> {
        let mut last = t;
        let mut out = Vec::new();
        for n in 1..=span {
            let at = t + secs(n);
            if r.due(None, true, at).is_some() {
                out.push((at - last).as_secs());
                last = at;
            }
        }
        out
    }

    #[test]
    fn a_member_holding_partitions_never_rejoins() {
        let t0 = Instant::now();
        let mut r = Rejoin::subscribed(t0);
        assert_eq!(r.due(Some((t0, Some(3))), false, t0), None);
        for n in [1, 30, 600, 6000] {
            assert_eq!(r.due(None, false, t0 + secs(n)), None);
        }
    }

    #[test]
    fn an_empty_assignment_rejoins_with_backoff_a_bounded_number_of_times() {
        let t0 = Instant::now();
        let mut r = settled();
        assert_eq!(r.due(Some((t0, Some(0))), true, t0), None);
        assert_eq!(r.due(None, true, t0 + secs(2)), None);
        let g = gaps(&mut r, t0, 3600);
        assert_eq!(
            g,
            [3, 6, 12, 24, 48, 96],
            "an idle member of a large group stays idle"
        );
        assert_eq!(g.len(), REJOIN_ATTEMPTS as usize);
    }

    #[test]
    fn a_revocation_not_followed_by_an_assignment_rejoins_until_one_comes() {
        let t0 = Instant::now();
        let mut r = settled();
        // an ordinary rebalance, slow but within the wait: no re-join
        assert_eq!(r.due(Some((t0, None)), true, t0), None);
        assert_eq!(r.due(None, true, t0 + secs(45)), None);
        assert_eq!(
            r.due(Some((t0 + secs(50), Some(2))), false, t0 + secs(50)),
            None
        );
        assert_eq!(r.due(None, false, t0 + secs(600)), None);

        // limbo: revoked, and nothing after
        let t1 = t0 + secs(1000);
        assert_eq!(r.due(Some((t1, None)), true, t1), None);
        let before = t1 + LIMBO_AFTER - Duration::from_millis(1);
        assert_eq!(r.due(None, true, before), None);
        assert_eq!(r.due(None, true, t1 + LIMBO_AFTER), Some(Empty::Revoked));
        // backoff doubles up to LIMBO_MAX, and it never gives up
        let g = gaps(&mut r, t1 + LIMBO_AFTER, 4000);
        assert_eq!(g[..3], [120, 240, 240]);
        assert!(g.len() > REJOIN_ATTEMPTS as usize);
        // an assignment ends it
        let end = t1 + secs(5000);
        assert_eq!(r.due(Some((end, Some(1))), false, end), None);
        assert_eq!((r.attempts, r.empty_since), (0, None));
    }

    #[test]
    fn a_member_never_assigned_anything_since_it_subscribed_rejoins() {
        let t0 = Instant::now();
        let mut r = Rejoin::subscribed(t0);
        assert_eq!(r.due(None, true, t0 + secs(59)), None);
        assert_eq!(r.due(None, true, t0 + LIMBO_AFTER), Some(Empty::Revoked));
    }

    #[test]
    fn each_case_counts_its_own_attempts() {
        let t0 = Instant::now();
        let mut r = settled();
        assert_eq!(r.due(Some((t0, None)), true, t0), None);
        let g = gaps(&mut r, t0, 3000);
        assert!(g.len() > REJOIN_ATTEMPTS as usize, "{g:?}");
        // then an empty assignment: its own six attempts, from 3 s
        let t1 = t0 + secs(3001);
        assert_eq!(r.due(Some((t1, Some(0))), true, t1), None);
        assert_eq!(r.empty_since.map(|(_, e)| e), Some(Empty::Assigned));
        assert_eq!(gaps(&mut r, t1, 3600), [3, 6, 12, 24, 48, 96]);
    }
}
