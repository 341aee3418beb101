//! The fan-out's audit log: every administrative act (a subscription created, changed,
//! disabled by `410 Gone`, deleted; an acknowledgement; an escalation step) becomes an
//! `AuditRecord` on `<prefix>audit`, signed with the fan-out's own key (role `service` in
//! the trust store), with the actor, the time and SHA-256 digests of the object before and
//! after.
//!
//! Never on the hot path: [`AuditLog::record`] only puts the record on a bounded queue
//! (`fanout.audit.queue_max`, gauge `ewn_fanout_audit_queue_records`); a writer task signs
//! and produces it. At the bound a new record is dropped and counted
//! (`ewn_fanout_audit_records_total{outcome="dropped"}`), and one the broker does not
//! confirm is counted `failed`: the act itself is never refused or delayed for its record.

use std::sync::Arc;

use ewn_model::{AuditRecord, AvroRecord};
use ewn_trust::audit::{AuditSigner, sign_record};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::metrics::FanoutMetrics;

/// Hex SHA-256 of an object's bytes (a subscription's Avro form without its secret, an ack).
pub fn digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// One act, before it is signed.
pub struct Act<'a> {
    pub actor: &'a str,
    /// One of `AuditRecord::ACTIONS`.
    pub action: &'static str,
    pub object: &'a str,
    pub at: i64,
    pub before: Option<String>,
    pub after: Option<String>,
    pub detail: Option<String>,
}

pub struct AuditLog {
    tx: Option<mpsc::Sender<AuditRecord>>,
    instance: String,
    metrics: FanoutMetrics,
}

impl AuditLog {
    /// A log that writes nothing (no `fanout.audit.signing_key_file`).
    pub fn disabled(metrics: FanoutMetrics) -> AuditLog {
        AuditLog {
            tx: None,
            instance: String::new(),
            metrics,
        }
    }

    /// A log with its queue; the receiver goes to [`writer`].
    pub fn new(
        queue_max: usize,
        instance: String,
        metrics: FanoutMetrics,
    ) -> (AuditLog, mpsc::Receiver<AuditRecord>) {
        let (tx, rx) = mpsc::channel(queue_max.max(1));
        metrics.audit_queue_bound.set(queue_max as i64);
        (
            AuditLog {
                tx: Some(tx),
                instance,
                metrics,
            },
            rx,
        )
    }

    /// Queues the record of `act`; never waits.
    pub fn record(&self, act: Act<'_>) {
        let Some(tx) = &self.tx else { return };
        let record = AuditRecord {
            record_id: record_id(),
            service: String::new(),
            instance_id: self.instance.clone(),
            actor: act.actor.to_string(),
            action: act.action.to_string(),
            object: act.object.to_string(),
            at: act.at,
            before_sha256: act.before,
            after_sha256: act.after,
            detail: act.detail,
            key_id: String::new(),
            signed_at: 0,
            signature: [0; 64],
        };
        match tx.try_send(record) {
            Ok(()) => self.metrics.audit_queue.inc(),
            Err(_) => {
                self.metrics
                    .audit_records
                    .with_label_values(&["dropped"])
                    .inc();
                tracing::warn!(
                    action = act.action,
                    "audit queue full (fanout.audit.queue_max): record dropped"
                );
            }
        }
    }
}

fn record_id() -> String {
    use rand_core::RngCore;
    let mut b = [0u8; 16];
    rand_core::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

/// Signs and writes each queued record until the queue closes; `produce` writes one value
/// keyed by the object and resolves once the broker confirmed it.
pub async fn writer<F, Fut>(
    mut rx: mpsc::Receiver<AuditRecord>,
    signer: Arc<AuditSigner>,
    metrics: FanoutMetrics,
    now: impl Fn() -> i64,
    produce: F,
) where
    F: Fn(String, Vec<u8>) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    while let Some(record) = rx.recv().await {
        metrics.audit_queue.dec();
        let object = record.object.clone();
        let ok = match sign_record(&signer, record, now()).map(|r| r.to_avro()) {
            Ok(Ok(value)) => produce(object, value).await,
            _ => false,
        };
        let outcome = if ok { "written" } else { "failed" };
        metrics.audit_records.with_label_values(&[outcome]).inc();
    }
}
