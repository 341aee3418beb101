//! The simulated states' keys: one signing key per member state and the network's
//! blinding key, in a directory:
//!
//! ```text
//! DIR/kz.pem  kg.pem  tj.pem  uz.pem  tm.pem   signing keys (PKCS#8 PEM, mode 0600)
//! DIR/blind.key                                the network blinding key (mode 0600)
//! DIR/trust.toml                               the public halves (default location)
//! ```
//!
//! A key's id is found in the trust store by its public key, so a directory made by hand
//! with `ewn keygen` works as well as one made by [`SimKeys::init`]:
//!
//! ```sh
//! for cc in kz kg tj uz tm; do
//!   ewn keygen --state $cc --key-id $cc-sim-01 --secret-out DIR/$cc.pem --trust-store DIR/trust.toml
//! done
//! ewn keygen --blinding-out DIR/blind.key
//! ```
//!
//! The processor must trust the same store (`ewn process --trust-store DIR/trust.toml`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ewn_trust::keys::{generate, load_signing_key, save_signing_key};
use ewn_trust::{BlindingKey, IncidentSigner, KeyEntry, TrustStore};

use crate::error::{Error, Result};
use crate::network::STATES;

pub const BLINDING_FILE: &str = "blind.key";
pub const TRUST_STORE_FILE: &str = "trust.toml";

/// How long keys made by [`SimKeys::init`] are valid, from an hour before their creation
/// (so a clock a little behind still accepts them).
const VALID_DAYS: i64 = 365;
const DAY_MS: i64 = 24 * 3_600_000;

/// A signer per member state, and the blinding key.
pub struct SimKeys {
    signers: BTreeMap<String, IncidentSigner>,
    blinding: BlindingKey,
}

impl std::fmt::Debug for SimKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimKeys")
            .field("signers", &self.signers)
            .finish_non_exhaustive()
    }
}

fn signing_key_path(dir: &Path, state: &str) -> PathBuf {
    dir.join(format!("{}.pem", state.to_ascii_lowercase()))
}

impl SimKeys {
    /// Keys held in memory (tests, an in-process demo). `signers` maps upper-case state
    /// codes to their signers.
    pub fn new(signers: BTreeMap<String, IncidentSigner>, blinding: BlindingKey) -> SimKeys {
        SimKeys { signers, blinding }
    }

    /// Loads the keys of every member state from `dir`; each key id is the trust-store
    /// entry of that state with the key's public half, valid at `now_ms` (the newest
    /// one, if a key was registered twice).
    pub fn load(dir: &Path, trust_store: &Path, now_ms: i64) -> Result<SimKeys> {
        let store = TrustStore::load(trust_store)?;
        let mut signers = BTreeMap::new();
        for state in &STATES {
            let path = signing_key_path(dir, state.code);
            let key = load_signing_key(&path)?;
            let public = ewn_trust::PublicKey::from(&key);
            let entry = store
                .entries()
                .filter(|e| e.state == state.code && e.public_key == public)
                .filter(|e| {
                    e.not_before <= now_ms
                        && now_ms < e.not_after
                        && e.revoked_at.is_none_or(|r| r > now_ms)
                })
                .max_by_key(|e| (e.not_before, e.key_id.clone()))
                .ok_or_else(|| Error::Keys {
                    path: trust_store.into(),
                    message: format!(
                        "no key of {} valid now matches the public key of {}; add it with \
                         `ewn keygen --state {} ...` or start from an empty directory with \
                         --init-keys",
                        state.code,
                        path.display(),
                        state.code
                    ),
                })?;
            signers.insert(
                state.code.to_string(),
                IncidentSigner::new(entry.key_id.clone(), key),
            );
        }
        let blinding = BlindingKey::load(&dir.join(BLINDING_FILE))?;
        Ok(SimKeys { signers, blinding })
    }

    /// Creates a signing key per member state (key id `<cc>-sim-<first 8 hex digits of the
    /// public key>`), registers each in `trust_store` (created if missing), and creates
    /// the blinding key. Refuses to overwrite any existing key file.
    pub fn init(dir: &Path, trust_store: &Path, now_ms: i64) -> Result<SimKeys> {
        let mut signers = BTreeMap::new();
        for state in &STATES {
            let path = signing_key_path(dir, state.code);
            let key = generate();
            let public = ewn_trust::PublicKey::from(&key);
            let key_id = format!(
                "{}-sim-{:02x}{:02x}{:02x}{:02x}",
                state.code.to_ascii_lowercase(),
                public.as_bytes()[0],
                public.as_bytes()[1],
                public.as_bytes()[2],
                public.as_bytes()[3]
            );
            save_signing_key(&path, &key)?;
            TrustStore::append_to_file(
                trust_store,
                &KeyEntry {
                    key_id: key_id.clone(),
                    state: state.code.to_string(),
                    public_key: public,
                    not_before: now_ms - 3_600_000,
                    not_after: now_ms + VALID_DAYS * DAY_MS,
                    revoked_at: None,
                },
            )?;
            signers.insert(state.code.to_string(), IncidentSigner::new(key_id, key));
        }
        let blinding = BlindingKey::generate();
        blinding.save(&dir.join(BLINDING_FILE))?;
        Ok(SimKeys { signers, blinding })
    }

    /// [`SimKeys::load`] when `dir` holds every key, [`SimKeys::init`] when it holds none;
    /// an error naming what is missing otherwise.
    pub fn load_or_init(dir: &Path, trust_store: &Path, now_ms: i64) -> Result<SimKeys> {
        let files: Vec<PathBuf> = STATES
            .iter()
            .map(|s| signing_key_path(dir, s.code))
            .chain([dir.join(BLINDING_FILE)])
            .collect();
        let present = files.iter().filter(|p| p.exists()).count();
        if present == 0 {
            SimKeys::init(dir, trust_store, now_ms)
        } else if present == files.len() {
            SimKeys::load(dir, trust_store, now_ms)
        } else {
            let missing: Vec<String> = files
                .iter()
                .filter(|p| !p.exists())
                .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .collect();
            Err(Error::Keys {
                path: dir.into(),
                message: format!(
                    "holds some of the simulator's keys but not {}; complete it with `ewn \
                     keygen` or use an empty directory",
                    missing.join(", ")
                ),
            })
        }
    }

    /// The signer of `state` (upper case).
    pub fn signer(&mut self, state: &str) -> Option<&mut IncidentSigner> {
        self.signers.get_mut(state)
    }

    pub fn blinding(&self) -> &BlindingKey {
        &self.blinding
    }

    /// States without a signer, of the simulated network's five.
    pub fn missing_states(&self) -> Vec<&'static str> {
        STATES
            .iter()
            .map(|s| s.code)
            .filter(|c| !self.signers.contains_key(*c))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    #[test]
    fn init_then_load_finds_the_same_key_ids() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join(TRUST_STORE_FILE);
        let made = SimKeys::load_or_init(dir.path(), &store, NOW).unwrap();
        let loaded = SimKeys::load_or_init(dir.path(), &store, NOW + 1000).unwrap();
        for s in &STATES {
            let a = made.signers[s.code].key_id();
            assert!(a.starts_with(&format!("{}-sim-", s.code.to_ascii_lowercase())));
            assert_eq!(a, loaded.signers[s.code].key_id());
        }
        assert_eq!(
            made.blinding.blind(ewn_model::SubjectKind::Person, "x"),
            loaded.blinding.blind(ewn_model::SubjectKind::Person, "x")
        );
        assert_eq!(TrustStore::load(&store).unwrap().len(), 5);
        assert!(loaded.missing_states().is_empty());
    }

    #[test]
    fn a_partial_directory_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join(TRUST_STORE_FILE);
        SimKeys::init(dir.path(), &store, NOW).unwrap();
        std::fs::remove_file(dir.path().join("tj.pem")).unwrap();
        let e = SimKeys::load_or_init(dir.path(), &store, NOW).unwrap_err();
        assert!(e.to_string().contains("tj.pem"), "{e}");
    }

    #[test]
    fn a_key_missing_from_the_trust_store_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join(TRUST_STORE_FILE);
        SimKeys::init(dir.path(), &store, NOW).unwrap();
        let other = dir.path().join("other.toml");
        std::fs::write(&other, "").unwrap();
        let e = SimKeys::load(dir.path(), &other, NOW).unwrap_err();
        assert!(e.to_string().contains("no key of KZ"), "{e}");
        // expired by then
        let e = SimKeys::load(dir.path(), &store, NOW + 400 * DAY_MS).unwrap_err();
        assert!(e.to_string().contains("valid now"), "{e}");
    }
}
