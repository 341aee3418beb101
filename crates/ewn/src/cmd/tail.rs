//! `ewn tail`: read a topic, decode each record and, for incidents, verify it.
//!
//! One JSON object per line on stdout (indented with `--format pretty`), each with the
//! record's topic, partition, offset, key and timestamp. Incidents carry
//! `"verified": true|false` and, when false, a lower-case `reason` code from the closed set
//! of `RejectReason` plus a detail; a record that fails verification has its contents
//! withheld: they are not trustworthy. `--no-verify` shows incidents decoded but unverified
//! (`"verified": null`). Start, partition, key and state filters and `--exit-at-end` are
//! what users of kcat expect (`--help` has examples). `--format raw` writes each record's
//! value bytes exactly as the broker holds them, nothing added (kcat's `-f '%s'`), so one
//! record taken with `--count 1` is a file `ewn trust check --record` verifies. A record (or
//! an incident's payload) written with a schema's legacy fingerprint, as EWN wrote before it
//! followed the Avro specification, is read and marked `"legacy_fingerprint": true`, so an
//! operator can tell when the migration period (README) is over.

use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ewn_kafka::{AssignedReader, RawRecord, StartAt, TopicKind, Topics};
use ewn_model::codec::{fingerprint_hex, schema_by_fingerprint, split_header};
use ewn_model::validate::is_state_code;
use ewn_model::{
    Ack, Alert, AvroRecord, DeliveryReceipt, Incident, Rejection, SignedIncident, Subscription,
};
use ewn_trust::{TrustStore, Verifier, VerifyPolicy};
use serde_json::{Value, json};

use crate::cli::Global;
use crate::cmd::now_ms;
use crate::view::{object, rfc3339, view};

#[derive(clap::Args, Debug)]
#[command(after_help = "\
Examples:
  ewn tail --topic alerts --offset beginning --exit-at-end          # everything so far, then stop
  ewn tail --topic incidents --trust-store trust.toml --state KG    # new incidents from Kyrgyzstan
  ewn tail --topic alerts --offset @2026-11-22T03:00:00Z --format pretty
  ewn tail --topic alerts --partition 2 --offset 1500 --count 10
  ewn tail --topic incidents --no-verify --key 5d1e... --offset -100 --exit-at-end
  ewn tail --topic incidents --partition 0 --offset 42 --count 1 --format raw > record.bin
  ewn trust check --trust-store trust.toml --record record.bin   # the record's signature

Exit codes: 0 done (--count reached, or --exit-at-end and caught up), 1 --timeout-secs \
passed first, 2 it could not run (no such topic or partition, bad configuration, broker \
unreachable).")]
pub struct Args {
    /// Which topic to read (incidents covers every member state's topic).
    #[arg(long)]
    pub topic: TopicKind,
    /// Trust store to verify incidents with (trust.trust_store).
    #[arg(long, value_name = "FILE")]
    pub trust_store: Option<PathBuf>,
    /// Where to start in each partition: `beginning`, `end` (the default: only new
    /// records), an offset `N`, `-N` for the last N records, or `@TIME` for the first
    /// record at or after TIME (RFC 3339, or milliseconds since the epoch).
    #[arg(long, value_name = "WHERE", allow_hyphen_values = true, value_parser = parse_offset)]
    pub offset: Option<StartAt>,
    /// Same as `--offset beginning`.
    #[arg(long, conflicts_with = "offset")]
    pub from_beginning: bool,
    /// Read only this partition.
    #[arg(long, value_name = "N")]
    pub partition: Option<i32>,
    /// Stop (exit 0) once every partition read has been read up to where it ended when
    /// tail started.
    #[arg(long)]
    pub exit_at_end: bool,
    /// Only records with this key (the blinded subject ref or incident id on incident
    /// topics, the correlation key on alerts).
    #[arg(long)]
    pub key: Option<String>,
    /// Only this member state (ISO 3166-1 alpha-2): its incident topic, or the alerts that
    /// name it among their states.
    #[arg(long, value_name = "CC")]
    pub state: Option<String>,
    /// Decode incidents without verifying them: no trust store needed, and the contents are
    /// shown with `"verified": null` (not trustworthy).
    #[arg(long, conflicts_with = "trust_store")]
    pub no_verify: bool,
    /// `json`: one object a line; `pretty`: the same objects indented; `raw`: each
    /// record's value bytes as the broker holds them, nothing added and nothing checked
    /// (kcat's `-f '%s'`; take one with `--count 1`, verify it with `ewn trust check
    /// --record`).
    #[arg(long, value_enum, default_value_t = Format::Json)]
    pub format: Format,
    /// Stop after N records (those that pass the filters).
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Give up after this many seconds without reaching --count or the end (exit 1).
    #[arg(long, value_name = "SECS")]
    pub timeout_secs: Option<u64>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Pretty,
    Raw,
}

/// What one record gives: a line to print, or (`--format raw`) its value's bytes.
enum Output {
    Line(Value),
    Raw(Vec<u8>),
}

fn parse_offset(s: &str) -> Result<StartAt, String> {
    match s {
        "beginning" => return Ok(StartAt::Beginning),
        "end" => return Ok(StartAt::End),
        _ => {}
    }
    if let Some(time) = s.strip_prefix('@') {
        if let Ok(ms) = time.parse::<i64>() {
            return Ok(StartAt::Time(ms));
        }
        return chrono::DateTime::parse_from_rfc3339(time)
            .map(|t| StartAt::Time(t.timestamp_millis()))
            .map_err(|e| format!("`{time}` is neither RFC 3339 nor epoch milliseconds: {e}"));
    }
    match s.parse::<i64>() {
        Ok(n) if n < 0 => Ok(StartAt::Last(-n)),
        Ok(n) => Ok(StartAt::Offset(n)),
        Err(_) => Err(format!("`{s}`: one of beginning, end, N, -N or @TIME")),
    }
}

/// How incidents are shown.
enum Check {
    Verify(Verifier),
    DecodeOnly,
}

pub fn run(global: &Global, args: Args) -> anyhow::Result<ExitCode> {
    let extra = args
        .trust_store
        .as_ref()
        .map(|p| ("trust.trust_store".to_string(), p.display().to_string()));
    let settings = global.settings(extra.into_iter().collect())?;
    let topics = Topics::new(&settings.kafka.topic_prefix);
    let raw = args.format == Format::Raw;
    let check = match (args.topic, &settings.trust.trust_store) {
        // The bytes go out as they are: `ewn trust check --record` verifies them.
        (TopicKind::Incidents, _) if raw => None,
        (TopicKind::Incidents, _) if args.no_verify => Some(Check::DecodeOnly),
        (TopicKind::Incidents, Some(path)) => {
            let store = TrustStore::load(path)?;
            // Tail checks who signed what, and when: the key's validity at the signing
            // time, bounded by this clock plus the configured skew, exactly as the
            // processor judges it. The processor's bounds on reported_at and occurred_at
            // (skew, age, future) are its own business, so a record published yesterday
            // still shows as verified.
            let policy = VerifyPolicy {
                max_record_bytes: settings.trust.max_record_bytes,
                limits: settings.limits,
                signing_skew_ms: settings.trust.signing_skew_ms(),
                ..VerifyPolicy::default()
            };
            Some(Check::Verify(Verifier::new(Arc::new(store), policy)))
        }
        (TopicKind::Incidents, None) => {
            bail!(
                "--trust-store FILE (or trust.trust_store) is needed to verify incidents; \
                 --no-verify decodes them without"
            )
        }
        _ if args.no_verify => bail!("--no-verify applies to --topic incidents"),
        _ => None,
    };
    let state = match &args.state {
        Some(s) if !is_state_code(&s.to_ascii_uppercase()) => {
            bail!("--state `{s}` is not an ISO 3166-1 alpha-2 code")
        }
        Some(_) if !matches!(args.topic, TopicKind::Incidents | TopicKind::Alerts) => {
            bail!("--state applies to --topic incidents or alerts")
        }
        Some(s) => Some(s.to_ascii_uppercase()),
        None => None,
    };
    let start = match (args.from_beginning, args.offset) {
        (true, _) => StartAt::Beginning,
        (false, Some(at)) => at,
        (false, None) => StartAt::End,
    };
    let state_topic = state
        .as_deref()
        .filter(|_| args.topic == TopicKind::Incidents)
        .map(|s| topics.incidents(&s.to_ascii_lowercase()));
    let what = format!(
        "{} topics under prefix `{}`{}",
        args.topic.as_str(),
        topics.prefix(),
        args.partition
            .map(|p| format!(" with a partition {p}"))
            .unwrap_or_default()
    );
    let reader = AssignedReader::with_filter(
        &settings.kafka,
        "tail",
        &what,
        |t| topics.matches(args.topic, t) && state_topic.as_deref().is_none_or(|s| s == t),
        |p| args.partition.is_none_or(|want| want == p),
        |_| start,
    )
    .context("opening the topic")?;
    let deadline = args
        .timeout_secs
        .map(|s| Instant::now() + Duration::from_secs(s));
    let mut out = BufWriter::new(std::io::stdout().lock());
    let mut seen = 0u64;
    while args.count.is_none_or(|c| seen < c) {
        if args.exit_at_end && reader.caught_up()? {
            break;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            out.flush()?;
            eprintln!("timed out after {seen} records");
            return Ok(ExitCode::from(1));
        }
        let line = reader.poll(Duration::from_millis(200), |record| {
            if args
                .key
                .as_deref()
                .is_some_and(|k| record.key != Some(k.as_bytes()))
            {
                return None;
            }
            if raw {
                // A tombstone has no value to write.
                let value = record.value?;
                if let (Some(state), TopicKind::Alerts) = (&state, args.topic) {
                    let names =
                        Alert::from_avro(value).is_ok_and(|a| a.states.iter().any(|s| s == state));
                    if !names {
                        return None;
                    }
                }
                return Some(Output::Raw(value.to_vec()));
            }
            let line = match &check {
                Some(Check::Verify(v)) => incident_line(v, &topics, &record),
                Some(Check::DecodeOnly) => unverified_incident_line(&record),
                None => record_line(&record),
            };
            let wanted = match (&state, args.topic) {
                (Some(state), TopicKind::Alerts) => line["value"]["states"]
                    .as_array()
                    .is_some_and(|states| states.iter().any(|s| s == state.as_str())),
                _ => true,
            };
            wanted.then_some(Output::Line(line))
        })?;
        match line.flatten() {
            Some(Output::Line(line)) => {
                if args.format == Format::Pretty {
                    serde_json::to_writer_pretty(&mut out, &line)?;
                } else {
                    serde_json::to_writer(&mut out, &line)?;
                }
                out.write_all(b"\n")?;
                seen += 1;
            }
            Some(Output::Raw(bytes)) => {
                out.write_all(&bytes)?;
                seen += 1;
            }
            None => out.flush()?,
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn origin(record: &RawRecord<'_>) -> Vec<(&'static str, Value)> {
    vec![
        ("topic", json!(record.topic)),
        ("partition", json!(record.partition)),
        ("offset", json!(record.offset)),
        ("key", json!(record.key.map(String::from_utf8_lossy))),
        ("timestamp_ms", json!(record.timestamp_ms)),
    ]
}

fn incident_line(verifier: &Verifier, topics: &Topics, record: &RawRecord<'_>) -> Value {
    let mut fields = origin(record);
    let value = record.value.unwrap_or_default();
    match verifier.verify(value, topics.state_of(record.topic), now_ms()) {
        Ok(ok) => {
            fields.push(("verified", json!(true)));
            fields.push(("reason", Value::Null));
            fields.push(("key_id", json!(ok.envelope.key_id)));
            fields.push(("signed_at", json!(ok.envelope.signed_at.map(rfc3339))));
            if split_header(&ok.envelope.payload)
                .is_ok_and(|fp| fp != Incident::codec().fingerprint())
            {
                fields.push(("legacy_fingerprint", json!(true)));
            }
            fields.push(("incident", view(&ok.incident)));
        }
        Err(rejected) => {
            fields.push(("verified", json!(false)));
            fields.push(("reason", json!(rejected.reason.code())));
            fields.push(("detail", json!(rejected.detail)));
            fields.push(("key_id", json!(rejected.key_id)));
            fields.push(("incident_id", json!(rejected.incident_id)));
        }
    }
    object(fields)
}

/// An incident decoded but not verified (`--no-verify`): its signer is claimed, not proven.
fn unverified_incident_line(record: &RawRecord<'_>) -> Value {
    let mut fields = origin(record);
    let decoded = SignedIncident::from_avro(record.value.unwrap_or_default()).and_then(|env| {
        let legacy =
            split_header(&env.payload).is_ok_and(|fp| fp != Incident::codec().fingerprint());
        Incident::from_avro(&env.payload)
            .map(|incident| (env.key_id, env.signed_at, legacy, incident))
    });
    match decoded {
        Ok((key_id, signed_at, legacy, incident)) => {
            fields.push(("verified", Value::Null));
            fields.push(("key_id", json!(key_id)));
            fields.push(("signed_at", json!(signed_at.map(rfc3339))));
            if legacy {
                fields.push(("legacy_fingerprint", json!(true)));
            }
            fields.push(("incident", view(&incident)));
        }
        Err(e) => {
            fields.push(("decoded", json!(false)));
            fields.push(("error", json!(e.to_string())));
        }
    }
    object(fields)
}

fn record_line(record: &RawRecord<'_>) -> Value {
    let mut fields = origin(record);
    let value = record.value.unwrap_or_default();
    if record.value.is_none() {
        // A tombstone (compacted topics): the key, already shown, is all there is.
        fields.push(("value", Value::Null));
        return object(fields);
    }
    // A sealed subscription record (ewn_fanout::sealed) is its Avro body and a trailer;
    // shown unverified (tail has no fan-out key), with its secret still sealed.
    let sealed = ewn_fanout::sealed::body(value);
    if sealed.is_some() {
        fields.push(("sealed", json!(true)));
    }
    let value = sealed.unwrap_or(value);
    let decoded = split_header(value)
        .map_err(|e| e.to_string())
        .and_then(|fp| {
            let codec = schema_by_fingerprint(fp)
                .ok_or_else(|| format!("unknown schema fingerprint {}", fingerprint_hex(fp)))?;
            let v = match codec.name() {
                "Alert" => Alert::from_avro(value).map(|r| view(&r)),
                "Rejection" => Rejection::from_avro(value).map(|r| view(&r)),
                "DeliveryReceipt" => DeliveryReceipt::from_avro(value).map(|r| view(&r)),
                "Ack" => Ack::from_avro(value).map(|r| view(&r)),
                "Subscription" => Subscription::from_avro(value).map(|mut r| {
                    r.webhook_secret = r.webhook_secret.map(|_| "<redacted>".to_string());
                    view(&r)
                }),
                other => return Err(format!("{other} records are not shown by this view")),
            };
            let legacy = fp != codec.fingerprint();
            v.map(|v| (codec.name(), legacy, v))
                .map_err(|e| e.to_string())
        });
    match decoded {
        Ok((schema, legacy, v)) => {
            fields.push(("schema", json!(schema)));
            if legacy {
                fields.push(("legacy_fingerprint", json!(true)));
            }
            fields.push(("value", v));
        }
        Err(e) => {
            fields.push(("decoded", json!(false)));
            fields.push(("error", json!(e)));
        }
    }
    object(fields)
}
