//! The Rust types against `schemas/*.avsc`, the source of truth.

#![allow(clippy::unwrap_used)] // tests fail loudly on anything unexpected

use apache_avro::Schema;
use apache_avro::schema::RecordSchema;
use ewn_model::codec::{HEADER_LEN, split_header};
use ewn_model::*;

fn record(schema: &Schema) -> &RecordSchema {
    match schema {
        Schema::Record(r) => r,
        other => panic!("expected a record schema, got {other:?}"),
    }
}

/// Field names, in order, as serde sees the type (serde_json keeps declaration order).
fn serde_fields<T: serde::Serialize>(value: &T) -> Vec<String> {
    let json = serde_json::to_string(value).unwrap();
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str::<serde_json::Value>(&json)
            .map(|v| match v {
                serde_json::Value::Object(m) => m,
                _ => panic!("not an object"),
            })
            .unwrap();
    let mut keys: Vec<(usize, String)> = map
        .keys()
        .map(|k| (json.find(&format!("\"{k}\":")).unwrap(), k.clone()))
        .collect();
    keys.sort();
    keys.into_iter().map(|(_, k)| k).collect()
}

fn check<T: AvroRecord + PartialEq + std::fmt::Debug>(value: T) {
    let codec = T::codec();
    let schema_fields: Vec<String> = record(codec.schema())
        .fields
        .iter()
        .map(|f| f.name.clone())
        .collect();
    assert_eq!(
        serde_fields(&value),
        schema_fields,
        "{}: field order differs",
        codec.name()
    );
    let bytes = value.to_avro().unwrap();
    assert_eq!(&bytes[..2], &[0xC3, 0x01]);
    assert_eq!(split_header(&bytes).unwrap(), codec.fingerprint());
    let back = T::from_avro(&bytes).unwrap();
    assert_eq!(back, value, "{}: round trip", codec.name());
    // apache-avro's generic (Value) reader agrees with our schema-aware path.
    let value_tree = apache_avro::reader::datum::GenericDatumReader::builder(codec.schema())
        .build()
        .unwrap()
        .read_value(&mut &bytes[HEADER_LEN..])
        .unwrap();
    assert!(value_tree.validate(codec.schema()));
}

#[test]
fn every_type_round_trips_and_matches_its_schema() {
    check(samples::incident());
    check(samples::signed_incident());
    check(samples::alert());
    check(samples::rejection());
    check(samples::delivery_receipt());
    check(samples::ack());
    check(samples::subscription());
    check(samples::scored_incident());
}

#[test]
fn every_schema_file_is_embedded_and_parses() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas");
    let mut on_disk: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".avsc"))
        .collect();
    on_disk.sort();
    let mut embedded: Vec<String> = schemas().iter().map(|s| s.file.to_string()).collect();
    embedded.sort();
    assert_eq!(
        on_disk, embedded,
        "every schemas/*.avsc has a Rust type and back"
    );
    for info in schemas() {
        let text = std::fs::read_to_string(format!("{dir}/{}", info.file)).unwrap();
        assert_eq!(
            text,
            info.codec.source(),
            "{} embedded copy is current",
            info.file
        );
        Schema::parse_str(&text).unwrap();
    }
}

fn enum_symbols(schema: &Schema, name: &str) -> Vec<String> {
    fn walk(schema: &Schema, name: &str, out: &mut Option<Vec<String>>) {
        match schema {
            Schema::Enum(e) if e.name.name() == name => *out = Some(e.symbols.clone()),
            Schema::Record(r) => r.fields.iter().for_each(|f| walk(&f.schema, name, out)),
            Schema::Array(a) => walk(&a.items, name, out),
            Schema::Map(m) => walk(&m.types, name, out),
            Schema::Union(u) => u.variants().iter().for_each(|v| walk(v, name, out)),
            _ => {}
        }
    }
    let mut out = None;
    walk(schema, name, &mut out);
    out.unwrap_or_else(|| panic!("enum {name} not in schema"))
}

fn strs<T: std::fmt::Display>(all: &[T]) -> Vec<String> {
    all.iter().map(|v| v.to_string()).collect()
}

#[test]
fn enum_symbols_match_schema_order() {
    let incident = Incident::codec().schema();
    assert_eq!(strs(Category::ALL), enum_symbols(incident, "Category"));
    assert_eq!(strs(Level::ALL), enum_symbols(incident, "Level"));
    assert_eq!(
        strs(SourceReliability::ALL),
        enum_symbols(incident, "SourceReliability")
    );
    assert_eq!(strs(Tlp::ALL), enum_symbols(incident, "Tlp"));
    assert_eq!(strs(Direction::ALL), enum_symbols(incident, "Direction"));
    assert_eq!(
        strs(SubjectKind::ALL),
        enum_symbols(incident, "SubjectKind")
    );
    let alert = Alert::codec().schema();
    assert_eq!(strs(MsgType::ALL), enum_symbols(alert, "MsgType"));
    for (schema, name) in [
        (alert, "Category"),
        (Subscription::codec().schema(), "Category"),
    ] {
        assert_eq!(strs(Category::ALL), enum_symbols(schema, name));
    }
    for schema in [
        alert,
        Subscription::codec().schema(),
        DeliveryReceipt::codec().schema(),
    ] {
        assert_eq!(strs(Tlp::ALL), enum_symbols(schema, "Tlp"));
    }
    assert_eq!(
        strs(Level::ALL),
        enum_symbols(Subscription::codec().schema(), "Level")
    );
    assert_eq!(
        strs(RejectReason::ALL),
        enum_symbols(Rejection::codec().schema(), "RejectReason")
    );
    let receipt = DeliveryReceipt::codec().schema();
    assert_eq!(strs(Channel::ALL), enum_symbols(receipt, "Channel"));
    assert_eq!(strs(Format::ALL), enum_symbols(receipt, "Format"));
    assert_eq!(
        strs(DeliveryOutcome::ALL),
        enum_symbols(receipt, "DeliveryOutcome")
    );
    assert_eq!(
        strs(AckVia::ALL),
        enum_symbols(Ack::codec().schema(), "AckVia")
    );
}

#[test]
fn fingerprint_is_the_spec_rabin_little_endian() {
    // CRC-64-AVRO of the canonical form "null" is 0x63dd24e7cc258f8a (Avro specification
    // test vector); single-object headers carry it little-endian.
    let fp = Schema::Null
        .fingerprint::<apache_avro::rabin::Rabin>()
        .bytes;
    assert_eq!(fp, 0x63dd_24e7_cc25_8f8a_u64.to_le_bytes());
}

#[test]
fn fingerprints_are_distinct_and_findable() {
    for info in schemas() {
        let found = schema_by_fingerprint(info.codec.fingerprint()).unwrap();
        assert_eq!(found.name(), info.codec.name());
    }
}

#[test]
fn hostile_bytes_are_errors_not_panics() {
    let good = samples::incident().to_avro().unwrap();
    assert!(matches!(
        Incident::from_avro(&[]),
        Err(Error::NotSingleObject(_))
    ));
    assert!(matches!(
        Incident::from_avro(&good[1..]),
        Err(Error::NotSingleObject(_))
    ));
    let alert = samples::alert().to_avro().unwrap();
    assert!(matches!(
        Incident::from_avro(&alert),
        Err(Error::WrongSchema { .. })
    ));
    let mut trailing = good.clone();
    trailing.push(0);
    assert!(matches!(
        Incident::from_avro(&trailing),
        Err(Error::TrailingBytes { .. })
    ));
    for cut in HEADER_LEN..good.len() {
        assert!(
            Incident::from_avro(&good[..cut]).is_err(),
            "truncated at {cut}"
        );
    }
    // A huge declared string length must not allocate it.
    let mut huge = good[..HEADER_LEN].to_vec();
    huge.extend_from_slice(&[0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]);
    assert!(Incident::from_avro(&huge).is_err());
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..400)) {
            let mut bytes = Incident::codec().fingerprint().to_vec();
            bytes.splice(0..0, [0xC3, 0x01]);
            bytes.extend(tail);
            let _ = Incident::from_avro(&bytes);
            let _ = SignedIncident::from_avro(&bytes);
        }

        #[test]
        fn flipped_bits_never_panic(pos in 0usize..200, bit in 0u8..8) {
            let mut bytes = samples::incident().to_avro().unwrap();
            let pos = pos % bytes.len();
            bytes[pos] ^= 1 << bit;
            let _ = Incident::from_avro(&bytes);
        }
    }
}
