//! The records of `schemas/`. Field order, names and enum symbol order must match the schema
//! files exactly (the codec maps enum variants by index); `tests/schema_conformance` checks it.
//!
//! Timestamps are Avro `timestamp-millis`: milliseconds since the Unix epoch, UTC.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A closed set of symbols mirrored from an Avro enum, with its text form (also used as a
/// metric label value), in schema order.
macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// Every symbol, in schema order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownSymbol;
            fn from_str(s: &str) -> Result<Self, UnknownSymbol> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownSymbol { kind: stringify!($name), value: s.chars().take(40).collect() }),
                }
            }
        }
    };
}

/// A text that is not one of an enum's symbols.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} `{value}`")]
pub struct UnknownSymbol {
    pub kind: &'static str,
    pub value: String,
}

wire_enum!(Category {
    WatchlistHit = "WATCHLIST_HIT",
    SuspiciousCrossing = "SUSPICIOUS_CROSSING",
    DocumentFraud = "DOCUMENT_FRAUD",
    WeaponsSeizure = "WEAPONS_SEIZURE",
    ExplosivesPrecursor = "EXPLOSIVES_PRECURSOR",
    FtfReturnee = "FTF_RETURNEE",
    AttackPlanning = "ATTACK_PLANNING",
    Cyber = "CYBER",
    Other = "OTHER",
});

wire_enum!(
    /// Ordered: `Low < Medium < High < Critical`.
    Level { Low = "LOW", Medium = "MEDIUM", High = "HIGH", Critical = "CRITICAL" }
);

wire_enum!(
    /// Admiralty/NATO source reliability, `A` (completely reliable) .. `F` (cannot be judged).
    SourceReliability { A = "A", B = "B", C = "C", D = "D", E = "E", F = "F" }
);

wire_enum!(
    /// FIRST TLP 2.0, ordered from least to most restricted.
    Tlp { Clear = "CLEAR", Green = "GREEN", Amber = "AMBER", AmberStrict = "AMBER_STRICT", Red = "RED" }
);

wire_enum!(Direction { Entry = "ENTRY", Exit = "EXIT" });

wire_enum!(SubjectKind {
    Person = "PERSON",
    Vehicle = "VEHICLE",
    Document = "DOCUMENT",
    Phone = "PHONE",
    Organisation = "ORGANISATION",
});

wire_enum!(MsgType { Alert = "ALERT", Update = "UPDATE", Cancel = "CANCEL" });

wire_enum!(
    /// Why a record was rejected: a closed set, reused as the `reason` metric label.
    RejectReason {
        Undecodable = "UNDECODABLE",
        Oversized = "OVERSIZED",
        UnknownKey = "UNKNOWN_KEY",
        BadSignature = "BAD_SIGNATURE",
        KeyStateMismatch = "KEY_STATE_MISMATCH",
        TopicMismatch = "TOPIC_MISMATCH",
        KeyRevoked = "KEY_REVOKED",
        KeyExpired = "KEY_EXPIRED",
        Duplicate = "DUPLICATE",
        ClockSkew = "CLOCK_SKEW",
        TooOld = "TOO_OLD",
        Invalid = "INVALID",
        /// Verified, but its event time was behind the watermark by more than the allowed
        /// lateness: not merged into correlation state.
        Late = "LATE",
        /// Verified, but its event time is further ahead of the processor's clock than the
        /// allowed future skew: a clock that runs ahead may not steer correlation.
        Future = "FUTURE",
        /// Verified, but not merged: the correlation key's state budget was full (the
        /// episode's alert says so).
        StateLimit = "STATE_LIMIT",
        /// The signing time is before the key's `not_before`: a key is never used before it
        /// is valid (distinct from `KEY_EXPIRED`, which is at or after `not_after`).
        KeyNotYetValid = "KEY_NOT_YET_VALID",
    }
);

wire_enum!(Channel { Webhook = "WEBHOOK", Stream = "STREAM", Console = "CONSOLE" });

wire_enum!(Format { Json = "JSON", Cap = "CAP" });

wire_enum!(DeliveryOutcome {
    Delivered = "DELIVERED",
    DeadLetter = "DEAD_LETTER",
    EndpointGone = "ENDPOINT_GONE",
});

wire_enum!(AckVia { Api = "API", Console = "CONSOLE", Cap = "CAP" });

wire_enum!(CaseDecision { Approve = "APPROVE", Decline = "DECLINE" });

impl RejectReason {
    /// The lower-case code printed by tools and used as a metric label.
    pub fn code(self) -> String {
        self.as_str().to_ascii_lowercase()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reporter {
    pub state: String,
    pub agency: String,
    pub post_id: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Location {
    pub lat: f64,
    pub lon: f64,
    pub area: String,
    pub crossing: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subject {
    pub kind: SubjectKind,
    /// Blinded identifier: hex(HMAC-SHA256(blinding key, kind ":" normalised id)).
    #[serde(rename = "ref")]
    pub subject_ref: String,
    pub watchlist: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    pub incident_id: String,
    pub occurred_at: i64,
    pub reported_at: i64,
    pub reporter: Reporter,
    pub category: Category,
    pub severity: Level,
    pub source_reliability: SourceReliability,
    pub info_credibility: i32,
    pub tlp: Tlp,
    pub location: Location,
    pub direction: Option<Direction>,
    pub subjects: Vec<Subject>,
    pub summary: String,
    pub attributes: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedIncident {
    pub key_id: String,
    #[serde(with = "apache_avro::serde::fixed")]
    pub signature: [u8; 64],
    #[serde(with = "apache_avro::serde::bytes")]
    pub payload: Vec<u8>,
    /// When the key signed (epoch ms, the signer's clock), covered by the signature: key
    /// validity is judged at this time. `None` only in envelopes written before the field
    /// existed (signed as `"ewn/incident/v1" || payload`), whose signing time is taken to be
    /// the payload's `reported_at`, the former rule.
    #[serde(default)]
    pub signed_at: Option<i64>,
}

/// One post a gateway serves, as its heartbeat reports it (`schemas/Heartbeat.avsc`). Ages
/// are measured on the gateway's clock at the heartbeat's `sent_at`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostStatus {
    pub post_id: String,
    /// Reports accepted from the post and not yet confirmed by the broker.
    pub spool_depth: i64,
    pub spool_bytes: i64,
    /// Age of the oldest report not yet confirmed; `None` when none is waiting.
    #[serde(default)]
    pub oldest_unsent_age_ms: Option<i64>,
    /// How long before `sent_at` the gateway last heard from the post (0 for a gateway
    /// running at the post itself); `None` when it has not heard from it since it started.
    #[serde(default)]
    pub last_contact_age_ms: Option<i64>,
}

/// A gateway's sign of life (`schemas/Heartbeat.avsc`), carried in a [`SignedHeartbeat`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub state: String,
    pub gateway_id: String,
    pub instance_id: String,
    pub sequence: i64,
    pub sent_at: i64,
    pub interval_ms: i64,
    pub posts: Vec<PostStatus>,
}

/// The envelope on `<prefix>heartbeats.<cc>`: signed by the state's key over
/// `"ewn/heartbeat/v1" || signed_at || payload`, a domain no incident is signed in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedHeartbeat {
    pub key_id: String,
    #[serde(with = "apache_avro::serde::fixed")]
    pub signature: [u8; 64],
    #[serde(with = "apache_avro::serde::bytes")]
    pub payload: Vec<u8>,
    pub signed_at: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ScoreReason {
    pub factor: String,
    pub contribution: i32,
    pub detail: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct GeoPoint {
    pub lat: f64,
    pub lon: f64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    pub incident_id: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key_id: String,
    #[serde(with = "apache_avro::serde::fixed")]
    pub signature: [u8; 64],
    #[serde(with = "apache_avro::serde::fixed")]
    pub payload_sha256: [u8; 32],
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub alert_id: String,
    pub msg_type: MsgType,
    pub references: Vec<String>,
    pub rule: String,
    pub level: Level,
    pub score: i32,
    pub reasons: Vec<ScoreReason>,
    pub key: String,
    pub window_start: i64,
    pub window_end: i64,
    pub incident_ids: Vec<String>,
    pub states: Vec<String>,
    pub categories: Vec<Category>,
    pub areas: Vec<String>,
    pub points: Vec<GeoPoint>,
    pub tlp: Tlp,
    pub named_agencies: Vec<String>,
    pub created_at: i64,
    pub evidence: Vec<Evidence>,
    pub incident_count: i32,
    #[serde(with = "apache_avro::serde::bytes")]
    pub incident_digest: Vec<u8>,
    pub limits_reached: Vec<String>,
    pub refused_count: i32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    pub reason: RejectReason,
    pub detail: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key_id: Option<String>,
    pub incident_id: Option<String>,
    pub record_size: i64,
    #[serde(with = "apache_avro::serde::fixed")]
    pub record_sha256: [u8; 32],
    pub rejected_at: i64,
    pub rejected_by: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryReceipt {
    pub alert_id: String,
    pub subscription_id: String,
    pub agency: String,
    pub channel: Channel,
    pub format: Format,
    pub outcome: DeliveryOutcome,
    pub tlp: Tlp,
    pub redacted: bool,
    pub escalation_step: i32,
    pub webhook_id: Option<String>,
    pub attempts: i32,
    pub status_code: Option<i32>,
    pub error: Option<String>,
    pub first_attempt_at: i64,
    pub completed_at: i64,
}

/// A webhook delivery parked on `<prefix>retries` (see `schemas/DeliveryRetry.avsc`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRetry {
    pub subscription_id: String,
    pub escalation_step: i32,
    pub attempts: i32,
    pub first_attempt_at: i64,
    pub parked_at: i64,
    pub last_error: Option<String>,
    #[serde(with = "apache_avro::serde::bytes")]
    pub alert: Vec<u8>,
    #[serde(with = "apache_avro::serde::bytes")]
    pub mac: Vec<u8>,
}

/// One administrative act on `<prefix>audit`, signed by the service that did it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub record_id: String,
    pub service: String,
    pub instance_id: String,
    pub actor: String,
    /// One of [`AuditRecord::ACTIONS`].
    pub action: String,
    pub object: String,
    pub at: i64,
    pub before_sha256: Option<String>,
    pub after_sha256: Option<String>,
    pub detail: Option<String>,
    pub key_id: String,
    pub signed_at: i64,
    #[serde(with = "apache_avro::serde::fixed")]
    pub signature: [u8; 64],
}

impl AuditRecord {
    /// The closed set of actions, also the `action` label of the audit metrics.
    pub const ACTIONS: [&'static str; 13] = [
        "subscription_created",
        "subscription_changed",
        "subscription_disabled",
        "subscription_deleted",
        "ack",
        "escalation",
        "trust_store_reloaded",
        "rules_reloaded",
        // An oversight token read receipts or the audit log (the fan-out's oversight API).
        "oversight_read",
        "case_requested",
        "case_approved",
        "case_declined",
        "case_opened",
    ];
}

/// A desk's request for the raw details of one incident, on `<prefix>requests.<cc>`
/// (`schemas/CaseRequest.avsc`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseRequest {
    pub request_id: String,
    pub alert_id: String,
    pub incident_id: String,
    pub incident_sha256: String,
    pub state: String,
    pub agency: String,
    pub subscription_id: String,
    pub requester: String,
    pub justification: String,
    pub legal_basis: String,
    pub requested_at: i64,
    pub key_id: String,
    pub signed_at: i64,
    #[serde(with = "apache_avro::serde::fixed")]
    pub signature: [u8; 64],
}

/// The originating state's answer, on `<prefix>responses` (`schemas/CaseResponse.avsc`,
/// version 2). Every desk may read that topic, so nothing here names an alert or an
/// incident: the alert and incident ids, a decline's reason and an approval's details are in
/// the sealed part (`ciphertext`), which only the requesting agency opens
/// (`ewn_trust::case::SealedAnswer`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseResponse {
    pub request_id: String,
    pub state: String,
    pub agency: String,
    pub decision: CaseDecision,
    pub recipient_key_id: Option<String>,
    #[serde(with = "apache_avro::serde::bytes_opt")]
    pub encapsulated_key: Option<Vec<u8>>,
    #[serde(with = "apache_avro::serde::bytes_opt")]
    pub ciphertext: Option<Vec<u8>>,
    pub decided_by: String,
    pub decided_at: i64,
    pub key_id: String,
    pub signed_at: i64,
    #[serde(with = "apache_avro::serde::fixed")]
    pub signature: [u8; 64],
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub alert_id: String,
    pub agency: String,
    pub subscription_id: Option<String>,
    pub actor: String,
    pub via: AckVia,
    pub note: Option<String>,
    pub acked_at: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EscalationStep {
    pub after_secs: i64,
    pub targets: Vec<String>,
}

/// `Debug` leaves the webhook secret out, so a logged subscription never leaks it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    pub id: String,
    pub agency: String,
    pub clearance: Tlp,
    pub min_level: Level,
    pub categories: Vec<Category>,
    pub states: Vec<String>,
    pub areas: Vec<String>,
    pub rules: Vec<String>,
    pub format: Format,
    pub channel: Channel,
    pub webhook_url: Option<String>,
    pub webhook_secret: Option<String>,
    pub redacted_above_clearance: bool,
    pub escalation: Vec<EscalationStep>,
    pub updated_at: i64,
    pub disabled_at: Option<i64>,
    pub disabled_reason: Option<String>,
    /// The languages (BCP 47 tags, each one of `fanout.languages`) a JSON body carries the
    /// alert's texts in; empty: the fan-out's first configured language.
    #[serde(default)]
    pub languages: Vec<String>,
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("id", &self.id)
            .field("agency", &self.agency)
            .field("clearance", &self.clearance)
            .field("min_level", &self.min_level)
            .field("categories", &self.categories)
            .field("states", &self.states)
            .field("areas", &self.areas)
            .field("rules", &self.rules)
            .field("format", &self.format)
            .field("channel", &self.channel)
            .field("webhook_url", &self.webhook_url)
            .field(
                "webhook_secret",
                &self.webhook_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("redacted_above_clearance", &self.redacted_above_clearance)
            .field("escalation", &self.escalation)
            .field("updated_at", &self.updated_at)
            .field("disabled_at", &self.disabled_at)
            .field("disabled_reason", &self.disabled_reason)
            .field("languages", &self.languages)
            .finish()
    }
}

/// Internal: a verified, scored incident re-keyed by one group-by value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScoredIncident {
    pub group: String,
    pub group_key: String,
    pub incident_id: String,
    pub occurred_at: i64,
    pub reported_at: i64,
    pub state: String,
    pub agency: String,
    pub area: String,
    pub crossing: Option<String>,
    pub category: Category,
    pub direction: Option<Direction>,
    pub watchlist_hit: bool,
    pub subjects: Vec<String>,
    pub score: i32,
    pub level: Level,
    pub reasons: Vec<ScoreReason>,
    pub tlp: Tlp,
    pub lat: f64,
    pub lon: f64,
    pub evidence: Evidence,
    pub post_id: Option<String>,
}
