//! The `[process]` configuration section.

use std::path::PathBuf;

use ewn_ops::http::AdminSettings;
use serde::{Deserialize, Serialize};

use crate::rules::RuleConfig;
use crate::score::ScoreWeights;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProcessSettings {
    /// Consumer group prefix; empty: `<topic_prefix>process`. Instances sharing it share
    /// the work (the ingest and correlate stages each have a group).
    pub group_id: String,
    /// Name of this instance in rejections and logs; empty: `process-<pid>`.
    pub instance_id: String,
    pub batch_max: usize,
    pub batch_wait_ms: u64,
    /// Partitions of the internal re-keyed topic; 0: `kafka.partitions`.
    pub rekeyed_partitions: i32,
    /// How far behind the highest event time an event may arrive and still be merged.
    pub allowed_lateness_secs: u64,
    /// After this long without input on a partition, its watermark follows the clock
    /// (minus the lateness), so absence rules decide in a quiet network; 0: never.
    pub idle_watermark_secs: u64,
    /// A repeated incident id within this window is rejected as DUPLICATE.
    pub replay_window_secs: u64,
    /// How often the rules file and the trust store are checked for changes.
    pub reload_interval_secs: u64,
    /// A TOML file of `[[rules]]` (like deploy/config/rules.default.toml), reloaded when
    /// it changes. Takes precedence over `rules`.
    pub rules_file: Option<PathBuf>,
    /// Inline rules; empty (and no rules_file): the default rule set.
    pub rules: Vec<RuleConfig>,
    pub score: ScoreWeights,
    /// Verify signatures in batches (measured faster from ~4 records a batch up).
    pub batch_verify: bool,
    pub admin: AdminSettings,
}

impl Default for ProcessSettings {
    fn default() -> Self {
        ProcessSettings {
            group_id: String::new(),
            instance_id: String::new(),
            batch_max: 1000,
            batch_wait_ms: 20,
            rekeyed_partitions: 0,
            allowed_lateness_secs: 300,
            idle_watermark_secs: 10,
            replay_window_secs: 7 * 24 * 3600,
            reload_interval_secs: 5,
            rules_file: None,
            rules: Vec::new(),
            score: ScoreWeights::default(),
            batch_verify: true,
            admin: AdminSettings::default(),
        }
    }
}

impl ProcessSettings {
    pub fn problems(&self) -> Vec<String> {
        let mut p = self.score.problems();
        p.extend(crate::rules::problems(&self.rules));
        if self.batch_max == 0 {
            p.push("process.batch_max: must be at least 1".into());
        }
        if self.rekeyed_partitions < 0 {
            p.push("process.rekeyed_partitions: may not be negative".into());
        }
        if self.reload_interval_secs == 0 {
            p.push("process.reload_interval_secs: must be at least 1".into());
        }
        p
    }
}
