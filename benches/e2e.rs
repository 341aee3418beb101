//! End-to-end bench: the processor on a real broker (Tansu, memory engine), against a
//! plain consume-and-produce passthrough on the same broker in the same run.
//!
//! `cargo bench -p ewn --bench e2e` (or `make bench-e2e`). `EWN_BENCH_INCIDENTS` sets the
//! load (default 50,000), `EWN_BENCH_RATE` and `EWN_BENCH_SECS` the live phase.
//!
//! Prints:
//! - passthrough: records/s consumed, produced and confirmed, batch by batch, with commits;
//! - processor: incidents/s verified, scored, re-keyed and correlated (both stages), and its
//!   ratio to the passthrough;
//! - latency from publish to alert readable on the alerts topic, p50/p99, for an immediate
//!   rule (watch-list hit) and a correlated one (cross-border movement), under live load.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use ewn_kafka::producer::Tally;
use ewn_kafka::{
    AssignedReader, CommitOffset, GroupConsumer, KafkaSettings, RecordProducer, StartAt,
    Subscription,
};
use ewn_model::{Alert, AvroRecord, Category, Incident, Level, MsgType, SourceReliability};
use ewn_testkit::{Engine, start_broker};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Background traffic: low-scoring crossings, each subject seen once, spread over areas.
fn background(n: u64, t: i64) -> Incident {
    let state = ["KZ", "KG", "TJ", "UZ", "TM"][(n % 5) as usize];
    let mut i = incident(
        n,
        state,
        t,
        Category::SuspiciousCrossing,
        &[&format!("bg-{n}")],
    );
    i.severity = Level::Low;
    i.source_reliability = SourceReliability::C;
    i.info_credibility = 3;
    in_area(i, &format!("{state}-AREA-{}", n % 40))
}

fn passthrough(settings: &KafkaSettings, values: &[(String, Vec<u8>, Vec<u8>)]) -> f64 {
    let src = format!("{}bench.src", settings.topic_prefix);
    let dst = format!("{}bench.dst", settings.topic_prefix);
    let specs = [src.clone(), dst.clone()].map(|name| ewn_kafka::TopicSpec {
        name,
        partitions: settings.partitions,
        compacted: false,
    });
    block_on(ewn_kafka::admin::ensure_topics(settings, &specs)).unwrap();
    let tally = Arc::new(Tally::default());
    let producer = RecordProducer::new(settings, "bench-load", tally.clone(), None).unwrap();
    for (i, (_, key, value)) in values.iter().enumerate() {
        producer.send(&src, Some(key), Some(value), i).unwrap();
    }
    producer.flush(Duration::from_secs(60)).unwrap();
    drop(producer);

    let consumer = GroupConsumer::new(
        settings,
        "bench-pass",
        "bench-passthrough",
        &Subscription::Topics(vec![src.clone()]),
        None,
    )
    .unwrap();
    let tally = Arc::new(Tally::default());
    let out = RecordProducer::new(settings, "bench-pass", tally.clone(), None).unwrap();
    let mut seen = 0usize;
    let mut first: Option<Instant> = None;
    while seen < values.len() {
        let mut offsets: HashMap<i32, i64> = HashMap::new();
        let n = consumer
            .poll_batch(1000, Duration::from_millis(20), |r| {
                first.get_or_insert_with(Instant::now);
                out.send(&dst, r.key, r.value, seen).unwrap();
                offsets.insert(r.partition, r.offset + 1);
                seen += 1;
            })
            .unwrap();
        if n == 0 {
            continue;
        }
        // Confirmed the way the processor confirms (on delivery reports, not rdkafka's
        // flush, which sleeps in 100 ms rounds), so the ratio compares like with like.
        assert!(tally.wait_for(seen as u64, Duration::from_secs(60)));
        let commits: Vec<CommitOffset> = offsets
            .into_iter()
            .map(|(partition, offset)| CommitOffset {
                topic: src.clone(),
                partition,
                offset,
                metadata: String::new(),
            })
            .collect();
        consumer.commit(&commits).unwrap();
    }
    let elapsed = first.map(|f| f.elapsed()).unwrap_or_default();
    assert_eq!(tally.report().confirmed as usize, values.len());
    values.len() as f64 / elapsed.as_secs_f64()
}

fn main() {
    let n = env_or("EWN_BENCH_INCIDENTS", 50_000);
    let rate = env_or("EWN_BENCH_RATE", 2_000);
    let secs = env_or("EWN_BENCH_SECS", 10);
    let broker = start_broker(Engine::Memory).unwrap();
    let settings = KafkaSettings {
        brokers: broker.addr.clone(),
        topic_prefix: "bench.ewn.".into(),
        partitions: 3,
        statistics_interval_ms: 0,
        ..KafkaSettings::default()
    };
    println!(
        "EWN end-to-end bench: Tansu (memory engine) on {}, {n} incidents, 3 partitions",
        broker.addr
    );
    let mut net = Net::on(settings.clone());

    // The load, signed and encoded ahead of time (not measured).
    let t0 = now_ms() - 10 * 60_000;
    let load: Vec<Incident> = (0..n)
        .map(|k| background(k, t0 + (k as i64 * 600_000 / n as i64)))
        .collect();
    let topics = net.topics();
    let values: Vec<(String, Vec<u8>, Vec<u8>)> = load
        .iter()
        .map(|i| {
            let v = net
                .signer(&i.reporter.state)
                .sign(i, i.reported_at)
                .unwrap()
                .to_avro()
                .unwrap();
            (
                topics.incidents(&i.reporter.state),
                i.subjects[0].subject_ref.clone().into_bytes(),
                v,
            )
        })
        .collect();
    let avg = values.iter().map(|(_, _, v)| v.len()).sum::<usize>() / values.len();
    println!("  records: {avg} bytes on average (signed envelope)");

    let (hop50, hop99) = hop_latency(&settings);
    println!(
        "  one produce -> consume hop (broker floor):         p50 {hop50:>6.1} ms  p99 {hop99:>6.1} ms"
    );
    let baseline = passthrough(&settings, &values);
    println!("  passthrough (consume, produce, confirm, commit):   {baseline:>9.0} records/s");

    for (topic, key, value) in &values {
        net.send(topic, key, value);
    }
    net.flush();
    let mut config = net.config(300);
    config.process.batch_wait_ms = 5;
    let p = start(config);
    let expected = rekeyed_count(&load) as f64;
    let mut started: Option<Instant> = None;
    while p.metric("ewn_processor_correlated_events_total", "") < expected {
        if started.is_none() && p.metric("ewn_processor_incidents_received_total", "") > 0.0 {
            started = Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let elapsed = started.map(|s| s.elapsed()).unwrap_or_default();
    let throughput = n as f64 / elapsed.as_secs_f64();
    assert_eq!(
        p.metric("ewn_processor_incidents_verified_total", "") as u64,
        n
    );
    println!("  processor (verify, score, re-key, correlate):     {throughput:>9.0} incidents/s");
    println!(
        "  ratio processor / passthrough:                     {:>9.2}",
        throughput / baseline
    );
    let batch = p.metric("ewn_processor_verify_batch_size_sum", "")
        / p.metric("ewn_processor_verify_batch_size_count", "");
    println!("  mean verify batch:                                 {batch:>9.0} signatures");

    // Live phase: background at `rate`, with planted watch-list hits and cross-border pairs.
    let sent_at: Arc<Mutex<HashMap<String, (Instant, &'static str)>>> = Arc::default();
    let latencies: Arc<Mutex<Vec<(&'static str, f64)>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (settings, sent_at, latencies, stop) = (
            settings.clone(),
            sent_at.clone(),
            latencies.clone(),
            stop.clone(),
        );
        let alerts = topics.alerts();
        std::thread::spawn(move || {
            let reader = AssignedReader::new(
                &settings,
                "bench-alerts",
                &alerts,
                |t| t == alerts,
                StartAt::End,
            )
            .unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                reader
                    .poll(Duration::from_millis(50), |r| {
                        let now = Instant::now();
                        let Ok(a) = Alert::from_avro(r.value.unwrap_or_default()) else {
                            return;
                        };
                        if a.msg_type != MsgType::Alert {
                            return;
                        }
                        // The first alert naming a planted incident; later ones (updates, the
                        // same incident in another rule) are not its latency.
                        let mut sent = sent_at.lock().unwrap();
                        let planted = a
                            .incident_ids
                            .iter()
                            .find(|id| sent.contains_key(id.as_str()))
                            .cloned();
                        if let Some((at, kind)) = planted.and_then(|id| sent.remove(&id)) {
                            latencies
                                .lock()
                                .unwrap()
                                .push((kind, (now - at).as_secs_f64() * 1000.0));
                        }
                    })
                    .unwrap();
            }
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let total = rate * secs;
    let start_live = Instant::now();
    for k in 0..total {
        let id = 10_000_000 + k;
        let t = now_ms() - 1_000;
        let (i, kind): (Incident, Option<&'static str>) = match k % 100 {
            0 => {
                let mut i = background(id, t);
                i.subjects[0].watchlist = Some("UNSC-1267".into());
                (i, Some("immediate (watchlist_hit)"))
            }
            50 => {
                // the second sighting of a subject first seen in another state a minute ago
                let first = incident(
                    id + 500_000,
                    "KZ",
                    t - 60_000,
                    Category::SuspiciousCrossing,
                    &[&format!("mv-{k}")],
                );
                let value = net
                    .signer("KZ")
                    .sign(&first, first.reported_at)
                    .unwrap()
                    .to_avro()
                    .unwrap();
                net.send(
                    &topics.incidents("KZ"),
                    first.subjects[0].subject_ref.as_bytes(),
                    &value,
                );
                (
                    incident(
                        id,
                        "KG",
                        t,
                        Category::SuspiciousCrossing,
                        &[&format!("mv-{k}")],
                    ),
                    Some("correlated (cross_border)"),
                )
            }
            _ => (background(id, t), None),
        };
        let value = net
            .signer(&i.reporter.state)
            .sign(&i, i.reported_at)
            .unwrap()
            .to_avro()
            .unwrap();
        if let Some(kind) = kind {
            sent_at
                .lock()
                .unwrap()
                .insert(i.incident_id.clone(), (Instant::now(), kind));
        }
        net.send(
            &topics.incidents(&i.reporter.state),
            i.subjects[0].subject_ref.as_bytes(),
            &value,
        );
        let due = start_live + Duration::from_secs_f64((k + 1) as f64 / rate as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    net.flush();
    let offered = total as f64 / start_live.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    reader.join().unwrap();
    println!(
        "  live load: {offered:.0} incidents/s for {secs} s, 1% watch-list hits, 1% cross-border pairs"
    );
    let lat = latencies.lock().unwrap();
    for kind in ["immediate (watchlist_hit)", "correlated (cross_border)"] {
        let mut v: Vec<f64> = lat
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, ms)| *ms)
            .collect();
        v.sort_by(|a, b| a.total_cmp(b));
        let planted = total / 100;
        println!(
            "  publish -> alert, {kind:<26} p50 {:>6.1} ms  p99 {:>6.1} ms  max {:>6.1} ms  ({} of {planted} alerts seen)",
            percentile(&v, 0.5),
            percentile(&v, 0.99),
            v.last().copied().unwrap_or(f64::NAN),
            v.len()
        );
    }
    let mean = |name: &str, labels: &str| {
        1000.0 * p.metric(&format!("{name}_sum"), labels)
            / p.metric(&format!("{name}_count"), labels)
    };
    for stage in ["ingest", "correlate"] {
        let l = format!("stage=\"{stage}\"");
        println!(
            "  {stage:<9} per batch: confirm outputs {:>5.1} ms, commit offsets {:>5.1} ms (means)",
            mean("ewn_processor_output_confirm_seconds", &l),
            mean("ewn_processor_commit_seconds", &l)
        );
    }
    println!(
        "  per batch: verify {:.2} ms, score+re-key {:.2} ms, correlate {:.2} ms (means)",
        mean("ewn_processor_verify_seconds", ""),
        mean("ewn_processor_score_seconds", ""),
        mean("ewn_processor_correlate_seconds", "")
    );
    p.stop();
}
