//! What a recipient receives: the alert as JSON (webhooks, the live stream, the console) or
//! as CAP 1.2 XML. Rendered once per alert and form, then shared by every recipient of it.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ewn_model::{Alert, Category, GeoPoint, Level, MsgType, ScoreReason, Tlp};
use serde::Serialize;

use crate::i18n::Catalogue;

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

/// The alert's texts in one language, from the same Fluent catalogue as CAP's `info`
/// blocks ([`crate::i18n`]). They interpolate only the rule, its level and its score, all of
/// them fields of the same (possibly redacted) alert: a localized text never shows more
/// than the form it goes with.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct LocalText {
    pub language: String,
    pub event: String,
    pub headline: String,
    /// The summary line (rule, level, score); the reasons, incidents and states are the
    /// alert's own fields.
    pub description: String,
    pub instruction: String,
}

/// The texts of `alert` in each of `languages` that the catalogue holds, in that order;
/// none requested (or none of them held, as for a subscription written under another
/// configuration): the first configured language.
pub fn local_texts(alert: &Alert, catalogue: &Catalogue, languages: &[String]) -> Vec<LocalText> {
    let one = |tag: &str| {
        catalogue.texts(tag).map(|t| {
            let event = t.event(&alert.rule);
            LocalText {
                language: tag.to_string(),
                headline: t.headline(alert, &event),
                description: t.summary(alert),
                instruction: t.instruction(&alert.rule),
                event,
            }
        })
    };
    let texts: Vec<LocalText> = languages.iter().filter_map(|l| one(l)).collect();
    if !texts.is_empty() {
        return texts;
    }
    catalogue
        .languages()
        .next()
        .and_then(one)
        .into_iter()
        .collect()
}

/// Every configured language's texts (the console switches between them).
pub fn all_local_texts(alert: &Alert, catalogue: &Catalogue) -> Vec<LocalText> {
    let all: Vec<String> = catalogue.languages().map(str::to_string).collect();
    local_texts(alert, catalogue, &all)
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
    /// The alert's headline, description and instruction per language.
    texts: Vec<LocalText>,
}

impl<'a> AlertJson<'a> {
    pub fn new(a: &'a Alert, redacted: bool, texts: Vec<LocalText>) -> Self {
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
            texts,
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
/// specification recommends; `data.texts` in the subscription's `languages`.
pub fn webhook_json(
    alert: &Alert,
    redacted: bool,
    catalogue: &Catalogue,
    languages: &[String],
) -> Vec<u8> {
    let env = Envelope {
        kind: event_type(alert.msg_type),
        timestamp: rfc3339(alert.created_at),
        data: AlertJson::new(alert, redacted, local_texts(alert, catalogue, languages)),
    };
    serde_json::to_vec(&env).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ewn_model::{Level, samples};

    fn both() -> Catalogue {
        Catalogue::load(&["en-US".to_string(), "ru-RU".to_string()]).unwrap()
    }

    #[test]
    fn webhook_bodies_are_stable_json() {
        let a = samples::alert();
        let body = webhook_json(&a, false, &both(), &[]);
        assert_eq!(body, webhook_json(&a, false, &both(), &[]));
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

    fn texts_of(body: &[u8]) -> Vec<serde_json::Value> {
        let v: serde_json::Value = serde_json::from_slice(body).unwrap();
        v["data"]["texts"].as_array().unwrap().clone()
    }

    #[test]
    fn webhook_texts_come_in_the_requested_languages_in_order() {
        let mut a = samples::alert();
        a.rule = "cross_border_movement".into();
        a.level = Level::High;
        a.score = 61;
        a.msg_type = ewn_model::MsgType::Alert;
        let langs = |t: &[&str]| t.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // none requested: the first configured language only
        let t = texts_of(&webhook_json(&a, false, &both(), &[]));
        assert_eq!(t.len(), 1);
        assert_eq!(t[0]["language"], "en-US");
        assert_eq!(t[0]["headline"], "HIGH: Cross-border movement (score 61)");
        assert!(
            t[0]["instruction"]
                .as_str()
                .unwrap()
                .starts_with("Check the subject")
        );
        // Russian then English, as asked
        let t = texts_of(&webhook_json(
            &a,
            false,
            &both(),
            &langs(&["ru-RU", "en-US"]),
        ));
        let tags: Vec<&str> = t.iter().map(|x| x["language"].as_str().unwrap()).collect();
        assert_eq!(tags, ["ru-RU", "en-US"]);
        assert_eq!(
            t[0]["headline"],
            "ВЫСОКИЙ: Пересечение границы между государствами (оценка 61)"
        );
        assert_eq!(
            t[0]["description"],
            "Правило cross_border_movement подняло уровень ВЫСОКИЙ с оценкой 61."
        );
        assert!(
            t[0]["instruction"]
                .as_str()
                .unwrap()
                .starts_with("Сверьте субъекта")
        );
        // a tag the catalogue does not hold (a record written under another
        // configuration) is left out; nothing held: the first configured language
        let t = texts_of(&webhook_json(&a, false, &both(), &langs(&["kk-KZ"])));
        assert_eq!(t.len(), 1);
        assert_eq!(t[0]["language"], "en-US");
        let t = texts_of(&webhook_json(
            &a,
            false,
            &both(),
            &langs(&["kk-KZ", "ru-RU"]),
        ));
        assert_eq!(t.len(), 1);
        assert_eq!(t[0]["language"], "ru-RU");
    }

    #[test]
    fn localized_texts_show_nothing_the_redacted_form_hides() {
        // What the Fluent messages interpolate (rule, level, score) is taken from the
        // alert the recipient gets: a redacted alert's texts are built from it, so they
        // carry no key, incident id, state, area or reason detail of the full alert.
        let mut full = samples::alert();
        full.key = "subject:9f2c4e1a7b".into();
        full.states = vec!["KZ".into(), "UZ".into()];
        full.areas = vec!["KZ-ALM".into()];
        let redacted =
            crate::policy::redact(&full, ewn_model::Tlp::Green, |id| format!("r-{}", id.len()));
        let all = langs_all();
        let body = webhook_json(&redacted, true, &both(), &all);
        let texts = serde_json::to_string(&texts_of(&body)).unwrap();
        for secret in std::iter::once(full.key.as_str())
            .chain(full.incident_ids.iter().map(String::as_str))
            .chain(full.states.iter().map(String::as_str))
            .chain(full.areas.iter().map(String::as_str))
            .chain(full.reasons.iter().map(|r| r.detail.as_str()))
        {
            assert!(!texts.contains(secret), "`{secret}` in {texts}");
        }
        // and they are the texts of exactly the fields the form keeps
        assert_eq!(
            local_texts(&redacted, &both(), &all),
            all_local_texts(&redacted, &both())
        );
    }

    fn langs_all() -> Vec<String> {
        vec!["en-US".to_string(), "ru-RU".to_string()]
    }

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_790_000_000_123), "2026-09-21T14:13:20.123Z");
    }
}
