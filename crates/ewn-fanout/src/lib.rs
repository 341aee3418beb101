//! The alert fan-out: reads `<prefix>alerts`, matches each alert against the live
//! subscription set (`<prefix>subscriptions`), enforces clearance at push time, renders JSON
//! or CAP 1.2, and delivers by signed webhook (Standard Webhooks), live stream (SSE) or the
//! desk console. Every terminal delivery outcome becomes a receipt on `<prefix>deliveries`;
//! acknowledgements go to `<prefix>acks`; unacknowledged alerts escalate step by step.
//!
//! This crate owns no command-line parsing: `run(config, registry, health, shutdown)` is the
//! whole service, so tests start it in-process.

mod api;
pub mod audit;
pub mod auth;
pub mod cap;
pub mod cap_ack;
mod delivery;
pub mod destination;
pub mod error;
pub mod escalation;
pub mod i18n;
pub mod index;
pub mod keys;
pub mod metrics;
pub mod oversight;
pub mod policy;
pub mod render;
mod requests;
pub(crate) mod retry;
pub mod sealed;
mod service;
pub mod settings;
pub mod stream;
pub mod subscriptions;
pub mod webhook;

pub use api::{AckBody, BACKLOG_END, parse_body};
pub use delivery::channel_label;
pub use error::{Error, Result};
pub use service::{FanoutConfig, Running, run, start};
pub use settings::{FanoutSettings, SubscriptionConfig};
