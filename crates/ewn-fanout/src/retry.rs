//! The retry path: webhook deliveries parked on `<prefix>retries` after their endpoint
//! failed or hung on the live path.
//!
//! A record (`schemas/DeliveryRetry.avsc`) carries the alert itself, so the retry path
//! needs nothing else to deliver it, and an HMAC-SHA256 under the fan-out key's retries
//! subkey: anyone able to write to the topic could otherwise make the fan-out sign and
//! send an alert of their making. A record that does not authenticate or decode is
//! refused, counted (`ewn_fanout_retry_records_refused_total{reason}`) and skipped.
//!
//! The topic is read by a consumer group of the fan-out instances (`<group>-retries`);
//! records are keyed by subscription, so one endpoint's parked deliveries are on one
//! partition and retried in order by one instance. A record's offset commits once its
//! delivery is terminal (receipt confirmed). In memory, the retry path holds at most
//! `fanout.max_pending_alerts` records; past that it stops reading until some finish.

use std::collections::HashMap;
use std::sync::Arc;

use ewn_model::{Alert, AvroRecord, DeliveryRetry};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use tokio::sync::mpsc;

use crate::delivery::{Job, Ticket, Work, retry_worker};
use crate::error::Result;
use crate::keys::Purpose;
use crate::service::{Core, Ticketed, TicketedRead, group, now_ms, ticketed_loop};

/// Why a retry record was refused (the label values of the refusal counter).
pub const REFUSALS: [&str; 3] = ["undecodable", "unauthenticated", "bad_alert"];

/// A parked delivery read back, ready for its endpoint's retry worker.
pub(crate) struct Parked {
    pub work: Arc<Work>,
    pub step: i32,
    pub attempts: i32,
    pub first_attempt_at: i64,
    pub parked_at: i64,
    pub ticket: Arc<Ticket>,
}

fn mac(core: &Core, record: &DeliveryRetry) -> Option<[u8; 32]> {
    let key = core.key.subkey(Purpose::Retries);
    let mut unsigned = record.clone();
    unsigned.mac = Vec::new();
    let bytes = unsigned.to_avro().ok()?;
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&*key)
        .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
    m.update(&bytes);
    Some(m.finalize().into_bytes().into())
}

/// The record that parks `job`; `None` (logged) when it cannot be encoded.
pub(crate) fn seal(
    core: &Core,
    job: &Job,
    attempts: i32,
    first_attempt_at: i64,
    last_error: Option<String>,
) -> Option<Vec<u8>> {
    let alert = match job.work.alert.to_avro() {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "cannot encode an alert to park it");
            return None;
        }
    };
    let mut record = DeliveryRetry {
        subscription_id: job.key.sub.to_string(),
        escalation_step: job.key.step,
        attempts,
        first_attempt_at,
        parked_at: now_ms(),
        // Bounded: an endpoint's error text is not ours to store at any length.
        last_error: last_error.map(|e| e.chars().take(500).collect()),
        alert,
        mac: Vec::new(),
    };
    record.mac = mac(core, &record)?.to_vec();
    match record.to_avro() {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::error!(error = %e, "cannot encode a retry record");
            None
        }
    }
}

/// Reads a record back; the reason label when refused.
fn open(core: &Core, value: &[u8]) -> std::result::Result<(DeliveryRetry, Alert), &'static str> {
    let record = DeliveryRetry::from_avro(value).map_err(|_| "undecodable")?;
    let expected = mac(core, &record).ok_or("undecodable")?;
    if record.mac.len() != 32 || !bool::from(record.mac.ct_eq(&expected)) {
        return Err("unauthenticated");
    }
    let alert = Alert::from_avro(&record.alert).map_err(|_| "bad_alert")?;
    Ok((record, alert))
}

/// Reads `<prefix>retries` and hands each parked delivery to its endpoint's retry
/// worker; commits what is terminal.
pub(crate) fn retry_loop(core: &Arc<Core>) -> Result<()> {
    let read = TicketedRead {
        part: "retries",
        role: "fanout-retries",
        group: group(core, "-retries"),
        topic: core.topics.retries(),
        pending: &core.metrics.retry_pending,
    };
    let mut workers: HashMap<Arc<str>, mpsc::UnboundedSender<Parked>> = HashMap::new();
    let handle = |batch: Vec<Ticketed<Option<std::result::Result<_, &'static str>>>>| {
        for t in batch {
            let (partition, offset) = (t.partition, t.offset);
            match t.value {
                Some(Ok((record, alert))) => {
                    let record: DeliveryRetry = record;
                    // The index knows the episode (the mirror reads every alert); a record
                    // older than its memory is decided on its own marking.
                    let known = core.index.observe(&alert);
                    t.ticket.hold();
                    let parked = Parked {
                        work: Work::new(Arc::new(alert), known),
                        step: record.escalation_step,
                        attempts: record.attempts,
                        first_attempt_at: record.first_attempt_at,
                        parked_at: record.parked_at,
                        ticket: t.ticket.clone(),
                    };
                    let sub_id: Arc<str> = record.subscription_id.into();
                    let tx = workers.entry(sub_id.clone()).or_insert_with(|| {
                        let (tx, rx) = mpsc::unbounded_channel();
                        core.runtime
                            .spawn(retry_worker(core.clone(), sub_id.clone(), rx));
                        tx
                    });
                    if tx.send(parked).is_err() {
                        // The worker is gone (shutting down): left uncommitted.
                        tracing::debug!(subscription = %sub_id, "retry worker gone");
                    }
                }
                Some(Err(reason)) => {
                    core.metrics
                        .retry_refused
                        .with_label_values(&[reason])
                        .inc();
                    tracing::warn!(partition, offset, reason, "retry record refused");
                }
                None => {
                    core.metrics
                        .retry_refused
                        .with_label_values(&["undecodable"])
                        .inc();
                }
            }
        }
    };
    let settled = |n: u64| {
        let done = &core.metrics.retry_done;
        done.inc_by(n.saturating_sub(done.get()));
    };
    ticketed_loop(core, read, |v| v.map(|v| open(core, v)), handle, settled)
}
