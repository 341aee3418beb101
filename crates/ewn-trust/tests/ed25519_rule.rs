//! One verification rule for every reader: the single path ([`ed25519::verify`]) and the
//! batch path ([`ed25519::verify_batch`]) give the same verdict on the published Ed25519
//! edge cases and on torsion added to valid signatures, at every position of a batch, and
//! that verdict is the documented rule's.
//!
//! A key the rule refuses never reaches either path: both take a [`PublicKey`], which only
//! [`PublicKey::from_bytes`] makes from bytes (the trust store's one way in). For such a
//! case the verdict of both paths is that refusal.

use std::sync::LazyLock;

use curve25519_dalek::constants::EIGHT_TORSION;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::IsIdentity;
use ed25519_dalek::{Signer, SigningKey};
use ewn_trust::ed25519::{self, PointError, PublicKey, Signed, decode_point};
use proptest::prelude::*;
use sha2::{Digest, Sha512};

const BATCH: usize = 64;

/// A signature to check, with the verdict the rule gives it.
#[derive(Clone, Debug)]
struct Case {
    name: String,
    message: Vec<u8>,
    key: [u8; 32],
    signature: [u8; 64],
    accept: bool,
}

fn unhex<const N: usize>(s: &str) -> [u8; N] {
    hex::decode(s)
        .ok()
        .and_then(|b| b.try_into().ok())
        .unwrap_or_else(|| panic!("{s}: not {N} bytes of hex"))
}

fn fixture(name: &str) -> Vec<Vec<String>> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

fn speccheck() -> Vec<(Case, String)> {
    fixture("ed25519_speccheck.tsv")
        .into_iter()
        .map(|f| {
            let case = Case {
                name: f[0].clone(),
                message: hex::decode(&f[1]).expect("hex message"),
                key: unhex(&f[2]),
                signature: unhex(&f[3]),
                accept: match f[4].as_str() {
                    "accept" => true,
                    "reject" => false,
                    other => panic!("{}: verdict `{other}`", f[0]),
                },
            };
            (case, f[5].clone())
        })
        .collect()
}

fn short(e: PointError) -> &'static str {
    match e {
        PointError::NotOnCurve => "not on curve",
        PointError::NonCanonical => "non-canonical",
        PointError::SmallOrder => "small-order",
        PointError::MixedOrder => "mixed-order",
    }
}

/// The first check of the rule that refuses the case, or "accepted" (no fixture needed).
fn refused_by(case: &Case) -> String {
    if let Err(e) = PublicKey::from_bytes(&case.key) {
        return format!("key: {}", short(e));
    }
    let s: [u8; 32] = case.signature[32..].try_into().expect("32 bytes");
    if Option::<Scalar>::from(Scalar::from_canonical_bytes(s)).is_none() {
        return "signature: S not canonical".into();
    }
    let r: [u8; 32] = case.signature[..32].try_into().expect("32 bytes");
    if let Err(e) = decode_point(&r) {
        return format!("signature: R {}", short(e));
    }
    let key = PublicKey::from_bytes(&case.key).expect("checked above");
    if ed25519::verify(&key, b"", &case.message, &case.signature) {
        "accepted".into()
    } else {
        "equation".into()
    }
}

/// Signatures by other keys that verify under any rule: the rest of each batch.
type Filler = Vec<(PublicKey, Vec<u8>, [u8; 64])>;

static FILLER: LazyLock<Filler> = LazyLock::new(|| {
    (0..BATCH as u8)
        .map(|i| {
            let key = SigningKey::from_bytes(&[i.wrapping_mul(37).wrapping_add(1); 32]);
            let message = format!("filler report {i}").into_bytes();
            let signature = key.sign(&message).to_bytes();
            (PublicKey::from(&key), message, signature)
        })
        .collect()
});

/// The single path's verdict: the key as the trust store would load it, then `verify`.
fn single(case: &Case) -> bool {
    PublicKey::from_bytes(&case.key)
        .is_ok_and(|key| ed25519::verify(&key, b"", &case.message, &case.signature))
}

/// The batch path's verdict on the case at `position` among 63 valid signatures; also
/// checks that the valid ones are all accepted whatever the case is.
fn batched(case: &Case, position: usize) -> bool {
    let key = PublicKey::from_bytes(&case.key);
    let mut items: Vec<Signed<'_>> = FILLER[..BATCH - 1]
        .iter()
        .map(|(key, message, signature)| Signed {
            key,
            prefix: b"",
            message,
            signature,
        })
        .collect();
    let Ok(key) = &key else {
        // Refused at load: it never joins a batch, and the batch is not disturbed.
        assert!(ed25519::verify_batch(&items).iter().all(|ok| *ok));
        return false;
    };
    items.insert(
        position,
        Signed {
            key,
            prefix: b"",
            message: &case.message,
            signature: &case.signature,
        },
    );
    let verdicts = ed25519::verify_batch(&items);
    for (i, ok) in verdicts.iter().enumerate() {
        assert!(
            i == position || *ok,
            "{}: a valid signature at {i} refused with the case at {position}",
            case.name
        );
    }
    verdicts[position]
}

/// The single path, then the batch path at every position: all agree with `case.accept`.
fn assert_one_rule(case: &Case) {
    assert_eq!(single(case), case.accept, "{}: single path", case.name);
    for position in 0..BATCH {
        assert_eq!(
            batched(case, position),
            case.accept,
            "{}: batch path, position {position}",
            case.name
        );
    }
}

#[test]
fn speccheck_cases_are_refused_by_the_documented_check() {
    let cases = speccheck();
    assert_eq!(cases.len(), 12);
    for (case, why) in &cases {
        assert_eq!(&refused_by(case), why, "{}", case.name);
    }
}

#[test]
fn speccheck_cases_get_one_verdict_alone_and_at_every_batch_position() {
    for (case, _) in speccheck() {
        assert_one_rule(&case);
    }
}

#[test]
fn the_small_order_list_is_every_encoding_of_the_eight_torsion() {
    let rows = fixture("ed25519_small_order.tsv");
    assert_eq!(rows.len(), 14);
    let torsion: Vec<[u8; 32]> = EIGHT_TORSION
        .iter()
        .map(|t| t.compress().to_bytes())
        .collect();
    for row in &rows {
        let bytes: [u8; 32] = unhex(&row[0]);
        let point = CompressedEdwardsY(bytes)
            .decompress()
            .expect("a curve point");
        assert!(point.is_small_order(), "{}", row[0]);
        let canonical = row[2] == "yes";
        assert_eq!(torsion.contains(&bytes), canonical, "{}", row[0]);
        let expected = if canonical {
            PointError::SmallOrder
        } else {
            PointError::NonCanonical
        };
        assert_eq!(short(expected), row[3], "{}", row[0]);
        assert_eq!(PublicKey::from_bytes(&bytes), Err(expected), "{}", row[0]);
        assert_eq!(decode_point(&bytes).is_ok(), canonical, "{}", row[0]);
    }
    for t in &torsion {
        assert!(rows.iter().any(|r| unhex::<32>(&r[0]) == *t));
    }
}

fn wide_scalar(digest: &[u8]) -> Scalar {
    let mut wide = [0u8; 64];
    wide.copy_from_slice(digest);
    Scalar::from_bytes_mod_order_wide(&wide)
}

fn hash_to_scalar(seed: &[u8]) -> Scalar {
    wide_scalar(&Sha512::digest(seed))
}

/// A key holder's signing, with a chosen nonce point: `R = [r]B + T`, `S = r + k a`.
struct Holder {
    a: Scalar,
    public: [u8; 32],
}

impl Holder {
    fn new(seed: &[u8]) -> Holder {
        let a = hash_to_scalar(seed);
        Holder {
            a,
            public: EdwardsPoint::mul_base(&a).compress().to_bytes(),
        }
    }

    fn k(r: &[u8; 32], public: &[u8; 32], message: &[u8]) -> Scalar {
        let mut h = Sha512::new();
        h.update(r);
        h.update(public);
        h.update(message);
        wide_scalar(&h.finalize())
    }

    /// Signs with nonce `r` and the nonce point encoded as `r_bytes` (which the caller may
    /// have made non-canonical or given a torsion component).
    fn sign_with(&self, r: Scalar, r_bytes: [u8; 32], message: &[u8]) -> [u8; 64] {
        let s = r + Self::k(&r_bytes, &self.public, message) * self.a;
        let mut sig = [0u8; 64];
        sig[..32].copy_from_slice(&r_bytes);
        sig[32..].copy_from_slice(s.as_bytes());
        sig
    }

    fn case(&self, name: String, message: &[u8], signature: [u8; 64], accept: bool) -> Case {
        Case {
            name,
            message: message.to_vec(),
            key: self.public,
            signature,
            accept,
        }
    }
}

/// The speccheck conditions rebuilt on a prime-order key, so they reach the equation.
fn rekeyed_cases() -> Vec<Case> {
    let holder = Holder::new(b"rekeyed");
    let message = b"ewn/incident/v1 rekeyed";
    let r = hash_to_scalar(b"nonce");
    let r_point = EdwardsPoint::mul_base(&r);
    let mut cases = vec![holder.case(
        "valid".into(),
        message,
        holder.sign_with(r, r_point.compress().to_bytes(), message),
        true,
    )];
    for (i, t) in EIGHT_TORSION.iter().enumerate() {
        // Mixed-order R (small-order R for i = 0 is R = [r]B: the valid case), made by
        // the key holder: valid under the cofactored equation, so accepted.
        let mixed = (r_point + t).compress().to_bytes();
        cases.push(holder.case(
            format!("key holder's R + torsion[{i}]"),
            message,
            holder.sign_with(r, mixed, message),
            true,
        ));
        // Small-order R (nonce 0): S = k a; the key holder gives its secret away, but the
        // cofactored equation holds.
        let small = t.compress().to_bytes();
        cases.push(holder.case(
            format!("key holder's small-order R = torsion[{i}]"),
            message,
            holder.sign_with(Scalar::ZERO, small, message),
            true,
        ));
    }
    // Non-canonical encodings of R = identity (y = p + 1; x = 0 with a sign bit), each hashed
    // as written, so only the encoding check refuses them.
    let mut y_p_plus_1 = [0xff; 32];
    y_p_plus_1[0] = 0xee;
    y_p_plus_1[31] = 0x7f;
    let mut signed_identity = [0u8; 32];
    signed_identity[0] = 1;
    signed_identity[31] = 0x80;
    let mut y_p = [0xff; 32];
    y_p[0] = 0xed;
    y_p[31] = 0x7f;
    for (name, bytes) in [
        ("R = identity as y = p + 1", y_p_plus_1),
        ("R = identity with a sign bit", signed_identity),
        ("R = order-4 point as y = p", y_p),
    ] {
        assert!(CompressedEdwardsY(bytes).decompress().is_some());
        cases.push(holder.case(
            name.into(),
            message,
            holder.sign_with(Scalar::ZERO, bytes, message),
            false,
        ));
    }
    // S + L: the same equation, a non-canonical S.
    let mut sig = holder.sign_with(r, r_point.compress().to_bytes(), message);
    let s_bytes: [u8; 32] = sig[32..].try_into().expect("32 bytes");
    let s = Scalar::from_canonical_bytes(s_bytes).expect("canonical S");
    let l_bytes = (-Scalar::ONE).to_bytes(); // L - 1
    let mut wide = [0u16; 33];
    let mut carry = 1u16; // L = (L - 1) + 1
    for i in 0..32 {
        let v = s.as_bytes()[i] as u16 + l_bytes[i] as u16 + carry;
        wide[i] = v & 0xff;
        carry = v >> 8;
    }
    assert_eq!(carry, 0, "S + L fits in 253 bits");
    for i in 0..32 {
        sig[32 + i] = wide[i] as u8;
    }
    cases.push(holder.case("S + L".into(), message, sig, false));
    // A with a torsion component, over a signature that is valid for the clean key.
    let valid = holder.sign_with(r, r_point.compress().to_bytes(), message);
    let a_point = CompressedEdwardsY(holder.public)
        .decompress()
        .expect("a point");
    for (i, t) in EIGHT_TORSION.iter().enumerate().skip(1) {
        cases.push(Case {
            name: format!("A + torsion[{i}]"),
            message: message.to_vec(),
            key: (a_point + t).compress().to_bytes(),
            signature: valid,
            accept: false,
        });
    }
    cases
}

#[test]
fn rekeyed_edge_cases_get_one_verdict_alone_and_at_every_batch_position() {
    for case in rekeyed_cases() {
        assert_one_rule(&case);
    }
}

#[test]
fn a_key_holders_order_2_r_is_accepted_in_every_batch() {
    // The reported bug: an R with an order-2 component passed about half the batches and
    // failed alone. Now it gets one verdict, in many batches of fresh random weights.
    let holder = Holder::new(b"order 2");
    let message = b"order-2 torsion in R";
    let r = hash_to_scalar(b"order-2 nonce");
    let order_2 = EIGHT_TORSION[4];
    assert!(!order_2.is_identity() && (order_2 + order_2).is_identity());
    let r_bytes = (EdwardsPoint::mul_base(&r) + order_2).compress().to_bytes();
    let case = holder.case(
        "order-2 R".into(),
        message,
        holder.sign_with(r, r_bytes, message),
        true,
    );
    for _ in 0..8 {
        assert_one_rule(&case);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// Each of the eight torsion points added to R of a valid signature (a third party's
    /// tampering: `k` changes, so only T = 0 survives), to the key holder's R (valid), and
    /// to A (refused at load): single and batch agree, at a random position.
    #[test]
    fn torsion_added_to_r_or_a_gets_one_verdict(
        seed in any::<[u8; 32]>(),
        nonce in any::<[u8; 32]>(),
        message in proptest::collection::vec(any::<u8>(), 0..200),
        position in 0..BATCH,
    ) {
        let holder = Holder::new(&seed);
        let r = hash_to_scalar(&nonce);
        let r_point = EdwardsPoint::mul_base(&r);
        let valid = holder.sign_with(r, r_point.compress().to_bytes(), &message);
        let a_point = CompressedEdwardsY(holder.public).decompress().unwrap();
        for (i, t) in EIGHT_TORSION.iter().enumerate() {
            let tampered_r = (r_point + t).compress().to_bytes();
            let mut tampered = valid;
            tampered[..32].copy_from_slice(&tampered_r);
            let cases = [
                holder.case(format!("tampered R + T{i}"), &message, tampered, i == 0),
                holder.case(
                    format!("holder's R + T{i}"),
                    &message,
                    holder.sign_with(r, tampered_r, &message),
                    true,
                ),
                Case {
                    name: format!("A + T{i}"),
                    message: message.clone(),
                    key: (a_point + t).compress().to_bytes(),
                    signature: valid,
                    accept: i == 0,
                },
            ];
            for case in &cases {
                prop_assert_eq!(single(case), case.accept, "{} alone", case.name);
                prop_assert_eq!(batched(case, position), case.accept, "{} at {}", case.name, position);
            }
        }
    }
}
