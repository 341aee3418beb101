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
    Gateway(#[from] ewn_gateway::Error),
    /// The key directory is incomplete or does not match the trust store.
    #[error("{path}: {message}")]
    Keys { path: PathBuf, message: String },
    #[error(
        "unknown scenario `{0}`: give all, none, or a comma-separated list of border_hop, \
         district_burst, watchlist_entry, vanished_exit, returnee_entry"
    )]
    UnknownScenario(String),
    /// Configuration problems, each naming its option.
    #[error("invalid simulator configuration: {}", .0.join("; "))]
    Config(Vec<String>),
    /// The simulator itself is wrong: stop loudly.
    #[error("simulator bug: {0}")]
    Bug(String),
}

impl Error {
    /// True when running again later may succeed (the broker was unreachable or slow).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Kafka(e) => e.is_transient(),
            Error::Gateway(ewn_gateway::Error::Kafka(e)) => e.is_transient(),
            _ => false,
        }
    }
}
