//! Client settings. Durability is not optional: producers always use `acks=all` and
//! idempotence, so a retried batch is never written twice.

use std::collections::BTreeMap;

use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSettings {
    /// Bootstrap servers, comma-separated `host:port`.
    pub brokers: String,
    /// Prefix of every topic name, so several networks or test runs share one cluster.
    pub topic_prefix: String,
    pub client_id: String,
    /// Partitions of each topic `ewn topics create` makes.
    pub partitions: i32,
    pub replication_factor: i32,
    /// Member states (ISO 3166-1 alpha-2) with an incidents topic each.
    pub states: Vec<String>,
    /// How long the producer keeps retrying a record before reporting it failed.
    pub message_timeout_ms: u64,
    /// Records a producer may have queued or awaiting the broker's answer; a send beyond it
    /// waits for room (at most `message_timeout_ms`) or is refused as queue-full. Also
    /// librdkafka's `queue.buffering.max.messages`.
    pub max_in_flight_records: usize,
    /// How long admin and metadata requests may take.
    pub request_timeout_ms: u64,
    pub linger_ms: u64,
    /// How long a fetch may wait for data at the broker. It bounds the latency of each
    /// consumer hop when a broker answers only at the deadline (Tansu 0.6.0 does), at the
    /// cost of more fetch requests while idle.
    pub fetch_wait_max_ms: u64,
    /// librdkafka statistics interval; 0 turns statistics off.
    pub statistics_interval_ms: u64,
    /// `retention.ms` of the topics `ewn topics create` makes (all but the compacted
    /// subscriptions topic); services refuse to start on a topic that keeps less.
    pub retention_ms: i64,
    /// Further librdkafka properties (`security.protocol`, `sasl.*`, `ssl.*`, ...). They
    /// may not weaken the durability settings above.
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        KafkaSettings {
            brokers: "127.0.0.1:9092".into(),
            topic_prefix: "ewn.".into(),
            client_id: "ewn".into(),
            partitions: 3,
            replication_factor: 1,
            states: ["kz", "kg", "tj", "uz", "tm"].map(String::from).to_vec(),
            message_timeout_ms: 30_000,
            max_in_flight_records: 200_000,
            request_timeout_ms: 10_000,
            linger_ms: 5,
            fetch_wait_max_ms: 10,
            statistics_interval_ms: 5_000,
            retention_ms: 7 * 24 * 3_600_000,
            properties: BTreeMap::new(),
        }
    }
}

/// librdkafka's own ceiling of `queue.buffering.max.messages`.
const MAX_IN_FLIGHT: usize = 2_147_483_647;

/// Properties a user may not override through `properties`.
const PINNED: &[&str] = &[
    "acks",
    "queue.buffering.max.messages",
    "enable.idempotence",
    "enable.auto.commit",
    "bootstrap.servers",
    "enable.auto.offset.store",
];

impl KafkaSettings {
    /// Every problem with the settings, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.brokers.trim().is_empty() {
            p.push("kafka.brokers: is empty".into());
        }
        if self.partitions < 1 {
            p.push("kafka.partitions: must be at least 1".into());
        }
        if self.replication_factor < 1 {
            p.push("kafka.replication_factor: must be at least 1".into());
        }
        let prefix_ok = self
            .topic_prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !prefix_ok || self.topic_prefix.len() > 100 {
            p.push(
                "kafka.topic_prefix: only ASCII letters, digits, '.', '_' and '-', at most 100"
                    .into(),
            );
        }
        for s in &self.states {
            if s.len() != 2 || !s.bytes().all(|b| b.is_ascii_lowercase()) {
                p.push(format!(
                    "kafka.states: `{s}` is not a lower-case ISO 3166-1 alpha-2 code"
                ));
            }
        }
        if self.retention_ms < 1 {
            p.push("kafka.retention_ms: must be positive".into());
        }
        if self.message_timeout_ms == 0 {
            p.push("kafka.message_timeout_ms: must be positive".into());
        }
        if !(1..=MAX_IN_FLIGHT).contains(&self.max_in_flight_records) {
            p.push(format!(
                "kafka.max_in_flight_records: must be between 1 and {MAX_IN_FLIGHT}"
            ));
        }
        for key in self.properties.keys() {
            if PINNED.contains(&key.as_str()) {
                p.push(format!(
                    "kafka.properties.{key}: is set by EWN and may not be overridden"
                ));
            }
        }
        p
    }

    fn base(&self, role: &str) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("client.id", format!("{}-{role}", self.client_id))
            .set("socket.keepalive.enable", "true")
            .set("request.timeout.ms", self.request_timeout_ms.to_string())
            .set(
                "statistics.interval.ms",
                self.statistics_interval_ms.to_string(),
            );
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }

    /// An idempotent, `acks=all` producer configuration.
    pub fn producer_config(&self, role: &str) -> ClientConfig {
        let mut c = self.base(role);
        c.set("acks", "all")
            .set("enable.idempotence", "true")
            .set("max.in.flight.requests.per.connection", "5")
            .set("message.timeout.ms", self.message_timeout_ms.to_string())
            .set("linger.ms", self.linger_ms.to_string())
            .set(
                "queue.buffering.max.messages",
                self.max_in_flight_records.to_string(),
            );
        c
    }

    /// A consumer configuration; offsets are committed explicitly by the caller, never
    /// automatically, so an offset is only committed once its record is fully handled.
    pub fn consumer_config(&self, role: &str, group_id: Option<&str>) -> ClientConfig {
        let mut c = self.base(role);
        c.set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", self.fetch_wait_max_ms.to_string());
        if let Some(group) = group_id {
            c.set("group.id", group);
        }
        c
    }

    pub fn admin_config(&self) -> ClientConfig {
        self.base("admin")
    }

    pub(crate) fn check(&self) -> Result<()> {
        match self.problems().into_iter().next() {
            None => Ok(()),
            Some(message) => Err(Error::Setting {
                key: "kafka".into(),
                message,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_in_flight_bound_is_librdkafkas_queue_bound_and_is_checked() {
        let s = KafkaSettings {
            max_in_flight_records: 1234,
            ..KafkaSettings::default()
        };
        assert_eq!(
            s.producer_config("p").get("queue.buffering.max.messages"),
            Some("1234")
        );
        let zero = KafkaSettings {
            max_in_flight_records: 0,
            ..KafkaSettings::default()
        };
        assert!(
            zero.problems()
                .iter()
                .any(|p| p.starts_with("kafka.max_in_flight_records:"))
        );
        assert!(KafkaSettings::default().problems().is_empty());
    }
}
