//! CAP 1.2 (OASIS Common Alerting Protocol) rendering of alerts, for subscriptions whose
//! format is `CAP`. `tests/cap_xsd.rs` validates the output against the OASIS XSD.
//!
//! Hand-written rather than built on an XML crate: the document has one fixed shape, so the
//! XSD's element order and a single escaping function are all such a crate would give, and
//! writing straight into one pre-sized `String` keeps rendering to about one allocation.
//!
//! Every string of the alert is treated as hostile: text is escaped (`& < > " '`), characters
//! XML 1.0 forbids are dropped, line breaks inside a field become spaces (so a reason cannot
//! forge a line of the description), and identifiers are percent-encoded (see [`render`]).
//!
//! # Mapping
//!
//! Header: `identifier` is `alert_id`, `sent` is `created_at`, `status` is always `Actual`,
//! `msgType` is `msg_type` (Alert/Update/Cancel), `references` (Update and Cancel) holds one
//! `sender,identifier,sent` triple per referenced alert. `scope` is always `Restricted`, with
//! the TLP 2.0 label and its sharing rule in `restriction` (plus the named agencies for
//! AMBER+STRICT and RED) and the label alone in `code`, e.g. `TLP:AMBER+STRICT`.
//!
//! One `info` per configured language (`fanout.languages`, `en-US` and `ru-RU` by default, in
//! that order), its texts from the language's Fluent catalogue ([`crate::i18n`]): `event` is
//! the rule's name for people ("Cross-border movement"; a rule without its own message is
//! humanised, `my_rule` → "My rule"), `headline`, `description` and `instruction` in that
//! language; the codes and parameters are the same in every block. Then:
//!
//! | EWN category           | CAP `category`   |
//! |------------------------|------------------|
//! | every one, and none    | `Security`       |
//! | `EXPLOSIVES_PRECURSOR` | also `CBRNE`     |
//! | `CYBER`                | also `Infra`     |
//!
//! | level    | `severity` | `urgency` (`Past` for any Cancel) |
//! |----------|------------|-----------------------------------|
//! | CRITICAL | Extreme    | Immediate                         |
//! | HIGH     | Severe     | Expected                          |
//! | MEDIUM   | Moderate   | Future                            |
//! | LOW      | Minor      | Future                            |
//!
//! | score (clamped to 0..100) | `certainty` |
//! |---------------------------|-------------|
//! | 50..100                   | Likely      |
//! | 25..49                    | Possible    |
//! | 0..24                     | Unlikely    |
//!
//! `headline` gives level, event and score; `description` the reasons (factor, contribution,
//! detail; one per line), the incident ids and the states; `parameter`s: `rule`, `level`,
//! `score`, `alertKey`, `windowStart`, `windowEnd`, `incidentCount`, `evidenceCount`.
//!
//! One `area`, left out when the alert has neither an area code nor a usable point (as a
//! redacted alert may): `areaDesc` lists the codes, a `circle` of 1 km radius (WGS 84) marks
//! each point, and a `geocode` carries each code, named `ISO3166-2` when it has that shape and
//! `EWN-AREA` otherwise.

use std::fmt::{self, Write as _};

use chrono::{DateTime, Datelike, Timelike};
use ewn_model::{Alert, Category, Level, MsgType, Tlp};

use crate::i18n::{Catalogue, Texts};

/// The media type of a rendered document, as OASIS registered it with IANA.
pub const CONTENT_TYPE: &str = "application/cap+xml";

/// The radius of the `<circle>` drawn around each incident's coordinates. The points are where
/// a report was made (a crossing, a post), not a hazard's extent: 1 km marks the place for a
/// map without claiming a precision the reports do not have.
const CIRCLE_RADIUS_KM: f64 = 1.0;

/// `<geocode>` value name for codes shaped like ISO 3166-2 subdivisions (`UZ-TK`), the form of
/// EWN's reference areas; any other code is named [`AREA_GEOCODE_EWN`] so a consumer does not
/// look it up in the wrong table.
const AREA_GEOCODE_ISO: &str = "ISO3166-2";
const AREA_GEOCODE_EWN: &str = "EWN-AREA";

/// Renders one alert as a CAP 1.2 `<alert>` document (UTF-8, with XML declaration).
///
/// `sender`: the CAP sender (e.g. `"ewn@rcc.example"`). `referenced_sent(id)` gives the
/// `created_at` (ms) of an earlier alert this one references, when known.
///
/// CAP forbids spaces, commas, `<` and `&` in `identifier` and `sender` (they are the fields of
/// the `references` triples), so both are percent-encoded: those characters, `%` itself,
/// whitespace and control characters become `%XX` per UTF-8 byte. The encoding is injective,
/// so distinct alert ids stay distinct, and the same encoding in `references` still matches
/// the earlier document's `identifier`. An empty id becomes `%`, which no other id encodes to.
pub fn render(
    alert: &Alert,
    sender: &str,
    referenced_sent: &dyn Fn(&str) -> Option<i64>,
    catalogue: &Catalogue,
) -> String {
    let mut d = Doc {
        out: String::with_capacity(
            capacity_hint(alert, sender) * catalogue.languages().count().max(1),
        ),
        depth: 0,
    };
    d.out
        .push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    d.out
        .push_str("<alert xmlns=\"urn:oasis:names:tc:emergency:cap:1.2\">\n");
    d.depth = 1;

    // The order below is the XSD's `sequence`; a validator rejects any other.
    d.start("identifier");
    push_cap_id(&mut d.out, &alert.alert_id);
    d.end("identifier");
    d.start("sender");
    push_cap_id(&mut d.out, sender);
    d.end("sender");
    d.start("sent");
    push_time(&mut d.out, alert.created_at);
    d.end("sent");
    d.leaf_raw("status", "Actual");
    d.leaf_raw("msgType", msg_type(alert.msg_type));
    // Every alert goes only to subscribed, cleared agencies, so even TLP:CLEAR is Restricted
    // (not Public): CAP relays must not rebroadcast it to the general public.
    d.leaf_raw("scope", "Restricted");
    d.start("restriction");
    d.out.push_str(tlp_label(alert.tlp));
    d.out.push_str(": ");
    d.out.push_str(tlp_rule(alert.tlp));
    if matches!(alert.tlp, Tlp::AmberStrict | Tlp::Red) {
        d.out.push_str(" Named agencies: ");
        if alert.named_agencies.is_empty() {
            d.out.push_str("none named");
        } else {
            push_joined(&mut d.out, &alert.named_agencies, ", ");
        }
        d.out.push('.');
    }
    d.end("restriction");
    d.leaf_raw("code", tlp_label(alert.tlp));
    // An Update or Cancel that names no earlier alert keeps its type (turning a Cancel into an
    // Alert would raise what it meant to withdraw) and just has no `references`.
    if alert.msg_type != MsgType::Alert && !alert.references.is_empty() {
        d.start("references");
        for (i, id) in alert.references.iter().enumerate() {
            if i > 0 {
                d.out.push(' ');
            }
            push_cap_id(&mut d.out, sender);
            d.out.push(',');
            push_cap_id(&mut d.out, id);
            d.out.push(',');
            // The earlier alert's own `sent` is what CAP asks for; when the caller no longer
            // knows it, the window start stands in: the earlier alert belongs to the same
            // window, so it cannot have been sent before it, and consumers match references
            // on sender and identifier first.
            push_time(
                &mut d.out,
                referenced_sent(id).unwrap_or(alert.window_start),
            );
        }
        d.end("references");
    }

    for language in catalogue.languages() {
        let Some(texts) = catalogue.texts(language) else {
            continue;
        };
        push_info(&mut d, alert, language, &texts);
    }

    d.depth = 0;
    d.out.push_str("</alert>\n");
    d.out
}

/// One `info` block in `language`: the texts from its catalogue, the rest as in every block.
fn push_info(d: &mut Doc, alert: &Alert, language: &str, texts: &Texts<'_>) {
    d.open("info");
    d.start("language");
    push_text(&mut d.out, language);
    d.end("language");
    for category in cap_categories(&alert.categories) {
        d.leaf_raw("category", category);
    }
    let event = texts.event(&alert.rule);
    d.start("event");
    push_text(&mut d.out, &event);
    d.end("event");
    d.leaf_raw("urgency", urgency(alert.level, alert.msg_type));
    d.leaf_raw("severity", severity(alert.level));
    d.leaf_raw("certainty", certainty(alert.score));
    d.leaf_raw("senderName", "EWN regional early-warning network");
    d.start("headline");
    push_text(&mut d.out, &texts.headline(alert, &event));
    d.end("headline");
    d.start("description");
    push_description(&mut d.out, alert, texts);
    d.end("description");
    d.start("instruction");
    push_text(&mut d.out, &texts.instruction(&alert.rule));
    d.end("instruction");
    d.parameter("rule", |out| push_text(out, &alert.rule));
    d.parameter("level", |out| out.push_str(alert.level.as_str()));
    d.parameter("score", |out| put(out, format_args!("{}", alert.score)));
    d.parameter("alertKey", |out| push_text(out, &alert.key));
    d.parameter("windowStart", |out| push_time(out, alert.window_start));
    d.parameter("windowEnd", |out| push_time(out, alert.window_end));
    d.parameter("incidentCount", |out| {
        put(out, format_args!("{}", alert.incident_ids.len()))
    });
    d.parameter("evidenceCount", |out| {
        put(out, format_args!("{}", alert.evidence.len()))
    });
    push_area(d, alert);
    d.close("info");
}

/// The output buffer and the indentation depth of the element being written.
struct Doc {
    out: String,
    depth: usize,
}

impl Doc {
    fn indent(&mut self) {
        for _ in 0..self.depth {
            self.out.push_str("  ");
        }
    }

    /// Opens an element holding other elements.
    fn open(&mut self, name: &str) {
        self.indent();
        put(&mut self.out, format_args!("<{name}>\n"));
        self.depth += 1;
    }

    fn close(&mut self, name: &str) {
        self.depth -= 1;
        self.indent();
        put(&mut self.out, format_args!("</{name}>\n"));
    }

    /// Opens an element holding text; the caller writes the (escaped) text, then [`Doc::end`].
    fn start(&mut self, name: &str) {
        self.indent();
        put(&mut self.out, format_args!("<{name}>"));
    }

    fn end(&mut self, name: &str) {
        put(&mut self.out, format_args!("</{name}>\n"));
    }

    /// An element whose text is one of this module's constants, never alert data.
    fn leaf_raw(&mut self, name: &str, text: &str) {
        self.start(name);
        self.out.push_str(text);
        self.end(name);
    }

    fn parameter(&mut self, name: &str, value: impl FnOnce(&mut String)) {
        self.value_pair("parameter", name, value);
    }

    fn value_pair(&mut self, element: &str, name: &str, value: impl FnOnce(&mut String)) {
        self.open(element);
        self.start("valueName");
        push_text(&mut self.out, name);
        self.end("valueName");
        self.start("value");
        value(&mut self.out);
        self.end("value");
        self.close(element);
    }
}

/// Writes formatted text into the buffer. Writing into a `String` cannot fail, so the
/// `fmt::Result` carries nothing.
fn put(out: &mut String, args: fmt::Arguments<'_>) {
    let _ = out.write_fmt(args);
}

fn msg_type(m: MsgType) -> &'static str {
    match m {
        MsgType::Alert => "Alert",
        MsgType::Update => "Update",
        MsgType::Cancel => "Cancel",
    }
}

/// The FIRST TLP 2.0 label.
fn tlp_label(t: Tlp) -> &'static str {
    match t {
        Tlp::Clear => "TLP:CLEAR",
        Tlp::Green => "TLP:GREEN",
        Tlp::Amber => "TLP:AMBER",
        Tlp::AmberStrict => "TLP:AMBER+STRICT",
        Tlp::Red => "TLP:RED",
    }
}

/// The TLP 2.0 sharing rule, shortened, for the `restriction` a person reads.
fn tlp_rule(t: Tlp) -> &'static str {
    match t {
        Tlp::Clear => "disclosure is not limited.",
        Tlp::Green => "recipients may share within their community, not publicly.",
        Tlp::Amber => {
            "recipients may share on a need-to-know basis within their organisation and its \
             clients only."
        }
        Tlp::AmberStrict => {
            "recipients may share on a need-to-know basis within their organisation only."
        }
        Tlp::Red => "for the named recipients only, no further disclosure.",
    }
}

/// EWN categories to CAP `category` (table in the module docs), in the XSD's enumeration
/// order, without repeats.
///
/// Every EWN alert is a counter-terrorism warning, so `Security` is always present (and CAP
/// requires at least one category); consumers filtering on `Security` then miss nothing.
/// `OTHER` stays `Security` rather than CAP `Other` for the same reason. Explosives precursors
/// are CAP's CBRNE (chemical, biological, radiological, nuclear, explosive) hazard class, and a
/// cyber incident threatens CAP's `Infra` (utility, telecommunication) class.
fn cap_categories(categories: &[Category]) -> impl Iterator<Item = &'static str> {
    let cbrne = categories.contains(&Category::ExplosivesPrecursor);
    let infra = categories.contains(&Category::Cyber);
    [("Security", true), ("Infra", infra), ("CBRNE", cbrne)]
        .into_iter()
        .filter_map(|(name, on)| on.then_some(name))
}

/// CAP `severity` from the alert level (table in the module docs): the four levels and CAP's
/// four known severities are both ordered scales, so they map in order.
fn severity(level: Level) -> &'static str {
    match level {
        Level::Critical => "Extreme",
        Level::High => "Severe",
        Level::Medium => "Moderate",
        Level::Low => "Minor",
    }
}

/// CAP `urgency` from the alert level; a Cancel is `Past` whatever its level (table in the
/// module docs).
///
/// Only a CRITICAL alert asks a desk to act at once; HIGH within the hour (CAP's `Expected`);
/// lower levels ask for attention in the near future. CAP defines `Past` as "responsive action
/// is no longer required", which is what a Cancel says.
fn urgency(level: Level, msg_type: MsgType) -> &'static str {
    if msg_type == MsgType::Cancel {
        return "Past";
    }
    match level {
        Level::Critical => "Immediate",
        Level::High => "Expected",
        Level::Medium | Level::Low => "Future",
    }
}

/// CAP `certainty` from the score, clamped to 0..100 (table in the module docs).
///
/// The score weighs source reliability, credibility and corroboration, so it reads as how
/// likely the threat is; the bands follow the default level thresholds (25 and 50). Never
/// `Observed`: the reports were observed, the threat an alert warns of is inferred from them.
fn certainty(score: i32) -> &'static str {
    match score.clamp(0, 100) {
        50.. => "Likely",
        25..=49 => "Possible",
        _ => "Unlikely",
    }
}

/// Earliest and latest instants whose year has the four digits the XSD's `sent` pattern
/// demands (xs:dateTime has no year 0000).
const MIN_MS: i64 = -62_135_596_800_000; // 0001-01-01T00:00:00Z
const MAX_MS: i64 = 253_402_300_799_999; // 9999-12-31T23:59:59.999Z

/// Writes ms since the epoch in CAP's dateTime form, `YYYY-MM-DDThh:mm:ss+00:00`: CAP forbids
/// the `Z` designator and fractional seconds. Out-of-range times are clamped into years
/// 0001..9999 so a hostile timestamp still yields a valid document.
fn push_time(out: &mut String, ms: i64) {
    let Some(t) = DateTime::from_timestamp_millis(ms.clamp(MIN_MS, MAX_MS)) else {
        // Unreachable within the clamp; a fixed valid instant keeps the document valid.
        out.push_str("1970-01-01T00:00:00+00:00");
        return;
    };
    put(
        out,
        format_args!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}+00:00",
            t.year(),
            t.month(),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
    );
}

/// Characters that never reach the document: those XML 1.0 forbids (C0 controls other than
/// tab, LF and CR; U+FFFE, U+FFFF), those it discourages (DEL, C1 controls), and the
/// bidirectional overrides and isolates, which can make text display as something else.
pub(crate) fn is_dropped(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{8}' | '\u{B}' | '\u{C}' | '\u{E}'..='\u{1F}' | '\u{7F}'..='\u{9F}'
        | '\u{FFFE}' | '\u{FFFF}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Escapes `s` as XML text into `out`. Line breaks and tabs become one space each: every
/// field is one line of the document's text, and the renderer alone decides where lines break.
fn push_text(out: &mut String, s: &str) {
    // Copies runs of ordinary characters in one go; only special ones are handled singly.
    let mut run = 0;
    for (i, c) in s.char_indices() {
        let replacement = match c {
            '&' => "&amp;",
            '<' => "&lt;",
            '>' => "&gt;",
            '"' => "&quot;",
            '\'' => "&apos;",
            '\t' | '\n' | '\r' | '\u{2028}' | '\u{2029}' => " ",
            c if is_dropped(c) => "",
            _ => continue,
        };
        out.push_str(&s[run..i]);
        out.push_str(replacement);
        run = i + c.len_utf8();
    }
    out.push_str(&s[run..]);
}

/// Writes `s` percent-encoded for CAP's `identifier`/`sender` (see [`render`]).
fn push_cap_id(out: &mut String, s: &str) {
    if s.is_empty() {
        out.push('%');
        return;
    }
    let mut utf8 = [0u8; 4];
    for c in s.chars() {
        let plain = !(c.is_whitespace()
            || c.is_control()
            || is_dropped(c)
            || matches!(c, ',' | '<' | '&' | '%'));
        if plain {
            // `>`, `"` and `'` are allowed in an identifier but still need escaping in XML.
            match c {
                '>' => out.push_str("&gt;"),
                '"' => out.push_str("&quot;"),
                '\'' => out.push_str("&apos;"),
                c => out.push(c),
            }
        } else {
            for b in c.encode_utf8(&mut utf8).bytes() {
                put(out, format_args!("%{b:02X}"));
            }
        }
    }
}

fn push_joined(out: &mut String, items: &[String], sep: &str) {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(sep);
        }
        push_text(out, item);
    }
}

/// The explanation a desk reads: a summary line, then the reasons one per line, the incident
/// ids and the states. Lists a redacted alert leaves empty are left out, not shown as empty.
fn push_description(out: &mut String, alert: &Alert, texts: &Texts<'_>) {
    push_text(out, &texts.summary(alert));
    if !alert.reasons.is_empty() {
        out.push('\n');
        push_text(out, &texts.get("description-reasons", &[]));
        for r in &alert.reasons {
            out.push_str("\n- ");
            push_text(out, &r.factor);
            put(out, format_args!(" {:+}: ", r.contribution));
            push_text(out, &r.detail);
        }
    }
    if !alert.incident_ids.is_empty() {
        out.push('\n');
        push_text(out, &texts.get("description-incidents", &[]));
        out.push(' ');
        push_joined(out, &alert.incident_ids, ", ");
    }
    if !alert.states.is_empty() {
        out.push('\n');
        push_text(out, &texts.get("description-states", &[]));
        out.push(' ');
        push_joined(out, &alert.states, ", ");
    }
}

/// A point CAP can carry: finite WGS 84 latitude and longitude within range.
fn valid_point(lat: f64, lon: f64) -> bool {
    (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon)
}

/// `UZ-TK`, `KZ-ZHT`: two upper-case letters, a dash, one to three letters or digits.
fn is_iso_3166_2(code: &str) -> bool {
    let b = code.as_bytes();
    (4..=6).contains(&b.len())
        && b[..2].iter().all(u8::is_ascii_uppercase)
        && b[2] == b'-'
        && b[3..]
            .iter()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

/// One `<area>` for all the alert's places, or none when it has neither an area code nor a
/// usable point (a redacted alert; `area` is optional in CAP).
fn push_area(d: &mut Doc, alert: &Alert) {
    let codes = || alert.areas.iter().filter(|a| !a.is_empty());
    let points = || alert.points.iter().filter(|p| valid_point(p.lat, p.lon));
    if codes().next().is_none() && points().next().is_none() {
        return;
    }
    d.open("area");
    d.start("areaDesc");
    if codes().next().is_some() {
        for (i, code) in codes().enumerate() {
            if i > 0 {
                d.out.push_str(", ");
            }
            push_text(&mut d.out, code);
        }
    } else {
        d.out.push_str("Locations of the contributing incidents");
    }
    d.end("areaDesc");
    for p in points() {
        d.start("circle");
        // Five decimals is about a metre, far finer than the radius.
        put(
            &mut d.out,
            format_args!("{:.5},{:.5} {CIRCLE_RADIUS_KM:.1}", p.lat, p.lon),
        );
        d.end("circle");
    }
    for code in codes() {
        let scheme = if is_iso_3166_2(code) {
            AREA_GEOCODE_ISO
        } else {
            AREA_GEOCODE_EWN
        };
        d.value_pair("geocode", scheme, |out| push_text(out, code));
    }
    d.close("area");
}

/// Room for the fixed markup plus every string the alert contributes, so ordinary alerts are
/// rendered without the buffer growing.
fn capacity_hint(a: &Alert, sender: &str) -> usize {
    let list = |v: &[String]| v.iter().map(|s| s.len() + 2).sum::<usize>();
    2048 + a.alert_id.len()
        + sender.len()
        + a.references.len() * (sender.len() + 40)
        + list(&a.references)
        + 4 * a.rule.len()
        + a.key.len()
        + a.reasons
            .iter()
            .map(|r| r.factor.len() + r.detail.len() + 16)
            .sum::<usize>()
        + list(&a.incident_ids)
        + list(&a.states)
        + 2 * list(&a.areas)
        + 80 * a.areas.len()
        + 64 * a.points.len()
        + list(&a.named_agencies)
}

#[cfg(test)]
mod tests {
    use ewn_model::{GeoPoint, ScoreReason, samples};

    use super::*;

    const SENDER: &str = "ewn@rcc.example";

    /// English only: most tests look at one `info` block.
    fn cat() -> Catalogue {
        Catalogue::load(&["en-US".to_string()]).unwrap_or_else(|e| panic!("{e:?}"))
    }

    fn no_refs(_: &str) -> Option<i64> {
        None
    }

    fn text(s: &str) -> String {
        let mut out = String::new();
        push_text(&mut out, s);
        out
    }

    fn time(ms: i64) -> String {
        let mut out = String::new();
        push_time(&mut out, ms);
        out
    }

    fn id(s: &str) -> String {
        let mut out = String::new();
        push_cap_id(&mut out, s);
        out
    }

    fn alert() -> Alert {
        let mut a = samples::alert();
        a.msg_type = MsgType::Alert;
        a.references.clear();
        a
    }

    fn redacted() -> Alert {
        let mut a = alert();
        a.reasons.clear();
        a.areas.clear();
        a.points.clear();
        a.incident_ids.clear();
        a.evidence.clear();
        a.categories.clear();
        a.named_agencies.clear();
        a
    }

    /// The text between `<name>` and `</name>`, for elements that occur once.
    fn element<'a>(doc: &'a str, name: &str) -> &'a str {
        let open = format!("<{name}>");
        let start = doc.find(&open).expect("element present") + open.len();
        let end = doc[start..].find(&format!("</{name}>")).expect("closed") + start;
        &doc[start..end]
    }

    fn xml_allowed(c: char) -> bool {
        matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}')
            || c >= '\u{10000}'
    }

    #[test]
    fn escapes_the_five_specials_and_drops_forbidden_characters() {
        assert_eq!(text("a&b<c>d\"e'f"), "a&amp;b&lt;c&gt;d&quot;e&apos;f");
        assert_eq!(text("x\u{0}\u{1}\u{1b}[31m\u{7f}\u{85}\u{ffff}y"), "x[31my");
        assert_eq!(text("one\ntwo\r\nthree\tfour"), "one two  three four");
        assert_eq!(text("ok\u{202e}gpj.exe"), "okgpj.exe");
        assert_eq!(text("Ташкент — 東京 ✓"), "Ташкент — 東京 ✓");
        assert_eq!(text(""), "");
    }

    #[test]
    fn hostile_reason_cannot_break_out_of_the_description() {
        let mut a = alert();
        a.reasons = vec![ScoreReason {
            factor: "x</valueName>".into(),
            contribution: -3,
            detail: "</description><script>alert(1)</script>\u{0}\u{1b}\n- forged +99: line".into(),
        }];
        a.states = vec!["KZ\"'&".into()];
        a.named_agencies = vec!["<agency/>".into()];
        a.rule = "r&d_<rule>".into();
        let doc = render(&a, SENDER, &no_refs, &cat());

        assert!(doc.chars().all(xml_allowed), "{doc:?}");
        assert!(!doc.contains("<script>"));
        assert!(!doc.contains("<agency/>"));
        assert_eq!(doc.matches("<description>").count(), 1);
        assert_eq!(doc.matches("</description>").count(), 1);
        let description = element(&doc, "description");
        assert!(description.contains(
            "\n- x&lt;/valueName&gt; -3: &lt;/description&gt;&lt;script&gt;alert(1)&lt;/script&gt; - forged +99: line"
        ));
        assert_eq!(
            description.lines().filter(|l| l.starts_with("- ")).count(),
            1
        );
        assert!(description.contains("States: KZ&quot;&apos;&amp;"));
        assert_eq!(element(&doc, "event"), "R&amp;d &lt;rule&gt;");
        assert!(doc.contains("Named agencies: &lt;agency/&gt;."));
    }

    #[test]
    fn identifiers_are_percent_encoded_injectively() {
        assert_eq!(id("0123abcd"), "0123abcd");
        assert_eq!(id("a b,c<d&e%f"), "a%20b%2Cc%3Cd%26e%25f");
        assert_eq!(id("a_b"), "a_b");
        assert_ne!(id("a b"), id("a_b"));
        assert_eq!(id("t\u{0}\n\u{a0}"), "t%00%0A%C2%A0");
        assert_eq!(id("q>\"'"), "q&gt;&quot;&apos;");
        assert_eq!(id(""), "%");

        let mut a = alert();
        a.alert_id = "id with, <odd> & chars".into();
        let doc = render(&a, "ewn @rcc", &no_refs, &cat());
        assert_eq!(
            element(&doc, "identifier"),
            "id%20with%2C%20%3Codd&gt;%20%26%20chars"
        );
        assert_eq!(element(&doc, "sender"), "ewn%20@rcc");
    }

    #[test]
    fn times_use_the_cap_form_without_z() {
        assert_eq!(time(0), "1970-01-01T00:00:00+00:00");
        assert_eq!(time(1_790_000_100_999), "2026-09-21T14:15:00+00:00");
        assert_eq!(time(-1), "1969-12-31T23:59:59+00:00");
        assert_eq!(time(i64::MIN), "0001-01-01T00:00:00+00:00");
        assert_eq!(time(i64::MAX), "9999-12-31T23:59:59+00:00");
        assert_eq!(time(MIN_MS), "0001-01-01T00:00:00+00:00");
        assert_eq!(time(MAX_MS), "9999-12-31T23:59:59+00:00");

        let doc = render(&alert(), SENDER, &no_refs, &cat());
        assert_eq!(element(&doc, "sent"), "2026-09-21T14:15:00+00:00");
    }

    #[test]
    fn msg_type_and_references() {
        let mut a = alert();
        let doc = render(&a, SENDER, &no_refs, &cat());
        assert_eq!(element(&doc, "msgType"), "Alert");
        assert!(!doc.contains("<references>"));

        // An Alert that happens to carry references still renders none: CAP ties them to
        // Update and Cancel.
        a.references = vec!["old".into()];
        assert!(!render(&a, SENDER, &no_refs, &cat()).contains("<references>"));

        a.msg_type = MsgType::Update;
        a.references = vec!["known".into(), "lost one".into()];
        let sent = |id: &str| (id == "known").then_some(0);
        let doc = render(&a, SENDER, &sent, &cat());
        assert_eq!(element(&doc, "msgType"), "Update");
        assert_eq!(
            element(&doc, "references"),
            "ewn@rcc.example,known,1970-01-01T00:00:00+00:00 \
             ewn@rcc.example,lost%20one,2026-09-21T14:13:20+00:00"
        );
        assert_eq!(element(&doc, "urgency"), "Expected");

        a.msg_type = MsgType::Cancel;
        let doc = render(&a, SENDER, &sent, &cat());
        assert_eq!(element(&doc, "msgType"), "Cancel");
        assert!(doc.contains("<references>ewn@rcc.example,known,"));
        assert_eq!(element(&doc, "urgency"), "Past");
        assert_eq!(
            element(&doc, "headline"),
            "Cancelled: Cross-border movement"
        );

        a.references.clear();
        let doc = render(&a, SENDER, &sent, &cat());
        assert_eq!(element(&doc, "msgType"), "Cancel");
        assert!(!doc.contains("<references>"));
    }

    #[test]
    fn full_alert_follows_the_xsd_sequence() {
        let mut a = alert();
        a.msg_type = MsgType::Update;
        a.references = vec!["fedcba".into()];
        let doc = render(&a, SENDER, &no_refs, &cat());
        assert!(doc.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<alert xmlns="));
        let order = [
            "<identifier>",
            "<sender>",
            "<sent>",
            "<status>Actual</status>",
            "<msgType>",
            "<scope>Restricted</scope>",
            "<restriction>",
            "<code>",
            "<references>",
            "<info>",
            "<language>",
            "<category>",
            "<event>",
            "<urgency>",
            "<severity>",
            "<certainty>",
            "<senderName>",
            "<headline>",
            "<description>",
            "<parameter>",
            "<area>",
            "<areaDesc>",
            "<circle>",
            "<geocode>",
            "</area>",
            "</info>",
            "</alert>",
        ];
        let at: Vec<usize> = order
            .iter()
            .map(|tag| doc.find(tag).unwrap_or_else(|| panic!("{tag} missing")))
            .collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "{doc}");

        assert_eq!(
            element(&doc, "restriction"),
            "TLP:AMBER+STRICT: recipients may share on a need-to-know basis within their \
             organisation only. Named agencies: KG-GKNB."
        );
        assert_eq!(element(&doc, "code"), "TLP:AMBER+STRICT");
        assert_eq!(element(&doc, "circle"), "44.16670,80.00000 1.0");
        assert!(doc.contains(
            "<geocode>\n        <valueName>ISO3166-2</valueName>\n        <value>KZ-ZHT</value>"
        ));
        assert_eq!(element(&doc, "areaDesc"), "KZ-ZHT");
        assert_eq!(
            element(&doc, "headline"),
            "Update, HIGH: Cross-border movement (score 71)"
        );
        for (name, value) in [
            ("rule", "cross_border_movement"),
            ("score", "71"),
            ("windowStart", "2026-09-21T14:13:20+00:00"),
            ("windowEnd", "2026-09-24T14:13:20+00:00"),
            ("incidentCount", "1"),
            ("evidenceCount", "1"),
        ] {
            let pair = format!("<valueName>{name}</valueName>\n      <value>{value}</value>");
            assert!(doc.contains(&pair), "{pair} in {doc}");
        }
        assert_eq!(
            element(&doc, "description"),
            "Rule cross_border_movement raised level HIGH with score 71.\n\
             Reasons (factor, contribution, detail):\n\
             - category +71: SUSPICIOUS_CROSSING\n\
             Incidents: 7d0e7c1e-5b2a-4a57-9f6c-2f1d8b0c9a11\n\
             States: KZ, KG"
        );
    }

    #[test]
    fn redacted_alert_has_no_area_and_a_short_description() {
        let doc = render(&redacted(), SENDER, &no_refs, &cat());
        assert!(!doc.contains("<area>"));
        assert_eq!(doc.matches("<category>").count(), 1);
        assert_eq!(element(&doc, "category"), "Security");
        assert_eq!(
            element(&doc, "description"),
            "Rule cross_border_movement raised level HIGH with score 71.\nStates: KZ, KG"
        );
        assert!(doc.contains("Named agencies: none named."));
        assert!(doc.ends_with("  </info>\n</alert>\n"));
    }

    #[test]
    fn points_alone_make_an_area_and_bad_points_are_skipped() {
        let mut a = redacted();
        a.points = vec![
            GeoPoint {
                lat: f64::NAN,
                lon: 1.0,
            },
            GeoPoint {
                lat: 91.0,
                lon: 1.0,
            },
            GeoPoint {
                lat: 1.0,
                lon: f64::INFINITY,
            },
            GeoPoint {
                lat: -41.5,
                lon: -0.25,
            },
        ];
        let doc = render(&a, SENDER, &no_refs, &cat());
        assert_eq!(
            element(&doc, "areaDesc"),
            "Locations of the contributing incidents"
        );
        assert_eq!(doc.matches("<circle>").count(), 1);
        assert_eq!(element(&doc, "circle"), "-41.50000,-0.25000 1.0");
        assert!(!doc.contains("<geocode>"));

        a.points[3].lat = 95.0;
        assert!(!render(&a, SENDER, &no_refs, &cat()).contains("<area>"));
    }

    #[test]
    fn area_codes_name_their_scheme() {
        let mut a = redacted();
        a.areas = vec!["UZ-TK".into(), "".into(), "district 7 & co".into()];
        let doc = render(&a, SENDER, &no_refs, &cat());
        assert_eq!(element(&doc, "areaDesc"), "UZ-TK, district 7 &amp; co");
        assert!(doc.contains("<valueName>ISO3166-2</valueName>\n        <value>UZ-TK</value>"));
        assert!(doc.contains(
            "<valueName>EWN-AREA</valueName>\n        <value>district 7 &amp; co</value>"
        ));
        assert_eq!(doc.matches("<geocode>").count(), 2);
        assert!(is_iso_3166_2("KZ-ZHT") && is_iso_3166_2("GB-1"));
        assert!(!is_iso_3166_2("kz-zht") && !is_iso_3166_2("KZ-ZHTX") && !is_iso_3166_2("KZ"));
    }

    #[test]
    fn mapping_tables() {
        let sev: Vec<_> = Level::ALL.iter().map(|l| severity(*l)).collect();
        assert_eq!(sev, ["Minor", "Moderate", "Severe", "Extreme"]);
        let urg: Vec<_> = Level::ALL
            .iter()
            .map(|l| urgency(*l, MsgType::Alert))
            .collect();
        assert_eq!(urg, ["Future", "Future", "Expected", "Immediate"]);
        assert!(
            Level::ALL
                .iter()
                .all(|l| urgency(*l, MsgType::Cancel) == "Past")
        );
        assert_eq!(urgency(Level::Critical, MsgType::Update), "Immediate");

        let cert: Vec<_> = [-5, 0, 24, 25, 49, 50, 100, 400]
            .into_iter()
            .map(certainty)
            .collect();
        assert_eq!(
            cert,
            [
                "Unlikely", "Unlikely", "Unlikely", "Possible", "Possible", "Likely", "Likely",
                "Likely"
            ]
        );

        for c in Category::ALL {
            let cats: Vec<_> = cap_categories(&[*c]).collect();
            let want: &[&str] = match c {
                Category::ExplosivesPrecursor => &["Security", "CBRNE"],
                Category::Cyber => &["Security", "Infra"],
                _ => &["Security"],
            };
            assert_eq!(cats, want, "{c}");
        }
        let all: Vec<_> = cap_categories(Category::ALL).collect();
        assert_eq!(all, ["Security", "Infra", "CBRNE"]);
        assert_eq!(cap_categories(&[]).collect::<Vec<_>>(), ["Security"]);

        let labels: Vec<_> = Tlp::ALL.iter().map(|t| tlp_label(*t)).collect();
        assert_eq!(
            labels,
            [
                "TLP:CLEAR",
                "TLP:GREEN",
                "TLP:AMBER",
                "TLP:AMBER+STRICT",
                "TLP:RED"
            ]
        );
        assert_eq!(msg_type(MsgType::Alert), "Alert");
        assert_eq!(msg_type(MsgType::Update), "Update");
        assert_eq!(msg_type(MsgType::Cancel), "Cancel");
    }

    #[test]
    fn event_is_the_rules_human_name_cut_to_length() {
        use crate::i18n::{EVENT_MAX_CHARS, humanise};
        let ev = humanise;
        assert_eq!(ev("area_burst"), "Area burst");
        assert_eq!(ev("émigré_watch"), "Émigré watch");
        assert_eq!(ev(""), "EWN alert");
        assert_eq!(ev("\u{1}"), "EWN alert");
        let long = ev(&"x".repeat(500));
        assert_eq!(long.chars().count(), EVENT_MAX_CHARS + 1);
        assert!(long.ends_with('…'));
    }

    #[test]
    fn one_info_per_language_in_order_with_the_catalogues_texts() {
        let both = Catalogue::load(&["en-US".to_string(), "ru-RU".to_string()]).unwrap();
        let doc = render(&alert(), SENDER, &no_refs, &both);
        assert_eq!(doc.matches("<info>").count(), 2);
        let en = doc.find("<language>en-US</language>").unwrap();
        let ru = doc.find("<language>ru-RU</language>").unwrap();
        assert!(en < ru);
        let russian = &doc[ru..];
        assert!(russian.contains("<event>Пересечение границы между государствами</event>"));
        assert!(
            russian.contains("<headline>ВЫСОКИЙ: Пересечение границы"),
            "{russian}"
        );
        assert!(
            russian.contains("<instruction>Сверьте субъекта"),
            "{russian}"
        );
        assert!(russian.contains("Инциденты: "), "{russian}");
        // codes and parameters are not translated
        assert!(russian.contains("<severity>Severe</severity>"));
        assert!(russian.contains("<value>cross_border_movement</value>"));
        assert!(doc[en..ru].contains("<instruction>Check the subject"));
        // a rule without its own messages: humanised name, generic instruction
        let mut a = alert();
        a.rule = "night_crossings".into();
        let doc = render(&a, SENDER, &no_refs, &both);
        assert!(doc.contains("<event>Night crossings</event>"));
        assert!(doc.contains("<instruction>Изучите оповещение"));
    }

    #[test]
    fn ordinary_alert_fits_the_initial_capacity() {
        let a = alert();
        let doc = render(&a, SENDER, &no_refs, &cat());
        assert!(doc.len() <= capacity_hint(&a, SENDER), "{}", doc.len());
        // one hint's worth per language
        let both = Catalogue::load(&["en-US".to_string(), "ru-RU".to_string()]).unwrap();
        let doc = render(&a, SENDER, &no_refs, &both);
        assert!(doc.len() <= 2 * capacity_hint(&a, SENDER), "{}", doc.len());
    }
}
