//! Helpers shared by the integration tests: a network of member states with keys, a
//! producer of signed incidents, an in-process processor, and readers of the outputs.
#![allow(dead_code, clippy::unwrap_used)]

pub mod cases;
pub mod hooks;
pub mod hostile;
pub mod posts;
pub mod proc;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ewn_kafka::admin::{ensure_topics, record_counts};
use ewn_kafka::producer::Tally;
use ewn_kafka::{AssignedReader, KafkaSettings, RecordProducer, StartAt, Topics};
use ewn_model::validate::Limits;
use ewn_model::{
    Alert, AvroRecord, Category, Direction, Incident, Level, Location, MsgType, Rejection,
    Reporter, SourceReliability, Subject, SubjectKind, Tlp,
};
use ewn_ops::http::Health;
use ewn_processor::{ProcessSettings, ProcessorConfig};
use ewn_testkit::{kafka_settings, unique_prefix};
use ewn_trust::{BlindingKey, IncidentSigner, KeyEntry, TrustSettings, TrustStore, keys};
use prometheus::Registry;
use sha2::{Digest, Sha256};

pub const MIN: i64 = 60_000;
pub const HOUR: i64 = 60 * MIN;

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// The blinding key every test state shares, so refs match across states.
pub fn blinding() -> BlindingKey {
    BlindingKey::from_bytes([42; 32])
}

pub fn subject_ref(raw: &str) -> String {
    blinding().blind(SubjectKind::Person, raw).unwrap()
}

/// A test network: member states with keys in one trust store, its topics, a producer.
pub struct Net {
    pub dir: tempfile::TempDir,
    pub prefix: String,
    pub settings: KafkaSettings,
    pub store: PathBuf,
    signers: HashMap<String, IncidentSigner>,
    producer: RecordProducer<Arc<Tally>>,
    tally: Arc<Tally>,
    sent: usize,
    /// Records sent since the last flush (topic, key, value), by send id less `flushed`:
    /// sent again when the broker refused them.
    unconfirmed: Vec<(String, Vec<u8>, Option<Vec<u8>>)>,
    /// Send ids below this were confirmed by an earlier flush.
    flushed: usize,
    /// SHA-256 of every value sent again after the broker refused it: when the broker had
    /// written it after all, the copy is on the topic twice (and a processor rejects the
    /// second as `duplicate`).
    pub resent: BTreeSet<[u8; 32]>,
}

impl Net {
    pub fn new(name: &str) -> Net {
        let prefix = unique_prefix(name);
        Net::on(kafka_settings(&prefix))
    }

    /// A network on the broker and prefix of `settings`.
    pub fn on(settings: KafkaSettings) -> Net {
        let dir = tempfile::tempdir().unwrap();
        let prefix = settings.topic_prefix.clone();
        let store = dir.path().join("trust.toml");
        let mut signers = HashMap::new();
        let now = now_ms();
        for state in ["KZ", "KG", "TJ", "UZ", "TM"] {
            let key = keys::generate();
            let key_id = format!("{}-test", state.to_lowercase());
            TrustStore::append_to_file(
                &store,
                &KeyEntry {
                    key_id: key_id.clone(),
                    state: state.into(),
                    public_key: ewn_trust::PublicKey::from(&key),
                    not_before: now - 30 * 24 * HOUR,
                    not_after: now + 30 * 24 * HOUR,
                    revoked_at: None,
                },
            )
            .unwrap();
            signers.insert(state.to_string(), IncidentSigner::new(key_id, key));
        }
        // Every topic of the network, as `ewn topics create` makes them: the services
        // only check theirs at start.
        let topics = Topics::new(&prefix);
        block_on(ensure_topics(
            &settings,
            &topics.network(&settings.states, settings.partitions, settings.partitions),
        ))
        .unwrap();
        let tally = Arc::new(Tally::default());
        let producer = RecordProducer::new(&settings, "test", tally.clone(), None).unwrap();
        Net {
            dir,
            prefix,
            settings,
            store,
            signers,
            producer,
            tally,
            sent: 0,
            unconfirmed: Vec::new(),
            flushed: 0,
            resent: BTreeSet::new(),
        }
    }

    pub fn topics(&self) -> Topics {
        Topics::new(&self.prefix)
    }

    pub fn signer(&mut self, state: &str) -> &mut IncidentSigner {
        self.signers.get_mut(state).unwrap()
    }

    /// Processor configuration for this network.
    pub fn config(&self, lateness_secs: u64) -> ProcessorConfig {
        ProcessorConfig {
            kafka: self.settings.clone(),
            trust: TrustSettings {
                trust_store: Some(self.store.clone()),
                ..TrustSettings::default()
            },
            limits: Limits::default(),
            process: ProcessSettings {
                allowed_lateness_secs: lateness_secs,
                batch_wait_ms: 10,
                reload_interval_secs: 1,
                ..ProcessSettings::default()
            },
        }
    }

    /// Signs and produces `incidents` (each to its reporter's topic), waiting for the
    /// broker to confirm them.
    pub fn publish(&mut self, incidents: &[Incident]) {
        let topics = self.topics();
        for i in incidents {
            let value = self
                .signer(&i.reporter.state)
                .sign(i, i.reported_at)
                .unwrap()
                .to_avro()
                .unwrap();
            let key = i
                .subjects
                .first()
                .map_or(i.incident_id.clone(), |s| s.subject_ref.clone());
            self.send(&topics.incidents(&i.reporter.state), key.as_bytes(), &value);
        }
        self.flush();
    }

    /// Produces raw bytes to a state's incidents topic (flush separately).
    pub fn send(&mut self, topic: &str, key: &[u8], value: &[u8]) {
        self.send_record(topic, key, Some(value));
    }

    /// Produces a tombstone (a key without a value; flush separately).
    pub fn tombstone(&mut self, topic: &str, key: &[u8]) {
        self.send_record(topic, key, None);
    }

    fn send_record(&mut self, topic: &str, key: &[u8], value: Option<&[u8]>) {
        self.producer
            .send(topic, Some(key), value, self.sent)
            .unwrap();
        self.unconfirmed
            .push((topic.to_string(), key.to_vec(), value.map(<[u8]>::to_vec)));
        self.sent += 1;
    }

    /// Replaces the producer (a new idempotent producer id) once everything sent is
    /// confirmed: Tansu 0.6.0 answers "unknown broker error" to a producer that lived
    /// through a broker restart (tests/chaos.rs).
    pub fn renew_producer(&mut self) {
        self.flush();
        self.fresh_producer();
    }

    /// A new producer, once it is served: a probe record on a topic of its own, nobody's
    /// input, confirmed (up to 60 s). For a few seconds after a restart, and now and then
    /// under load, Tansu 0.6.0 answers "unknown broker error" to new producers too.
    fn fresh_producer(&mut self) {
        let probe = format!("{}probe", self.prefix);
        block_on(ensure_topics(
            &self.settings,
            &[ewn_kafka::TopicSpec {
                name: probe.clone(),
                partitions: 1,
                compacted: false,
            }],
        ))
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            self.tally = Arc::new(Tally::default());
            self.producer =
                RecordProducer::new(&self.settings, "test", self.tally.clone(), None).unwrap();
            self.sent = 0;
            self.unconfirmed.clear();
            self.flushed = 0;
            self.send(&probe, b"probe", b"probe");
            match self.try_flush() {
                Ok(()) => {
                    self.confirmed();
                    return;
                }
                Err(e) if Instant::now() >= deadline => {
                    panic!("no new producer served within 60 s: {e}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(500)),
            }
        }
    }

    /// Waits until the broker confirmed everything sent. What it refused goes again (the
    /// same bytes) through a new producer, up to 5 times; a value sent again is noted in
    /// [`Net::resent`].
    pub fn flush(&mut self) {
        for _ in 0..5 {
            let failed: Vec<usize> = match self.try_flush() {
                Ok(()) => {
                    self.confirmed();
                    return;
                }
                Err(e) => {
                    let failed: Vec<usize> = self
                        .tally
                        .report()
                        .failed
                        .iter()
                        .map(|(id, _)| *id)
                        .collect();
                    assert!(!failed.is_empty(), "{e}");
                    failed
                }
            };
            let again: Vec<_> = failed
                .into_iter()
                .map(|id| self.unconfirmed[id - self.flushed].clone())
                .collect();
            self.fresh_producer();
            for (topic, key, value) in again {
                if let Some(v) = &value {
                    self.resent.insert(Sha256::digest(v).into());
                }
                self.send_record(&topic, &key, value.as_deref());
            }
        }
        self.try_flush().unwrap();
        self.confirmed();
    }

    /// Everything sent so far is confirmed.
    fn confirmed(&mut self) {
        self.unconfirmed.clear();
        self.flushed = self.sent;
    }

    fn try_flush(&self) -> Result<(), String> {
        self.producer
            .flush(Duration::from_secs(30))
            .map_err(|e| e.to_string())?;
        let report = self.tally.report();
        if !report.failed.is_empty() {
            return Err(format!("unconfirmed: {:?}", report.failed));
        }
        if report.confirmed as usize != self.sent {
            return Err(format!("{} of {} confirmed", report.confirmed, self.sent));
        }
        Ok(())
    }

    /// A new Ed25519 key for service `service` (the signer of its audit records), saved
    /// as `<dir>/<file>.pem` and added to the network's trust store with `ewn trust add
    /// --role service`, as an operator would: the key and the PEM's path.
    pub fn service_key(
        &self,
        dir: &std::path::Path,
        file: &str,
        key_id: &str,
        service: &str,
    ) -> (ed25519_dalek::SigningKey, PathBuf) {
        let key = keys::generate();
        let pem = dir.join(format!("{file}.pem"));
        keys::save_signing_key(&pem, &key).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ewn"))
            .args(["trust", "add", "--trust-store"])
            .arg(&self.store)
            .args([
                "--key-id",
                key_id,
                "--role",
                "service",
                "--service",
                service,
            ])
            .arg("--public-key")
            .arg(&pem)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ewn trust add: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        (key, pem)
    }

    /// Every record value of `topic`, as the broker holds them, in partition order.
    pub fn read_values(&self, topic: &str) -> Vec<Vec<u8>> {
        read_records(&self.settings, topic)
            .into_iter()
            .map(|(_, v)| v)
            .collect()
    }

    fn read_all<T: AvroRecord>(&self, topic: &str) -> Vec<T> {
        self.read_values(topic)
            .iter()
            .map(|v| T::from_avro(v).unwrap())
            .collect()
    }

    pub fn alerts(&self) -> Vec<Alert> {
        self.read_all(&self.topics().alerts())
    }

    pub fn rejections(&self) -> Vec<Rejection> {
        self.read_all(&self.topics().rejected())
    }

    pub fn receipts(&self) -> Vec<ewn_model::DeliveryReceipt> {
        self.read_all(&self.topics().deliveries())
    }

    pub fn acks(&self) -> Vec<ewn_model::Ack> {
        self.read_all(&self.topics().acks())
    }
}

/// Writes a signing key file as the gateway reads it: a `key_id = ...` line, then the
/// PKCS#8 PEM; replaced as an operator would, a new file renamed over the old one.
/// Every record of `topic` as (partition, value), as the broker holds them, in partition
/// order (a tombstone reads as an empty value); fails unless all are read within 60 s.
pub fn read_records(settings: &KafkaSettings, topic: &str) -> Vec<(i32, Vec<u8>)> {
    read_topic(settings, topic, |r| {
        (r.partition, r.value.unwrap_or_default().to_vec())
    })
}

/// Every record of `topic`, from its beginning, in partition order, each as `f` makes it;
/// fails unless all are read within 60 s.
pub fn read_topic<T>(
    settings: &KafkaSettings,
    topic: &str,
    mut f: impl FnMut(ewn_kafka::RawRecord<'_>) -> T,
) -> Vec<T> {
    let total: i64 = record_counts(settings, |t| t == topic)
        .unwrap()
        .iter()
        .map(|(_, n)| n)
        .sum();
    if total == 0 {
        return vec![];
    }
    let reader = AssignedReader::new(
        settings,
        "test-read",
        topic,
        |t| t == topic,
        StartAt::Beginning,
    )
    .unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while (out.len() as i64) < total && Instant::now() < deadline {
        reader
            .poll(Duration::from_millis(100), |r| out.push(f(r)))
            .unwrap();
    }
    assert_eq!(out.len() as i64, total, "read every record of {topic}");
    out
}

pub fn write_key_file(path: &std::path::Path, key_id: &str, key: &ed25519_dalek::SigningKey) {
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
    let text = format!(
        "key_id = {key_id}\n{}",
        key.to_pkcs8_pem(LineEnding::LF).unwrap().as_str()
    );
    let tmp = path.with_extension("new");
    let _ = std::fs::remove_file(&tmp);
    ewn_trust::secret::write_secret(&tmp, &text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Trusts `key` in `store` to sign for member state `state`, from a day ago for 30 days.
pub fn trust_state_key(
    store: &std::path::Path,
    key_id: &str,
    state: &str,
    key: &ed25519_dalek::SigningKey,
) {
    let now = now_ms();
    TrustStore::append_to_file(
        store,
        &KeyEntry {
            key_id: key_id.into(),
            state: state.into(),
            public_key: ewn_trust::PublicKey::from(key),
            not_before: now - 24 * HOUR,
            not_after: now + 30 * 24 * HOUR,
            revoked_at: None,
        },
    )
    .unwrap();
}

/// Trusts `key` in `store` as the audit key of service `service`, from a day ago for 30
/// days.
pub fn trust_service_key(
    store: &std::path::Path,
    key_id: &str,
    service: &str,
    key: &ed25519_dalek::SigningKey,
) {
    let now = now_ms();
    TrustStore::append_service_to_file(
        store,
        &ewn_trust::ServiceKey {
            key_id: key_id.into(),
            service: service.into(),
            public_key: ewn_trust::PublicKey::from(key),
            not_before: now - 24 * HOUR,
            not_after: now + 30 * 24 * HOUR,
            revoked_at: None,
        },
    )
    .unwrap();
}

/// Alert ids that stand: every ALERT not later cancelled.
pub fn live_ids(alerts: &[Alert]) -> BTreeSet<String> {
    let cancelled: BTreeSet<&String> = alerts
        .iter()
        .filter(|a| a.msg_type == MsgType::Cancel)
        .flat_map(|a| a.references.iter())
        .collect();
    alerts
        .iter()
        .filter(|a| a.msg_type == MsgType::Alert && !cancelled.contains(&a.alert_id))
        .map(|a| a.alert_id.clone())
        .collect()
}

/// Live alerts per rule.
pub fn live_rules(alerts: &[Alert]) -> BTreeMap<String, usize> {
    let live = live_ids(alerts);
    let mut m = BTreeMap::new();
    for a in alerts
        .iter()
        .filter(|a| a.msg_type == MsgType::Alert && live.contains(&a.alert_id))
    {
        *m.entry(a.rule.clone()).or_default() += 1;
    }
    m
}

/// An incident with sensible defaults; `n` makes the id unique.
pub fn incident(n: u64, state: &str, t: i64, category: Category, subjects: &[&str]) -> Incident {
    Incident {
        incident_id: format!(
            "{:08x}-0000-4000-8000-{:012x}",
            n >> 32,
            n & 0xffff_ffff_ffff
        ),
        occurred_at: t,
        reported_at: t.max(now_ms() - 60_000).min(now_ms()),
        reporter: Reporter {
            state: state.into(),
            agency: format!("{state}-BORDER"),
            post_id: None,
        },
        category,
        severity: Level::Medium,
        source_reliability: SourceReliability::B,
        info_credibility: 2,
        tlp: Tlp::Green,
        location: Location {
            lat: 43.2,
            lon: 76.9,
            area: format!("{state}-AREA"),
            crossing: None,
        },
        direction: None,
        subjects: subjects
            .iter()
            .map(|s| Subject {
                kind: SubjectKind::Person,
                subject_ref: subject_ref(s),
                watchlist: None,
            })
            .collect(),
        summary: format!("test incident {n}"),
        attributes: Default::default(),
    }
}

pub fn at_crossing(mut i: Incident, direction: Direction) -> Incident {
    i.location.crossing = Some(format!("{}-POST-1", i.reporter.state));
    i.direction = Some(direction);
    i
}

pub fn in_area(mut i: Incident, area: &str) -> Incident {
    i.location.area = area.into();
    i
}

/// Re-keyed records the default rule set makes of these incidents (subjects + area).
pub fn rekeyed_count(incidents: &[Incident]) -> u64 {
    incidents.iter().map(|i| i.subjects.len() as u64 + 1).sum()
}

/// Re-keyed records a rule set grouping by subject only makes.
pub fn rekeyed_by_subject(incidents: &[Incident]) -> u64 {
    incidents.iter().map(|i| i.subjects.len() as u64).sum()
}

/// A service running in this process, on its own thread and 2-thread runtime, until
/// `stop` (or drop) sets its shutdown flag.
pub struct InProcess<E> {
    pub registry: Registry,
    shutdown: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<(), E>>>,
}

/// The admin endpoints (`/metrics`, `/healthz`) of an in-process service on a free
/// loopback port, served as its command serves them until `shutdown` is set: the health the
/// service beats, and the address.
pub async fn serve_admin(
    registry: &Registry,
    shutdown: Arc<AtomicBool>,
) -> (Arc<Health>, std::net::SocketAddr) {
    let health = Arc::new(Health::default());
    let stopped = async move {
        while !shutdown.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let (admin, _server) = ewn_ops::http::serve(
        "127.0.0.1:0".parse().unwrap(),
        ewn_ops::http::router(registry.clone(), health.clone(), None),
        stopped,
    )
    .await
    .unwrap();
    (health, admin)
}

pub fn in_process<E, F, Fut>(run: F) -> InProcess<E>
where
    F: FnOnce(Registry, Arc<AtomicBool>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), E>>,
    E: Send + 'static,
{
    // As the services build it: with ewn_build_info and the process_* series.
    let registry = ewn_ops::metrics::registry();
    let shutdown = Arc::new(AtomicBool::new(false));
    let (r, s) = (registry.clone(), shutdown.clone());
    let thread = std::thread::spawn(move || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(run(r, s))
    });
    InProcess {
        registry,
        shutdown,
        thread: Some(thread),
    }
}

impl<E: std::fmt::Debug> InProcess<E> {
    /// The value of one of its metrics (see [`metric`]).
    pub fn metric(&self, name: &str, labels: &str) -> f64 {
        metric(&ewn_ops::metrics::render(&self.registry), name, labels)
    }

    /// Stops it and waits; panics with its error if it failed.
    pub fn stop(mut self) {
        self.shutdown.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap().unwrap();
        }
    }

    /// Still running: it has not stopped (or failed) since it started.
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Waits for it to end by itself (it failed to start, say) and gives its outcome.
    pub fn outcome(mut self) -> Option<Result<(), E>> {
        self.thread.take().and_then(|t| t.join().ok())
    }
}

impl<E> Drop for InProcess<E> {
    fn drop(&mut self) {
        self.shutdown.store(true, Ordering::Relaxed);
    }
}

/// A processor running in this process.
pub type Running = InProcess<ewn_processor::Error>;

pub fn start(config: ProcessorConfig) -> Running {
    in_process(move |r, s| async move {
        ewn_processor::run(config, &r, Arc::new(Health::default()), s).await
    })
}

/// The value of a metric (summed over label sets matching `labels`, e.g. `rule="x"`).
pub fn metric(text: &str, name: &str, labels: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.starts_with(name)
                && (l.as_bytes().get(name.len()) == Some(&b'{')
                    || l.as_bytes().get(name.len()) == Some(&b' '))
        })
        .filter(|l| labels.is_empty() || l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>()
        // An empty sum is -0.0; print it as 0.
        + 0.0
}

impl Running {
    /// Waits until the correlate stage has fully handled `n` re-keyed events.
    pub fn wait_correlated(&self, n: u64) {
        wait_until(
            &format!("{n} correlated events"),
            Duration::from_secs(90),
            || self.metric("ewn_processor_correlated_events_total", "") as u64 >= n,
        );
    }
}

pub fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The `p` quantile of sorted values (NaN when there are none).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// The broker's own floor for the benches: one produce-then-consume hop, p50 and p99 in ms.
pub fn hop_latency(settings: &KafkaSettings) -> (f64, f64) {
    let topic = format!("{}bench.hop", settings.topic_prefix);
    let spec = ewn_kafka::TopicSpec {
        name: topic.clone(),
        partitions: 1,
        compacted: false,
    };
    block_on(ensure_topics(settings, &[spec])).unwrap();
    let reader =
        AssignedReader::new(settings, "bench-hop", &topic, |t| t == topic, StartAt::End).unwrap();
    let producer =
        RecordProducer::new(settings, "bench-hop", Arc::new(Tally::default()), None).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let mut v = Vec::new();
    for k in 0..200usize {
        let sent = Instant::now();
        producer.send(&topic, None, Some(b"ping"), k).unwrap();
        while reader
            .poll(Duration::from_millis(500), |_| ())
            .unwrap()
            .is_none()
        {}
        v.push(sent.elapsed().as_secs_f64() * 1000.0);
        std::thread::sleep(Duration::from_millis(5));
    }
    v.sort_by(|a, b| a.total_cmp(b));
    (percentile(&v, 0.5), percentile(&v, 0.99))
}
