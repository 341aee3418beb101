//! The gateway's series (names are a contract with `deploy/`). Label values come from
//! closed sets: intake paths and outcomes, and post ids, which the state configures (the
//! tokens file and the file-drop directories), never anything a request makes up.

use prometheus::{Histogram, IntCounter, IntCounterVec, IntGaugeVec, Registry};

/// Intake paths.
pub const VIAS: [&str; 2] = ["http", "file"];
/// What became of a report offered to intake.
/// Intake outcomes: `duplicate` is a report accepted before and sent again (answered as
/// accepted, not stored again).
pub const OUTCOMES: [&str; 5] = ["accepted", "duplicate", "invalid", "spool_full", "error"];

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
    /// Accepted incident ids remembered to recognise a report sent again.
    pub accepted_ids: prometheus::IntGauge,
    pub details_reports: prometheus::IntGauge,
    pub details_bytes: prometheus::IntGauge,
    pub details_bound_reports: prometheus::IntGauge,
    pub details_bound_bytes: prometheus::IntGauge,
    pub details_erased: IntCounterVec,
    pub case_requests: IntCounterVec,
    pub case_requests_pending: prometheus::IntGauge,
    pub case_requests_bound: prometheus::IntGauge,
}

/// Why raw details were erased.
pub const ERASED: [&str; 2] = ["retention", "bound"];
/// What became of a case request (read from the topic, or decided by an operator).
pub const CASE_OUTCOMES: [&str; 7] = [
    "received",
    "known",
    "invalid",
    "over_bound",
    "approved",
    "declined",
    "failed",
];

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
                 spooled and synced; duplicate: accepted before, not stored again; invalid; \
                 spool_full: refused with 507; error: the spool could not be written)",
                &["via", "outcome"],
            )?,
            accepted_ids: m.gauge(
                "ewn_gateway_accepted_ids",
                "incident ids remembered to answer a report sent again without signing it \
                 again (bounded by gateway.spool.remember_max_ids)",
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
            details_reports: m.gauge(
                "ewn_gateway_details_reports",
                "reports whose raw details the gateway keeps for case requests",
            )?,
            details_bytes: m.gauge(
                "ewn_gateway_details_bytes",
                "bytes of raw details kept for case requests",
            )?,
            details_bound_reports: m.gauge(
                "ewn_gateway_details_bound_reports",
                "gateway.details.max_reports: past it the oldest details are erased first",
            )?,
            details_bound_bytes: m.gauge(
                "ewn_gateway_details_bound_bytes",
                "gateway.details.max_bytes: past it the oldest details are erased first",
            )?,
            details_erased: m.counter_vec(
                "ewn_gateway_details_erased_total",
                "raw details erased: retention (older than gateway.details.retention_secs) or \
                 bound (erased early at gateway.details.max_reports or max_bytes)",
                &["reason"],
            )?,
            case_requests: m.counter_vec(
                "ewn_gateway_case_requests_total",
                "case requests: received (verified, kept pending), known (read again), \
                 invalid (undecodable, bad signature, other state), over_bound (not kept: \
                 gateway.requests.max_pending), approved, declined, failed (answer not sent)",
                &["outcome"],
            )?,
            case_requests_pending: m.gauge(
                "ewn_gateway_case_requests_pending",
                "case requests waiting for an operator's decision",
            )?,
            case_requests_bound: m.gauge(
                "ewn_gateway_case_requests_bound",
                "gateway.requests.max_pending",
            )?,
        };
        for reason in ERASED {
            g.details_erased.with_label_values(&[reason]);
        }
        for outcome in CASE_OUTCOMES {
            g.case_requests.with_label_values(&[outcome]);
        }
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

    /// Shows what the spool holds for `post`.
    pub fn spool_depth(&self, post: &str, depth: &crate::spool::PostDepth) {
        self.spool_records
            .with_label_values(&[post])
            .set(depth.records as i64);
        self.spool_bytes
            .with_label_values(&[post])
            .set(depth.bytes as i64);
    }

    /// Initialises one post's series at 0.
    pub fn post(&self, post: &str) {
        self.spool_records.with_label_values(&[post]);
        self.spool_bytes.with_label_values(&[post]);
        self.oldest_unsent_age.with_label_values(&[post]);
        self.forwarded.with_label_values(&[post]);
    }
}
