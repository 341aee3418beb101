//! What a recipient receives: the alert as JSON (webhooks, the live stream, the console) or
//! as CAP 1.2 XML. Rendered once per alert and form, then shared by every recipient of it.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ewn_model::{Alert, Category, GeoPoint, Level, MsgType, ScoreReason, Tlp};
use serde::Serialize;

pub const JSON_CONTENT_TYPE: &str = "application/json";

/// RFC 3339 in UTC with milliseconds.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_default()
}

#[derive(Serialize)]
struct EvidenceJson<'a> {
    incident_id: &'a str,
    topic: &'a str,
    partition: i32,
    offset: i64,
    key_id: &'a str,
    /// base64 of the Ed25519 signature.
    signature: String,
    /// hex of SHA-256 over the signed payload.
    payload_sha256: String,
}

/// The JSON form of an alert, also the `data` of a webhook event.
#[derive(Serialize)]
pub struct AlertJson<'a> {
    alert_id: &'a str,
    msg_type: MsgType,
    references: &'a [String],
    rule: &'a str,
    level: Level,
    score: i32,
    reasons: &'a [ScoreReason],
    key: &'a str,
    window_start: String,
    window_end: String,
    incident_ids: &'a [String],
    states: &'a [String],
    categories: &'a [Category],
    areas: &'a [String],
    points: &'a [GeoPoint],
    tlp: Tlp,
    named_agencies: &'a [String],
    created_at: String,
    evidence: Vec<EvidenceJson<'a>>,
    /// Reports in the episode; `incident_ids` and `evidence` are a bounded sample of them.
    incident_count: i32,
    /// hex SHA-256 of the full sorted set of incident ids (empty when redacted or absent).
    incident_digest: String,
    limits_reached: &'a [String],
    refused_count: i32,
    redacted: bool,
}

impl<'a> AlertJson<'a> {
    pub fn new(a: &'a Alert, redacted: bool) -> Self {
        AlertJson {
            alert_id: &a.alert_id,
            msg_type: a.msg_type,
            references: &a.references,
            rule: &a.rule,
            level: a.level,
            score: a.score,
            reasons: &a.reasons,
            key: &a.key,
            window_start: rfc3339(a.window_start),
            window_end: rfc3339(a.window_end),
            incident_ids: &a.incident_ids,
            states: &a.states,
            categories: &a.categories,
            areas: &a.areas,
            points: &a.points,
            tlp: a.tlp,
            named_agencies: &a.named_agencies,
            created_at: rfc3339(a.created_at),
            evidence: a
                .evidence
                .iter()
                .map(|e| EvidenceJson {
                    incident_id: &e.incident_id,
                    topic: &e.topic,
                    partition: e.partition,
                    offset: e.offset,
                    key_id: &e.key_id,
                    signature: STANDARD.encode(e.signature),
                    payload_sha256: hex::encode(e.payload_sha256),
                })
                .collect(),
            incident_count: a.incident_count,
            incident_digest: hex::encode(&a.incident_digest),
            limits_reached: &a.limits_reached,
            refused_count: a.refused_count,
            redacted,
        }
    }
}

/// The event type of a message, as Standard Webhooks payloads name it.
pub fn event_type(msg_type: MsgType) -> &'static str {
    match msg_type {
        MsgType::Alert => "alert.created",
        MsgType::Update => "alert.updated",
        MsgType::Cancel => "alert.cancelled",
    }
}

#[derive(Serialize)]
struct Envelope<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    /// The alert's creation time, not the attempt's, so every retry sends the same body.
    timestamp: String,
    data: AlertJson<'a>,
}

/// The webhook body: `{"type", "timestamp", "data"}` as the Standard Webhooks
/// specification recommends.
pub fn webhook_json(alert: &Alert, redacted: bool) -> Vec<u8> {
    let env = Envelope {
        kind: event_type(alert.msg_type),
        timestamp: rfc3339(alert.created_at),
        data: AlertJson::new(alert, redacted),
    };
    serde_json::to_vec(&env).unwrap_or_default()
}

/// The bare alert JSON (stream events and the console).
pub fn alert_json(alert: &Alert, redacted: bool) -> String {
    serde_json::to_string(&AlertJson::new(alert, redacted)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ewn_model::samples;

    #[test]
    fn webhook_bodies_are_stable_json() {
        let a = samples::alert();
        let body = webhook_json(&a, false);
        assert_eq!(body, webhook_json(&a, false));
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["type"], event_type(a.msg_type));
        assert_eq!(v["data"]["alert_id"], a.alert_id.as_str());
        assert_eq!(
            v["data"]["evidence"][0]["payload_sha256"]
                .as_str()
                .unwrap()
                .len(),
            64
        );
    }

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_790_000_000_123), "2026-09-21T14:13:20.123Z");
    }
}
