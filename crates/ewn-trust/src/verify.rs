//! Verification of `SignedIncident` records: every failure has a reason from a closed set.
//!
//! Order of checks, cheapest and least trusting first: size, envelope decoding, key lookup,
//! revocation, key/topic state, signature (over `DOMAIN || payload`), and only then is the
//! payload decoded: nothing an unauthenticated sender wrote is parsed beyond the envelope.

use std::sync::Arc;

use ewn_model::validate::{Limits, printable, validate_incident};
use ewn_model::{AvroRecord, Incident, RejectReason, SignedIncident};

use crate::ed25519::{self, Signed};
use crate::keys::DOMAIN;
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
        check_signature(&pending)?;
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

/// Checks the signatures of a batch under the one rule of [`crate::ed25519`]: one batch
/// equation for all, and one by one only when it fails. Accepts exactly what
/// [`check_signature`] accepts. Returns one result per pending record.
pub fn check_signatures(pending: &[Pending<'_>]) -> Vec<Result<(), Rejected>> {
    let items: Vec<Signed<'_>> = pending
        .iter()
        .map(|p| Signed {
            key: &p.key.public_key,
            message: &p.envelope.payload,
            signature: &p.envelope.signature,
        })
        .collect();
    ed25519::verify_batch(DOMAIN, &items)
        .into_iter()
        .zip(pending)
        .map(|(ok, p)| {
            if ok {
                Ok(())
            } else {
                Err(bad_signature(p.key))
            }
        })
        .collect()
}

fn bad_signature(key: &KeyEntry) -> Rejected {
    Rejected::new(
        RejectReason::BadSignature,
        format!("key {}: signature does not verify", key.key_id),
    )
    .key(&key.key_id)
}

/// Checks one signature over `DOMAIN || payload` under the one rule of [`crate::ed25519`],
/// the same as [`check_signatures`] does in a batch.
pub fn check_signature(pending: &Pending<'_>) -> Result<(), Rejected> {
    let envelope = &pending.envelope;
    if ed25519::verify(
        &pending.key.public_key,
        DOMAIN,
        &envelope.payload,
        &envelope.signature,
    ) {
        Ok(())
    } else {
        Err(bad_signature(pending.key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PublicKey;
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
                public_key: s.public_key(),
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
        let single: Vec<bool> = pending.iter().map(|p| check_signature(p).is_ok()).collect();
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

    /// Signs `DOMAIN || payload` as a key holder who puts `torsion` into the nonce point.
    fn sign_with_torsion(
        key: &ed25519_dalek::SigningKey,
        payload: &[u8],
        torsion: curve25519_dalek::EdwardsPoint,
    ) -> [u8; 64] {
        use curve25519_dalek::{EdwardsPoint, Scalar};
        use sha2::{Digest, Sha512};
        let wide = |d: &[u8]| {
            let mut w = [0u8; 64];
            w.copy_from_slice(d);
            Scalar::from_bytes_mod_order_wide(&w)
        };
        let r = wide(&Sha512::digest(payload));
        let r_bytes = (EdwardsPoint::mul_base(&r) + torsion).compress().to_bytes();
        let k = wide(
            &Sha512::new()
                .chain_update(r_bytes)
                .chain_update(key.verifying_key().as_bytes())
                .chain_update(DOMAIN)
                .chain_update(payload)
                .finalize(),
        );
        let mut signature = [0u8; 64];
        signature[..32].copy_from_slice(&r_bytes);
        signature[32..].copy_from_slice((r + k * key.to_scalar()).as_bytes());
        signature
    }

    #[test]
    fn torsion_in_r_gets_one_verdict_from_tail_single_and_every_batch_position() {
        let (_, mut kz, mut kg) = setup();
        let key = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
        let mut store = TrustStore::default();
        for (s, state) in [(&kz, "KZ"), (&kg, "KG")] {
            store.insert(KeyEntry {
                key_id: s.key_id().into(),
                state: state.into(),
                public_key: s.public_key(),
                not_before: 1_767_225_600_000,
                not_after: 1_798_761_600_000,
                revoked_at: None,
            });
        }
        store.insert(KeyEntry {
            key_id: "kz-holder".into(),
            state: "KZ".into(),
            public_key: PublicKey::from(&key),
            not_before: 1_767_225_600_000,
            not_after: 1_798_761_600_000,
            revoked_at: None,
        });
        let v = Verifier::new(Arc::new(store), VerifyPolicy::default());
        let payload = samples::incident().to_avro().unwrap();
        let order_2 = curve25519_dalek::constants::EIGHT_TORSION[4];
        // The key holder's own torsion: valid under the cofactored equation.
        let holders = SignedIncident {
            key_id: "kz-holder".into(),
            signature: sign_with_torsion(&key, &payload, order_2),
            payload: payload.clone(),
        };
        // A third party adding torsion to a valid signature's R: the hash changes.
        let mut tampered = kz.sign(&samples::incident()).unwrap();
        let r = curve25519_dalek::edwards::CompressedEdwardsY(
            tampered.signature[..32].try_into().unwrap(),
        )
        .decompress()
        .unwrap();
        tampered.signature[..32].copy_from_slice(&(r + order_2).compress().to_bytes());
        let others: Vec<Vec<u8>> = (0..63)
            .map(|i| {
                let mut incident = samples::incident();
                incident.summary = format!("report {i}");
                let signer = if i % 2 == 0 { &mut kz } else { &mut kg };
                signer.sign(&incident).unwrap().to_avro().unwrap()
            })
            .collect();
        for (envelope, accept) in [(holders, true), (tampered, false)] {
            let bytes = envelope.to_avro().unwrap();
            // what `ewn tail` runs
            assert_eq!(v.verify(&bytes, Some("kz"), NOW).is_ok(), accept);
            let alone = v.check_envelope(&bytes, None, NOW).unwrap();
            assert_eq!(check_signature(&alone).is_ok(), accept);
            for position in 0..64 {
                let mut values: Vec<&[u8]> = others.iter().map(Vec::as_slice).collect();
                values.insert(position, &bytes);
                let pending: Vec<Pending<'_>> = values
                    .iter()
                    .map(|b| v.check_envelope(b, None, NOW).unwrap())
                    .collect();
                let verdicts: Vec<bool> = check_signatures(&pending)
                    .iter()
                    .map(Result::is_ok)
                    .collect();
                for (i, ok) in verdicts.iter().enumerate() {
                    assert_eq!(
                        *ok,
                        i != position || accept,
                        "position {position}, item {i}"
                    );
                }
            }
        }
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
