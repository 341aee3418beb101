//! Micro-benches of the processor's per-record work: signature verification one by one
//! against batched, scoring, and correlation.

#[path = "support/trust.rs"]
mod trust;

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use ewn_model::{AvroRecord, Category, Evidence, Level, Tlp, samples};
use ewn_processor::correlate::{Event, EventKeys, PartitionState, RuleSet};
use ewn_processor::rules::{GroupBy, default_rules};
use ewn_processor::score::ScoreWeights;
use ewn_trust::check_signatures;
use ewn_trust::verify::check_signature;

fn verify(c: &mut Criterion) {
    let (mut signer, verifier) = trust::one_key();
    let now = samples::incident().reported_at;
    let mut g = c.benchmark_group("verify");
    for size in [1usize, 8, 64, 256] {
        let values: Vec<Vec<u8>> = (0..size)
            .map(|n| {
                let mut i = samples::incident();
                i.summary = format!("report {n}");
                signer
                    .sign(&i)
                    .ok()
                    .and_then(|s| s.to_avro().ok())
                    .unwrap_or_default()
            })
            .collect();
        let pending: Vec<_> = values
            .iter()
            .filter_map(|v| verifier.check_envelope(v, Some("kz"), now).ok())
            .collect();
        g.throughput(Throughput::Elements(size as u64));
        g.bench_function(format!("single/{size}"), |b| {
            let mut buf = Vec::new();
            b.iter(|| {
                pending
                    .iter()
                    .filter(|p| check_signature(p, &mut buf).is_ok())
                    .count()
            })
        });
        g.bench_function(format!("batch/{size}"), |b| {
            b.iter(|| check_signatures(black_box(&pending)))
        });
    }
    g.finish();
}

fn score(c: &mut Criterion) {
    let w = ScoreWeights::default();
    let i = samples::incident();
    let mut g = c.benchmark_group("score");
    g.throughput(Throughput::Elements(1));
    g.bench_function("incident", |b| b.iter(|| w.score(black_box(&i))));
    g.finish();
}

/// `n` events over `keys` subjects and 50 areas, one minute apart.
fn events(n: usize, keys: usize) -> Vec<Arc<Event>> {
    let w = ScoreWeights::default();
    let s = w.score(&samples::incident());
    (0..n)
        .map(|k| {
            Arc::new(Event {
                incident_id: format!("00000000-0000-4000-8000-{k:012}"),
                group: String::new(),
                group_key: String::new(),
                occurred_at: 1_790_000_000_000 + k as i64 * 60_000,
                reported_at: 1_790_000_000_000 + k as i64 * 60_000,
                state: ["KZ", "KG", "TJ", "UZ", "TM"][k % 5].into(),
                agency: "A".into(),
                area: format!("AREA-{}", k % 50),
                crossing: None,
                category: Category::SuspiciousCrossing,
                direction: None,
                watchlist_hit: false,
                subjects: vec![format!("{:064x}", k % keys)],
                score: s.score,
                level: Level::Low,
                reasons: s.reasons.clone(),
                tlp: Tlp::Green,
                lat: 40.0,
                lon: 70.0,
                evidence: Evidence {
                    incident_id: String::new(),
                    topic: "t".into(),
                    partition: 0,
                    offset: k as i64,
                    key_id: "k".into(),
                    signature: [0; 64],
                    payload_sha256: [0; 32],
                },
            })
        })
        .collect()
}

fn correlate(c: &mut Criterion) {
    let rules = Arc::new(RuleSet::new(default_rules(), ScoreWeights::default()));
    let mut g = c.benchmark_group("correlate");
    for keys in [1_000usize, 10_000] {
        let evs = events(1_000, keys);
        g.throughput(Throughput::Elements(evs.len() as u64));
        g.bench_function(format!("feed_1000_events/{keys}_subjects"), |b| {
            b.iter_batched(
                || PartitionState::new(rules.clone(), 300_000),
                |mut p| {
                    let mut out = Vec::new();
                    for (i, e) in evs.iter().enumerate() {
                        for group in [GroupBy::Subject, GroupBy::Area] {
                            for key in e.keys(group) {
                                p.feed(group, key, e, i as i64, 0, &mut out);
                            }
                        }
                    }
                    p.tick(0, &mut out);
                    out.len()
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, verify, score, correlate);
criterion_main!(benches);
