//! The fan-out's series (names are a contract with `deploy/`). Label values come from
//! closed sets: channels, outcomes, TLP marks, escalation steps, and agency names, which
//! are configured by the network operator (never a URL or an alert id).

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
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
    pub subscriptions: IntGauge,
    pub skipped_replays: IntCounter,
    pub undecodable: IntCounterVec,
}

const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0,
];
const ACK_BUCKETS: &[f64] = &[
    5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0, 86400.0,
];

impl FanoutMetrics {
    pub fn register(r: &Registry) -> prometheus::Result<Self> {
        fn reg<T: prometheus::core::Collector + Clone + 'static>(
            r: &Registry,
            c: T,
        ) -> prometheus::Result<T> {
            r.register(Box::new(c.clone()))?;
            Ok(c)
        }
        let counter = |name: &str, help: &str, labels: &[&str]| {
            reg(r, IntCounterVec::new(Opts::new(name, help), labels)?)
        };
        let hist = |name: &str, help: &str, buckets: &[f64]| {
            reg(
                r,
                Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))?,
            )
        };
        let gauge = |name: &str, help: &str| reg(r, IntGauge::new(name, help)?);
        Ok(FanoutMetrics {
            alerts: counter(
                "ewn_fanout_alerts_total",
                "alert records read, by message type",
                &["msg_type"],
            )?,
            deliveries: counter(
                "ewn_fanout_deliveries_total",
                "terminal delivery outcomes",
                &["channel", "outcome", "agency"],
            )?,
            retries: counter(
                "ewn_fanout_delivery_retries_total",
                "delivery attempts after the first",
                &["channel", "agency"],
            )?,
            dead_letters: counter(
                "ewn_fanout_dead_letters_total",
                "deliveries given up after the last attempt",
                &["agency"],
            )?,
            delivery_seconds: reg(
                r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "ewn_fanout_delivery_seconds",
                        "alert created_at to delivered",
                    )
                    .buckets(LATENCY_BUCKETS.to_vec()),
                    &["channel"],
                )?,
            )?,
            attempt_seconds: hist(
                "ewn_fanout_webhook_attempt_seconds",
                "one webhook attempt, request to response",
                LATENCY_BUCKETS,
            )?,
            end_to_end_seconds: hist(
                "ewn_fanout_end_to_end_seconds",
                "newest contributing incident's occurred_at (the alert's window_end) to delivered",
                LATENCY_BUCKETS,
            )?,
            acks: counter(
                "ewn_fanout_acks_total",
                "acknowledgements recorded",
                &["agency", "via"],
            )?,
            ack_seconds: hist(
                "ewn_fanout_ack_seconds",
                "alert created_at to acknowledged",
                ACK_BUCKETS,
            )?,
            escalations: counter(
                "ewn_fanout_escalations_total",
                "escalation steps taken for unacknowledged alerts",
                &["step"],
            )?,
            stream_clients: reg(
                r,
                IntGaugeVec::new(
                    Opts::new("ewn_fanout_stream_clients", "connected live-stream clients"),
                    &["agency"],
                )?,
            )?,
            withheld: counter(
                "ewn_fanout_withheld_total",
                "alerts withheld from a matching subscriber for clearance",
                &["tlp"],
            )?,
            pending_alerts: gauge(
                "ewn_fanout_pending_alerts",
                "alerts read whose deliveries are not all terminal",
            )?,
            subscriptions: gauge("ewn_fanout_subscriptions", "subscriptions in force")?,
            skipped_replays: reg(
                r,
                IntCounter::new(
                    "ewn_fanout_replayed_deliveries_skipped_total",
                    "deliveries skipped after a restart because a receipt already records them",
                )?,
            )?,
            undecodable: counter(
                "ewn_fanout_undecodable_records_total",
                "records of an input topic that did not decode",
                &["topic"],
            )?,
        })
    }
}
