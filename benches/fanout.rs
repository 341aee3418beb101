//! Fan-out bench: alerts delivered by signed webhook to 100 local endpoints, on a real
//! broker (Tansu, memory engine), against the broker's own produce -> consume hop and a
//! plain signed POST to the same endpoints, both measured in the same run.
//!
//! `cargo bench -p ewn --bench fanout` (or `make bench-fanout`). `EWN_BENCH_ALERTS` sets the
//! saturating load (default 2,000 alerts, each to all 100 subscribers), `EWN_BENCH_RATE` and
//! `EWN_BENCH_SECS` the paced phase (default 20 alerts/s for 10 s), `EWN_BENCH_HOSTS` how
//! many listeners the 100 endpoints are spread over (default 100: one loopback port per
//! endpoint, as 100 agencies would be; 1: 100 paths on one server), `EWN_BENCH_BATCH_MAX`
//! the fan-out's `batch_max` (default: the shipped one), `EWN_LOG` the log filter (`warn`).
//!
//! Prints:
//! - the floors: one produce -> consume hop on the broker, and signed POSTs sent straight to
//!   the endpoints (100 senders, one request at a time each, the fan-out's HTTP client);
//! - saturating load: deliveries/s from first to last delivery, wall time, and alert ->
//!   delivery latency p50/p90/p99/max, the alert's creation set just before producing it;
//! - paced load: the same latency at a rate the fan-out keeps up with, so its floor shows;
//! - receipts on `<prefix>deliveries`, which must equal the deliveries.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::serve::ListenerExt;
use common::{hop_latency, percentile};
use ewn_fanout::webhook::{self, Attempt, WebhookSecret};
use ewn_fanout::{FanoutConfig, FanoutSettings, SubscriptionConfig};
use ewn_kafka::producer::Tally;
use ewn_kafka::{AssignedReader, KafkaSettings, RecordProducer, StartAt, Topics};
use ewn_model::{Alert, AvroRecord, DeliveryOutcome, DeliveryReceipt, Level, MsgType, Tlp};
use ewn_testkit::{Engine, start_broker};

const ENDPOINTS: usize = 100;
/// Alerts sent first, to let the consumer group join and the connections open; not counted.
const WARM_UP: u64 = 5;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// p50, p90, p99 and max of `v` (sorted here).
fn spread(v: &mut [f64]) -> [f64; 4] {
    v.sort_by(|a, b| a.total_cmp(b));
    [
        percentile(v, 0.5),
        percentile(v, 0.9),
        percentile(v, 0.99),
        v.last().copied().unwrap_or(f64::NAN),
    ]
}

/// What the endpoints saw: per endpoint, (alert sequence number, arrival) of each delivery.
#[derive(Default)]
struct Seen {
    arrivals: Vec<Mutex<Vec<(u64, Instant)>>>,
    alerts: AtomicU64,
    /// Requests that carried no bench alert (the plain POST floor).
    other: AtomicU64,
    /// TCP connections accepted, all listeners.
    connections: Arc<AtomicU64>,
}

/// The bench alert ids are the sequence number in 32 hex digits; found in the body
/// without parsing it (the endpoint verifies nothing).
fn sequence_of(body: &[u8]) -> Option<u64> {
    const MARK: &[u8] = b"\"alert_id\":\"";
    let at = body.windows(MARK.len()).position(|w| w == MARK)? + MARK.len();
    let hex = std::str::from_utf8(body.get(at..at + 32)?).ok()?;
    u64::from_str_radix(hex, 16).ok()
}

async fn receive(
    State(seen): State<Arc<Seen>>,
    Path(endpoint): Path<usize>,
    body: Bytes,
) -> StatusCode {
    let at = Instant::now();
    match sequence_of(&body) {
        Some(seq) => {
            seen.arrivals[endpoint].lock().unwrap().push((seq, at));
            seen.alerts.fetch_add(1, Ordering::Relaxed);
        }
        None => {
            seen.other.fetch_add(1, Ordering::Relaxed);
        }
    }
    StatusCode::OK
}

/// The 100 endpoints `/hook/<i>`, spread round-robin over `hosts` loopback listeners,
/// served by a runtime of their own (2 threads).
fn start_endpoints(hosts: usize) -> (Vec<String>, Arc<Seen>) {
    let seen = Arc::new(Seen {
        arrivals: (0..ENDPOINTS).map(|_| Mutex::default()).collect(),
        ..Seen::default()
    });
    let (tx, rx) = std::sync::mpsc::channel();
    let s = seen.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("endpoints")
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut addrs = Vec::new();
            for _ in 0..hosts {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addrs.push(listener.local_addr().unwrap());
                let connections = s.connections.clone();
                let listener = listener.tap_io(move |_| {
                    connections.fetch_add(1, Ordering::Relaxed);
                });
                let app = Router::new()
                    .route("/hook/{endpoint}", post(receive))
                    .with_state(s.clone());
                tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
            }
            tx.send(addrs).unwrap();
            std::future::pending::<()>().await;
        });
    });
    let addrs: Vec<SocketAddr> = rx.recv().unwrap();
    let urls = (0..ENDPOINTS)
        .map(|i| format!("http://{}/hook/{i}", addrs[i % addrs.len()]))
        .collect();
    (urls, seen)
}

/// The HTTP floor: `per_endpoint` signed POSTs of `body` to each endpoint, one at a time
/// per endpoint and all endpoints at once, with the fan-out's client and attempt function.
/// Requests/s and per-request ms (p50, p99).
fn plain_posts(urls: &[String], body: &[u8], per_endpoint: usize) -> (f64, f64, f64) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("plain-posts")
        .enable_all()
        .build()
        .unwrap();
    let client = webhook::client(&common::hooks::loopback_webhooks(
        ewn_fanout::settings::WebhookSettings {
            user_agent: "ewn-bench".into(),
            ..Default::default()
        },
    ))
    .unwrap();
    let secret = WebhookSecret::parse(&WebhookSecret::generate()).unwrap();
    let body: Arc<[u8]> = body.into();
    let started = Instant::now();
    let tasks: Vec<_> = urls
        .iter()
        .map(|url| {
            let (client, secret, body, url) =
                (client.clone(), secret.clone(), body.clone(), url.clone());
            rt.spawn(async move {
                let mut took = Vec::with_capacity(per_endpoint);
                for k in 0..per_endpoint {
                    let (outcome, t) = webhook::attempt(
                        &client,
                        &url,
                        &secret,
                        &format!("msg_bench_{k}"),
                        "application/json",
                        &body,
                        Duration::from_secs(10),
                    )
                    .await;
                    assert!(matches!(outcome, Attempt::Delivered { .. }), "{outcome:?}");
                    took.push(t.as_secs_f64() * 1000.0);
                }
                took
            })
        })
        .collect();
    let mut took: Vec<f64> = Vec::new();
    for t in tasks {
        took.extend(rt.block_on(t).unwrap());
    }
    let rate = took.len() as f64 / started.elapsed().as_secs_f64();
    let [p50, _, p99, _] = spread(&mut took);
    (rate, p50, p99)
}

/// A CLEAR alert at level MEDIUM (no escalation) that every subscriber takes in full.
fn alert(seq: u64) -> Alert {
    let mut a = ewn_model::samples::alert();
    a.alert_id = format!("{seq:032x}");
    a.msg_type = MsgType::Alert;
    a.references = vec![];
    a.tlp = Tlp::Clear;
    a.level = Level::Medium;
    a.named_agencies = vec![];
    a.key = format!("{:064x}", seq % 64);
    a
}

fn subscriptions(urls: &[String]) -> Vec<SubscriptionConfig> {
    urls.iter()
        .enumerate()
        .map(|(i, url)| {
            SubscriptionConfig::webhook(
                &format!("bench-{i:03}"),
                &format!("AGENCY-{i:03}"),
                Tlp::Green,
                url.clone(),
                WebhookSecret::generate(),
            )
        })
        .collect()
}

/// The fan-out with its shipped settings (API on any free port; `batch_max` as given), on
/// its own thread and runtime (2 threads).
fn start_fanout(
    settings: &KafkaSettings,
    subs: Vec<SubscriptionConfig>,
    batch_max: usize,
) -> common::hooks::Fanout {
    common::hooks::start_fanout(FanoutConfig {
        kafka: settings.clone(),
        fanout: FanoutSettings {
            listen: "127.0.0.1:0".parse().unwrap(),
            batch_max,
            webhook: common::hooks::loopback_webhooks(Default::default()),
            ..FanoutSettings::default()
        },
        subscriptions: subs,
        tokens: vec![],
        key: Some(ewn_fanout::keys::FanoutKey::generate()),
    })
}

/// Waits until the endpoints saw `n` bench alert deliveries in all.
fn wait_deliveries(seen: &Seen, n: u64, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while seen.alerts.load(Ordering::Relaxed) < n {
        assert!(
            Instant::now() < deadline,
            "{} of {n} deliveries after {timeout:?}",
            seen.alerts.load(Ordering::Relaxed)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The deliveries of alerts `range`: latencies (ms, arrival minus the alert's creation) of
/// all of them, of the first and of the last delivery of each alert, and the first and
/// last arrival. Checks every endpoint got each alert exactly once.
struct Deliveries {
    all: Vec<f64>,
    first_of_alert: Vec<f64>,
    last_of_alert: Vec<f64>,
    first: Instant,
    last: Instant,
}

fn deliveries_of(seen: &Seen, sent: &[Option<Instant>], range: std::ops::Range<u64>) -> Deliveries {
    let mut ms = Vec::new();
    let (mut first, mut last): (Option<Instant>, Option<Instant>) = (None, None);
    let mut per_alert = vec![(f64::INFINITY, 0.0f64); (range.end - range.start) as usize];
    for (i, e) in seen.arrivals.iter().enumerate() {
        let e = e.lock().unwrap();
        let mine: Vec<&(u64, Instant)> = e.iter().filter(|(s, _)| range.contains(s)).collect();
        assert_eq!(
            mine.len() as u64,
            range.end - range.start,
            "endpoint {i}: deliveries of alerts {range:?}"
        );
        for &&(seq, at) in &mine {
            let d = (at - sent[seq as usize].unwrap()).as_secs_f64() * 1000.0;
            ms.push(d);
            let (lo, hi) = &mut per_alert[(seq - range.start) as usize];
            (*lo, *hi) = (lo.min(d), hi.max(d));
            first = Some(first.map_or(at, |f| f.min(at)));
            last = Some(last.map_or(at, |l| l.max(at)));
        }
    }
    Deliveries {
        all: ms,
        first_of_alert: per_alert.iter().map(|p| p.0).collect(),
        last_of_alert: per_alert.iter().map(|p| p.1).collect(),
        first: first.unwrap(),
        last: last.unwrap(),
    }
}

/// Reads `<prefix>deliveries` from the beginning: records, distinct (alert, subscription,
/// step) and how many say delivered. Stops at `expected` records or after 5 s of silence.
fn read_receipts(settings: &KafkaSettings, topic: &str, expected: u64) -> (u64, u64, u64) {
    let reader = AssignedReader::new(
        settings,
        "bench-receipts",
        topic,
        |t| t == topic,
        StartAt::Beginning,
    )
    .unwrap();
    let (mut records, mut delivered) = (0u64, 0u64);
    let mut distinct = HashSet::new();
    let mut quiet = Instant::now();
    while records < expected && quiet.elapsed() < Duration::from_secs(5) {
        let got = reader
            .poll(Duration::from_millis(100), |r| {
                let d = DeliveryReceipt::from_avro(r.value.unwrap()).unwrap();
                delivered += u64::from(d.outcome == DeliveryOutcome::Delivered);
                distinct.insert((d.alert_id, d.subscription_id, d.escalation_step));
            })
            .unwrap();
        if got.is_some() {
            records += 1;
            quiet = Instant::now();
        }
    }
    (records, distinct.len() as u64, delivered)
}

struct Load {
    producer: RecordProducer<Arc<Tally>>,
    tally: Arc<Tally>,
    topic: String,
    sent: Vec<Option<Instant>>,
}

impl Load {
    /// Produces alert `seq`, its creation time set just before.
    fn send(&mut self, seq: u64) {
        let mut a = alert(seq);
        a.created_at = now_ms();
        self.sent[seq as usize] = Some(Instant::now());
        a.window_end = a.created_at - 1_000;
        a.window_start = a.window_end - 3_600_000;
        let value = a.to_avro().unwrap();
        self.producer
            .send(
                &self.topic,
                Some(a.key.as_bytes()),
                Some(&value),
                seq as usize,
            )
            .unwrap();
    }

    fn flush(&self, n: u64) {
        self.producer.flush(Duration::from_secs(60)).unwrap();
        assert!(self.tally.wait_for(n, Duration::from_secs(60)));
        assert!(self.tally.report().failed.is_empty());
    }
}

fn main() {
    let n = env_or("EWN_BENCH_ALERTS", 2_000);
    let rate = env_or("EWN_BENCH_RATE", 20);
    let secs = env_or("EWN_BENCH_SECS", 10);
    let hosts = (env_or("EWN_BENCH_HOSTS", ENDPOINTS as u64) as usize).clamp(1, ENDPOINTS);
    let batch_max = env_or(
        "EWN_BENCH_BATCH_MAX",
        FanoutSettings::default().batch_max as u64,
    );
    let paced = rate * secs;
    // The fan-out's warnings and errors (a receipt the broker did not confirm, ...).
    ewn_ops::logging::init(&ewn_ops::logging::LogSettings {
        level: std::env::var("EWN_LOG").unwrap_or_else(|_| "warn".into()),
        ..Default::default()
    })
    .unwrap();
    let broker = start_broker(Engine::Memory).unwrap();
    let settings = KafkaSettings {
        brokers: broker.addr.clone(),
        topic_prefix: "bench.fanout.".into(),
        partitions: 3,
        statistics_interval_ms: 0,
        ..KafkaSettings::default()
    };
    let topics = Topics::new(&settings.topic_prefix);
    block_on(ewn_kafka::admin::ensure_topics(
        &settings,
        &topics.all(&settings.states, settings.partitions),
    ))
    .unwrap();
    let endpoints_are = if hosts == ENDPOINTS {
        format!("{ENDPOINTS} endpoints, one loopback port each")
    } else {
        format!("{ENDPOINTS} endpoints as paths on {hosts} loopback port(s)")
    };
    println!(
        "EWN fan-out bench: Tansu (memory engine) on {}, {endpoints_are}, 3 partitions",
        broker.addr
    );
    let catalogue = ewn_fanout::i18n::Catalogue::load(
        &ewn_fanout::settings::FanoutSettings::default().languages,
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    let body = ewn_fanout::render::webhook_json(&alert(u64::MAX), false, &catalogue, &[]);
    println!(
        "  webhook body: {} bytes (JSON, signed); fan-out and endpoints on 2 runtime threads each",
        body.len()
    );

    let (hop50, hop99) = hop_latency(&settings);
    println!(
        "  one produce -> consume hop (broker floor):          p50 {hop50:>6.1} ms  p99 {hop99:>6.1} ms"
    );

    let (urls, seen) = start_endpoints(hosts);
    let per_endpoint = 200;
    let baseline_body = String::from_utf8(body.clone())
        .unwrap()
        .replace(&format!("{:032x}", u64::MAX), "plain-post");
    let (post_rate, post50, post99) = plain_posts(&urls, baseline_body.as_bytes(), per_endpoint);
    assert_eq!(
        seen.other.load(Ordering::Relaxed),
        (ENDPOINTS * per_endpoint) as u64
    );
    println!(
        "  signed POST straight to the endpoints (HTTP floor): {post_rate:>8.0} requests/s, p50 {post50:>6.2} ms  p99 {post99:>6.2} ms"
    );

    let started = Instant::now();
    let fanout = start_fanout(&settings, subscriptions(&urls), batch_max as usize);
    println!(
        "  fan-out started with {} subscriptions in {:.1} s (batch_max {batch_max})",
        fanout.metric("ewn_fanout_subscriptions", ""),
        started.elapsed().as_secs_f64()
    );
    let tally = Arc::new(Tally::default());
    let mut load = Load {
        producer: RecordProducer::new(&settings, "bench-alerts", tally.clone(), None).unwrap(),
        tally,
        topic: topics.alerts(),
        sent: vec![None; (WARM_UP + n + paced) as usize],
    };
    let e = ENDPOINTS as u64;

    // Warm-up: the consumer group joins, every endpoint's connection opens.
    for seq in 0..WARM_UP {
        load.send(seq);
    }
    load.flush(WARM_UP);
    wait_deliveries(&seen, WARM_UP * e, Duration::from_secs(120));

    // Saturating load: every alert at once.
    let connections_before = seen.connections.load(Ordering::Relaxed);
    let heavy = WARM_UP..WARM_UP + n;
    let t0 = Instant::now();
    for seq in heavy.clone() {
        load.send(seq);
    }
    let produced = t0.elapsed();
    load.flush(WARM_UP + n);
    wait_deliveries(&seen, (WARM_UP + n) * e, Duration::from_secs(900));
    let mut h = deliveries_of(&seen, &load.sent, heavy.clone());
    let heavy_count = h.all.len();
    let heavy_rate = heavy_count as f64 / (h.last - h.first).as_secs_f64();
    let heavy_wall = h.last - t0;
    let heavy_lat = spread(&mut h.all);
    let heavy_connections = seen.connections.load(Ordering::Relaxed) - connections_before;
    let attempts = fanout.metric("ewn_fanout_webhook_attempt_seconds_count", "");
    let attempt_ms =
        1000.0 * fanout.metric("ewn_fanout_webhook_attempt_seconds_sum", "") / attempts;

    // Paced load: `rate` alerts/s for `secs` s.
    let connections_before = seen.connections.load(Ordering::Relaxed);
    let light = WARM_UP + n..WARM_UP + n + paced;
    let t1 = Instant::now();
    for (k, seq) in light.clone().enumerate() {
        load.send(seq);
        let due = t1 + Duration::from_secs_f64((k + 1) as f64 / rate as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let offered = paced as f64 / t1.elapsed().as_secs_f64();
    load.flush(WARM_UP + n + paced);
    let total = (WARM_UP + n + paced) * e;
    wait_deliveries(&seen, total, Duration::from_secs(300));
    let mut l = deliveries_of(&seen, &load.sent, light.clone());
    let light_count = l.all.len();
    let light_lat = spread(&mut l.all);
    let light_first = spread(&mut l.first_of_alert);
    let light_last = spread(&mut l.last_of_alert);
    let light_connections = seen.connections.load(Ordering::Relaxed) - connections_before;

    // Receipts: one per delivery, confirmed before the alert's offset is committed. Read
    // back, not counted by watermarks: on Tansu 0.6.0 (memory) high minus low watermark came
    // out short of what a reader gets (220,203 of 220,500), and stayed so.
    let deliveries_topic = topics.deliveries();
    let (receipts, distinct, receipts_delivered) =
        read_receipts(&settings, &deliveries_topic, total);
    let watermarks: i64 = ewn_kafka::admin::record_counts(&settings, |t| t == deliveries_topic)
        .unwrap()
        .iter()
        .map(|(_, c)| c)
        .sum();
    let retries = fanout.metric("ewn_fanout_delivery_retries_total", "");
    let pending = fanout.metric("ewn_fanout_pending_alerts", "");
    fanout.stop();

    let row = |what: &str, [p50, p90, p99, max]: [f64; 4]| {
        println!("  {what:<46} p50 {p50:>7.1}  p90 {p90:>7.1}  p99 {p99:>7.1}  max {max:>7.1} ms")
    };
    println!();
    println!("  Figures");
    println!(
        "  saturating: {n} alerts x {ENDPOINTS} subscribers = {heavy_count} deliveries, produced in {:.2} s",
        produced.as_secs_f64()
    );
    println!(
        "  paced:      {paced} alerts at {offered:.1}/s for {secs} s = {light_count} deliveries"
    );
    println!();
    println!(
        "  deliveries/s, first to last delivery (saturating):  {heavy_rate:>8.0}  ({:.2} of the HTTP floor)",
        heavy_rate / post_rate
    );
    println!(
        "  wall time, first produce to last delivery:          {:>8.2} s",
        heavy_wall.as_secs_f64()
    );
    println!(
        "  TCP connections the fan-out opened:                 {heavy_connections:>8} saturating, {light_connections} paced"
    );
    println!("  mean webhook attempt, client side (saturating):     {attempt_ms:>8.2} ms");
    row("alert -> delivery, saturating", heavy_lat);
    row("alert -> delivery, paced", light_lat);
    row("  first of each alert's 100, paced", light_first);
    row("  last of each alert's 100, paced", light_last);
    println!(
        "  broker hop floor                               p50 {hop50:>7.1}                p99 {hop99:>7.1} ms"
    );
    println!(
        "  fan-out's own cost at pace (p50 - hop p50):        {:>8.1} ms",
        light_lat[0] - hop50
    );
    println!(
        "  receipts on {deliveries_topic}: {receipts} read back for {total} deliveries (warm-up {} included)",
        WARM_UP * e
    );
    println!(
        "    {distinct} distinct, {receipts_delivered} delivered, {retries:.0} retries, {pending:.0} alerts left uncommitted; {watermarks} by watermarks"
    );
    assert_eq!(receipts, total, "one receipt per delivery");
    assert_eq!(distinct, total, "no receipt twice");
    assert_eq!(seen.alerts.load(Ordering::Relaxed), total, "no duplicates");
}
