//! The fan-out's own secret: one 32-byte key, shared by every instance (a file of mode
//! 0600, `fanout.key_file`), from which each purpose derives its own subkey. Purposes:
//! sealing webhook secrets on `<prefix>subscriptions` and authenticating its records,
//! signing console session cookies, and the per-subscription identifiers redacted
//! recipients get in place of alert ids.
//!
//! Subkey = HMAC-SHA256(key, "ewn/fanout/" ‖ purpose ‖ "/v1"): knowing one subkey tells
//! nothing of another or of the key.

use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::{Zeroize, Zeroizing};

use crate::error::{Error, Result};

/// What a subkey is for. Each has its own key, so a leak of one (a cookie-signing key in
/// a memory dump, say) opens nothing else.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// Webhook secrets sealed on `<prefix>subscriptions`, and its records' authentication.
    Subscriptions,
    /// Console session cookies.
    Sessions,
    /// Identifiers that redacted recipients get instead of alert ids.
    RedactedIds,
    /// Delivery retry records on `<prefix>retries`.
    Retries,
}

impl Purpose {
    fn label(self) -> &'static str {
        match self {
            Purpose::Subscriptions => "subscriptions",
            Purpose::Sessions => "sessions",
            Purpose::RedactedIds => "redacted-ids",
            Purpose::Retries => "retries",
        }
    }
}

/// The fan-out key. `Debug` never shows it; memory is wiped on drop.
#[derive(Clone)]
pub struct FanoutKey {
    key: [u8; 32],
}

impl std::fmt::Debug for FanoutKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FanoutKey(..)")
    }
}

impl Drop for FanoutKey {
    fn drop(&mut self) {
        self.key.zeroize();
    }
}

impl FanoutKey {
    pub fn from_bytes(key: [u8; 32]) -> FanoutKey {
        FanoutKey { key }
    }

    /// A new random key (for `ewn keygen --fanout`, tests and the demo).
    pub fn generate() -> FanoutKey {
        let mut key = [0u8; 32];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut key);
        FanoutKey { key }
    }

    /// Parses the file form: 64 hex digits (surrounding whitespace ignored).
    pub fn parse(text: &str) -> std::result::Result<FanoutKey, String> {
        let text = text.trim();
        if text.len() != 64 {
            return Err(format!(
                "expected 64 hex digits (32 bytes), found {} characters",
                text.len()
            ));
        }
        let mut key = [0u8; 32];
        hex::decode_to_slice(text, &mut key).map_err(|_| "not hexadecimal".to_string())?;
        Ok(FanoutKey { key })
    }

    /// Reads a key file, refused when group or others may read it.
    pub fn load(path: &Path) -> Result<FanoutKey> {
        let text = ewn_trust::secret::read_secret(path)?;
        FanoutKey::parse(&text)
            .map_err(|e| Error::Config(vec![format!("fanout.key_file: {}: {e}", path.display())]))
    }

    /// The file form (64 hex digits and a newline).
    pub fn to_file_text(&self) -> Zeroizing<String> {
        Zeroizing::new(format!("{}\n", hex::encode(self.key)))
    }

    /// The subkey for one purpose.
    pub fn subkey(&self, purpose: Purpose) -> Zeroizing<[u8; 32]> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
        mac.update(b"ewn/fanout/");
        mac.update(purpose.label().as_bytes());
        mac.update(b"/v1");
        Zeroizing::new(mac.finalize().into_bytes().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subkeys_differ_by_purpose_and_key() {
        let a = FanoutKey::from_bytes([1; 32]);
        let b = FanoutKey::from_bytes([2; 32]);
        let all = [
            Purpose::Subscriptions,
            Purpose::Sessions,
            Purpose::RedactedIds,
            Purpose::Retries,
        ];
        let mut seen = std::collections::HashSet::new();
        for k in [&a, &b] {
            for p in all {
                assert!(seen.insert(*k.subkey(p)), "{p:?}");
            }
        }
        assert_eq!(
            *a.subkey(Purpose::Sessions),
            *a.clone().subkey(Purpose::Sessions)
        );
    }

    #[test]
    fn the_file_form_round_trips_and_bad_files_say_why() {
        let k = FanoutKey::generate();
        let back = FanoutKey::parse(&k.to_file_text()).unwrap();
        assert_eq!(back.key, k.key);
        assert!(
            FanoutKey::parse("abc")
                .unwrap_err()
                .contains("64 hex digits")
        );
        assert!(
            FanoutKey::parse(&"zz".repeat(32))
                .unwrap_err()
                .contains("hexadecimal")
        );
        assert_eq!(format!("{k:?}"), "FanoutKey(..)");
    }
}
