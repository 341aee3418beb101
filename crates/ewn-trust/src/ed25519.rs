//! The one Ed25519 verification rule: every EWN reader (the processor's batches, single
//! records, `ewn tail`) accepts exactly the same signatures, because they all call
//! [`verify`] or [`verify_batch`] here (through `crate::verify`), and both decide through
//! the same functions.
//!
//! # The rule
//!
//! RFC 8032 §5.1.7 as written, with its strict decoding, and vetted keys:
//!
//! 1. `A` (the public key) and `R` (the first half of the signature) are canonical
//!    encodings of curve points: `y < p`, and no sign bit on a point whose `x` is 0
//!    ([`decode_point`], the one function that decides which encodings are acceptable).
//! 2. `A` lies in the prime-order subgroup: neither small-order nor mixed-order (no torsion
//!    component, `[L]A = 0`). This is checked once, when a key is loaded ([`PublicKey`] can
//!    only be made from an acceptable key), so it costs nothing per signature.
//! 3. `S` is canonical: `S < L`.
//! 4. The cofactored equation holds: `[8]([S]B - R - [k]A) = 0`, `k = SHA-512(R || A || M)`.
//!
//! `R` may carry a torsion component: only a key holder can make such a signature (`k`
//! depends on `R`, so adding torsion to someone else's `R` breaks the equation), and the
//! cofactor makes the verdict independent of it.
//!
//! # Why batch and single verification agree
//!
//! Write `e_i = [S_i]B - R_i - [k_i]A_i`. A signature is accepted alone iff `[8]e_i = 0`.
//! A batch is accepted iff `[8](sum z_i e_i) = 0` for fresh random 128-bit `z_i`, and a
//! batch that fails is checked one by one. If every `[8]e_i = 0` the batch sum is 0: no
//! valid signature is ever refused by a batch. If some `[8]e_j != 0`, it lies in the
//! prime-order subgroup (the cofactor clears torsion), so for fixed other `z` at most one
//! `z_j` modulo the prime `L` cancels it: a batch holding a bad signature passes with
//! probability at most 2^-128, whatever the attacker chose, since the `z_i` are drawn after
//! the signatures are. Steps 1-3 are decided by the same functions on both paths.
//!
//! # Why not cofactorless with a torsion screen
//!
//! The cofactorless equation (ed25519-dalek's `verify_strict`, libsodium, Go) refuses an
//! `R` with a torsion component, but a batch only agrees with it if every `R` is screened
//! with `[L]R = 0`: a full scalar multiplication per signature, which costs more than the
//! batch's own share (see the `verify` bench). The batch equation cannot check it more
//! cheaply: random `z_i` cancel an order-2 component half the time, the bug this module
//! replaces. With prime-order keys the two rules differ only on a key holder's
//! deliberately mixed-order `R`; third-party verifiers should use the cofactored equation
//! (RFC 8032's own; ZIP 215 verifiers such as ed25519-zebra agree on every vetted key and
//! canonical encoding).

use std::fmt;

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use ed25519_dalek::{SigningKey, VerifyingKey};
use rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha512};

/// Why a point encoding (a key's `A` or a signature's `R`) is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PointError {
    /// The bytes decode to no point of the curve.
    NotOnCurve,
    /// A point, but not its canonical encoding (`y >= p`, or a sign bit with `x = 0`).
    NonCanonical,
    /// One of the eight points of small order (a key any signature "verifies" under).
    SmallOrder,
    /// A point with a torsion component (not in the prime-order subgroup).
    MixedOrder,
}

impl fmt::Display for PointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PointError::NotOnCurve => "not an Ed25519 curve point",
            PointError::NonCanonical => "not the canonical encoding of its point",
            PointError::SmallOrder => "a small-order point",
            PointError::MixedOrder => "a mixed-order point (it has a torsion component)",
        })
    }
}

impl std::error::Error for PointError {}

/// Little-endian encodings of `y = 1` and `y = -1`, the two points with `x = 0`.
const Y_ONE: [u8; 32] = {
    let mut y = [0u8; 32];
    y[0] = 1;
    y
};
const Y_MINUS_ONE: [u8; 32] = {
    let mut y = [0xff; 32];
    y[0] = 0xec;
    y[31] = 0x7f;
    y
};

/// Decodes a point strictly (RFC 8032 §5.1.3): the one function that decides which
/// encodings of `R` and `A` are acceptable. ed25519-dalek's decompression reduces `y`
/// modulo `p` and ignores a sign bit on `x = 0`; both make a second encoding of a point,
/// refused here by comparing bytes (no field inversion).
pub fn decode_point(bytes: &[u8; 32]) -> Result<EdwardsPoint, PointError> {
    let mut y = *bytes;
    y[31] &= 0x7f;
    let sign = bytes[31] >> 7 == 1;
    // p = 2^255 - 19: y >= p means y[0] >= 0xed, every middle byte 0xff and y[31] = 0x7f.
    let y_at_least_p = y[0] >= 0xed && y[1..31].iter().all(|&b| b == 0xff) && y[31] == 0x7f;
    if y_at_least_p || (sign && (y == Y_ONE || y == Y_MINUS_ONE)) {
        // Report a non-point as such, so the message says what is really wrong.
        return match CompressedEdwardsY(*bytes).decompress() {
            Some(_) => Err(PointError::NonCanonical),
            None => Err(PointError::NotOnCurve),
        };
    }
    CompressedEdwardsY(*bytes)
        .decompress()
        .ok_or(PointError::NotOnCurve)
}

/// A public key the rule accepts: canonically encoded and of prime order. The only ways to
/// make one are [`PublicKey::from_bytes`] (which checks) and from a signing key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey {
    bytes: [u8; 32],
    point: EdwardsPoint,
}

impl PublicKey {
    /// Checks a key's encoding and order: refuses non-canonical encodings, small-order and
    /// mixed-order points (`[L]A != 0`, a full scalar multiplication, done once per key).
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<PublicKey, PointError> {
        let point = decode_point(bytes)?;
        if point.is_small_order() {
            return Err(PointError::SmallOrder);
        }
        if !point.is_torsion_free() {
            return Err(PointError::MixedOrder);
        }
        Ok(PublicKey {
            bytes: *bytes,
            point,
        })
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.bytes
    }

    pub fn to_bytes(&self) -> [u8; 32] {
        self.bytes
    }

    /// The same key as ed25519-dalek's type, for code that needs it.
    pub fn verifying_key(&self) -> VerifyingKey {
        VerifyingKey::from(self.point)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", hex::encode(self.bytes))
    }
}

impl From<&SigningKey> for PublicKey {
    /// `A = [a]B` is a multiple of the base point, so in the prime-order subgroup, and its
    /// compression is canonical: no check needed.
    fn from(key: &SigningKey) -> PublicKey {
        let vk = key.verifying_key();
        PublicKey {
            bytes: vk.to_bytes(),
            point: vk.to_edwards(),
        }
    }
}

/// One signature to check: the signed message is `prefix || message` (hashed in place, so
/// a domain prefix or a header need not be copied in front of the message).
#[derive(Clone, Copy, Debug)]
pub struct Signed<'a> {
    pub key: &'a PublicKey,
    pub prefix: &'a [u8],
    pub message: &'a [u8],
    pub signature: &'a [u8; 64],
}

/// A signature whose encodings passed: its `R`, `S` and `k = H(R || A || M)`.
struct Parsed {
    r: EdwardsPoint,
    s: Scalar,
    k: Scalar,
}

fn parse(item: &Signed<'_>) -> Option<Parsed> {
    let (r_bytes, s_bytes) = item.signature.split_at(32);
    let r_bytes: [u8; 32] = r_bytes.try_into().ok()?;
    let s_bytes: [u8; 32] = s_bytes.try_into().ok()?;
    let r = decode_point(&r_bytes).ok()?;
    let s = Option::<Scalar>::from(Scalar::from_canonical_bytes(s_bytes))?;
    let mut h = Sha512::new();
    h.update(r_bytes);
    h.update(item.key.bytes);
    h.update(item.prefix);
    h.update(item.message);
    let mut wide = [0u8; 64];
    wide.copy_from_slice(&h.finalize());
    Some(Parsed {
        r,
        s,
        k: Scalar::from_bytes_mod_order_wide(&wide),
    })
}

/// `[8]([S]B - R - [k]A) = 0`.
fn equation(key: &PublicKey, p: &Parsed) -> bool {
    let sb_minus_ka = EdwardsPoint::vartime_double_scalar_mul_basepoint(&p.k, &-key.point, &p.s);
    (sb_minus_ka - p.r).mul_by_cofactor().is_identity()
}

/// Verifies one signature over `prefix || message` under the rule.
pub fn verify(key: &PublicKey, prefix: &[u8], message: &[u8], signature: &[u8; 64]) -> bool {
    let item = Signed {
        key,
        prefix,
        message,
        signature,
    };
    parse(&item).is_some_and(|p| equation(key, &p))
}

/// Verifies many signatures over `prefix_i || message_i` with one batch equation, and one
/// by one only when it fails; returns one verdict per item, the same as [`verify`]'s (see
/// the module documentation for why).
pub fn verify_batch(items: &[Signed<'_>]) -> Vec<bool> {
    let parsed: Vec<Option<Parsed>> = items.iter().map(parse).collect();
    let candidates: Vec<usize> = (0..items.len()).filter(|&i| parsed[i].is_some()).collect();
    if candidates.len() > 1 && batch_equation(items, &parsed, &candidates) {
        return parsed.iter().map(Option::is_some).collect();
    }
    items
        .iter()
        .zip(&parsed)
        .map(|(item, p)| p.as_ref().is_some_and(|p| equation(item.key, p)))
        .collect()
}

/// `[8](sum z_i ([S_i]B - R_i - [k_i]A_i)) = 0` over the candidates, `z_i` random 128-bit.
fn batch_equation(items: &[Signed<'_>], parsed: &[Option<Parsed>], candidates: &[usize]) -> bool {
    let n = candidates.len();
    let mut random = vec![0u8; 16 * n];
    OsRng.fill_bytes(&mut random);
    let mut scalars = Vec::with_capacity(2 * n + 1);
    let mut points = Vec::with_capacity(2 * n + 1);
    let mut b_coefficient = Scalar::ZERO;
    scalars.push(Scalar::ZERO);
    points.push(ED25519_BASEPOINT_POINT);
    for (&i, z) in candidates.iter().zip(random.chunks_exact(16)) {
        let Some(p) = &parsed[i] else { continue };
        let mut z_bytes = [0u8; 32];
        z_bytes[..16].copy_from_slice(z);
        let z = Scalar::from_bytes_mod_order(z_bytes);
        b_coefficient += z * p.s;
        scalars.push(-z);
        points.push(p.r);
        scalars.push(-(z * p.k));
        points.push(items[i].key.point);
    }
    scalars[0] = b_coefficient;
    EdwardsPoint::vartime_multiscalar_mul(&scalars, &points)
        .mul_by_cofactor()
        .is_identity()
}

#[cfg(test)]
mod tests {
    use super::*;
    use curve25519_dalek::constants::EIGHT_TORSION;
    use ed25519_dalek::Signer;

    #[test]
    fn decode_point_refuses_exactly_what_compression_would_not_produce() {
        // every y in p..2^255 (with and without the sign bit), and x = 0 with a sign bit
        let mut encodings = Vec::new();
        for d in 0u8..19 {
            let mut y = Y_MINUS_ONE;
            y[0] = 0xed + d;
            encodings.push(y);
            y[31] |= 0x80;
            encodings.push(y);
        }
        for y in [Y_ONE, Y_MINUS_ONE] {
            let mut signed = y;
            signed[31] |= 0x80;
            encodings.extend([y, signed]);
        }
        for t in EIGHT_TORSION {
            encodings.push(t.compress().to_bytes());
        }
        for seed in 0u8..32 {
            let key = SigningKey::from_bytes(&[seed; 32]);
            encodings.push(key.verifying_key().to_bytes());
        }
        for bytes in encodings {
            let decompressed = CompressedEdwardsY(bytes).decompress();
            let expected = match decompressed {
                None => Err(PointError::NotOnCurve),
                Some(p) if p.compress().to_bytes() != bytes => Err(PointError::NonCanonical),
                Some(p) => Ok(p),
            };
            assert_eq!(decode_point(&bytes), expected, "{}", hex::encode(bytes));
        }
    }

    #[test]
    fn keys_of_small_or_mixed_order_are_refused() {
        let good = PublicKey::from(&SigningKey::from_bytes(&[7; 32]));
        assert_eq!(PublicKey::from_bytes(good.as_bytes()), Ok(good));
        for (i, t) in EIGHT_TORSION.iter().enumerate() {
            assert_eq!(
                PublicKey::from_bytes(&t.compress().to_bytes()),
                Err(PointError::SmallOrder)
            );
            let mixed = (good.point + t).compress().to_bytes();
            let expected = if i == 0 {
                Ok(good)
            } else {
                Err(PointError::MixedOrder)
            };
            assert_eq!(PublicKey::from_bytes(&mixed), expected);
        }
    }

    #[test]
    fn a_signature_by_dalek_verifies_and_a_changed_one_does_not() {
        let key = SigningKey::from_bytes(&[9; 32]);
        let public = PublicKey::from(&key);
        let sig = key.sign(b"prefix|message").to_bytes();
        assert!(verify(&public, b"prefix|", b"message", &sig));
        assert!(!verify(&public, b"prefix|", b"messagf", &sig));
        assert!(!verify(&public, b"", b"message", &sig));
        let items = |prefix: &'static [u8]| -> Vec<Signed<'_>> {
            (0..3)
                .map(|_| Signed {
                    key: &public,
                    prefix,
                    message: b"message",
                    signature: &sig,
                })
                .collect()
        };
        assert_eq!(verify_batch(&items(b"prefix|")), vec![true; 3]);
        assert_eq!(verify_batch(&items(b"prefix")), vec![false; 3]);
        // Each item carries its own prefix: a batch mixes them freely.
        let mut mixed = items(b"prefix|");
        mixed[1].prefix = b"prefix";
        assert_eq!(verify_batch(&mixed), vec![true, false, true]);
    }
}
