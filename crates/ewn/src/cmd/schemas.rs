//! `ewn schemas`: each wire schema with its Parsing Canonical Form and fingerprints, so a
//! third-party consumer can register or look up EWN's schemas by fingerprint.

use std::process::ExitCode;

use anyhow::bail;
use ewn_model::codec::fingerprint_hex;
use ewn_model::{SchemaInfo, schemas};
use serde_json::json;

#[derive(clap::Args, Debug)]
#[command(after_help = "\
Fingerprints are CRC-64-AVRO (Rabin) of the Parsing Canonical Form, as the Avro \
specification, Java's SchemaNormalization and fastavro compute them, printed as the hex of \
the 8 bytes that follow C3 01 in a single-object-encoded record (little-endian; the form \
fastavro's fingerprint() prints). Records are written with that fingerprint. The legacy \
fingerprint is what EWN wrote before (apache-avro 0.22's canonical form keeps a logical \
type's {\"type\":\"long\"}); readers still accept it during the migration period (README).

Examples:
  ewn schemas
  ewn schemas Incident
  ewn schemas --format json | jq -r .fingerprint

Exit codes: 0 printed, 2 no schema of that name.")]
pub struct Args {
    /// Only this schema: its name (`Incident`), full name (`ewn.v1.Incident`) or file
    /// (`Incident.avsc`).
    pub name: Option<String>,
    /// `text` for people, `json` for one object a line.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

fn matches(info: &SchemaInfo, name: &str) -> bool {
    info.codec.name() == name || info.codec.full_name() == name || info.file == name
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let selected: Vec<SchemaInfo> = schemas()
        .into_iter()
        .filter(|s| args.name.as_deref().is_none_or(|n| matches(s, n)))
        .collect();
    if selected.is_empty() {
        let known: Vec<&str> = schemas().iter().map(|s| s.codec.name()).collect();
        bail!(
            "no schema named `{}`; known: {}",
            args.name.unwrap_or_default(),
            known.join(", ")
        );
    }
    for (i, info) in selected.iter().enumerate() {
        let codec = info.codec;
        let fingerprint = fingerprint_hex(codec.fingerprint());
        let legacy = fingerprint_hex(codec.legacy_fingerprint());
        match args.format {
            Format::Json => println!(
                "{}",
                json!({
                    "name": codec.full_name(),
                    "file": format!("schemas/{}", info.file),
                    "fingerprint": fingerprint,
                    "legacy_fingerprint": legacy,
                    "earlier_fingerprints": codec
                        .earlier_fingerprints()
                        .iter()
                        .map(|[spec, _]| fingerprint_hex(*spec))
                        .collect::<Vec<_>>(),
                    "canonical_form": codec.canonical_form(),
                })
            ),
            Format::Text => {
                if i > 0 {
                    println!();
                }
                println!("{} (schemas/{})", codec.full_name(), info.file);
                println!("  fingerprint         {fingerprint}  (CRC-64-AVRO, written)");
                let note = if legacy == fingerprint {
                    "the same: no logical type"
                } else {
                    "apache-avro 0.22, accepted on read"
                };
                println!("  legacy fingerprint  {legacy}  ({note})");
                // Earlier versions (schemas/history/), oldest first: still read.
                for (v, [spec, old_legacy]) in codec.earlier_fingerprints().iter().enumerate() {
                    println!(
                        "  earlier version v{} {}  (legacy {}, read into the current version)",
                        v + 1,
                        fingerprint_hex(*spec),
                        fingerprint_hex(*old_legacy)
                    );
                }
                println!("  canonical form      {}", codec.canonical_form());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
