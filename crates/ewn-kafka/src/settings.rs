//! Client settings. Durability is not optional: producers always use `acks=all` and
//! idempotence, so a retried batch is never written twice.
//!
//! Further librdkafka properties come, lowest first, from `kafka.properties_files`
//! (Java-style `key=value` files, such as a Kafka `client.properties`), the inline
//! `kafka.properties` table, and `-X key=value` flags (the binary adds those to the table).
//! A property named `<key>_file` takes the value of `<key>` from that file, so a password
//! never sits in the configuration. What is read from files lives only in
//! [`FileProperties`], whose `Debug` shows names, never values, and which is never
//! serialised (so `ewn config show` shows the paths, not the secrets). Aliases
//! (`request.required.acks`, `metadata.broker.list`, ...) are mapped to their canonical
//! names before the check of the pinned settings.

use std::collections::BTreeMap;
use std::path::PathBuf;

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
    /// This replica's stable identity in its consumer groups (static membership, KIP-345;
    /// librdkafka's `group.instance.id`), such as `processor-0` from a StatefulSet's pod
    /// name; empty (the default): dynamic membership. A restarted replica with the same id
    /// takes its predecessor's partitions back without a rebalance, and its partitions
    /// wait for it (up to the session timeout) rather than moving. Give every replica of a
    /// service its own id: a second live replica with the same id is fenced by the broker
    /// and stops with an error. Recommended on Tansu 0.6.0, whose rebalances after a
    /// member is killed can leave a partition to nobody (README "Chaos"). The id applies
    /// to every consumer group of the service (ids are scoped per group).
    pub group_instance_id: String,
    /// Further librdkafka properties (`security.protocol`, `sasl.*`, `ssl.*`, ...). They
    /// may not weaken the durability settings above. `<key>_file = "PATH"` reads `<key>`'s
    /// value from a file (mode 0600 or stricter), for secrets such as `sasl.password`.
    pub properties: BTreeMap<String, String>,
    /// Java-style properties files (`key=value` lines, `#` comments) read before
    /// `properties`, which override them; mode 0600 or stricter (they hold credentials).
    pub properties_files: Vec<PathBuf>,
    /// What `properties_files` and the `_file` properties hold, once read
    /// ([`KafkaSettings::read_files`]). Never serialised, never shown.
    #[serde(skip)]
    pub from_files: FileProperties,
}

/// Properties read from files: their values never reach `Debug`, logs or serialisation.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct FileProperties {
    /// Read from `properties_files`, in order (a later file overrides).
    pub files: BTreeMap<String, String>,
    /// `<key>` of each `<key>_file` property.
    pub secrets: BTreeMap<String, String>,
}

impl std::fmt::Debug for FileProperties {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileProperties")
            .field("files", &self.files.keys().collect::<Vec<_>>())
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// librdkafka's aliases (CONFIGURATION.md), mapped to the names EWN sets and checks.
const ALIASES: &[(&str, &str)] = &[
    ("metadata.broker.list", "bootstrap.servers"),
    ("request.required.acks", "acks"),
    ("queue.buffering.max.ms", "linger.ms"),
    ("max.in.flight", "max.in.flight.requests.per.connection"),
    ("delivery.timeout.ms", "message.timeout.ms"),
    ("auto.commit.enable", "enable.auto.commit"),
    ("compression.codec", "compression.type"),
    ("sasl.mechanisms", "sasl.mechanism"),
    ("message.send.max.retries", "retries"),
];

/// The canonical name of a librdkafka property (lower case, aliases resolved).
pub fn canonical(key: &str) -> String {
    let key = key.trim().to_ascii_lowercase();
    ALIASES
        .iter()
        .find(|(alias, _)| *alias == key)
        .map(|(_, name)| name.to_string())
        .unwrap_or(key)
}

/// Reads a file that holds credentials, refusing one that group or others may read.
fn read_private(path: &std::path::Path) -> std::result::Result<String, String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "{}: mode {mode:04o} lets group or others read it; chmod 600",
            path.display()
        ));
    }
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// `key=value` (or `key: value`) lines; `#` and `!` start comments.
fn parse_properties(text: &str) -> std::result::Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        let at = line
            .find(['=', ':'])
            .ok_or_else(|| format!("line {}: not `key=value`", n + 1))?;
        let (key, value) = (line[..at].trim(), line[at + 1..].trim());
        if key.is_empty() {
            return Err(format!("line {}: empty key", n + 1));
        }
        out.insert(key.to_string(), value.to_string());
    }
    Ok(out)
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
            group_instance_id: String::new(),
            properties: BTreeMap::new(),
            properties_files: Vec::new(),
            from_files: FileProperties::default(),
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
    "group.instance.id",
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
        let id = &self.group_instance_id;
        if id.len() > 200
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            p.push(
                "kafka.group_instance_id: only ASCII letters, digits, '.', '_' and '-', at most 200"
                    .into(),
            );
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
        let named = self
            .properties
            .keys()
            .map(|k| (format!("kafka.properties.{k}"), k.as_str()))
            .chain(
                self.from_files
                    .files
                    .keys()
                    .map(|k| ("kafka.properties_files".to_string(), k.as_str())),
            );
        for (place, key) in named {
            let name = canonical(key.strip_suffix("_file").unwrap_or(key));
            if PINNED.contains(&name.as_str()) {
                let alias = if name == key {
                    String::new()
                } else {
                    format!(" (librdkafka's {name})")
                };
                let instead = if name == "group.instance.id" {
                    "; set kafka.group_instance_id"
                } else {
                    ""
                };
                p.push(format!(
                    "{place}: `{key}`{alias} is set by EWN and may not be overridden{instead}"
                ));
            }
        }
        p
    }

    /// Reads `properties_files` and every `<key>_file` property into `from_files`; every
    /// problem names the key and the file. Call once after loading the configuration.
    pub fn read_files(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut from = FileProperties::default();
        for path in &self.properties_files {
            match read_private(path).and_then(|t| parse_properties(&t)) {
                Ok(props) => from.files.extend(props),
                Err(e) => problems.push(format!("kafka.properties_files: {e}")),
            }
        }
        for (key, path) in &self.properties {
            if let Some(name) = key.strip_suffix("_file") {
                match read_private(std::path::Path::new(path)) {
                    Ok(value) => {
                        from.secrets.insert(
                            name.to_string(),
                            value.trim_end_matches(['\n', '\r']).to_string(),
                        );
                    }
                    Err(e) => problems.push(format!("kafka.properties.{key}: {e}")),
                }
            }
        }
        self.from_files = from;
        problems
    }

    /// The user's properties by canonical name, lowest layer first: files, the table,
    /// then the `_file` secrets.
    fn user_properties(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for (k, v) in &self.from_files.files {
            out.insert(canonical(k), v.clone());
        }
        for (k, v) in self
            .properties
            .iter()
            .filter(|(k, _)| !k.ends_with("_file"))
        {
            out.insert(canonical(k), v.clone());
        }
        for (k, v) in &self.from_files.secrets {
            out.insert(canonical(k), v.clone());
        }
        out
    }

    /// The client configuration: the user's properties, then what EWN sets for `role`
    /// (`ewn`), which wins; each user setting EWN overrides is named in a warning.
    fn compose(&self, role: &str, ewn: &[(&str, String)]) -> ClientConfig {
        let mut c = ClientConfig::new();
        let user = self.user_properties();
        for (k, v) in &user {
            c.set(k, v);
        }
        for (k, v) in ewn {
            if let Some(theirs) = user.get(*k).filter(|theirs| *theirs != v) {
                // Values may be secrets only for keys EWN never sets; these are not.
                tracing::warn!(
                    property = *k,
                    configured = %theirs,
                    used = %v,
                    client = role,
                    "kafka property overridden by EWN (set its kafka.* option instead)"
                );
            }
            c.set(*k, v);
        }
        c
    }

    fn base(&self, role: &str) -> Vec<(&'static str, String)> {
        vec![
            ("bootstrap.servers", self.brokers.clone()),
            ("client.id", format!("{}-{role}", self.client_id)),
            ("socket.keepalive.enable", "true".into()),
            ("request.timeout.ms", self.request_timeout_ms.to_string()),
            (
                "statistics.interval.ms",
                self.statistics_interval_ms.to_string(),
            ),
        ]
    }

    /// An idempotent, `acks=all` producer configuration.
    pub fn producer_config(&self, role: &str) -> ClientConfig {
        let mut ewn = self.base(role);
        ewn.extend([
            ("acks", "all".to_string()),
            ("enable.idempotence", "true".into()),
            ("max.in.flight.requests.per.connection", "5".into()),
            ("message.timeout.ms", self.message_timeout_ms.to_string()),
            ("linger.ms", self.linger_ms.to_string()),
            (
                "queue.buffering.max.messages",
                self.max_in_flight_records.to_string(),
            ),
        ]);
        let mut c = self.compose(role, &ewn);
        // zstd unless the user chose another codec: alerts carry evidence and compress well.
        if !self.user_properties().contains_key("compression.type") {
            c.set("compression.type", "zstd");
        }
        c
    }

    /// A consumer configuration; offsets are committed explicitly by the caller, never
    /// automatically, so an offset is only committed once its record is fully handled.
    pub fn consumer_config(&self, role: &str, group_id: Option<&str>) -> ClientConfig {
        let mut ewn = self.base(role);
        ewn.extend([
            ("enable.auto.commit", "false".to_string()),
            ("enable.auto.offset.store", "false".into()),
            ("enable.partition.eof", "false".into()),
            ("auto.offset.reset", "earliest".into()),
            ("fetch.wait.max.ms", self.fetch_wait_max_ms.to_string()),
        ]);
        if let Some(group) = group_id {
            ewn.extend([
                ("group.id", group.to_string()),
                // New member-state topics are found within seconds; a dead member's
                // partitions move within the session timeout.
                ("topic.metadata.refresh.interval.ms", "2000".to_string()),
                ("session.timeout.ms", "10000".to_string()),
            ]);
            if !self.group_instance_id.is_empty() {
                ewn.push(("group.instance.id", self.group_instance_id.clone()));
            }
        }
        self.compose(role, &ewn)
    }

    pub fn admin_config(&self) -> ClientConfig {
        self.compose("admin", &self.base("admin"))
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
    fn a_group_instance_id_goes_to_group_consumers_only() {
        let s = KafkaSettings {
            group_instance_id: "processor-0".into(),
            ..KafkaSettings::default()
        };
        assert!(s.problems().is_empty(), "{:?}", s.problems());
        let grouped = s.consumer_config("c", Some("g"));
        assert_eq!(grouped.get("group.instance.id"), Some("processor-0"));
        assert_eq!(s.consumer_config("r", None).get("group.instance.id"), None);
        assert_eq!(s.producer_config("p").get("group.instance.id"), None);
        assert_eq!(
            KafkaSettings::default()
                .consumer_config("c", Some("g"))
                .get("group.instance.id"),
            None,
            "dynamic membership by default"
        );
        let bad = KafkaSettings {
            group_instance_id: "processor 0".into(),
            ..KafkaSettings::default()
        };
        assert!(bad.problems()[0].starts_with("kafka.group_instance_id:"));
        let mut props = KafkaSettings::default();
        props
            .properties
            .insert("group.instance.id".into(), "x".into());
        assert!(
            props.problems()[0].contains("is set by EWN"),
            "{:?}",
            props.problems()
        );
    }

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

    #[test]
    fn aliases_are_mapped_before_the_pinned_check_and_what_ewn_sets_wins() {
        let with = |k: &str, v: &str| KafkaSettings {
            properties: [(k.to_string(), v.to_string())].into(),
            ..KafkaSettings::default()
        };
        let p = with("request.required.acks", "1").problems();
        assert!(
            p.iter()
                .any(|p| p.contains("`request.required.acks` (librdkafka's acks)")),
            "{p:?}"
        );
        assert!(!with("Metadata.Broker.List", "x:1").problems().is_empty());
        // An alias of a setting EWN sets from its own option: EWN's value is used.
        let c = with("queue.buffering.max.ms", "250").producer_config("p");
        assert_eq!(c.get("linger.ms"), Some("5"));
        assert_eq!(c.get("queue.buffering.max.ms"), None);
        // Other properties pass through; zstd unless the user picks a codec.
        assert_eq!(c.get("compression.type"), Some("zstd"));
        let c = with("compression.codec", "lz4").producer_config("p");
        assert_eq!(c.get("compression.type"), Some("lz4"));
    }

    #[test]
    fn file_properties_never_reach_debug() {
        let mut s = KafkaSettings::default();
        s.from_files
            .secrets
            .insert("sasl.password".into(), "hunter2-secret".into());
        let debug = format!("{s:?}");
        assert!(
            debug.contains("sasl.password") && !debug.contains("hunter2"),
            "{debug}"
        );
        assert_eq!(
            s.producer_config("p").get("sasl.password"),
            Some("hunter2-secret")
        );
    }
}
