//! Issue 2 against a real broker (Tansu): signed incidents published with `ewn publish` and
//! read back, verified, with `ewn tail`.

#![allow(clippy::unwrap_used)] // tests fail loudly on anything unexpected

use std::collections::{BTreeMap, HashSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ewn_kafka::producer::Tally;
use ewn_kafka::{AssignedReader, RecordProducer, StartAt, Topics, admin};
use ewn_model::{AvroRecord, Incident};
use ewn_testkit::{broker, free_port, kafka_settings, unique_prefix, write_file};
use ewn_trust::{IncidentSigner, KeyEntry, TrustStore, keys};
use serde_json::{Value, json};

fn ewn(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ewn"))
        .args(args)
        .env("EWN__LOG__LEVEL", "warn")
        .output()
        .unwrap_or_else(|e| panic!("cannot run ewn: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A state's keys, the trust store and the topics of one test.
struct Net {
    dir: tempfile::TempDir,
    prefix: String,
}

impl Net {
    fn new(name: &str) -> Net {
        let net = Net {
            dir: tempfile::tempdir().unwrap(),
            prefix: unique_prefix(name),
        };
        let out = net.run(&["topics", "create"]);
        assert!(out.status.success(), "topics create: {}", text(&out.stderr));
        net.keygen("KZ", "kz-1");
        let blind = net.path("blind.key");
        let out = ewn(&["keygen", "--blinding-out", blind.to_str().unwrap()]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        net
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn p(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    fn keygen(&self, state: &str, key_id: &str) {
        let out = ewn(&[
            "keygen",
            "--state",
            state,
            "--key-id",
            key_id,
            "--secret-out",
            &self.p(&format!("{key_id}.pem")),
            "--trust-store",
            &self.p("trust.toml"),
        ]);
        assert!(out.status.success(), "keygen: {}", text(&out.stderr));
    }

    /// `ewn ARGS --brokers B --topic-prefix P`.
    fn run(&self, args: &[&str]) -> Output {
        let mut all: Vec<&str> = args.to_vec();
        all.extend([
            "--brokers",
            broker().addr.as_str(),
            "--topic-prefix",
            self.prefix.as_str(),
        ]);
        ewn(&all)
    }

    fn publish(&self, input: &Path, extra: &[&str]) -> Output {
        let (key, blind, input) = (
            self.p("kz-1.pem"),
            self.p("blind.key"),
            input.display().to_string(),
        );
        let mut args = vec![
            "publish",
            "--key",
            &key,
            "--key-id",
            "kz-1",
            "--blinding-key",
            &blind,
            "--input",
            &input,
        ];
        args.extend(extra);
        self.run(&args)
    }

    /// `ewn tail --topic incidents --from-beginning --count N`, parsed.
    fn tail_incidents(&self, count: usize) -> Vec<Value> {
        let store = self.p("trust.toml");
        let count = count.to_string();
        let out = self.run(&[
            "tail",
            "--topic",
            "incidents",
            "--trust-store",
            &store,
            "--from-beginning",
            "--count",
            &count,
            "--timeout-secs",
            "120",
        ]);
        assert!(out.status.success(), "tail: {}", text(&out.stderr));
        text(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// One valid input line; `i` makes the incident id and the raw identifiers unique.
fn input_line(i: usize) -> String {
    json!({
        "incident_id": format!("{:08x}-5b2a-4a57-9f6c-{:012x}", i, i),
        "occurred_at": "2026-11-20T06:12:00+06:00",
        "reporter": {"state": "KZ", "agency": "KZ-KNB-BORDER", "post_id": "KZ-KHORGOS-01"},
        "category": "SUSPICIOUS_CROSSING",
        "severity": "MEDIUM",
        "source_reliability": "C",
        "info_credibility": 3,
        "tlp": "GREEN",
        "location": {"lat": 44.21, "lon": 80.41, "area": "KZ-ZHT", "crossing": "KZ-KHORGOS"},
        "direction": "EXIT",
        "subjects": [
            {"kind": "PERSON", "id": format!("Rawname Person{i:06}")},
            {"kind": "DOCUMENT", "id": format!("PASSPORT{i:07}")}
        ],
        "summary": format!("routine crossing report number {i}")
    })
    .to_string()
}

#[test]
fn ten_thousand_incidents_published_and_read_back_verified() {
    let net = Net::new("tenk");
    let input = net.path("in.jsonl");
    let lines: Vec<String> = (0..10_000).map(input_line).collect();
    write_file(&input, &(lines.join("\n") + "\n"));
    let started = Instant::now();
    let out = net.publish(&input, &[]);
    let elapsed = started.elapsed();
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "publish: {stdout} {}",
        text(&out.stderr)
    );
    assert!(
        stdout.contains("published 10000 of 10000 records (0 rejected); 10000 confirmed"),
        "{stdout}"
    );
    eprintln!(
        "publish of 10,000 records: {elapsed:?} wall clock (whole command); ewn says: {stdout}"
    );

    let records = net.tail_incidents(10_000);
    let ids: HashSet<&str> = records
        .iter()
        .map(|r| {
            assert_eq!(r["verified"], json!(true), "{r}");
            r["incident"]["incident_id"].as_str().unwrap()
        })
        .collect();
    assert_eq!(ids.len(), 10_000, "every incident read back once");
    // Nothing written twice: the topics hold exactly 10,000 records.
    let topics = Topics::new(&net.prefix);
    let counts =
        admin::record_counts(&kafka_settings(&net.prefix), |t| topics.is_incidents(t)).unwrap();
    assert_eq!(
        counts.iter().map(|(_, n)| n).sum::<i64>(),
        10_000,
        "{counts:?}"
    );
}

#[test]
fn hostile_records_each_get_their_reason() {
    let net = Net::new("hostile");
    net.keygen("KG", "kg-1");
    let store_path = net.path("trust.toml");
    let now = chrono::Utc::now().timestamp_millis();
    let day = 86_400_000;
    let add_from = |key_id: &str, not_before: i64, revoked_at: Option<i64>, not_after: i64| {
        let key = keys::generate();
        let entry = KeyEntry {
            key_id: key_id.into(),
            state: "KZ".into(),
            public_key: ewn_trust::PublicKey::from(&key),
            not_before,
            not_after,
            revoked_at,
        };
        TrustStore::append_to_file(&store_path, &entry).unwrap();
        IncidentSigner::new(key_id, key)
    };
    let add = |key_id: &str, revoked_at: Option<i64>, not_after: i64| {
        add_from(key_id, now - 30 * day, revoked_at, not_after)
    };
    let mut revoked = add("kz-revoked", Some(now - day), now + 300 * day);
    let mut expired = add("kz-expired", None, now - day);
    let mut tomorrow = add_from("kz-tomorrow", now + day, None, now + 300 * day);
    let mut kz = IncidentSigner::new(
        "kz-1",
        keys::load_signing_key(&net.path("kz-1.pem")).unwrap(),
    );
    let mut kg = IncidentSigner::new(
        "kg-1",
        keys::load_signing_key(&net.path("kg-1.pem")).unwrap(),
    );
    let mut stranger = IncidentSigner::new("xx-9", keys::generate());

    let mut incident = ewn_model::samples::incident();
    incident.reported_at = now;
    incident.occurred_at = now - 60_000;
    let signed =
        |s: &mut IncidentSigner, i: &Incident| s.sign(i, i.reported_at).unwrap().to_avro().unwrap();
    let mut flipped = kz.sign(&incident, incident.reported_at).unwrap();
    flipped.payload[30] ^= 0x04;
    let topics = Topics::new(&net.prefix);
    let (kz_topic, kg_topic) = (topics.incidents("kz"), topics.incidents("kg"));
    let cases: Vec<(&str, &str, Vec<u8>)> = vec![
        ("valid", &kz_topic, signed(&mut kz, &incident)),
        ("bad_signature", &kz_topic, flipped.to_avro().unwrap()),
        ("topic_mismatch", &kz_topic, signed(&mut kg, &incident)),
        ("key_state_mismatch", &kg_topic, signed(&mut kg, &incident)),
        ("unknown_key", &kz_topic, signed(&mut stranger, &incident)),
        ("key_revoked", &kz_topic, signed(&mut revoked, &incident)),
        ("key_expired", &kz_topic, signed(&mut expired, &incident)),
        (
            "key_not_yet_valid",
            &kz_topic,
            signed(&mut tomorrow, &incident),
        ),
        // a signing time an hour ahead of tail's clock (skew: 300 s)
        (
            "clock_skew",
            &kz_topic,
            kz.sign(&incident, now + 3_600_000)
                .unwrap()
                .to_avro()
                .unwrap(),
        ),
        (
            "undecodable",
            &kz_topic,
            b"\xc3\x01 definitely not avro".to_vec(),
        ),
    ];
    let producer = RecordProducer::new(
        &kafka_settings(&net.prefix),
        "test",
        Arc::new(Tally::default()),
        None,
    )
    .unwrap();
    for (i, (_, topic, value)) in cases.iter().enumerate() {
        producer.send(topic, Some(b"k"), Some(value), i).unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    assert_eq!(producer.sink().report().confirmed, cases.len() as u64);

    let mut got: Vec<String> = net
        .tail_incidents(cases.len())
        .into_iter()
        .map(|r| {
            if r["verified"] == json!(true) {
                "valid".to_string()
            } else {
                r["reason"].as_str().unwrap().to_string()
            }
        })
        .collect();
    got.sort();
    let mut want: Vec<String> = cases.iter().map(|(r, _, _)| r.to_string()).collect();
    want.sort();
    assert_eq!(got, want);
}

/// Records as an EWN before the specification's fingerprints wrote them (the header carries
/// apache-avro's fingerprint) still verify and decode through Kafka, and `tail` marks them.
#[test]
fn records_with_the_legacy_fingerprint_are_read_and_marked() {
    let net = Net::new("legacy-fp");
    let now = chrono::Utc::now().timestamp_millis();
    let mut incident = ewn_model::samples::incident();
    incident.reported_at = now;
    incident.occurred_at = now - 60_000;
    let mut kz = IncidentSigner::new(
        "kz-1",
        keys::load_signing_key(&net.path("kz-1.pem")).unwrap(),
    );
    let legacy = |mut bytes: Vec<u8>, codec: &ewn_model::Codec| {
        assert_ne!(codec.legacy_fingerprint(), codec.fingerprint());
        bytes[2..10].copy_from_slice(&codec.legacy_fingerprint());
        bytes
    };
    let old_payload = legacy(incident.to_avro().unwrap(), Incident::codec());
    let old_incident = kz.sign_legacy_payload(old_payload).to_avro().unwrap();
    let new_incident = kz
        .sign(&incident, incident.reported_at)
        .unwrap()
        .to_avro()
        .unwrap();
    let alert = ewn_model::samples::alert();
    let old_alert = legacy(alert.to_avro().unwrap(), ewn_model::Alert::codec());

    let topics = Topics::new(&net.prefix);
    let producer = RecordProducer::new(
        &kafka_settings(&net.prefix),
        "test",
        Arc::new(Tally::default()),
        None,
    )
    .unwrap();
    let kz_topic = topics.incidents("kz");
    producer
        .send(&kz_topic, Some(b"k"), Some(&old_incident), 0)
        .unwrap();
    producer
        .send(&kz_topic, Some(b"k"), Some(&new_incident), 1)
        .unwrap();
    producer
        .send(&topics.alerts(), Some(b"k"), Some(&old_alert), 2)
        .unwrap();
    producer.flush(Duration::from_secs(30)).unwrap();
    assert_eq!(producer.sink().report().confirmed, 3);

    let lines = net.tail_incidents(2);
    assert!(
        lines.iter().all(|l| l["verified"] == json!(true)),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .all(|l| l["incident"]["incident_id"] == json!(incident.incident_id)),
        "{lines:?}"
    );
    assert_eq!(lines[0]["legacy_fingerprint"], json!(true), "{lines:?}");
    assert_eq!(lines[1].get("legacy_fingerprint"), None, "{lines:?}");

    let out = net.run(&[
        "tail",
        "--topic",
        "alerts",
        "--from-beginning",
        "--count",
        "1",
        "--timeout-secs",
        "120",
    ]);
    assert!(out.status.success(), "tail: {}", text(&out.stderr));
    let line: Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(line["schema"], "Alert", "{line}");
    assert_eq!(line["legacy_fingerprint"], json!(true), "{line}");
    assert_eq!(line["value"]["alert_id"], json!(alert.alert_id), "{line}");
}

#[test]
fn invalid_lines_are_named_and_the_valid_ones_published() {
    let net = Net::new("invalid");
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas/examples/");
    let valid: Vec<String> = std::fs::read_to_string(format!("{examples}valid.jsonl"))
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    let invalid: Vec<String> = std::fs::read_to_string(format!("{examples}invalid.jsonl"))
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    // valid, invalid, valid, invalid, ...: lines 2, 4, 6, ... are the invalid ones.
    let mut mixed = Vec::new();
    for i in 0..invalid.len().max(valid.len()) {
        mixed.extend(valid.get(i).cloned());
        mixed.extend(invalid.get(i).cloned());
    }
    let input = net.path("mixed.jsonl");
    write_file(&input, &(mixed.join("\n") + "\n"));
    let out = net.publish(&input, &[]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "rejected lines make the exit non-zero"
    );
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(
            "published 5 of 12 records (7 rejected); 5 confirmed by the broker, 0 not confirmed"
        ),
        "{stdout}"
    );
    let stderr = text(&out.stderr);
    let line_of = |needle: &str| {
        mixed
            .iter()
            .position(|l| l.contains(needle))
            .map(|i| i + 1)
            .unwrap()
    };
    for expected in [
        format!("line {}: field `category`: missing field `category`", 2),
        format!(
            "line {}: field `severity`: unknown variant `APOCALYPTIC`",
            4
        ),
        format!("line {}: field `occurred_at`:", 6),
        format!("line {}: field `subjects[0].id`: missing field `id`", 8),
        format!(
            "line {}: field `summary`: is 3000 bytes, at most 2048",
            line_of(&"x".repeat(3000))
        ),
        format!("line {}: field `info_credibility`: 9 is outside 1..6", 11),
        format!("line {}: not valid JSON", line_of("not JSON at all")),
    ] {
        assert!(
            stderr.contains(&expected),
            "missing `{expected}` in:\n{stderr}"
        );
    }
    let records = net.tail_incidents(5);
    assert!(records.iter().all(|r| r["verified"] == json!(true)));
}

#[test]
fn unreachable_broker_fails_within_the_timeout_and_keeps_the_unsent_lines() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).display().to_string();
    assert!(
        ewn(&[
            "keygen",
            "--state",
            "KZ",
            "--key-id",
            "kz-1",
            "--secret-out",
            &p("k.pem"),
            "--trust-store",
            &p("t.toml")
        ])
        .status
        .success()
    );
    assert!(
        ewn(&["keygen", "--blinding-out", &p("b.key")])
            .status
            .success()
    );
    let input = dir.path().join("in.jsonl");
    write_file(
        &input,
        &((0..5).map(input_line).collect::<Vec<_>>().join("\n") + "\n"),
    );
    let nobody = format!("127.0.0.1:{}", free_port());
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_ewn"))
        .args([
            "publish",
            "--brokers",
            &nobody,
            "--timeout-ms",
            "3000",
            "--key",
            &p("k.pem"),
            "--key-id",
            "kz-1",
        ])
        .args([
            "--blinding-key",
            &p("b.key"),
            "--input",
            &input.display().to_string(),
            "--unsent",
            &p("unsent.jsonl"),
        ])
        .env("EWN__KAFKA__REQUEST_TIMEOUT_MS", "2000")
        .env("EWN__LOG__LEVEL", "error")
        .output()
        .unwrap();
    let elapsed = started.elapsed();
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout} {}", text(&out.stderr));
    assert!(
        stdout.contains("0 confirmed by the broker, 5 not confirmed"),
        "{stdout}"
    );
    // 3 s message timeout plus the 2 s flush margin; generous slack for a loaded CI machine.
    assert!(elapsed < Duration::from_secs(20), "took {elapsed:?}");
    let unsent = std::fs::read_to_string(dir.path().join("unsent.jsonl")).unwrap();
    assert_eq!(unsent.lines().count(), 5);
    let mode = std::fs::metadata(dir.path().join("unsent.jsonl"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn no_raw_identifier_reaches_the_topic() {
    let net = Net::new("blinding");
    let input = net.path("in.jsonl");
    let lines: Vec<String> = (0..50).map(input_line).collect();
    write_file(&input, &(lines.join("\n") + "\n"));
    assert!(net.publish(&input, &[]).status.success());
    let settings = kafka_settings(&net.prefix);
    let topics = Topics::new(&net.prefix);
    let reader = AssignedReader::new(
        &settings,
        "raw",
        "incidents",
        |t| topics.is_incidents(t),
        StartAt::Beginning,
    )
    .unwrap();
    let mut stored = Vec::new();
    let mut n = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while n < 50 && Instant::now() < deadline {
        reader
            .poll(Duration::from_millis(200), |r| {
                stored.extend_from_slice(r.key.unwrap_or_default());
                stored.extend_from_slice(r.value.unwrap_or_default());
                n += 1;
            })
            .unwrap();
    }
    assert_eq!(n, 50);
    let haystack = String::from_utf8_lossy(&stored).to_ascii_uppercase();
    // Positive control: text that is meant to travel is found by this search.
    assert!(haystack.contains("ROUTINE CROSSING REPORT NUMBER 49"));
    for i in 0..50 {
        for raw in [
            format!("Rawname Person{i:06}"),
            format!("PASSPORT{i:07}"),
            format!("PERSON{i:06}"),
        ] {
            assert!(
                !haystack.contains(&raw.to_ascii_uppercase()),
                "raw identifier {raw} found on the topic"
            );
        }
    }
}

#[test]
fn configuration_errors_name_the_key_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("ewn.toml");
    write_file(&cfg, "[kafka]\nbrokerz = \"x:1\"\n");
    let out = ewn(&["topics", "list", "--config", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("kafka.brokerz") && stderr.contains(cfg.to_str().unwrap()),
        "{stderr}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_ewn"))
        .args(["topics", "list"])
        .env("EWN__KAFKA__PARTITIONS", "lots")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("EWN__KAFKA__PARTITIONS"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn keygen_writes_private_keys_0600_and_fills_the_trust_store() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).display().to_string();
    for (state, id) in [("KZ", "kz-1"), ("kg", "kg-1")] {
        let out = ewn(&[
            "keygen",
            "--state",
            state,
            "--key-id",
            id,
            "--secret-out",
            &p(&format!("{id}.pem")),
            "--trust-store",
            &p("t.toml"),
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let mode = std::fs::metadata(p(&format!("{id}.pem")))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let store = TrustStore::load(&dir.path().join("t.toml")).unwrap();
    assert_eq!(store.get("kg-1").unwrap().state, "KG");
    // a duplicate key id is refused and leaves no secret behind
    let out = ewn(&[
        "keygen",
        "--state",
        "KZ",
        "--key-id",
        "kz-1",
        "--secret-out",
        &p("again.pem"),
        "--trust-store",
        &p("t.toml"),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(!dir.path().join("again.pem").exists());
    let ids: BTreeMap<&str, ()> = [("kz-1", ()), ("kg-1", ())].into();
    assert!(ids.keys().all(|k| store.get(k).is_some()));
}

#[test]
fn keygen_writes_a_fanout_key_0600_and_never_overwrites_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fanout.key");
    let out = ewn(&["keygen", "--fanout-key", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let first = std::fs::read_to_string(&path).unwrap();
    assert!(ewn_fanout::keys::FanoutKey::load(&path).is_ok());
    let again = ewn(&["keygen", "--fanout-key", path.to_str().unwrap()]);
    assert!(!again.status.success());
    assert_eq!(std::fs::read_to_string(&path).unwrap(), first);
}

/// Runs `ewn tail --topic TOPIC ARGS` against the test's topics; status and parsed lines.
fn tail_lines(net: &Net, topic: &str, extra: &[&str]) -> (Output, Vec<Value>) {
    let mut args = vec!["tail", "--topic", topic, "--timeout-secs", "60"];
    args.extend(extra);
    let out = net.run(&args);
    let lines = serde_json::Deserializer::from_str(&text(&out.stdout))
        .into_iter::<Value>()
        .map(|v| v.unwrap())
        .collect();
    (out, lines)
}

fn ids(lines: &[Value]) -> Vec<String> {
    let mut ids: Vec<String> = lines
        .iter()
        .map(|l| l["value"]["alert_id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

/// `ewn tail` with what users of kcat expect: start offsets (beginning, end, N, -N, @time),
/// one partition, `--exit-at-end`, a key, a state, and pretty output.
#[test]
fn tail_starts_filters_and_stops_like_kcat() {
    let net = Net::new("tail-flags");
    let topics = Topics::new(&net.prefix);
    let producer = RecordProducer::new(
        &kafka_settings(&net.prefix),
        "test",
        Arc::new(Tally::default()),
        None,
    )
    .unwrap();
    let alert = |i: usize| {
        let mut a = ewn_model::samples::alert();
        a.alert_id = format!("alert-{i}");
        a.key = format!("k{i}");
        a.states = vec![if i.is_multiple_of(2) { "KZ" } else { "KG" }.into()];
        a
    };
    let send = |range: std::ops::Range<usize>| {
        for i in range {
            let bytes = alert(i).to_avro().unwrap();
            let key = format!("k{i}");
            producer
                .send(&topics.alerts(), Some(key.as_bytes()), Some(&bytes), i)
                .unwrap();
        }
        producer.flush(Duration::from_secs(30)).unwrap();
    };
    send(0..6);
    // A moment after every record of the first batch and before any of the second (record
    // timestamps are the producer's clock): wait for the clock to move on, no fixed sleep.
    let t = chrono::Utc::now().timestamp_millis() + 1;
    while chrono::Utc::now().timestamp_millis() <= t {
        std::thread::yield_now();
    }
    send(6..10);
    assert_eq!(producer.sink().report().confirmed, 10);
    let all_ids: Vec<String> = {
        let mut v: Vec<String> = (0..10).map(|i| format!("alert-{i}")).collect();
        v.sort();
        v
    };

    // Everything so far, then stop: no --count needed.
    let (out, all) = tail_lines(&net, "alerts", &["--offset", "beginning", "--exit-at-end"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(ids(&all), all_ids);
    assert!(
        all.iter()
            .all(|l| l["key"].as_str().unwrap().starts_with('k'))
    );
    let place = |l: &Value| {
        (
            l["partition"].as_i64().unwrap(),
            l["offset"].as_i64().unwrap(),
        )
    };
    let partitions: std::collections::BTreeSet<i64> = all.iter().map(|l| place(l).0).collect();
    assert!(partitions.len() >= 2, "ten keys spread over the partitions");

    for &p in &partitions {
        let here: Vec<&Value> = all.iter().filter(|l| place(l).0 == p).collect();
        let p_arg = p.to_string();
        let (out, got) = tail_lines(
            &net,
            "alerts",
            &[
                "--partition",
                &p_arg,
                "--offset",
                "beginning",
                "--exit-at-end",
            ],
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(got.iter().collect::<Vec<_>>(), here, "partition {p}");

        // From an offset inside the partition.
        let mut offsets: Vec<i64> = here.iter().map(|l| place(l).1).collect();
        offsets.sort();
        let from = offsets[offsets.len() / 2];
        let from_arg = from.to_string();
        let (out, got) = tail_lines(
            &net,
            "alerts",
            &[
                "--partition",
                &p_arg,
                "--offset",
                &from_arg,
                "--exit-at-end",
            ],
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        let want: Vec<i64> = offsets.iter().copied().filter(|o| *o >= from).collect();
        assert_eq!(got.iter().map(|l| place(l).1).collect::<Vec<_>>(), want);
    }

    // The last record of each partition.
    let (out, last) = tail_lines(&net, "alerts", &["--offset", "-1", "--exit-at-end"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(last.len(), partitions.len());
    for l in &last {
        let (p, o) = place(l);
        let max = all
            .iter()
            .filter(|a| place(a).0 == p)
            .map(|a| place(a).1)
            .max();
        assert_eq!(Some(o), max);
    }

    // From a time: exactly the second batch, given as milliseconds or RFC 3339.
    let second: Vec<String> = {
        let mut v: Vec<String> = (6..10).map(|i| format!("alert-{i}")).collect();
        v.sort();
        v
    };
    let rfc3339 = chrono::DateTime::from_timestamp_millis(t)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    for at in [format!("@{t}"), format!("@{rfc3339}")] {
        let (out, got) = tail_lines(&net, "alerts", &["--offset", &at, "--exit-at-end"]);
        assert!(out.status.success(), "{at}: {}", text(&out.stderr));
        assert_eq!(ids(&got), second, "{at}");
    }

    // From the end: nothing yet, and it says so by stopping.
    let (out, got) = tail_lines(&net, "alerts", &["--offset", "end", "--exit-at-end"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(got.is_empty(), "{got:?}");

    // One key; one state.
    let (out, got) = tail_lines(
        &net,
        "alerts",
        &["--offset", "beginning", "--exit-at-end", "--key", "k3"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(ids(&got), ["alert-3"]);
    let (out, got) = tail_lines(
        &net,
        "alerts",
        &["--offset", "beginning", "--exit-at-end", "--state", "kg"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        ids(&got),
        ["alert-1", "alert-3", "alert-5", "alert-7", "alert-9"]
    );

    // Pretty: the same object, indented.
    let (out, got) = tail_lines(
        &net,
        "alerts",
        &[
            "--from-beginning",
            "--key",
            "k3",
            "--count",
            "1",
            "--format",
            "pretty",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("\n  \"partition\": "),
        "{}",
        text(&out.stdout)
    );
    let k3 = all.iter().find(|l| l["key"] == "k3").unwrap();
    assert_eq!(got, std::slice::from_ref(k3));

    // A partition that is not there is an error that says so.
    let (out, _) = tail_lines(&net, "alerts", &["--partition", "99", "--exit-at-end"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("partition 99"),
        "{}",
        text(&out.stderr)
    );
}

/// Incidents by state, decoded without verification (`--no-verify`) or verified.
#[test]
fn tail_incidents_by_state_verified_or_not() {
    let net = Net::new("tail-state");
    net.keygen("KG", "kg-1");
    let now = chrono::Utc::now().timestamp_millis();
    let mut incident = ewn_model::samples::incident();
    incident.reported_at = now;
    incident.occurred_at = now - 60_000;
    let mut kz = IncidentSigner::new(
        "kz-1",
        keys::load_signing_key(&net.path("kz-1.pem")).unwrap(),
    );
    let mut kg = IncidentSigner::new(
        "kg-1",
        keys::load_signing_key(&net.path("kg-1.pem")).unwrap(),
    );
    let mut from_kg = incident.clone();
    from_kg.reporter.state = "KG".into();
    from_kg.incident_id = "0b7a4a4e-8a6c-4d0e-9e36-6a0d1c2b3f4a".into();
    let mut forged = kg.sign(&from_kg, from_kg.reported_at).unwrap();
    forged.payload[30] ^= 0x04;
    let topics = Topics::new(&net.prefix);
    let producer = RecordProducer::new(
        &kafka_settings(&net.prefix),
        "test",
        Arc::new(Tally::default()),
        None,
    )
    .unwrap();
    let kz_bytes = kz
        .sign(&incident, incident.reported_at)
        .unwrap()
        .to_avro()
        .unwrap();
    let kg_bytes = kg
        .sign(&from_kg, from_kg.reported_at)
        .unwrap()
        .to_avro()
        .unwrap();
    let forged_bytes = forged.to_avro().unwrap();
    producer
        .send(&topics.incidents("kz"), Some(b"a"), Some(&kz_bytes), 0)
        .unwrap();
    producer
        .send(&topics.incidents("kg"), Some(b"b"), Some(&kg_bytes), 1)
        .unwrap();
    producer
        .send(&topics.incidents("kg"), Some(b"b"), Some(&forged_bytes), 2)
        .unwrap();
    producer.flush(Duration::from_secs(30)).unwrap();
    assert_eq!(producer.sink().report().confirmed, 3);

    // Decoded, not verified: the forged record's contents show, marked unverified.
    let (out, got) = tail_lines(
        &net,
        "incidents",
        &[
            "--no-verify",
            "--state",
            "KG",
            "--offset",
            "beginning",
            "--exit-at-end",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(got.len(), 2, "{got:?}");
    for l in &got {
        assert_eq!(l["topic"], topics.incidents("kg"));
        assert_eq!(l["verified"], Value::Null);
        assert_eq!(l["key_id"], "kg-1");
        assert_eq!(l["incident"]["reporter"]["state"], "KG");
    }

    // Verified: the forged one is rejected, and KZ's topic alone is read for KZ.
    let store = net.p("trust.toml");
    let (out, got) = tail_lines(
        &net,
        "incidents",
        &[
            "--trust-store",
            &store,
            "--state",
            "KG",
            "--offset",
            "beginning",
            "--exit-at-end",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let verdicts: Vec<&Value> = got.iter().map(|l| &l["verified"]).collect();
    assert_eq!(verdicts, [&json!(true), &json!(false)], "{got:?}");
    assert_eq!(got[1]["reason"], "bad_signature");
    assert_eq!(
        got[1].get("incident"),
        None,
        "unverified contents are withheld"
    );
    let (out, got) = tail_lines(
        &net,
        "incidents",
        &[
            "--trust-store",
            &store,
            "--state",
            "kz",
            "--offset",
            "beginning",
            "--exit-at-end",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0]["incident"]["incident_id"],
        json!(incident.incident_id)
    );

    // --no-verify is for incidents only; --state for incidents and alerts.
    let (out, _) = tail_lines(&net, "alerts", &["--no-verify"]);
    assert_eq!(out.status.code(), Some(2));
    let (out, _) = tail_lines(&net, "acks", &["--state", "KZ"]);
    assert_eq!(out.status.code(), Some(2));
}

/// `ewn tail --format raw` takes a record's bytes as the broker holds them, nothing added,
/// and `ewn trust check --record` judges that file as the processor would: valid as
/// published, refused once its key is revoked from before it signed, refused with one
/// byte flipped.
#[test]
fn a_record_taken_raw_by_tail_is_checked_by_trust_check() {
    let net = Net::new("raw-record");
    let before = chrono::Utc::now().timestamp() - 60;
    let input = net.path("in.jsonl");
    write_file(&input, &(input_line(7) + "\n"));
    let out = net.publish(&input, &[]);
    assert!(out.status.success(), "publish: {}", text(&out.stderr));
    let read = net.tail_incidents(1);
    let (partition, offset) = (
        read[0]["partition"].as_i64().unwrap().to_string(),
        read[0]["offset"].as_i64().unwrap().to_string(),
    );
    let incident_id = read[0]["incident"]["incident_id"].as_str().unwrap();

    let out = net.run(&[
        "tail",
        "--topic",
        "incidents",
        "--state",
        "KZ",
        "--partition",
        &partition,
        "--offset",
        &offset,
        "--count",
        "1",
        "--format",
        "raw",
        "--timeout-secs",
        "60",
    ]);
    assert!(out.status.success(), "tail raw: {}", text(&out.stderr));
    let bytes = out.stdout;
    assert_eq!(&bytes[..2], &[0xC3, 0x01], "single-object encoding");
    // Exactly one record value: it decodes and encodes back to the same bytes.
    let signed = ewn_model::SignedIncident::from_avro(&bytes).unwrap();
    assert_eq!(signed.to_avro().unwrap(), bytes, "nothing added or lost");
    let record = net.path("record.bin");
    std::fs::write(&record, &bytes).unwrap();

    let check = |store: &str, file: &Path| {
        let out = ewn(&[
            "trust",
            "check",
            "--trust-store",
            store,
            "--record",
            file.to_str().unwrap(),
            "--format",
            "json",
        ]);
        let v: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}{}", text(&out.stdout), text(&out.stderr)));
        (out.status.code().unwrap(), v)
    };
    let (code, v) = check(&net.p("trust.toml"), &record);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["valid"], true, "{v}");
    assert_eq!(v["key_id"], "kz-1", "{v}");
    assert_eq!(v["incident_id"], incident_id, "{v}");

    // One byte of the signature flipped (after the 10-byte header and the key id).
    let mut flipped = bytes.clone();
    let at = 10 + 1 + "kz-1".len() + 5;
    flipped[at] ^= 0x01;
    let flipped_file = net.path("flipped.bin");
    std::fs::write(&flipped_file, &flipped).unwrap();
    let (code, v) = check(&net.p("trust.toml"), &flipped_file);
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["valid"], false, "{v}");
    assert_eq!(v["reason"], "bad_signature", "{v}");

    // The key revoked from a minute before it signed, in a copy of the store.
    let revoked = net.path("revoked.toml");
    std::fs::copy(net.path("trust.toml"), &revoked).unwrap();
    let at = chrono::DateTime::from_timestamp(before, 0)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let out = ewn(&[
        "trust",
        "revoke",
        "--trust-store",
        revoked.to_str().unwrap(),
        "kz-1",
        "--at",
        &at,
    ]);
    assert!(out.status.success(), "revoke: {}", text(&out.stderr));
    let (code, v) = check(revoked.to_str().unwrap(), &record);
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["reason"], "key_revoked", "{v}");
    // In words, for people: what is wrong and that it is not valid.
    let out = ewn(&[
        "trust",
        "check",
        "--trust-store",
        revoked.to_str().unwrap(),
        "--record",
        record.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let said = text(&out.stdout);
    assert!(
        said.contains("NOT VALID") && said.contains("key_revoked"),
        "{said}"
    );
}
