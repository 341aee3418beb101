//! What the fuzz targets share: one fixed signing key, the trust store that holds it and a
//! fixed clock, so every input is judged the same way on every run.

use std::sync::{Arc, LazyLock};

use ed25519_dalek::SigningKey;
use ewn_model::validate::Limits;
use ewn_trust::verify::{TrustSettings, Verifier};
use ewn_trust::{BlindingKey, IncidentSigner, KeyEntry, PublicKey, TrustStore};

/// The verifier's clock: two minutes after the sample incident's `occurred_at`.
pub const NOW_MS: i64 = 1_790_000_120_000;
pub const KEY_ID: &str = "kz-fuzz";
pub const STATE: &str = "KZ";

fn signing_key() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}

/// A signer whose key the trust store of [`verifier`] holds for `KZ`.
pub fn signer() -> IncidentSigner {
    IncidentSigner::new(KEY_ID, signing_key())
}

pub fn blinding() -> &'static BlindingKey {
    static KEY: LazyLock<BlindingKey> = LazyLock::new(|| BlindingKey::from_bytes([9; 32]));
    &KEY
}

/// The processor's verifier with its default policy and a store of one `KZ` key valid
/// through 2026.
pub fn verifier() -> &'static Verifier {
    static VERIFIER: LazyLock<Verifier> = LazyLock::new(|| {
        let mut store = TrustStore::default();
        store.insert(KeyEntry {
            key_id: KEY_ID.into(),
            state: STATE.into(),
            public_key: PublicKey::from(&signing_key()),
            not_before: 1_767_225_600_000,
            not_after: 1_798_761_600_000,
            revoked_at: None,
        });
        Verifier::new(
            Arc::new(store),
            TrustSettings::default().policy(Limits::default()),
        )
    });
    &VERIFIER
}
