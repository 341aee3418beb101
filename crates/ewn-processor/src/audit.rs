//! The processor's audit records. Each change of the trust store or the rules file that
//! the reload loop noticed, applied or refused (the previous one kept), is an
//! `AuditRecord` on `<prefix>audit` (`trust_store_reloaded`, `rules_reloaded`) with the
//! SHA-256 of the file as it was and as it is now, signed with the processor's own key
//! (`process.audit.signing_key_file`: role `service`, service `process` in the trust
//! store), so an overseer can tell which trust store and rules were in force when.
//!
//! Reloads are rare (at most one per file per `process.reload_interval_secs`), so nothing
//! is queued: the reload loop sends each record and awaits the broker's confirmation
//! (bounded by `kafka.message_timeout_ms`). One not confirmed is counted
//! (`ewn_processor_audit_records_total{outcome="failed"}`) and logged: a gap in the log,
//! which an alert rule reports; the reload itself is never held back by it.

use std::path::Path;

use ewn_kafka::{ConfirmingProducer, KafkaMetrics, Topics};
use ewn_model::{AuditRecord, AvroRecord};
use ewn_trust::audit::{AuditSigner, sign_record};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::metrics::ProcessorMetrics;
use crate::settings::ProcessSettings;

/// The service name the processor's audit records carry (and its trust-store key names).
pub const SERVICE: &str = "process";

/// Writes the processor's audit records.
pub struct ReloadAudit {
    signer: AuditSigner,
    producer: ConfirmingProducer,
    topic: String,
    instance: String,
    metrics: ProcessorMetrics,
}

/// What one record says.
pub struct Reload<'a> {
    /// `trust_store_reloaded` or `rules_reloaded`.
    pub action: &'static str,
    /// The file.
    pub path: &'a Path,
    pub before: Option<String>,
    pub after: Option<String>,
    /// `applied: ...` or `refused, the previous one kept: ...`.
    pub detail: String,
    pub at: i64,
}

impl ReloadAudit {
    /// `None` when `process.audit.signing_key_file` is unset: no audit records.
    pub fn new(
        settings: &ProcessSettings,
        kafka: &ewn_kafka::KafkaSettings,
        topics: &Topics,
        instance: &str,
        metrics: ProcessorMetrics,
        kafka_metrics: KafkaMetrics,
    ) -> Result<Option<ReloadAudit>> {
        let Some(path) = &settings.audit.signing_key_file else {
            return Ok(None);
        };
        let key = ewn_trust::keys::load_signing_key(path)
            .map_err(|e| Error::Config(vec![format!("process.audit.signing_key_file: {e}")]))?;
        let producer = ConfirmingProducer::new(kafka, "audit", (), Some(kafka_metrics))?;
        Ok(Some(ReloadAudit {
            signer: AuditSigner::new(settings.audit.key_id.clone(), SERVICE, key),
            producer,
            topic: topics.audit(),
            instance: instance.to_string(),
            metrics,
        }))
    }

    /// Signs and writes the record of `reload`; `true` once the broker confirmed it.
    pub async fn record(&self, reload: Reload<'_>) -> bool {
        let object = reload.path.display().to_string();
        let mut id = Sha256::new();
        for part in [&self.instance, reload.action, &object] {
            id.update(part.as_bytes());
            id.update([0]);
        }
        id.update(reload.at.to_be_bytes());
        id.update(reload.after.as_deref().unwrap_or("").as_bytes());
        let record = AuditRecord {
            record_id: hex::encode(&id.finalize()[..16]),
            service: String::new(),
            instance_id: self.instance.clone(),
            // the change came from the file; who wrote it is the host's to say
            actor: format!("file:{object}"),
            action: reload.action.to_string(),
            object: object.clone(),
            at: reload.at,
            before_sha256: reload.before,
            after_sha256: reload.after,
            detail: Some(reload.detail.chars().take(512).collect()),
            key_id: String::new(),
            signed_at: 0,
            signature: [0; 64],
        };
        let written = match sign_record(&self.signer, record, reload.at).map(|r| r.to_avro()) {
            Ok(Ok(value)) => {
                self.producer.renew_if_stale().ok();
                match self
                    .producer
                    .send_async(&self.topic, Some(object.as_bytes()), Some(&value))
                    .await
                {
                    Ok(confirmation) => confirmation.await.is_ok(),
                    Err(_) => false,
                }
            }
            _ => false,
        };
        let outcome = if written { "written" } else { "failed" };
        self.metrics
            .audit_records
            .with_label_values(&[reload.action, outcome])
            .inc();
        if !written {
            tracing::error!(
                action = reload.action,
                "audit record not written: a gap in the audit log"
            );
        }
        written
    }
}

/// The SHA-256 (hex) of a file's bytes; `None` when it cannot be read.
pub fn file_digest(path: &Path) -> Option<String> {
    std::fs::read(path)
        .ok()
        .map(|b| hex::encode(Sha256::digest(b)))
}
