//! The fan-out's series (names are a contract with `deploy/`). Label values come from
//! closed sets: channels, outcomes, TLP marks, escalation steps, and agency names, which
//! are configured by the network operator (never a URL or an alert id).

use prometheus::{
    Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry,
};

#[derive(Clone)]
pub struct FanoutMetrics {
    pub alerts: IntCounterVec,
    pub deliveries: IntCounterVec,
    pub retries: IntCounterVec,
    pub dead_letters: IntCounterVec,
    pub delivery_seconds: HistogramVec,
    pub attempt_seconds: Histogram,
    pub end_to_end_seconds: Histogram,
    pub acks: IntCounterVec,
    pub ack_seconds: Histogram,
    pub escalations: IntCounterVec,
    pub stream_clients: IntGaugeVec,
    pub withheld: IntCounterVec,
    pub pending_alerts: IntGauge,
    pub pending_alerts_bound: IntGauge,
    pub subscriptions: IntGauge,
    pub skipped_replays: IntCounter,
    pub undecodable: IntCounterVec,
    pub index_messages: IntGauge,
    pub index_episodes: IntGauge,
    pub index_evicted: IntCounter,
    /// Incidents an episode did not remember for case requests, and the bound.
    pub index_incidents_over_bound: IntCounter,
    pub index_incidents_bound: IntGauge,
    pub orphans: IntCounter,
    pub parked: IntCounterVec,
    pub retry_refused: IntCounterVec,
    pub retry_pending: IntGauge,
    pub retry_done: IntCounter,
    pub receipts_failing: IntGauge,
    pub escalations_pending: IntGauge,
    pub subscription_records_refused: IntCounterVec,
    /// Audit records waiting to be signed and written, and the queue's bound.
    pub audit_queue: IntGauge,
    pub audit_queue_bound: IntGauge,
    pub audit_unconfirmed: IntGauge,
    /// Audit records by outcome (`AUDIT_OUTCOMES`).
    pub audit_records: IntCounterVec,
    /// Desks' case requests by outcome (`CASE_OUTCOMES`).
    pub case_requests: IntCounterVec,
    /// Oversight reads by endpoint and outcome (`OVERSIGHT_ENDPOINTS` x `OVERSIGHT_OUTCOMES`),
    /// their duration, those in progress and their bound.
    pub oversight_reads: IntCounterVec,
    pub oversight_read_seconds: HistogramVec,
    pub oversight_in_flight: IntGauge,
    pub oversight_in_flight_bound: IntGauge,
    /// Entries of each in-memory set (`MEMORY_SETS`) and the bound each is held to.
    pub memory_entries: IntGaugeVec,
    pub memory_bound: IntGaugeVec,
}

/// The fan-out's in-memory sets, the label values of `ewn_fanout_memory_entries` and
/// `ewn_fanout_memory_bound`. Each is bounded (see `settings.rs` for the bound and what
/// happens at it).
pub const MEMORY_SETS: [&str; 7] = [
    "receipts_seen",
    "escalated",
    "escalation_chains",
    "inflight",
    "parked",
    "endpoint_workers",
    "revoked_sessions",
];

/// The values of `outcome` in `ewn_fanout_audit_records_total`: written (confirmed by the
/// broker), dropped (the queue was at `fanout.audit.queue_max`), failed (not signed or not
/// confirmed).
pub const AUDIT_OUTCOMES: [&str; 3] = ["written", "dropped", "failed"];

/// The values of `outcome` in `ewn_fanout_case_requests_total`: sent (confirmed on
/// `<prefix>requests.<cc>`), refused (403: not received in full, or an incident not in the
/// alert), invalid (400: the body), failed (not signed, not confirmed, or case requests
/// off).
pub const CASE_OUTCOMES: [&str; 4] = ["sent", "refused", "invalid", "failed"];
/// The values of `endpoint` in `ewn_fanout_oversight_reads_total` and
/// `ewn_fanout_oversight_read_seconds`.
pub const OVERSIGHT_ENDPOINTS: [&str; 2] = ["receipts", "audit"];
/// The values of `outcome` in `ewn_fanout_oversight_reads_total`: served (a page read to
/// its end or its limit), deadline (a page cut at `fanout.oversight.read_timeout_ms`),
/// busy (429 at `fanout.oversight.max_concurrent_reads`), bad_request, unlogged (503: its
/// audit record was not confirmed, so nothing was shown) and failed (the topics could not
/// be read).
pub const OVERSIGHT_OUTCOMES: [&str; 6] = [
    "served",
    "deadline",
    "busy",
    "bad_request",
    "unlogged",
    "failed",
];

/// The values of `outcome` in `ewn_fanout_deliveries_total`.
pub const OUTCOMES: [&str; 3] = ["delivered", "dead_letter", "endpoint_gone"];
/// The values of `topic` in `ewn_fanout_undecodable_records_total`.
pub const UNDECODABLE_TOPICS: [&str; 3] = ["alerts", "acks", "deliveries"];

const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0,
];
const ACK_BUCKETS: &[f64] = &[
    5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0, 86400.0,
];

impl FanoutMetrics {
    pub fn register(r: &Registry) -> prometheus::Result<Self> {
        let m = Self::series(r)?;
        for reason in crate::retry::REFUSALS {
            m.retry_refused.with_label_values(&[reason]);
        }
        for set in MEMORY_SETS {
            m.memory_entries.with_label_values(&[set]);
            m.memory_bound.with_label_values(&[set]);
        }
        // Every closed label set at 0 from the start, so `increase()` sees the first event.
        for kind in ewn_model::MsgType::ALL {
            m.alerts.with_label_values(&[kind.as_str()]);
        }
        for tlp in ewn_model::Tlp::ALL {
            m.withheld.with_label_values(&[tlp.as_str()]);
        }
        for topic in UNDECODABLE_TOPICS {
            m.undecodable.with_label_values(&[topic]);
        }
        for channel in ewn_model::Channel::ALL {
            m.delivery_seconds
                .with_label_values(&[crate::delivery::channel_label(*channel)]);
        }
        Ok(m)
    }

    /// The series of a subscription's agency and channel at 0, when it appears (from the
    /// configuration, the admin API or the topic); counters stay when it goes (they count
    /// history).
    pub fn subscription(&self, sub: &ewn_model::Subscription) {
        let agency = sub.agency.as_str();
        let ch = crate::delivery::channel_label(sub.channel);
        for outcome in OUTCOMES {
            self.deliveries.with_label_values(&[ch, outcome, agency]);
        }
        self.retries.with_label_values(&[ch, agency]);
        self.dead_letters.with_label_values(&[agency]);
        if sub.channel == ewn_model::Channel::Webhook {
            self.parked.with_label_values(&[agency]);
        }
        if sub.channel == ewn_model::Channel::Stream {
            self.stream_clients.with_label_values(&[agency]);
        }
        for via in ewn_model::AckVia::ALL {
            self.acks
                .with_label_values(&[agency, &via.as_str().to_ascii_lowercase()]);
        }
        for step in 1..=sub.escalation.len() {
            self.escalations.with_label_values(&[&step.to_string()]);
        }
    }

    fn series(r: &Registry) -> prometheus::Result<Self> {
        let m = ewn_ops::metrics::Registrar(r);
        let subscription_records_refused = m.counter_vec(
            "ewn_fanout_subscription_records_refused_total",
            "records of the subscriptions topic not applied: unsealed, forged, malformed, \
             wrong_id, secret (does not open) or tombstone (for a subscription in force)",
            &["reason"],
        )?;
        for r in crate::sealed::Refused::ALL {
            subscription_records_refused.with_label_values(&[r.label()]);
        }
        let audit_records = m.counter_vec(
            "ewn_fanout_audit_records_total",
            "audit records of administrative acts: written, dropped at fanout.audit.queue_max, \
             or failed (not signed or not confirmed)",
            &["outcome"],
        )?;
        for o in AUDIT_OUTCOMES {
            audit_records.with_label_values(&[o]);
        }
        let case_requests = m.counter_vec(
            "ewn_fanout_case_requests_total",
            "desks' case requests: sent to the originating state, refused (not received in \
             full, or an incident not in the alert), invalid (the body), failed",
            &["outcome"],
        )?;
        for o in CASE_OUTCOMES {
            case_requests.with_label_values(&[o]);
        }
        let oversight_reads = m.counter_vec(
            "ewn_fanout_oversight_reads_total",
            "reads of the oversight endpoints, by endpoint and outcome",
            &["endpoint", "outcome"],
        )?;
        let oversight_read_seconds = m.histogram_vec(
            "ewn_fanout_oversight_read_seconds",
            "one oversight read, request to response (its audit record confirmed)",
            LATENCY_BUCKETS,
            &["endpoint"],
        )?;
        for e in OVERSIGHT_ENDPOINTS {
            oversight_read_seconds.with_label_values(&[e]);
            for o in OVERSIGHT_OUTCOMES {
                oversight_reads.with_label_values(&[e, o]);
            }
        }
        Ok(FanoutMetrics {
            oversight_reads,
            oversight_read_seconds,
            oversight_in_flight: m.gauge(
                "ewn_fanout_oversight_reads_in_flight",
                "oversight reads being served",
            )?,
            oversight_in_flight_bound: m.gauge(
                "ewn_fanout_oversight_reads_in_flight_bound",
                "fanout.oversight.max_concurrent_reads: past it a read is answered 429 (configuration)",
            )?,
            subscription_records_refused,
            audit_records,
            case_requests,
            audit_queue: m.gauge(
                "ewn_fanout_audit_queue_records",
                "audit records waiting to be signed and written",
            )?,
            audit_queue_bound: m.gauge(
                "ewn_fanout_audit_queue_bound_records",
                "fanout.audit.queue_max: past it a new audit record is dropped and counted",
            )?,
            audit_unconfirmed: m.gauge(
                "ewn_fanout_audit_unconfirmed_records",
                "audit records handed to the broker and not yet confirmed (the writer writes one \
                 at a time: 1 for long means a stalled broker)",
            )?,
            alerts: m.counter_vec(
                "ewn_fanout_alerts_total",
                "alert records read, by message type",
                &["msg_type"],
            )?,
            deliveries: m.counter_vec(
                "ewn_fanout_deliveries_total",
                "terminal delivery outcomes",
                &["channel", "outcome", "agency"],
            )?,
            retries: m.counter_vec(
                "ewn_fanout_delivery_retries_total",
                "delivery attempts after the first",
                &["channel", "agency"],
            )?,
            dead_letters: m.counter_vec(
                "ewn_fanout_dead_letters_total",
                "deliveries given up after the last attempt",
                &["agency"],
            )?,
            delivery_seconds: m.histogram_vec(
                "ewn_fanout_delivery_seconds",
                "alert created_at to delivered",
                LATENCY_BUCKETS,
                &["channel"],
            )?,
            attempt_seconds: m.histogram(
                "ewn_fanout_webhook_attempt_seconds",
                "one webhook attempt, request to response",
                LATENCY_BUCKETS,
            )?,
            end_to_end_seconds: m.histogram(
                "ewn_fanout_end_to_end_seconds",
                "newest contributing incident's occurred_at (the alert's window_end) to delivered",
                LATENCY_BUCKETS,
            )?,
            acks: m.counter_vec(
                "ewn_fanout_acks_total",
                "acknowledgements recorded",
                &["agency", "via"],
            )?,
            ack_seconds: m.histogram(
                "ewn_fanout_ack_seconds",
                "alert created_at to acknowledged",
                ACK_BUCKETS,
            )?,
            escalations: m.counter_vec(
                "ewn_fanout_escalations_total",
                "escalation steps taken for unacknowledged alerts",
                &["step"],
            )?,
            stream_clients: m.gauge_vec(
                "ewn_fanout_stream_clients",
                "connected live-stream clients",
                &["agency"],
            )?,
            withheld: m.counter_vec(
                "ewn_fanout_withheld_total",
                "alerts withheld from a matching subscriber for clearance",
                &["tlp"],
            )?,
            pending_alerts: m.gauge(
                "ewn_fanout_pending_alerts",
                "alerts read whose deliveries are not all terminal",
            )?,
            pending_alerts_bound: m.gauge(
                "ewn_fanout_pending_alerts_bound",
                "fanout.max_pending_alerts: at it the fan-out stops reading alerts (configuration)",
            )?,
            subscriptions: m.gauge("ewn_fanout_subscriptions", "subscriptions in force")?,
            skipped_replays: m.counter(
                "ewn_fanout_replayed_deliveries_skipped_total",
                "deliveries skipped after a restart because a receipt already records them",
            )?,
            undecodable: m.counter_vec(
                "ewn_fanout_undecodable_records_total",
                "records of an input topic that did not decode",
                &["topic"],
            )?,
            index_messages: m.gauge(
                "ewn_fanout_index_messages",
                "alert messages in the alert index (bound: fanout.index.max_messages)",
            )?,
            index_episodes: m.gauge(
                "ewn_fanout_index_episodes",
                "episodes (an alert and its updates and cancel) in the alert index",
            )?,
            index_evicted: m.counter(
                "ewn_fanout_index_evicted_episodes_total",
                "episodes forgotten by the alert index at its bound, oldest first",
            )?,
            index_incidents_over_bound: m.counter(
                "ewn_fanout_index_episode_incidents_over_bound_total",
                "incidents of an episode's evidence the alert index did not remember for case \
                 requests, the episode holding fanout.index.max_episode_incidents already (a \
                 request for one is refused 403 naming incident_id)",
            )?,
            index_incidents_bound: m.gauge(
                "ewn_fanout_index_episode_incidents_bound",
                "fanout.index.max_episode_incidents: incidents an episode remembers for case requests",
            )?,
            orphans: m.counter(
                "ewn_fanout_orphan_messages_total",
                "updates and cancels whose alert the index does not hold, decided on their own marking",
            )?,
            parked: m.counter_vec(
                "ewn_fanout_parked_deliveries_total",
                "webhook deliveries moved to the retry path after their endpoint failed or hung",
                &["agency"],
            )?,
            retry_refused: m.counter_vec(
                "ewn_fanout_retry_records_refused_total",
                "records of <prefix>retries refused (undecodable, unauthenticated, bad_alert)",
                &["reason"],
            )?,
            memory_entries: m.gauge_vec(
                "ewn_fanout_memory_entries",
                "entries held in each in-memory set of the fan-out",
                &["set"],
            )?,
            memory_bound: m.gauge_vec(
                "ewn_fanout_memory_bound",
                "the bound each in-memory set of the fan-out is held to (configuration)",
                &["set"],
            )?,
            escalations_pending: m.gauge(
                "ewn_fanout_escalations_pending",
                "escalation steps armed and not yet due",
            )?,
            receipts_failing: m.gauge(
                "ewn_fanout_receipts_failing",
                "delivery receipts the broker did not confirm, being written again",
            )?,
            retry_done: m.counter(
                "ewn_fanout_retries_settled_total",
                "parked deliveries read back from <prefix>retries and terminal (committed)",
            )?,
            retry_pending: m.gauge(
                "ewn_fanout_retry_pending",
                "parked deliveries read from <prefix>retries and not yet terminal (bound: fanout.max_pending_alerts)",
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(agency: &str, channel: ewn_model::Channel) -> ewn_model::Subscription {
        ewn_model::Subscription {
            id: "s1".into(),
            agency: agency.into(),
            clearance: ewn_model::Tlp::Amber,
            min_level: ewn_model::Level::Low,
            categories: vec![],
            states: vec![],
            areas: vec![],
            rules: vec![],
            format: ewn_model::Format::Json,
            channel,
            webhook_url: None,
            webhook_secret: None,
            redacted_above_clearance: false,
            escalation: vec![],
            updated_at: 0,
            disabled_at: None,
            disabled_reason: None,
            languages: vec![],
        }
    }

    #[test]
    fn closed_sets_and_each_subscriptions_series_start_at_zero() {
        let r = Registry::new();
        let m = FanoutMetrics::register(&r).unwrap();
        let text = ewn_ops::metrics::render(&r);
        for line in [
            "ewn_fanout_alerts_total{msg_type=\"CANCEL\"} 0",
            "ewn_fanout_withheld_total{tlp=\"RED\"} 0",
            "ewn_fanout_undecodable_records_total{topic=\"alerts\"} 0",
            "ewn_fanout_oversight_reads_total{endpoint=\"audit\",outcome=\"unlogged\"} 0",
            "ewn_fanout_oversight_read_seconds_count{endpoint=\"receipts\"} 0",
            "ewn_fanout_oversight_reads_in_flight 0",
        ] {
            assert!(text.contains(line), "{line} missing:\n{text}");
        }
        assert!(!text.contains("agency=\"KZ-DESK\""));
        m.subscription(&sub("KZ-DESK", ewn_model::Channel::Webhook));
        let text = ewn_ops::metrics::render(&r);
        for line in [
            "ewn_fanout_dead_letters_total{agency=\"KZ-DESK\"} 0",
            "ewn_fanout_deliveries_total{agency=\"KZ-DESK\",channel=\"webhook\",outcome=\"endpoint_gone\"} 0",
            "ewn_fanout_delivery_retries_total{agency=\"KZ-DESK\",channel=\"webhook\"} 0",
            "ewn_fanout_parked_deliveries_total{agency=\"KZ-DESK\"} 0",
            "ewn_fanout_acks_total{agency=\"KZ-DESK\",via=\"console\"} 0",
        ] {
            assert!(text.contains(line), "{line} missing:\n{text}");
        }
    }
}
