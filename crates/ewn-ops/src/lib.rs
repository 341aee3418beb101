//! Operations plumbing shared by every EWN service: layered configuration ([`config`]),
//! tracing setup ([`logging`]) and the metrics registry ([`metrics`]).
//!
//! Libraries take their configuration as values; only the binary reads the process
//! environment and hands it to [`config::load`].

pub mod config;
pub mod error;
pub mod http;
pub mod logging;
pub mod metrics;

pub use error::{Error, Result};
