//! Avro single-object encoding over apache-avro's schema-aware serde (no `Value` detour).
//!
//! Writers put the specification's fingerprint in the header (see [`crate::canonical`]).
//! Readers also accept the fingerprint apache-avro 0.22 computes ([`Codec::legacy_fingerprint`]),
//! which EWN wrote before: the datum encoding is the same, only the header differs. That
//! acceptance is the migration period the README describes; it ends when no topic holds such
//! records any more.
//!
//! Records written with an earlier version of a schema (`schemas/history/<Name>.v<n>.avsc`,
//! kept when a schema evolves) are read too, by either of that version's fingerprints, through
//! Avro schema resolution into the current version (new fields take their defaults). That
//! path goes through apache-avro's `Value`, so it is slower; it only serves records written
//! before an upgrade.

use std::sync::LazyLock;

use apache_avro::Schema;
use apache_avro::rabin::Rabin;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::writer::datum::GenericDatumWriter;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::canonical::{parsing_canonical_form, rabin_fingerprint};
use crate::error::{Error, Result};

/// The two marker bytes that open every single-object-encoded message.
pub const MAGIC: [u8; 2] = [0xC3, 0x01];
/// Marker plus the 8-byte little-endian CRC-64-AVRO (Rabin) fingerprint.
pub const HEADER_LEN: usize = 10;

/// One schema from `schemas/`, parsed once, with its reader and writer resolved once.
pub struct Codec {
    name: &'static str,
    source: &'static str,
    schema: &'static Schema,
    canonical_form: String,
    fingerprint: [u8; 8],
    legacy_fingerprint: [u8; 8],
    writer: GenericDatumWriter<'static>,
    reader: GenericDatumReader<'static>,
    older: Vec<Older>,
}

/// An earlier version of a schema, and a reader that resolves it into the current one.
struct Older {
    fingerprints: [[u8; 8]; 2],
    reader: GenericDatumReader<'static>,
}

impl Codec {
    /// Builds the codec of an embedded schema. The schemas are compiled into the binary and
    /// checked by tests, so a failure here is a build defect and stops the process loudly.
    fn embedded(name: &'static str, source: &'static str, history: &[&'static str]) -> Codec {
        let schema: &'static Schema =
            Box::leak(Box::new(Schema::parse_str(source).unwrap_or_else(|e| {
                panic!("bug: embedded schema {name} does not parse: {e}")
            })));
        let canonical_form = parsing_canonical_form(source)
            .unwrap_or_else(|e| panic!("bug: embedded schema {name}: {e}"));
        let fingerprint = rabin_fingerprint(canonical_form.as_bytes()).to_le_bytes();
        let mut legacy_fingerprint = [0u8; 8];
        legacy_fingerprint.copy_from_slice(&schema.fingerprint::<Rabin>().bytes);
        let writer = GenericDatumWriter::builder(schema)
            .build()
            .unwrap_or_else(|e| panic!("bug: writer for {name}: {e}"));
        let reader = GenericDatumReader::builder(schema)
            .build()
            .unwrap_or_else(|e| panic!("bug: reader for {name}: {e}"));
        let older = history
            .iter()
            .map(|old| {
                let old_schema: &'static Schema =
                    Box::leak(Box::new(Schema::parse_str(old).unwrap_or_else(|e| {
                        panic!("bug: an earlier version of {name} does not parse: {e}")
                    })));
                let form = parsing_canonical_form(old)
                    .unwrap_or_else(|e| panic!("bug: an earlier version of {name}: {e}"));
                let mut legacy = [0u8; 8];
                legacy.copy_from_slice(&old_schema.fingerprint::<Rabin>().bytes);
                Older {
                    fingerprints: [rabin_fingerprint(form.as_bytes()).to_le_bytes(), legacy],
                    reader: GenericDatumReader::builder(old_schema)
                        .reader_schema(schema)
                        .build()
                        .unwrap_or_else(|e| {
                            panic!("bug: an earlier version of {name} does not resolve: {e}")
                        }),
                }
            })
            .collect();
        Codec {
            name,
            source,
            schema,
            canonical_form,
            fingerprint,
            legacy_fingerprint,
            writer,
            reader,
            older,
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn schema(&self) -> &'static Schema {
        self.schema
    }

    /// The `.avsc` text the codec was built from.
    pub fn source(&self) -> &'static str {
        self.source
    }

    /// The schema's full name, e.g. `ewn.v1.Incident`.
    pub fn full_name(&self) -> String {
        self.schema
            .name()
            .map_or_else(|| self.name.to_string(), |n| n.fullname(None))
    }

    /// The schema's Parsing Canonical Form, as the Avro specification defines it.
    pub fn canonical_form(&self) -> &str {
        &self.canonical_form
    }

    /// The CRC-64-AVRO (Rabin) fingerprint of [`Codec::canonical_form`], little-endian as
    /// single-object encoding carries it: what Java's `SchemaNormalization` and fastavro
    /// compute, and what every record is written with.
    pub fn fingerprint(&self) -> [u8; 8] {
        self.fingerprint
    }

    /// The fingerprint apache-avro 0.22 computes for the schema (its canonical form keeps
    /// `{"type":"long"}` where a logical type was, AVRO-4004), which EWN wrote before.
    /// Accepted on read during the migration period, never written. Equal to
    /// [`Codec::fingerprint`] for a schema without logical types.
    pub fn legacy_fingerprint(&self) -> [u8; 8] {
        self.legacy_fingerprint
    }

    /// True when `fingerprint` names this schema, by the specification or the legacy way,
    /// in its current or an earlier version.
    pub fn accepts(&self, fingerprint: [u8; 8]) -> bool {
        self.is_current(fingerprint)
            || self
                .older
                .iter()
                .any(|o| o.fingerprints.contains(&fingerprint))
    }

    fn is_current(&self, fingerprint: [u8; 8]) -> bool {
        fingerprint == self.fingerprint || fingerprint == self.legacy_fingerprint
    }

    /// The fingerprints (specification, legacy) of the earlier versions read.
    pub fn earlier_fingerprints(&self) -> Vec<[[u8; 8]; 2]> {
        self.older.iter().map(|o| o.fingerprints).collect()
    }

    /// Appends the single-object encoding of `value` to `out`.
    pub fn encode_into<T: Serialize>(&self, value: &T, out: &mut Vec<u8>) -> Result<()> {
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&self.fingerprint);
        self.writer
            .write_ser(out, value)
            .map(|_| ())
            .map_err(|e| Error::Encode {
                schema: self.name,
                message: e.to_string(),
            })
    }

    pub fn encode<T: Serialize>(&self, value: &T) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(256);
        self.encode_into(value, &mut out)?;
        Ok(out)
    }

    /// Decodes a single-object-encoded message, refusing another schema's fingerprint and
    /// any bytes left over after the datum. Either fingerprint of the schema is accepted.
    pub fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T> {
        let fingerprint = split_header(bytes)?;
        let mut datum = &bytes[HEADER_LEN..];
        let decode_error = |e: apache_avro::Error| Error::Decode {
            schema: self.name,
            message: e.to_string(),
        };
        let value = if self.is_current(fingerprint) {
            self.reader.read_deser(&mut datum).map_err(decode_error)?
        } else if let Some(old) = self
            .older
            .iter()
            .find(|o| o.fingerprints.contains(&fingerprint))
        {
            let resolved = old.reader.read_value(&mut datum).map_err(decode_error)?;
            apache_avro::from_value(&resolved).map_err(decode_error)?
        } else {
            return Err(Error::WrongSchema {
                expected: self.name,
                fingerprint: fingerprint_hex(fingerprint),
            });
        };
        if !datum.is_empty() {
            return Err(Error::TrailingBytes {
                schema: self.name,
                trailing: datum.len(),
            });
        }
        Ok(value)
    }
}

/// Checks the single-object marker and returns the fingerprint.
pub fn split_header(bytes: &[u8]) -> Result<[u8; 8]> {
    if bytes.len() < HEADER_LEN {
        return Err(Error::NotSingleObject("shorter than the 10-byte header"));
    }
    if bytes[..2] != MAGIC {
        return Err(Error::NotSingleObject("missing the C3 01 marker"));
    }
    let mut fingerprint = [0u8; 8];
    fingerprint.copy_from_slice(&bytes[2..HEADER_LEN]);
    Ok(fingerprint)
}

pub fn fingerprint_hex(fingerprint: [u8; 8]) -> String {
    fingerprint.iter().map(|b| format!("{b:02x}")).collect()
}

/// A type with a schema in `schemas/`.
pub trait AvroRecord: Serialize + DeserializeOwned {
    fn codec() -> &'static Codec;

    fn to_avro(&self) -> Result<Vec<u8>> {
        Self::codec().encode(self)
    }

    fn from_avro(bytes: &[u8]) -> Result<Self> {
        Self::codec().decode(bytes)
    }
}

/// Name and codec of each schema, so a reader can find a schema by fingerprint.
pub struct SchemaInfo {
    pub file: &'static str,
    pub codec: &'static Codec,
}

macro_rules! schemas {
    ($($ty:ident => $file:literal [$($old:literal),*]),+ $(,)?) => {
        $(
            impl AvroRecord for crate::types::$ty {
                fn codec() -> &'static Codec {
                    static CODEC: LazyLock<Codec> = LazyLock::new(|| {
                        Codec::embedded(
                            stringify!($ty),
                            include_str!(concat!("../../../schemas/", $file)),
                            &[$(include_str!(concat!("../../../schemas/history/", $old))),*],
                        )
                    });
                    &CODEC
                }
            }
        )+

        /// Every schema of `schemas/`, in a fixed order.
        pub fn schemas() -> Vec<SchemaInfo> {
            vec![$(SchemaInfo { file: $file, codec: <crate::types::$ty as AvroRecord>::codec() }),+]
        }
    };
}

// Each schema with its earlier versions (oldest first) in `schemas/history/`.
schemas! {
    Incident => "Incident.avsc" [],
    SignedIncident => "SignedIncident.avsc" ["SignedIncident.v1.avsc"],
    Alert => "Alert.avsc" ["Alert.v1.avsc"],
    Rejection => "Rejection.avsc" ["Rejection.v1.avsc", "Rejection.v2.avsc"],
    DeliveryReceipt => "DeliveryReceipt.avsc" [],
    DeliveryRetry => "DeliveryRetry.avsc" [],
    Ack => "Ack.avsc" [],
    Subscription => "Subscription.avsc" ["Subscription.v1.avsc"],
    ScoredIncident => "ScoredIncident.avsc" ["ScoredIncident.v1.avsc"],
    Heartbeat => "Heartbeat.avsc" [],
    SignedHeartbeat => "SignedHeartbeat.avsc" [],
    AuditRecord => "AuditRecord.avsc" [],
    CaseRequest => "CaseRequest.avsc" [],
    CaseResponse => "CaseResponse.avsc" ["CaseResponse.v1.avsc"],
}

/// Finds the schema a single-object-encoded message was written with, by its specification
/// or its legacy fingerprint.
pub fn schema_by_fingerprint(fingerprint: [u8; 8]) -> Option<&'static Codec> {
    static ALL: LazyLock<Vec<&'static Codec>> =
        LazyLock::new(|| schemas().into_iter().map(|s| s.codec).collect());
    ALL.iter().copied().find(|c| c.accepts(fingerprint))
}
