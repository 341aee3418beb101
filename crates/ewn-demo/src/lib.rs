//! The demo network on one machine, as a library the `ewn demo` command drives and prints:
//! a local Tansu broker (its binary given as a value), five member states' border posts
//! (the simulator), KZ's gateway at two posts, the processor, the fan-out with two desks
//! of different clearance, the desks' webhook receiver and an alert observer.
//!
//! - [`broker`]: a local Tansu started from a given binary, stopped with this process.
//! - [`relay`]: a relay in front of the broker that cuts chosen clients' links.
//! - [`desk`]: the desks' webhook receiver, checking signatures with the fan-out's code.
//! - [`observer`]: reads the alerts and hands each on once its desks have it.
//! - [`posts`]: KZ's gateway and its two posts (an uplink that drops, a post gone quiet).
//! - [`case`]: a case request about the posts' watch-list hit, from the request to the
//!   verified audit bundle (the steps are the `ewn` commands' code, handed in).
//! - [`network`]: starts all of it in order, each part once the one before is ready
//!   (by the services' own start-up signals), runs the traffic, and stops everything.
//!
//! Nothing here prints: what happens is handed to the caller as [`Event`]s and a
//! [`network::Summary`].

pub mod broker;
pub mod case;
pub mod desk;
pub mod error;
pub mod network;
pub mod observer;
pub mod posts;
pub mod relay;

pub use error::{Error, Result};
pub use network::{DemoConfig, Network, Started, Summary};

use ewn_model::Alert;

/// What the caller shows while the network runs.
#[derive(Debug, Clone)]
pub enum Event {
    /// An alert, once every desk cleared for it received it (or after
    /// [`observer::SHOW_AFTER`]): per desk that received it, whether its signature verified.
    Alert {
        alert: Box<Alert>,
        received: observer::DeskOutcomes,
    },
    /// A post's gateway lost its uplink to the broker for `secs`; the post keeps reporting.
    UplinkDown { post: String, secs: u64 },
    /// The uplink is back; the gateway forwards what it spooled.
    UplinkBack { post: String },
    /// A step of the case request was done (the last of `done`), or it failed (`failed`).
    Case(Box<case::CaseSummary>),
}

pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
