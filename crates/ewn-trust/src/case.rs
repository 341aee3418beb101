//! Case requests and replies: who may ask, who answers, and who alone can read the answer.
//!
//! - A request ([`ewn_model::CaseRequest`]) is signed by the fan-out's service key on
//!   behalf of the desk, as audit records are ([`crate::audit`]: domain `ewn/audit/v1`);
//!   the record's single-object header (its schema fingerprint) keeps a request's bytes
//!   apart from an audit record's under the same key.
//! - A reply ([`ewn_model::CaseResponse`]) is signed by the originating state's key (role
//!   `state`) in its own domain, [`CASE_REPLY_DOMAIN`]`|| signed_at || body`, which differs
//!   from the incident, heartbeat and audit domains at its fifth byte (`c`).
//! - A reply's answer ([`SealedAnswer`]: the alert and incident ids, the decision, a
//!   decline's reason or an approval's details) is encrypted with HPKE (RFC 9180, base mode,
//!   DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20Poly1305) to the requesting agency's
//!   X25519 key (role `agency` in the trust store). `<prefix>responses` is readable by every
//!   desk, so the reply's clear fields name no alert and no incident (schema version 2). The
//!   HPKE `info` binds the ciphertext to its request, alert and incident ids ([`hpke_info`]:
//!   the requester knows them from its request), and the AAD to the recipient key id, so a
//!   ciphertext moved into another reply does not open.
//!
//! No clock, no network: times are passed in.

use std::fmt;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ewn_model::validate::printable;
use ewn_model::{AvroRecord, CaseRequest, CaseResponse};
use hpke::aead::ChaCha20Poly1305;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem as _, OpModeR, OpModeS, Serializable};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use crate::audit::{AuditRefused, AuditSignature, AuditSigner, verify_audit_signature};
use crate::ed25519;
use crate::error::{Error, Result};
use crate::keys::IncidentSigner;
use crate::store::{KeyEntry, ServiceKey, TrustStore};
use crate::verify::{SigningTime, judge_signing_time};

/// Domain of a state's signature over a case reply.
pub const CASE_REPLY_DOMAIN: &[u8] = b"ewn/case-reply/v1";

/// The HPKE suite's name, as the README and errors give it.
pub const SUITE: &str = "DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20Poly1305";

/// `CASE_REPLY_DOMAIN || signed_at`.
pub fn case_reply_prefix(signed_at: i64) -> [u8; 25] {
    let mut bytes = [0u8; 25];
    bytes[..CASE_REPLY_DOMAIN.len()].copy_from_slice(CASE_REPLY_DOMAIN);
    bytes[CASE_REPLY_DOMAIN.len()..].copy_from_slice(&signed_at.to_be_bytes());
    bytes
}

/// The HPKE `info` of a reply: the suite's use and the ids it answers, length-prefixed so no
/// two triples give the same bytes.
pub fn hpke_info(request_id: &str, alert_id: &str, incident_id: &str) -> Vec<u8> {
    let mut info = b"ewn/case-details/v1".to_vec();
    for part in [request_id, alert_id, incident_id] {
        info.extend_from_slice(&(part.len() as u32).to_be_bytes());
        info.extend_from_slice(part.as_bytes());
    }
    info
}

/// An agency's X25519 secret key: it alone opens the replies encrypted to its public key.
pub struct AgencySecret(Zeroizing<[u8; 32]>);

impl fmt::Debug for AgencySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AgencySecret(..)")
    }
}

const SECRET_HEADER: &str = "ewn-agency-x25519-secret";

impl AgencySecret {
    /// A fresh key pair from the OS's generator.
    pub fn generate() -> AgencySecret {
        let (sk, _) = X25519HkdfSha256::gen_keypair(&mut rand_core::OsRng);
        let mut bytes = Zeroizing::new([0u8; 32]);
        bytes.copy_from_slice(&sk.to_bytes());
        AgencySecret(bytes)
    }

    pub fn from_bytes(bytes: [u8; 32]) -> AgencySecret {
        AgencySecret(Zeroizing::new(bytes))
    }

    /// The public half, as the trust store holds it (role `agency`).
    pub fn public_key(&self) -> [u8; 32] {
        let sk = self.private();
        let pk = X25519HkdfSha256::sk_to_pk(&sk);
        let mut out = [0u8; 32];
        out.copy_from_slice(&pk.to_bytes());
        out
    }

    fn private(&self) -> <X25519HkdfSha256 as hpke::Kem>::PrivateKey {
        // Any 32 bytes are an X25519 secret (clamped when used): this cannot fail.
        <X25519HkdfSha256 as hpke::Kem>::PrivateKey::from_bytes(&self.0[..])
            .unwrap_or_else(|_| unreachable!("32 bytes are an X25519 secret"))
    }

    /// Writes the key to a new file of mode 0600 (`ewn-agency-x25519-secret <base64>`).
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = Zeroizing::new(format!("{SECRET_HEADER} {}\n", B64.encode(&self.0[..])));
        crate::secret::write_secret(path, &text)
    }

    /// Reads a key [`AgencySecret::save`] wrote; the file must not be readable by others.
    pub fn load(path: &Path) -> Result<AgencySecret> {
        let text = crate::secret::read_secret(path)?;
        let bad = |message: &str| Error::BadKeyFile {
            path: path.into(),
            message: message.into(),
        };
        let body = text
            .trim()
            .strip_prefix(SECRET_HEADER)
            .ok_or_else(|| bad("not an agency key (ewn requests keygen writes them)"))?;
        let bytes = Zeroizing::new(
            B64.decode(body.trim())
                .map_err(|_| bad("the key is not base64"))?,
        );
        let key: [u8; 32] = bytes[..]
            .try_into()
            .map_err(|_| bad("the key is not 32 bytes"))?;
        Ok(AgencySecret::from_bytes(key))
    }
}

/// Encrypts `details` to the agency key `recipient` (X25519 public key bytes) for the reply
/// whose HPKE info is `info`; `aad` is the recipient key id. Returns (enc, ciphertext).
pub fn seal_details(
    recipient: &[u8; 32],
    info: &[u8],
    aad: &[u8],
    details: &[u8],
) -> std::result::Result<(Vec<u8>, Vec<u8>), String> {
    let pk = <X25519HkdfSha256 as hpke::Kem>::PublicKey::from_bytes(recipient)
        .map_err(|e| format!("agency key: {e}"))?;
    let (enc, ct) = hpke::single_shot_seal::<ChaCha20Poly1305, HkdfSha256, X25519HkdfSha256, _>(
        &OpModeS::Base,
        &pk,
        info,
        details,
        aad,
        &mut rand_core::OsRng,
    )
    .map_err(|e| format!("HPKE seal: {e}"))?;
    Ok((enc.to_bytes().to_vec(), ct))
}

/// Opens what [`seal_details`] sealed; fails for any other key, info, aad or a changed byte.
pub fn open_details(
    secret: &AgencySecret,
    enc: &[u8],
    info: &[u8],
    aad: &[u8],
    ciphertext: &[u8],
) -> std::result::Result<Zeroizing<Vec<u8>>, String> {
    let enc = <X25519HkdfSha256 as hpke::Kem>::EncappedKey::from_bytes(enc)
        .map_err(|e| format!("encapsulated_key: {e}"))?;
    hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, X25519HkdfSha256>(
        &OpModeR::Base,
        &secret.private(),
        &enc,
        info,
        ciphertext,
        aad,
    )
    .map(Zeroizing::new)
    .map_err(|_| {
        "the reply does not open with this key (not encrypted to it, or altered)".to_string()
    })
}

/// What a reply seals to the requesting agency: everything about the case that its clear
/// fields must not show. JSON inside the HPKE ciphertext. A version 1 reply sealed only an
/// approval, without `decision` (read as `APPROVE`) and without `decided_by`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedAnswer {
    pub request_id: String,
    pub alert_id: String,
    pub incident_id: String,
    pub state: String,
    #[serde(default = "approve")]
    pub decision: String,
    /// A decline's reason (bounded, printable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// An approval's raw details: the report as the post sent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
}

fn approve() -> String {
    "APPROVE".into()
}

impl fmt::Debug for SealedAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedAnswer")
            .field("request_id", &self.request_id)
            .field("decision", &self.decision)
            .finish_non_exhaustive()
    }
}

impl Drop for SealedAnswer {
    fn drop(&mut self) {
        if let Some(d) = self.details.as_mut() {
            d.zeroize();
        }
        if let Some(r) = self.reason.as_mut() {
            r.zeroize();
        }
    }
}

impl SealedAnswer {
    /// Encrypts the answer to the agency key `recipient` (X25519 public key bytes) known by
    /// `recipient_key_id`. Returns (enc, ciphertext).
    pub fn seal(
        &self,
        recipient: &[u8; 32],
        recipient_key_id: &str,
    ) -> std::result::Result<(Vec<u8>, Vec<u8>), String> {
        let plain = Zeroizing::new(
            serde_json::to_vec(self).map_err(|e| format!("the answer does not encode: {e}"))?,
        );
        let info = hpke_info(&self.request_id, &self.alert_id, &self.incident_id);
        seal_details(recipient, &info, recipient_key_id.as_bytes(), &plain)
    }

    /// Opens the sealed part of `reply` with the agency's secret, for the alert and incident
    /// its request named (the HPKE info binds them: other ids do not open it).
    pub fn open(
        secret: &AgencySecret,
        reply: &CaseResponse,
        alert_id: &str,
        incident_id: &str,
    ) -> std::result::Result<SealedAnswer, String> {
        let (Some(enc), Some(ct)) = (&reply.encapsulated_key, &reply.ciphertext) else {
            return Err(
                "the reply seals nothing to open (a decline to an agency the state \
                        held no key of carries no reason)"
                    .into(),
            );
        };
        let aad = reply.recipient_key_id.as_deref().unwrap_or_default();
        let info = hpke_info(&reply.request_id, alert_id, incident_id);
        let plain = open_details(secret, enc, &info, aad.as_bytes(), ct)
            .map_err(|why| format!("{why}; or not the alert and incident this request named"))?;
        let answer: SealedAnswer = serde_json::from_slice(&plain)
            .map_err(|_| "the sealed answer is not what a state seals".to_string())?;
        if answer.request_id != reply.request_id
            || answer.alert_id != alert_id
            || answer.incident_id != incident_id
            || answer.state != reply.state
            || answer.decision != reply.decision.as_str()
        {
            return Err(
                "the sealed answer names another request, state or decision than the reply".into(),
            );
        }
        Ok(answer)
    }
}

/// Signs a request with the fan-out's service key: fills `key_id`, `signed_at`, `signature`.
pub fn sign_request(
    signer: &AuditSigner,
    mut request: CaseRequest,
    signed_at: i64,
) -> Result<CaseRequest> {
    request.key_id = signer.key_id().to_string();
    request.signed_at = signed_at;
    request.signature = [0; 64];
    let body = request.to_avro()?;
    request.signature = signer.sign(&body, signed_at);
    Ok(request)
}

/// Verifies a request's signature by a `fanout` service key valid at its `signed_at`.
pub fn verify_request<'s>(
    store: &'s TrustStore,
    request: &CaseRequest,
    now_ms: i64,
    skew_ms: i64,
) -> std::result::Result<&'s ServiceKey, AuditRefused> {
    let mut unsigned = request.clone();
    unsigned.signature = [0; 64];
    let body = unsigned
        .to_avro()
        .map_err(|e| AuditRefused::Invalid(format!("request does not encode: {e}")))?;
    let sig = AuditSignature {
        key_id: &request.key_id,
        signed_at: request.signed_at,
        signature: &request.signature,
    };
    verify_audit_signature(store, &sig, Some("fanout"), &body, now_ms, skew_ms)
}

/// Signs a reply with the state's key: fills `key_id`, `signed_at`, `signature`.
pub fn sign_response(
    signer: &mut IncidentSigner,
    mut response: CaseResponse,
    signed_at: i64,
) -> Result<CaseResponse> {
    response.key_id = signer.key_id().to_string();
    response.signed_at = signed_at;
    response.signature = [0; 64];
    let body = response.to_avro()?;
    response.signature = signer.sign_case_reply(&body, signed_at);
    Ok(response)
}

/// Verifies a reply: signed by a key of role `state` for the reply's `state`, valid at its
/// signing time (the incident rule), over the reply with its signature zeroed.
pub fn verify_response<'s>(
    store: &'s TrustStore,
    response: &CaseResponse,
    now_ms: i64,
    skew_ms: i64,
) -> std::result::Result<&'s KeyEntry, String> {
    let mut unsigned = response.clone();
    unsigned.signature = [0; 64];
    let body = unsigned
        .to_avro()
        .map_err(|e| format!("reply does not encode: {e}"))?;
    verify_signed_body(store, response, &body, now_ms, skew_ms)
}

/// Decodes and verifies a reply as the topic holds it, whichever schema version wrote it: the
/// signature is the record's last field (64 fixed bytes in every version), so the signed body
/// is these bytes with their last 64 zeroed. A version 1 reply, read through the current
/// schema, would not re-encode to the bytes its state signed.
pub fn verify_response_bytes<'s>(
    store: &'s TrustStore,
    bytes: &[u8],
    now_ms: i64,
    skew_ms: i64,
) -> std::result::Result<(CaseResponse, &'s KeyEntry), String> {
    let response =
        CaseResponse::from_avro(bytes).map_err(|e| format!("not a CaseResponse record: {e}"))?;
    let split = bytes.len().saturating_sub(64);
    if bytes.len() < 64 + 10 || bytes[split..] != response.signature[..] {
        return Err("the record does not end with its signature".into());
    }
    let mut body = bytes.to_vec();
    body[split..].fill(0);
    let key = verify_signed_body(store, &response, &body, now_ms, skew_ms)?;
    Ok((response, key))
}

fn verify_signed_body<'s>(
    store: &'s TrustStore,
    response: &CaseResponse,
    body: &[u8],
    now_ms: i64,
    skew_ms: i64,
) -> std::result::Result<&'s KeyEntry, String> {
    let shown = printable(&response.key_id);
    let key = store.get(&response.key_id).ok_or_else(|| {
        format!("key {shown}: not a state key of the trust store (a reply is signed by the state)")
    })?;
    if key.state != response.state {
        return Err(format!(
            "key {shown} signs for {}, but the reply says it comes from {}",
            key.state,
            printable(&response.state)
        ));
    }
    judge_signing_time(
        key,
        SigningTime {
            at: response.signed_at,
            legacy: false,
        },
        now_ms,
        skew_ms,
    )
    .map_err(|(_, detail)| detail)?;
    if ed25519::verify(
        &key.public_key,
        &case_reply_prefix(response.signed_at),
        body,
        &response.signature,
    ) {
        Ok(key)
    } else {
        Err(format!("key {shown}: signature does not verify"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ewn_model::CaseDecision;

    #[test]
    fn only_the_recipient_opens_and_only_for_its_ids() {
        let agency = AgencySecret::generate();
        let other = AgencySecret::generate();
        let info = hpke_info("r1", "a1", "i1");
        let (enc, ct) = seal_details(&agency.public_key(), &info, b"rcc-1", b"details").unwrap();
        assert_eq!(enc.len(), 32);
        assert_eq!(
            &open_details(&agency, &enc, &info, b"rcc-1", &ct).unwrap()[..],
            b"details"
        );
        assert!(open_details(&other, &enc, &info, b"rcc-1", &ct).is_err());
        let moved = hpke_info("r2", "a1", "i1");
        assert!(open_details(&agency, &enc, &moved, b"rcc-1", &ct).is_err());
        assert!(open_details(&agency, &enc, &info, b"rcc-2", &ct).is_err());
        let mut flipped = ct.clone();
        flipped[0] ^= 1;
        assert!(open_details(&agency, &enc, &info, b"rcc-1", &flipped).is_err());
        // Length prefixes: moving a byte between ids changes the info.
        assert_ne!(hpke_info("ab", "c", "d"), hpke_info("a", "bc", "d"));
    }

    #[test]
    fn agency_keys_round_trip_through_their_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agency.key");
        let key = AgencySecret::generate();
        key.save(&path).unwrap();
        let loaded = AgencySecret::load(&path).unwrap();
        assert_eq!(loaded.public_key(), key.public_key());
        assert!(crate::store::check_x25519_public(&key.public_key()).is_ok());
        assert_eq!(format!("{loaded:?}"), "AgencySecret(..)");
    }

    #[test]
    fn replies_verify_under_the_state_key_only() {
        use crate::keys::generate;
        let sk = generate();
        let mut signer = IncidentSigner::new("kz-1", sk.clone());
        let store = TrustStore::parse(&format!(
            "[[keys]]\nkey_id = \"kz-1\"\nstate = \"KZ\"\npublic_key = \"{}\"\nnot_before = 2026-01-01T00:00:00Z\nnot_after = 2027-01-01T00:00:00Z\n",
            B64.encode(crate::PublicKey::from(&sk).as_bytes())
        ))
        .unwrap();
        let now = 1_767_268_900_000;
        let reply = sign_response(&mut signer, ewn_model::samples::case_response(), now).unwrap();
        assert!(verify_response(&store, &reply, now, 0).is_ok());
        let (decoded, _) = verify_response_bytes(&store, &reply.to_avro().unwrap(), now, 0)
            .expect("the bytes verify as the record does");
        assert_eq!(decoded, reply);
        let mut changed = reply.clone();
        changed.decided_by = "x".into();
        assert!(
            verify_response(&store, &changed, now, 0)
                .unwrap_err()
                .contains("does not verify")
        );
        let mut other_state = reply.clone();
        other_state.state = "KG".into();
        assert!(
            verify_response(&store, &other_state, now, 0)
                .unwrap_err()
                .contains("signs for KZ")
        );
        // An incident signature over the same bytes is no reply signature.
        let mut body_only = reply.clone();
        body_only.signature = [0; 64];
        let payload = body_only.to_avro().unwrap();
        let as_incident = signer.sign_payload(payload, now);
        let mut forged = reply;
        forged.signature = as_incident.signature;
        assert!(verify_response(&store, &forged, now, 0).is_err());
    }

    fn answer(decision: &str) -> SealedAnswer {
        SealedAnswer {
            request_id: "r1".into(),
            alert_id: "a1".into(),
            incident_id: "i1".into(),
            state: "KZ".into(),
            decision: decision.into(),
            reason: (decision == "DECLINE").then(|| "no legal basis".into()),
            details: (decision == "APPROVE").then(|| "Ivanov Ivan".into()),
        }
    }

    #[test]
    fn a_sealed_answer_opens_only_for_its_agency_and_its_request_ids() {
        let agency = AgencySecret::generate();
        let other = AgencySecret::generate();
        for decision in [CaseDecision::Approve, CaseDecision::Decline] {
            let sealed = answer(decision.as_str());
            let (enc, ct) = sealed.seal(&agency.public_key(), "rcc-1").unwrap();
            let mut reply = ewn_model::samples::case_response();
            reply.request_id = "r1".into();
            reply.decision = decision;
            reply.recipient_key_id = Some("rcc-1".into());
            reply.encapsulated_key = Some(enc);
            reply.ciphertext = Some(ct);
            let opened = SealedAnswer::open(&agency, &reply, "a1", "i1").unwrap();
            assert!(opened == sealed);
            // Nothing of the case is in the clear record.
            let bytes = reply.to_avro().unwrap();
            for secret in ["a1", "i1", "no legal basis", "Ivanov"] {
                assert!(!contains(&bytes, secret.as_bytes()), "{secret}");
            }
            assert!(SealedAnswer::open(&other, &reply, "a1", "i1").is_err());
            assert!(SealedAnswer::open(&agency, &reply, "a2", "i1").is_err());
            assert!(SealedAnswer::open(&agency, &reply, "a1", "i2").is_err());
            // A decision changed in the clear no longer matches the sealed one.
            let mut flipped = reply.clone();
            flipped.decision = match decision {
                CaseDecision::Approve => CaseDecision::Decline,
                CaseDecision::Decline => CaseDecision::Approve,
            };
            assert!(
                SealedAnswer::open(&agency, &flipped, "a1", "i1")
                    .unwrap_err()
                    .contains("another request, state or decision")
            );
        }
        assert!(!format!("{:?}", answer("APPROVE")).contains("Ivanov"));
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    /// A reply as version 1 of the schema wrote it (alert id, incident id and reason in
    /// clear), to check that one is still read and verified.
    #[derive(serde::Serialize)]
    struct ReplyV1 {
        request_id: String,
        alert_id: String,
        incident_id: String,
        state: String,
        agency: String,
        decision: CaseDecision,
        reason: Option<String>,
        recipient_key_id: Option<String>,
        #[serde(with = "apache_avro::serde::bytes_opt")]
        encapsulated_key: Option<Vec<u8>>,
        #[serde(with = "apache_avro::serde::bytes_opt")]
        ciphertext: Option<Vec<u8>>,
        decided_by: String,
        decided_at: i64,
        key_id: String,
        signed_at: i64,
        #[serde(with = "apache_avro::serde::fixed")]
        signature: [u8; 64],
    }

    fn encode_v1(reply: &ReplyV1) -> Vec<u8> {
        let old = apache_avro::Schema::parse_str(include_str!(
            "../../../schemas/history/CaseResponse.v1.avsc"
        ))
        .unwrap();
        let datum = apache_avro::writer::datum::GenericDatumWriter::builder(&old)
            .build()
            .unwrap()
            .write_value_to_vec(apache_avro::to_value(reply).unwrap())
            .unwrap();
        let mut bytes = vec![0xC3, 0x01];
        bytes.extend_from_slice(&hex::decode("1a6e73967e7cfef4").unwrap());
        bytes.extend_from_slice(&datum);
        bytes
    }

    #[test]
    fn a_version_1_reply_is_still_read_and_verified_from_its_bytes() {
        use crate::keys::generate;
        let sk = generate();
        let mut signer = IncidentSigner::new("kz-1", sk.clone());
        let store = TrustStore::parse(&format!(
            "[[keys]]\nkey_id = \"kz-1\"\nstate = \"KZ\"\npublic_key = \"{}\"\nnot_before = 2026-01-01T00:00:00Z\nnot_after = 2027-01-01T00:00:00Z\n",
            B64.encode(crate::PublicKey::from(&sk).as_bytes())
        ))
        .unwrap();
        let now = 1_767_268_900_000;
        let mut v1 = ReplyV1 {
            request_id: "r1".into(),
            alert_id: "a1".into(),
            incident_id: "i1".into(),
            state: "KZ".into(),
            agency: "RCC".into(),
            decision: CaseDecision::Decline,
            reason: Some("no legal basis".into()),
            recipient_key_id: None,
            encapsulated_key: None,
            ciphertext: None,
            decided_by: "kz-duty-officer".into(),
            decided_at: now,
            key_id: "kz-1".into(),
            signed_at: now,
            signature: [0; 64],
        };
        v1.signature = signer.sign_case_reply(&encode_v1(&v1), now);
        let bytes = encode_v1(&v1);
        let (read, key) = verify_response_bytes(&store, &bytes, now, 0).unwrap();
        assert_eq!(key.key_id, "kz-1");
        assert_eq!(read.request_id, "r1");
        assert_eq!(read.decision, CaseDecision::Decline);
        assert_eq!(read.decided_by, "kz-duty-officer");
        // Read through the current schema it re-encodes otherwise: only the bytes verify.
        assert!(verify_response(&store, &read, now, 0).is_err());
        let mut changed = bytes.clone();
        let at = changed.len() - 70;
        changed[at] ^= 1;
        assert!(verify_response_bytes(&store, &changed, now, 0).is_err());
    }
}
