//! Subject blinding: raw identifiers never leave the member state.
//!
//! `ref = hex(HMAC-SHA256(network blinding key, KIND ":" normalise(kind, id)))`. Every
//! member state holds the same network key, so the same person seen in two states gets the
//! same `ref`, and the network can correlate without ever seeing the identifier.
//!
//! Normalisation (so trivial spelling differences do not split one subject in two):
//! - all kinds: Unicode NFKC, upper case, surrounding whitespace trimmed, inner runs of
//!   whitespace collapsed to one space;
//! - `DOCUMENT`, `VEHICLE`: spaces, `-`, `.`, `/` removed (`AB 12-345` = `AB12345`);
//! - `PHONE`: digits only, with a leading `+` kept and a leading `00` read as `+`;
//! - `PERSON`, `ORGANISATION`: as for all kinds.

use std::fmt;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ewn_model::SubjectKind;
use hmac::{Hmac, Mac};
use rand_core::{OsRng, RngCore};
use sha2::Sha256;
use unicode_normalization::UnicodeNormalization;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::secret;

/// The network's blinding key (32 random bytes). Debug output never shows it.
#[derive(Clone)]
pub struct BlindingKey(Zeroizing<[u8; 32]>);

impl fmt::Debug for BlindingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BlindingKey(<redacted>)")
    }
}

/// Why a raw identifier cannot be blinded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("identifier is empty after normalisation")]
pub struct EmptyIdentifier;

impl BlindingKey {
    pub fn generate() -> Self {
        let mut bytes = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(bytes.as_mut());
        BlindingKey(bytes)
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        BlindingKey(Zeroizing::new(bytes))
    }

    /// Reads a key file: base64 of 32 bytes, mode 0600.
    pub fn load(path: &Path) -> Result<Self> {
        let text = secret::read_secret(path)?;
        let bytes = Zeroizing::new(B64.decode(text.trim()).map_err(|_| Error::BadKeyFile {
            path: path.into(),
            message: "blinding key is not base64".into(),
        })?);
        let array: [u8; 32] = bytes.as_slice().try_into().map_err(|_| Error::BadKeyFile {
            path: path.into(),
            message: format!("blinding key is {} bytes, expected 32", bytes.len()),
        })?;
        Ok(BlindingKey::from_bytes(array))
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let text = Zeroizing::new(format!("{}\n", B64.encode(self.0.as_ref())));
        secret::write_secret(path, &text)
    }

    /// The blinded reference of a raw identifier.
    pub fn blind(&self, kind: SubjectKind, raw_id: &str) -> Result<String, EmptyIdentifier> {
        let normalised = Zeroizing::new(normalise(kind, raw_id));
        if normalised.is_empty() {
            return Err(EmptyIdentifier);
        }
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.0.as_ref())
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        mac.update(kind.as_str().as_bytes());
        mac.update(b":");
        mac.update(normalised.as_bytes());
        Ok(hex::encode(mac.finalize().into_bytes()))
    }
}

/// The canonical form of an identifier of `kind` (see the module docs).
pub fn normalise(kind: SubjectKind, raw: &str) -> String {
    let upper: String = raw.nfkc().flat_map(char::to_uppercase).collect();
    let collapsed = upper.split_whitespace().collect::<Vec<_>>().join(" ");
    match kind {
        SubjectKind::Document | SubjectKind::Vehicle => collapsed
            .chars()
            .filter(|c| !matches!(c, ' ' | '-' | '.' | '/'))
            .collect(),
        SubjectKind::Phone => {
            let digits: String = collapsed.chars().filter(char::is_ascii_digit).collect();
            if collapsed.starts_with('+') {
                format!("+{digits}")
            } else if let Some(rest) = digits.strip_prefix("00") {
                format!("+{rest}")
            } else {
                digits
            }
        }
        SubjectKind::Person | SubjectKind::Organisation => collapsed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spelling_variants_blind_alike() {
        let key = BlindingKey::from_bytes([42; 32]);
        let b = |k, s| key.blind(k, s).unwrap();
        assert_eq!(
            b(SubjectKind::Document, "n 1234-567"),
            b(SubjectKind::Document, "N1234567")
        );
        assert_eq!(
            b(SubjectKind::Phone, "+996 (555) 12-34-56"),
            b(SubjectKind::Phone, "00996555123456")
        );
        assert_eq!(
            b(SubjectKind::Person, "  Aliyev   Rustam "),
            b(SubjectKind::Person, "ALIYEV RUSTAM")
        );
        // full-width digits fold to ASCII under NFKC
        assert_eq!(
            b(SubjectKind::Vehicle, "０１KG123ABC"),
            b(SubjectKind::Vehicle, "01 KG 123 ABC")
        );
        // the kind is part of the message: a document and a phone with the same digits differ
        assert_ne!(
            b(SubjectKind::Document, "555123"),
            b(SubjectKind::Phone, "555123")
        );
        let r = b(SubjectKind::Person, "x");
        assert!(ewn_model::validate::is_blinded_ref(&r));
    }

    #[test]
    fn different_keys_different_refs() {
        let a = BlindingKey::from_bytes([1; 32])
            .blind(SubjectKind::Person, "x")
            .unwrap();
        let b = BlindingKey::from_bytes([2; 32])
            .blind(SubjectKind::Person, "x")
            .unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn empty_is_refused() {
        let key = BlindingKey::from_bytes([1; 32]);
        assert_eq!(
            key.blind(SubjectKind::Phone, " - ( ) "),
            Err(EmptyIdentifier)
        );
    }

    #[test]
    fn key_file_round_trip_and_debug_is_redacted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blind.key");
        let key = BlindingKey::generate();
        key.save(&path).unwrap();
        let back = BlindingKey::load(&path).unwrap();
        assert_eq!(
            back.blind(SubjectKind::Person, "a"),
            key.blind(SubjectKind::Person, "a")
        );
        assert_eq!(format!("{back:?}"), "BlindingKey(<redacted>)");
    }
}
