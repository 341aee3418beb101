//! Verification of `SignedIncident` records: every failure has a reason from a closed set.
//!
//! Order of checks, cheapest and least trusting first: size, envelope decoding, key lookup,
//! revocation, key/topic state, signature (over `DOMAIN || payload`), and only then is the
//! payload decoded: nothing an unauthenticated sender wrote is parsed beyond the envelope.

use std::sync::Arc;

use ed25519_dalek::Signature;
use ewn_model::validate::{Limits, printable, validate_incident};
use ewn_model::{AvroRecord, Incident, RejectReason, SignedIncident};

use crate::keys::{DOMAIN, signed_message};
use crate::store::{KeyEntry, TrustStore};

/// What a verifier enforces beyond the signature.
#[derive(Clone, Copy, Debug)]
pub struct VerifyPolicy {
    /// Largest record value accepted, in bytes; larger ones are `OVERSIZED` without decoding.
    pub max_record_bytes: usize,
    pub limits: Limits,
    /// How far `reported_at` may lie in the future of the verifier's clock (`CLOCK_SKEW`).
    pub max_clock_skew_ms: Option<i64>,
    /// How old `reported_at` may be (`TOO_OLD`); `occurred_at` may not be later than
    /// `reported_at`, so this bounds event time too.
    pub max_age_ms: Option<i64>,
    /// How far `occurred_at` may lie in the future of the verifier's clock (`FUTURE`).
    /// Kept well under the processor's allowed lateness: event time drives windows.
    pub max_future_ms: Option<i64>,
}

impl Default for VerifyPolicy {
    fn default() -> Self {
        VerifyPolicy {
            max_record_bytes: 64 * 1024,
            limits: Limits::default(),
            max_clock_skew_ms: None,
            max_age_ms: None,
            max_future_ms: None,
        }
    }
}

/// The `[trust]` configuration section.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrustSettings {
    /// The TOML trust store of public keys.
    pub trust_store: Option<std::path::PathBuf>,
    pub max_record_bytes: usize,
    /// How far ahead of the verifier's clock `reported_at` may be.
    pub max_clock_skew_secs: u64,
    /// How old `reported_at` may be when the processor sees the record.
    pub max_age_secs: u64,
    /// How far ahead of the verifier's clock `occurred_at` (event time) may be.
    pub max_future_skew_secs: u64,
}

impl Default for TrustSettings {
    fn default() -> Self {
        TrustSettings {
            trust_store: None,
            max_record_bytes: 64 * 1024,
            max_clock_skew_secs: 300,
            max_age_secs: 7 * 24 * 3600,
            max_future_skew_secs: 60,
        }
    }
}

impl TrustSettings {
    /// The policy a stream processor enforces; `limits` bound the decoded fields.
    pub fn policy(&self, limits: Limits) -> VerifyPolicy {
        VerifyPolicy {
            max_record_bytes: self.max_record_bytes,
            limits,
            max_clock_skew_ms: Some(self.max_clock_skew_secs as i64 * 1000),
            max_age_ms: Some(self.max_age_secs as i64 * 1000),
            max_future_ms: Some(self.max_future_skew_secs as i64 * 1000),
        }
    }
}

/// A record that passed every check.
#[derive(Debug, Clone)]
pub struct Verified {
    pub envelope: SignedIncident,
    pub incident: Incident,
}

/// Why a record failed, with bounded, printable context (never the payload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub reason: RejectReason,
    pub detail: String,
    pub key_id: Option<String>,
    pub incident_id: Option<String>,
}

impl Rejected {
    fn new(reason: RejectReason, detail: impl Into<String>) -> Self {
        Rejected {
            reason,
            detail: detail.into(),
            key_id: None,
            incident_id: None,
        }
    }

    fn key(mut self, key_id: &str) -> Self {
        self.key_id = Some(printable(key_id));
        self
    }
}

/// A record whose envelope and key checks passed, awaiting its signature check.
pub struct Pending<'s> {
    pub envelope: SignedIncident,
    key: &'s KeyEntry,
}

impl Pending<'_> {
    pub fn key(&self) -> &KeyEntry {
        self.key
    }
}

#[derive(Clone)]
pub struct Verifier {
    store: Arc<TrustStore>,
    policy: VerifyPolicy,
}

impl Verifier {
    pub fn new(store: Arc<TrustStore>, policy: VerifyPolicy) -> Self {
        Verifier { store, policy }
    }

    pub fn store(&self) -> &TrustStore {
        &self.store
    }

    pub fn policy(&self) -> &VerifyPolicy {
        &self.policy
    }

    /// Verifies one record value read from `ewn.incidents.<topic_state>`.
    pub fn verify(
        &self,
        value: &[u8],
        topic_state: Option<&str>,
        now_ms: i64,
    ) -> Result<Verified, Rejected> {
        let pending = self.check_envelope(value, topic_state, now_ms)?;
        let mut buf = Vec::new();
        check_signature(&pending, &mut buf)?;
        self.check_payload(pending, now_ms)
    }

    /// Size, envelope decoding, key lookup, revocation and the key's state against the
    /// topic's (lower-case in the topic name, compared case-insensitively).
    pub fn check_envelope(
        &self,
        value: &[u8],
        topic_state: Option<&str>,
        now_ms: i64,
    ) -> Result<Pending<'_>, Rejected> {
        if value.len() > self.policy.max_record_bytes {
            return Err(Rejected::new(
                RejectReason::Oversized,
                format!(
                    "record is {} bytes, at most {}",
                    value.len(),
                    self.policy.max_record_bytes
                ),
            ));
        }
        let envelope = SignedIncident::from_avro(value)
            .map_err(|e| Rejected::new(RejectReason::Undecodable, format!("envelope: {e}")))?;
        let Some(key) = self.store.get(&envelope.key_id) else {
            return Err(Rejected::new(
                RejectReason::UnknownKey,
                format!(
                    "key {}: not in the trust store",
                    printable(&envelope.key_id)
                ),
            )
            .key(&envelope.key_id));
        };
        if let Some(revoked_at) = key.revoked_at {
            // A revoked key is treated as compromised: nothing it signed is trusted any more,
            // whatever signing time it claims (a thief can backdate `reported_at`).
            if revoked_at <= now_ms {
                return Err(Rejected::new(
                    RejectReason::KeyRevoked,
                    format!("key {}: revoked", key.key_id),
                )
                .key(&key.key_id));
            }
        }
        if let Some(topic_state) = topic_state
            && !key.state.eq_ignore_ascii_case(topic_state)
        {
            return Err(Rejected::new(
                RejectReason::TopicMismatch,
                format!(
                    "key {} signs for {}, not for topic state {}",
                    key.key_id,
                    key.state,
                    printable(topic_state)
                ),
            )
            .key(&key.key_id));
        }
        Ok(Pending { envelope, key })
    }

    /// Decodes and checks the signed payload: reporter state, key validity at signing
    /// time, field bounds, and the clock-skew and age bounds of the policy.
    pub fn check_payload(&self, pending: Pending<'_>, now_ms: i64) -> Result<Verified, Rejected> {
        let key = pending.key;
        let incident = Incident::from_avro(&pending.envelope.payload).map_err(|e| {
            Rejected::new(RejectReason::Undecodable, format!("payload: {e}")).key(&key.key_id)
        })?;
        let reject = |reason, detail: String| {
            let mut r = Rejected::new(reason, detail).key(&key.key_id);
            r.incident_id = Some(printable(&incident.incident_id));
            r
        };
        if incident.reporter.state != key.state {
            return Err(reject(
                RejectReason::KeyStateMismatch,
                format!(
                    "key {} signs for {}, report is from {}",
                    key.key_id,
                    key.state,
                    printable(&incident.reporter.state)
                ),
            ));
        }
        if incident.reported_at < key.not_before || incident.reported_at > key.not_after {
            return Err(reject(
                RejectReason::KeyExpired,
                format!("key {}: not valid at reported_at", key.key_id),
            ));
        }
        let problems = validate_incident(&incident, &self.policy.limits);
        if let Some(first) = problems.first() {
            return Err(reject(RejectReason::Invalid, first.to_string()));
        }
        if let Some(skew) = self.policy.max_clock_skew_ms
            && incident.reported_at > now_ms.saturating_add(skew)
        {
            return Err(reject(
                RejectReason::ClockSkew,
                format!(
                    "reported_at is {} ms ahead of this clock",
                    incident.reported_at.saturating_sub(now_ms)
                ),
            ));
        }
        if let Some(ahead) = self.policy.max_future_ms
            && incident.occurred_at > now_ms.saturating_add(ahead)
        {
            return Err(reject(
                RejectReason::Future,
                format!(
                    "occurred_at is {} ms ahead of this clock (at most {ahead} ms)",
                    incident.occurred_at.saturating_sub(now_ms)
                ),
            ));
        }
        if let Some(age) = self.policy.max_age_ms
            && incident.reported_at < now_ms.saturating_sub(age)
        {
            return Err(reject(
                RejectReason::TooOld,
                format!(
                    "reported_at is {} s old",
                    now_ms.saturating_sub(incident.reported_at) / 1000
                ),
            ));
        }
        Ok(Verified {
            envelope: pending.envelope,
            incident,
        })
    }
}

/// Checks the signatures of a batch: one batch equation for all (ed25519-dalek's
/// `verify_batch`), and only when that fails, `verify_strict` one by one to find the
/// culprits. The batch equation is cofactorless like `verify_strict`, but would accept a
/// key holder's small-order or non-canonically encoded `R`, which `verify_strict` refuses;
/// such signatures are screened out first (byte comparisons), so the batch path accepts
/// exactly what `verify_strict` accepts. Returns one result per pending record.
pub fn check_signatures(pending: &[Pending<'_>]) -> Vec<Result<(), Rejected>> {
    let mut results: Vec<Option<Result<(), Rejected>>> = vec![None; pending.len()];
    let mut batch = Vec::with_capacity(pending.len());
    for (i, p) in pending.iter().enumerate() {
        if suspicious_r(&p.envelope.signature) {
            results[i] = Some(Err(bad_signature(p.key)));
        } else {
            batch.push(i);
        }
    }
    if batch.len() > 1 {
        let mut all = Vec::with_capacity(
            batch
                .iter()
                .map(|&i| DOMAIN.len() + pending[i].envelope.payload.len())
                .sum(),
        );
        let mut bounds = Vec::with_capacity(batch.len());
        for &i in &batch {
            let start = all.len();
            all.extend_from_slice(DOMAIN);
            all.extend_from_slice(&pending[i].envelope.payload);
            bounds.push(start..all.len());
        }
        let messages: Vec<&[u8]> = bounds.iter().map(|r| &all[r.clone()]).collect();
        let signatures: Vec<Signature> = batch
            .iter()
            .map(|&i| Signature::from_bytes(&pending[i].envelope.signature))
            .collect();
        let keys: Vec<_> = batch.iter().map(|&i| pending[i].key.public_key).collect();
        if ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok() {
            for &i in &batch {
                results[i] = Some(Ok(()));
            }
        }
    }
    let mut buf = Vec::new();
    results
        .into_iter()
        .enumerate()
        .map(|(i, r)| r.unwrap_or_else(|| check_signature(&pending[i], &mut buf)))
        .collect()
}

fn bad_signature(key: &KeyEntry) -> Rejected {
    Rejected::new(
        RejectReason::BadSignature,
        format!("key {}: signature does not verify", key.key_id),
    )
    .key(&key.key_id)
}

/// Is the signature's `R` non-canonically encoded or one of the eight small-order points?
fn suspicious_r(signature: &[u8; 64]) -> bool {
    use std::sync::LazyLock;
    static SMALL_ORDER: LazyLock<Vec<[u8; 32]>> = LazyLock::new(|| {
        curve25519_dalek::constants::EIGHT_TORSION
            .iter()
            .map(|p| p.compress().to_bytes())
            .collect()
    });
    let r: &[u8] = &signature[..32];
    // y >= p = 2^255 - 19 (ignoring the sign bit) is a non-canonical encoding.
    let non_canonical =
        r[0] >= 0xed && r[1..31].iter().all(|&b| b == 0xff) && (r[31] & 0x7f) == 0x7f;
    non_canonical || SMALL_ORDER.iter().any(|s| s[..] == *r)
}

/// `verify_strict` over `DOMAIN || payload`; `buf` is reused across calls.
pub fn check_signature(pending: &Pending<'_>, buf: &mut Vec<u8>) -> Result<(), Rejected> {
    let signature = Signature::from_bytes(&pending.envelope.signature);
    let message = signed_message(buf, &pending.envelope.payload);
    pending
        .key
        .public_key
        .verify_strict(message, &signature)
        .map_err(|_| {
            Rejected::new(
                RejectReason::BadSignature,
                format!("key {}: signature does not verify", pending.key.key_id),
            )
            .key(&pending.key.key_id)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{IncidentSigner, generate};
    use ewn_model::samples;

    const NOW: i64 = 1_790_000_100_000;

    fn setup() -> (Verifier, IncidentSigner, IncidentSigner) {
        let kz = IncidentSigner::new("kz-1", generate());
        let kg = IncidentSigner::new("kg-1", generate());
        let mut store = TrustStore::default();
        for (s, state) in [(&kz, "KZ"), (&kg, "KG")] {
            store.insert(KeyEntry {
                key_id: s.key_id().into(),
                state: state.into(),
                public_key: s.verifying_key(),
                not_before: 1_767_225_600_000,
                not_after: 1_798_761_600_000,
                revoked_at: None,
            });
        }
        (
            Verifier::new(Arc::new(store), VerifyPolicy::default()),
            kz,
            kg,
        )
    }

    fn reason(v: &Verifier, bytes: &[u8], topic: &str) -> RejectReason {
        v.verify(bytes, Some(topic), NOW).unwrap_err().reason
    }

    #[test]
    fn good_record_verifies() {
        let (v, mut kz, _) = setup();
        let bytes = kz.sign(&samples::incident()).unwrap().to_avro().unwrap();
        let ok = v.verify(&bytes, Some("kz"), NOW).unwrap();
        assert_eq!(ok.incident, samples::incident());
    }

    #[test]
    fn each_failure_has_its_reason() {
        let (v, mut kz, mut kg) = setup();
        let incident = samples::incident();
        // a single flipped bit anywhere in the payload
        let mut env = kz.sign(&incident).unwrap();
        env.payload[20] ^= 0x01;
        assert_eq!(
            reason(&v, &env.to_avro().unwrap(), "kz"),
            RejectReason::BadSignature
        );
        // signed by another state's key, on that state's topic
        let bytes = kg.sign(&incident).unwrap().to_avro().unwrap();
        assert_eq!(reason(&v, &bytes, "kg"), RejectReason::KeyStateMismatch);
        // ... and on the victim's topic
        assert_eq!(reason(&v, &bytes, "kz"), RejectReason::TopicMismatch);
        // unknown key
        let mut stranger = IncidentSigner::new("xx-1", generate());
        let bytes = stranger.sign(&incident).unwrap().to_avro().unwrap();
        assert_eq!(reason(&v, &bytes, "kz"), RejectReason::UnknownKey);
        // garbage and oversized
        assert_eq!(
            reason(&v, b"\xc3\x01garbage", "kz"),
            RejectReason::Undecodable
        );
        assert_eq!(
            reason(&v, &vec![0u8; 70_000], "kz"),
            RejectReason::Oversized
        );
        // a valid signature over a payload that is not an incident
        let bytes = kz.sign_payload(b"not avro".to_vec()).to_avro().unwrap();
        assert_eq!(reason(&v, &bytes, "kz"), RejectReason::Undecodable);
    }

    #[test]
    fn revoked_and_expired_keys() {
        let (v, mut kz, _) = setup();
        let mut store = TrustStore::default();
        let mut entry = v.store().get("kz-1").unwrap().clone();
        entry.revoked_at = Some(NOW - 1);
        store.insert(entry.clone());
        let revoked = Verifier::new(Arc::new(store), VerifyPolicy::default());
        let bytes = kz.sign(&samples::incident()).unwrap().to_avro().unwrap();
        assert_eq!(reason(&revoked, &bytes, "kz"), RejectReason::KeyRevoked);

        let mut store = TrustStore::default();
        entry.revoked_at = None;
        entry.not_after = samples::incident().reported_at - 1;
        store.insert(entry);
        let expired = Verifier::new(Arc::new(store), VerifyPolicy::default());
        assert_eq!(reason(&expired, &bytes, "kz"), RejectReason::KeyExpired);
    }

    #[test]
    fn skew_and_age() {
        let (v, mut kz, _) = setup();
        let policy = VerifyPolicy {
            max_clock_skew_ms: Some(60_000),
            max_age_ms: Some(3_600_000),
            ..v.policy
        };
        let v = Verifier::new(v.store, policy);
        let mut incident = samples::incident();
        incident.reported_at = NOW + 120_000;
        let bytes = kz.sign(&incident).unwrap().to_avro().unwrap();
        assert_eq!(reason(&v, &bytes, "kz"), RejectReason::ClockSkew);
        incident.reported_at = NOW - 7_200_000;
        incident.occurred_at = incident.reported_at;
        let bytes = kz.sign(&incident).unwrap().to_avro().unwrap();
        assert_eq!(reason(&v, &bytes, "kz"), RejectReason::TooOld);
    }

    #[test]
    fn event_time_ahead_of_the_clock_is_future() {
        let (v, mut kz, _) = setup();
        let policy = VerifyPolicy {
            max_clock_skew_ms: Some(300_000),
            max_future_ms: Some(60_000),
            ..v.policy
        };
        let v = Verifier::new(v.store, policy);
        let mut incident = samples::incident();
        // Signed 290 s ahead (inside the skew), event 61 s ahead: FUTURE.
        incident.reported_at = NOW + 290_000;
        incident.occurred_at = NOW + 61_000;
        let bytes = kz.sign(&incident).unwrap().to_avro().unwrap();
        assert_eq!(reason(&v, &bytes, "kz"), RejectReason::Future);
        incident.occurred_at = NOW + 60_000;
        let bytes = kz.sign(&incident).unwrap().to_avro().unwrap();
        assert!(
            v.verify(&bytes, Some("kz"), NOW).is_ok(),
            "exactly at the bound is accepted"
        );
    }

    #[test]
    fn batch_agrees_with_one_by_one() {
        let (v, mut kz, mut kg) = setup();
        let mut values = Vec::new();
        for i in 0..20 {
            let mut incident = samples::incident();
            incident.summary = format!("report {i}");
            let signer = if i % 2 == 0 { &mut kz } else { &mut kg };
            let mut env = signer.sign(&incident).unwrap();
            if i == 7 || i == 13 {
                env.payload[25] ^= 1;
            }
            if i == 11 {
                // R = the identity point, a small-order R a key holder could choose
                env.signature[..32].copy_from_slice(
                    &curve25519_dalek::constants::EIGHT_TORSION[0]
                        .compress()
                        .to_bytes(),
                );
            }
            values.push(env.to_avro().unwrap());
        }
        let pending: Vec<Pending<'_>> = values
            .iter()
            .map(|b| v.check_envelope(b, None, NOW).unwrap())
            .collect();
        let batch: Vec<bool> = check_signatures(&pending)
            .iter()
            .map(Result::is_ok)
            .collect();
        let mut buf = Vec::new();
        let single: Vec<bool> = pending
            .iter()
            .map(|p| check_signature(p, &mut buf).is_ok())
            .collect();
        assert_eq!(batch, single);
        assert_eq!(batch.iter().filter(|ok| !**ok).count(), 3);
        let good: Vec<Pending<'_>> = values
            .iter()
            .enumerate()
            .filter(|(i, _)| ![7, 11, 13].contains(i))
            .map(|(_, b)| v.check_envelope(b, None, NOW).unwrap())
            .collect();
        assert!(check_signatures(&good).iter().all(Result::is_ok));
    }

    #[test]
    fn invalid_fields_signed_by_a_real_key_are_rejected() {
        let (v, mut kz, _) = setup();
        let mut incident = samples::incident();
        incident.subjects[0].subject_ref = "AB12345 raw passport".into();
        let bytes = kz.sign(&incident).unwrap().to_avro().unwrap();
        let rejected = v.verify(&bytes, Some("kz"), NOW).unwrap_err();
        assert_eq!(rejected.reason, RejectReason::Invalid);
        assert!(rejected.detail.contains("subjects[0].ref"));
        assert!(!rejected.detail.contains("AB12345"));
    }

    #[test]
    fn an_incident_signed_before_the_fingerprint_change_still_verifies() {
        // What an older EWN signed: the payload's header carries apache-avro's fingerprint.
        let (v, mut kz, _) = setup();
        let mut payload = samples::incident().to_avro().unwrap();
        let codec = ewn_model::Incident::codec();
        assert_ne!(codec.legacy_fingerprint(), codec.fingerprint());
        payload[2..10].copy_from_slice(&codec.legacy_fingerprint());
        let bytes = kz.sign_payload(payload.clone()).to_avro().unwrap();
        let ok = v.verify(&bytes, Some("kz"), NOW).unwrap();
        assert_eq!(ok.incident, samples::incident());
        // The signature covers the bytes as written: the header stays what was signed.
        assert_eq!(ok.envelope.payload, payload);
    }
}
