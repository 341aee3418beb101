use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use thiserror::Error;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Error)]
pub enum Error {
    #[error("kafka: {context}: {source}")]
    Kafka { context: String, source: KafkaError },
    #[error("kafka setting `{key}`: {message}")]
    Setting { key: String, message: String },
    #[error("topic {topic}: {message}")]
    Topic { topic: String, message: String },
    #[error("no topic matches {0}")]
    NoTopic(String),
    /// Topics a service needs that are missing or misconfigured, each named with what is
    /// wrong. Services check and never create them (`ewn topics create` does).
    #[error("topics not as this service needs them:\n  {}", .0.join("\n  "))]
    Topics(Vec<String>),
    /// The producer already has its bound of records in flight (`kafka.max_in_flight_records`,
    /// or librdkafka's byte bound), and no room came within the wait.
    #[error(
        "topic {topic}: producer queue full, {limit} records in flight (waited {waited_ms} ms)"
    )]
    QueueFull {
        topic: String,
        limit: usize,
        waited_ms: u64,
    },
}

impl Error {
    pub(crate) fn kafka(context: impl Into<String>) -> impl FnOnce(KafkaError) -> Error {
        let context = context.into();
        move |source| match source {
            // librdkafka's message carries the property's value, which may be a secret
            // (`sasl.password` from a file, say): name the key, never the value.
            KafkaError::ClientConfig(_, description, key, _value) => Error::Setting {
                key: format!("kafka.properties.{key}"),
                message: format!("{context}: {description}"),
            },
            source => Error::Kafka { context, source },
        }
    }

    /// True when retrying later may succeed (broker unreachable, timeouts, leadership moves).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Kafka { source, .. } => matches!(
                source.rdkafka_error_code(),
                Some(
                    RDKafkaErrorCode::BrokerTransportFailure
                        | RDKafkaErrorCode::AllBrokersDown
                        | RDKafkaErrorCode::OperationTimedOut
                        | RDKafkaErrorCode::MessageTimedOut
                        | RDKafkaErrorCode::RequestTimedOut
                        | RDKafkaErrorCode::QueueFull
                        | RDKafkaErrorCode::NotLeaderForPartition
                        | RDKafkaErrorCode::LeaderNotAvailable
                        | RDKafkaErrorCode::NetworkException
                        | RDKafkaErrorCode::NotCoordinator
                        | RDKafkaErrorCode::CoordinatorNotAvailable
                )
            ),
            Error::NoTopic(_) | Error::QueueFull { .. } => true,
            Error::Setting { .. } | Error::Topic { .. } | Error::Topics(_) => false,
        }
    }
}
