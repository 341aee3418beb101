//! A hostile corpus: records a member state's topic may carry that the processor must
//! refuse, each with the rejection reason it must give. Deterministic from a seed: the
//! same seed and count give the same bytes (up to the clock the times are taken from).
//!
//! The kinds cover what an attacker or a broken producer sends: bit flips, truncation,
//! foreign schema fingerprints, oversized values, a key trusted for another state (on its
//! own topic and on another's), revoked, expired and unknown keys, replays, timestamps in
//! the near and far future and the distant past, huge strings, deeply nested JSON, invalid
//! UTF-8 (raw, and inside a correctly signed payload) and random bytes.

use std::collections::BTreeMap;

use ewn_model::{AvroRecord, Category, Incident, RejectReason};
use ewn_trust::IncidentSigner;

use super::cases::Rng;
use super::{HOUR, Net, incident};

/// Every kind of hostile record, with its weight in the corpus (records of kind k are
/// those whose index falls in k's share of each round of [`ROUND`]).
pub const KINDS: [(Kind, usize); 19] = [
    (Kind::BitFlipPayload, 6),
    (Kind::BitFlipSignature, 6),
    (Kind::Truncated, 6),
    (Kind::ForeignFingerprint, 6),
    (Kind::Oversized, 1),
    (Kind::KeyForAnotherTopic, 6),
    (Kind::KeyForAnotherState, 6),
    (Kind::RevokedKey, 6),
    (Kind::ExpiredKey, 6),
    (Kind::UnknownKey, 6),
    (Kind::Replay, 6),
    (Kind::NearFuture, 6),
    (Kind::FarFuture, 6),
    (Kind::Ancient, 6),
    (Kind::BeforeEpoch2000, 6),
    (Kind::HugeString, 6),
    (Kind::NestedJson, 6),
    (Kind::InvalidUtf8, 6),
    (Kind::Garbage, 6),
];

/// The sum of the weights.
pub const ROUND: usize = 6 * 18 + 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// One bit of the signed payload flipped.
    BitFlipPayload,
    /// One bit of the signature flipped.
    BitFlipSignature,
    /// A signed record cut short anywhere.
    Truncated,
    /// The single-object header names a schema this network never had.
    ForeignFingerprint,
    /// A correctly signed record over the size bound.
    Oversized,
    /// A Kyrgyz key's correct report, on the Kazakh topic.
    KeyForAnotherTopic,
    /// A Kyrgyz key signing a Kazakh report, on the Kyrgyz topic.
    KeyForAnotherState,
    /// Signed with a Kazakh key revoked an hour ago.
    RevokedKey,
    /// Signed now with a Kazakh key that expired a day ago.
    ExpiredKey,
    /// A key id the trust store does not hold.
    UnknownKey,
    /// A valid record sent again.
    Replay,
    /// Event time 200 s ahead of the clock (beyond the 60 s allowed, within the skew).
    NearFuture,
    /// Reported ten years ahead, signed now.
    FarFuture,
    /// Reported 60 days to 5 years ago, signed now.
    Ancient,
    /// Times before 2000-01-01, the earliest any field may carry.
    BeforeEpoch2000,
    /// A summary far over its bound (the record stays under the size bound).
    HugeString,
    /// Deeply nested JSON where an Avro record belongs.
    NestedJson,
    /// Invalid UTF-8 in a string of a correctly signed payload, or as the whole value.
    InvalidUtf8,
    /// Random bytes.
    Garbage,
}

impl Kind {
    /// The reason the processor must give.
    pub fn reason(self) -> RejectReason {
        match self {
            Kind::BitFlipPayload | Kind::BitFlipSignature => RejectReason::BadSignature,
            Kind::Truncated
            | Kind::ForeignFingerprint
            | Kind::NestedJson
            | Kind::InvalidUtf8
            | Kind::Garbage => RejectReason::Undecodable,
            Kind::Oversized => RejectReason::Oversized,
            Kind::KeyForAnotherTopic => RejectReason::TopicMismatch,
            Kind::KeyForAnotherState => RejectReason::KeyStateMismatch,
            Kind::RevokedKey => RejectReason::KeyRevoked,
            Kind::ExpiredKey => RejectReason::KeyExpired,
            Kind::UnknownKey => RejectReason::UnknownKey,
            Kind::Replay => RejectReason::Duplicate,
            Kind::NearFuture => RejectReason::Future,
            Kind::FarFuture => RejectReason::ClockSkew,
            Kind::Ancient => RejectReason::TooOld,
            Kind::BeforeEpoch2000 | Kind::HugeString => RejectReason::Invalid,
        }
    }

    /// The kind of the `n`th record of a corpus.
    pub fn of(n: usize) -> Kind {
        let mut slot = n % ROUND;
        for (kind, weight) in KINDS {
            if slot < weight {
                return kind;
            }
            slot -= weight;
        }
        unreachable!("the weights sum to ROUND")
    }
}

/// One hostile record: where it goes and what it must be refused for.
pub struct Hostile {
    pub kind: Kind,
    /// The member state whose topic it goes to (upper case).
    pub topic_state: &'static str,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

/// Two KZ keys of the trust store besides the network's: `revoked` was revoked before
/// `now`, `expired` expired before it.
pub struct Signers<'a> {
    pub revoked: &'a mut IncidentSigner,
    pub expired: &'a mut IncidentSigner,
}

/// The largest value the processor accepts by default (`trust.max_record_bytes`).
pub const MAX_RECORD_BYTES: usize = 64 * 1024;

/// `count` hostile records from `seed`, their times taken around `now` (ms), signed with
/// `net`'s KZ and KG keys and `signers`. `replayed` is a valid KZ record (key, value) sent
/// before the corpus; every `Replay` is a copy of it.
pub fn corpus(
    seed: u64,
    count: usize,
    now: i64,
    net: &mut Net,
    signers: Signers<'_>,
    replayed: (&[u8], &[u8]),
) -> Vec<Hostile> {
    let Signers { revoked, expired } = signers;
    let mut rng = Rng(seed.max(1));
    let mut out = Vec::with_capacity(count);
    for n in 0..count {
        let kind = Kind::of(n);
        let id = 5_000_000 + n as u64;
        // A plain, valid Kazakh report a minute old, unique per record.
        let report = |state: &str| {
            let mut i = incident(id, state, now - 60_000, Category::Other, &["hostile"]);
            i.reported_at = now - 60_000;
            i
        };
        let signed = |signer: &mut IncidentSigner, i: &Incident, at: i64| {
            signer.sign(i, at).unwrap().to_avro().unwrap()
        };
        let mut topic_state = "KZ";
        let mut key = format!("h{n}").into_bytes();
        let value = match kind {
            Kind::BitFlipPayload => {
                let mut env = net.signer("KZ").sign(&report("KZ"), now).unwrap();
                let at = rng.below(env.payload.len());
                env.payload[at] ^= 1 << rng.below(8);
                env.to_avro().unwrap()
            }
            Kind::BitFlipSignature => {
                let mut env = net.signer("KZ").sign(&report("KZ"), now).unwrap();
                env.signature[rng.below(64)] ^= 1 << rng.below(8);
                env.to_avro().unwrap()
            }
            Kind::Truncated => {
                let whole = signed(net.signer("KZ"), &report("KZ"), now);
                whole[..1 + rng.below(whole.len() - 1)].to_vec()
            }
            Kind::ForeignFingerprint => {
                let mut v = signed(net.signer("KZ"), &report("KZ"), now);
                let fingerprint = rng.next().to_le_bytes();
                v[2..10].copy_from_slice(&fingerprint);
                v
            }
            Kind::Oversized => {
                let mut i = report("KZ");
                i.summary = "x".repeat(MAX_RECORD_BYTES + rng.below(4096));
                let payload = i.to_avro().unwrap();
                net.signer("KZ")
                    .sign_payload(payload, now)
                    .to_avro()
                    .unwrap()
            }
            Kind::KeyForAnotherTopic => signed(net.signer("KG"), &report("KG"), now),
            Kind::KeyForAnotherState => {
                topic_state = "KG";
                signed(net.signer("KG"), &report("KZ"), now)
            }
            Kind::RevokedKey => signed(revoked, &report("KZ"), now),
            Kind::ExpiredKey => signed(expired, &report("KZ"), now),
            Kind::UnknownKey => {
                let mut env = net.signer("KZ").sign(&report("KZ"), now).unwrap();
                env.key_id = format!("zz-{:x}", rng.next());
                env.to_avro().unwrap()
            }
            Kind::Replay => {
                key = replayed.0.to_vec();
                replayed.1.to_vec()
            }
            Kind::NearFuture => {
                let mut i = report("KZ");
                i.occurred_at = now + 200_000;
                i.reported_at = now + 200_000;
                signed(net.signer("KZ"), &i, now + 200_000)
            }
            Kind::FarFuture => {
                let mut i = report("KZ");
                i.occurred_at = now + 10 * 365 * 24 * HOUR;
                i.reported_at = i.occurred_at;
                signed(net.signer("KZ"), &i, now)
            }
            Kind::Ancient => {
                let mut i = report("KZ");
                let age = 60 * 24 * HOUR + (rng.next() % (5 * 365 * 24 * HOUR as u64)) as i64;
                i.occurred_at = now - age;
                i.reported_at = now - age;
                signed(net.signer("KZ"), &i, now)
            }
            Kind::BeforeEpoch2000 => {
                let mut i = report("KZ");
                i.occurred_at = [i64::MIN, -1, 0, 946_684_799_999][rng.below(4)];
                signed(net.signer("KZ"), &i, now)
            }
            Kind::HugeString => {
                let mut i = report("KZ");
                let huge = 4096 + rng.below(32 * 1024);
                match rng.below(3) {
                    0 => i.summary = "s".repeat(huge),
                    1 => i.reporter.agency = "A".repeat(huge),
                    _ => {
                        i.attributes.insert("note".into(), "n".repeat(huge));
                    }
                }
                signed(net.signer("KZ"), &i, now)
            }
            Kind::NestedJson => {
                // At most 6,000 levels: 36 KB, under the size bound.
                let depth = 1000 + rng.below(5000);
                let (open, close) = if rng.below(2) == 0 {
                    ("[", "]")
                } else {
                    ("{\"a\":", "}")
                };
                format!("{}1{}", open.repeat(depth), close.repeat(depth)).into_bytes()
            }
            Kind::InvalidUtf8 => {
                if rng.below(2) == 0 {
                    // Valid signature over a payload whose summary is not UTF-8.
                    let mut i = report("KZ");
                    i.summary = "~".repeat(16);
                    let mut payload = i.to_avro().unwrap();
                    let at = payload.windows(16).position(|w| w == [b'~'; 16]).unwrap();
                    payload[at] = 0xff;
                    payload[at + 1 + rng.below(15)] = 0xc0;
                    net.signer("KZ")
                        .sign_payload(payload, now)
                        .to_avro()
                        .unwrap()
                } else {
                    let mut v = vec![0xc3, 0x28, 0xa0, 0xa1, 0xe2, 0x28, 0xa1, 0xf0, 0x28];
                    v.extend((0..rng.below(256)).map(|_| 0x80 | rng.next() as u8));
                    v
                }
            }
            Kind::Garbage => (0..1 + rng.below(2048)).map(|_| rng.next() as u8).collect(),
        };
        out.push(Hostile {
            kind,
            topic_state,
            key,
            value,
        });
    }
    out
}

/// How many records of a corpus of `count` must be rejected for each reason (lower-case
/// codes, as the metric labels and `Rejection::reason.code()` give them).
pub fn expected(count: usize) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for n in 0..count {
        *m.entry(Kind::of(n).reason().code()).or_default() += 1;
    }
    m
}
