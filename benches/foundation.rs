//! Micro-benches of the per-record work on the producer and verifier side: Avro codec,
//! signing, verification, blinding, and parsing one JSON input line.

#[path = "support/trust.rs"]
mod trust;

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ewn_gateway::parse_incident;
use ewn_model::validate::Limits;
use ewn_model::{AvroRecord, Incident, SignedIncident, SubjectKind, samples};
use ewn_trust::BlindingKey;

fn codec(c: &mut Criterion) {
    let incident = samples::incident();
    let bytes = incident.to_avro().unwrap_or_default();
    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Elements(1));
    let mut buf = Vec::with_capacity(1024);
    g.bench_function("encode_incident", |b| {
        b.iter(|| {
            buf.clear();
            Incident::codec()
                .encode_into(black_box(&incident), &mut buf)
                .ok();
        })
    });
    g.bench_function("decode_incident", |b| {
        b.iter(|| Incident::from_avro(black_box(&bytes)).ok())
    });
    g.finish();
}

fn trust(c: &mut Criterion) {
    let (mut signer, verifier) = trust::one_key();
    let incident = samples::incident();
    let signed: Vec<u8> = signer
        .sign(&incident, incident.reported_at)
        .ok()
        .and_then(|s| s.to_avro().ok())
        .unwrap_or_default();
    let blinding = BlindingKey::from_bytes([7; 32]);
    let mut g = c.benchmark_group("trust");
    g.throughput(Throughput::Elements(1));
    g.bench_function("sign_incident", |b| {
        b.iter(|| signer.sign(black_box(&incident), incident.reported_at).ok())
    });
    g.bench_function("verify_record", |b| {
        b.iter(|| {
            verifier
                .verify(black_box(&signed), Some("kz"), incident.reported_at)
                .ok()
        })
    });
    g.bench_function("decode_envelope", |b| {
        b.iter(|| SignedIncident::from_avro(black_box(&signed)).ok())
    });
    g.bench_function("blind_person", |b| {
        b.iter(|| {
            blinding
                .blind(
                    SubjectKind::Person,
                    black_box("  Aliyev   Rustam 1987-03-02"),
                )
                .ok()
        })
    });
    g.finish();
}

fn input(c: &mut Criterion) {
    let line = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../schemas/examples/valid.jsonl"
    ))
    .unwrap_or_default()
    .lines()
    .next()
    .unwrap_or_default()
    .to_string();
    let blinding = BlindingKey::from_bytes([7; 32]);
    let limits = Limits::default();
    let mut g = c.benchmark_group("input");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse_blind_validate_line", |b| {
        b.iter(|| parse_incident(black_box(&line), 1, &blinding, &limits, 0).ok())
    });
    g.finish();
}

criterion_group!(benches, codec, trust, input);
criterion_main!(benches);
