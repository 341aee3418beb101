//! Topic administration. Creation is `ewn topics create`'s job alone (idempotent; the test
//! broker has no auto-creation, and a production cluster should not rely on it either); a
//! service only checks, at start, that the topics it needs exist as it needs them, so its
//! principal needs no Create ACL.

use std::time::Duration;

use rdkafka::admin::{
    AdminClient, AdminOptions, NewTopic, OwnedResourceSpecifier, ResourceSpecifier,
    TopicReplication,
};
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
    let retention = settings.retention_ms.to_string();
    let alerts = crate::Topics::new(&settings.topic_prefix).alerts();
    let new_topics: Vec<NewTopic<'_>> = specs
        .iter()
        .map(|s| {
            let t = NewTopic::new(
                &s.name,
                s.partitions,
                TopicReplication::Fixed(settings.replication_factor),
            );
            // The broker keeps the alerts zstd-compressed whatever a producer sends.
            let t = if s.name == alerts {
                t.set("compression.type", "zstd")
            } else {
                t
            };
            if s.compacted {
                t.set("cleanup.policy", "compact")
            } else {
                t.set("cleanup.policy", "delete")
                    .set("retention.ms", &retention)
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

/// Checks that every topic of `specs` exists with its cleanup policy (compacted or not),
/// at least its partitions, and, for a deleting topic, a retention of at least
/// `kafka.retention_ms`. Every problem is named in the error; what does not prevent running
/// (more partitions than configured: how Kafka scales out) is returned as a note. A broker
/// that does not answer DescribeConfigs leaves policy and retention unchecked, with a note.
pub async fn check_topics(settings: &KafkaSettings, specs: &[TopicSpec]) -> Result<Vec<String>> {
    settings.check()?;
    let present: std::collections::HashMap<String, i32> = {
        let settings = settings.clone();
        tokio::task::spawn_blocking(move || list_topics(&settings))
            .await
            .map_err(|e| Error::Topic {
                topic: "metadata".into(),
                message: e.to_string(),
            })??
            .into_iter()
            .collect()
    };
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    let mut existing = Vec::new();
    for spec in specs {
        match present.get(&spec.name) {
            None => problems.push(format!(
                "{}: does not exist (create it with `ewn topics create`)",
                spec.name
            )),
            Some(&n) if n < spec.partitions => problems.push(format!(
                "{}: {n} partitions, fewer than the {} configured (kafka.partitions, or process.rekeyed_partitions for the repartition topic)",
                spec.name, spec.partitions
            )),
            Some(&n) => {
                if n > spec.partitions {
                    notes.push(format!(
                        "{}: {n} partitions, more than the {} configured",
                        spec.name, spec.partitions
                    ));
                }
                existing.push(spec);
            }
        }
    }
    if !existing.is_empty() {
        match describe_configs(settings, &existing).await {
            Ok(configs) => {
                for (spec, config) in existing.iter().zip(configs) {
                    problems.extend(config_problems(settings, spec, &config));
                }
            }
            Err(e) => notes.push(format!(
                "cleanup policy and retention not checked: the broker did not describe the topics' configuration ({e})"
            )),
        }
    }
    if problems.is_empty() {
        Ok(notes)
    } else {
        Err(Error::Topics(problems))
    }
}

/// What is wrong with one topic's configuration (`cleanup.policy`, `retention.ms`).
fn config_problems(
    settings: &KafkaSettings,
    spec: &TopicSpec,
    config: &std::collections::HashMap<String, String>,
) -> Vec<String> {
    let mut p = Vec::new();
    let policy = config
        .get("cleanup.policy")
        .map(String::as_str)
        .unwrap_or("delete");
    let compacts = policy.split(',').any(|x| x.trim() == "compact");
    let deletes = policy.split(',').any(|x| x.trim() == "delete");
    if spec.compacted && !compacts {
        p.push(format!(
            "{}: cleanup.policy is `{policy}`, must be `compact` (the latest record per key is the state)",
            spec.name
        ));
    }
    if !spec.compacted && compacts {
        p.push(format!(
            "{}: cleanup.policy is `{policy}`, must be `delete` (compaction would drop records that share a key)",
            spec.name
        ));
    }
    if !spec.compacted
        && deletes
        && let Some(ms) = config
            .get("retention.ms")
            .and_then(|v| v.parse::<i64>().ok())
        && ms >= 0
        && ms < settings.retention_ms
    {
        p.push(format!(
            "{}: retention.ms is {ms}, below kafka.retention_ms {} (records could be deleted before they are read)",
            spec.name, settings.retention_ms
        ));
    }
    p
}

/// Each topic's configuration (name -> value), in the order of `specs`.
async fn describe_configs(
    settings: &KafkaSettings,
    specs: &[&TopicSpec],
) -> Result<Vec<std::collections::HashMap<String, String>>> {
    let admin: AdminClient<DefaultClientContext> = settings
        .admin_config()
        .create()
        .map_err(Error::kafka("create admin client"))?;
    let timeout = Duration::from_millis(settings.request_timeout_ms);
    let options = AdminOptions::new().request_timeout(Some(timeout));
    let resources: Vec<ResourceSpecifier<'_>> = specs
        .iter()
        .map(|s| ResourceSpecifier::Topic(&s.name))
        .collect();
    let results = admin
        .describe_configs(resources.iter(), &options)
        .await
        .map_err(Error::kafka("describe topic configs"))?;
    let mut out = Vec::with_capacity(results.len());
    for (spec, r) in specs.iter().zip(results) {
        let resource = r.map_err(|code| Error::Topic {
            topic: spec.name.clone(),
            message: format!("describe configs: {code}"),
        })?;
        if !matches!(&resource.specifier, OwnedResourceSpecifier::Topic(t) if *t == spec.name) {
            return Err(Error::Topic {
                topic: spec.name.clone(),
                message: "describe configs answered for another resource".into(),
            });
        }
        out.push(
            resource
                .entries
                .into_iter()
                .filter_map(|e| Some((e.name, e.value?)))
                .collect(),
        );
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
