//! Shared by the criterion benches: a signer for KZ and a verifier that trusts exactly its
//! key, valid forever.

use std::sync::Arc;

use ewn_trust::{IncidentSigner, KeyEntry, TrustStore, Verifier, VerifyPolicy, keys};

pub fn one_key() -> (IncidentSigner, Verifier) {
    let signer = IncidentSigner::new("kz-1", keys::generate());
    let mut store = TrustStore::default();
    store.insert(KeyEntry {
        key_id: "kz-1".into(),
        state: "KZ".into(),
        public_key: signer.public_key(),
        not_before: 0,
        not_after: i64::MAX,
        revoked_at: None,
    });
    (
        signer,
        Verifier::new(Arc::new(store), VerifyPolicy::default()),
    )
}
