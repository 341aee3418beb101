//! Issue 12, part 3: a hostile corpus (tests/common/hostile.rs) published with a plain
//! rdkafka producer while the simulator's planted scenarios flow through the real
//! processor. Every hostile record is rejected, each for its expected reason (dead letters
//! and metrics agree, counts exact), every planted scenario's alert is raised, and the
//! processor runs throughout.
//!
//! `EWN_HOSTILE_RECORDS` (default 10,000: about 30 s on 2 busy cores) and
//! `EWN_HOSTILE_SEED` (default 12) choose the corpus.
#![allow(clippy::unwrap_used)] // tests fail loudly on anything unexpected

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use common::hostile::{self, Kind, Signers};
use common::*;
use ewn_model::{AvroRecord, Incident};
use ewn_processor::ProcessSettings;
use ewn_processor::correlate::alert_id;
use ewn_sim::{Generator, GeneratorConfig, Scenario};
use ewn_trust::{IncidentSigner, KeyEntry, TrustStore, keys};
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use sha2::{Digest, Sha256};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A KZ key in the trust store, valid from `not_before` to `not_after`, revoked at
/// `revoked_at`.
fn extra_key(
    net: &Net,
    key_id: &str,
    not_before: i64,
    not_after: i64,
    revoked_at: Option<i64>,
) -> IncidentSigner {
    let key = keys::generate();
    TrustStore::append_to_file(
        &net.store,
        &KeyEntry {
            key_id: key_id.into(),
            state: "KZ".into(),
            public_key: ewn_trust::PublicKey::from(&key),
            not_before,
            not_after,
            revoked_at,
        },
    )
    .unwrap();
    IncidentSigner::new(key_id, key)
}

#[test]
fn a_hostile_corpus_is_rejected_by_reason_while_planted_scenarios_raise_their_alerts() {
    let count: usize = env_or("EWN_HOSTILE_RECORDS", 10_000);
    let seed: u64 = env_or("EWN_HOSTILE_SEED", 12);
    eprintln!("hostile corpus: {count} records, seed {seed}");
    let mut net = Net::new("hostile-corpus");
    let now = now_ms();
    let mut revoked = extra_key(&net, "kz-revoked", now - 30 * 24 * HOUR, now + 24 * HOUR, {
        Some(now - HOUR)
    });
    let mut expired = extra_key(
        &net,
        "kz-expired",
        now - 30 * 24 * HOUR,
        now - 24 * HOUR,
        None,
    );
    let p = start(net.config(ProcessSettings::default().allowed_lateness_secs));
    let topics = net.topics();

    // The valid traffic: the simulator's five planted scenarios and a minute of background
    // reports, the absence scenario's day-old exit taken in first.
    let mut generator = Generator::new(
        &GeneratorConfig {
            seed,
            rate_per_sec: 5.0,
            scenarios: Scenario::ALL.to_vec(),
        },
        blinding(),
        now - 60_000,
    );
    let prelude: Vec<Incident> = generator
        .prelude(now - 60_000)
        .unwrap()
        .into_iter()
        .map(|g| g.incident)
        .collect();
    net.publish(&prelude);
    p.wait_correlated(rekeyed_count(&prelude));
    let mut generated = Vec::new();
    for s in 0..=60 {
        generator
            .tick(now - 60_000 + s * 1000, &mut generated)
            .unwrap();
    }
    generator.finish(now, &mut generated).unwrap();
    let valid: Vec<Incident> = generated.into_iter().map(|g| g.incident).collect();

    // One valid record the corpus replays.
    let replayed_incident = incident(
        4_999_999,
        "KZ",
        now - 60_000,
        ewn_model::Category::Other,
        &[],
    );
    let replayed = net
        .signer("KZ")
        .sign(&replayed_incident, now)
        .unwrap()
        .to_avro()
        .unwrap();
    net.send(&topics.incidents("KZ"), b"replayed", &replayed);
    net.flush();

    let started = Instant::now();
    let corpus = hostile::corpus(
        seed,
        count,
        now,
        &mut net,
        Signers {
            revoked: &mut revoked,
            expired: &mut expired,
        },
        (b"replayed", &replayed),
    );
    eprintln!("generated in {:?}", started.elapsed());

    // Published with a plain producer, the valid traffic interleaved in 20 slices.
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &net.settings.brokers)
        .set("message.max.bytes", "1000000")
        .create()
        .unwrap();
    let slices = 20;
    let hostile_per_slice = count.div_ceil(slices);
    let valid_per_slice = valid.len().div_ceil(slices);
    for (h, v) in corpus.chunks(hostile_per_slice).zip(
        valid
            .chunks(valid_per_slice.max(1))
            .chain(std::iter::repeat(&[][..])),
    ) {
        for r in h {
            let topic = topics.incidents(r.topic_state);
            let mut record = BaseRecord::to(&topic).key(&r.key[..]).payload(&r.value[..]);
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((e, back)) => {
                        assert!(
                            matches!(
                                e.rdkafka_error_code(),
                                Some(rdkafka::types::RDKafkaErrorCode::QueueFull)
                            ),
                            "{e}"
                        );
                        record = back;
                        producer.poll(Duration::from_millis(10));
                    }
                }
            }
            producer.poll(Duration::ZERO);
        }
        producer.flush(Duration::from_secs(60)).unwrap();
        net.publish(v);
    }
    eprintln!("published in {:?}", started.elapsed());

    // Every hostile record rejected, and nothing else.
    let want = hostile::expected(count);
    wait_until(
        "every hostile record rejected",
        Duration::from_secs(120),
        || p.metric("ewn_processor_incidents_rejected_total", "") >= count as f64,
    );
    p.wait_correlated(rekeyed_count(&prelude) + rekeyed_count(&valid) + 1);
    eprintln!("processed in {:?}", started.elapsed());

    // The dead letters: each names a hostile record by its digest, with that record's
    // reason.
    let reason_of: HashMap<[u8; 32], String> = corpus
        .iter()
        .map(|r| (Sha256::digest(&r.value).into(), r.kind.reason().code()))
        .collect();
    let rejections = net.rejections();
    let mut dead_letters: BTreeMap<String, usize> = BTreeMap::new();
    let mut wrong = Vec::new();
    for r in &rejections {
        let code = r.reason.code();
        match reason_of.get(&r.record_sha256) {
            Some(expected) if *expected == code => {}
            expected => wrong.push(format!("{code} (expected {expected:?}): {}", r.detail)),
        }
        *dead_letters.entry(code).or_default() += 1;
    }
    let by_metric: BTreeMap<String, usize> = want
        .keys()
        .map(|reason| {
            let n = p.metric(
                "ewn_processor_incidents_rejected_total",
                &format!("reason=\"{reason}\""),
            );
            (reason.clone(), n as usize)
        })
        .collect();
    eprintln!("| reason | kinds | expected | dead letters | metric |");
    eprintln!("|---|---|---:|---:|---:|");
    for (reason, n) in &want {
        let kinds: BTreeSet<String> = hostile::KINDS
            .iter()
            .filter(|(k, _)| k.reason().code() == *reason)
            .map(|(k, _)| format!("{k:?}"))
            .collect();
        eprintln!(
            "| `{reason}` | {} | {n} | {} | {} |",
            kinds.into_iter().collect::<Vec<_>>().join(", "),
            dead_letters.get(reason).copied().unwrap_or(0),
            by_metric[reason]
        );
    }
    let mut per_kind: BTreeMap<Kind, usize> = BTreeMap::new();
    for r in &corpus {
        *per_kind.entry(r.kind).or_default() += 1;
    }
    eprintln!("per kind: {per_kind:?}");
    assert!(
        wrong.is_empty(),
        "{} rejections not of a hostile record or for another reason, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
    assert_eq!(dead_letters, want, "dead letters by reason");
    assert_eq!(
        by_metric, want,
        "ewn_processor_incidents_rejected_total by reason"
    );
    assert_eq!(
        p.metric("ewn_processor_incidents_rejected_total", ""),
        count as f64,
        "no valid record rejected"
    );
    if count >= hostile::ROUND {
        assert_eq!(per_kind.len(), hostile::KINDS.len(), "every kind sent");
    }

    // The planted scenarios' alerts.
    let planted: BTreeSet<String> = generator
        .planted()
        .iter()
        .map(|pl| alert_id(&pl.rule, &pl.key, pl.window_start))
        .collect();
    assert_eq!(planted.len(), Scenario::ALL.len(), "every scenario planted");
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut live = live_ids(&net.alerts());
    while !planted.is_subset(&live) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        live = live_ids(&net.alerts());
    }
    assert!(
        planted.is_subset(&live),
        "planted alerts missing: {:?}",
        planted.difference(&live).collect::<Vec<_>>()
    );
    assert!(p.is_running(), "the processor never stopped");
    eprintln!("done in {:?}", started.elapsed());
    p.stop();
}
