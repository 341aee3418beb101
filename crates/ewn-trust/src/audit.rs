//! Signatures of services over audit records: the records of `<prefix>audit` and the items
//! of an alert's audit bundle. A service signs with its own Ed25519 key, which the trust
//! store holds with role `service`; a state key never verifies here, and a service key never
//! verifies an incident ([`crate::verify`]), so the two kinds of signature cannot stand in
//! for each other.
//!
//! The signed message is `AUDIT_DOMAIN || signed_at (8 bytes, big-endian) || body`. The
//! domain differs from the incident and heartbeat domains at its fifth byte (`a`), so no
//! byte string is both an audit message and a state's message.

use std::fmt;

use ed25519_dalek::{Signer, SigningKey};
use ewn_model::validate::printable;

use crate::ed25519;
use crate::store::{KeyRole, ServiceKey, TrustStore};

/// Domain of every audit signature.
pub const AUDIT_DOMAIN: &[u8] = b"ewn/audit/v1";

/// `AUDIT_DOMAIN || signed_at`.
pub fn audit_prefix(signed_at: i64) -> [u8; 20] {
    let mut bytes = [0u8; 20];
    bytes[..AUDIT_DOMAIN.len()].copy_from_slice(AUDIT_DOMAIN);
    bytes[AUDIT_DOMAIN.len()..].copy_from_slice(&signed_at.to_be_bytes());
    bytes
}

/// Signs audit records for one service.
pub struct AuditSigner {
    key_id: String,
    service: String,
    key: SigningKey,
}

impl fmt::Debug for AuditSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditSigner")
            .field("key_id", &self.key_id)
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl AuditSigner {
    pub fn new(key_id: impl Into<String>, service: impl Into<String>, key: SigningKey) -> Self {
        AuditSigner {
            key_id: key_id.into(),
            service: service.into(),
            key,
        }
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    pub fn service(&self) -> &str {
        &self.service
    }

    pub fn public_key(&self) -> crate::PublicKey {
        crate::PublicKey::from(&self.key)
    }

    /// The signature over `body` at `signed_at` (epoch ms, from the caller's clock).
    pub fn sign(&self, body: &[u8], signed_at: i64) -> [u8; 64] {
        let mut message = audit_prefix(signed_at).to_vec();
        message.extend_from_slice(body);
        self.key.sign(&message).to_bytes()
    }
}

/// Why an audit signature is not accepted; `Display` names the key, never the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditRefused {
    UnknownKey(String),
    /// The key is in the store with role `state`: state keys sign incidents only.
    WrongRole(String),
    /// Signed by a service other than the one the record claims.
    WrongService {
        key_id: String,
        service: String,
    },
    /// Not valid at the signing time (or revoked, or the time is ahead of the clock).
    Invalid(String),
    BadSignature(String),
}

impl fmt::Display for AuditRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuditRefused::UnknownKey(k) => write!(f, "key {k}: not in the trust store"),
            AuditRefused::WrongRole(k) => write!(
                f,
                "key {k} has role `state`: a state key may not sign audit records"
            ),
            AuditRefused::WrongService { key_id, service } => {
                write!(
                    f,
                    "key {key_id} signs for service {service}, not for this one"
                )
            }
            AuditRefused::Invalid(why) => write!(f, "{why}"),
            AuditRefused::BadSignature(k) => write!(f, "key {k}: signature does not verify"),
        }
    }
}

/// Who signed, when, and the signature.
#[derive(Clone, Copy, Debug)]
pub struct AuditSignature<'a> {
    pub key_id: &'a str,
    pub signed_at: i64,
    pub signature: &'a [u8; 64],
}

/// Verifies a service's signature over `body`, made at `signed_at` with `key_id`, judged at
/// `now_ms` with the trust store's rule for key validity. `service`, when given, is the
/// service the record says signed it.
pub fn verify_audit_signature<'s>(
    store: &'s TrustStore,
    sig: &AuditSignature<'_>,
    service: Option<&str>,
    body: &[u8],
    now_ms: i64,
    skew_ms: i64,
) -> Result<&'s ServiceKey, AuditRefused> {
    let AuditSignature {
        key_id,
        signed_at,
        signature,
    } = *sig;
    let shown = printable(key_id);
    let Some(key) = store.service_key(key_id) else {
        return Err(match store.role_of(key_id) {
            Some(KeyRole::State) => AuditRefused::WrongRole(shown),
            _ => AuditRefused::UnknownKey(shown),
        });
    };
    if let Some(s) = service
        && s != key.service
    {
        return Err(AuditRefused::WrongService {
            key_id: shown,
            service: printable(&key.service),
        });
    }
    key.judge(signed_at, now_ms, skew_ms)
        .map_err(AuditRefused::Invalid)?;
    if ed25519::verify(&key.public_key, &audit_prefix(signed_at), body, signature) {
        Ok(key)
    } else {
        Err(AuditRefused::BadSignature(shown))
    }
}

/// Signs an audit record: fills `key_id`, `signed_at` and `signature` (over the record's
/// encoding with the signature zeroed).
pub fn sign_record(
    signer: &AuditSigner,
    mut record: ewn_model::AuditRecord,
    signed_at: i64,
) -> crate::Result<ewn_model::AuditRecord> {
    use ewn_model::AvroRecord;
    record.key_id = signer.key_id().to_string();
    record.service = signer.service().to_string();
    record.signed_at = signed_at;
    record.signature = [0; 64];
    let body = record.to_avro()?;
    record.signature = signer.sign(&body, signed_at);
    Ok(record)
}

/// Verifies an audit record's signature by a service key valid at its `signed_at`, for the
/// service the record names.
pub fn verify_record<'s>(
    store: &'s TrustStore,
    record: &ewn_model::AuditRecord,
    now_ms: i64,
    skew_ms: i64,
) -> Result<&'s ServiceKey, AuditRefused> {
    use ewn_model::AvroRecord;
    let mut unsigned = record.clone();
    unsigned.signature = [0; 64];
    let body = unsigned
        .to_avro()
        .map_err(|e| AuditRefused::Invalid(format!("record does not encode: {e}")))?;
    let sig = AuditSignature {
        key_id: &record.key_id,
        signed_at: record.signed_at,
        signature: &record.signature,
    };
    verify_audit_signature(store, &sig, Some(&record.service), &body, now_ms, skew_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{DOMAIN, HEARTBEAT_DOMAIN, IncidentSigner, generate};
    use crate::store::KeyEntry;
    use crate::{Verifier, VerifyPolicy};
    use ewn_model::{RejectReason, samples};
    use std::sync::Arc;

    const T: i64 = 1_790_000_000_000;

    fn store(service: &AuditSigner, state: &IncidentSigner) -> TrustStore {
        let mut s = TrustStore::default();
        s.insert_service(ServiceKey {
            key_id: service.key_id().into(),
            service: service.service().into(),
            public_key: service.public_key(),
            not_before: T - 1000,
            not_after: T + 1000,
            revoked_at: None,
        });
        s.insert(KeyEntry {
            key_id: state.key_id().into(),
            state: "KZ".into(),
            public_key: state.public_key(),
            not_before: T - 1000,
            not_after: T + 1000,
            revoked_at: None,
        });
        s
    }

    #[test]
    fn a_service_signature_verifies_and_any_change_breaks_it() {
        let signer = AuditSigner::new("fanout-1", "fanout", generate());
        let kz = IncidentSigner::new("kz-1", generate());
        let store = store(&signer, &kz);
        let sig = signer.sign(b"body", T);
        let s = |signed_at| AuditSignature {
            key_id: "fanout-1",
            signed_at,
            signature: &sig,
        };
        let ok = verify_audit_signature(&store, &s(T), Some("fanout"), b"body", T, 0);
        assert_eq!(ok.unwrap().service, "fanout");
        let v = |body: &[u8], at: i64, service: Option<&str>| {
            verify_audit_signature(&store, &s(at), service, body, T, 0)
                .unwrap_err()
                .to_string()
        };
        assert!(v(b"bodY", T, None).contains("signature does not verify"));
        assert!(v(b"body", T - 1, None).contains("signature does not verify"));
        assert!(v(b"body", T, Some("processor")).contains("signs for service fanout"));
        assert!(v(b"body", T + 2000, None).contains("ahead of this clock"));
        let late = verify_audit_signature(&store, &s(T), None, b"body", T + 5000, 0);
        assert!(late.is_ok(), "judged at the signing time, not now");
    }

    #[test]
    fn a_state_key_never_signs_an_audit_record() {
        let signer = AuditSigner::new("fanout-1", "fanout", generate());
        let kz_key = generate();
        let kz = IncidentSigner::new("kz-1", kz_key.clone());
        let store = store(&signer, &kz);
        // The state's own key, signing the audit message form, is refused by its role.
        let forged = AuditSigner::new("kz-1", "fanout", kz_key);
        let sig = forged.sign(b"body", T);
        let s = AuditSignature {
            key_id: "kz-1",
            signed_at: T,
            signature: &sig,
        };
        let err = verify_audit_signature(&store, &s, None, b"body", T, 0).unwrap_err();
        assert_eq!(err, AuditRefused::WrongRole("kz-1".into()));
        assert!(
            err.to_string()
                .contains("a state key may not sign audit records")
        );
    }

    #[test]
    fn a_service_key_never_signs_an_incident() {
        let signer = AuditSigner::new("fanout-1", "fanout", generate());
        let kz = IncidentSigner::new("kz-1", generate());
        let store = Arc::new(store(&signer, &kz));
        // An incident signed with the service's private key, under the service's key id.
        let mut as_state = IncidentSigner::new("fanout-1", signer.key.clone());
        let mut incident = samples::incident();
        incident.reported_at = T;
        incident.occurred_at = T - 10;
        let record = as_state.sign(&incident, T).unwrap();
        let verifier = Verifier::new(store, VerifyPolicy::default());
        let bytes = ewn_model::AvroRecord::to_avro(&record).unwrap();
        let err = verifier.verify(&bytes, Some("kz"), T).unwrap_err();
        assert_eq!(err.reason, RejectReason::KeyStateMismatch);
        assert!(err.detail.contains("has role `service`"), "{}", err.detail);
    }

    #[test]
    fn audit_records_verify_and_every_field_is_covered() {
        let signer = AuditSigner::new("fanout-1", "fanout", generate());
        let kz = IncidentSigner::new("kz-1", generate());
        let store = store(&signer, &kz);
        let record = ewn_model::AuditRecord {
            record_id: "r1".into(),
            service: String::new(),
            instance_id: "fanout-a".into(),
            actor: "admin".into(),
            action: "subscription_created".into(),
            object: "sub-1".into(),
            at: T,
            before_sha256: None,
            after_sha256: Some("ab".repeat(32)),
            detail: None,
            key_id: String::new(),
            signed_at: 0,
            signature: [0; 64],
        };
        let signed = sign_record(&signer, record, T).unwrap();
        assert_eq!(signed.service, "fanout");
        assert!(verify_record(&store, &signed, T, 0).is_ok());
        let mut changed = signed.clone();
        changed.actor = "someone else".into();
        assert!(matches!(
            verify_record(&store, &changed, T, 0),
            Err(AuditRefused::BadSignature(_))
        ));
        let mut changed = signed.clone();
        changed.before_sha256 = Some("00".into());
        assert!(verify_record(&store, &changed, T, 0).is_err());
        let mut changed = signed;
        changed.service = "processor".into();
        assert!(matches!(
            verify_record(&store, &changed, T, 0),
            Err(AuditRefused::WrongService { .. })
        ));
    }

    #[test]
    fn the_audit_domain_is_no_prefix_of_a_state_domain() {
        for other in [DOMAIN, HEARTBEAT_DOMAIN, crate::keys::LEGACY_DOMAIN] {
            let n = other.len().min(AUDIT_DOMAIN.len());
            assert_ne!(other[..n], AUDIT_DOMAIN[..n]);
        }
    }
}
