use thiserror::Error;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Error)]
pub enum Error {
    /// Configuration problems (rules, weights), each naming its key.
    #[error("invalid processor configuration:\n  {}", .0.join("\n  "))]
    Config(Vec<String>),
    #[error(transparent)]
    Kafka(#[from] ewn_kafka::Error),
    #[error(transparent)]
    Trust(#[from] ewn_trust::Error),
    #[error(transparent)]
    Model(#[from] ewn_model::Error),
}

impl Error {
    /// A configuration error is final; anything else may pass (the broker coming back).
    pub fn is_config(&self) -> bool {
        matches!(self, Error::Config(_))
    }
}
