//! The gateway's signing key, reloaded without a restart.
//!
//! The key file is the PKCS#8 PEM `ewn keygen` writes, optionally preceded by a line
//! `key_id = <id>` naming the key as the trust store does (without it,
//! `gateway.key_id` names it). Rotation: write the new key (with its new id) to a temporary
//! file and rename it over the old one (or let Kubernetes swap its symlink). The watcher
//! sees the new content, and every report accepted from then on is signed with the new key;
//! reports already spooled keep the signature they were accepted with, which stays valid
//! because key validity is judged at signing time. A replaced file that cannot be read, or
//! that holds a different key under the same id (which every verifier would reject), is
//! refused: the gateway keeps signing with the key it has, logs why and counts it.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::DecodePrivateKey;
use ewn_trust::IncidentSigner;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// A signing key file's contents: the key and the id it names.
pub struct KeyFile {
    pub key_id: String,
    pub key: SigningKey,
}

/// Parses a key file: optional `key_id = <id>` header lines, then the PEM block.
pub fn parse_key_file(text: &str, default_id: &str, path: &Path) -> Result<KeyFile> {
    let bad = |message: &str| Error::SigningKey {
        path: path.to_path_buf(),
        message: message.into(),
    };
    let begin = text
        .find("-----BEGIN")
        .ok_or_else(|| bad("no PEM block (-----BEGIN PRIVATE KEY-----)"))?;
    let mut key_id = default_id.trim().to_string();
    for line in text[..begin].lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.split_once('=') {
            Some((k, v)) if k.trim() == "key_id" => {
                key_id = v.trim().trim_matches('"').to_string();
            }
            _ => return Err(bad("before the PEM block only `key_id = <id>` is allowed")),
        }
    }
    if key_id.is_empty() {
        return Err(bad(
            "no key id: add `key_id = <id>` before the PEM block or set gateway.key_id",
        ));
    }
    let key = SigningKey::from_pkcs8_pem(text[begin..].trim())
        .map_err(|_| bad("not an Ed25519 PKCS#8 PEM private key"))?;
    Ok(KeyFile { key_id, key })
}

/// The signer every intake path signs with, and the file it comes from.
pub struct ReloadingSigner {
    path: PathBuf,
    default_id: String,
    current: Mutex<(IncidentSigner, [u8; 32])>,
}

/// What a check of the key file found.
#[derive(Debug, PartialEq, Eq)]
pub enum Reload {
    Unchanged,
    /// Now signing with this key id.
    Rotated(String),
}

impl ReloadingSigner {
    pub fn load(path: &Path, default_id: &str) -> Result<ReloadingSigner> {
        let text = ewn_trust::secret::read_secret(path)?;
        let file = parse_key_file(&text, default_id, path)?;
        let digest = Sha256::digest(text.as_bytes()).into();
        Ok(ReloadingSigner {
            path: path.to_path_buf(),
            default_id: default_id.to_string(),
            current: Mutex::new((IncidentSigner::new(file.key_id, file.key), digest)),
        })
    }

    /// Runs `f` with the current signer (held only while `f` runs).
    pub fn with<T>(&self, f: impl FnOnce(&mut IncidentSigner) -> T) -> T {
        let mut guard = self.current.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard.0)
    }

    /// Signs a heartbeat with the key in force (a rotated key signs the next one).
    pub fn sign_heartbeat(
        &self,
        heartbeat: &ewn_model::Heartbeat,
        signed_at: i64,
    ) -> ewn_trust::Result<ewn_model::SignedHeartbeat> {
        self.with(|s| s.sign_heartbeat(heartbeat, signed_at))
    }

    pub fn key_id(&self) -> String {
        self.with(|s| s.key_id().to_string())
    }

    /// Reads the key file again and switches to its key when it was replaced.
    pub fn reload(&self) -> Result<Reload> {
        let text = ewn_trust::secret::read_secret(&self.path)?;
        let digest: [u8; 32] = Sha256::digest(text.as_bytes()).into();
        if self.current.lock().unwrap_or_else(|p| p.into_inner()).1 == digest {
            return Ok(Reload::Unchanged);
        }
        let file = parse_key_file(&text, &self.default_id, &self.path)?;
        let mut guard = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let same_key = guard.0.verifying_key() == file.key.verifying_key();
        let same_id = guard.0.key_id() == file.key_id;
        match (same_key, same_id) {
            (true, true) => {
                guard.1 = digest;
                Ok(Reload::Unchanged)
            }
            (false, true) => Err(Error::SigningKey {
                path: self.path.clone(),
                message: format!(
                    "holds a new key under the id in use ({}): a new key needs a new key id; \
                     still signing with the previous key",
                    file.key_id
                ),
            }),
            _ => {
                let id = file.key_id.clone();
                *guard = (IncidentSigner::new(file.key_id, file.key), digest);
                Ok(Reload::Rotated(id))
            }
        }
    }
}

impl crate::heartbeat::HeartbeatSigner for ReloadingSigner {
    fn sign(
        &self,
        heartbeat: &ewn_model::Heartbeat,
        signed_at: i64,
    ) -> ewn_trust::Result<ewn_model::SignedHeartbeat> {
        self.sign_heartbeat(heartbeat, signed_at)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
    use std::os::unix::fs::PermissionsExt;

    fn pem(key: &SigningKey) -> String {
        key.to_pkcs8_pem(LineEnding::LF).unwrap().to_string()
    }

    fn write(path: &Path, text: &str) {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    #[test]
    fn a_replaced_key_file_is_picked_up_and_a_reused_id_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signing.pem");
        let k1 = ewn_trust::keys::generate();
        write(&path, &pem(&k1));
        let s = ReloadingSigner::load(&path, "kz-1").unwrap();
        assert_eq!(s.key_id(), "kz-1");
        assert_eq!(s.reload().unwrap(), Reload::Unchanged);
        // a new key under the same id: refused, the old key stays
        let k2 = ewn_trust::keys::generate();
        write(&path, &pem(&k2));
        assert!(s.reload().unwrap_err().to_string().contains("new key id"));
        assert_eq!(s.with(|x| x.verifying_key()), k1.verifying_key());
        // with its own id: taken
        write(&path, &format!("key_id = kz-2\n{}", pem(&k2)));
        assert_eq!(s.reload().unwrap(), Reload::Rotated("kz-2".into()));
        assert_eq!(s.with(|x| x.verifying_key()), k2.verifying_key());
        // garbage: refused, the key stays
        write(&path, "key_id = kz-3\nnot a key");
        assert!(s.reload().is_err());
        assert_eq!(s.key_id(), "kz-2");
        assert!(parse_key_file("hello = 1\n-----BEGIN x", "a", &path).is_err());
    }
}
