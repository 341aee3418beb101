//! The whole configuration file: one section per crate, each owned by that crate.

use ewn_fanout::{FanoutSettings, SubscriptionConfig};
use ewn_gateway::GatewaySettings;
use ewn_kafka::KafkaSettings;
use ewn_model::validate::Limits;
use ewn_ops::logging::LogSettings;
use ewn_processor::ProcessSettings;
use ewn_trust::TrustSettings;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub kafka: KafkaSettings,
    pub log: LogSettings,
    pub trust: TrustSettings,
    pub limits: Limits,
    pub process: ProcessSettings,
    pub fanout: FanoutSettings,
    pub gateway: GatewaySettings,
    /// Standing subscriptions of the fan-out, seeded into `<prefix>subscriptions`.
    pub subscriptions: Vec<SubscriptionConfig>,
}

/// Keys whose `EWN__…` environment value is a comma-separated list.
pub const LIST_KEYS: &[&str] = &[
    "kafka.states",
    "kafka.properties_files",
    "fanout.webhook.allow_http_hosts",
    "fanout.webhook.allow_private_cidrs",
];

impl Settings {
    /// Every problem the sections can find in themselves, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut p = self.kafka.problems();
        if self.trust.max_record_bytes < 1024 {
            p.push("trust.max_record_bytes: must be at least 1024".into());
        }
        if self.limits.summary_max_bytes == 0 || self.limits.text_max_bytes == 0 {
            p.push("limits: byte limits must be positive".into());
        }
        p.extend(self.fanout.problems());
        p.extend(self.gateway.problems(false));
        for (i, s) in self.subscriptions.iter().enumerate() {
            p.extend(s.problems(&format!("subscriptions[{i}]"), &self.fanout.webhook));
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ewn_ops::config::{Layers, load};

    #[test]
    fn the_example_configuration_loads_and_equals_the_defaults() {
        let path = std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../deploy/config/ewn.example.toml"
        ));
        let from_file: Settings = load(&Layers {
            file: Some(path),
            list_keys: LIST_KEYS,
            ..Default::default()
        })
        .unwrap();
        let defaults = Settings::default();
        // Every value the example shows is the default, so the file documents them truly.
        assert_eq!(format!("{from_file:#?}"), format!("{defaults:#?}"));
        assert!(from_file.problems().is_empty());
    }
}
