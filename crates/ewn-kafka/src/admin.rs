//! Topic administration: idempotent creation (the test broker has no auto-creation, and a
//! production cluster should not rely on it either).

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;

use crate::error::{Error, Result};
use crate::settings::KafkaSettings;
use crate::topics::TopicSpec;

/// What happened to one topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Created {
    Created,
    Existed,
}

/// Creates every topic of `specs` that does not exist yet; an existing topic is left alone.
pub async fn ensure_topics(
    settings: &KafkaSettings,
    specs: &[TopicSpec],
) -> Result<Vec<(String, Created)>> {
    settings.check()?;
    let admin: AdminClient<DefaultClientContext> = settings
        .admin_config()
        .create()
        .map_err(Error::kafka("create admin client"))?;
    let timeout = Duration::from_millis(settings.request_timeout_ms);
    let options = AdminOptions::new()
        .operation_timeout(Some(timeout))
        .request_timeout(Some(timeout));
    let new_topics: Vec<NewTopic<'_>> = specs
        .iter()
        .map(|s| {
            let t = NewTopic::new(
                &s.name,
                s.partitions,
                TopicReplication::Fixed(settings.replication_factor),
            );
            if s.compacted {
                t.set("cleanup.policy", "compact")
            } else {
                t
            }
        })
        .collect();
    let results = admin
        .create_topics(new_topics.iter(), &options)
        .await
        .map_err(Error::kafka("create topics"))?;
    let mut out = Vec::with_capacity(results.len());
    for r in results {
        match r {
            Ok(name) => out.push((name, Created::Created)),
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => out.push((name, Created::Existed)),
            Err((name, code)) => {
                return Err(Error::Topic {
                    topic: name,
                    message: code.to_string(),
                });
            }
        }
    }
    Ok(out)
}

/// Topic names the cluster knows, with their partition counts (a blocking metadata call).
pub fn list_topics(settings: &KafkaSettings) -> Result<Vec<(String, i32)>> {
    let consumer: BaseConsumer = settings
        .consumer_config("metadata", None)
        .create()
        .map_err(Error::kafka("create client"))?;
    let metadata = consumer
        .fetch_metadata(None, Duration::from_millis(settings.request_timeout_ms))
        .map_err(Error::kafka("fetch metadata"))?;
    Ok(metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .map(|t| (t.name().to_string(), t.partitions().len() as i32))
        .collect())
}

/// The number of records in each selected topic (high minus low watermark, summed over
/// partitions), e.g. to prove nothing was written twice.
pub fn record_counts(
    settings: &KafkaSettings,
    select: impl Fn(&str) -> bool,
) -> Result<Vec<(String, i64)>> {
    let consumer: BaseConsumer = settings
        .consumer_config("metadata", None)
        .create()
        .map_err(Error::kafka("create client"))?;
    let timeout = Duration::from_millis(settings.request_timeout_ms);
    let metadata = consumer
        .fetch_metadata(None, timeout)
        .map_err(Error::kafka("fetch metadata"))?;
    let mut out = Vec::new();
    for topic in metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none() && select(t.name()))
    {
        let mut total = 0;
        for p in topic.partitions() {
            let (low, high) = consumer
                .fetch_watermarks(topic.name(), p.id(), timeout)
                .map_err(Error::kafka(format!(
                    "watermarks of {}/{}",
                    topic.name(),
                    p.id()
                )))?;
            total += high - low;
        }
        out.push((topic.name().to_string(), total));
    }
    out.sort();
    Ok(out)
}
