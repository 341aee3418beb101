//! Micro-benches of the processor's per-record work: signature verification one by one
//! against batched, scoring, and correlation.

#[path = "support/trust.rs"]
mod trust;

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use ewn_model::{AvroRecord, Category, Direction, Level, Tlp, samples};
use ewn_processor::correlate::{EngineSettings, Event, PartitionState, RuleSet};
use ewn_processor::event::Source;
use ewn_processor::rules::{DistinctField, Filter, GroupBy, RuleConfig, RuleKind, default_rules};
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
                    .sign(&i, i.reported_at)
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
            b.iter(|| {
                pending
                    .iter()
                    .filter(|p| check_signature(p).is_ok())
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
                incident_id: format!("00000000-0000-4000-8000-{k:012}").into(),
                occurred_at: 1_790_000_000_000 + k as i64 * 60_000,
                reported_at: 1_790_000_000_000 + k as i64 * 60_000,
                state: ["KZ", "KG", "TJ", "UZ", "TM"][k % 5].into(),
                post_id: None,
                agency: "A".into(),
                area: format!("AREA-{}", k % 50).into(),
                crossing: None,
                category: Category::SuspiciousCrossing,
                direction: None,
                watchlist_hit: false,
                subjects: vec![format!("{:064x}", k % keys)],
                score: s.score,
                level: Level::Low,
                reasons: s.reasons.clone().into(),
                tlp: Tlp::Green,
                lat: 40.0,
                lon: 70.0,
                source: Source {
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
    let rules = Arc::new(
        RuleSet::new(default_rules(), ScoreWeights::default())
            .expect("the default rules are valid"),
    );
    let mut g = c.benchmark_group("correlate");
    for keys in [1_000usize, 10_000] {
        let evs = events(1_000, keys);
        g.throughput(Throughput::Elements(evs.len() as u64));
        g.bench_function(format!("feed_1000_events/{keys}_subjects"), |b| {
            b.iter_batched(
                || PartitionState::new(rules.clone(), EngineSettings::with_lateness(300_000)),
                |mut p| {
                    let mut out = Vec::new();
                    for (i, e) in evs.iter().enumerate() {
                        for group in [GroupBy::Subject, GroupBy::Area] {
                            for key in e.keys(group) {
                                p.feed(group, key, e, i as i64, e.occurred_at, &mut out);
                            }
                        }
                    }
                    p.tick(evs[evs.len() - 1].occurred_at, &mut out);
                    out.len()
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

/// One rule of each kind on one key, fed in event-time order one event a second, in a
/// steady state where the lateness keeps `held` events of the key (one evicted per event
/// fed): the per-event cost of evaluation, watermarking and eviction, with 100 and with
/// 100,000 events held. Only the sequence stream opens episodes (one a pair); the others
/// measure the rule's own evaluation (an open episode's coalesced UPDATE costs its member
/// count once per `process.alerts.update_interval_secs`).
fn rule_kinds(c: &mut Criterion) {
    let exit = Filter {
        direction: Some(Direction::Exit),
        ..Filter::default()
    };
    let entry = Filter {
        direction: Some(Direction::Entry),
        ..Filter::default()
    };
    let base = |name, kind, window| RuleConfig::new(name, kind, GroupBy::Area, window, Level::High);
    // (rule, direction of event n)
    type Directions = fn(u64) -> Option<Direction>;
    let kinds: Vec<(RuleConfig, Directions)> = vec![
        // 5 within 3 s never happens at one a second: every event checks the window.
        (
            RuleConfig {
                count: 5,
                ..base("threshold", RuleKind::Threshold, 3)
            },
            |_| None,
        ),
        // one state only: never 3 distinct, every event counts the values in the window.
        (
            RuleConfig {
                count: 3,
                distinct: Some(DistinctField::State),
                ..base("distinct", RuleKind::Distinct, 3600)
            },
            |_| None,
        ),
        // exits and entries alternate, 1 s apart, within the 1 s window: every pair opens an
        // episode (the ALERT path, with its episodes held and evicted).
        (
            RuleConfig {
                first: Some(exit.clone()),
                then: Some(entry.clone()),
                ..base("sequence", RuleKind::Sequence, 0)
            },
            |n| {
                Some(if n % 2 == 0 {
                    Direction::Exit
                } else {
                    Direction::Entry
                })
            },
        ),
        // every exit is explained by the entry before it.
        (
            RuleConfig {
                first: Some(exit),
                then: Some(entry),
                lookback: true,
                ..base("absence", RuleKind::Absence, 3600)
            },
            |n| {
                Some(if n % 2 == 0 {
                    Direction::Entry
                } else {
                    Direction::Exit
                })
            },
        ),
    ];
    let template = events(1, 1).remove(0);
    let mut g = c.benchmark_group("rule_kind");
    g.throughput(Throughput::Elements(1));
    for (mut config, direction) in kinds {
        if config.kind == RuleKind::Sequence {
            // a 0 s window is an immediate rule's; keep it stateful with a sub-second one
            config.window_secs = 1;
        }
        let name = config.name.clone();
        let rules = Arc::new(
            RuleSet::new(vec![config], ScoreWeights::default()).expect("valid bench rule"),
        );
        for held in [100i64, 100_000] {
            let mut settings = EngineSettings::with_lateness(held * 1000);
            settings.idle_ms = i64::MAX / 4;
            settings.state.max_events_per_key = usize::MAX;
            settings.state.max_events_per_rule = usize::MAX;
            let mut p = PartitionState::new(rules.clone(), settings);
            let mut out = Vec::new();
            let t0 = template.occurred_at;
            let mut n: u64 = 0;
            let mut next = |p: &mut PartitionState, out: &mut Vec<_>| {
                let mut e = (*template).clone();
                e.incident_id = format!("00000000-0000-4000-8000-{n:012}").into();
                e.occurred_at = t0 + n as i64 * 1000;
                e.direction = direction(n);
                let e = Arc::new(e);
                p.feed(
                    GroupBy::Area,
                    "AREA-0",
                    &e,
                    n as i64,
                    e.occurred_at + 1,
                    out,
                );
                p.tick(e.occurred_at + 1, out);
                n += 1;
                out.clear();
            };
            // warm up to the steady state: `held` events of the key kept
            for _ in 0..(held as u64 + 10_000) {
                next(&mut p, &mut out);
            }
            let kept: usize = p.events_per_rule().map(|(_, e)| e).sum();
            assert!(
                (held as usize..=held as usize + 10_000).contains(&kept),
                "{name}: {kept} events held, wanted about {held}"
            );
            g.bench_function(format!("{name}/{held}_held"), |b| {
                b.iter(|| next(&mut p, &mut out))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, verify, score, correlate, rule_kinds);
criterion_main!(benches);
