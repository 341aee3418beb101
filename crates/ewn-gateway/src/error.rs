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
}
