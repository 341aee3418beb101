//! A synthetic regional border network: the demo driver and a load generator for any EWN
//! cluster.
//!
//! Owns the network model (five member states, their agencies, named border crossings,
//! posts), a seeded generator of background traffic that stays clear of every default
//! rule, planted scenarios that each trigger exactly one of them, and the driver that
//! signs per state and publishes with broker confirmation, as `ewn publish` does (blinding
//! from `ewn-trust`, signing and record keys from `ewn-gateway`). It reads the processor's
//! default rules and score weights only to know what to avoid and what to expect; it never
//! verifies or correlates.
//!
//! - [`network`]: states, crossings, places.
//! - [`generator`]: the pure, seeded generator (and why the background is silent).
//! - [`scenario`]: the planted scenarios and their event-time placement.
//! - [`keys`]: the per-state signing keys and the blinding key, from a directory.
//! - [`run()`]: the driver, with a shutdown flag, returning a [`Summary`].

pub mod error;
pub mod generator;
pub mod keys;
pub mod network;
pub mod rng;
pub mod run;
pub mod scenario;

pub use error::{Error, Result};
pub use generator::{Generated, Generator, GeneratorConfig, Origin, Planted};
pub use keys::SimKeys;
pub use run::{DEFAULT_RATE, SimConfig, Summary, run};
pub use scenario::Scenario;
