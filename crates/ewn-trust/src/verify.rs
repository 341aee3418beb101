//! Verification of `SignedIncident` records: every failure has a reason from a closed set.
//!
//! Order of checks, cheapest and least trusting first: size, envelope decoding, key lookup,
//! revocation (at the verifier's clock), key/topic state, signature (over
//! `DOMAIN || signed_at || payload`, or `LEGACY_DOMAIN || payload` for an envelope without a
//! signing time), and only then is the payload decoded: nothing an unauthenticated sender
//! wrote is parsed beyond the envelope.
//!
//! # Signing time
//!
//! A key's validity is judged at the signing time `t`, which the signature covers, bounded by
//! the verifier's clock (see [`Verifier::check_payload`] for the exact order):
//!
//! - `t` is `signed_at`; for an envelope written before that field existed, the payload's
//!   `reported_at` (the former rule: such envelopes were signed when reported);
//! - `t <= now + signing_skew` (`CLOCK_SKEW`): a signer cannot claim a time the verifier has
//!   not reached, so it cannot sign "in the validity of" a key that is not valid yet;
//! - the key is not revoked at `max(now, t)` (`KEY_REVOKED`): revocation means compromise, so
//!   nothing is trusted once it is in force, whatever `t` claims (a thief can backdate it);
//! - `not_before <= t` (`KEY_NOT_YET_VALID`) and `t < not_after` (`KEY_EXPIRED`);
//! - `reported_at <= t + signing_skew` (`CLOCK_SKEW`): a report is recorded before it is
//!   signed; the skew absorbs the difference between a post's clock and its signer's.
//!
//! A report recorded offline and signed when it is uploaded is therefore judged by the key
//! in force at upload, not at recording: a state may rotate keys while its posts are offline.

use std::sync::Arc;

use ewn_model::validate::{Limits, printable, validate_incident};
use ewn_model::{AvroRecord, Incident, RejectReason, SignedIncident};

use crate::ed25519::{self, Signed};
use crate::keys::SignedPrefix;
use crate::store::{KeyEntry, TrustStore};

/// What a verifier enforces beyond the signature.
#[derive(Clone, Copy, Debug)]
pub struct VerifyPolicy {
    /// Largest record value accepted, in bytes; larger ones are `OVERSIZED` without decoding.
    pub max_record_bytes: usize,
    pub limits: Limits,
    /// How far the signing time may lie in the future of the verifier's clock, and how far
    /// `reported_at` may lie after the signing time (`CLOCK_SKEW` beyond either). Part of the
    /// key-validity rule, so every verifier (the processor, `ewn tail`) applies it.
    pub signing_skew_ms: i64,
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
            signing_skew_ms: DEFAULT_CLOCK_SKEW_SECS as i64 * 1000,
            max_clock_skew_ms: None,
            max_age_ms: None,
            max_future_ms: None,
        }
    }
}

const DEFAULT_CLOCK_SKEW_SECS: u64 = 300;

/// The `[trust]` configuration section.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrustSettings {
    /// The TOML trust store of public keys.
    pub trust_store: Option<std::path::PathBuf>,
    pub max_record_bytes: usize,
    /// How far ahead of the verifier's clock `reported_at` and the signing time may be, and
    /// how far `reported_at` may be after the signing time.
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
            max_clock_skew_secs: DEFAULT_CLOCK_SKEW_SECS,
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
            signing_skew_ms: self.signing_skew_ms(),
            max_clock_skew_ms: Some(self.max_clock_skew_secs as i64 * 1000),
            max_age_ms: Some(self.max_age_secs as i64 * 1000),
            max_future_ms: Some(self.max_future_skew_secs as i64 * 1000),
        }
    }

    /// The skew of the signing-time rule, which every verifier applies.
    pub fn signing_skew_ms(&self) -> i64 {
        i64::try_from(self.max_clock_skew_secs.saturating_mul(1000)).unwrap_or(i64::MAX)
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
    pub(crate) fn new(reason: RejectReason, detail: impl Into<String>) -> Self {
        Rejected {
            reason,
            detail: detail.into(),
            key_id: None,
            incident_id: None,
        }
    }

    pub(crate) fn key(mut self, key_id: &str) -> Self {
        self.key_id = Some(printable(key_id));
        self
    }
}

/// A record whose envelope and key checks passed, awaiting its signature check.
pub struct Pending<'s> {
    pub envelope: SignedIncident,
    key: &'s KeyEntry,
    prefix: SignedPrefix,
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
            if let Some(service) = self.store.service_key(&envelope.key_id) {
                return Err(service_key_refused(service).key(&envelope.key_id));
            }
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
            // whatever signing time it claims (a thief can backdate `signed_at`).
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
        let prefix = SignedPrefix::of(envelope.signed_at);
        Ok(Pending {
            envelope,
            key,
            prefix,
        })
    }

    /// Decodes and checks the signed payload: reporter state, key validity at the signing
    /// time (the rule of the module documentation, in this order: signing time against this
    /// clock, revocation, `not_before`, `not_after`, `reported_at` against the signing time),
    /// field bounds, and the clock-skew and age bounds of the policy. Only called once the
    /// signature verified, so the signing time judged is the signer's.
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
        let signing = SigningTime::of(&pending.envelope, &incident);
        judge_signing_time(key, signing, now_ms, self.policy.signing_skew_ms)
            .map_err(|(reason, detail)| reject(reason, detail))?;
        if incident.reported_at > signing.at.saturating_add(self.policy.signing_skew_ms) {
            return Err(reject(
                RejectReason::ClockSkew,
                format!(
                    "reported_at is {} ms after the signing time (at most {} ms)",
                    incident.reported_at.saturating_sub(signing.at),
                    self.policy.signing_skew_ms
                ),
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

/// A record of a state's (an incident, a heartbeat) signed by a key of role `service`:
/// service keys sign audit records only. `KEY_STATE_MISMATCH`: the key signs for no state.
pub(crate) fn service_key_refused(service: &crate::store::ServiceKey) -> Rejected {
    Rejected::new(
        RejectReason::KeyStateMismatch,
        format!(
            "key {} has role `service` ({}): it signs audit records, not a state's records",
            printable(&service.key_id),
            printable(&service.service)
        ),
    )
}

/// The time a key is judged at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SigningTime {
    pub at: i64,
    /// True when the envelope carries no `signed_at` and `at` is the payload's `reported_at`.
    pub legacy: bool,
}

impl SigningTime {
    /// `signed_at`, or for an envelope written before it existed, `reported_at`.
    pub fn of(envelope: &SignedIncident, incident: &Incident) -> SigningTime {
        match envelope.signed_at {
            Some(at) => SigningTime { at, legacy: false },
            None => SigningTime {
                at: incident.reported_at,
                legacy: true,
            },
        }
    }

    fn name(self) -> &'static str {
        if self.legacy {
            "reported_at (no signed_at)"
        } else {
            "signed_at"
        }
    }
}

/// The key-validity rule at the signing time, bounded by the verifier's clock `now_ms`: the
/// signing time no later than `now_ms + skew_ms` (`CLOCK_SKEW`), the key not revoked at
/// `max(now, signing time)` (`KEY_REVOKED`), `not_before <= t` (`KEY_NOT_YET_VALID`) and
/// `t < not_after` (`KEY_EXPIRED`). Pure: the clock is passed in.
pub fn judge_signing_time(
    key: &KeyEntry,
    signing: SigningTime,
    now_ms: i64,
    skew_ms: i64,
) -> Result<(), (RejectReason, String)> {
    let t = signing.at;
    let what = signing.name();
    if t > now_ms.saturating_add(skew_ms) {
        return Err((
            RejectReason::ClockSkew,
            format!(
                "{what} is {} ms ahead of this clock (at most {skew_ms} ms)",
                t.saturating_sub(now_ms)
            ),
        ));
    }
    if let Some(revoked_at) = key.revoked_at
        && revoked_at <= now_ms.max(t)
    {
        return Err((
            RejectReason::KeyRevoked,
            format!("key {}: revoked", key.key_id),
        ));
    }
    if t < key.not_before {
        return Err((
            RejectReason::KeyNotYetValid,
            format!(
                "key {}: not valid until {} ms after {what}",
                key.key_id,
                key.not_before.saturating_sub(t)
            ),
        ));
    }
    if t >= key.not_after {
        return Err((
            RejectReason::KeyExpired,
            format!(
                "key {}: expired {} ms before {what}",
                key.key_id,
                t.saturating_sub(key.not_after)
            ),
        ));
    }
    Ok(())
}

/// Checks the signatures of a batch under the one rule of [`crate::ed25519`]: one batch
/// equation for all, and one by one only when it fails. Accepts exactly what
/// [`check_signature`] accepts. Returns one result per pending record.
pub fn check_signatures(pending: &[Pending<'_>]) -> Vec<Result<(), Rejected>> {
    let items: Vec<Signed<'_>> = pending
        .iter()
        .map(|p| Signed {
            key: &p.key.public_key,
            prefix: p.prefix.as_bytes(),
            message: &p.envelope.payload,
            signature: &p.envelope.signature,
        })
        .collect();
    ed25519::verify_batch(&items)
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

/// Checks one signature over the envelope's signed prefix and payload under the one rule of
/// [`crate::ed25519`], the same as [`check_signatures`] does in a batch.
pub fn check_signature(pending: &Pending<'_>) -> Result<(), Rejected> {
    let envelope = &pending.envelope;
    if ed25519::verify(
        &pending.key.public_key,
        pending.prefix.as_bytes(),
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
        let bytes = kz
            .sign(&samples::incident(), samples::incident().reported_at)
            .unwrap()
            .to_avro()
            .unwrap();
        let ok = v.verify(&bytes, Some("kz"), NOW).unwrap();
        assert_eq!(ok.incident, samples::incident());
    }

    #[test]
    fn each_failure_has_its_reason() {
        let (v, mut kz, mut kg) = setup();
        let incident = samples::incident();
        // a single flipped bit anywhere in the payload
        let mut env = kz.sign(&incident, incident.reported_at).unwrap();
        env.payload[20] ^= 0x01;
        assert_eq!(
            reason(&v, &env.to_avro().unwrap(), "kz"),
            RejectReason::BadSignature
        );
        // signed by another state's key, on that state's topic
        let bytes = kg
            .sign(&incident, incident.reported_at)
            .unwrap()
            .to_avro()
            .unwrap();
        assert_eq!(reason(&v, &bytes, "kg"), RejectReason::KeyStateMismatch);
        // ... and on the victim's topic
        assert_eq!(reason(&v, &bytes, "kz"), RejectReason::TopicMismatch);
        // unknown key
        let mut stranger = IncidentSigner::new("xx-1", generate());
        let bytes = stranger
            .sign(&incident, incident.reported_at)
            .unwrap()
            .to_avro()
            .unwrap();
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
        let bytes = kz
            .sign_payload(b"not avro".to_vec(), NOW)
            .to_avro()
            .unwrap();
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
        let bytes = kz
            .sign(&samples::incident(), samples::incident().reported_at)
            .unwrap()
            .to_avro()
            .unwrap();
        assert_eq!(reason(&revoked, &bytes, "kz"), RejectReason::KeyRevoked);

        let mut store = TrustStore::default();
        entry.revoked_at = None;
        entry.not_after = samples::incident().reported_at - 1;
        store.insert(entry);
        let expired = Verifier::new(Arc::new(store), VerifyPolicy::default());
        assert_eq!(reason(&expired, &bytes, "kz"), RejectReason::KeyExpired);
    }

    /// A verifier trusting `kz` for KZ with the given validity, the default signing skew
    /// (300 s) and no other clock bounds.
    fn with_key(kz: &IncidentSigner, not_before: i64, not_after: i64) -> Verifier {
        let mut store = TrustStore::default();
        store.insert(KeyEntry {
            key_id: kz.key_id().into(),
            state: "KZ".into(),
            public_key: kz.public_key(),
            not_before,
            not_after,
            revoked_at: None,
        });
        Verifier::new(Arc::new(store), VerifyPolicy::default())
    }

    /// The bytes an EWN before `signed_at` wrote: the envelope's first schema version (its
    /// fingerprint in the header, no `signed_at` in the datum), signed the legacy way.
    fn legacy_envelope(signer: &mut IncidentSigner, incident: &Incident) -> Vec<u8> {
        let env = signer.sign_legacy_payload(incident.to_avro().unwrap());
        let mut bytes = env.to_avro().unwrap();
        // The current form ends with the union branch of a null signed_at (zig-zag 0).
        assert_eq!(bytes.pop(), Some(0));
        let codec = SignedIncident::codec();
        let [v1, _] = codec.earlier_fingerprints()[0];
        bytes[2..10].copy_from_slice(&v1);
        let back = SignedIncident::from_avro(&bytes).unwrap();
        assert_eq!(back, env);
        bytes
    }

    const MINUTE: i64 = 60_000;
    const SKEW: i64 = 300_000;

    #[test]
    fn a_report_recorded_20_minutes_ago_signed_now_by_a_key_made_now_is_accepted() {
        let (_, mut kz, _) = setup();
        // `ewn keygen` a second ago: not_before = then.
        let v = with_key(&kz, NOW - 1_000, NOW + 365 * 24 * 60 * MINUTE);
        let mut incident = samples::incident();
        incident.reported_at = NOW - 20 * MINUTE;
        incident.occurred_at = NOW - 25 * MINUTE;
        let bytes = kz.sign(&incident, NOW).unwrap().to_avro().unwrap();
        let ok = v.verify(&bytes, Some("kz"), NOW).unwrap();
        assert_eq!(ok.envelope.signed_at, Some(NOW));
        assert_eq!(ok.incident, incident);
        // The same report in the old envelope is judged at reported_at, before the key's
        // not_before: not yet valid (the report was this, then named KEY_EXPIRED).
        let old = legacy_envelope(&mut kz, &incident);
        let rejected = v.verify(&old, Some("kz"), NOW).unwrap_err();
        assert_eq!(rejected.reason, RejectReason::KeyNotYetValid);
        assert!(
            rejected.detail.contains("reported_at"),
            "{}",
            rejected.detail
        );
    }

    #[test]
    fn reports_recorded_offline_are_accepted_after_a_rotation() {
        let (_, mut old_key, _) = setup();
        let mut new_key = IncidentSigner::new("kz-2", generate());
        let mut store = TrustStore::default();
        // Rotated 30 minutes ago; the old key expired 10 minutes ago.
        for (s, not_before, not_after) in [
            (&old_key, NOW - 400 * 24 * 60 * MINUTE, NOW - 10 * MINUTE),
            (&new_key, NOW - 30 * MINUTE, NOW + 365 * 24 * 60 * MINUTE),
        ] {
            store.insert(KeyEntry {
                key_id: s.key_id().into(),
                state: "KZ".into(),
                public_key: s.public_key(),
                not_before,
                not_after,
                revoked_at: None,
            });
        }
        let v = Verifier::new(Arc::new(store), VerifyPolicy::default());
        // Recorded two hours ago, offline, uploaded now and signed at upload.
        let mut incident = samples::incident();
        incident.reported_at = NOW - 120 * MINUTE;
        incident.occurred_at = NOW - 121 * MINUTE;
        let bytes = new_key.sign(&incident, NOW).unwrap().to_avro().unwrap();
        assert!(v.verify(&bytes, Some("kz"), NOW).is_ok());
        // The retired key cannot sign today, even for a report of the time it was valid.
        let bytes = old_key.sign(&incident, NOW).unwrap().to_avro().unwrap();
        assert_eq!(reason(&v, &bytes, "kz"), RejectReason::KeyExpired);
        // What it signed while valid stays valid.
        let bytes = old_key
            .sign(&incident, NOW - 60 * MINUTE)
            .unwrap()
            .to_avro()
            .unwrap();
        assert!(v.verify(&bytes, Some("kz"), NOW).is_ok());
    }

    #[test]
    fn key_validity_boundaries_at_the_signing_time() {
        let (_, kz, _) = setup();
        let key = KeyEntry {
            key_id: "kz-1".into(),
            state: "KZ".into(),
            public_key: kz.public_key(),
            not_before: NOW - 100 * MINUTE,
            not_after: NOW + 100 * MINUTE,
            revoked_at: None,
        };
        let at = |at| SigningTime { at, legacy: false };
        let judge = |key: &KeyEntry, t: i64| {
            judge_signing_time(key, at(t), NOW, SKEW).map_err(|(reason, _)| reason)
        };
        assert_eq!(judge(&key, key.not_before), Ok(()));
        assert_eq!(
            judge(&key, key.not_before - 1),
            Err(RejectReason::KeyNotYetValid)
        );
        // not_after is exclusive
        let mut short = key.clone();
        short.not_after = NOW - MINUTE;
        assert_eq!(judge(&short, short.not_after - 1), Ok(()));
        assert_eq!(
            judge(&short, short.not_after),
            Err(RejectReason::KeyExpired)
        );
        // bounded by this clock plus the skew, whatever the key's validity
        assert_eq!(judge(&key, NOW + SKEW), Ok(()));
        assert_eq!(judge(&key, NOW + SKEW + 1), Err(RejectReason::ClockSkew));
        let mut future = key.clone();
        future.not_before = NOW + 10 * MINUTE;
        assert_eq!(
            judge(&future, NOW + 10 * MINUTE),
            Err(RejectReason::ClockSkew),
            "a key valid from 10 minutes on cannot sign now for then"
        );
        assert_eq!(judge(&future, NOW), Err(RejectReason::KeyNotYetValid));
        // revoked: in force at this clock (compromise) or at the signing time
        let mut revoked = key.clone();
        revoked.revoked_at = Some(NOW);
        assert_eq!(judge(&revoked, NOW - MINUTE), Err(RejectReason::KeyRevoked));
        revoked.revoked_at = Some(NOW + MINUTE);
        assert_eq!(judge(&revoked, NOW - MINUTE), Ok(()));
        assert_eq!(judge(&revoked, NOW + MINUTE), Err(RejectReason::KeyRevoked));
        assert_eq!(judge(&revoked, NOW + MINUTE - 1), Ok(()));
    }

    #[test]
    fn signing_time_against_the_clock_and_reported_at() {
        let (_, mut kz, _) = setup();
        let v = with_key(&kz, NOW - 100 * MINUTE, NOW + 100 * MINUTE);
        let mut incident = samples::incident();
        incident.occurred_at = NOW - 2 * MINUTE;
        incident.reported_at = NOW - MINUTE;
        let sign = |kz: &mut IncidentSigner, incident: &Incident, t: i64| {
            kz.sign(incident, t).unwrap().to_avro().unwrap()
        };
        // a signing time too far in the future of this clock
        let bytes = sign(&mut kz, &incident, NOW + SKEW + 1);
        let rejected = v.verify(&bytes, Some("kz"), NOW).unwrap_err();
        assert_eq!(rejected.reason, RejectReason::ClockSkew);
        assert!(rejected.detail.contains("signed_at"), "{}", rejected.detail);
        assert!(
            v.verify(&sign(&mut kz, &incident, NOW + SKEW), Some("kz"), NOW)
                .is_ok()
        );
        // reported after it was signed: within the skew (two clocks), not beyond
        let t = NOW - 3 * MINUTE;
        incident.reported_at = t + SKEW;
        assert!(
            v.verify(&sign(&mut kz, &incident, t), Some("kz"), NOW)
                .is_ok()
        );
        incident.reported_at = t + SKEW + 1;
        let rejected = v
            .verify(&sign(&mut kz, &incident, t), Some("kz"), NOW)
            .unwrap_err();
        assert_eq!(rejected.reason, RejectReason::ClockSkew);
        assert!(rejected.detail.contains("after the signing time"));
    }

    #[test]
    fn the_signing_time_is_covered_by_the_signature() {
        let (v, mut kz, _) = setup();
        let incident = samples::incident();
        let signed = kz.sign(&incident, NOW).unwrap();
        let mut moved = signed.clone();
        moved.signed_at = Some(NOW - 1);
        assert_eq!(
            reason(&v, &moved.to_avro().unwrap(), "kz"),
            RejectReason::BadSignature
        );
        // stripped: the legacy form of the same bytes is another message
        let mut stripped = signed.clone();
        stripped.signed_at = None;
        assert_eq!(
            reason(&v, &stripped.to_avro().unwrap(), "kz"),
            RejectReason::BadSignature
        );
        // added to a legacy envelope
        let mut added = kz.sign_legacy_payload(incident.to_avro().unwrap());
        assert!(v.verify(&added.to_avro().unwrap(), Some("kz"), NOW).is_ok());
        added.signed_at = Some(incident.reported_at);
        assert_eq!(
            reason(&v, &added.to_avro().unwrap(), "kz"),
            RejectReason::BadSignature
        );
    }

    #[test]
    fn an_old_envelope_is_judged_at_reported_at() {
        let (_, mut kz, _) = setup();
        let mut incident = samples::incident();
        incident.reported_at = NOW - 10 * MINUTE;
        incident.occurred_at = NOW - 11 * MINUTE;
        let bytes = legacy_envelope(&mut kz, &incident);
        let valid = with_key(&kz, incident.reported_at, NOW + MINUTE);
        let ok = valid.verify(&bytes, Some("kz"), NOW).unwrap();
        assert_eq!(ok.envelope.signed_at, None);
        let late = with_key(&kz, incident.reported_at + 1, NOW + MINUTE);
        assert_eq!(reason(&late, &bytes, "kz"), RejectReason::KeyNotYetValid);
        let expired = with_key(&kz, NOW - 100 * MINUTE, incident.reported_at);
        assert_eq!(reason(&expired, &bytes, "kz"), RejectReason::KeyExpired);
    }

    #[test]
    fn batches_mixing_old_and_new_envelopes_agree_with_one_by_one() {
        let (v, mut kz, _) = setup();
        let values: Vec<Vec<u8>> = (0..12)
            .map(|i| {
                let mut incident = samples::incident();
                incident.summary = format!("report {i}");
                let mut env = if i % 3 == 0 {
                    kz.sign_legacy_payload(incident.to_avro().unwrap())
                } else {
                    kz.sign(&incident, NOW - i).unwrap()
                };
                if i == 4 {
                    env.signed_at = Some(NOW);
                }
                if i == 6 {
                    env.signed_at = Some(NOW);
                }
                env.to_avro().unwrap()
            })
            .collect();
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
        let refused: Vec<usize> = (0..12).filter(|i| !batch[*i]).collect();
        assert_eq!(refused, vec![4, 6]);
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
        let bytes = kz
            .sign(&incident, incident.reported_at)
            .unwrap()
            .to_avro()
            .unwrap();
        assert_eq!(reason(&v, &bytes, "kz"), RejectReason::ClockSkew);
        incident.reported_at = NOW - 7_200_000;
        incident.occurred_at = incident.reported_at;
        let bytes = kz
            .sign(&incident, incident.reported_at)
            .unwrap()
            .to_avro()
            .unwrap();
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
        let bytes = kz
            .sign(&incident, incident.reported_at)
            .unwrap()
            .to_avro()
            .unwrap();
        assert_eq!(reason(&v, &bytes, "kz"), RejectReason::Future);
        incident.occurred_at = NOW + 60_000;
        let bytes = kz
            .sign(&incident, incident.reported_at)
            .unwrap()
            .to_avro()
            .unwrap();
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
            let mut env = signer.sign(&incident, incident.reported_at).unwrap();
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

    /// Signs `prefix || payload` as a key holder who puts `torsion` into the nonce point.
    fn sign_with_torsion(
        key: &ed25519_dalek::SigningKey,
        prefix: SignedPrefix,
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
                .chain_update(prefix.as_bytes())
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
        let signed_at = samples::incident().reported_at;
        let holders = SignedIncident {
            key_id: "kz-holder".into(),
            signature: sign_with_torsion(
                &key,
                SignedPrefix::of(Some(signed_at)),
                &payload,
                order_2,
            ),
            payload: payload.clone(),
            signed_at: Some(signed_at),
        };
        // A third party adding torsion to a valid signature's R: the hash changes.
        let mut tampered = kz
            .sign(&samples::incident(), samples::incident().reported_at)
            .unwrap();
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
                signer
                    .sign(&incident, incident.reported_at)
                    .unwrap()
                    .to_avro()
                    .unwrap()
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
        let bytes = kz
            .sign(&incident, incident.reported_at)
            .unwrap()
            .to_avro()
            .unwrap();
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
        let bytes = kz.sign_payload(payload.clone(), NOW).to_avro().unwrap();
        let ok = v.verify(&bytes, Some("kz"), NOW).unwrap();
        assert_eq!(ok.incident, samples::incident());
        // The signature covers the bytes as written: the header stays what was signed.
        assert_eq!(ok.envelope.payload, payload);
    }
}
