//! librdkafka statistics as Prometheus series (as Vector does): queue depths, consumer lag,
//! broker round trips and error counts. Label values are topic names, partition numbers and
//! broker names: bounded sets owned by the operator, never record data.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use ewn_ops::metrics::Registrar;
use prometheus::{GaugeVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry};
use rdkafka::Statistics;

/// Per client, the (topic, partition) lag series currently set.
type LagSeries = HashMap<String, HashSet<(String, i32)>>;
/// Per (client, broker), the last cumulative transmit-error count librdkafka reported.
type TxErrs = HashMap<(String, String), u64>;

#[derive(Clone)]
pub struct KafkaMetrics {
    queue_messages: IntGaugeVec,
    queue_bytes: IntGaugeVec,
    consumer_lag: IntGaugeVec,
    broker_rtt_avg: GaugeVec,
    broker_errors: IntCounterVec,
    stats_total: IntCounterVec,
    assigned: IntGaugeVec,
    producer_in_flight: IntGaugeVec,
    producer_full: IntCounterVec,
    producer_renewals: IntCounterVec,
    rejoins: IntCounterVec,
    /// Lag series set per client, so a partition this client no longer owns stops being
    /// reported (a frozen value would mislead after a rebalance).
    lag_series: Arc<Mutex<LagSeries>>,
    /// librdkafka reports transmit errors as a running total per connection; the counter
    /// grows by the difference (a reconnect that restarts the total adds nothing).
    tx_errs: Arc<Mutex<TxErrs>>,
    /// Roles of consumer-group members (see `lag`).
    group_members: Arc<Mutex<HashSet<String>>>,
}

impl KafkaMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let m = Registrar(registry);
        Ok(KafkaMetrics {
            stats_total: m.counter_vec(
                "ewn_kafka_statistics_total",
                "librdkafka statistics reports received",
                &["client"],
            )?,
            producer_full: m.counter_vec(
                "ewn_kafka_producer_queue_full_total",
                "sends that found the producer's in-flight bound reached (each then waited or was refused)",
                &["client"],
            )?,
            producer_renewals: m.counter_vec(
                "ewn_kafka_producer_renewals_total",
                "producers replaced by a new one (a new idempotent producer id) after a record timed out or the broker stopped serving them",
                &["client"],
            )?,
            rejoins: m.counter_vec(
                "ewn_kafka_consumer_rejoins_total",
                "times a consumer-group member left without partitions after a rebalance (or a revocation not followed by an assignment) left the group and joined it again",
                &["client"],
            )?,
            queue_messages: m.gauge_vec(
                "ewn_kafka_queue_messages",
                "messages in the client's produce queue",
                &["client"],
            )?,
            queue_bytes: m.gauge_vec(
                "ewn_kafka_queue_bytes",
                "bytes in the client's produce queue",
                &["client"],
            )?,
            consumer_lag: m.gauge_vec(
                "ewn_kafka_consumer_lag_messages",
                "messages between the consumer's position and the partition's high watermark",
                &["client", "topic", "partition"],
            )?,
            broker_rtt_avg: m.float_gauge_vec(
                "ewn_kafka_broker_rtt_average_seconds",
                "average broker round-trip time over the last statistics window",
                &["client", "broker"],
            )?,
            broker_errors: m.counter_vec(
                "ewn_kafka_broker_transmit_errors_total",
                "transmit errors per broker connection",
                &["client", "broker"],
            )?,
            assigned: m.gauge_vec(
                "ewn_kafka_assigned_partitions",
                "partitions a consumer-group member holds after its last rebalance",
                &["client"],
            )?,
            producer_in_flight: m.gauge_vec(
                "ewn_kafka_producer_in_flight_records",
                "records a producer has queued or awaiting the broker's answer (bound: kafka.max_in_flight_records)",
                &["client"],
            )?,
            lag_series: Arc::default(),
            tx_errs: Arc::default(),
            group_members: Arc::default(),
        })
    }

    /// The series of a client present from its start (at 0), before its first statistics
    /// report or rebalance: a consumer-group member holding nothing reads 0 assigned
    /// partitions, which an alert rule can see.
    pub fn client(&self, client: &str, group_member: bool) {
        self.stats_total.with_label_values(&[client]);
        self.queue_messages.with_label_values(&[client]);
        self.queue_bytes.with_label_values(&[client]);
        if group_member {
            self.assigned.with_label_values(&[client]);
            self.rejoins.with_label_values(&[client]);
            self.group_members
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(client.to_string());
        }
    }

    /// Records how many partitions a group member holds (from the rebalance callbacks).
    pub fn set_assigned(&self, client: &str, partitions: usize) {
        self.assigned
            .with_label_values(&[client])
            .set(partitions as i64);
    }

    /// Counts a re-join of a consumer-group member (see `ewn_kafka::consumer`).
    pub fn rejoined(&self, client: &str) {
        self.rejoins.with_label_values(&[client]).inc();
    }

    /// The in-flight gauge, queue-full counter and renewal counter of a producer, all
    /// present from the start (at 0). Updated without a label lookup; several producers of
    /// one role add up.
    pub(crate) fn producer(&self, client: &str) -> (IntGauge, IntCounter, IntCounter) {
        (
            self.producer_in_flight.with_label_values(&[client]),
            self.producer_full.with_label_values(&[client]),
            self.producer_renewals.with_label_values(&[client]),
        )
    }

    /// Applies one librdkafka statistics report; `client` is the role (`publish`, `process`, ...).
    pub fn observe(&self, client: &str, stats: &Statistics) {
        self.stats_total.with_label_values(&[client]).inc();
        self.queue_messages
            .with_label_values(&[client])
            .set(stats.msg_cnt as i64);
        self.queue_bytes
            .with_label_values(&[client])
            .set(stats.msg_size as i64);
        let group_member = self
            .group_members
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(client);
        let mut now_set = HashSet::new();
        for topic in stats.topics.values() {
            for (id, p) in &topic.partitions {
                // -1 is librdkafka's internal UA partition.
                if *id < 0 {
                    continue;
                }
                if let Some(lag) = lag(p, group_member) {
                    self.consumer_lag
                        .with_label_values(&[client, topic.topic.as_str(), id.to_string().as_str()])
                        .set(lag);
                    now_set.insert((topic.topic.clone(), *id));
                }
            }
        }
        let mut series = self.lag_series.lock().unwrap_or_else(|p| p.into_inner());
        let before = series
            .insert(client.to_string(), now_set.clone())
            .unwrap_or_default();
        for (topic, id) in before.difference(&now_set) {
            let _ = self.consumer_lag.remove_label_values(&[
                client,
                topic.as_str(),
                id.to_string().as_str(),
            ]);
        }
        let mut tx_errs = self.tx_errs.lock().unwrap_or_else(|p| p.into_inner());
        for broker in stats.brokers.values() {
            let name = broker.nodename.as_str();
            if let Some(rtt) = &broker.rtt {
                // librdkafka reports microseconds.
                self.broker_rtt_avg
                    .with_label_values(&[client, name])
                    .set(rtt.avg as f64 / 1e6);
            }
            let last = tx_errs
                .entry((client.to_string(), name.to_string()))
                .or_insert(0);
            let errors = self.broker_errors.with_label_values(&[client, name]);
            errors.inc_by(broker.txerrs.saturating_sub(*last));
            *last = broker.txerrs;
        }
    }
}

/// A partition's lag, when known. librdkafka reports -1 until the consumer has a position
/// or a committed offset; a group member that has never committed starts from the earliest
/// offset (`auto.offset.reset=earliest`), so its lag is everything the partition holds: an
/// idle network reads 0 from the first report, and a backlog at first start is visible.
fn lag(p: &rdkafka::statistics::Partition, group_member: bool) -> Option<i64> {
    if p.consumer_lag >= 0 {
        return Some(p.consumer_lag);
    }
    let active = p.fetch_state == "active" || p.fetch_state == "offset-query";
    (group_member && active && p.committed_offset < 0 && p.hi_offset >= 0 && p.lo_offset >= 0)
        .then(|| p.hi_offset - p.lo_offset)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::statistics::{Partition, Topic};

    fn stats(partitions: &[i32]) -> Statistics {
        let mut topic = Topic {
            topic: "t".into(),
            ..Topic::default()
        };
        for p in partitions {
            topic.partitions.insert(
                *p,
                Partition {
                    partition: *p,
                    consumer_lag: 5,
                    ..Partition::default()
                },
            );
        }
        let mut s = Statistics::default();
        s.topics.insert("t".into(), topic);
        s
    }

    #[test]
    fn lag_of_partitions_no_longer_owned_disappears() {
        let registry = Registry::new();
        let m = KafkaMetrics::register(&registry).unwrap();
        m.observe("process", &stats(&[0, 1, 2]));
        let text = |r: &Registry| {
            let mut out = Vec::new();
            prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &r.gather(), &mut out)
                .unwrap();
            String::from_utf8(out).unwrap()
        };
        assert!(text(&registry).contains("partition=\"2\""));
        m.observe("process", &stats(&[0]));
        let after = text(&registry);
        assert!(after.contains("partition=\"0\""));
        assert!(
            !after.contains("partition=\"1\"") && !after.contains("partition=\"2\""),
            "{after}"
        );
    }

    #[test]
    fn a_group_member_that_never_committed_lags_by_what_the_partition_holds() {
        let registry = Registry::new();
        let m = KafkaMetrics::register(&registry).unwrap();
        m.client("process-ingest", true);
        m.client("fanout-tail", false);
        let mut s = stats(&[0]);
        let p = s
            .topics
            .get_mut("t")
            .unwrap()
            .partitions
            .get_mut(&0)
            .unwrap();
        p.consumer_lag = -1;
        p.committed_offset = -1001;
        p.fetch_state = "active".into();
        p.lo_offset = 2;
        p.hi_offset = 7;
        m.observe("process-ingest", &s);
        m.observe("fanout-tail", &s);
        let lag = |client: &str| {
            m.consumer_lag
                .get_metric_with_label_values(&[client, "t", "0"])
                .map(|g| g.get())
        };
        assert_eq!(lag("process-ingest").unwrap(), 5);
        let text = ewn_ops::metrics::render(&registry);
        assert!(!text.contains("client=\"fanout-tail\",partition"), "{text}");
    }

    #[test]
    fn rtt_in_seconds_and_transmit_errors_counted_by_difference() {
        use rdkafka::statistics::{Broker, Window};
        let registry = Registry::new();
        let m = KafkaMetrics::register(&registry).unwrap();
        let report = |txerrs: u64| {
            let mut s = Statistics::default();
            s.brokers.insert(
                "b1".into(),
                Broker {
                    nodename: "b1:9092".into(),
                    txerrs,
                    rtt: Some(Window {
                        avg: 2_500,
                        ..Window::default()
                    }),
                    ..Broker::default()
                },
            );
            s
        };
        let errors = || {
            m.broker_errors
                .with_label_values(&["process", "b1:9092"])
                .get()
        };
        m.observe("process", &report(3));
        assert_eq!(errors(), 3);
        m.observe("process", &report(5));
        assert_eq!(errors(), 5);
        // A reconnect restarts librdkafka's total: nothing is subtracted.
        m.observe("process", &report(1));
        assert_eq!(errors(), 5);
        m.observe("process", &report(2));
        assert_eq!(errors(), 6);
        let rtt = m
            .broker_rtt_avg
            .with_label_values(&["process", "b1:9092"])
            .get();
        assert!((rtt - 0.0025).abs() < 1e-12, "{rtt}");
    }
}
