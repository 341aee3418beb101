//! The JSON input of `ewn publish` and the gateway: the `Incident` shape with RFC 3339
//! times, and each subject's raw identifier as `id` (blinded here, never sent).

use std::collections::BTreeMap;
use std::fmt;
use std::io::BufRead;

use chrono::{DateTime, FixedOffset};
use ewn_model::validate::{Limits, printable, validate_incident};
use ewn_model::{
    Category, Direction, Incident, Level, Location, Reporter, SourceReliability, Subject,
    SubjectKind, Tlp,
};
use ewn_trust::BlindingKey;
use ewn_trust::blind::PersonName;
use serde::Deserialize;

/// Longest input line accepted, in bytes; longer lines are rejected unread.
pub const MAX_LINE_BYTES: usize = 256 * 1024;
/// Longest raw identifier accepted, in bytes.
pub const MAX_RAW_ID_BYTES: usize = 256;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InputIncident {
    incident_id: String,
    occurred_at: DateTime<FixedOffset>,
    #[serde(default)]
    reported_at: Option<DateTime<FixedOffset>>,
    reporter: InputReporter,
    category: Category,
    severity: Level,
    source_reliability: SourceReliability,
    info_credibility: i32,
    tlp: Tlp,
    location: InputLocation,
    #[serde(default)]
    direction: Option<Direction>,
    subjects: Vec<InputSubject>,
    summary: String,
    #[serde(default)]
    attributes: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InputReporter {
    state: String,
    agency: String,
    #[serde(default)]
    post_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InputLocation {
    lat: f64,
    lon: f64,
    area: String,
    #[serde(default)]
    crossing: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InputSubject {
    kind: SubjectKind,
    /// The raw identifier as free text (a person as "surname given-names date-of-birth" in
    /// any order and script).
    #[serde(default)]
    id: Option<String>,
    /// A person given by parts; exactly one of `id` and `person`.
    #[serde(default)]
    person: Option<InputPerson>,
    #[serde(default)]
    watchlist: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InputPerson {
    surname: String,
    #[serde(default)]
    given_names: String,
    /// Accepted and never blinded (see `ewn_trust::blind::PersonName`).
    #[serde(default)]
    patronymic: Option<String>,
    #[serde(default)]
    date_of_birth: Option<String>,
}

/// Why one input line was not published: the line number and the field at fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputError {
    pub line: usize,
    /// The field path (`subjects[0].id`), or `-` when the line as a whole is at fault.
    pub field: String,
    pub message: String,
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field == "-" {
            write!(f, "line {}: {}", self.line, self.message)
        } else {
            write!(
                f,
                "line {}: field `{}`: {}",
                self.line, self.field, self.message
            )
        }
    }
}

/// Parses, validates and blinds one input line. `now_ms` becomes `reported_at` when the
/// line does not give one. Every problem of the line is reported, not just the first.
pub fn parse_incident(
    text: &str,
    line: usize,
    blinding: &BlindingKey,
    limits: &Limits,
    now_ms: i64,
) -> Result<Incident, Vec<InputError>> {
    let err = |field: &str, message: String| InputError {
        line,
        field: field.to_string(),
        message,
    };
    let mut de = serde_json::Deserializer::from_str(text);
    let input: InputIncident = match serde_path_to_error::deserialize(&mut de) {
        Ok(v) => v,
        Err(e) => return Err(vec![deserialize_error(line, &e)]),
    };
    if let Err(e) = de.end() {
        return Err(vec![err(
            "-",
            format!("not valid JSON: {}", strip_position(&e.to_string())),
        )]);
    }

    let mut errors = Vec::new();
    let mut subjects = Vec::with_capacity(input.subjects.len());
    for (i, s) in input.subjects.into_iter().enumerate() {
        match blind_subject(blinding, &s) {
            Ok(subject_ref) => subjects.push(Subject {
                kind: s.kind,
                subject_ref,
                watchlist: s.watchlist,
            }),
            Err((field, message)) => errors.push(err(&format!("subjects[{i}]{field}"), message)),
        }
    }
    let incident = Incident {
        incident_id: input.incident_id.to_ascii_lowercase(),
        occurred_at: input.occurred_at.timestamp_millis(),
        reported_at: input.reported_at.map_or(now_ms, |t| t.timestamp_millis()),
        reporter: Reporter {
            state: input.reporter.state,
            agency: input.reporter.agency,
            post_id: input.reporter.post_id,
        },
        category: input.category,
        severity: input.severity,
        source_reliability: input.source_reliability,
        info_credibility: input.info_credibility,
        tlp: input.tlp,
        location: Location {
            lat: input.location.lat,
            lon: input.location.lon,
            area: input.location.area,
            crossing: input.location.crossing,
        },
        direction: input.direction,
        subjects,
        summary: input.summary,
        attributes: input.attributes,
    };
    // A subject that failed blinding shifts the indices after it; its error is reported.
    let blinding_failed = !errors.is_empty();
    errors.extend(
        validate_incident(&incident, limits)
            .into_iter()
            .filter(|e| !(blinding_failed && e.field.starts_with("subjects[")))
            .map(|e| err(&e.field, e.message)),
    );
    if errors.is_empty() {
        Ok(incident)
    } else {
        Err(errors)
    }
}

/// The ref of one input subject, or the field (relative to the subject: `.id`,
/// `.person.surname`) and a message that never quotes the identifier.
fn blind_subject(blinding: &BlindingKey, s: &InputSubject) -> Result<String, (String, String)> {
    let too_long = || format!("is longer than {MAX_RAW_ID_BYTES} bytes");
    match (&s.id, &s.person) {
        (Some(id), None) => {
            if id.len() > MAX_RAW_ID_BYTES {
                return Err((".id".into(), too_long()));
            }
            blinding
                .blind(s.kind, id)
                .map_err(|e| (".id".into(), e.to_string()))
        }
        (None, Some(p)) => {
            if s.kind != SubjectKind::Person {
                return Err((
                    ".person".into(),
                    format!("is only for kind PERSON, not {}", s.kind),
                ));
            }
            let parts = [
                ("surname", Some(&p.surname)),
                ("given_names", Some(&p.given_names)),
                ("patronymic", p.patronymic.as_ref()),
                ("date_of_birth", p.date_of_birth.as_ref()),
            ];
            for (name, part) in parts {
                if part.is_some_and(|v| v.len() > MAX_RAW_ID_BYTES) {
                    return Err((format!(".person.{name}"), too_long()));
                }
            }
            let name = PersonName {
                surname: &p.surname,
                given_names: &p.given_names,
                patronymic: p.patronymic.as_deref(),
                date_of_birth: p.date_of_birth.as_deref(),
            };
            blinding
                .blind_person(&name)
                .map_err(|(field, e)| (format!(".person.{}", field.as_str()), e.to_string()))
        }
        (Some(_), Some(_)) => Err((
            String::new(),
            "give one of `id` and `person`, not both".into(),
        )),
        (None, None) => Err((".id".into(), "missing field `id` (or `person`)".into())),
    }
}

/// What `ewn publish` and the gateway do with every input line: a blank line is skipped
/// (`Ok(None)`); an unreadable, invalid or other-state line is rejected with every problem
/// named by line and field; a good one comes back validated and blinded, ready to sign.
/// `state` is the signing key's state; when `None`, the first valid line fixes it.
pub fn prepare_line(
    line: Line<'_>,
    n: usize,
    blinding: &BlindingKey,
    limits: &Limits,
    now_ms: i64,
    state: &mut Option<String>,
) -> Result<Option<Incident>, Vec<InputError>> {
    let whole = |message: &str| {
        vec![InputError {
            line: n,
            field: "-".into(),
            message: message.into(),
        }]
    };
    let text = match line {
        Line::Text(t) if t.trim().is_empty() => return Ok(None),
        Line::Text(t) => t,
        Line::TooLong => return Err(whole("line is longer than 256 KiB")),
        Line::NotUtf8 => return Err(whole("not valid UTF-8")),
    };
    let incident = parse_incident(text, n, blinding, limits, now_ms)?;
    let expected = state.get_or_insert_with(|| incident.reporter.state.clone());
    if incident.reporter.state != *expected {
        return Err(vec![InputError {
            line: n,
            field: "reporter.state".into(),
            message: format!(
                "is {}, but this key signs for {expected}",
                incident.reporter.state
            ),
        }]);
    }
    Ok(Some(incident))
}

fn deserialize_error(line: usize, e: &serde_path_to_error::Error<serde_json::Error>) -> InputError {
    let inner = e.inner();
    if inner.is_syntax() || inner.is_eof() {
        let message = format!("not valid JSON: {}", strip_position(&inner.to_string()));
        return InputError {
            line,
            field: "-".into(),
            message,
        };
    }
    let mut field = e.path().to_string();
    let message = strip_position(&inner.to_string());
    // serde names a missing field in the message, at its parent's path.
    if let Some(name) = message
        .strip_prefix("missing field `")
        .and_then(|m| m.strip_suffix('`'))
    {
        field = if field == "." {
            name.to_string()
        } else {
            format!("{field}.{name}")
        };
    }
    if field == "." {
        field = "-".into();
    }
    // serde may quote the offending value; a raw identifier must never be echoed.
    let message = if field.starts_with("subjects[")
        && (field.ends_with("].id") || field.contains("].person."))
        && !message.starts_with("missing")
    {
        "must be a string (value not shown: raw identifiers are never echoed)".to_string()
    } else {
        message
    };
    InputError {
        line,
        field,
        message,
    }
}

/// serde_json appends " at line 1 column 57" to messages; the line number is ours.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// Reads lines of at most [`MAX_LINE_BYTES`]; a longer line is skipped to its end and
/// reported, so one bad line never costs the ones after it.
pub struct LineReader<R> {
    inner: R,
    buf: Vec<u8>,
    line: usize,
    bytes_read: u64,
}

/// One line of input, or why it cannot be used.
pub enum Line<'a> {
    Text(&'a str),
    TooLong,
    NotUtf8,
}

impl<R: BufRead> LineReader<R> {
    pub fn new(inner: R) -> Self {
        LineReader {
            inner,
            buf: Vec::with_capacity(4096),
            line: 0,
            bytes_read: 0,
        }
    }

    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// The next line (number, content), or `None` at the end of input.
    pub fn next_line(&mut self) -> std::io::Result<Option<(usize, Line<'_>)>> {
        self.buf.clear();
        let mut too_long = false;
        loop {
            let available = self.inner.fill_buf()?;
            if available.is_empty() {
                if self.buf.is_empty() && !too_long {
                    return Ok(None);
                }
                break;
            }
            let (take, done) = match available.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (available.len(), false),
            };
            if !too_long {
                let room = MAX_LINE_BYTES + 1 - self.buf.len();
                self.buf.extend_from_slice(&available[..take.min(room)]);
                if self.buf.len() > MAX_LINE_BYTES {
                    too_long = true;
                    self.buf.clear();
                }
            }
            self.inner.consume(take);
            self.bytes_read += take as u64;
            if done {
                break;
            }
        }
        self.line += 1;
        if too_long {
            return Ok(Some((self.line, Line::TooLong)));
        }
        while matches!(self.buf.last(), Some(b'\n' | b'\r')) {
            self.buf.pop();
        }
        Ok(Some((
            self.line,
            match std::str::from_utf8(&self.buf) {
                Ok(text) => Line::Text(text),
                Err(_) => Line::NotUtf8,
            },
        )))
    }
}

/// A short description of a line's identity for error messages (never raw identifiers).
pub fn describe(text: &str) -> String {
    printable(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"incident_id":"7d0e7c1e-5b2a-4a57-9f6c-2f1d8b0c9a11","occurred_at":"2026-11-20T10:00:00Z","reporter":{"state":"KZ","agency":"KZ-KNB","post_id":"KZ-KHORGOS-01"},"category":"WATCHLIST_HIT","severity":"HIGH","source_reliability":"B","info_credibility":2,"tlp":"AMBER","location":{"lat":44.2,"lon":80.3,"area":"KZ-ZHT","crossing":"KZ-KHORGOS"},"direction":"EXIT","subjects":[{"kind":"PERSON","id":"Aliyev Rustam 1987-03-02","watchlist":"UNSC-1267"}],"summary":"watch-list hit at passport control"}"#;

    fn parse(text: &str) -> Result<Incident, Vec<InputError>> {
        parse_incident(
            text,
            7,
            &BlindingKey::from_bytes([3; 32]),
            &Limits::default(),
            1_800_000_000_000,
        )
    }

    fn first(text: &str) -> String {
        parse(text).unwrap_err()[0].to_string()
    }

    #[test]
    fn good_line_is_blinded() {
        let i = parse(GOOD).unwrap();
        assert_eq!(i.reported_at, 1_800_000_000_000);
        assert_eq!(i.subjects[0].subject_ref.len(), 64);
        assert!(!format!("{i:?}").contains("Aliyev"));
    }

    #[test]
    fn one_person_in_cyrillic_and_latin_blinds_alike() {
        let refs = |id: &str| {
            let line = GOOD.replace("Aliyev Rustam 1987-03-02", id);
            parse(&line).unwrap().subjects[0].subject_ref.clone()
        };
        let latin = refs("ALIYEV RUSTAM 1987-03-02");
        assert_eq!(refs("ALIEV RUSTAM 19870302"), latin);
        assert_eq!(refs("Алиев Рустам 02.03.1987"), latin);
        assert_eq!(refs("Rustam Aliyev 1987-03-02"), latin);
        assert_ne!(refs("Алиев Рустам 03.03.1987"), latin);
        // a plate typed with Cyrillic look-alikes meets its Latin twin
        let plate = |id: &str| {
            let line = GOOD
                .replace(r#""kind":"PERSON""#, r#""kind":"VEHICLE""#)
                .replace("Aliyev Rustam 1987-03-02", id);
            parse(&line).unwrap().subjects[0].subject_ref.clone()
        };
        assert_eq!(plate("01 КZ 123 АВС"), plate("01KZ123ABC"));
    }

    #[test]
    fn structured_person_meets_free_text_and_bad_names_name_the_field() {
        let with = |subject: &str| {
            GOOD.replace(
                r#"{"kind":"PERSON","id":"Aliyev Rustam 1987-03-02","watchlist":"UNSC-1267"}"#,
                subject,
            )
        };
        let free = parse(GOOD).unwrap().subjects[0].subject_ref.clone();
        let parts = with(
            r#"{"kind":"PERSON","person":{"surname":"Алиев","given_names":"Рустам","patronymic":"Рустамович","date_of_birth":"02.03.1987"}}"#,
        );
        assert_eq!(parse(&parts).unwrap().subjects[0].subject_ref, free);
        // mixed scripts in one word: the field is named, the name never shown
        let mixed =
            with(r#"{"kind":"PERSON","person":{"surname":"Aлиев","given_names":"Рустам"}}"#);
        let e = first(&mixed);
        assert!(
            e.starts_with("line 7: field `subjects[0].person.surname`: identifier mixes"),
            "{e}"
        );
        assert!(!e.contains("лиев"), "{e}");
        let bad_date =
            with(r#"{"kind":"PERSON","person":{"surname":"Алиев","date_of_birth":"Рустам"}}"#);
        let e = first(&bad_date);
        assert!(
            e.starts_with("line 7: field `subjects[0].person.date_of_birth`: is not a date"),
            "{e}"
        );
        assert!(!e.contains("Рустам"), "{e}");
        let unassigned = with(r#"{"kind":"DOCUMENT","id":"N\ue00012"}"#);
        let e = first(&unassigned);
        assert!(
            e.starts_with("line 7: field `subjects[0].id`: identifier contains an unassigned"),
            "{e}"
        );
        let both = with(r#"{"kind":"PERSON","id":"x","person":{"surname":"Алиев"}}"#);
        assert_eq!(
            first(&both),
            "line 7: field `subjects[0]`: give one of `id` and `person`, not both"
        );
        let vehicle = with(r#"{"kind":"VEHICLE","person":{"surname":"Алиев"}}"#);
        assert_eq!(
            first(&vehicle),
            "line 7: field `subjects[0].person`: is only for kind PERSON, not VEHICLE"
        );
        let nothing = with(r#"{"kind":"PERSON","person":{"surname":"ь"}}"#);
        assert_eq!(
            first(&nothing),
            "line 7: field `subjects[0].person.surname`: identifier is empty after normalisation"
        );
    }

    #[test]
    fn errors_name_line_and_field() {
        let missing = GOOD.replace(r#""category":"WATCHLIST_HIT","#, "");
        assert_eq!(
            first(&missing),
            "line 7: field `category`: missing field `category`"
        );
        let unknown = GOOD.replace("WATCHLIST_HIT", "ALIENS");
        assert!(
            first(&unknown).starts_with("line 7: field `category`: unknown variant `ALIENS`"),
            "{}",
            first(&unknown)
        );
        let bad_time = GOOD.replace("2026-11-20T10:00:00Z", "yesterday");
        assert!(
            first(&bad_time).starts_with("line 7: field `occurred_at`:"),
            "{}",
            first(&bad_time)
        );
        let no_id = GOOD.replace(r#""id":"Aliyev Rustam 1987-03-02","#, "");
        assert_eq!(
            first(&no_id),
            "line 7: field `subjects[0].id`: missing field `id` (or `person`)"
        );
        let long = GOOD.replace("watch-list hit at passport control", &"x".repeat(3000));
        assert_eq!(
            first(&long),
            "line 7: field `summary`: is 3000 bytes, at most 2048"
        );
        assert!(
            first("hello").starts_with("line 7: not valid JSON"),
            "{}",
            first("hello")
        );
        let extra = GOOD.replace(r#""tlp":"AMBER""#, r#""tlp":"AMBER","colour":"red""#);
        assert!(first(&extra).contains("unknown field `colour`"));
        let blank_id = GOOD.replace("Aliyev Rustam 1987-03-02", " ");
        assert_eq!(
            first(&blank_id),
            "line 7: field `subjects[0].id`: identifier is empty after normalisation"
        );
    }

    #[test]
    fn error_messages_never_echo_raw_ids() {
        let bad = GOOD.replace(r#""kind":"PERSON""#, r#""kind":"ALIEN""#);
        for e in parse(&bad).unwrap_err() {
            assert!(!e.to_string().contains("Aliyev"), "{e}");
        }
        let number = GOOD.replace(r#""Aliyev Rustam 1987-03-02""#, "19870302555");
        let e = first(&number);
        assert!(
            e.starts_with("line 7: field `subjects[0].id`: must be a string"),
            "{e}"
        );
        assert!(!e.contains("19870302555"), "{e}");
    }

    #[test]
    fn long_lines_are_skipped_not_fatal() {
        let mut data = "x".repeat(MAX_LINE_BYTES + 10);
        data.push('\n');
        data.push_str("short\n");
        let mut bytes = data.into_bytes();
        bytes.extend_from_slice(b"\xff\n");
        let mut r = LineReader::new(std::io::Cursor::new(bytes));
        assert!(matches!(r.next_line().unwrap(), Some((1, Line::TooLong))));
        assert!(matches!(
            r.next_line().unwrap(),
            Some((2, Line::Text("short")))
        ));
        assert!(matches!(r.next_line().unwrap(), Some((3, Line::NotUtf8))));
        assert!(r.next_line().unwrap().is_none());
    }
}
