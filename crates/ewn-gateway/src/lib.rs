//! The member-state side: turns a reporter's JSON into signed, blinded incidents on the
//! state's topic.
//!
//! - [`input`]: the JSON-lines input shape, validated line by line with field paths.
//! - [`publish`]: blind, sign, produce, and wait for every confirmation (`ewn publish`).
//! - `ewn gateway`, the long-running service ([`service::start`]): HTTP ([`http`]) and
//!   file-drop ([`drop`]) intake, both through [`intake`] (the same checks and signing as
//!   `publish`); a durable SQLite spool ([`spool`]); the forwarder ([`forward`]: in order
//!   per post, round robin between posts, backoff while the broker is away); the signing
//!   key reloaded without a restart ([`signer`]); its series ([`metrics`]).
//! - Case requests: [`cases`] keeps the raw details of what the gateway signed (locally,
//!   for a retention, bounded) and the requests it received; [`requests`] reads
//!   `<prefix>requests.<cc>` and serves the operators' approve/decline API, answering on
//!   `<prefix>responses` with details HPKE-encrypted to the requesting agency.
//! - [`heartbeat`]: signed heartbeats on `<prefix>heartbeats.<cc>` every interval, with the
//!   gateway's per-post spool figures.

pub mod cases;
pub mod drop;
pub mod error;
pub mod forward;
pub mod heartbeat;
pub mod http;
pub mod input;
pub mod intake;
pub mod metrics;
pub mod publish;
pub mod requests;
pub mod service;
pub mod settings;
pub mod signer;
pub mod spool;

pub use error::{Error, Result};
pub use heartbeat::{
    HeartbeatConfig, HeartbeatMetrics, HeartbeatSettings, HeartbeatSigner, Heartbeater, PostFigures,
};
pub use input::{InputError, LineReader, parse_incident, prepare_line};
pub use publish::{PublishOptions, PublishOutcome, publish, seal};
pub use service::{GatewayConfig, Running, start};
pub use settings::GatewaySettings;
