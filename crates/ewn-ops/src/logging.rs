//! Tracing setup: human-readable or JSON lines on stderr (stdout is for command output).

use serde::{Deserialize, Serialize};
use tracing_subscriber::EnvFilter;

use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    pub format: LogFormat,
    /// An `EnvFilter` directive, e.g. `info` or `info,ewn_processor=debug`.
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            format: LogFormat::Pretty,
            level: "info".into(),
        }
    }
}

/// Installs the global subscriber. Call once, from the binary.
pub fn init(settings: &LogSettings) -> Result<()> {
    let filter = EnvFilter::try_new(&settings.level)
        .map_err(|e| Error::Logging(format!("log.level `{}`: {e}", settings.level)))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match settings.format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(|e| Error::Logging(e.to_string()))
}
