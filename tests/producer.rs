//! The shared confirming producer against a real broker: every way of hearing the broker's
//! answer gets it, and at the in-flight bound `send_async` waits for room without holding
//! the thread (on a single-threaded runtime other tasks keep running).
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ewn_kafka::admin::ensure_topics;
use ewn_kafka::{ConfirmingProducer, Error, KafkaMetrics, KafkaSettings, Then, TopicSpec};
use ewn_testkit::{kafka_settings, unique_prefix};
use prometheus::Registry;

fn metric(registry: &Registry, name: &str) -> f64 {
    registry
        .gather()
        .iter()
        .filter(|f| f.name() == name)
        .flat_map(|f| f.get_metric().iter())
        .map(|m| m.get_gauge().get_value() + m.get_counter().get_value())
        .sum()
}

async fn topic(settings: &KafkaSettings) -> String {
    let name = format!("{}producer", settings.topic_prefix);
    let spec = TopicSpec {
        name: name.clone(),
        partitions: 1,
        compacted: false,
    };
    ensure_topics(settings, &[spec]).await.unwrap();
    name
}

#[test]
fn every_form_of_answer_arrives() {
    let settings = kafka_settings(&unique_prefix("confirm"));
    let registry = Registry::new();
    let metrics = KafkaMetrics::register(&registry).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let topic = topic(&settings).await;
        let p = Arc::new(ConfirmingProducer::new(&settings, "test", (), Some(metrics)).unwrap());
        assert_eq!(
            metric(&registry, "ewn_kafka_producer_in_flight_records"),
            0.0
        );
        let mut confirmations = Vec::new();
        for n in 0..20u32 {
            let value = n.to_be_bytes();
            confirmations.push(p.send_async(&topic, None, Some(&value)).await.unwrap());
        }
        confirmations.push(p.try_send(&topic, Some(b"k"), Some(b"try")).unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel();
        p.send_with_async(
            &topic,
            None,
            Some(b"callback"),
            Then::call(move |o| {
                let _ = tx.send(o);
            }),
        )
        .await
        .unwrap();
        let blocking = {
            let (p, topic) = (p.clone(), topic.clone());
            tokio::task::spawn_blocking(move || p.send_blocking(&topic, None, Some(b"blocking")))
        };
        confirmations.push(blocking.await.unwrap().unwrap());
        let mut offsets = Vec::new();
        for c in confirmations {
            let landed = tokio::time::timeout(Duration::from_secs(30), c)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(landed.partition, 0);
            offsets.push(landed.offset);
        }
        offsets.push(rx.await.unwrap().unwrap().offset);
        offsets.sort();
        offsets.dedup();
        assert_eq!(offsets.len(), 23, "each record has an offset of its own");
        assert_eq!(
            metric(&registry, "ewn_kafka_producer_in_flight_records"),
            0.0
        );
    });
}

#[test]
fn send_async_waits_for_room_without_holding_the_thread() {
    let settings = KafkaSettings {
        max_in_flight_records: 2,
        // Each record stays in flight a while, so the bound is reached.
        linger_ms: 50,
        ..kafka_settings(&unique_prefix("bound"))
    };
    let registry = Registry::new();
    let metrics = KafkaMetrics::register(&registry).unwrap();
    // One thread: if a send blocked it, the ticker below could not run.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let topic = topic(&settings).await;
        let p = Arc::new(ConfirmingProducer::new(&settings, "test", (), Some(metrics)).unwrap());
        let ticks = Arc::new(AtomicU64::new(0));
        let most_in_flight = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let ticker = {
            let (ticks, most, stop, registry) = (
                ticks.clone(),
                most_in_flight.clone(),
                stop.clone(),
                registry.clone(),
            );
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let now = metric(&registry, "ewn_kafka_producer_in_flight_records") as u64;
                    most.fetch_max(now, Ordering::Relaxed);
                    ticks.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
        };
        let started = Instant::now();
        let mut confirmations = Vec::new();
        let mut refused = 0;
        for n in 0..12u32 {
            let value = n.to_be_bytes();
            // At the bound, try_send says so at once; send_async then waits for room.
            match p.try_send(&topic, None, Some(&value)) {
                Ok(c) => confirmations.push(c),
                Err(e) => {
                    assert!(matches!(e, Error::QueueFull { limit: 2, .. }), "{e}");
                    assert!(e.is_transient());
                    refused += 1;
                    confirmations.push(p.send_async(&topic, None, Some(&value)).await.unwrap());
                }
            }
        }
        let sending = started.elapsed();
        for c in confirmations {
            c.await.unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        ticker.await.unwrap();
        assert!(refused > 0, "the bound of 2 was never reached");
        assert!(
            metric(&registry, "ewn_kafka_producer_queue_full_total") >= 2.0 * refused as f64,
            "each refusal and each wait is counted"
        );
        assert!(most_in_flight.load(Ordering::Relaxed) <= 2);
        // 12 records, 2 at a time, each lingering 50 ms: sending took several round trips,
        // and the ticker kept running throughout.
        assert!(sending >= Duration::from_millis(100), "{sending:?}");
        let ticked = ticks.load(Ordering::Relaxed);
        assert!(
            ticked as f64 >= sending.as_millis() as f64 / 20.0,
            "{ticked} ticks in {sending:?}: the sends held the thread"
        );
        assert_eq!(
            metric(&registry, "ewn_kafka_producer_in_flight_records"),
            0.0
        );
    });
}
