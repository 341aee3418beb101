//! The schema fingerprint as the Avro specification defines it: CRC-64-AVRO (Rabin) of the
//! schema's Parsing Canonical Form.
//!
//! apache-avro 0.22 keeps `{"type":"long"}` in the canonical form where a logical type was
//! (`{"type":"long","logicalType":"timestamp-millis"}`); the specification strips every
//! attribute but the parsing ones, which leaves a primitive in its simple form, `"long"`
//! (apache/avro AVRO-4004). Java's `SchemaNormalization` and fastavro follow the
//! specification, so a reader that looks schemas up by fingerprint only finds ours if we do
//! too. The form is therefore computed here from the schema's JSON text, rule by rule:
//!
//! - PRIMITIVES: `{"type":"int", ...}` becomes `"int"`;
//! - FULLNAMES: every name, defined or referenced, is written as its full name, and the
//!   `namespace` attribute goes;
//! - STRIP: only `type`, `name`, `fields`, `symbols`, `items`, `values` and `size` remain
//!   (no `doc`, `aliases`, `default`, `order`, `logicalType`, ...);
//! - ORDER: in that order (`name` first);
//! - STRINGS, INTEGERS, WHITESPACE: plain UTF-8 strings, integers without leading zeros or
//!   quotes, no white space outside strings.

use std::collections::HashSet;

use serde_json::{Map, Value};

use crate::error::{Error, Result};

const PRIMITIVES: [&str; 8] = [
    "null", "boolean", "int", "long", "float", "double", "bytes", "string",
];

/// The Parsing Canonical Form of a schema given as JSON text.
pub fn parsing_canonical_form(schema_json: &str) -> Result<String> {
    let json: Value = serde_json::from_str(schema_json)
        .map_err(|e| Error::InvalidSchema(format!("not json: {e}")))?;
    let mut form = Form {
        out: String::with_capacity(schema_json.len()),
        defined: HashSet::new(),
    };
    form.schema(&json, "")?;
    Ok(form.out)
}

/// The 64-bit CRC-64-AVRO (Rabin) fingerprint of `bytes`, as the specification's reference
/// algorithm computes it. Single-object encoding writes it little-endian.
pub fn rabin_fingerprint(bytes: &[u8]) -> u64 {
    let mut fp = EMPTY;
    for &b in bytes {
        fp = (fp >> 8) ^ TABLE[((fp ^ u64::from(b)) & 0xff) as usize];
    }
    fp
}

/// The fingerprint of the empty input; also the generator of the table below.
const EMPTY: u64 = 0xc15d_213a_a4d7_a795;

const TABLE: [u64; 256] = {
    let mut table = [0u64; 256];
    let mut i = 0;
    while i < 256 {
        let mut fp = i as u64;
        let mut bit = 0;
        while bit < 8 {
            // Shift right; fold the generator in when the bit shifted out was set.
            fp = (fp >> 1) ^ (EMPTY & (fp & 1).wrapping_neg());
            bit += 1;
        }
        table[i] = fp;
        i += 1;
    }
    table
};

struct Form {
    out: String,
    /// Full names defined so far, to resolve references the way a parser does.
    defined: HashSet<String>,
}

impl Form {
    /// Writes `schema`, whose enclosing namespace is `ns` ("" for none).
    fn schema(&mut self, schema: &Value, ns: &str) -> Result<()> {
        match schema {
            Value::String(name) => self.reference(name, ns),
            Value::Array(branches) => {
                self.out.push('[');
                for (i, branch) in branches.iter().enumerate() {
                    if i > 0 {
                        self.out.push(',');
                    }
                    self.schema(branch, ns)?;
                }
                self.out.push(']');
                Ok(())
            }
            Value::Object(attrs) => self.object(attrs, ns),
            other => Err(Error::InvalidSchema(format!(
                "a schema is a string, an array or an object, not {other}"
            ))),
        }
    }

    fn object(&mut self, attrs: &Map<String, Value>, ns: &str) -> Result<()> {
        let kind = match attrs.get("type") {
            Some(Value::String(kind)) => kind.as_str(),
            // `{"type": {...}}` or `{"type": [...]}` wraps a schema: the wrapper goes.
            Some(inner @ (Value::Object(_) | Value::Array(_))) => return self.schema(inner, ns),
            _ => return Err(Error::InvalidSchema("an object without a `type`".into())),
        };
        match kind {
            // The logical types end here: only `type` survives STRIP, so PRIMITIVES applies.
            k if PRIMITIVES.contains(&k) => {
                self.string(k);
                Ok(())
            }
            "record" | "error" => {
                let full = self.define(attrs, ns)?;
                let inner_ns = namespace_of(&full).to_string();
                // The specification keeps `type` as written; every implementation we check
                // against (Java, fastavro) writes "record" for errors too.
                self.out.push_str(",\"type\":\"record\",\"fields\":[");
                let fields = match attrs.get("fields") {
                    Some(Value::Array(fields)) => fields,
                    _ => return Err(Error::InvalidSchema(format!("{full}: no `fields` array"))),
                };
                for (i, field) in fields.iter().enumerate() {
                    if i > 0 {
                        self.out.push(',');
                    }
                    let (Some(Value::String(name)), Some(ty)) =
                        (field.get("name"), field.get("type"))
                    else {
                        return Err(Error::InvalidSchema(format!(
                            "{full}: field {i} needs a `name` and a `type`"
                        )));
                    };
                    self.out.push_str("{\"name\":");
                    self.string(name);
                    self.out.push_str(",\"type\":");
                    self.schema(ty, &inner_ns)?;
                    self.out.push('}');
                }
                self.out.push_str("]}");
                Ok(())
            }
            "enum" => {
                let full = self.define(attrs, ns)?;
                self.out.push_str(",\"type\":\"enum\",\"symbols\":[");
                let symbols = match attrs.get("symbols") {
                    Some(Value::Array(symbols)) => symbols,
                    _ => return Err(Error::InvalidSchema(format!("{full}: no `symbols` array"))),
                };
                for (i, symbol) in symbols.iter().enumerate() {
                    let Value::String(symbol) = symbol else {
                        return Err(Error::InvalidSchema(format!(
                            "{full}: symbol {i} is not a string"
                        )));
                    };
                    if i > 0 {
                        self.out.push(',');
                    }
                    self.string(symbol);
                }
                self.out.push_str("]}");
                Ok(())
            }
            "fixed" => {
                let full = self.define(attrs, ns)?;
                let size = attrs.get("size").and_then(size_of).ok_or_else(|| {
                    Error::InvalidSchema(format!("{full}: `size` is not a non-negative integer"))
                })?;
                self.out.push_str(",\"type\":\"fixed\",\"size\":");
                self.out.push_str(&size.to_string());
                self.out.push('}');
                Ok(())
            }
            "array" => {
                let items = attrs
                    .get("items")
                    .ok_or_else(|| Error::InvalidSchema("an array without `items`".into()))?;
                self.out.push_str("{\"type\":\"array\",\"items\":");
                self.schema(items, ns)?;
                self.out.push('}');
                Ok(())
            }
            "map" => {
                let values = attrs
                    .get("values")
                    .ok_or_else(|| Error::InvalidSchema("a map without `values`".into()))?;
                self.out.push_str("{\"type\":\"map\",\"values\":");
                self.schema(values, ns)?;
                self.out.push('}');
                Ok(())
            }
            // `{"type": "ewn.v1.Tlp"}`: a reference in object form.
            name => self.reference(name, ns),
        }
    }

    /// Opens a named type's object with its full name and records the definition.
    fn define(&mut self, attrs: &Map<String, Value>, ns: &str) -> Result<String> {
        let Some(Value::String(name)) = attrs.get("name") else {
            return Err(Error::InvalidSchema("a named type without a `name`".into()));
        };
        let full = if name.contains('.') {
            name.clone()
        } else {
            // An explicit namespace, even "", replaces the enclosing one.
            let space = match attrs.get("namespace") {
                Some(Value::String(space)) => space.as_str(),
                Some(Value::Null) | None => ns,
                Some(other) => {
                    return Err(Error::InvalidSchema(format!(
                        "{name}: `namespace` is not a string: {other}"
                    )));
                }
            };
            qualify(name, space)
        };
        if !self.defined.insert(full.clone()) {
            return Err(Error::InvalidSchema(format!("{full} is defined twice")));
        }
        self.out.push_str("{\"name\":");
        self.string(&full);
        Ok(full)
    }

    /// A primitive or a reference to a named type defined earlier.
    fn reference(&mut self, name: &str, ns: &str) -> Result<()> {
        if PRIMITIVES.contains(&name) {
            self.string(name);
            return Ok(());
        }
        let candidates = [qualify(name, ns), name.to_string()];
        let Some(full) = candidates.into_iter().find(|c| self.defined.contains(c)) else {
            return Err(Error::InvalidSchema(format!(
                "`{name}` is neither a primitive nor a type defined before it"
            )));
        };
        self.string(&full);
        Ok(())
    }

    fn string(&mut self, s: &str) {
        // serde_json writes non-ASCII characters as UTF-8 and escapes only what JSON requires.
        self.out.push_str(&Value::from(s).to_string());
    }
}

fn qualify(name: &str, ns: &str) -> String {
    if name.contains('.') || ns.is_empty() {
        name.to_string()
    } else {
        format!("{ns}.{name}")
    }
}

fn namespace_of(full: &str) -> &str {
    full.rsplit_once('.').map_or("", |(ns, _)| ns)
}

fn size_of(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        // INTEGERS: a quoted size is read as the number it spells.
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn rabin_matches_the_specification_vectors() {
        // The specification's reference algorithm leaves EMPTY for no input; "null" is the
        // canonical form of the null schema, 0x63dd24e7cc258f8a in Java and fastavro.
        assert_eq!(rabin_fingerprint(b""), EMPTY);
        assert_eq!(rabin_fingerprint(b"\"null\""), 0x63dd_24e7_cc25_8f8a);
    }

    // The expected forms below are what fastavro 1.13.1 prints for the same schemas:
    // `python -c 'import json,sys; from fastavro.schema import parse_schema, to_parsing_canonical_form as f;
    //  print(f(parse_schema(json.load(sys.stdin))))' < schema.json`, run in the test venv.
    #[test]
    fn logical_types_and_other_attributes_are_stripped() {
        let form = parsing_canonical_form(
            r#"{"type": "record", "name": "R", "namespace": "a.b", "doc": "x", "aliases": ["Q"],
                "fields": [
                  {"name": "t", "type": {"type": "long", "logicalType": "timestamp-millis"},
                   "doc": "d", "default": 0, "order": "descending"},
                  {"name": "i", "type": {"type": "int"}},
                  {"name": "d", "type": {"type": "fixed", "name": "Dec", "size": 16,
                                         "logicalType": "decimal", "precision": 4}}
                ]}"#,
        )
        .unwrap();
        assert_eq!(
            form,
            r#"{"name":"a.b.R","type":"record","fields":[{"name":"t","type":"long"},{"name":"i","type":"int"},{"name":"d","type":{"name":"a.b.Dec","type":"fixed","size":16}}]}"#
        );
    }

    #[test]
    fn names_are_full_and_references_resolve_in_their_namespace() {
        let form = parsing_canonical_form(
            r#"{"type": "record", "name": "Outer", "namespace": "n1", "fields": [
                 {"name": "a", "type": {"type": "enum", "name": "E", "symbols": ["X", "Y"]}},
                 {"name": "b", "type": {"type": "record", "name": "Inner", "namespace": "n2",
                   "fields": [{"name": "c", "type": ["null", "n1.E"]},
                              {"name": "d", "type": {"type": "enum", "name": "F", "symbols": ["Z"]}}]}},
                 {"name": "e", "type": {"type": "array", "items": "E"}},
                 {"name": "f", "type": {"type": "map", "values": "n2.F"}},
                 {"name": "g", "type": {"type": "record", "name": "other.G", "fields": [
                   {"name": "h", "type": {"type": "fixed", "name": "H", "size": 2}}]}},
                 {"name": "i", "type": "other.H"}
               ]}"#,
        )
        .unwrap();
        assert_eq!(
            form,
            concat!(
                r#"{"name":"n1.Outer","type":"record","fields":["#,
                r#"{"name":"a","type":{"name":"n1.E","type":"enum","symbols":["X","Y"]}},"#,
                r#"{"name":"b","type":{"name":"n2.Inner","type":"record","fields":["#,
                r#"{"name":"c","type":["null","n1.E"]},"#,
                r#"{"name":"d","type":{"name":"n2.F","type":"enum","symbols":["Z"]}}]}},"#,
                r#"{"name":"e","type":{"type":"array","items":"n1.E"}},"#,
                r#"{"name":"f","type":{"type":"map","values":"n2.F"}},"#,
                r#"{"name":"g","type":{"name":"other.G","type":"record","fields":["#,
                r#"{"name":"h","type":{"name":"other.H","type":"fixed","size":2}}]}},"#,
                r#"{"name":"i","type":"other.H"}]}"#
            )
        );
    }

    #[test]
    fn malformed_schemas_are_errors() {
        for bad in [
            "not json",
            "3",
            r#"{"name": "x"}"#,
            r#""Undefined""#,
            r#"{"type": "record", "name": "R"}"#,
            r#"{"type": "enum", "name": "E", "symbols": [1]}"#,
            r#"{"type": "fixed", "name": "F", "size": -1}"#,
            r#"{"type": "array"}"#,
            r#"["int", {"type": "enum", "name": "E", "symbols": []}, {"type": "enum", "name": "E", "symbols": []}]"#,
        ] {
            assert!(
                matches!(parsing_canonical_form(bad), Err(Error::InvalidSchema(_))),
                "{bad}"
            );
        }
    }
}
