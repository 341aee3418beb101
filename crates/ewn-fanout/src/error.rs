use thiserror::Error;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Error)]
pub enum Error {
    /// Configuration problems, each naming its key.
    #[error("invalid fan-out configuration:\n  {}", .0.join("\n  "))]
    Config(Vec<String>),
    #[error(transparent)]
    Kafka(#[from] ewn_kafka::Error),
    #[error(transparent)]
    Trust(#[from] ewn_trust::Error),
    #[error(transparent)]
    Model(#[from] ewn_model::Error),
    #[error(transparent)]
    Ops(#[from] ewn_ops::Error),
    /// The broker did not confirm a write, or an input could not be read: transient.
    #[error("{0}")]
    Unconfirmed(String),
}

impl Error {
    /// A configuration error is final; anything else may pass (the broker coming back).
    pub fn is_config(&self) -> bool {
        matches!(self, Error::Config(_))
    }
}
