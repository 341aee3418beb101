//! EWN's wire types and their Avro codec.
//!
//! `schemas/*.avsc` are the source of truth: each type here is checked against its schema
//! in tests (field names, enum symbols and their order), and every message is encoded with
//! Avro single-object encoding (`C3 01` + Rabin fingerprint + datum) through apache-avro's
//! schema-aware serde path, so no intermediate `Value` tree is built per message. The
//! fingerprint is the specification's (`canonical`), not apache-avro's.
//!
//! This crate owns no I/O: no Kafka, no files, no clocks.

pub mod canonical;
pub mod codec;
pub mod error;
pub mod samples;
pub mod types;
pub mod validate;

pub use codec::{AvroRecord, Codec, SchemaInfo, schema_by_fingerprint, schemas};
pub use error::{Error, Result};
pub use types::*;
