//! Signed heartbeats: a gateway's sign of life on `<prefix>heartbeats.<cc>`, every
//! configured interval whether or not reports flow, so the network notices a post or a
//! state that goes quiet (the processor's `source_silent`) or whose reports pile up
//! unsent (`source_backlog`).
//!
//! A heartbeat says which posts the gateway serves and, per post, its spool depth, the age
//! of its oldest unsent report and how long ago the post was last heard from. It needs
//! nothing of the spool: the gateway hands [`run`] a [`PostFigures`] that answers with those
//! figures. It is signed by the state's key, the same key as the state's reports, in the
//! heartbeat domain (`"ewn/heartbeat/v1" || signed_at || payload`, see
//! `ewn_trust::keys::HEARTBEAT_DOMAIN`), at the gateway's clock when it is sent; the key is
//! asked for on every beat ([`HeartbeatSigner`]), so a rotated key signs the next one.
//!
//! Delivery is fire-and-forget with a confirmation counted per outcome: a heartbeat that
//! cannot reach the broker within `kafka.message_timeout_ms` is counted as failed and not
//! retried, since the next one says more. The record key is the gateway id, so one
//! gateway's heartbeats stay in order on one partition.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ewn_kafka::producer::DeliverySink;
use ewn_kafka::{ConfirmingProducer, KafkaMetrics, KafkaSettings, Landed, Then, Topics};
use ewn_model::validate::is_state_code;
use ewn_model::{Heartbeat, PostStatus, SignedHeartbeat};
use ewn_trust::IncidentSigner;
use prometheus::{IntCounterVec, Registry};
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The `[gateway.heartbeat]` section.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeartbeatSettings {
    /// How often a heartbeat is sent; keep it well under the processor's
    /// `process.sources.silent_after_secs` (a third or less), so one lost heartbeat does
    /// not raise `source_silent`.
    pub interval_secs: u64,
}

impl Default for HeartbeatSettings {
    fn default() -> Self {
        HeartbeatSettings { interval_secs: 30 }
    }
}

impl HeartbeatSettings {
    pub fn problems(&self) -> Vec<String> {
        if (1..=3600).contains(&self.interval_secs) {
            Vec::new()
        } else {
            vec!["gateway.heartbeat.interval_secs: 1..3600".into()]
        }
    }

    pub fn interval(&self) -> Duration {
        Duration::from_secs(self.interval_secs)
    }
}

/// The gateway's figures for each post it serves, at `now_ms` (its clock). Implemented by
/// the gateway over its spool; any `Fn(i64) -> Vec<PostStatus>` is one.
pub trait PostFigures: Send + Sync {
    fn posts(&self, now_ms: i64) -> Vec<PostStatus>;
}

impl<F: Fn(i64) -> Vec<PostStatus> + Send + Sync> PostFigures for F {
    fn posts(&self, now_ms: i64) -> Vec<PostStatus> {
        self(now_ms)
    }
}

/// Signs a heartbeat with the state key in force at the time (asked on every beat, so a
/// rotated key signs the next heartbeat).
pub trait HeartbeatSigner: Send + Sync {
    fn sign(&self, heartbeat: &Heartbeat, signed_at: i64) -> ewn_trust::Result<SignedHeartbeat>;
}

/// The gateway's current signer, replaced whole when the key rotates.
impl HeartbeatSigner for Mutex<IncidentSigner> {
    fn sign(&self, heartbeat: &Heartbeat, signed_at: i64) -> ewn_trust::Result<SignedHeartbeat> {
        self.lock()
            .unwrap_or_else(|p| p.into_inner())
            .sign_heartbeat(heartbeat, signed_at)
    }
}

impl<T: HeartbeatSigner + ?Sized> HeartbeatSigner for Arc<T> {
    fn sign(&self, heartbeat: &Heartbeat, signed_at: i64) -> ewn_trust::Result<SignedHeartbeat> {
        (**self).sign(heartbeat, signed_at)
    }
}

/// Builds the successive heartbeats of one gateway process: its identity, and a sequence
/// numbered from 0 under an instance id drawn at start.
#[derive(Clone, Debug)]
pub struct Heartbeater {
    state: String,
    gateway_id: String,
    instance_id: String,
    interval_ms: i64,
    sequence: i64,
}

impl Heartbeater {
    /// `state` upper case (the signing key's), `gateway_id` the gateway's configured name.
    pub fn new(state: &str, gateway_id: &str, interval: Duration) -> Result<Heartbeater> {
        let mut id = [0u8; 8];
        OsRng.fill_bytes(&mut id);
        Heartbeater::with_instance(
            state,
            gateway_id,
            &id.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            interval,
        )
    }

    /// With a given instance id (tests).
    pub fn with_instance(
        state: &str,
        gateway_id: &str,
        instance_id: &str,
        interval: Duration,
    ) -> Result<Heartbeater> {
        if !is_state_code(state) {
            return Err(Error::Heartbeat(format!(
                "state `{state}` is not an ISO 3166-1 alpha-2 code in upper case"
            )));
        }
        if gateway_id.is_empty() || gateway_id.len() > 128 || gateway_id.contains(char::is_control)
        {
            return Err(Error::Heartbeat(
                "gateway id: 1..128 bytes, no control characters".into(),
            ));
        }
        Ok(Heartbeater {
            state: state.to_string(),
            gateway_id: gateway_id.to_string(),
            instance_id: instance_id.to_string(),
            interval_ms: i64::try_from(interval.as_millis()).unwrap_or(i64::MAX),
            sequence: 0,
        })
    }

    pub fn state(&self) -> &str {
        &self.state
    }

    /// The record key of its heartbeats.
    pub fn key(&self) -> &[u8] {
        self.gateway_id.as_bytes()
    }

    /// The next heartbeat, sent at `now_ms` with these post figures.
    pub fn next(&mut self, posts: Vec<PostStatus>, now_ms: i64) -> Heartbeat {
        let heartbeat = Heartbeat {
            state: self.state.clone(),
            gateway_id: self.gateway_id.clone(),
            instance_id: self.instance_id.clone(),
            sequence: self.sequence,
            sent_at: now_ms,
            interval_ms: self.interval_ms,
            posts,
        };
        self.sequence += 1;
        heartbeat
    }

    /// Builds the next heartbeat, signs it at `now_ms` and encodes the envelope into
    /// `value` (cleared first).
    pub fn seal(
        &mut self,
        signer: &dyn HeartbeatSigner,
        posts: Vec<PostStatus>,
        now_ms: i64,
        value: &mut Vec<u8>,
    ) -> Result<Heartbeat> {
        let heartbeat = self.next(posts, now_ms);
        let signed = signer.sign(&heartbeat, now_ms)?;
        value.clear();
        <SignedHeartbeat as ewn_model::AvroRecord>::codec().encode_into(&signed, value)?;
        Ok(heartbeat)
    }
}

/// `ewn_gateway_heartbeats_total{outcome}`: heartbeats confirmed by the broker, failed
/// (not confirmed within `kafka.message_timeout_ms`, or refused), or not built (the figures
/// or the signer failed).
#[derive(Clone)]
pub struct HeartbeatMetrics {
    sent: IntCounterVec,
}

impl HeartbeatMetrics {
    pub const OUTCOMES: [&'static str; 3] = ["confirmed", "failed", "not_built"];

    pub fn register(registry: &Registry) -> prometheus::Result<HeartbeatMetrics> {
        let sent = ewn_ops::metrics::Registrar(registry).counter_vec(
            "ewn_gateway_heartbeats_total",
            "Heartbeats by outcome: confirmed by the broker, failed, or not built",
            &["outcome"],
        )?;
        for outcome in Self::OUTCOMES {
            sent.with_label_values(&[outcome]);
        }
        Ok(HeartbeatMetrics { sent })
    }

    fn count(&self, outcome: &str) {
        self.sent.with_label_values(&[outcome]).inc();
    }
}

/// Counts outcomes as the broker answers.
struct Outcomes(Option<HeartbeatMetrics>);

impl DeliverySink for Outcomes {
    fn on_delivery(&self, _: usize, outcome: std::result::Result<Landed, String>) {
        if let Some(m) = &self.0 {
            m.count(if outcome.is_ok() {
                "confirmed"
            } else {
                "failed"
            });
        }
        if let Err(e) = outcome {
            tracing::warn!(error = %e, "heartbeat not confirmed");
        }
    }
}

/// What [`run`] sends: where, as whom, how often.
#[derive(Clone, Debug)]
pub struct HeartbeatConfig {
    pub kafka: KafkaSettings,
    /// The signing key's state, upper case.
    pub state: String,
    pub gateway_id: String,
    pub settings: HeartbeatSettings,
}

/// Sends a heartbeat at once and then every `settings.interval_secs` (missed beats are
/// skipped, not bunched) to `<prefix>heartbeats.<cc>`, keyed by the gateway id, until
/// `shutdown` is set. `clock` gives the gateway's time in epoch ms (the signing time and
/// `sent_at`). Returns an error only when it cannot start (bad settings, no producer); a
/// beat that fails is counted and logged, and the loop goes on.
pub async fn run(
    config: HeartbeatConfig,
    signer: impl HeartbeatSigner,
    figures: impl PostFigures,
    clock: impl Fn() -> i64 + Send + Sync,
    metrics: Option<HeartbeatMetrics>,
    kafka_metrics: Option<KafkaMetrics>,
    shutdown: Arc<AtomicBool>,
) -> Result<()> {
    if let Some(p) = config.settings.problems().first() {
        return Err(Error::Heartbeat(p.clone()));
    }
    let mut beats = Heartbeater::new(
        &config.state,
        &config.gateway_id,
        config.settings.interval(),
    )?;
    let topic = Topics::new(&config.kafka.topic_prefix).heartbeats(&config.state);
    let producer = ConfirmingProducer::new(
        &config.kafka,
        "gateway-heartbeat",
        Outcomes(metrics.clone()),
        kafka_metrics,
    )?;
    let interval = config.settings.interval();
    let mut value = Vec::with_capacity(512);
    let mut next = Instant::now();
    tracing::info!(%topic, interval_secs = interval.as_secs(), "heartbeats starting");
    while !shutdown.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= next {
            // A beat that timed out while the broker was down leaves the producer stale:
            // renewed before the next one (`ewn_kafka::producer`, renewal).
            if let Err(e) = producer.renew_if_stale() {
                tracing::warn!(error = %e, "cannot renew the heartbeat producer");
            }
            let t = clock();
            match beats.seal(&signer, figures.posts(t), t, &mut value) {
                Ok(_) => {
                    if let Err(e) = producer.try_send_with(
                        &topic,
                        Some(beats.key()),
                        Some(&value),
                        Then::sink(0),
                    ) {
                        tracing::warn!(error = %e, "heartbeat refused by the producer");
                        if let Some(m) = &metrics {
                            m.count("failed");
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "heartbeat not built");
                    if let Some(m) = &metrics {
                        m.count("not_built");
                    }
                }
            }
            // The next beat on the interval's grid; beats missed while stalled are skipped.
            while next <= now {
                next += interval;
            }
        }
        // Short naps, so shutdown is seen promptly whatever the interval.
        tokio::time::sleep(
            next.saturating_duration_since(Instant::now())
                .min(Duration::from_millis(100)),
        )
        .await;
    }
    // What is still in flight gets its chance before the producer purges it.
    if let Err(e) = producer.flush(Duration::from_millis(config.kafka.request_timeout_ms)) {
        tracing::debug!(error = %e, "heartbeat flush at shutdown");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ewn_model::{AvroRecord, RejectReason, samples};
    use ewn_trust::{KeyEntry, TrustStore, Verifier, VerifyPolicy, keys};

    use super::*;

    const NOW: i64 = 1_790_000_000_000;
    const MINUTE: i64 = 60_000;

    fn verifier(signer: &IncidentSigner) -> Verifier {
        let mut store = TrustStore::default();
        store.insert(KeyEntry {
            key_id: signer.key_id().into(),
            state: "KZ".into(),
            public_key: signer.public_key(),
            not_before: NOW - MINUTE,
            not_after: NOW + 60 * MINUTE,
            revoked_at: None,
        });
        Verifier::new(Arc::new(store), VerifyPolicy::default())
    }

    #[test]
    fn sealed_heartbeats_verify_and_count_up() {
        let signer = Mutex::new(IncidentSigner::new("kz-1", keys::generate()));
        let v = verifier(&signer.lock().unwrap());
        let mut beats =
            Heartbeater::with_instance("KZ", "kz-gw-1", "i-1", Duration::from_secs(10)).unwrap();
        let posts = samples::heartbeat().posts;
        let mut value = Vec::new();
        for seq in 0..3 {
            let at = NOW + seq * 10_000;
            let sent = beats.seal(&signer, posts.clone(), at, &mut value).unwrap();
            assert_eq!(sent.sequence, seq);
            let ok = v.verify_heartbeat(&value, Some("kz"), at).unwrap();
            assert_eq!(ok.heartbeat, sent);
            assert_eq!(ok.envelope.signed_at, at);
            assert_eq!(ok.heartbeat.sent_at, at);
            assert_eq!(ok.heartbeat.interval_ms, 10_000);
            assert_eq!(ok.heartbeat.posts, posts);
        }
        assert_eq!(beats.key(), b"kz-gw-1");
    }

    #[test]
    fn a_rotated_key_signs_the_next_heartbeat() {
        let signer = Arc::new(Mutex::new(IncidentSigner::new("kz-old", keys::generate())));
        let old = verifier(&signer.lock().unwrap());
        let mut beats = Heartbeater::new("KZ", "kz-gw-1", Duration::from_secs(10)).unwrap();
        let mut value = Vec::new();
        beats.seal(&signer, vec![], NOW, &mut value).unwrap();
        assert!(old.verify_heartbeat(&value, Some("kz"), NOW).is_ok());
        *signer.lock().unwrap() = IncidentSigner::new("kz-new", keys::generate());
        beats.seal(&signer, vec![], NOW, &mut value).unwrap();
        assert_eq!(SignedHeartbeat::from_avro(&value).unwrap().key_id, "kz-new");
        assert_eq!(
            old.verify_heartbeat(&value, Some("kz"), NOW)
                .unwrap_err()
                .reason,
            RejectReason::UnknownKey
        );
    }

    #[test]
    fn bad_identities_are_refused_and_instances_differ() {
        assert!(Heartbeater::new("kz", "gw", Duration::from_secs(1)).is_err());
        assert!(Heartbeater::new("KZ", "", Duration::from_secs(1)).is_err());
        let a = Heartbeater::new("KZ", "gw", Duration::from_secs(1)).unwrap();
        let b = Heartbeater::new("KZ", "gw", Duration::from_secs(1)).unwrap();
        assert_ne!(a.instance_id, b.instance_id);
        assert_eq!(a.instance_id.len(), 16);
        assert!(HeartbeatSettings { interval_secs: 0 }.problems().len() == 1);
        assert!(HeartbeatSettings::default().problems().is_empty());
    }

    #[test]
    fn figures_from_a_closure_are_asked_at_the_beat_time() {
        let figures = |now: i64| {
            vec![PostStatus {
                post_id: format!("P-{now}"),
                spool_depth: 0,
                spool_bytes: 0,
                oldest_unsent_age_ms: None,
                last_contact_age_ms: Some(0),
            }]
        };
        assert_eq!(PostFigures::posts(&figures, 7)[0].post_id, "P-7");
    }
}
