//! The whole configuration file: one section per crate, each owned by that crate.

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
}

/// Keys whose `EWN__…` environment value is a comma-separated list.
pub const LIST_KEYS: &[&str] = &["kafka.states"];

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
        p
    }
}
