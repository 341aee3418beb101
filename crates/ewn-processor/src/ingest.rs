//! The ingest step, without Kafka: a batch of raw records in; re-keyed records,
//! rejections, immediate alerts and the offsets to commit out.
//!
//! Records are added one by one while the consumer polls (the envelope is checked then,
//! so nothing of a record is copied), and the batch is finished at once: signatures
//! verified together, payloads checked, replays caught, each incident scored, immediate
//! rules fired, and one re-keyed record made per group-by value a stateful rule uses.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ewn_model::{Alert, Evidence, RejectReason, Rejection, ScoredIncident};
use ewn_trust::{Pending, Rejected, Verifier, check_signatures};
use sha2::{Digest, Sha256};

use crate::correlate::RuleSet;
use crate::event::event_of;
use crate::replay::ReplayGuard;

/// Where a record came from, and what a dead letter names it by: its value's size and
/// SHA-256, whichever stage rejects it.
#[derive(Clone, Debug)]
struct Origin {
    topic: usize,
    partition: i32,
    offset: i64,
    size: usize,
    sha256: [u8; 32],
}

/// What a batch produced.
#[derive(Debug, Default)]
pub struct IngestOutput {
    /// (record key `group:value`, record) for the re-keyed topic.
    pub rekeyed: Vec<(String, ScoredIncident)>,
    pub rejections: Vec<Rejection>,
    pub alerts: Vec<Alert>,
    /// Records read, verified and rejected, per reporting state (from the topic name;
    /// `??` when it names none).
    pub received: BTreeMap<String, u64>,
    pub verified: BTreeMap<String, u64>,
    /// Rejections per (reason code, state).
    pub rejected: BTreeMap<(String, String), u64>,
    /// (topic, partition, next offset) to commit once everything above is confirmed.
    pub commits: Vec<(String, i32, i64)>,
    /// (incident id, occurred_at, reported_at) of the verified, for latency metrics.
    pub times: Vec<(String, i64, i64)>,
    /// (state, post) of the verified -> the latest signing time among them (`signed_at`,
    /// or a legacy envelope's `reported_at`): when each source was heard from.
    pub heard: BTreeMap<(String, Option<String>), i64>,
    pub verify_batch: usize,
    pub verify_time: Duration,
    pub score_time: Duration,
}

/// One batch being read.
pub struct IngestBatch<'v> {
    verifier: &'v Verifier,
    now: i64,
    topics: Vec<String>,
    origins: Vec<Origin>,
    pending: Vec<Pending<'v>>,
    early: Vec<(Origin, Rejected)>,
    offsets: BTreeMap<(usize, i32), i64>,
    received: BTreeMap<String, u64>,
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

impl<'v> IngestBatch<'v> {
    pub fn new(verifier: &'v Verifier, now: i64) -> Self {
        IngestBatch {
            verifier,
            now,
            topics: Vec::new(),
            origins: Vec::new(),
            pending: Vec::new(),
            early: Vec::new(),
            offsets: BTreeMap::new(),
            received: BTreeMap::new(),
        }
    }

    /// Adds one record; `state` is the member state its topic belongs to.
    pub fn add(
        &mut self,
        topic: &str,
        state: Option<&str>,
        partition: i32,
        offset: i64,
        value: Option<&[u8]>,
    ) {
        let t = match self.topics.iter().position(|x| x == topic) {
            Some(i) => i,
            None => {
                self.topics.push(topic.to_string());
                self.topics.len() - 1
            }
        };
        let value = value.unwrap_or_default();
        let origin = Origin {
            topic: t,
            partition,
            offset,
            size: value.len(),
            sha256: sha256(value),
        };
        self.offsets
            .insert((t, partition), offset.saturating_add(1));
        *self
            .received
            .entry(state.unwrap_or("??").to_ascii_uppercase())
            .or_default() += 1;
        match self.verifier.check_envelope(value, state, self.now) {
            Ok(p) => {
                self.origins.push(origin);
                self.pending.push(p);
            }
            Err(rej) => self.early.push((origin, rej)),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// Verifies, scores and re-keys the batch.
    pub fn finish(
        self,
        rules: &RuleSet,
        guard: &mut ReplayGuard,
        batch_verify: bool,
        instance: &str,
    ) -> IngestOutput {
        let IngestBatch {
            verifier,
            now,
            topics,
            origins,
            pending,
            early,
            offsets,
            received,
        } = self;
        let mut out = IngestOutput {
            received,
            verify_batch: pending.len(),
            ..IngestOutput::default()
        };
        let state_of = |origin: &Origin| -> String { ewn_model_state(&topics[origin.topic]) };
        let reject = |out: &mut IngestOutput, origin: &Origin, r: Rejected| {
            let state = state_of(origin);
            *out.rejected.entry((r.reason.code(), state)).or_default() += 1;
            out.rejections.push(Rejection {
                reason: r.reason,
                detail: r.detail,
                topic: topics[origin.topic].clone(),
                partition: origin.partition,
                offset: origin.offset,
                key_id: r.key_id,
                incident_id: r.incident_id,
                record_size: origin.size as i64,
                record_sha256: origin.sha256,
                rejected_at: now,
                rejected_by: instance.to_string(),
            });
        };
        for (origin, r) in early {
            reject(&mut out, &origin, r);
        }

        let started = Instant::now();
        let checked: Vec<Result<(), Rejected>> = if batch_verify {
            check_signatures(&pending)
        } else {
            pending
                .iter()
                .map(ewn_trust::verify::check_signature)
                .collect()
        };
        let mut verified = Vec::with_capacity(pending.len());
        for ((origin, pend), sig) in origins.into_iter().zip(pending).zip(checked) {
            match sig.and_then(|()| verifier.check_payload(pend, now)) {
                Ok(v) if guard.repeated(&v.incident.incident_id, now) => {
                    let rej = Rejected {
                        reason: RejectReason::Duplicate,
                        detail: "incident id seen within the replay window".into(),
                        key_id: Some(v.envelope.key_id.clone()),
                        incident_id: Some(v.incident.incident_id.clone()),
                    };
                    reject(&mut out, &origin, rej);
                }
                Ok(v) => verified.push((origin, v)),
                Err(rej) => reject(&mut out, &origin, rej),
            }
        }
        out.verify_time = started.elapsed();

        let started = Instant::now();
        let groups = rules.stateful_groups();
        for (origin, v) in &verified {
            *out.verified
                .entry(v.incident.reporter.state.clone())
                .or_default() += 1;
            let signed = ewn_trust::SigningTime::of(&v.envelope, &v.incident).at;
            let heard = out
                .heard
                .entry((
                    v.incident.reporter.state.clone(),
                    v.incident.reporter.post_id.clone(),
                ))
                .or_insert(signed);
            *heard = (*heard).max(signed);
            let scored = rules.weights.score(&v.incident);
            let event = event_of(
                &v.incident,
                scored,
                Evidence {
                    incident_id: v.incident.incident_id.clone(),
                    topic: topics[origin.topic].clone(),
                    partition: origin.partition,
                    offset: origin.offset,
                    key_id: v.envelope.key_id.clone(),
                    signature: v.envelope.signature,
                    payload_sha256: sha256(&v.envelope.payload),
                },
            );
            out.times.push((
                event.incident_id.to_string(),
                event.occurred_at,
                event.reported_at,
            ));
            rules.immediate(&event, now, &mut out.alerts);
            for group in &groups {
                for key in event.keys(*group) {
                    out.rekeyed.push((
                        format!("{}:{key}", group.as_str()),
                        event.to_record(*group, key),
                    ));
                }
            }
        }
        out.score_time = started.elapsed();
        out.commits = offsets
            .into_iter()
            .map(|((t, partition), offset)| (topics[t].clone(), partition, offset))
            .collect();
        out
    }
}

/// The upper-case state of an incident topic's name (`<prefix>incidents.kz` -> `KZ`), or
/// `??`.
fn ewn_model_state(topic: &str) -> String {
    topic
        .rsplit_once('.')
        .map(|(_, cc)| cc)
        .filter(|cc| cc.len() == 2 && cc.bytes().all(|b| b.is_ascii_lowercase()))
        .map_or_else(|| "??".to_string(), str::to_ascii_uppercase)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::default_rules;
    use crate::score::ScoreWeights;
    use ewn_model::{AvroRecord, samples};
    use ewn_trust::{IncidentSigner, KeyEntry, TrustStore, VerifyPolicy, keys};
    use std::sync::Arc;

    #[test]
    fn a_batch_is_verified_rekeyed_and_rejected_without_kafka() {
        let mut signer = IncidentSigner::new("kz-1", keys::generate());
        let mut store = TrustStore::default();
        store.insert(KeyEntry {
            key_id: "kz-1".into(),
            state: "KZ".into(),
            public_key: signer.public_key(),
            not_before: 0,
            not_after: i64::MAX,
            revoked_at: None,
        });
        let verifier = Verifier::new(Arc::new(store), VerifyPolicy::default());
        let rules = RuleSet::new(default_rules(), ScoreWeights::default()).unwrap();
        let mut guard = ReplayGuard::new(3_600_000, 100);
        let incident = samples::incident();
        let good = signer
            .sign(&incident, incident.reported_at)
            .unwrap()
            .to_avro()
            .unwrap();
        let now = incident.reported_at;
        let mut batch = IngestBatch::new(&verifier, now);
        batch.add("ewn.incidents.kz", Some("kz"), 0, 5, Some(&good));
        batch.add("ewn.incidents.kz", Some("kz"), 0, 6, Some(&good));
        batch.add("ewn.incidents.kz", Some("kz"), 0, 7, Some(b"garbage"));
        let out = batch.finish(&rules, &mut guard, true, "test");
        let reasons: Vec<&str> = out.rejections.iter().map(|r| r.reason.as_str()).collect();
        assert_eq!(reasons, ["UNDECODABLE", "DUPLICATE"]);
        assert_eq!(out.verified.get("KZ"), Some(&1));
        // Heard from the post at the signing time; the duplicate and garbage not at all.
        assert_eq!(
            out.heard.into_iter().collect::<Vec<_>>(),
            [(
                ("KZ".to_string(), Some("KZ-ZHARKENT-03".to_string())),
                incident.reported_at
            )]
        );
        assert!(!out.rekeyed.is_empty());
        assert!(out.rekeyed.iter().any(|(k, _)| k.starts_with("area:")));
        assert_eq!(out.commits, [("ewn.incidents.kz".to_string(), 0, 8)]);
        assert_eq!(
            out.rejected.get(&("duplicate".into(), "KZ".into())),
            Some(&1)
        );
    }

    /// Found by the hostile corpus (tests/hostile_corpus.rs): a record refused after its
    /// envelope decoded (bad signature, payload checks) named no record in its dead letter
    /// (a zero digest, the payload's size), and a duplicate the payload's digest.
    #[test]
    fn every_dead_letter_names_the_record_value_by_size_and_digest() {
        let mut signer = IncidentSigner::new("kz-1", keys::generate());
        let mut store = TrustStore::default();
        store.insert(KeyEntry {
            key_id: "kz-1".into(),
            state: "KZ".into(),
            public_key: signer.public_key(),
            not_before: 0,
            not_after: i64::MAX,
            revoked_at: None,
        });
        let verifier = Verifier::new(Arc::new(store), VerifyPolicy::default());
        let rules = RuleSet::new(default_rules(), ScoreWeights::default()).unwrap();
        let mut guard = ReplayGuard::new(3_600_000, 100);
        let incident = samples::incident();
        let now = incident.reported_at;
        let good = signer.sign(&incident, now).unwrap().to_avro().unwrap();
        let mut flipped = signer.sign(&incident, now).unwrap();
        flipped.payload[3] ^= 1;
        let flipped = flipped.to_avro().unwrap();
        let mut invalid = incident.clone();
        invalid.incident_id = "another".into();
        invalid.summary = "s".repeat(10_000);
        let invalid = signer.sign(&invalid, now).unwrap().to_avro().unwrap();
        let mut batch = IngestBatch::new(&verifier, now);
        let records: [&[u8]; 5] = [&good, &good, &flipped, &invalid, b"garbage"];
        for (offset, value) in records.iter().enumerate() {
            batch.add(
                "ewn.incidents.kz",
                Some("kz"),
                0,
                offset as i64,
                Some(value),
            );
        }
        let out = batch.finish(&rules, &mut guard, true, "test");
        let named: Vec<(String, i64, [u8; 32])> = out
            .rejections
            .iter()
            .map(|r| (r.reason.code(), r.record_size, r.record_sha256))
            .collect();
        let mut want: Vec<(String, i64, [u8; 32])> = [
            ("duplicate", &good[..]),
            ("bad_signature", &flipped[..]),
            ("invalid", &invalid[..]),
            ("undecodable", &b"garbage"[..]),
        ]
        .into_iter()
        .map(|(code, v)| (code.to_string(), v.len() as i64, sha256(v)))
        .collect();
        let mut named_sorted = named.clone();
        named_sorted.sort();
        want.sort();
        assert_eq!(named_sorted, want);
    }
}
