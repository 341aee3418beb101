//! `ewn tail`: read a topic, decode each record and, for incidents, verify it.
//!
//! One JSON object per line on stdout. Incidents carry `"verified": true|false` and, when
//! false, a lower-case `reason` code from the closed set of `RejectReason` plus a detail.
//! An unverified record's contents are not printed: they are not trustworthy. A record (or
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
use ewn_model::{Ack, Alert, AvroRecord, DeliveryReceipt, Incident, Rejection, Subscription};
use ewn_trust::{TrustStore, Verifier, VerifyPolicy};
use serde_json::{Value, json};

use crate::cli::Global;
use crate::cmd::now_ms;
use crate::view::{object, view};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Which topic to read (incidents covers every member state's topic).
    #[arg(long)]
    pub topic: TopicKind,
    /// Trust store to verify incidents with (trust.trust_store).
    #[arg(long, value_name = "FILE")]
    pub trust_store: Option<PathBuf>,
    /// Start at the oldest record instead of the newest.
    #[arg(long)]
    pub from_beginning: bool,
    /// Stop after N records.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Give up after this many seconds without reaching --count (exit 1).
    #[arg(long, value_name = "SECS")]
    pub timeout_secs: Option<u64>,
}

pub fn run(global: &Global, args: Args) -> anyhow::Result<ExitCode> {
    let extra = args
        .trust_store
        .as_ref()
        .map(|p| ("trust.trust_store".to_string(), p.display().to_string()));
    let settings = global.settings(extra.into_iter().collect())?;
    let topics = Topics::new(&settings.kafka.topic_prefix);
    let verifier = match (args.topic, &settings.trust.trust_store) {
        (TopicKind::Incidents, Some(path)) => {
            let store = TrustStore::load(path)?;
            // Tail checks who signed what; the processor's clock-skew and age policy is
            // its own business, so a record published yesterday still shows as verified.
            let policy = VerifyPolicy {
                max_record_bytes: settings.trust.max_record_bytes,
                limits: settings.limits,
                ..VerifyPolicy::default()
            };
            Some(Verifier::new(Arc::new(store), policy))
        }
        (TopicKind::Incidents, None) => {
            bail!("--trust-store FILE (or trust.trust_store) is needed to verify incidents")
        }
        _ => None,
    };
    let start = if args.from_beginning {
        StartAt::Beginning
    } else {
        StartAt::End
    };
    let what = format!(
        "{} topics under prefix `{}`",
        args.topic.as_str(),
        topics.prefix()
    );
    let reader = AssignedReader::new(
        &settings.kafka,
        "tail",
        &what,
        |t| topics.matches(args.topic, t),
        start,
    )
    .context("opening the topic")?;
    let deadline = args
        .timeout_secs
        .map(|s| Instant::now() + Duration::from_secs(s));
    let mut out = BufWriter::new(std::io::stdout().lock());
    let mut seen = 0u64;
    while args.count.is_none_or(|c| seen < c) {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            out.flush()?;
            eprintln!("timed out after {seen} records");
            return Ok(ExitCode::from(1));
        }
        let line = reader.poll(Duration::from_millis(200), |record| match &verifier {
            Some(v) => incident_line(v, &topics, &record),
            None => record_line(&record),
        })?;
        if let Some(line) = line {
            serde_json::to_writer(&mut out, &line)?;
            out.write_all(b"\n")?;
            seen += 1;
        } else {
            out.flush()?;
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

fn record_line(record: &RawRecord<'_>) -> Value {
    let mut fields = origin(record);
    let value = record.value.unwrap_or_default();
    if record.value.is_none() {
        fields.push(("value", Value::Null));
        fields.push(("key", json!(record.key.map(String::from_utf8_lossy))));
        return object(fields);
    }
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
