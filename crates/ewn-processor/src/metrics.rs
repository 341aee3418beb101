//! The processor's series (names are a contract with `deploy/`): counted per batch on the
//! hot path, label values from closed sets (states, reason codes, rule names, levels).

use prometheus::{Histogram, IntCounterVec, IntGaugeVec, Registry};

#[derive(Clone)]
pub struct ProcessorMetrics {
    pub received: IntCounterVec,
    pub verified: IntCounterVec,
    pub rejected: IntCounterVec,
    pub verify_batch_size: Histogram,
    pub verify_seconds: Histogram,
    pub score_seconds: Histogram,
    pub correlate_seconds: Histogram,
    pub confirm_seconds: prometheus::HistogramVec,
    pub commit_seconds: prometheus::HistogramVec,
    pub alerts: IntCounterVec,
    pub late: IntCounterVec,
    pub correlated: prometheus::IntCounter,
    pub event_to_alert: Histogram,
    pub publish_to_alert: Histogram,
    pub watermark_lag: IntGaugeVec,
    pub state_keys: IntGaugeVec,
    pub rule_reloads: IntCounterVec,
    pub trust_reloads: IntCounterVec,
    pub audit_records: IntCounterVec,
    pub state_events: IntGaugeVec,
    pub state_bytes: prometheus::IntGauge,
    pub state_refused: IntCounterVec,
    pub state_keys_evicted: IntCounterVec,
    pub updates_coalesced: prometheus::IntCounter,
    pub alert_limits: IntCounterVec,
    pub watermark_sources: prometheus::IntGauge,
    pub watermark_untracked: prometheus::IntCounter,
    pub replay_ids: prometheus::IntGauge,
    pub replay_forgotten_early: prometheus::IntCounter,
    pub unowned_records: prometheus::IntCounter,
    pub heartbeats_verified: IntCounterVec,
    pub heartbeats_rejected: IntCounterVec,
    pub source_last_seen: IntGaugeVec,
    pub post_last_seen: IntGaugeVec,
    pub post_oldest_unsent: IntGaugeVec,
    pub post_spool_reports: IntGaugeVec,
    pub source_posts: prometheus::IntGauge,
    pub source_posts_untracked: prometheus::IntCounter,
}

const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0,
];
const STAGE_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

impl ProcessorMetrics {
    pub fn register(r: &Registry) -> prometheus::Result<Self> {
        let m = ewn_ops::metrics::Registrar(r);
        Ok(ProcessorMetrics {
            received: m.counter_vec(
                "ewn_processor_incidents_received_total",
                "records read from incident topics",
                &["state"],
            )?,
            verified: m.counter_vec(
                "ewn_processor_incidents_verified_total",
                "incidents that passed verification",
                &["state"],
            )?,
            rejected: m.counter_vec(
                "ewn_processor_incidents_rejected_total",
                "records rejected, by reason and the state whose topic carried them",
                &["reason", "state"],
            )?,
            verify_batch_size: m.histogram(
                "ewn_processor_verify_batch_size",
                "signatures verified per batch",
                &[1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0],
            )?,
            verify_seconds: m.histogram(
                "ewn_processor_verify_seconds",
                "time to verify one batch",
                STAGE_BUCKETS,
            )?,
            score_seconds: m.histogram(
                "ewn_processor_score_seconds",
                "time to score one batch",
                STAGE_BUCKETS,
            )?,
            correlate_seconds: m.histogram(
                "ewn_processor_correlate_seconds",
                "time to correlate one batch",
                STAGE_BUCKETS,
            )?,
            confirm_seconds: m.histogram_vec(
                "ewn_processor_output_confirm_seconds",
                "time for the broker to confirm a batch's outputs",
                STAGE_BUCKETS,
                &["stage"],
            )?,
            commit_seconds: m.histogram_vec(
                "ewn_processor_commit_seconds",
                "time to commit a batch's offsets",
                STAGE_BUCKETS,
                &["stage"],
            )?,
            alerts: m.counter_vec(
                "ewn_processor_alerts_total",
                "alerts produced",
                &["rule", "level", "msg_type"],
            )?,
            late: m.counter_vec(
                "ewn_processor_late_events_total",
                "events behind the watermark, not merged",
                &["rule"],
            )?,
            correlated: m.counter(
                "ewn_processor_correlated_events_total",
                "re-keyed events the correlate stage consumed",
            )?,
            event_to_alert: m.histogram(
                "ewn_processor_event_to_alert_seconds",
                "incident occurred_at to alert produced",
                LATENCY_BUCKETS,
            )?,
            publish_to_alert: m.histogram(
                "ewn_processor_publish_to_alert_seconds",
                "incident reported_at to alert produced",
                LATENCY_BUCKETS,
            )?,
            watermark_lag: m.gauge_vec(
                "ewn_processor_watermark_lag_seconds",
                "now minus the partition's watermark",
                &["partition"],
            )?,
            state_keys: m.gauge_vec(
                "ewn_processor_state_keys",
                "correlation keys held",
                &["rule"],
            )?,
            rule_reloads: m.counter_vec(
                "ewn_processor_rule_reloads_total",
                "rules-file reloads",
                &["outcome"],
            )?,
            trust_reloads: m.counter_vec(
                "ewn_processor_trust_reloads_total",
                "trust-store reloads",
                &["outcome"],
            )?,
            audit_records: m.counter_vec(
                "ewn_processor_audit_records_total",
                "audit records of trust-store and rules reloads on <prefix>audit (process.audit): written (confirmed) or failed (a gap in the audit log)",
                &["action", "outcome"],
            )?,
            state_events: m.gauge_vec(
                "ewn_processor_state_events",
                "events held in correlation windows (bound: process.state.max_events_per_key per key)",
                &["rule"],
            )?,
            state_bytes: m.gauge(
                "ewn_processor_state_bytes",
                "estimated bytes of correlation state held",
            )?,
            state_refused: m.counter_vec(
                "ewn_processor_state_refused_total",
                "events not merged because their key was at process.state.max_events_per_key",
                &["rule"],
            )?,
            state_keys_evicted: m.counter_vec(
                "ewn_processor_state_keys_evicted_total",
                "keys evicted early at process.state.max_keys_per_rule",
                &["rule"],
            )?,
            updates_coalesced: m.counter(
                "ewn_processor_updates_coalesced_total",
                "UPDATE messages folded into a later one (process.alerts.update_interval_secs)",
            )?,
            alert_limits: m.counter_vec(
                "ewn_processor_alert_limits_total",
                "alert messages that report a bound reached, by bound",
                &["limit"],
            )?,
            watermark_sources: m.gauge(
                "ewn_processor_watermark_sources",
                "event-time sources active in the partitions held (bound: process.state.max_sources each)",
            )?,
            watermark_untracked: m.counter(
                "ewn_processor_watermark_untracked_sources_total",
                "new sources not tracked because a partition was at process.state.max_sources",
            )?,
            replay_ids: m.gauge(
                "ewn_processor_replay_ids",
                "incident ids held by the replay guard (bound: process.replay_max_ids)",
            )?,
            replay_forgotten_early: m.counter(
                "ewn_processor_replay_forgotten_early_total",
                "incident ids forgotten before the replay window ended, at process.replay_max_ids",
            )?,
            unowned_records: m.counter(
                "ewn_processor_unowned_records_total",
                "re-keyed records of a partition revoked during the poll, or read under its previous assignment: skipped, not committed",
            )?,
            heartbeats_verified: m.counter_vec(
                "ewn_processor_heartbeats_verified_total",
                "gateway heartbeats that passed verification",
                &["state"],
            )?,
            heartbeats_rejected: m.counter_vec(
                "ewn_processor_heartbeats_rejected_total",
                "gateway heartbeats rejected, by reason code",
                &["reason", "state"],
            )?,
            source_last_seen: m.gauge_vec(
                "ewn_processor_source_last_seen_timestamp_seconds",
                "when the state was last heard from (heartbeat or report, at its signing time); the processor's start while not heard since",
                &["state"],
            )?,
            post_last_seen: m.gauge_vec(
                "ewn_processor_source_post_last_seen_timestamp_seconds",
                "when the post was last heard from (report, or its gateway's contact with it); the processor's start while not heard since",
                &["state", "post"],
            )?,
            post_oldest_unsent: m.gauge_vec(
                "ewn_processor_source_post_oldest_unsent_age_seconds",
                "age of the post's oldest report its gateway has not yet delivered, as of its last heartbeat (0: none waiting)",
                &["state", "post"],
            )?,
            post_spool_reports: m.gauge_vec(
                "ewn_processor_source_post_spool_reports",
                "reports of the post waiting in its gateway's spool, as of its last heartbeat",
                &["state", "post"],
            )?,
            source_posts: m.gauge(
                "ewn_processor_source_posts",
                "posts tracked for silence (bound: process.sources.max_posts)",
            )?,
            source_posts_untracked: m.counter(
                "ewn_processor_source_posts_untracked_total",
                "new posts not tracked because process.sources.max_posts was reached",
            )?,
        })
    }
}
