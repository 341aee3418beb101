//! Gateway bench: intake-to-broker throughput of one `ewn gateway` and its intake latency,
//! on a real broker (Tansu, memory engine, so the gateway is what is measured), the spool
//! on this machine's disk.
//!
//! `cargo bench -p ewn --bench gateway` (or `make bench-gateway`). `EWN_BENCH_REPORTS` sets
//! the reports per scenario (default 5,000), `EWN_BENCH_CLIENTS` the posts sending at once
//! (default 16, each one request at a time), `EWN_BENCH_BATCH_LINES` the lines per request
//! of the batched scenario (default 100).
//!
//! Scenarios, each on a fresh spool:
//! - one report per request, the spool synced per request (`group_commit = false`);
//! - one report per request, concurrent requests sharing a synced commit (group commit);
//! - `EWN_BENCH_BATCH_LINES` reports per request (group commit).
//!
//! For each: reports/s accepted (202) and reports/s through to the broker (first request
//! to the last broker confirmation), intake request latency p50/p99/max. The baseline,
//! measured in the same run: the same signed records produced straight to the broker by
//! one producer (the broker's and client's ceiling without a gateway).
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ewn_gateway::{GatewayConfig, GatewaySettings};
use ewn_kafka::admin::ensure_topics;
use ewn_kafka::producer::Tally;
use ewn_kafka::{ConfirmingProducer, KafkaSettings, Topics};
use ewn_model::validate::Limits;
use ewn_ops::http::Health;
use ewn_testkit::{Engine, start_broker};
use ewn_trust::{BlindingKey, IncidentSigner, keys};
use prometheus::Registry;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn line(client: u64, n: u64) -> String {
    let t = chrono::Utc::now().to_rfc3339();
    serde_json::json!({
        "incident_id": format!("{client:08x}-0000-4000-8000-{n:012x}"),
        "occurred_at": t, "reported_at": t,
        "reporter": {"state": "KZ", "agency": "KZ-KNB", "post_id": format!("KZ-POST-{client}")},
        "category": "SUSPICIOUS_CROSSING", "severity": "MEDIUM", "source_reliability": "B",
        "info_credibility": 2, "tlp": "AMBER",
        "location": {"lat": 44.2, "lon": 80.3, "area": "KZ-ZHT", "crossing": "KZ-KHORGOS"},
        "subjects": [{"kind": "PERSON", "id": format!("Traveller {client} {n}")}],
        "summary": "seen at the crossing"
    })
    .to_string()
}

struct Files {
    dir: tempfile::TempDir,
}

fn files(clients: u64) -> Files {
    let dir = tempfile::tempdir().unwrap();
    let key = keys::generate();
    let pem = ed25519_dalek::pkcs8::EncodePrivateKey::to_pkcs8_pem(
        &key,
        ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF,
    )
    .unwrap();
    ewn_trust::secret::write_secret(
        &dir.path().join("kz.key"),
        &format!("key_id = kz-bench\n{}", pem.as_str()),
    )
    .unwrap();
    BlindingKey::from_bytes([42; 32])
        .save(&dir.path().join("blinding.key"))
        .unwrap();
    let mut tokens = String::new();
    for c in 0..clients {
        let hash = hex::encode(ewn_ops::tokens::token_hash(&format!("token-{c}")));
        tokens.push_str(&format!(
            "[[tokens]]\nname = \"t{c}\"\npost_id = \"KZ-POST-{c}\"\nsha256 = \"{hash}\"\n"
        ));
    }
    ewn_trust::secret::write_secret(&dir.path().join("tokens.toml"), &tokens).unwrap();
    Files { dir }
}

struct Outcome {
    accepted_per_s: f64,
    to_broker_per_s: f64,
    latency_ms: [f64; 3],
}

fn scenario(
    kafka: &KafkaSettings,
    clients: u64,
    reports: u64,
    lines_per_request: u64,
    group_commit: bool,
) -> Outcome {
    let f = files(clients);
    let d = f.dir.path();
    let mut g = GatewaySettings {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        state: "KZ".into(),
        signing_key_file: Some(d.join("kz.key")),
        blinding_key_file: Some(d.join("blinding.key")),
        tokens_file: Some(d.join("tokens.toml")),
        ..GatewaySettings::default()
    };
    g.spool.path = Some(d.join("spool.db"));
    g.spool.group_commit = group_commit;
    let registry = Registry::new();
    let shutdown = Arc::new(AtomicBool::new(false));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let running = rt
        .block_on(ewn_gateway::start(
            GatewayConfig::new(kafka.clone(), Limits::default(), g),
            &registry,
            Arc::new(Health::default()),
            shutdown.clone(),
        ))
        .unwrap();
    let addr = running.addr;
    let forwarded = || -> u64 {
        let text = ewn_ops::metrics::render(&registry);
        text.lines()
            .filter(|l| l.starts_with("ewn_gateway_forwarded_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    };
    let per_client = reports / clients / lines_per_request;
    let accepted = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let accepted = accepted.clone();
            std::thread::spawn(move || {
                let http = reqwest::blocking::Client::new();
                let mut lat = Vec::with_capacity(per_client as usize);
                for r in 0..per_client {
                    let body = (0..lines_per_request)
                        .map(|k| line(c, r * lines_per_request + k))
                        .collect::<Vec<_>>()
                        .join("\n");
                    let t = Instant::now();
                    let resp = http
                        .post(format!("http://{addr}/api/v1/incidents"))
                        .bearer_auth(format!("token-{c}"))
                        .body(body)
                        .send()
                        .unwrap();
                    assert_eq!(resp.status().as_u16(), 202);
                    lat.push(t.elapsed().as_secs_f64() * 1000.0);
                    accepted.fetch_add(lines_per_request, Ordering::Relaxed);
                }
                lat
            })
        })
        .collect();
    let mut lat: Vec<f64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let intake = started.elapsed().as_secs_f64();
    let total = accepted.load(Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(300);
    while forwarded() < total {
        assert!(Instant::now() < deadline, "not all forwarded after 300 s");
        std::thread::sleep(Duration::from_millis(5));
    }
    let through = started.elapsed().as_secs_f64();
    shutdown.store(true, Ordering::Relaxed);
    rt.block_on(running.task).unwrap().unwrap();
    lat.sort_by(|a, b| a.total_cmp(b));
    Outcome {
        accepted_per_s: total as f64 / intake,
        to_broker_per_s: total as f64 / through,
        latency_ms: [
            percentile(&lat, 0.5),
            percentile(&lat, 0.99),
            lat.last().copied().unwrap_or(f64::NAN),
        ],
    }
}

fn main() {
    let reports = env_or("EWN_BENCH_REPORTS", 5_000);
    let clients = env_or("EWN_BENCH_CLIENTS", 16);
    let batch = env_or("EWN_BENCH_BATCH_LINES", 100);
    let broker = start_broker(Engine::Memory).unwrap();
    let kafka = KafkaSettings {
        brokers: broker.addr.clone(),
        topic_prefix: "bench.ewn.".into(),
        partitions: 3,
        statistics_interval_ms: 0,
        states: vec!["kz".into()],
        ..KafkaSettings::default()
    };
    let topics = Topics::new(&kafka.topic_prefix);
    let topic = topics.incidents("KZ");
    let specs: Vec<_> = topics
        .all(&kafka.states, kafka.partitions)
        .into_iter()
        .filter(|s| s.name == topic)
        .collect();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(ensure_topics(&kafka, &specs))
        .unwrap();
    println!(
        "EWN gateway bench: Tansu (memory engine) on {}, {reports} reports per scenario, {clients} posts sending at once",
        broker.addr
    );

    // Baseline: the same kind of signed record, produced straight to the broker.
    let blinding = BlindingKey::from_bytes([42; 32]);
    let mut signer = IncidentSigner::new("kz-bench", keys::generate());
    let mut state = Some("KZ".to_string());
    let records: Vec<(Vec<u8>, Vec<u8>)> = (0..reports)
        .map(|n| {
            let text = line(999, n);
            let i = ewn_gateway::prepare_line(
                ewn_gateway::input::Line::Text(&text),
                1,
                &blinding,
                &Limits::default(),
                0,
                &mut state,
            )
            .unwrap()
            .unwrap();
            let mut value = Vec::new();
            let key = ewn_gateway::seal(&mut signer, &i, i.reported_at, &mut value)
                .unwrap()
                .to_vec();
            (key, value)
        })
        .collect();
    let tally = Arc::new(Tally::default());
    let producer = ConfirmingProducer::new(&kafka, "bench", tally.clone(), None).unwrap();
    let t = Instant::now();
    for (n, (k, v)) in records.iter().enumerate() {
        producer.send(&topic, Some(k), Some(v), n).unwrap();
    }
    producer.flush(Duration::from_secs(120)).unwrap();
    let base = reports as f64 / t.elapsed().as_secs_f64();
    assert_eq!(tally.report().confirmed, reports);
    drop(producer);
    println!("baseline: one producer straight to the broker        {base:>8.0} reports/s");

    println!(
        "{:<44} {:>10} {:>10} {:>7} {:>9} {:>9} {:>9}",
        "scenario", "accepted/s", "broker/s", "x base", "p50 ms", "p99 ms", "max ms"
    );
    for (name, lines, group) in [
        ("1 report/request, synced per request", 1, false),
        ("1 report/request, synced per batch (group)", 1, true),
        (
            &*format!("{batch} reports/request, synced per batch"),
            batch,
            true,
        ),
    ] {
        let o = scenario(&kafka, clients, reports, lines, group);
        println!(
            "{name:<44} {:>10.0} {:>10.0} {:>7.2} {:>9.1} {:>9.1} {:>9.1}",
            o.accepted_per_s,
            o.to_broker_per_s,
            o.to_broker_per_s / base,
            o.latency_ms[0],
            o.latency_ms[1],
            o.latency_ms[2]
        );
    }
    broker.stop().unwrap();
}
