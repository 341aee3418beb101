//! Signing keys and domain-separated signing of incidents.

use std::fmt;
use std::path::Path;

use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, spki::der::pem::LineEnding};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use ewn_model::{AvroRecord, Incident, SignedIncident};
use rand_core::OsRng;

use crate::ed25519::PublicKey;
use crate::error::{Error, Result};
use crate::secret;

/// Prefix of every signed message, so an incident signature can never be replayed as a
/// signature over anything else (and vice versa).
pub const DOMAIN: &[u8] = b"ewn/incident/v1";

/// Writes `DOMAIN || payload` into `buf` (cleared first) and returns it: the signed message.
pub fn signed_message<'a>(buf: &'a mut Vec<u8>, payload: &[u8]) -> &'a [u8] {
    buf.clear();
    buf.reserve(DOMAIN.len() + payload.len());
    buf.extend_from_slice(DOMAIN);
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

/// Signs incidents for one key of one member state.
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

    /// Encodes the incident and signs `DOMAIN || payload`.
    pub fn sign(&mut self, incident: &Incident) -> Result<SignedIncident> {
        let payload = incident.to_avro()?;
        Ok(self.sign_payload(payload))
    }

    /// Signs an already encoded payload (tests use this to sign hostile payloads).
    pub fn sign_payload(&mut self, payload: Vec<u8>) -> SignedIncident {
        let signature = self
            .key
            .sign(signed_message(&mut self.message, &payload))
            .to_bytes();
        SignedIncident {
            key_id: self.key_id.clone(),
            signature,
            payload,
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
    fn signature_covers_the_domain() {
        let mut signer = IncidentSigner::new("k", generate());
        let signed = signer.sign_payload(b"payload".to_vec());
        let sig = ed25519_dalek::Signature::from_bytes(&signed.signature);
        let vk = signer.verifying_key();
        assert!(vk.verify_strict(b"ewn/incident/v1payload", &sig).is_ok());
        assert!(vk.verify_strict(b"payload", &sig).is_err());
    }
}
