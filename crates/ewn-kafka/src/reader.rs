//! A group-less reader: assigns every partition of the matching topics itself. For tools
//! (`ewn tail`) and tests that read a topic without joining or disturbing a consumer group.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Message, Timestamp};
use rdkafka::{Offset, TopicPartitionList};

use crate::error::{Error, Result};
use crate::settings::KafkaSettings;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartAt {
    Beginning,
    End,
    /// The last `n` records of each partition (all of them when it holds fewer).
    Last(i64),
    /// This offset in each partition, clamped to what the partition holds.
    Offset(i64),
    /// The first record of each partition whose timestamp (ms since the epoch) is at or
    /// after this one; the end when there is none.
    Time(i64),
}

/// A record borrowed from the client's buffer, valid for the callback only.
#[derive(Debug)]
pub struct RawRecord<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub timestamp_ms: Option<i64>,
}

impl<'a> RawRecord<'a> {
    /// A borrowed view of a consumed message.
    pub(crate) fn of<M: Message>(m: &'a M) -> RawRecord<'a> {
        let timestamp_ms = match m.timestamp() {
            Timestamp::NotAvailable => None,
            Timestamp::CreateTime(t) | Timestamp::LogAppendTime(t) => Some(t),
        };
        RawRecord {
            topic: m.topic(),
            partition: m.partition(),
            offset: m.offset(),
            key: m.key(),
            value: m.payload(),
            timestamp_ms,
        }
    }
}

pub struct AssignedReader {
    consumer: BaseConsumer,
    topics: Vec<String>,
    /// `(topic, partition, start offset, high watermark)` resolved when assigned.
    bounds: Vec<(String, i32, i64, i64)>,
}

impl AssignedReader {
    /// Assigns every partition of every topic whose name satisfies `select`. Fails with
    /// [`Error::NoTopic`] when none does.
    pub fn new(
        settings: &KafkaSettings,
        role: &str,
        what: &str,
        select: impl Fn(&str) -> bool,
        start: StartAt,
    ) -> Result<Self> {
        Self::with_starts(settings, role, what, select, |_| start)
    }

    /// Like [`AssignedReader::new`], with a starting point per topic.
    pub fn with_starts(
        settings: &KafkaSettings,
        role: &str,
        what: &str,
        select: impl Fn(&str) -> bool,
        start_of: impl Fn(&str) -> StartAt,
    ) -> Result<Self> {
        Self::with_filter(settings, role, what, select, |_| true, start_of)
    }

    /// Like [`AssignedReader::with_starts`], reading only the partitions `partition` keeps.
    /// Fails with [`Error::NoTopic`] when no partition is left.
    pub fn with_filter(
        settings: &KafkaSettings,
        role: &str,
        what: &str,
        select: impl Fn(&str) -> bool,
        partition: impl Fn(i32) -> bool,
        start_of: impl Fn(&str) -> StartAt,
    ) -> Result<Self> {
        Self::with_partition_starts(settings, role, what, select, partition, |t, _| start_of(t))
    }

    /// Like [`AssignedReader::with_filter`], with a starting point per topic and partition
    /// (a reader resuming from a cursor of offsets).
    pub fn with_partition_starts(
        settings: &KafkaSettings,
        role: &str,
        what: &str,
        select: impl Fn(&str) -> bool,
        partition: impl Fn(i32) -> bool,
        start_of: impl Fn(&str, i32) -> StartAt,
    ) -> Result<Self> {
        settings.check()?;
        // librdkafka wants a group id even for manual assignment; the reader never joins
        // the group nor commits to it.
        let group = format!("{}-{role}-assigned", settings.client_id);
        let consumer: BaseConsumer = settings
            .consumer_config(role, Some(&group))
            .create()
            .map_err(Error::kafka("create consumer"))?;
        let metadata = consumer
            .fetch_metadata(None, Duration::from_millis(settings.request_timeout_ms))
            .map_err(Error::kafka("fetch metadata"))?;
        let timeout = Duration::from_millis(settings.request_timeout_ms);
        let mut list = TopicPartitionList::new();
        let mut topics = Vec::new();
        let mut bounds = Vec::new();
        for topic in metadata
            .topics()
            .iter()
            .filter(|t| t.error().is_none() && select(t.name()))
        {
            let mut any = false;
            for p in topic.partitions().iter().filter(|p| partition(p.id())) {
                any = true;
                let start = start_of(topic.name(), p.id());
                // Every start is resolved to a number, so `caught_up` knows where it began.
                let (low, high) = consumer
                    .fetch_watermarks(topic.name(), p.id(), timeout)
                    .map_err(Error::kafka("fetch watermarks"))?;
                let offset = match start {
                    StartAt::Beginning => low,
                    StartAt::End => high,
                    StartAt::Last(n) => (high - n.max(0)).max(low),
                    StartAt::Offset(n) => n.clamp(low, high),
                    StartAt::Time(ms) => {
                        let mut at = TopicPartitionList::new();
                        at.add_partition_offset(topic.name(), p.id(), Offset::Offset(ms))
                            .map_err(Error::kafka("offsets for times"))?;
                        let found = consumer
                            .offsets_for_times(at, timeout)
                            .map_err(Error::kafka("offsets for times"))?;
                        match found.elements().first().map(|e| e.offset()) {
                            Some(Offset::Offset(n)) if n >= 0 => n.clamp(low, high),
                            // No record at or after the time: the end.
                            _ => high,
                        }
                    }
                };
                list.add_partition_offset(topic.name(), p.id(), Offset::Offset(offset))
                    .map_err(Error::kafka("assign"))?;
                bounds.push((topic.name().to_string(), p.id(), offset, high));
            }
            if any {
                topics.push(topic.name().to_string());
            }
        }
        if topics.is_empty() {
            return Err(Error::NoTopic(what.to_string()));
        }
        topics.sort();
        consumer.assign(&list).map_err(Error::kafka("assign"))?;
        Ok(AssignedReader {
            consumer,
            topics,
            bounds,
        })
    }

    /// True once every assigned partition has been read up to its high watermark as it was
    /// when assigned (a partition that started there is caught up from the start): what
    /// `kcat -e` calls the end.
    pub fn caught_up(&self) -> Result<bool> {
        let position = self.consumer.position().map_err(Error::kafka("position"))?;
        Ok(self.bounds.iter().all(|(topic, partition, start, high)| {
            start >= high
                || matches!(
                    position
                        .find_partition(topic, *partition)
                        .map(|e| e.offset()),
                    Some(Offset::Offset(next)) if next >= *high
                )
        }))
    }

    /// The high watermark (next offset to be written) of every assigned partition, as
    /// `(topic, partition, high)`: reading up to these is "caught up" with the moment asked.
    pub fn high_watermarks(&self, timeout: Duration) -> Result<Vec<(String, i32, i64)>> {
        let assignment = self
            .consumer
            .assignment()
            .map_err(Error::kafka("assignment"))?;
        let mut v = Vec::new();
        for e in assignment.elements() {
            let (_, high) = self
                .consumer
                .fetch_watermarks(e.topic(), e.partition(), timeout)
                .map_err(Error::kafka("fetch watermarks"))?;
            v.push((e.topic().to_string(), e.partition(), high));
        }
        Ok(v)
    }

    /// Where each assigned partition started, as `(topic, partition, offset)` (every start
    /// resolved to an offset).
    pub fn starts(&self) -> Vec<(String, i32, i64)> {
        self.bounds
            .iter()
            .map(|(t, p, start, _)| (t.clone(), *p, *start))
            .collect()
    }

    /// The topics assigned, sorted.
    pub fn topics(&self) -> &[String] {
        &self.topics
    }

    /// Waits up to `timeout` for one record and hands it to `f`. `Ok(None)` when none came.
    pub fn poll<T>(
        &self,
        timeout: Duration,
        f: impl FnOnce(RawRecord<'_>) -> T,
    ) -> Result<Option<T>> {
        match self.consumer.poll(timeout) {
            None => Ok(None),
            Some(Err(e)) => Err(Error::Kafka {
                context: "consume".into(),
                source: e,
            }),
            Some(Ok(m)) => Ok(Some(f(RawRecord::of(&m)))),
        }
    }
}
