//! Who may say what: EWN's keys and the checks on them.
//!
//! - [`keys`]: Ed25519 signing keys (PKCS#8 PEM files, mode 0600) and domain-separated
//!   signing of incidents (`"ewn/incident/v2" || signed_at || payload`; envelopes without a
//!   signing time were `"ewn/incident/v1" || payload`).
//! - [`store`]: the TOML trust store of public keys with validity windows and revocation.
//! - [`ed25519`]: the one Ed25519 verification rule (strict encodings, prime-order keys,
//!   cofactored equation) that batch and single verification share.
//! - [`verify`]: verification of `SignedIncident` records with closed-set reason codes; key
//!   validity is judged at the signing time, bounded by the verifier's clock.
//! - [`heartbeat`]: verification of `SignedHeartbeat` records, signed by the same keys in
//!   their own domain (`"ewn/heartbeat/v1" || signed_at || payload`) and held to the same rules.
//! - [`audit`]: signatures of services (keys of role `service`) over audit records, in
//!   their own domain (`"ewn/audit/v1" || signed_at || body`).
//! - [`case`]: case requests (signed by the fan-out's service key) and replies (signed by
//!   the state, details HPKE-encrypted to the requesting agency's X25519 key, role `agency`).
//! - [`blind`]: normalisation and HMAC blinding of subject identifiers.
//! - [`secret`]: reading and writing secret files with restrictive modes.
//!
//! No Kafka, no network. Time is passed in, never read here.

pub mod audit;
pub mod blind;
pub mod case;
pub mod ed25519;
pub mod error;
pub mod heartbeat;
pub mod keys;
pub mod secret;
pub mod store;
pub mod verify;

pub use blind::BlindingKey;
pub use ed25519::PublicKey;
pub use error::{Error, Result};
pub use heartbeat::VerifiedHeartbeat;
pub use keys::{DOMAIN, HEARTBEAT_DOMAIN, IncidentSigner, LEGACY_DOMAIN, SignedPrefix};
pub use store::{AgencyKey, AnyKey, KeyEntry, KeyRole, ServiceKey, TrustStore};
pub use verify::{
    Pending, Rejected, SigningTime, TrustSettings, Verified, Verifier, VerifyPolicy,
    check_signatures, judge_signing_time,
};
