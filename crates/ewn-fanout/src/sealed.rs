//! The record format of `<prefix>subscriptions`: webhook secrets sealed, every record
//! authenticated, under the fan-out key's `subscriptions` subkey.
//!
//! Whoever can write the topic must not be able to add a subscriber, raise a clearance or
//! point a webhook elsewhere; whoever can read it must not learn a webhook secret. Both hold
//! as long as the fan-out key stays with the fan-out instances.
//!
//! # Format (version 1)
//!
//! The record key is the subscription id (UTF-8), as before. The value is
//!
//! ```text
//! body ‖ tag (32 bytes) ‖ "EWNS" ‖ kind (1 byte)
//! ```
//!
//! - kind `0x01`, a subscription: `body` is the `Subscription` in Avro single-object
//!   encoding (`C3 01`, fingerprint, datum), exactly as `schemas/Subscription.avsc` says, so
//!   a schema tool that reads one datum after the header (and ignores what follows it)
//!   still reads the record; `ewn tail` strips the trailer. The `webhook_secret` field
//!   holds `sealed:v1:` + base64url (no padding) of `nonce (24) ‖ ciphertext ‖ Poly1305 tag
//!   (16)`: XChaCha20-Poly1305 of the `whsec_` text, random nonce, associated data
//!   `"ewn/subscriptions/secret/v1\0" ‖ subscription id`, so a sealed secret copied into
//!   another subscription's record does not open.
//! - kind `0x02`, a deletion: `body` is the deletion time, milliseconds since the epoch,
//!   8 bytes big-endian.
//! - `tag` = HMAC-SHA256 over `"ewn/subscriptions/record/v1\0" ‖ kind ‖ u32 BE length of
//!   the record key ‖ record key ‖ body`, so a record cannot be moved to another key or
//!   turned from one kind into the other, and no byte of it can change.
//!
//! The AEAD key and the MAC key are two HMAC-SHA256 derivations (labels `aead` and `mac`)
//! of the `subscriptions` subkey ([`crate::keys::Purpose::Subscriptions`]); the topic name is
//! not bound, so renaming the prefix (copying the topic) keeps the records valid.
//!
//! # Deletions and tombstones
//!
//! A Kafka tombstone (a key without a value) carries nothing to authenticate, so it never
//! removes a subscription. Deleting one writes a sealed *deletion* record (kind `0x02`),
//! which removes it on every instance, then a tombstone, which lets compaction reclaim the
//! key in the end. A tombstone is therefore accepted only as a no-op, for an id not in
//! force; one for a subscription in force is refused (reason `tombstone`) and counted.
//! Limit: such a forged tombstone still lets compaction drop the subscription's record from
//! the topic later, so an instance started after that compaction no longer has it (one
//! configured in `[[subscriptions]]` is re-seeded at start). Kafka ACLs must keep writers
//! of the topic to the fan-out's principal (deploy/README.md, "Topics and ACLs"); the counter tells when
//! someone else wrote.
//!
//! A deletion is remembered (by id and time) while the instance runs, so an older
//! authentic record replayed after it does not bring the subscription back; within a run
//! an older record never replaces a newer one either ([`SubscriptionSet::apply`]).
//!
//! # Records of the previous version
//!
//! Plain Avro records (secrets in clear, nothing authenticated) are refused, reason
//! `unsealed`, and counted. Migration: the `[[subscriptions]]` of the configuration are
//! written again, sealed, at start (they differ from nothing held); subscriptions made
//! through the admin API must be PUT again (with their secret). Once done, remove the
//! old records' secrets from the topic for good by letting compaction run (the sealed
//! records supersede them).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use ewn_model::{AvroRecord, Subscription};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::keys::{FanoutKey, Purpose};
use crate::subscriptions::SubscriptionSet;

const MAGIC: &[u8; 4] = b"EWNS";
const KIND_SUBSCRIPTION: u8 = 0x01;
const KIND_DELETION: u8 = 0x02;
const TAG_LEN: usize = 32;
const TRAILER_LEN: usize = TAG_LEN + MAGIC.len() + 1;
const NONCE_LEN: usize = 24;
const SECRET_PREFIX: &str = "sealed:v1:";
const SECRET_AD: &[u8] = b"ewn/subscriptions/secret/v1\0";
const RECORD_DOMAIN: &[u8] = b"ewn/subscriptions/record/v1\0";

/// Why a record of the topic was not applied. A closed set: the values of the
/// `reason` label of `ewn_fanout_subscription_records_refused_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// A plain record, as the previous version wrote (or anyone without the key).
    Unsealed,
    /// Neither a sealed record nor a plain one: bytes that make no sense.
    Malformed,
    /// Sealed, but the tag does not verify: changed, moved to another key, or sealed under
    /// another fan-out key.
    Forged,
    /// Authentic, yet the subscription inside names another id than the record key.
    WrongId,
    /// The webhook secret is not sealed or does not open for this subscription.
    Secret,
    /// A tombstone for a subscription in force: unauthenticated, so not applied.
    Tombstone,
    /// Authentic, but a new subscription past `fanout.max_subscriptions`.
    OverCapacity,
}

impl Refused {
    pub const ALL: [Refused; 7] = [
        Refused::Unsealed,
        Refused::Malformed,
        Refused::Forged,
        Refused::WrongId,
        Refused::Secret,
        Refused::Tombstone,
        Refused::OverCapacity,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Refused::Unsealed => "unsealed",
            Refused::Malformed => "malformed",
            Refused::Forged => "forged",
            Refused::WrongId => "wrong_id",
            Refused::Secret => "secret",
            Refused::Tombstone => "tombstone",
            Refused::OverCapacity => "over_capacity",
        }
    }
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// The two keys of the format, derived from the fan-out key. `Debug` shows nothing.
#[derive(Clone)]
pub struct SealKey {
    aead: Zeroizing<[u8; 32]>,
    mac: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealKey(..)")
    }
}

impl SealKey {
    pub fn new(key: &FanoutKey) -> SealKey {
        let sub = key.subkey(Purpose::Subscriptions);
        let derive = |label: &[u8]| {
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&sub[..])
                .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
            mac.update(label);
            Zeroizing::new(<[u8; 32]>::from(mac.finalize().into_bytes()))
        };
        SealKey {
            aead: derive(b"aead"),
            mac: derive(b"mac"),
        }
    }

    fn tag(&self, kind: u8, record_key: &[u8], body: &[u8]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.mac[..])
            .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
        mac.update(RECORD_DOMAIN);
        mac.update(&[kind]);
        mac.update(&(record_key.len() as u32).to_be_bytes());
        mac.update(record_key);
        mac.update(body);
        mac
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new((&*self.aead).into())
    }

    fn seal_secret(&self, id: &str, secret: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut nonce);
        let ad = [SECRET_AD, id.as_bytes()].concat();
        let sealed = self
            .cipher()
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: secret.as_bytes(),
                    aad: &ad,
                },
            )
            .unwrap_or_else(|_| unreachable!("XChaCha20-Poly1305 encrypts any short message"));
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        format!("{SECRET_PREFIX}{}", URL_SAFE_NO_PAD.encode(out))
    }

    fn open_secret(&self, id: &str, sealed: &str) -> Option<String> {
        let raw = URL_SAFE_NO_PAD
            .decode(sealed.strip_prefix(SECRET_PREFIX)?)
            .ok()?;
        if raw.len() < NONCE_LEN + 16 {
            return None;
        }
        let (nonce, ciphertext) = raw.split_at(NONCE_LEN);
        let ad = [SECRET_AD, id.as_bytes()].concat();
        let plain = Zeroizing::new(
            self.cipher()
                .decrypt(
                    XNonce::from_slice(nonce),
                    Payload {
                        msg: ciphertext,
                        aad: &ad,
                    },
                )
                .ok()?,
        );
        String::from_utf8(plain.to_vec()).ok()
    }
}

/// What an authentic record says.
#[derive(Debug, PartialEq)]
pub enum Opened {
    Subscription(Box<Subscription>),
    Deleted { at: i64 },
}

fn with_trailer(mut body: Vec<u8>, tag: Hmac<Sha256>, kind: u8) -> Vec<u8> {
    body.extend_from_slice(&tag.finalize().into_bytes());
    body.extend_from_slice(MAGIC);
    body.push(kind);
    body
}

/// The value of a subscription's record: its secret sealed, the whole authenticated.
pub fn seal(sub: &Subscription, key: &SealKey) -> crate::Result<Vec<u8>> {
    let mut wire = sub.clone();
    wire.webhook_secret = sub
        .webhook_secret
        .as_deref()
        .map(|s| key.seal_secret(&sub.id, s));
    let body = wire.to_avro()?;
    let tag = key.tag(KIND_SUBSCRIPTION, sub.id.as_bytes(), &body);
    Ok(with_trailer(body, tag, KIND_SUBSCRIPTION))
}

/// The value of a deletion record.
pub fn seal_deletion(id: &str, at: i64, key: &SealKey) -> Vec<u8> {
    let body = at.to_be_bytes().to_vec();
    let tag = key.tag(KIND_DELETION, id.as_bytes(), &body);
    with_trailer(body, tag, KIND_DELETION)
}

/// The body of a sealed value, unverified (for display by `ewn tail`); `None` when the
/// value has no trailer.
pub fn body(value: &[u8]) -> Option<&[u8]> {
    let n = value.len().checked_sub(TRAILER_LEN)?;
    (value[n + TAG_LEN..n + TAG_LEN + MAGIC.len()] == MAGIC[..]).then(|| &value[..n])
}

/// Verifies a record's value and opens it: the subscription with its secret in clear, or
/// a deletion.
pub fn open(record_key: &[u8], value: &[u8], key: &SealKey) -> Result<Opened, Refused> {
    let Some(body) = body(value) else {
        return Err(match Subscription::from_avro(value) {
            Ok(_) => Refused::Unsealed,
            Err(_) => Refused::Malformed,
        });
    };
    let n = body.len();
    let tag = &value[n..n + TAG_LEN];
    let kind = value[value.len() - 1];
    key.tag(kind, record_key, body)
        .verify_slice(tag)
        .map_err(|_| Refused::Forged)?;
    let id = std::str::from_utf8(record_key).map_err(|_| Refused::WrongId)?;
    match kind {
        KIND_SUBSCRIPTION => {
            // Authentic bytes that do not decode were sealed by a newer schema or a bug.
            let mut sub = Subscription::from_avro(body).map_err(|_| Refused::Malformed)?;
            if sub.id != id {
                return Err(Refused::WrongId);
            }
            if let Some(sealed) = sub.webhook_secret.take() {
                sub.webhook_secret = Some(key.open_secret(id, &sealed).ok_or(Refused::Secret)?);
            }
            Ok(Opened::Subscription(Box::new(sub)))
        }
        KIND_DELETION => {
            let at = <[u8; 8]>::try_from(body).map_err(|_| Refused::Malformed)?;
            Ok(Opened::Deleted {
                at: i64::from_be_bytes(at),
            })
        }
        _ => Err(Refused::Malformed),
    }
}

/// Applies one record of the topic to the set, or says why not (nothing is applied then).
pub fn apply(
    set: &SubscriptionSet,
    record_key: Option<&[u8]>,
    value: Option<&[u8]>,
    key: &SealKey,
) -> Result<(), Refused> {
    let record_key = record_key.unwrap_or_default();
    let Some(value) = value else {
        let id = std::str::from_utf8(record_key).map_err(|_| Refused::Malformed)?;
        return match set.get(id) {
            Some(_) => Err(Refused::Tombstone),
            None => Ok(()),
        };
    };
    let id = std::str::from_utf8(record_key).map_err(|_| Refused::WrongId);
    match open(record_key, value, key)? {
        Opened::Subscription(sub) => set
            .apply(&sub.id.clone(), Some(*sub))
            .map_err(|_| Refused::OverCapacity)?,
        Opened::Deleted { at } => set.delete(id?, at),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use ewn_model::{Channel, Format, Level, Tlp};

    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn sub(id: &str) -> Subscription {
        Subscription {
            id: id.into(),
            agency: "desk".into(),
            clearance: Tlp::Amber,
            min_level: Level::Low,
            categories: vec![],
            states: vec![],
            areas: vec![],
            rules: vec![],
            format: Format::Json,
            channel: Channel::Webhook,
            webhook_url: Some("https://desk.example/hook".into()),
            webhook_secret: Some(SECRET.into()),
            redacted_above_clearance: false,
            escalation: vec![],
            updated_at: 1_700_000_000_000,
            disabled_at: None,
            disabled_reason: None,
            languages: vec![],
        }
    }

    fn key(n: u8) -> SealKey {
        SealKey::new(&FanoutKey::from_bytes([n; 32]))
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn a_new_subscription_past_the_bound_is_refused_and_held_ones_still_change() {
        let k = key(1);
        let set = SubscriptionSet::new(2);
        let put = |s: &Subscription| {
            let value = seal(s, &k).unwrap();
            apply(&set, Some(s.id.as_bytes()), Some(&value), &k)
        };
        assert_eq!(put(&sub("a")), Ok(()));
        assert_eq!(put(&sub("b")), Ok(()));
        assert!(set.is_full_for("c") && !set.is_full_for("a"));
        assert_eq!(put(&sub("c")), Err(Refused::OverCapacity));
        assert_eq!(Refused::OverCapacity.label(), "over_capacity");
        assert!(set.get("c").is_none() && set.len() == 2);
        let mut changed = sub("a");
        changed.agency = "other desk".into();
        changed.updated_at += 1;
        assert_eq!(put(&changed), Ok(()));
        assert_eq!(set.get("a").unwrap().agency, "other desk");
        // A deletion makes room.
        let gone = seal_deletion("b", changed.updated_at + 1, &k);
        assert_eq!(apply(&set, Some(b"b"), Some(&gone), &k), Ok(()));
        assert_eq!(put(&sub("c")), Ok(()));
    }

    #[test]
    fn remembered_deletions_are_bounded_like_the_set() {
        let set = SubscriptionSet::new(2);
        for (n, id) in ["a", "b", "c"].into_iter().enumerate() {
            set.delete(id, 10 + n as i64);
        }
        // The oldest deletion ("a", at 10) is forgotten: a record for it applies again.
        assert_eq!(set.apply("a", Some(sub("a"))), Ok(()));
        let mut older = sub("c");
        older.updated_at = 12;
        assert_eq!(set.apply("c", Some(older)), Ok(()));
        assert!(set.get("a").is_some() && set.get("c").is_none());
    }

    #[test]
    fn a_sealed_record_round_trips_and_hides_the_secret() {
        let k = key(1);
        let value = seal(&sub("s1"), &k).unwrap();
        assert!(!contains(&value, SECRET.as_bytes()));
        assert!(!contains(&value, &SECRET.as_bytes()[6..]));
        assert_eq!(
            open(b"s1", &value, &k),
            Ok(Opened::Subscription(Box::new(sub("s1"))))
        );
        // The body is the plain single-object Avro of the record as sealed.
        let body = body(&value).unwrap();
        let wire = Subscription::from_avro(body).unwrap();
        assert!(wire.webhook_secret.unwrap().starts_with(SECRET_PREFIX));
        // Sealing twice gives different nonces.
        assert_ne!(value, seal(&sub("s1"), &k).unwrap());
        let none = Subscription {
            webhook_secret: None,
            ..sub("s2")
        };
        assert_eq!(
            open(b"s2", &seal(&none, &k).unwrap(), &k),
            Ok(Opened::Subscription(Box::new(none)))
        );
    }

    #[test]
    fn every_changed_byte_is_refused() {
        let k = key(1);
        for value in [seal(&sub("s1"), &k).unwrap(), seal_deletion("s1", 7, &k)] {
            for i in 0..value.len() {
                for flip in [0x01, 0x80] {
                    let mut v = value.clone();
                    v[i] ^= flip;
                    assert!(
                        open(b"s1", &v, &k).is_err(),
                        "byte {i} ^ {flip:#x} accepted"
                    );
                }
            }
            assert!(open(b"s1", &value[..value.len() - 1], &k).is_err());
            assert!(open(b"s1", &[&value[..], b"x"].concat(), &k).is_err());
        }
    }

    #[test]
    fn wrong_key_other_record_key_and_plain_records_are_refused() {
        let value = seal(&sub("s1"), &key(1)).unwrap();
        assert_eq!(open(b"s1", &value, &key(2)), Err(Refused::Forged));
        assert_eq!(open(b"s2", &value, &key(1)), Err(Refused::Forged));
        let plain = sub("s1").to_avro().unwrap();
        assert_eq!(open(b"s1", &plain, &key(1)), Err(Refused::Unsealed));
        assert_eq!(open(b"s1", b"junk", &key(1)), Err(Refused::Malformed));
        // A deletion's tag does not pass for a subscription's, nor for another id.
        let del = seal_deletion("s1", 1, &key(1));
        assert_eq!(open(b"s2", &del, &key(1)), Err(Refused::Forged));
        let mut as_sub = del.clone();
        *as_sub.last_mut().unwrap() = KIND_SUBSCRIPTION;
        assert_eq!(open(b"s1", &as_sub, &key(1)), Err(Refused::Forged));
    }

    #[test]
    fn a_secret_moved_to_another_subscription_does_not_open() {
        // Even someone holding the key, sealing a record around another subscription's
        // sealed secret, gets a record that is refused.
        let k = key(1);
        let a = Subscription::from_avro(body(&seal(&sub("a"), &k).unwrap()).unwrap()).unwrap();
        let moved = Subscription {
            webhook_secret: a.webhook_secret,
            ..sub("b")
        };
        let body = moved.to_avro().unwrap();
        let tag = k.tag(KIND_SUBSCRIPTION, b"b", &body);
        let value = with_trailer(body, tag, KIND_SUBSCRIPTION);
        assert_eq!(open(b"b", &value, &k), Err(Refused::Secret));
        // And a record whose id differs from its key.
        let body = sub("a").to_avro().unwrap();
        let tag = k.tag(KIND_SUBSCRIPTION, b"b", &body);
        let value = with_trailer(body, tag, KIND_SUBSCRIPTION);
        assert_eq!(open(b"b", &value, &k), Err(Refused::WrongId));
    }

    #[test]
    fn tombstones_never_remove_and_deletions_are_remembered() {
        let (k, set) = (key(1), SubscriptionSet::default());
        let first = seal(&sub("s1"), &k).unwrap();
        assert_eq!(apply(&set, Some(b"s1"), Some(&first), &k), Ok(()));
        assert_eq!(apply(&set, Some(b"s1"), None, &k), Err(Refused::Tombstone));
        assert_eq!(set.len(), 1);
        let at = sub("s1").updated_at + 1;
        let del = seal_deletion("s1", at, &k);
        assert_eq!(apply(&set, Some(b"s1"), Some(&del), &k), Ok(()));
        assert!(set.is_empty());
        assert_eq!(apply(&set, Some(b"s1"), None, &k), Ok(()));
        // The old record replayed does not bring it back; a newer one does.
        assert_eq!(apply(&set, Some(b"s1"), Some(&first), &k), Ok(()));
        assert!(set.is_empty());
        let newer = Subscription {
            updated_at: at + 1,
            ..sub("s1")
        };
        let newer = seal(&newer, &k).unwrap();
        assert_eq!(apply(&set, Some(b"s1"), Some(&newer), &k), Ok(()));
        assert_eq!(set.len(), 1);
        let forged = seal(&sub("s9"), &key(2)).unwrap();
        assert_eq!(
            apply(&set, Some(b"s9"), Some(&forged), &k),
            Err(Refused::Forged)
        );
        assert!(set.get("s9").is_none());
    }

    #[test]
    fn labels_are_distinct() {
        let labels: std::collections::HashSet<_> = Refused::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(labels.len(), Refused::ALL.len());
    }
}
