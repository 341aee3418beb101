//! Reading a desk's CAP 1.2 `Ack`: a `<alert>` with `<msgType>Ack</msgType>` whose
//! `<references>` name the alerts it acknowledges (`sender,identifier,sent`, space
//! separated). The input is hostile: no DTD is accepted (so no entity expansion), only the
//! five predefined entities and character references are resolved, and sizes are bounded.

use quick_xml::Reader;
use quick_xml::events::Event;

/// What an Ack says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapAck {
    pub identifier: String,
    pub sender: String,
    /// The identifiers of the acknowledged alerts, percent-decoded.
    pub acknowledged: Vec<String>,
    pub note: Option<String>,
}

const MAX_FIELD_BYTES: usize = 8 * 1024;
const MAX_REFERENCES: usize = 64;

fn entity(name: &str) -> Option<char> {
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        _ => {
            let num = name.strip_prefix('#')?;
            let code = match num.strip_prefix('x') {
                Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                None => num.parse().ok()?,
            };
            char::from_u32(code)?
        }
    })
}

/// Undoes the percent-encoding `cap::render` applies to identifiers.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Parses a CAP `Ack`; the error names what is wrong.
pub fn parse_ack(xml: &[u8]) -> Result<CapAck, String> {
    let mut reader = Reader::from_reader(xml);
    let mut buf = Vec::new();
    let mut depth = 0usize;
    let mut current: Option<String> = None;
    let mut text = String::new();
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut root_seen = false;
    loop {
        let event = reader.read_event_into(&mut buf).map_err(|e| {
            format!(
                "not well-formed XML at byte {}: {e}",
                reader.buffer_position()
            )
        })?;
        match event {
            Event::DocType(_) => return Err("a DTD is not accepted".into()),
            Event::Start(e) => {
                depth += 1;
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                if depth == 1 {
                    if name != "alert" || root_seen {
                        return Err(format!("the root element must be <alert>, not <{name}>"));
                    }
                    root_seen = true;
                } else if depth == 2 {
                    current = Some(name);
                    text.clear();
                }
            }
            Event::Empty(e) if depth == 0 => {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                return Err(format!(
                    "the root element must be a non-empty <alert>, not <{name}/>"
                ));
            }
            Event::End(_) => {
                if depth == 2
                    && let Some(name) = current.take()
                {
                    fields.push((name, std::mem::take(&mut text)));
                }
                depth = depth.saturating_sub(1);
            }
            Event::Text(t) if depth == 2 && current.is_some() => {
                let s = t.decode().map_err(|e| format!("text is not UTF-8: {e}"))?;
                text.push_str(&s);
            }
            Event::GeneralRef(r) if depth == 2 && current.is_some() => {
                let name = String::from_utf8_lossy(&r).into_owned();
                let c = entity(&name).ok_or_else(|| format!("unknown entity &{name};"))?;
                text.push(c);
            }
            Event::CData(c) if depth == 2 && current.is_some() => {
                text.push_str(&String::from_utf8_lossy(&c));
            }
            Event::Eof if depth > 0 => {
                return Err("not well-formed XML: an element is not closed".into());
            }
            Event::Eof => break,
            _ => {}
        }
        if text.len() > MAX_FIELD_BYTES {
            return Err(format!("a field is longer than {MAX_FIELD_BYTES} bytes"));
        }
        buf.clear();
    }
    if !root_seen {
        return Err("no <alert> element".into());
    }
    let field = |name: &str| {
        fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.trim().to_string())
    };
    match field("msgType").as_deref() {
        Some("Ack") => {}
        Some(other) => {
            return Err(format!(
                "msgType is `{}`; only Ack is accepted here",
                other.chars().take(20).collect::<String>()
            ));
        }
        None => return Err("no <msgType>".into()),
    }
    let identifier = field("identifier").ok_or("no <identifier>")?;
    let sender = field("sender").ok_or("no <sender>")?;
    let references = field("references").ok_or("an Ack needs <references>")?;
    let mut acknowledged = Vec::new();
    for triple in references.split_whitespace() {
        let parts: Vec<&str> = triple.split(',').collect();
        let [_, id, _] = parts[..] else {
            return Err("each reference is sender,identifier,sent".into());
        };
        let id = percent_decode(id).ok_or("a referenced identifier is badly percent-encoded")?;
        acknowledged.push(id);
        if acknowledged.len() > MAX_REFERENCES {
            return Err(format!("more than {MAX_REFERENCES} references"));
        }
    }
    if acknowledged.is_empty() {
        return Err("an Ack needs at least one reference".into());
    }
    Ok(CapAck {
        identifier,
        sender,
        acknowledged,
        note: field("note").filter(|n| !n.is_empty()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACK: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">
  <identifier>kg-desk-ack-1</identifier>
  <sender>desk@gknb.kg.example</sender>
  <sent>2026-11-22T03:00:00+00:00</sent>
  <status>Actual</status>
  <msgType>Ack</msgType>
  <scope>Restricted</scope>
  <restriction>TLP:AMBER</restriction>
  <references>ewn@rcc.example,a1b2,2026-11-22T02:59:00+00:00 ewn@rcc.example,c%2Cd,2026-11-22T02:59:30+00:00</references>
  <note>seen &amp; passed to the duty officer</note>
</alert>"#;

    #[test]
    fn an_ack_names_what_it_acknowledges() {
        let a = parse_ack(ACK.as_bytes()).unwrap();
        assert_eq!(a.acknowledged, ["a1b2", "c,d"]);
        assert_eq!(a.note.as_deref(), Some("seen & passed to the duty officer"));
        assert_eq!(a.sender, "desk@gknb.kg.example");
    }

    #[test]
    fn hostile_or_wrong_documents_are_refused_with_a_reason() {
        let cases = [
            (ACK.replace("<msgType>Ack", "<msgType>Alert"), "only Ack"),
            (
                ACK.replace("<references>", "<x>")
                    .replace("</references>", "</x>"),
                "needs <references>",
            ),
            (
                format!("<!DOCTYPE alert [<!ENTITY x \"boom\">]>{}", &ACK[39..]),
                "DTD",
            ),
            (ACK.replace("&amp;", "&x;"), "unknown entity"),
            (ACK.replace("</alert>", ""), "well-formed"),
            ("<feed/>".to_string(), "root element"),
            (ACK.replace(",a1b2,", ",a1b2"), "sender,identifier,sent"),
        ];
        for (doc, want) in cases {
            let e = parse_ack(doc.as_bytes()).unwrap_err();
            assert!(e.contains(want), "{want}: {e}");
        }
    }
}
