//! Semantic checks on an `Incident`, shared by the producer (before signing) and the
//! verifier (after decoding), so both sides hold reports to the same bounds.

use crate::types::{Heartbeat, Incident};

/// Bounds on the free-form parts of a report. Hostile producers could otherwise grow
/// records, windows and alerts without limit.
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub summary_max_bytes: usize,
    pub subjects_max: usize,
    pub attributes_max: usize,
    pub text_max_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            summary_max_bytes: 2048,
            subjects_max: 32,
            attributes_max: 32,
            text_max_bytes: 128,
        }
    }
}

/// The earliest event or report time accepted anywhere (2000-01-01T00:00:00Z, ms). Fixed,
/// so a hostile `occurred_at` (say `i64::MIN`) is refused before any window arithmetic.
pub const EARLIEST_MS: i64 = 946_684_800_000;
/// The latest accepted (2100-01-01T00:00:00Z, ms): far from overflow whatever a window adds.
pub const LATEST_MS: i64 = 4_102_444_800_000;

/// One problem with one field, named by its path (`subjects[2].ref`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "field `{}`: {}", self.field, self.message)
    }
}

/// Checks an incident against `limits`; returns every problem found, not just the first.
pub fn validate_incident(incident: &Incident, limits: &Limits) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let mut fail = |field: &str, message: String| {
        errors.push(FieldError {
            field: field.to_string(),
            message,
        })
    };
    if !is_uuid(&incident.incident_id) {
        fail(
            "incident_id",
            "is not a UUID (8-4-4-4-12 hex digits)".into(),
        );
    }
    for (field, t) in [
        ("occurred_at", incident.occurred_at),
        ("reported_at", incident.reported_at),
    ] {
        if !(EARLIEST_MS..LATEST_MS).contains(&t) {
            fail(
                field,
                format!("{t} ms is outside 2000-01-01T00:00:00Z..2100-01-01T00:00:00Z"),
            );
        }
    }
    if incident.occurred_at > incident.reported_at {
        fail("occurred_at", "is after reported_at".into());
    }
    if !is_state_code(&incident.reporter.state) {
        fail(
            "reporter.state",
            "is not an ISO 3166-1 alpha-2 code in upper case".into(),
        );
    }
    check_text(
        &mut fail,
        "reporter.agency",
        &incident.reporter.agency,
        limits,
        false,
    );
    if let Some(post) = &incident.reporter.post_id {
        check_text(&mut fail, "reporter.post_id", post, limits, false);
    }
    if !(1..=6).contains(&incident.info_credibility) {
        fail(
            "info_credibility",
            format!("{} is outside 1..6", incident.info_credibility),
        );
    }
    let loc = &incident.location;
    if !(loc.lat.is_finite() && (-90.0..=90.0).contains(&loc.lat)) {
        fail("location.lat", "is not a latitude in -90..90".into());
    }
    if !(loc.lon.is_finite() && (-180.0..=180.0).contains(&loc.lon)) {
        fail("location.lon", "is not a longitude in -180..180".into());
    }
    check_text(&mut fail, "location.area", &loc.area, limits, false);
    if let Some(crossing) = &loc.crossing {
        check_text(&mut fail, "location.crossing", crossing, limits, false);
    }
    if incident.subjects.len() > limits.subjects_max {
        fail(
            "subjects",
            format!(
                "has {} entries, at most {}",
                incident.subjects.len(),
                limits.subjects_max
            ),
        );
    }
    for (i, subject) in incident.subjects.iter().enumerate() {
        if !is_blinded_ref(&subject.subject_ref) {
            fail(
                &format!("subjects[{i}].ref"),
                "is not a blinded reference (64 lower-case hex digits)".into(),
            );
        }
        if let Some(list) = &subject.watchlist {
            check_text(
                &mut fail,
                &format!("subjects[{i}].watchlist"),
                list,
                limits,
                false,
            );
        }
    }
    if incident.summary.len() > limits.summary_max_bytes {
        fail(
            "summary",
            format!(
                "is {} bytes, at most {}",
                incident.summary.len(),
                limits.summary_max_bytes
            ),
        );
    }
    if incident.attributes.len() > limits.attributes_max {
        fail(
            "attributes",
            format!(
                "has {} entries, at most {}",
                incident.attributes.len(),
                limits.attributes_max
            ),
        );
    }
    for (key, value) in &incident.attributes {
        check_text(&mut fail, "attributes (key)", key, limits, false);
        if value.len() > limits.summary_max_bytes {
            fail(
                &format!("attributes.{}", printable(key)),
                "value is too long".into(),
            );
        }
    }
    errors
}

/// Posts one heartbeat may list: a national gateway serves tens, not thousands.
pub const HEARTBEAT_MAX_POSTS: usize = 1024;

/// Checks a heartbeat: the same text bounds as incidents, times in range, figures not
/// negative, at most [`HEARTBEAT_MAX_POSTS`] posts, each listed once.
pub fn validate_heartbeat(heartbeat: &Heartbeat, limits: &Limits) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let mut fail = |field: &str, message: String| {
        errors.push(FieldError {
            field: field.to_string(),
            message,
        })
    };
    if !is_state_code(&heartbeat.state) {
        fail(
            "state",
            "is not an ISO 3166-1 alpha-2 code in upper case".into(),
        );
    }
    check_text(
        &mut fail,
        "gateway_id",
        &heartbeat.gateway_id,
        limits,
        false,
    );
    check_text(
        &mut fail,
        "instance_id",
        &heartbeat.instance_id,
        limits,
        false,
    );
    if heartbeat.sequence < 0 {
        fail("sequence", "is negative".into());
    }
    if !(EARLIEST_MS..LATEST_MS).contains(&heartbeat.sent_at) {
        fail(
            "sent_at",
            format!(
                "{} ms is outside 2000-01-01T00:00:00Z..2100-01-01T00:00:00Z",
                heartbeat.sent_at
            ),
        );
    }
    if !(1..=86_400_000).contains(&heartbeat.interval_ms) {
        fail("interval_ms", "is outside 1 ms..1 day".into());
    }
    if heartbeat.posts.len() > HEARTBEAT_MAX_POSTS {
        fail(
            "posts",
            format!(
                "has {} entries, at most {HEARTBEAT_MAX_POSTS}",
                heartbeat.posts.len()
            ),
        );
    }
    let mut seen = std::collections::HashSet::new();
    for (i, post) in heartbeat.posts.iter().enumerate() {
        check_text(
            &mut fail,
            &format!("posts[{i}].post_id"),
            &post.post_id,
            limits,
            false,
        );
        if !seen.insert(post.post_id.as_str()) {
            fail(&format!("posts[{i}].post_id"), "is listed twice".into());
        }
        for (field, v) in [
            ("spool_depth", Some(post.spool_depth)),
            ("spool_bytes", Some(post.spool_bytes)),
            ("oldest_unsent_age_ms", post.oldest_unsent_age_ms),
            ("last_contact_age_ms", post.last_contact_age_ms),
        ] {
            if v.is_some_and(|v| v < 0) {
                fail(&format!("posts[{i}].{field}"), "is negative".into());
            }
        }
    }
    errors
}

fn check_text(
    fail: &mut impl FnMut(&str, String),
    field: &str,
    value: &str,
    limits: &Limits,
    may_be_empty: bool,
) {
    if value.is_empty() && !may_be_empty {
        fail(field, "is empty".into());
    } else if value.len() > limits.text_max_bytes {
        fail(
            field,
            format!(
                "is {} bytes, at most {}",
                value.len(),
                limits.text_max_bytes
            ),
        );
    } else if value.chars().any(char::is_control) {
        fail(field, "contains control characters".into());
    }
}

/// A bounded, printable rendering of untrusted text for error messages.
pub fn printable(value: &str) -> String {
    let mut out: String = value
        .chars()
        .take(40)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if value.chars().count() > 40 {
        out.push('…');
    }
    out
}

pub fn is_state_code(s: &str) -> bool {
    s.len() == 2 && s.bytes().all(|b| b.is_ascii_uppercase())
}

pub fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

pub fn is_blinded_ref(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::samples;

    #[test]
    fn sample_is_valid() {
        assert_eq!(
            validate_incident(&samples::incident(), &Limits::default()),
            vec![]
        );
    }

    proptest::proptest! {
        /// Any i64 for either time: never a panic (tests build with overflow checks), and a
        /// value outside the fixed range is refused naming its field.
        #[test]
        fn any_time_is_checked_without_overflow(occurred in proptest::num::i64::ANY, reported in proptest::num::i64::ANY) {
            let mut i = samples::incident();
            i.occurred_at = occurred;
            i.reported_at = reported;
            let fields: Vec<String> = validate_incident(&i, &Limits::default())
                .into_iter()
                .map(|e| e.field)
                .collect();
            let in_range = |t: i64| (EARLIEST_MS..LATEST_MS).contains(&t);
            proptest::prop_assert_eq!(fields.contains(&"occurred_at".to_string()), !in_range(occurred) || occurred > reported);
            proptest::prop_assert_eq!(fields.contains(&"reported_at".to_string()), !in_range(reported));
        }
    }

    #[test]
    fn times_at_the_bounds() {
        let mut i = samples::incident();
        i.occurred_at = EARLIEST_MS;
        i.reported_at = LATEST_MS - 1;
        assert_eq!(validate_incident(&i, &Limits::default()), vec![]);
        i.occurred_at = EARLIEST_MS - 1;
        i.reported_at = LATEST_MS;
        let e = validate_incident(&i, &Limits::default());
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].to_string().contains("outside 2000-01-01"), "{}", e[0]);
    }

    #[test]
    fn every_problem_is_reported_with_its_field() {
        let mut i = samples::incident();
        i.incident_id = "nope".into();
        i.info_credibility = 9;
        i.location.lat = f64::NAN;
        i.subjects[0].subject_ref = "raw-passport-123".into();
        i.summary = "x".repeat(5000);
        i.reporter.state = "kz".into();
        let fields: Vec<String> = validate_incident(&i, &Limits::default())
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(
            fields,
            [
                "incident_id",
                "reporter.state",
                "info_credibility",
                "location.lat",
                "subjects[0].ref",
                "summary"
            ]
        );
    }

    #[test]
    fn uuid_shape() {
        assert!(is_uuid("7d0e7c1e-5b2a-4a57-9f6c-2f1d8b0c9a11"));
        assert!(!is_uuid("7d0e7c1e5b2a4a579f6c2f1d8b0c9a11"));
        assert!(!is_uuid("7d0e7c1e-5b2a-4a57-9f6c-2f1d8b0c9a1g"));
    }

    #[test]
    fn heartbeats_are_bounded() {
        let limits = Limits::default();
        assert!(validate_heartbeat(&crate::samples::heartbeat(), &limits).is_empty());
        let mut h = crate::samples::heartbeat();
        h.state = "kz".into();
        h.interval_ms = 0;
        h.posts[1].post_id = h.posts[0].post_id.clone();
        h.posts[0].spool_depth = -1;
        h.posts[0].oldest_unsent_age_ms = Some(-5);
        let fields: Vec<String> = validate_heartbeat(&h, &limits)
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(
            fields,
            [
                "state",
                "interval_ms",
                "posts[0].spool_depth",
                "posts[0].oldest_unsent_age_ms",
                "posts[1].post_id"
            ]
        );
        let mut h = crate::samples::heartbeat();
        h.posts = (0..=HEARTBEAT_MAX_POSTS)
            .map(|i| crate::types::PostStatus {
                post_id: format!("P{i}"),
                ..crate::samples::heartbeat().posts[0].clone()
            })
            .collect();
        assert_eq!(validate_heartbeat(&h, &limits)[0].field, "posts");
    }
}
