use std::path::PathBuf;

use thiserror::Error;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Error)]
pub enum Error {
    #[error(transparent)]
    Kafka(#[from] ewn_kafka::Error),
    #[error(transparent)]
    Trust(#[from] ewn_trust::Error),
    #[error(transparent)]
    Model(#[from] ewn_model::Error),
    #[error("heartbeat: {0}")]
    Heartbeat(String),
    #[error("reading input: {0}")]
    Input(std::io::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The spool could not be read or written (disk full, permissions, corruption):
    /// transient for a request (503), fatal at start.
    #[error("spool {path}: {message}")]
    Spool { path: PathBuf, message: String },
    #[error("signing key {path}: {message}")]
    SigningKey { path: PathBuf, message: String },
    #[error("configuration: {}", .0.join("; "))]
    Config(Vec<String>),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("{0}")]
    Stopped(String),
}
