//! JSON views of wire records for people and scripts: times as RFC 3339, digests and
//! signatures as hex.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::{Map, Value};

const TIME_FIELDS: &[&str] = &[
    "occurred_at",
    "reported_at",
    "created_at",
    "window_start",
    "window_end",
    "rejected_at",
    "first_attempt_at",
    "completed_at",
    "acked_at",
    "updated_at",
    "signed_at",
];
const BYTE_FIELDS: &[&str] = &["signature", "payload_sha256", "record_sha256", "payload"];

/// A record as JSON with readable times and hex bytes.
pub fn view<T: Serialize>(record: &T) -> Value {
    let mut value = serde_json::to_value(record).unwrap_or(Value::Null);
    readable(&mut value);
    value
}

fn readable(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if TIME_FIELDS.contains(&key.as_str())
                    && let Some(ms) = v.as_i64()
                {
                    *v = Value::String(rfc3339(ms));
                    continue;
                }
                if BYTE_FIELDS.contains(&key.as_str())
                    && let Some(bytes) = as_bytes(v)
                {
                    *v = Value::String(hex::encode(bytes));
                    continue;
                }
                readable(v);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(readable),
        _ => {}
    }
}

fn as_bytes(v: &Value) -> Option<Vec<u8>> {
    v.as_array()?
        .iter()
        .map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
        .collect()
}

pub fn rfc3339(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}

/// Builds a JSON object from pairs.
pub fn object(pairs: impl IntoIterator<Item = (&'static str, Value)>) -> Value {
    Value::Object(
        pairs
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect::<Map<_, _>>(),
    )
}
