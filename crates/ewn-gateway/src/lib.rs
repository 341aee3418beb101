//! The member-state side: turns a reporter's JSON into signed, blinded incidents on the
//! state's topic, and says exactly which reports the broker confirmed.
//!
//! - [`input`]: the JSON-lines input shape, validated line by line with field paths.
//! - [`publish`]: blind, sign, produce, and wait for every confirmation.
//! - [`heartbeat`]: signed heartbeats on `<prefix>heartbeats.<cc>` every interval, with the
//!   gateway's per-post spool figures.

pub mod error;
pub mod heartbeat;
pub mod input;
pub mod publish;

pub use error::{Error, Result};
pub use heartbeat::{
    HeartbeatConfig, HeartbeatMetrics, HeartbeatSettings, HeartbeatSigner, Heartbeater, PostFigures,
};
pub use input::{InputError, LineReader, parse_incident};
pub use publish::{PublishOptions, PublishOutcome, publish, seal};
