//! `ewn gateway` on Tansu: what a post is told (202) holds whatever happens to the gateway
//! or the broker.
//!
//! - the gateway killed with SIGKILL at random points while posts send
//!   (`EWN_GATEWAY_KILLS`, 20 by default; `EWN_GATEWAY_SEED` replays a run);
//! - the broker killed and restarted after `EWN_GATEWAY_BROKER_DOWN_SECS` (15 by default,
//!   `make test-gateway-broker-down` runs the issue's 120) while posts keep sending;
//! - the spool budget reached; the signing key rotated under load; file-drop intake; the
//!   per-line answers of the HTTP intake.
//!
//! Posts give `reported_at` in their lines, as they should: a report sent again after a
//! lost answer is then the same payload, which the gateway recognises (its incident id and
//! payload digest are remembered, `gateway.spool.remember_secs`) and answers `duplicate`
//! without signing it again; so a duplicate on the topic can only be the same signed
//! record sent twice by the forwarder (which the processor's replay guard rejects as
//! `duplicate`), never a second version or a second envelope.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::posts::{Ledger, client, id, posts_sending, send, seq_of, token};
use common::{trust_state_key, write_key_file};
use ed25519_dalek::SigningKey;
use ewn_gateway::GatewaySettings;
use ewn_gateway::intake::Clock;
use ewn_kafka::admin::ensure_topics;
use ewn_kafka::{KafkaSettings, Topics};
use ewn_model::validate::Limits;
use ewn_model::{AvroRecord, Incident, SignedIncident};
use ewn_ops::http::Health;
use ewn_testkit::{Engine, free_port, kafka_settings, start_broker, unique_prefix};
use ewn_trust::{BlindingKey, TrustSettings, TrustStore, Verifier, keys};
use prometheus::Registry;
use serde_json::Value;

const HOUR: i64 = 3_600_000;

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A small deterministic generator (xorshift), seeded per run and printed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

fn trust(store: &Path, key_id: &str, key: &SigningKey) {
    trust_state_key(store, key_id, "KZ", key);
}

/// A member state (KZ) with a gateway's files: key, blinding key, tokens, trust store.
struct Site {
    dir: tempfile::TempDir,
    settings: KafkaSettings,
    key: PathBuf,
    store: PathBuf,
}

impl Site {
    fn new(settings: KafkaSettings, posts: &[&str]) -> Site {
        let dir = tempfile::tempdir().unwrap();
        let settings = KafkaSettings {
            states: vec!["kz".into()],
            ..settings
        };
        let topics = Topics::new(&settings.topic_prefix);
        let specs: Vec<_> = topics
            .all(&settings.states, settings.partitions)
            .into_iter()
            .filter(|s| s.name == topics.incidents("KZ"))
            .collect();
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(ensure_topics(&settings, &specs))
            .unwrap();
        let key = dir.path().join("kz.key");
        let store = dir.path().join("trust.toml");
        let k1 = keys::generate();
        write_key_file(&key, "kz-gw-1", &k1);
        trust(&store, "kz-gw-1", &k1);
        BlindingKey::from_bytes([42; 32])
            .save(&dir.path().join("blinding.key"))
            .unwrap();
        let mut tokens = String::new();
        for p in posts {
            let hash = hex::encode(ewn_ops::tokens::token_hash(&token(p)));
            tokens.push_str(&format!(
                "[[tokens]]\nname = \"terminal-{p}\"\npost_id = \"{p}\"\nsha256 = \"{hash}\"\n"
            ));
        }
        ewn_trust::secret::write_secret(&dir.path().join("tokens.toml"), &tokens).unwrap();
        Site {
            dir,
            settings,
            key,
            store,
        }
    }

    fn gateway(&self) -> GatewaySettings {
        let d = self.dir.path();
        let mut g = GatewaySettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            state: "KZ".into(),
            signing_key_file: Some(self.key.clone()),
            blinding_key_file: Some(d.join("blinding.key")),
            tokens_file: Some(d.join("tokens.toml")),
            key_reload_interval_ms: 100,
            ..GatewaySettings::default()
        };
        g.spool.path = Some(d.join("spool.db"));
        g.forward.initial_backoff_ms = 200;
        g.forward.max_backoff_ms = 2_000;
        g.drop.poll_interval_ms = 100;
        g
    }

    fn topic(&self) -> String {
        Topics::new(&self.settings.topic_prefix).incidents("KZ")
    }

    /// Every record of the state's topic: (partition, offset order kept, value).
    fn records(&self) -> Vec<(i32, Vec<u8>)> {
        common::read_records(&self.settings, &self.topic())
    }

    /// incident id -> every distinct signed record carrying it, and the (partition, id)
    /// sequence as read.
    fn delivered(&self) -> (Versions, Vec<(i32, Incident)>) {
        let mut by_id: HashMap<String, BTreeSet<Vec<u8>>> = HashMap::new();
        let mut seq = Vec::new();
        for (partition, value) in self.records() {
            let signed = SignedIncident::from_avro(&value).unwrap();
            let incident = Incident::from_avro(&signed.payload).unwrap();
            by_id
                .entry(incident.incident_id.clone())
                .or_default()
                .insert(value);
            seq.push((partition, incident));
        }
        (by_id, seq)
    }
}

/// Incident id -> every distinct signed record carrying it.
type Versions = HashMap<String, BTreeSet<Vec<u8>>>;

/// A report line of `post`, number `n`: a UUID made of both, `reported_at` given.
fn line(post_index: usize, post: &str, n: u64) -> String {
    let t = chrono::DateTime::from_timestamp_millis(now_ms() - 60_000)
        .unwrap()
        .to_rfc3339();
    serde_json::json!({
        "incident_id": id(post_index, n),
        "occurred_at": t,
        "reported_at": t,
        "reporter": {"state": "KZ", "agency": "KZ-KNB", "post_id": post},
        "category": "SUSPICIOUS_CROSSING",
        "severity": "MEDIUM",
        "source_reliability": "B",
        "info_credibility": 2,
        "tlp": "AMBER",
        "location": {"lat": 44.2, "lon": 80.3, "area": "KZ-ZHT", "crossing": "KZ-KHORGOS"},
        "direction": "EXIT",
        "subjects": [{"kind": "PERSON", "id": format!("Traveller {post_index} {n}")}],
        "summary": "seen at the crossing"
    })
    .to_string()
}

/// A gateway running in this process, on its own runtime.
struct InProcess {
    addr: String,
    registry: Registry,
    shutdown: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

fn start_in_process(site: &Site, gateway: GatewaySettings, clock: Clock) -> InProcess {
    start_with(site.settings.clone(), gateway, clock)
}

fn start_with(kafka: KafkaSettings, gateway: GatewaySettings, clock: Clock) -> InProcess {
    let registry = Registry::new();
    let shutdown = Arc::new(AtomicBool::new(false));
    let config = ewn_gateway::GatewayConfig {
        kafka,
        limits: Limits::default(),
        gateway,
        clock,
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let (r, s) = (registry.clone(), shutdown.clone());
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            match ewn_gateway::start(config, &r, Arc::new(Health::default()), s).await {
                Ok(running) => {
                    tx.send(Ok(running.addr)).unwrap();
                    running.task.await.unwrap().unwrap();
                }
                Err(e) => tx.send(Err(e.to_string())).unwrap(),
            }
        });
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap()
        .unwrap_or_else(|e| panic!("the gateway did not start: {e}"));
    InProcess {
        addr: addr.to_string(),
        registry,
        shutdown,
        thread: Some(thread),
    }
}

impl InProcess {
    fn metric(&self, name: &str, labels: &str) -> f64 {
        let text = ewn_ops::metrics::render(&self.registry);
        let want = if labels.is_empty() {
            name.to_string()
        } else {
            format!("{name}{{{labels}}}")
        };
        text.lines()
            .find_map(|l| l.strip_prefix(&want)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(f64::NAN)
    }

    fn stop(mut self) {
        self.shutdown.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.shutdown.store(true, Ordering::Relaxed);
    }
}

/// Every acknowledged report is on the topic, and no incident id carries two different
/// signed records.
fn assert_all_delivered_once(site: &Site, ledger: &Ledger, timeout: Duration) {
    let acked = ledger.acked.lock().unwrap().clone();
    let mut missing = acked.len();
    let deadline = Instant::now() + timeout;
    let mut by_id = HashMap::new();
    while missing > 0 {
        assert!(
            Instant::now() < deadline,
            "{missing} of {} acknowledged reports not on the topic after {timeout:?}",
            acked.len()
        );
        (by_id, _) = site.delivered();
        missing = acked.iter().filter(|id| !by_id.contains_key(*id)).count();
        if missing > 0 {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    for (id, versions) in &by_id {
        assert_eq!(versions.len(), 1, "{id} on the topic in two versions");
    }
}

/// Within each partition, each post's reports appear in the order they were accepted
/// (a resent duplicate, the same signed record, is skipped).
fn assert_order_per_post(seq: &[(i32, Incident)]) {
    let mut seen = BTreeSet::new();
    let mut last: BTreeMap<(i32, usize), u64> = BTreeMap::new();
    for (partition, incident) in seq {
        if !seen.insert(incident.incident_id.clone()) {
            continue;
        }
        let (post, n) = seq_of(&incident.incident_id);
        if let Some(prev) = last.insert((*partition, post), n) {
            assert!(
                prev < n,
                "post {post}, partition {partition}: report {n} after {prev}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------

#[test]
fn the_intake_answers_line_by_line_and_never_echoes_raw_ids() {
    let site = Site::new(
        kafka_settings(&unique_prefix("gw-intake")),
        &["KZ-POST-A", "KZ-POST-B"],
    );
    let gw = start_in_process(&site, site.gateway(), ewn_gateway::intake::system_clock());
    // every closed label set and every post's series exists from the start, at 0
    for (name, labels) in [
        (
            "ewn_gateway_intake_reports_total",
            r#"outcome="spool_full",via="http""#,
        ),
        (
            "ewn_gateway_intake_reports_total",
            r#"outcome="accepted",via="file""#,
        ),
        ("ewn_gateway_spool_records", r#"post="KZ-POST-B""#),
        (
            "ewn_gateway_spool_oldest_unsent_age_seconds",
            r#"post="KZ-POST-A""#,
        ),
        ("ewn_gateway_key_reloads_total", r#"outcome="refused""#),
    ] {
        assert_eq!(gw.metric(name, labels), 0.0, "{name}{{{labels}}}");
    }
    let http = client();
    // no token, a wrong token
    let r = http
        .post(format!("http://{}/api/v1/incidents", gw.addr))
        .body(line(0, "KZ-POST-A", 0))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = http
        .post(format!("http://{}/api/v1/incidents", gw.addr))
        .bearer_auth("guess")
        .body(line(0, "KZ-POST-A", 0))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(gw.metric("ewn_gateway_intake_unauthorized_total", ""), 2.0);

    // JSON lines: good, bad category, a raw id given as a number, another post's report
    let bad_category = line(0, "KZ-POST-A", 1).replace("SUSPICIOUS_CROSSING", "ALIENS");
    let raw_number = line(0, "KZ-POST-A", 2).replace("\"Traveller 0 2\"", "19870302555");
    let other_post = line(1, "KZ-POST-B", 3);
    // a Cyrillic е typed inside a Latin name; a structured surname with an unassigned code
    // point: refused naming the field, the name never shown
    let mixed_script =
        line(0, "KZ-POST-A", 4).replace("\"Traveller 0 4\"", "\"Trav\u{435}ller 0 4\"");
    let unassigned = line(0, "KZ-POST-A", 5).replace(
        "\"id\":\"Traveller 0 5\"",
        "\"person\":{\"surname\":\"Travel\\u0378ler\",\"given_names\":\"Timur\"}",
    );
    let body = [
        line(0, "KZ-POST-A", 0),
        bad_category,
        raw_number,
        String::new(),
        other_post,
        mixed_script,
        unassigned,
    ]
    .join("\n");
    let (status, answer) =
        send(&http, &gw.addr, "KZ-POST-A", body, "application/x-ndjson").unwrap();
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["accepted"], 1);
    assert_eq!(answer["rejected"], 5, "{answer}");
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results[0]["status"], "accepted");
    assert_eq!(results[0]["key_id"], "kz-gw-1");
    assert_eq!(results[1]["line"], 2);
    assert_eq!(results[1]["errors"][0]["field"], "category");
    assert!(
        results[1]["errors"][0]["error"]
            .as_str()
            .unwrap()
            .starts_with("line 2: field `category`: unknown variant `ALIENS`"),
        "{answer}"
    );
    assert_eq!(results[2]["errors"][0]["field"], "subjects[0].id");
    assert_eq!(results[3]["line"], 5, "the blank line 4 is skipped");
    assert_eq!(results[3]["errors"][0]["field"], "reporter.post_id");
    assert_eq!(
        results[4]["errors"][0]["field"], "subjects[0].id",
        "{answer}"
    );
    assert!(
        results[4]["errors"][0]["error"]
            .as_str()
            .unwrap()
            .contains("mixes Latin, Cyrillic or Greek letters"),
        "{answer}"
    );
    assert_eq!(
        results[5]["errors"][0]["field"], "subjects[0].person.surname",
        "{answer}"
    );
    assert!(
        results[5]["errors"][0]["error"]
            .as_str()
            .unwrap()
            .contains("unassigned"),
        "{answer}"
    );
    assert!(!answer.to_string().contains("Trav"), "{answer}");
    assert!(!answer.to_string().contains("19870302555"), "{answer}");
    assert!(!answer.to_string().contains("Traveller"), "{answer}");

    // one JSON incident, pretty-printed over several lines; the post id filled in
    let mut one: Value = serde_json::from_str(&line(0, "KZ-POST-A", 9)).unwrap();
    one["reporter"].as_object_mut().unwrap().remove("post_id");
    let (status, answer) = send(
        &http,
        &gw.addr,
        "KZ-POST-A",
        serde_json::to_string_pretty(&one).unwrap(),
        "application/json",
    )
    .unwrap();
    assert_eq!(status, 202, "{answer}");
    // nothing valid: 422
    let (status, _) = send(
        &http,
        &gw.addr,
        "KZ-POST-A",
        "{".into(),
        "application/x-ndjson",
    )
    .unwrap();
    assert_eq!(status, 422);
    // a body past the bound: 413
    let big = "x".repeat(GatewaySettings::default().max_body_bytes + 1);
    let (status, _) = send(&http, &gw.addr, "KZ-POST-A", big, "application/x-ndjson").unwrap();
    assert_eq!(status, 413);

    wait_until("both reports forwarded", Duration::from_secs(60), || {
        gw.metric("ewn_gateway_forwarded_total", r#"post="KZ-POST-A""#) == 2.0
    });
    assert_eq!(
        gw.metric("ewn_gateway_spool_records", r#"post="KZ-POST-A""#),
        0.0
    );
    assert_eq!(
        gw.metric(
            "ewn_gateway_intake_reports_total",
            r#"outcome="accepted",via="http""#
        ),
        2.0
    );
    assert_eq!(
        gw.metric(
            "ewn_gateway_intake_reports_total",
            r#"outcome="invalid",via="http""#
        ),
        // bad category, raw number, other post, mixed script, unassigned, and the lone `{`
        6.0
    );
    let (by_id, seq) = site.delivered();
    assert_eq!(by_id.len(), 2);
    let filled = seq.iter().find(|(_, i)| i.incident_id == id(0, 9)).unwrap();
    assert_eq!(filled.1.reporter.post_id.as_deref(), Some("KZ-POST-A"));
    gw.stop();
}

#[test]
fn reports_acknowledged_before_a_sigkill_all_reach_the_topic_once() {
    let kills = env_u64("EWN_GATEWAY_KILLS", 20);
    let seed = env_u64("EWN_GATEWAY_SEED", now_ms() as u64 | 1);
    eprintln!("EWN_GATEWAY_SEED={seed} EWN_GATEWAY_KILLS={kills}");
    let mut rng = Rng(seed);
    let posts = ["KZ-POST-1", "KZ-POST-2", "KZ-POST-3"];
    let site = Site::new(kafka_settings(&unique_prefix("gw-kill")), &posts);
    let port = free_port();
    let admin = free_port();
    let d = site.dir.path();
    let config = d.join("gateway.toml");
    let mut g = site.gateway();
    g.listen = SocketAddr::from(([127, 0, 0, 1], port));
    g.admin.listen = SocketAddr::from(([127, 0, 0, 1], admin));
    let file = toml::to_string(&toml::Table::from_iter([
        (
            "kafka".to_string(),
            toml::Value::try_from(&KafkaSettings {
                message_timeout_ms: 5_000,
                ..site.settings.clone()
            })
            .unwrap(),
        ),
        ("gateway".to_string(), toml::Value::try_from(&g).unwrap()),
    ]))
    .unwrap();
    std::fs::write(&config, file).unwrap();
    let start = || -> Child {
        let child = Command::new(env!("CARGO_BIN_EXE_ewn"))
            .args([
                "--config",
                config.to_str().unwrap(),
                "--log-level",
                "warn",
                "gateway",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        wait_until("the gateway listens", Duration::from_secs(60), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        child
    };
    let addr = Arc::new(Mutex::new(format!("127.0.0.1:{port}")));
    let stop = Arc::new(AtomicBool::new(false));
    let ledger = Arc::new(Ledger::default());
    let mut gateway = start();
    let senders = posts_sending(
        line,
        addr,
        posts.iter().map(|p| p.to_string()).collect(),
        Duration::from_millis(5),
        stop.clone(),
        ledger.clone(),
    );
    let mut left_waiting = 0;
    for k in 0..kills {
        let before = ledger.acked.lock().unwrap().len();
        // at a random point, once the posts are being answered again
        wait_until("reports acknowledged", Duration::from_secs(60), || {
            ledger.acked.lock().unwrap().len() > before
        });
        let run_for = Duration::from_millis(rng.range(50, 1_500));
        let until = Instant::now() + run_for;
        wait_until("the random moment", run_for * 2, || Instant::now() >= until);
        gateway.kill().unwrap(); // SIGKILL
        gateway.wait().unwrap();
        // What the dead gateway left in its spool: acknowledged, not yet confirmed.
        let waiting = ewn_gateway::spool::Spool::open(&d.join("spool.db"))
            .unwrap()
            .depth()
            .unwrap()
            .records;
        left_waiting += waiting;
        eprintln!(
            "kill {}: after {:?}, {} acknowledged so far, {waiting} left in the spool",
            k + 1,
            run_for,
            ledger.acked.lock().unwrap().len()
        );
        gateway = start();
    }
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        s.join().unwrap();
    }
    let acked = ledger.acked.lock().unwrap().len();
    eprintln!(
        "{acked} reports acknowledged across {kills} kills; {left_waiting} found waiting in the spool after a kill; {} resends answered duplicate",
        ledger.duplicates.load(Ordering::Relaxed)
    );
    assert!(acked > 0);
    assert_all_delivered_once(&site, &ledger, Duration::from_secs(120));
    let (_, seq) = site.delivered();
    assert_order_per_post(&seq);
    gateway.kill().unwrap();
    gateway.wait().unwrap();
}

#[test]
fn a_broker_down_for_a_while_loses_nothing_and_keeps_order_per_post() {
    let down = Duration::from_secs(env_u64("EWN_GATEWAY_BROKER_DOWN_SECS", 15));
    let broker =
        start_broker(Engine::Sqlite).unwrap_or_else(|e| panic!("Tansu broker did not start: {e}"));
    let settings = KafkaSettings {
        brokers: broker.addr.clone(),
        topic_prefix: unique_prefix("gw-broker-down"),
        partitions: 3,
        statistics_interval_ms: 0,
        message_timeout_ms: 3_000,
        ..KafkaSettings::default()
    };
    let posts = ["KZ-POST-1", "KZ-POST-2", "KZ-POST-3"];
    let site = Site::new(settings, &posts);
    let gw = start_in_process(&site, site.gateway(), ewn_gateway::intake::system_clock());
    let stop = Arc::new(AtomicBool::new(false));
    let ledger = Arc::new(Ledger::default());
    let senders = posts_sending(
        line,
        Arc::new(Mutex::new(gw.addr.clone())),
        posts.iter().map(|p| p.to_string()).collect(),
        Duration::from_millis(50),
        stop.clone(),
        ledger.clone(),
    );
    wait_until("reports forwarded", Duration::from_secs(60), || {
        gw.metric("ewn_gateway_forwarded_total", r#"post="KZ-POST-1""#) >= 20.0
    });
    broker.kill9().unwrap();
    let killed = Instant::now();
    let at_kill = ledger.acked.lock().unwrap().len();
    wait_until(
        "the broker's downtime",
        down + Duration::from_secs(5),
        || killed.elapsed() >= down,
    );
    let spooled = gw.metric("ewn_gateway_spool_records", r#"post="KZ-POST-2""#);
    let acked_down = ledger.acked.lock().unwrap().len() - at_kill;
    eprintln!(
        "broker down {down:?}: {acked_down} reports accepted meanwhile, {spooled} of KZ-POST-2 spooled"
    );
    assert!(
        acked_down > 0,
        "the gateway accepts while the broker is away"
    );
    assert!(spooled > 0.0, "what was accepted waits in the spool");
    broker.restart().unwrap();
    let back = Instant::now();
    wait_until(
        "new reports after the return",
        Duration::from_secs(30),
        || ledger.acked.lock().unwrap().len() > at_kill + acked_down + 30,
    );
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        s.join().unwrap();
    }
    assert_all_delivered_once(&site, &ledger, Duration::from_secs(120));
    eprintln!(
        "caught up {:.1} s after the broker's return",
        back.elapsed().as_secs_f64()
    );
    let (_, seq) = site.delivered();
    assert_order_per_post(&seq);
    wait_until("an empty spool", Duration::from_secs(30), || {
        posts
            .iter()
            .all(|p| gw.metric("ewn_gateway_spool_records", &format!("post=\"{p}\"")) == 0.0)
    });
    gw.stop();
    broker.stop().unwrap();
}

#[test]
fn past_the_spool_budget_the_gateway_answers_507_and_loses_nothing() {
    let posts = ["KZ-POST-1"];
    let site = Site::new(kafka_settings(&unique_prefix("gw-budget")), &posts);
    // First no broker at all: everything accepted stays in the spool.
    let nowhere = KafkaSettings {
        brokers: format!("127.0.0.1:{}", free_port()),
        message_timeout_ms: 2_000,
        ..site.settings.clone()
    };
    let mut g = site.gateway();
    g.spool.max_records = 40;
    // An injected clock, an hour ahead once the reports are in: their age shows it.
    let offset = Arc::new(AtomicI64::new(0));
    let o = offset.clone();
    let clock: Clock = Arc::new(move || now_ms() + o.load(Ordering::Relaxed));
    let gw = start_with(nowhere, g.clone(), clock);
    let http = client();
    let mut accepted = BTreeSet::new();
    let mut n = 0u64;
    let full = loop {
        let body = (n..n + 3)
            .map(|k| line(0, posts[0], k))
            .collect::<Vec<_>>()
            .join("\n");
        let (status, answer) =
            send(&http, &gw.addr, posts[0], body, "application/x-ndjson").unwrap();
        match status {
            202 => {
                accepted.extend((n..n + 3).map(|k| id(0, k)));
                n += 3;
            }
            507 => break answer,
            s => panic!("{s}: {answer}"),
        }
        assert!(n < 100, "no 507 after {n} reports");
    };
    assert_eq!(accepted.len(), 39, "13 requests of 3 fit in 40 records");
    assert_eq!(full["error"], "spool_full");
    let reason = full["reason"].as_str().unwrap();
    assert!(reason.contains("39 of 40 reports"), "{reason}");
    assert!(
        full["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] == "not_accepted")
    );
    // a single report still fits
    let (status, _) = send(
        &http,
        &gw.addr,
        posts[0],
        line(0, posts[0], 500),
        "application/x-ndjson",
    )
    .unwrap();
    assert_eq!(status, 202);
    accepted.insert(id(0, 500));
    assert_eq!(
        gw.metric(
            "ewn_gateway_intake_reports_total",
            r#"outcome="spool_full",via="http""#
        ),
        3.0
    );
    assert_eq!(
        gw.metric("ewn_gateway_spool_records", r#"post="KZ-POST-1""#),
        40.0
    );
    offset.store(HOUR, Ordering::Relaxed);
    wait_until(
        "the oldest unsent age to show the hour",
        Duration::from_secs(10),
        || {
            gw.metric(
                "ewn_gateway_spool_oldest_unsent_age_seconds",
                r#"post="KZ-POST-1""#,
            ) >= 3600.0
        },
    );
    gw.stop();

    // Then the same spool, with the broker: everything accepted arrives, nothing else.
    let gw = start_in_process(&site, g, ewn_gateway::intake::system_clock());
    let ledger = Ledger::default();
    *ledger.acked.lock().unwrap() = accepted.clone();
    assert_all_delivered_once(&site, &ledger, Duration::from_secs(60));
    wait_until("an empty spool", Duration::from_secs(30), || {
        gw.metric("ewn_gateway_spool_records", r#"post="KZ-POST-1""#) == 0.0
    });
    let (by_id, _) = site.delivered();
    assert_eq!(by_id.keys().cloned().collect::<BTreeSet<_>>(), accepted);
    gw.stop();
}

#[test]
fn a_key_rotated_under_load_costs_no_report() {
    let posts = ["KZ-POST-1", "KZ-POST-2"];
    let site = Site::new(kafka_settings(&unique_prefix("gw-rotate")), &posts);
    let gw = start_in_process(&site, site.gateway(), ewn_gateway::intake::system_clock());
    let stop = Arc::new(AtomicBool::new(false));
    let ledger = Arc::new(Ledger::default());
    let http = client();
    // what each acknowledged report was signed with, as the gateway said
    let signed_with: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let senders: Vec<_> = posts
        .iter()
        .enumerate()
        .map(|(i, post)| {
            let (addr, stop, ledger, signed_with) = (
                gw.addr.clone(),
                stop.clone(),
                ledger.clone(),
                signed_with.clone(),
            );
            let post = post.to_string();
            std::thread::spawn(move || {
                let http = client();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let body = (n..n + 5)
                        .map(|k| line(i, &post, k))
                        .collect::<Vec<_>>()
                        .join("\n");
                    let (status, answer) =
                        send(&http, &addr, &post, body, "application/x-ndjson").unwrap();
                    assert_eq!(status, 202, "{answer}");
                    for r in answer["results"].as_array().unwrap() {
                        assert_eq!(r["status"], "accepted", "{answer}");
                        let iid = r["incident_id"].as_str().unwrap().to_string();
                        signed_with
                            .lock()
                            .unwrap()
                            .insert(iid.clone(), r["key_id"].as_str().unwrap().into());
                        ledger.acked.lock().unwrap().insert(iid);
                    }
                    n += 5;
                }
            })
        })
        .collect();
    wait_until("load", Duration::from_secs(30), || {
        ledger.acked.lock().unwrap().len() >= 200
    });
    // The operator's rotation: the new key into the trust store first, then the key file.
    let k2 = keys::generate();
    trust(&site.store, "kz-gw-2", &k2);
    write_key_file(&site.key, "kz-gw-2", &k2);
    let signed_by = |key: &str| {
        signed_with
            .lock()
            .unwrap()
            .values()
            .filter(|k| k.as_str() == key)
            .count()
    };
    wait_until(
        "200 reports signed with the new key",
        Duration::from_secs(60),
        || signed_by("kz-gw-2") >= 200,
    );
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        s.join().unwrap();
    }
    assert_eq!(
        gw.metric("ewn_gateway_key_reloads_total", r#"outcome="rotated""#),
        1.0
    );
    // A same-id replacement is refused and signing goes on with the current key.
    write_key_file(&site.key, "kz-gw-2", &keys::generate());
    wait_until("the refusal counted", Duration::from_secs(10), || {
        gw.metric("ewn_gateway_key_reloads_total", r#"outcome="refused""#) == 1.0
    });
    let (status, answer) = send(
        &http,
        &gw.addr,
        posts[0],
        line(0, posts[0], 1_000_000),
        "application/x-ndjson",
    )
    .unwrap();
    assert_eq!(status, 202);
    assert_eq!(answer["results"][0]["key_id"], "kz-gw-2");
    ledger.acked.lock().unwrap().insert(id(0, 1_000_000));
    signed_with
        .lock()
        .unwrap()
        .insert(id(0, 1_000_000), "kz-gw-2".into());

    assert_all_delivered_once(&site, &ledger, Duration::from_secs(120));
    // The processor's verification, with the trust store holding both keys.
    let store = Arc::new(TrustStore::load(&site.store).unwrap());
    let verifier = Verifier::new(store, TrustSettings::default().policy(Limits::default()));
    let signed_with = signed_with.lock().unwrap();
    let mut per_key: BTreeMap<String, usize> = BTreeMap::new();
    for (_, value) in site.records() {
        let verified = verifier
            .verify(&value, Some("kz"), now_ms())
            .unwrap_or_else(|r| panic!("rejected: {r:?}"));
        let envelope = SignedIncident::from_avro(&value).unwrap();
        let incident_id = &verified.incident.incident_id;
        assert_eq!(
            signed_with.get(incident_id),
            Some(&envelope.key_id),
            "{incident_id}: signed with the key the gateway named when accepting it"
        );
        *per_key.entry(envelope.key_id).or_default() += 1;
    }
    eprintln!("records per key: {per_key:?}");
    assert!(per_key.get("kz-gw-1").is_some_and(|n| *n >= 200));
    assert!(per_key.get("kz-gw-2").is_some_and(|n| *n >= 200));
    gw.stop();
}

#[test]
fn file_drop_moves_good_files_to_done_and_reports_bad_lines() {
    let site = Site::new(kafka_settings(&unique_prefix("gw-drop")), &["KZ-POST-A"]);
    let drop = site.dir.path().join("drop");
    let post_dir = drop.join("KZ-POST-F");
    std::fs::create_dir_all(&post_dir).unwrap();
    let mut g = site.gateway();
    g.drop.dir = Some(drop.clone());
    let gw = start_in_process(&site, g, ewn_gateway::intake::system_clock());
    assert_eq!(
        gw.metric("ewn_gateway_spool_records", r#"post="KZ-POST-F""#),
        0.0
    );
    let place = |name: &str, text: &str| {
        // written aside, renamed into place when complete
        let tmp = post_dir.join(format!(".{name}.part"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, post_dir.join(name)).unwrap();
    };
    // a file still being written is not touched
    std::fs::write(
        post_dir.join("incomplete.jsonl.part"),
        line(5, "KZ-POST-F", 99),
    )
    .unwrap();
    let good: Vec<String> = (0..10).map(|n| line(5, "KZ-POST-F", n)).collect();
    place("good.jsonl", &(good.join("\n") + "\n"));
    let bad = [
        line(5, "KZ-POST-F", 20),
        line(5, "KZ-POST-F", 21).replace("MEDIUM", "EXTREME"),
        line(5, "KZ-POST-F", 22).replace("\"Traveller 5 22\"", "[\"Traveller 5 22\"]"),
    ]
    .join("\n");
    place("bad.jsonl", &bad);

    let done = post_dir.join("done");
    let rejected = post_dir.join("rejected");
    // Counted last, after the report and the move: once both counters say so, both files
    // are fully handled.
    wait_until("both files handled", Duration::from_secs(30), || {
        gw.metric("ewn_gateway_drop_files_total", r#"outcome="done""#) >= 1.0
            && gw.metric("ewn_gateway_drop_files_total", r#"outcome="rejected""#) >= 1.0
    });
    assert!(done.join("good.jsonl").exists() && !post_dir.join("good.jsonl").exists());
    assert!(rejected.join("bad.jsonl").exists() && !post_dir.join("bad.jsonl").exists());
    assert!(post_dir.join("incomplete.jsonl.part").exists());
    let report: Value = serde_json::from_str(
        &std::fs::read_to_string(done.join("good.jsonl.report.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(report["accepted"], 10);
    assert_eq!(report["rejected"], 0);
    let text = std::fs::read_to_string(rejected.join("bad.jsonl.report.json")).unwrap();
    let report: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(report["accepted"], 1);
    assert_eq!(report["rejected"], 2);
    assert_eq!(report["results"][1]["errors"][0]["field"], "severity");
    assert!(
        report["results"][1]["errors"][0]["error"]
            .as_str()
            .unwrap()
            .starts_with("line 2: field `severity`"),
        "{text}"
    );
    assert_eq!(report["results"][2]["errors"][0]["field"], "subjects[0].id");
    assert!(
        !text.contains("Traveller"),
        "a raw identifier in the report: {text}"
    );
    assert_eq!(
        gw.metric("ewn_gateway_drop_files_total", r#"outcome="done""#),
        1.0
    );
    assert_eq!(
        gw.metric("ewn_gateway_drop_files_total", r#"outcome="rejected""#),
        1.0
    );
    assert_eq!(
        gw.metric(
            "ewn_gateway_intake_reports_total",
            r#"outcome="accepted",via="file""#
        ),
        11.0
    );
    assert_eq!(
        gw.metric(
            "ewn_gateway_intake_reports_total",
            r#"outcome="invalid",via="file""#
        ),
        2.0
    );
    let ledger = Ledger::default();
    ledger
        .acked
        .lock()
        .unwrap()
        .extend((0..10).chain([20]).map(|n| id(5, n)));
    assert_all_delivered_once(&site, &ledger, Duration::from_secs(60));
    assert_eq!(site.delivered().0.len(), 11);
    gw.stop();
}

#[test]
fn a_new_report_is_not_stuck_behind_another_posts_backlog() {
    let posts = ["KZ-POST-BACKLOG", "KZ-POST-NEW"];
    let site = Site::new(kafka_settings(&unique_prefix("gw-drain")), &posts);
    let mut g = site.gateway();
    g.forward.quantum = 10;
    g.forward.window_per_post = 10;
    // The backlog builds up while the broker is unreachable.
    let nowhere = KafkaSettings {
        brokers: format!("127.0.0.1:{}", free_port()),
        message_timeout_ms: 2_000,
        ..site.settings.clone()
    };
    let gw = start_with(nowhere, g.clone(), ewn_gateway::intake::system_clock());
    let http = client();
    let backlog = 3_000u64;
    for r in 0..backlog / 100 {
        let body = (r * 100..(r + 1) * 100)
            .map(|k| line(0, posts[0], k))
            .collect::<Vec<_>>()
            .join("\n");
        let (status, answer) =
            send(&http, &gw.addr, posts[0], body, "application/x-ndjson").unwrap();
        assert_eq!(status, 202, "{answer}");
    }
    gw.stop();
    // The link is back: the backlog drains, and a new report of another post goes out in
    // the next round of turns, not after the 3,000.
    let gw = start_in_process(&site, g, ewn_gateway::intake::system_clock());
    let (status, answer) = send(
        &http,
        &gw.addr,
        posts[1],
        line(1, posts[1], 0),
        "application/x-ndjson",
    )
    .unwrap();
    assert_eq!(status, 202, "{answer}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let backlog_left = loop {
        if gw.metric("ewn_gateway_forwarded_total", r#"post="KZ-POST-NEW""#) == 1.0 {
            break gw.metric("ewn_gateway_spool_records", r#"post="KZ-POST-BACKLOG""#);
        }
        assert!(
            Instant::now() < deadline,
            "the new report was not forwarded"
        );
        std::thread::sleep(Duration::from_millis(1));
    };
    eprintln!(
        "the new report was confirmed with {backlog_left} of the {backlog} backlog still waiting"
    );
    assert!(
        backlog_left >= (backlog / 2) as f64,
        "the new report waited behind the backlog ({backlog_left} left)"
    );
    let ledger = Ledger::default();
    ledger
        .acked
        .lock()
        .unwrap()
        .extend((0..backlog).map(|n| id(0, n)).chain([id(1, 0)]));
    assert_all_delivered_once(&site, &ledger, Duration::from_secs(120));
    let (_, seq) = site.delivered();
    assert_order_per_post(&seq);
    gw.stop();
}

#[test]
fn a_report_sent_again_is_answered_duplicate_and_another_under_its_id_is_refused() {
    let site = Site::new(kafka_settings(&unique_prefix("gw-dup")), &["KZ-POST-A"]);
    let gw = start_in_process(&site, site.gateway(), ewn_gateway::intake::system_clock());
    let http = client();
    let ndjson = "application/x-ndjson";
    let first = line(0, "KZ-POST-A", 1);
    let (status, answer) = send(&http, &gw.addr, "KZ-POST-A", first.clone(), ndjson).unwrap();
    assert_eq!(
        (status, answer["accepted"].as_u64()),
        (202, Some(1)),
        "{answer}"
    );
    // The answer was lost, say: the post sends it again.
    let (status, answer) = send(&http, &gw.addr, "KZ-POST-A", first.clone(), ndjson).unwrap();
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["duplicate"], 1, "{answer}");
    assert_eq!(answer["results"][0]["status"], "duplicate", "{answer}");
    // Another report under the same id is refused, naming the field.
    let other = first.replace("seen at the crossing", "another report");
    let (status, answer) = send(&http, &gw.addr, "KZ-POST-A", other, ndjson).unwrap();
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["results"][0]["status"], "rejected", "{answer}");
    assert_eq!(
        answer["results"][0]["errors"][0]["field"], "incident_id",
        "{answer}"
    );
    // One signed record on the topic, once.
    wait_until("the report on the topic", Duration::from_secs(60), || {
        !site.records().is_empty()
    });
    let (versions, seq) = site.delivered();
    assert_eq!(seq.len(), 1);
    assert_eq!(versions[&id(0, 1)].len(), 1);
    assert_eq!(
        gw.metric(
            "ewn_gateway_intake_reports_total",
            r#"outcome="duplicate",via="http""#
        ),
        1.0
    );
}
