//! Publish a JSON-lines file: validate, blind, sign, produce, and wait for the broker to
//! confirm every record. Valid lines go out even when others are invalid; the outcome says
//! exactly which lines were rejected and which were not confirmed.

use std::collections::HashSet;
use std::io::{BufRead, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ewn_kafka::producer::{Tally, Then};
use ewn_kafka::{ConfirmingProducer, DeliveryReport, KafkaMetrics, KafkaSettings, Topics};
use ewn_model::validate::Limits;
use ewn_model::{AvroRecord, Incident, SignedIncident};
use ewn_trust::{BlindingKey, IncidentSigner};

use crate::error::{Error, Result};
use crate::input::{InputError, Line, LineReader, prepare_line};

pub struct PublishOptions {
    pub kafka: KafkaSettings,
    pub limits: Limits,
    /// The member state the signing key belongs to (upper case). Lines from another state
    /// are rejected here rather than by every verifier downstream. When `None`, the first
    /// valid line fixes it.
    pub state: Option<String>,
    /// Where to write the input lines the broker did not confirm (mode 0600, since they
    /// hold raw identifiers), so they can be published again.
    pub unsent_out: Option<PathBuf>,
}

#[derive(Debug)]
pub struct PublishOutcome {
    pub lines: usize,
    /// Lines queued to the broker.
    pub queued: usize,
    pub rejected: Vec<InputError>,
    pub report: DeliveryReport,
    pub elapsed: Duration,
}

impl PublishOutcome {
    pub fn unconfirmed(&self) -> usize {
        self.queued - self.report.confirmed as usize
    }

    pub fn success(&self) -> bool {
        self.rejected.is_empty() && self.unconfirmed() == 0
    }
}

/// Publishes every valid line of `input`. `now_ms` is the clock: it gives each record's
/// signing time (and `reported_at` where a line has none); `progress` is called with the
/// bytes read so far, now and then.
#[allow(clippy::too_many_arguments)]
pub fn publish(
    input: impl BufRead,
    options: &PublishOptions,
    signer: &mut IncidentSigner,
    blinding: &BlindingKey,
    metrics: Option<KafkaMetrics>,
    now_ms: impl Fn() -> i64,
    mut on_error: impl FnMut(&InputError),
    mut progress: impl FnMut(u64),
) -> Result<PublishOutcome> {
    let started = Instant::now();
    let tally = Arc::new(Tally::default());
    let producer = ConfirmingProducer::new(&options.kafka, "publish", tally.clone(), metrics)?;
    let topics = Topics::new(&options.kafka.topic_prefix);
    let mut state = options.state.clone();
    let mut reader = LineReader::new(input);
    let mut rejected = Vec::new();
    let mut kept_lines: Vec<(usize, String)> = Vec::new();
    let mut queued = 0usize;
    // Lines that found no room in the producer within message_timeout_ms (the broker gone
    // for that long): reported as not confirmed, so they land in the unsent file.
    let mut refused: Vec<(usize, String)> = Vec::new();
    let mut lines = 0usize;
    let mut value = Vec::with_capacity(1024);
    let mut reject = |e: InputError, rejected: &mut Vec<InputError>| {
        on_error(&e);
        rejected.push(e);
    };
    while let Some((n, line)) = reader.next_line().map_err(Error::Input)? {
        lines = n;
        let text = match &line {
            Line::Text(t) => *t,
            _ => "",
        };
        let incident = match prepare_line(line, n, blinding, &options.limits, now_ms(), &mut state)
        {
            Ok(Some(i)) => i,
            Ok(None) => continue,
            Err(errors) => {
                for e in errors {
                    reject(e, &mut rejected);
                }
                continue;
            }
        };
        // Signed now, however long ago the report was recorded: validity is judged at the
        // signing time, so a report recorded offline is signed by the key in force today.
        let key = seal(signer, &incident, now_ms(), &mut value)?;
        // A plain thread (the CLI's), so the send may park it while the producer is full.
        match producer.send_with_blocking(
            &topics.incidents(&incident.reporter.state),
            Some(key),
            Some(&value),
            Then::sink(n),
        ) {
            Ok(()) => {}
            Err(e @ ewn_kafka::Error::QueueFull { .. }) => refused.push((n, e.to_string())),
            Err(e) => return Err(e.into()),
        }
        queued += 1;
        if options.unsent_out.is_some() {
            kept_lines.push((n, text.to_string()));
        }
        if n % 1024 == 0 {
            progress(reader.bytes_read());
        }
    }
    progress(reader.bytes_read());
    // Every record either lands or times out within message_timeout_ms; the margin covers
    // the last round trip.
    let deadline =
        Duration::from_millis(options.kafka.message_timeout_ms + options.kafka.request_timeout_ms);
    if let Err(e) = producer.flush(deadline) {
        tracing::warn!(error = %e, in_flight = producer.in_flight(), "flush did not complete");
    }
    // Dropping the producer purges whatever is still in flight, and each purged record is
    // reported as failed: afterwards every queued record is either confirmed or failed.
    drop(producer);
    let mut report = tally.report();
    if !refused.is_empty() {
        report.failed.extend(refused);
        report.failed.sort();
    }
    let outcome = PublishOutcome {
        lines,
        queued,
        rejected,
        report,
        elapsed: started.elapsed(),
    };
    if let Some(path) = &options.unsent_out {
        write_unsent(path, &kept_lines, &outcome)?;
    }
    Ok(outcome)
}

/// Signs `incident` at `signed_at` (epoch ms, the caller's clock at signing: the envelope
/// carries it under the signature, and verifiers judge the key's validity at it) and encodes
/// the envelope into `value` (cleared first); returns the record key: the first subject's
/// blinded ref, else the incident id. Every producer of incident records (`publish`, the
/// simulator) goes through here.
pub fn seal<'i>(
    signer: &mut IncidentSigner,
    incident: &'i Incident,
    signed_at: i64,
    value: &mut Vec<u8>,
) -> Result<&'i [u8]> {
    let signed = signer.sign(incident, signed_at)?;
    value.clear();
    SignedIncident::codec().encode_into(&signed, value)?;
    Ok(incident
        .subjects
        .first()
        .map_or(incident.incident_id.as_bytes(), |s| {
            s.subject_ref.as_bytes()
        }))
}

/// Writes the lines that were queued but not confirmed.
fn write_unsent(path: &PathBuf, kept: &[(usize, String)], outcome: &PublishOutcome) -> Result<()> {
    let failed: HashSet<usize> = outcome.report.failed.iter().map(|(id, _)| *id).collect();
    let io = |source| Error::Io {
        path: path.clone(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    for (_, text) in kept.iter().filter(|(n, _)| failed.contains(n)) {
        writeln!(file, "{text}").map_err(io)?;
    }
    file.sync_all().map_err(io)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ewn_model::RejectReason;
    use ewn_model::samples;
    use ewn_trust::{KeyEntry, TrustStore, Verifier, VerifyPolicy, keys};

    use super::*;

    const MINUTE: i64 = 60_000;

    #[test]
    fn seal_stamps_the_given_signing_time_under_the_signature() {
        let now = 1_790_000_000_000;
        let mut signer = IncidentSigner::new("kz-new", keys::generate());
        let mut store = TrustStore::default();
        // made "now", as `ewn keygen` does
        store.insert(KeyEntry {
            key_id: "kz-new".into(),
            state: "KZ".into(),
            public_key: signer.public_key(),
            not_before: now,
            not_after: now + 365 * 24 * 60 * MINUTE,
            revoked_at: None,
        });
        let verifier = Verifier::new(Arc::new(store), VerifyPolicy::default());
        let mut incident = samples::incident();
        incident.reported_at = now - 20 * MINUTE;
        incident.occurred_at = now - 21 * MINUTE;
        let mut value = Vec::new();
        let key = seal(&mut signer, &incident, now, &mut value).unwrap();
        assert_eq!(key, incident.subjects[0].subject_ref.as_bytes());
        let envelope = SignedIncident::from_avro(&value).unwrap();
        assert_eq!(envelope.signed_at, Some(now));
        let ok = verifier.verify(&value, Some("kz"), now).unwrap();
        assert_eq!(ok.incident, incident);
        // Sealed at the report's own time, as EWN used to judge it, the key was not valid.
        seal(&mut signer, &incident, incident.reported_at, &mut value).unwrap();
        assert_eq!(
            verifier.verify(&value, Some("kz"), now).unwrap_err().reason,
            RejectReason::KeyNotYetValid
        );
    }
}
