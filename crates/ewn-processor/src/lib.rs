//! The stream processor: verifies every signed report, scores it explainably, and
//! correlates across member states in event-time windows, producing alerts.
//!
//! - [`score`]: the 0..100 score of an incident, as a list of factors that add up to it.
//! - [`event`]: the engine's event, apart from the re-keyed wire record.
//! - [`rules`]: correlation rules from configuration (typed on load), and the default set.
//! - [`watermark`]: event-time progress per source, so no source steers another.
//! - [`correlate`]: the per-(rule, key) window engine; pure, no I/O, deterministic.
//! - [`alert`]: alert records of a bounded size, with a digest of the full evidence set.
//! - [`replay`]: the bounded replay guard.
//! - [`offline`]: the engine without Kafka, for rule fixtures (`ewn rules test`).
//! - [`sources`]: when each state and post was last heard from (heartbeats and reports),
//!   and the operational alerts `source_silent` and `source_backlog`.
//! - [`service`]: the two Kafka stages wiring the above.

pub mod alert;
pub mod audit;
pub mod correlate;
pub mod error;
pub mod event;
pub mod ingest;
pub mod metrics;
pub mod offline;
pub mod partitions;
pub mod replay;
pub mod rules;
pub mod score;
pub mod service;
pub mod settings;
pub mod sorted;
pub mod sources;
pub mod watermark;

pub use error::{Error, Result};
pub use service::{ProcessorConfig, run, run_with_clock};
pub use settings::ProcessSettings;
