//! Operations plumbing shared by every EWN service: layered configuration ([`config`]),
//! tracing setup ([`logging`]), the metrics registry ([`metrics`]), the admin HTTP server
//! ([`http`]), stage supervision ([`supervise`]) and hashed bearer tokens ([`tokens`]).
//!
//! Libraries take their configuration as values; only the binary reads the process
//! environment and hands it to [`config::load`].

pub mod config;
pub mod error;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod supervise;
pub mod tokens;

pub use error::{Error, Result};
