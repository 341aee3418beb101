//! The gateway's series (names are a contract with `deploy/`). Label values come from
//! closed sets: intake paths and outcomes, and post ids, which the state configures (the
//! tokens file and the file-drop directories), never anything a request makes up.

use prometheus::{Histogram, IntCounter, IntCounterVec, IntGaugeVec, Registry};

/// Intake paths.
pub const VIAS: [&str; 2] = ["http", "file"];
/// What became of a report offered to intake.
pub const OUTCOMES: [&str; 4] = ["accepted", "invalid", "spool_full", "error"];

#[derive(Clone)]
pub struct GatewayMetrics {
    pub intake: IntCounterVec,
    pub unauthorized: IntCounter,
    pub spool_records: IntGaugeVec,
    pub spool_bytes: IntGaugeVec,
    pub oldest_unsent_age: IntGaugeVec,
    pub forwarded: IntCounterVec,
    pub forward_failures: IntCounter,
    pub forward_seconds: Histogram,
    pub intake_seconds: Histogram,
    pub key_reloads: IntCounterVec,
    pub drop_files: IntCounterVec,
}

const FORWARD_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
    3600.0, 21600.0, 86400.0,
];
const INTAKE_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

impl GatewayMetrics {
    /// Registers the series, with every closed label set (and every known post) at 0.
    pub fn register<'a>(
        r: &Registry,
        posts: impl IntoIterator<Item = &'a str>,
    ) -> prometheus::Result<Self> {
        let m = ewn_ops::metrics::Registrar(r);
        let g = GatewayMetrics {
            intake: m.counter_vec(
                "ewn_gateway_intake_reports_total",
                "reports offered to intake, by path (http, file) and outcome (accepted: \
                 spooled and synced; invalid; spool_full: refused with 507; error: the spool \
                 could not be written)",
                &["via", "outcome"],
            )?,
            unauthorized: m.counter(
                "ewn_gateway_intake_unauthorized_total",
                "intake requests refused for a missing or unknown token",
            )?,
            spool_records: m.gauge_vec(
                "ewn_gateway_spool_records",
                "signed reports in the spool not yet confirmed by the broker, per post",
                &["post"],
            )?,
            spool_bytes: m.gauge_vec(
                "ewn_gateway_spool_bytes",
                "bytes of the signed reports in the spool, per post",
                &["post"],
            )?,
            oldest_unsent_age: m.gauge_vec(
                "ewn_gateway_spool_oldest_unsent_age_seconds",
                "age of each post's oldest report not yet confirmed by the broker (0: none)",
                &["post"],
            )?,
            forwarded: m.counter_vec(
                "ewn_gateway_forwarded_total",
                "reports the broker confirmed and the spool let go, per post",
                &["post"],
            )?,
            forward_failures: m.counter(
                "ewn_gateway_forward_failures_total",
                "reports the broker did not confirm (kept in the spool and sent again)",
            )?,
            forward_seconds: m.histogram(
                "ewn_gateway_forward_seconds",
                "from a report's acceptance (202) to the broker's confirmation",
                FORWARD_BUCKETS,
            )?,
            intake_seconds: m.histogram(
                "ewn_gateway_intake_seconds",
                "time to answer an intake request (validation, signing, synced spool write)",
                INTAKE_BUCKETS,
            )?,
            key_reloads: m.counter_vec(
                "ewn_gateway_key_reloads_total",
                "signing key file replacements seen: rotated to the new key, or refused",
                &["outcome"],
            )?,
            drop_files: m.counter_vec(
                "ewn_gateway_drop_files_total",
                "file-drop files handled: moved to done/ or rejected/",
                &["outcome"],
            )?,
        };
        for via in VIAS {
            for outcome in OUTCOMES {
                g.intake.with_label_values(&[via, outcome]);
            }
        }
        for outcome in ["rotated", "refused"] {
            g.key_reloads.with_label_values(&[outcome]);
        }
        for outcome in ["done", "rejected"] {
            g.drop_files.with_label_values(&[outcome]);
        }
        for post in posts {
            g.post(post);
        }
        Ok(g)
    }

    /// Initialises one post's series at 0.
    pub fn post(&self, post: &str) {
        self.spool_records.with_label_values(&[post]);
        self.spool_bytes.with_label_values(&[post]);
        self.oldest_unsent_age.with_label_values(&[post]);
        self.forwarded.with_label_values(&[post]);
    }
}
