//! Verification of `SignedHeartbeat` records, under the rules incidents are held to.
//!
//! A heartbeat is signed by its state's key, like an incident, over
//! `HEARTBEAT_DOMAIN || signed_at || payload` ([`crate::keys::HEARTBEAT_DOMAIN`]). The checks
//! and their order are the incident's ([`crate::verify`]): size, envelope decoding, key
//! lookup, revocation at this clock, the key's state against the topic's, the signature, and
//! only then the payload; then the payload's state against the key's, key validity at the
//! signing time bounded by this clock ([`judge_signing_time`]), `sent_at` no later than the
//! signing time plus the skew, the field bounds, and the age bound. Failures carry the same
//! closed set of reason codes.

use ewn_model::validate::{printable, validate_heartbeat};
use ewn_model::{AvroRecord, Heartbeat, RejectReason, SignedHeartbeat};

use crate::ed25519;
use crate::keys::heartbeat_prefix;
use crate::verify::{Rejected, SigningTime, Verifier, judge_signing_time};

/// A heartbeat that passed every check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedHeartbeat {
    pub envelope: SignedHeartbeat,
    pub heartbeat: Heartbeat,
}

impl Verifier {
    /// Verifies one record value read from `<prefix>heartbeats.<topic_state>`.
    pub fn verify_heartbeat(
        &self,
        value: &[u8],
        topic_state: Option<&str>,
        now_ms: i64,
    ) -> Result<VerifiedHeartbeat, Rejected> {
        let policy = self.policy();
        if value.len() > policy.max_record_bytes {
            return Err(Rejected::new(
                RejectReason::Oversized,
                format!(
                    "record is {} bytes, at most {}",
                    value.len(),
                    policy.max_record_bytes
                ),
            ));
        }
        let envelope = SignedHeartbeat::from_avro(value)
            .map_err(|e| Rejected::new(RejectReason::Undecodable, format!("envelope: {e}")))?;
        let Some(key) = self.store().get(&envelope.key_id) else {
            if let Some(service) = self.store().service_key(&envelope.key_id) {
                return Err(crate::verify::service_key_refused(service).key(&envelope.key_id));
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
        let reject = |reason, detail: String| Rejected::new(reason, detail).key(&key.key_id);
        if key.revoked_at.is_some_and(|at| at <= now_ms) {
            return Err(reject(
                RejectReason::KeyRevoked,
                format!("key {}: revoked", key.key_id),
            ));
        }
        if let Some(topic_state) = topic_state
            && !key.state.eq_ignore_ascii_case(topic_state)
        {
            return Err(reject(
                RejectReason::TopicMismatch,
                format!(
                    "key {} signs for {}, not for topic state {}",
                    key.key_id,
                    key.state,
                    printable(topic_state)
                ),
            ));
        }
        if !ed25519::verify(
            &key.public_key,
            &heartbeat_prefix(envelope.signed_at),
            &envelope.payload,
            &envelope.signature,
        ) {
            return Err(reject(
                RejectReason::BadSignature,
                format!("key {}: signature does not verify", key.key_id),
            ));
        }
        let heartbeat = Heartbeat::from_avro(&envelope.payload)
            .map_err(|e| reject(RejectReason::Undecodable, format!("payload: {e}")))?;
        if heartbeat.state != key.state {
            return Err(reject(
                RejectReason::KeyStateMismatch,
                format!(
                    "key {} signs for {}, heartbeat is from {}",
                    key.key_id,
                    key.state,
                    printable(&heartbeat.state)
                ),
            ));
        }
        let signing = SigningTime {
            at: envelope.signed_at,
            legacy: false,
        };
        judge_signing_time(key, signing, now_ms, policy.signing_skew_ms)
            .map_err(|(reason, detail)| reject(reason, detail))?;
        if heartbeat.sent_at > envelope.signed_at.saturating_add(policy.signing_skew_ms) {
            return Err(reject(
                RejectReason::ClockSkew,
                format!(
                    "sent_at is {} ms after the signing time (at most {} ms)",
                    heartbeat.sent_at.saturating_sub(envelope.signed_at),
                    policy.signing_skew_ms
                ),
            ));
        }
        if let Some(first) = validate_heartbeat(&heartbeat, &policy.limits).first() {
            return Err(reject(RejectReason::Invalid, first.to_string()));
        }
        if let Some(age) = policy.max_age_ms
            && envelope.signed_at < now_ms.saturating_sub(age)
        {
            return Err(reject(
                RejectReason::TooOld,
                format!(
                    "signed {} s ago",
                    now_ms.saturating_sub(envelope.signed_at) / 1000
                ),
            ));
        }
        Ok(VerifiedHeartbeat {
            envelope,
            heartbeat,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ewn_model::{SignedIncident, samples};

    use super::*;
    use crate::keys::{IncidentSigner, generate};
    use crate::{KeyEntry, TrustStore, VerifyPolicy};

    const NOW: i64 = 1_790_000_100_000;
    const MINUTE: i64 = 60_000;

    fn setup() -> (Verifier, IncidentSigner, IncidentSigner) {
        let kz = IncidentSigner::new("kz-1", generate());
        let kg = IncidentSigner::new("kg-1", generate());
        let mut store = TrustStore::default();
        for (s, state) in [(&kz, "KZ"), (&kg, "KG")] {
            store.insert(KeyEntry {
                key_id: s.key_id().into(),
                state: state.into(),
                public_key: s.public_key(),
                not_before: NOW - 100 * MINUTE,
                not_after: NOW + 100 * MINUTE,
                revoked_at: None,
            });
        }
        let policy = VerifyPolicy {
            max_age_ms: Some(60 * MINUTE),
            ..VerifyPolicy::default()
        };
        (Verifier::new(Arc::new(store), policy), kz, kg)
    }

    fn heartbeat(at: i64) -> Heartbeat {
        Heartbeat {
            sent_at: at,
            ..samples::heartbeat()
        }
    }

    fn reason(v: &Verifier, bytes: &[u8], topic: &str) -> RejectReason {
        v.verify_heartbeat(bytes, Some(topic), NOW)
            .unwrap_err()
            .reason
    }

    #[test]
    fn a_signed_heartbeat_verifies() {
        let (v, mut kz, _) = setup();
        let hb = heartbeat(NOW - 1000);
        let bytes = kz
            .sign_heartbeat(&hb, NOW - 1000)
            .unwrap()
            .to_avro()
            .unwrap();
        let ok = v.verify_heartbeat(&bytes, Some("kz"), NOW).unwrap();
        assert_eq!(ok.heartbeat, hb);
        assert_eq!(ok.envelope.signed_at, NOW - 1000);
    }

    #[test]
    fn each_failure_has_its_reason() {
        let (v, mut kz, mut kg) = setup();
        let hb = heartbeat(NOW);
        let good = kz.sign_heartbeat(&hb, NOW).unwrap();
        // tampered payload, and a moved signing time
        let mut env = good.clone();
        env.payload[12] ^= 1;
        assert_eq!(
            reason(&v, &env.to_avro().unwrap(), "kz"),
            RejectReason::BadSignature
        );
        let mut env = good.clone();
        env.signed_at -= 1;
        assert_eq!(
            reason(&v, &env.to_avro().unwrap(), "kz"),
            RejectReason::BadSignature
        );
        // another state's key: on its own topic, and on the victim's
        let bytes = kg.sign_heartbeat(&hb, NOW).unwrap().to_avro().unwrap();
        assert_eq!(reason(&v, &bytes, "kg"), RejectReason::KeyStateMismatch);
        assert_eq!(reason(&v, &bytes, "kz"), RejectReason::TopicMismatch);
        // a key nobody trusts
        let mut stranger = IncidentSigner::new("xx-9", generate());
        let bytes = stranger
            .sign_heartbeat(&hb, NOW)
            .unwrap()
            .to_avro()
            .unwrap();
        assert_eq!(reason(&v, &bytes, "kz"), RejectReason::UnknownKey);
        // garbage, oversized, and a signed payload that is no heartbeat
        assert_eq!(reason(&v, b"\xc3\x01junk", "kz"), RejectReason::Undecodable);
        assert_eq!(reason(&v, &vec![0; 70_000], "kz"), RejectReason::Oversized);
        let bytes = kz
            .sign_heartbeat_payload(b"not avro".to_vec(), NOW)
            .to_avro()
            .unwrap();
        assert_eq!(reason(&v, &bytes, "kz"), RejectReason::Undecodable);
        // signing time: ahead of this clock, before the key, too old
        let skew = v.policy().signing_skew_ms;
        let bytes = kz
            .sign_heartbeat(&hb, NOW + skew + 1)
            .unwrap()
            .to_avro()
            .unwrap();
        assert_eq!(reason(&v, &bytes, "kz"), RejectReason::ClockSkew);
        let early = heartbeat(NOW - 101 * MINUTE);
        let bytes = kz
            .sign_heartbeat(&early, NOW - 101 * MINUTE)
            .unwrap()
            .to_avro()
            .unwrap();
        assert_eq!(reason(&v, &bytes, "kz"), RejectReason::KeyNotYetValid);
        let old = heartbeat(NOW - 61 * MINUTE);
        let bytes = kz
            .sign_heartbeat(&old, NOW - 61 * MINUTE)
            .unwrap()
            .to_avro()
            .unwrap();
        assert_eq!(reason(&v, &bytes, "kz"), RejectReason::TooOld);
        // sent after it was signed, beyond the skew
        let bytes = kz
            .sign_heartbeat(&heartbeat(NOW + skew + 1), NOW - 1)
            .unwrap()
            .to_avro()
            .unwrap();
        assert_eq!(reason(&v, &bytes, "kz"), RejectReason::ClockSkew);
        // out of bounds
        let mut bad = heartbeat(NOW);
        bad.posts[0].spool_depth = -1;
        let bytes = kz.sign_heartbeat(&bad, NOW).unwrap().to_avro().unwrap();
        let r = v.verify_heartbeat(&bytes, Some("kz"), NOW).unwrap_err();
        assert_eq!(r.reason, RejectReason::Invalid);
        assert!(r.detail.contains("posts[0].spool_depth"), "{}", r.detail);
        assert_eq!(r.key_id.as_deref(), Some("kz-1"));
    }

    #[test]
    fn a_revoked_key_signs_no_heartbeat() {
        let (_, mut kz, _) = setup();
        let mut store = TrustStore::default();
        store.insert(KeyEntry {
            key_id: "kz-1".into(),
            state: "KZ".into(),
            public_key: kz.public_key(),
            not_before: NOW - 100 * MINUTE,
            not_after: NOW + 100 * MINUTE,
            revoked_at: Some(NOW - MINUTE),
        });
        let v = Verifier::new(Arc::new(store), VerifyPolicy::default());
        // backdated before the revocation: still refused
        let bytes = kz
            .sign_heartbeat(&heartbeat(NOW - 2 * MINUTE), NOW - 2 * MINUTE)
            .unwrap()
            .to_avro()
            .unwrap();
        assert_eq!(reason(&v, &bytes, "kz"), RejectReason::KeyRevoked);
    }

    #[test]
    fn signatures_do_not_cross_between_heartbeats_and_incidents() {
        let (v, mut kz, _) = setup();
        // A heartbeat's signature and signed bytes, presented as an incident ...
        let hb = kz.sign_heartbeat(&heartbeat(NOW), NOW).unwrap();
        let as_incident = SignedIncident {
            key_id: hb.key_id.clone(),
            signature: hb.signature,
            payload: hb.payload.clone(),
            signed_at: Some(hb.signed_at),
        };
        assert_eq!(
            v.verify(&as_incident.to_avro().unwrap(), Some("kz"), NOW)
                .unwrap_err()
                .reason,
            RejectReason::BadSignature
        );
        let legacy = SignedIncident {
            signed_at: None,
            ..as_incident
        };
        assert_eq!(
            v.verify(&legacy.to_avro().unwrap(), Some("kz"), NOW)
                .unwrap_err()
                .reason,
            RejectReason::BadSignature
        );
        // ... and an incident's as a heartbeat, even over a heartbeat's bytes.
        let payload = heartbeat(NOW).to_avro().unwrap();
        let inc = kz.sign_payload(payload, NOW);
        let as_heartbeat = SignedHeartbeat {
            key_id: inc.key_id.clone(),
            signature: inc.signature,
            payload: inc.payload.clone(),
            signed_at: NOW,
        };
        assert_eq!(
            reason(&v, &as_heartbeat.to_avro().unwrap(), "kz"),
            RejectReason::BadSignature
        );
        // Envelopes are not interchangeable either: each has its own schema fingerprint.
        assert_eq!(
            reason(&v, &inc.to_avro().unwrap(), "kz"),
            RejectReason::Undecodable
        );
        assert_eq!(
            v.verify(&hb.to_avro().unwrap(), Some("kz"), NOW)
                .unwrap_err()
                .reason,
            RejectReason::Undecodable
        );
    }
}
