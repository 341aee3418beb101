//! The `[process]` configuration section.

use std::path::PathBuf;

use ewn_ops::http::AdminSettings;
use serde::{Deserialize, Serialize};

use crate::alert::AlertSettings;
use crate::correlate::{EngineSettings, StateSettings};
use crate::rules::RuleConfig;
use crate::score::ScoreWeights;
use crate::sources::SourceSettings;

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
    /// A source (state and post) silent this long stops holding the partition's watermark,
    /// and a lagging source holds it back by this much at most; with no source active,
    /// absences are decided by the clock (minus the lateness).
    pub idle_watermark_secs: u64,
    /// A repeated incident id within this window is rejected as DUPLICATE.
    pub replay_window_secs: u64,
    /// Incident ids the replay guard holds at most (16 bytes each plus the index); at the
    /// bound the oldest is forgotten early and counted.
    pub replay_max_ids: usize,
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
    pub state: StateSettings,
    pub alerts: AlertSettings,
    /// Heartbeats and silent sources (`source_silent`, `source_backlog`).
    pub sources: SourceSettings,
    pub admin: AdminSettings,
    /// Audit records of trust-store and rules reloads ([`crate::audit`]).
    pub audit: ProcessAuditSettings,
}

/// The `[process.audit]` section.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProcessAuditSettings {
    /// The processor's own Ed25519 key (PKCS#8 PEM, mode 0600), in the trust store with
    /// role `service` and service `process`. Unset: no audit records.
    pub signing_key_file: Option<PathBuf>,
    /// Its id in the trust store.
    pub key_id: String,
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
            replay_max_ids: 1_000_000,
            reload_interval_secs: 5,
            rules_file: None,
            rules: Vec::new(),
            score: ScoreWeights::default(),
            batch_verify: true,
            state: StateSettings::default(),
            alerts: AlertSettings::default(),
            sources: SourceSettings::default(),
            admin: AdminSettings::default(),
            audit: ProcessAuditSettings::default(),
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
        for (name, secs) in [
            ("allowed_lateness_secs", self.allowed_lateness_secs),
            ("idle_watermark_secs", self.idle_watermark_secs),
            ("replay_window_secs", self.replay_window_secs),
        ] {
            if secs > 30 * 24 * 3600 {
                p.push(format!("process.{name}: at most 30 days"));
            }
        }
        if self.audit.signing_key_file.is_some() && self.audit.key_id.is_empty() {
            p.push("process.audit.key_id: needed with process.audit.signing_key_file".into());
        }
        if self.replay_max_ids == 0 {
            p.push("process.replay_max_ids: must be at least 1".into());
        }
        p.extend(self.state.problems());
        p.extend(self.alerts.problems());
        p.extend(self.sources.problems());
        p
    }

    /// What each partition's correlation engine runs with.
    pub fn engine(&self) -> EngineSettings {
        EngineSettings {
            lateness_ms: self.allowed_lateness_secs as i64 * 1000,
            idle_ms: self.idle_watermark_secs as i64 * 1000,
            state: self.state.clone(),
            alerts: self.alerts.clone(),
        }
    }
}
