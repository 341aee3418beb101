//! Signing keys and domain-separated signing of incidents.

use std::fmt;
use std::path::Path;

use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, spki::der::pem::LineEnding};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use ewn_model::{AvroRecord, Heartbeat, Incident, SignedHeartbeat, SignedIncident};
use rand_core::OsRng;

use crate::ed25519::PublicKey;
use crate::error::{Error, Result};
use crate::secret;

/// Domain of every signed incident message, so an incident signature can never be replayed
/// as a signature over anything else (and vice versa). The signed message is
/// `DOMAIN || signed_at (8 bytes, big-endian two's complement) || payload`: the signing time
/// is covered by the signature, so nobody but the key holder can move it.
pub const DOMAIN: &[u8] = b"ewn/incident/v2";

/// Domain of the envelopes written before the signing time was carried (`signed_at` null):
/// `LEGACY_DOMAIN || payload`. Still verified, and judged at the payload's `reported_at`.
/// The two domains differ in their last byte, so a message of one form can never be read as
/// a message of the other: a signing time can be neither added to nor stripped from an
/// envelope without breaking its signature.
pub const LEGACY_DOMAIN: &[u8] = b"ewn/incident/v1";

/// Domain of every signed heartbeat: `HEARTBEAT_DOMAIN || signed_at (8 bytes, big-endian) ||
/// payload`. It differs from both incident domains at its fifth byte (`h` against `i`), so no
/// byte string is both a heartbeat message and an incident message: a heartbeat signature
/// never verifies as an incident's, nor the reverse, though the same state key signs both.
pub const HEARTBEAT_DOMAIN: &[u8] = b"ewn/heartbeat/v1";

/// `HEARTBEAT_DOMAIN || signed_at`: what is signed in front of a heartbeat's payload.
pub fn heartbeat_prefix(signed_at: i64) -> [u8; 24] {
    let mut bytes = [0u8; 24];
    bytes[..HEARTBEAT_DOMAIN.len()].copy_from_slice(HEARTBEAT_DOMAIN);
    bytes[HEARTBEAT_DOMAIN.len()..].copy_from_slice(&signed_at.to_be_bytes());
    bytes
}

/// What is signed in front of the payload: the domain and, in the current form, the signing
/// time. Small and `Copy`, so verifiers keep one per record without allocating.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignedPrefix {
    bytes: [u8; 23],
    len: u8,
}

impl SignedPrefix {
    /// The prefix of an envelope whose `signed_at` is `signed_at` (`None`: the legacy form).
    pub fn of(signed_at: Option<i64>) -> SignedPrefix {
        let mut bytes = [0u8; 23];
        match signed_at {
            Some(at) => {
                bytes[..DOMAIN.len()].copy_from_slice(DOMAIN);
                bytes[DOMAIN.len()..].copy_from_slice(&at.to_be_bytes());
                SignedPrefix { bytes, len: 23 }
            }
            None => {
                bytes[..LEGACY_DOMAIN.len()].copy_from_slice(LEGACY_DOMAIN);
                SignedPrefix {
                    bytes,
                    len: LEGACY_DOMAIN.len() as u8,
                }
            }
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// Writes `prefix || payload` into `buf` (cleared first) and returns it: the signed message.
pub fn signed_message<'a>(buf: &'a mut Vec<u8>, prefix: &SignedPrefix, payload: &[u8]) -> &'a [u8] {
    buf.clear();
    buf.reserve(prefix.as_bytes().len() + payload.len());
    buf.extend_from_slice(prefix.as_bytes());
    buf.extend_from_slice(payload);
    buf
}

pub fn generate() -> SigningKey {
    SigningKey::generate(&mut OsRng)
}

/// Saves a signing key as a PKCS#8 PEM file (what `openssl pkey` reads), mode 0600.
pub fn save_signing_key(path: &Path, key: &SigningKey) -> Result<()> {
    let pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| Error::BadKeyFile {
            path: path.into(),
            message: e.to_string(),
        })?;
    secret::write_secret(path, &pem)
}

pub fn load_signing_key(path: &Path) -> Result<SigningKey> {
    let pem = secret::read_secret(path)?;
    SigningKey::from_pkcs8_pem(pem.trim()).map_err(|_| Error::BadKeyFile {
        path: path.into(),
        message: "not an Ed25519 PKCS#8 PEM private key".into(),
    })
}

/// Signs incidents, and the heartbeats of the state's gateways, for one key of one member
/// state (each kind in its own domain).
pub struct IncidentSigner {
    key_id: String,
    key: SigningKey,
    message: Vec<u8>,
}

impl fmt::Debug for IncidentSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IncidentSigner")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl IncidentSigner {
    pub fn new(key_id: impl Into<String>, key: SigningKey) -> Self {
        IncidentSigner {
            key_id: key_id.into(),
            key,
            message: Vec::new(),
        }
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// The public half, as the trust store holds it.
    pub fn public_key(&self) -> PublicKey {
        PublicKey::from(&self.key)
    }

    /// Encodes the incident and signs it with the signing time `signed_at` (epoch ms, from
    /// the caller's clock: this crate never reads one).
    pub fn sign(&mut self, incident: &Incident, signed_at: i64) -> Result<SignedIncident> {
        let payload = incident.to_avro()?;
        Ok(self.sign_payload(payload, signed_at))
    }

    /// Signs an already encoded payload at `signed_at` (tests use this to sign hostile
    /// payloads).
    pub fn sign_payload(&mut self, payload: Vec<u8>, signed_at: i64) -> SignedIncident {
        self.sign_with(payload, Some(signed_at))
    }

    /// Signs an encoded payload the way EWN did before the signing time was carried:
    /// `LEGACY_DOMAIN || payload`, no `signed_at`. Verifiers judge such an envelope at its
    /// `reported_at`. No EWN producer writes this form; it exists so tests and migration
    /// tooling can make the records older producers wrote.
    pub fn sign_legacy_payload(&mut self, payload: Vec<u8>) -> SignedIncident {
        self.sign_with(payload, None)
    }

    /// Encodes a heartbeat and signs it at `signed_at` in the heartbeat domain
    /// ([`HEARTBEAT_DOMAIN`]), with the same key as the state's incidents.
    pub fn sign_heartbeat(
        &mut self,
        heartbeat: &Heartbeat,
        signed_at: i64,
    ) -> Result<SignedHeartbeat> {
        Ok(self.sign_heartbeat_payload(heartbeat.to_avro()?, signed_at))
    }

    /// Signs an already encoded heartbeat payload at `signed_at` (tests sign hostile ones).
    pub fn sign_heartbeat_payload(&mut self, payload: Vec<u8>, signed_at: i64) -> SignedHeartbeat {
        self.message.clear();
        self.message.extend_from_slice(&heartbeat_prefix(signed_at));
        self.message.extend_from_slice(&payload);
        let signature = self.key.sign(&self.message).to_bytes();
        SignedHeartbeat {
            key_id: self.key_id.clone(),
            signature,
            payload,
            signed_at,
        }
    }

    /// Signs a case reply's body at `signed_at` in the case-reply domain
    /// ([`crate::case::CASE_REPLY_DOMAIN`]), with the same key as the state's incidents.
    pub fn sign_case_reply(&mut self, body: &[u8], signed_at: i64) -> [u8; 64] {
        self.message.clear();
        self.message
            .extend_from_slice(&crate::case::case_reply_prefix(signed_at));
        self.message.extend_from_slice(body);
        self.key.sign(&self.message).to_bytes()
    }

    fn sign_with(&mut self, payload: Vec<u8>, signed_at: Option<i64>) -> SignedIncident {
        let prefix = SignedPrefix::of(signed_at);
        let signature = self
            .key
            .sign(signed_message(&mut self.message, &prefix, &payload))
            .to_bytes();
        SignedIncident {
            key_id: self.key_id.clone(),
            signature,
            payload,
            signed_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trip_keeps_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kz.pem");
        let key = generate();
        save_signing_key(&path, &key).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert_eq!(load_signing_key(&path).unwrap().to_bytes(), key.to_bytes());
    }

    #[test]
    fn signature_covers_the_domain_and_the_signing_time() {
        let mut signer = IncidentSigner::new("k", generate());
        let at: i64 = 1_790_000_000_123;
        let signed = signer.sign_payload(b"payload".to_vec(), at);
        assert_eq!(signed.signed_at, Some(at));
        let sig = ed25519_dalek::Signature::from_bytes(&signed.signature);
        let vk = signer.verifying_key();
        let mut message = b"ewn/incident/v2".to_vec();
        message.extend_from_slice(&at.to_be_bytes());
        message.extend_from_slice(b"payload");
        assert!(vk.verify_strict(&message, &sig).is_ok());
        assert!(vk.verify_strict(b"ewn/incident/v2payload", &sig).is_err());
        assert!(vk.verify_strict(b"payload", &sig).is_err());
        // another signing time is another message
        let mut moved = b"ewn/incident/v2".to_vec();
        moved.extend_from_slice(&(at + 1).to_be_bytes());
        moved.extend_from_slice(b"payload");
        assert!(vk.verify_strict(&moved, &sig).is_err());
    }

    #[test]
    fn heartbeats_are_signed_in_their_own_domain() {
        let mut signer = IncidentSigner::new("k", generate());
        let at: i64 = 1_790_000_000_123;
        let signed = signer.sign_heartbeat_payload(b"payload".to_vec(), at);
        let sig = ed25519_dalek::Signature::from_bytes(&signed.signature);
        let vk = signer.verifying_key();
        let mut message = b"ewn/heartbeat/v1".to_vec();
        message.extend_from_slice(&at.to_be_bytes());
        message.extend_from_slice(b"payload");
        assert!(vk.verify_strict(&message, &sig).is_ok());
        // the same bytes and time as an incident are another message
        let incident = signer.sign_payload(b"payload".to_vec(), at);
        assert_ne!(incident.signature, signed.signature);
        let as_incident = SignedPrefix::of(Some(at));
        let mut m = as_incident.as_bytes().to_vec();
        m.extend_from_slice(b"payload");
        assert!(vk.verify_strict(&m, &sig).is_err());
        // no prefix of one domain is a prefix of another
        for (a, b) in [
            (HEARTBEAT_DOMAIN, DOMAIN),
            (HEARTBEAT_DOMAIN, LEGACY_DOMAIN),
        ] {
            let n = a.len().min(b.len());
            assert_ne!(a[..n], b[..n]);
        }
    }

    #[test]
    fn the_legacy_form_signs_the_old_domain_and_no_time() {
        let mut signer = IncidentSigner::new("k", generate());
        let signed = signer.sign_legacy_payload(b"payload".to_vec());
        assert_eq!(signed.signed_at, None);
        let sig = ed25519_dalek::Signature::from_bytes(&signed.signature);
        let vk = signer.verifying_key();
        assert!(vk.verify_strict(b"ewn/incident/v1payload", &sig).is_ok());
        assert_eq!(SignedPrefix::of(None).as_bytes(), b"ewn/incident/v1");
        assert_eq!(SignedPrefix::of(Some(-1)).as_bytes().len(), 23);
    }
}
