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
//!
//! One exception, by design: an oversight read (`oversight.rs`) is shown only once its own
//! record is confirmed ([`AuditLog::record_confirmed`]); at the bound, or when the broker
//! does not confirm it, the read is refused (503), so no read goes unlogged.

use std::sync::Arc;

use ewn_model::{AuditRecord, AvroRecord};
use ewn_trust::audit::{AuditSigner, sign_record};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

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

/// A record on the queue, and who waits for the broker's confirmation of it.
pub struct Queued {
    record: AuditRecord,
    confirm: Option<oneshot::Sender<bool>>,
}

pub struct AuditLog {
    tx: Option<mpsc::Sender<Queued>>,
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
    ) -> (AuditLog, mpsc::Receiver<Queued>) {
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

    /// Is a record written at all (`fanout.audit.signing_key_file` set)?
    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Queues the record of `act`; never waits.
    pub fn record(&self, act: Act<'_>) {
        self.queue(act, None);
    }

    /// Queues the record of `act` and returns what resolves to `true` once the broker
    /// confirmed it; `None` when it was not queued (no audit log, or the queue at its bound:
    /// counted `dropped`).
    pub fn record_confirmed(&self, act: Act<'_>) -> Option<oneshot::Receiver<bool>> {
        let (tx, rx) = oneshot::channel();
        self.queue(act, Some(tx)).then_some(rx)
    }

    fn queue(&self, act: Act<'_>, confirm: Option<oneshot::Sender<bool>>) -> bool {
        let Some(tx) = &self.tx else { return false };
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
        match tx.try_send(Queued { record, confirm }) {
            Ok(()) => {
                self.metrics.audit_queue.inc();
                true
            }
            Err(_) => {
                self.metrics
                    .audit_records
                    .with_label_values(&["dropped"])
                    .inc();
                tracing::warn!(
                    action = act.action,
                    "audit queue full (fanout.audit.queue_max): record dropped"
                );
                false
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
    mut rx: mpsc::Receiver<Queued>,
    signer: Arc<AuditSigner>,
    metrics: FanoutMetrics,
    now: impl Fn() -> i64,
    produce: F,
) where
    F: Fn(String, Vec<u8>) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    while let Some(Queued { record, confirm }) = rx.recv().await {
        metrics.audit_queue.dec();
        let object = record.object.clone();
        let ok = match sign_record(&signer, record, now()).map(|r| r.to_avro()) {
            Ok(Ok(value)) => {
                metrics.audit_unconfirmed.set(1);
                let ok = produce(object, value).await;
                metrics.audit_unconfirmed.set(0);
                ok
            }
            _ => false,
        };
        let outcome = if ok { "written" } else { "failed" };
        metrics.audit_records.with_label_values(&[outcome]).inc();
        if let Some(c) = confirm {
            let _ = c.send(ok);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn act(object: &str) -> Act<'_> {
        Act {
            actor: "ops",
            action: "subscription_changed",
            object,
            at: 1,
            before: None,
            after: None,
            detail: None,
        }
    }

    fn count(m: &FanoutMetrics, outcome: &str) -> u64 {
        m.audit_records.with_label_values(&[outcome]).get()
    }

    /// At `queue_max` (the writer stalled: a broker that does not answer) a new record is
    /// dropped and counted, the act still happens (`record` never waits), and a record that
    /// wants its confirmation is refused at once; once the writer drains the queue the
    /// queued records are written and confirmed, and one the broker refuses is `failed`.
    #[tokio::test]
    async fn at_its_bound_the_queue_drops_and_counts_and_refuses_a_confirmed_record() {
        let registry = prometheus::Registry::new();
        let metrics = FanoutMetrics::register(&registry).unwrap();
        let (log, rx) = AuditLog::new(3, "i-1".into(), metrics.clone());
        assert_eq!(metrics.audit_queue_bound.get(), 3);
        let first = log.record_confirmed(act("s0")).unwrap();
        for i in 1..7 {
            let started = std::time::Instant::now();
            log.record(act(&format!("s{i}")));
            assert!(started.elapsed() < std::time::Duration::from_secs(1));
        }
        assert_eq!(metrics.audit_queue.get(), 3);
        assert_eq!(count(&metrics, "dropped"), 4);
        assert!(log.record_confirmed(act("read")).is_none());
        assert_eq!(count(&metrics, "dropped"), 5);

        // The broker comes back, refusing one record (the third).
        let signer = Arc::new(AuditSigner::new(
            "fanout-1",
            "fanout",
            ewn_trust::keys::generate(),
        ));
        let written = Arc::new(std::sync::Mutex::new(Vec::new()));
        let w = written.clone();
        let produce = move |object: String, value: Vec<u8>| {
            let w = w.clone();
            async move {
                let ok = object != "s2";
                if ok {
                    w.lock().unwrap().push((object, value));
                }
                ok
            }
        };
        drop(log);
        writer(rx, signer, metrics.clone(), || 5, produce).await;
        assert!(first.await.unwrap(), "the confirmed record was written");
        let objects: Vec<String> = written
            .lock()
            .unwrap()
            .iter()
            .map(|(o, _)| o.clone())
            .collect();
        assert_eq!(objects, ["s0", "s1"]);
        assert_eq!(
            (count(&metrics, "written"), count(&metrics, "failed")),
            (2, 1)
        );
        assert_eq!(metrics.audit_queue.get(), 0);
        // What was written is a signed record.
        let r = AuditRecord::from_avro(&written.lock().unwrap()[0].1).unwrap();
        assert_eq!((r.key_id.as_str(), r.signed_at), ("fanout-1", 5));
        assert_ne!(r.signature, [0; 64]);
    }
}
