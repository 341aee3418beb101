//! EWN's one door to Kafka. No other crate names rdkafka: they see settings, topic names,
//! one producer that confirms deliveries and bounds what it has in flight, readers that
//! hand out borrowed records, and metrics.
//!
//! The test broker (Tansu 0.6.0) has no transactions and no auto-creation, so nothing here
//! relies on either: topics are created explicitly and producers are idempotent.

pub mod admin;
pub mod consumer;
pub mod error;
pub mod gate;
pub mod metrics;
pub mod producer;
pub mod reader;
pub mod settings;
pub mod topics;

pub use consumer::{Change, CommitOffset, GroupConsumer, Subscription};
pub use error::{Error, Result};
pub use metrics::KafkaMetrics;
pub use producer::{
    Confirmation, ConfirmingProducer, DeliveryReport, Landed, Outcome, RecordProducer, Then,
};
pub use reader::{AssignedReader, RawRecord, StartAt};
pub use settings::KafkaSettings;
pub use topics::{TopicKind, TopicSpec, Topics};
