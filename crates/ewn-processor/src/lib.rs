//! The stream processor: verifies every signed report, scores it explainably, and
//! correlates across member states in event-time windows, producing alerts.
//!
//! - [`score`]: the 0..100 score of an incident, as a list of factors that add up to it.
//! - [`rules`]: correlation rules from configuration, and the default rule set.
//! - [`correlate`]: the per-(rule, key) window engine; pure, no I/O, deterministic.

pub mod correlate;
pub mod error;
pub mod metrics;
pub mod rules;
pub mod score;
pub mod service;
pub mod settings;

pub use error::{Error, Result};
pub use service::{ProcessorConfig, run};
pub use settings::ProcessSettings;
