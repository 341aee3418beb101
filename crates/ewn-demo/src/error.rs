//! The demo's errors: which part failed to start or run, with the service's own error.
//! All are fatal to a demo run (it is one process on one machine): none is retried.

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the local broker: {0}")]
    Broker(String),
    #[error("{0} did not start: {1}")]
    Start(&'static str, String),
    #[error("setting up {0}")]
    Setup(String),
    #[error(transparent)]
    Kafka(#[from] ewn_kafka::Error),
    #[error(transparent)]
    Processor(#[from] ewn_processor::Error),
    #[error(transparent)]
    Fanout(#[from] ewn_fanout::Error),
    #[error(transparent)]
    Gateway(#[from] ewn_gateway::Error),
    #[error(transparent)]
    Sim(#[from] ewn_sim::Error),
    #[error(transparent)]
    Trust(#[from] ewn_trust::Error),
    #[error("{0}: {1}")]
    Io(&'static str, std::io::Error),
    #[error("a demo task ended abnormally: {0}")]
    Task(String),
}

impl From<tokio::task::JoinError> for Error {
    fn from(e: tokio::task::JoinError) -> Self {
        Error::Task(e.to_string())
    }
}
