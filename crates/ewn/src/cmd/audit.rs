//! `ewn audit alert|verify`: the evidence of one alert, assembled from the topics into a
//! bundle, and checked offline against nothing but the bundle and a trust store.
//!
//! A bundle holds records exactly as the topics hold them (Avro, base64): the episode's
//! messages (ALERT, UPDATEs, CANCEL) with the incident ids each rests on, the signed
//! incidents, the delivery receipts (escalations are receipts with `escalation_step > 0`),
//! the acknowledgements, and each subscription version in force at a delivery, its webhook
//! secret removed. Each item carries an attestation: the assembling service's Ed25519
//! signature (a trust-store key of role `service`) over the bundle's alert id, the item's
//! section and its canonical JSON.
//!
//! What `verify` proves, and on whose word (README, "Audit"):
//! - incidents: the member state's signature under the key valid at its signing time;
//! - the incident set of each message: its digest and count, its sampled ids and evidence;
//! - the alert ids: derived from rule, key and window (ALERT) or the episode (UPDATE, CANCEL);
//! - the score: the reasons add up to it;
//! - clearance: each receipt's form (full or redacted, its TLP) is what the fan-out's own
//!   policy decides for the subscription version in force, at the episode's marking.
//!
//! Receipts, acknowledgements, alert messages and subscriptions are not signed by the
//! service that wrote them today: for those the bundle proves only that the assembling
//! service vouched for them, and that no byte changed since.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ewn_fanout::index::Marking;
use ewn_fanout::policy::{self, Decision, Form};
use ewn_kafka::{AssignedReader, KafkaSettings, StartAt, Topics};
use ewn_model::validate::printable;
use ewn_model::{
    Ack, Alert, AvroRecord, CaseRequest, CaseResponse, DeliveryReceipt, Incident, MsgType,
    SignedIncident, Subscription,
};
use ewn_processor::alert::{alert_id, cancel_id, evicted_id, incident_digest, update_id};
use ewn_trust::audit::{AuditSignature, AuditSigner, verify_audit_signature};
use ewn_trust::{TrustStore, Verifier, VerifyPolicy};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::cli::Global;
use crate::cmd::now_ms;
use crate::view::rfc3339;

/// The format a bundle names; any other is refused.
pub const FORMAT: &str = "ewn-audit-bundle/1";

/// The service name under which bundles are assembled (the assembling key's `service`).
pub const SERVICE: &str = "audit";

#[derive(clap::Args, Debug)]
#[command(after_help = "\
Examples:
  ewn audit alert 3f9c0d... --out bundle.json --signing-key audit.pem --key-id audit-2027-01
  ewn audit verify bundle.json --trust-store trust.toml
  ewn audit verify bundle.json --trust-store trust.toml --json | jq '.checks[] | select(.ok|not)'

Exit codes: 0 assembled / every check passed, 1 a check failed (verify) or the alert was not \
found (alert), 2 it could not run.")]
pub struct Args {
    #[command(subcommand)]
    pub command: Sub,
}

#[derive(clap::Subcommand, Debug)]
pub enum Sub {
    /// Assemble the evidence of one alert from the topics into a bundle, signed by this
    /// service's key (role `service`, service `audit` in the trust store).
    Alert {
        /// Any message id of the episode (ALERT, UPDATE or CANCEL).
        alert_id: String,
        /// Where to write the bundle (JSON).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// The assembling service's Ed25519 key (PKCS#8 PEM, mode 0600).
        #[arg(long, value_name = "FILE")]
        signing_key: PathBuf,
        /// Its id in the trust store.
        #[arg(long)]
        key_id: String,
        /// How long to read the topics before giving up.
        #[arg(long, value_name = "SECS", default_value_t = 60)]
        timeout_secs: u64,
    },
    /// Read the audit log (`<prefix>audit`): one line per administrative act; --verify checks
    /// each record's signature by its service's key (role `service`) in the trust store.
    #[command(after_help = "\
Examples:
  ewn audit log --since 24h
  ewn audit log --actor ops-admin --verify --trust-store trust.toml
  ewn audit log --verify --trust-store trust.toml --json | jq 'select(.verified|not)'

Exit codes: 0 read (and, with --verify, every record verified), 1 a record did not verify, \
2 it could not run.")]
    Log {
        /// Only records at or after this time: RFC 3339, or a duration back from now (90s,
        /// 30m, 6h, 2d).
        #[arg(long, value_name = "TIME", value_parser = crate::cmd::parse_since)]
        since: Option<i64>,
        /// Only records of this actor.
        #[arg(long)]
        actor: Option<String>,
        /// Check each record's signature against --trust-store.
        #[arg(long, requires = "trust_store")]
        verify: bool,
        #[arg(long, value_name = "FILE")]
        trust_store: Option<PathBuf>,
        /// One JSON object a line instead of text.
        #[arg(long)]
        json: bool,
        /// How long to read the topic before giving up.
        #[arg(long, value_name = "SECS", default_value_t = 60)]
        timeout_secs: u64,
    },
    /// Check a bundle offline against a trust store: a verdict per check.
    Verify {
        bundle: PathBuf,
        #[arg(long, value_name = "FILE")]
        trust_store: PathBuf,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(global: &Global, args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Sub::Alert {
            alert_id,
            out,
            signing_key,
            key_id,
            timeout_secs,
        } => {
            let settings = global.settings(Vec::new())?;
            let key = ewn_trust::keys::load_signing_key(&signing_key)?;
            let signer = AuditSigner::new(key_id, SERVICE, key);
            let bundle = assemble(
                &settings.kafka,
                &alert_id,
                &signer,
                now_ms(),
                Duration::from_secs(timeout_secs),
            )?;
            let text = serde_json::to_string_pretty(&bundle)?;
            std::fs::write(&out, text + "\n").with_context(|| format!("{}", out.display()))?;
            println!(
                "bundle of alert {} written to {}: {} messages, {} incidents, {} receipts, {} acks, {} subscription versions, {} case requests",
                printable(&alert_id),
                out.display(),
                bundle.messages.len(),
                bundle.incidents.len(),
                bundle.receipts.len(),
                bundle.acks.len(),
                bundle.subscriptions.len(),
                bundle.cases.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Sub::Log {
            since,
            actor,
            verify,
            trust_store,
            json,
            timeout_secs,
        } => {
            let settings = global.settings(Vec::new())?;
            let store = match (verify, trust_store) {
                (true, Some(p)) => Some(TrustStore::load(&p)?),
                _ => None,
            };
            let now = now_ms();
            let lines = log(
                &settings.kafka,
                since,
                actor.as_deref(),
                store.as_ref(),
                now,
                Duration::from_secs(timeout_secs),
            )?;
            let mut failed = 0;
            for line in &lines {
                if line["verified"] == false {
                    failed += 1;
                }
                if json {
                    println!("{line}");
                } else {
                    println!("{}", log_text(line));
                }
            }
            if !json {
                println!(
                    "{} records{}",
                    lines.len(),
                    if store.is_some() {
                        format!(", {failed} not verified")
                    } else {
                        String::new()
                    }
                );
            }
            Ok(ExitCode::from(u8::from(failed > 0)))
        }
        Sub::Verify {
            bundle,
            trust_store,
            json,
        } => {
            let store = TrustStore::load(&trust_store)?;
            let text = std::fs::read_to_string(&bundle)
                .with_context(|| format!("{}", bundle.display()))?;
            let report = verify(&text, &store, now_ms());
            if json {
                println!("{}", report.to_json());
            } else {
                print!("{}", report.to_text(&bundle));
            }
            Ok(ExitCode::from(u8::from(!report.ok())))
        }
    }
}

/// The records of `<prefix>audit`, filtered, one JSON object each, in the order of their
/// `at` (records are keyed by object, so partitions interleave); with a store, each carries
/// `verified` and, when false, `why`.
pub fn log(
    settings: &KafkaSettings,
    since: Option<i64>,
    actor: Option<&str>,
    store: Option<&TrustStore>,
    now: i64,
    timeout: Duration,
) -> anyhow::Result<Vec<Value>> {
    let topic = Topics::new(&settings.topic_prefix).audit();
    let mut out: Vec<(i64, Value)> = Vec::new();
    for raw in read_all(settings, "the audit topic", |t| t == topic, timeout)? {
        let r = match ewn_model::AuditRecord::from_avro(&raw.value) {
            Ok(r) => r,
            Err(e) => {
                out.push((
                    raw.timestamp,
                    json!({"partition": raw.partition, "offset": raw.offset,
                           "verified": false, "why": format!("undecodable: {e}")}),
                ));
                continue;
            }
        };
        if since.is_some_and(|t| r.at < t) || actor.is_some_and(|a| r.actor != a) {
            continue;
        }
        let mut line = json!({
            "partition": raw.partition,
            "offset": raw.offset,
            "at": rfc3339(r.at),
            "service": printable(&r.service),
            "instance_id": printable(&r.instance_id),
            "actor": printable(&r.actor),
            "action": printable(&r.action),
            "object": printable(&r.object),
            "before_sha256": r.before_sha256.as_deref().map(printable),
            "after_sha256": r.after_sha256.as_deref().map(printable),
            "detail": r.detail.as_deref().map(printable),
            "key_id": printable(&r.key_id),
        });
        if let Some(store) = store {
            let known = ewn_model::AuditRecord::ACTIONS.contains(&r.action.as_str());
            match ewn_trust::audit::verify_record(store, &r, now, 0) {
                Ok(_) if known => line["verified"] = json!(true),
                Ok(_) => {
                    line["verified"] = json!(false);
                    line["why"] = json!("action is not one of the audit actions");
                }
                Err(e) => {
                    line["verified"] = json!(false);
                    line["why"] = json!(e.to_string());
                }
            }
        }
        out.push((r.at, line));
    }
    out.sort_by_key(|(at, _)| *at);
    Ok(out.into_iter().map(|(_, l)| l).collect())
}

fn log_text(line: &Value) -> String {
    let s = |k: &str| line[k].as_str().unwrap_or("-").to_string();
    let verdict = match &line["verified"] {
        Value::Bool(true) => "verified".to_string(),
        Value::Bool(false) => format!("NOT VERIFIED: {}", s("why")),
        _ => String::new(),
    };
    format!(
        "{}  {}/{}  {}  {}  {}  before={} after={}  {verdict}",
        s("at"),
        s("service"),
        s("instance_id"),
        s("actor"),
        s("action"),
        s("object"),
        s("before_sha256"),
        s("after_sha256"),
    )
}

/// A record as a topic holds it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TopicRecord {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// base64 of the record value (for a subscription: its Avro body, secret removed).
    pub value: String,
}

/// One message of the episode and the incidents it rests on.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MessageRecord {
    pub record: TopicRecord,
    /// The incident ids whose digest the message carries (empty when assembly could not
    /// find them: verify then fails that message).
    pub members: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Header {
    pub alert_id: String,
    pub episode: String,
    pub assembled_at: i64,
    pub topic_prefix: String,
    /// What the bundle cannot prove, in words.
    pub limits: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Attestation {
    pub key_id: String,
    pub service: String,
    pub signed_at: i64,
    /// base64 of the 64-byte Ed25519 signature.
    pub signature: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Item<T> {
    pub record: T,
    pub attestation: Attestation,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    pub format: String,
    pub header: Item<Header>,
    pub messages: Vec<Item<MessageRecord>>,
    pub incidents: Vec<Item<TopicRecord>>,
    pub receipts: Vec<Item<TopicRecord>>,
    pub acks: Vec<Item<TopicRecord>>,
    pub subscriptions: Vec<Item<TopicRecord>>,
    /// The case requests made about the episode's messages and their outcome, never their
    /// content (absent from bundles written before case requests).
    #[serde(default)]
    pub cases: Vec<Item<CaseOutcome>>,
}

/// A case request about the alert and what became of it: who asked, on what basis, who
/// answered and how; never the details, nor a decline's reason.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CaseOutcome {
    pub request_id: String,
    pub alert_id: String,
    pub incident_id: String,
    pub state: String,
    pub agency: String,
    pub subscription_id: String,
    pub requested_at: i64,
    /// The request as `<prefix>requests.<cc>` holds it (signed by the fan-out).
    pub request: TopicRecord,
    /// `APPROVE`, `DECLINE`, or `PENDING` while no answer is on `<prefix>responses`.
    pub decision: String,
    pub decided_by: Option<String>,
    pub decided_at: Option<i64>,
    /// The state key that signed the answer.
    pub answer_key_id: Option<String>,
}

/// The bytes an attestation signs: the alert id, the section, the record's canonical JSON.
fn attested_body(alert_id: &str, section: &str, record: &Value) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(alert_id.as_bytes());
    body.push(0);
    body.extend_from_slice(section.as_bytes());
    body.push(0);
    body.extend_from_slice(record.to_string().as_bytes());
    body
}

fn attest<T: Serialize>(
    signer: &AuditSigner,
    alert_id: &str,
    section: &str,
    record: T,
    at: i64,
) -> anyhow::Result<Item<T>> {
    let value = serde_json::to_value(&record)?;
    let signature = signer.sign(&attested_body(alert_id, section, &value), at);
    Ok(Item {
        record,
        attestation: Attestation {
            key_id: signer.key_id().to_string(),
            service: signer.service().to_string(),
            signed_at: at,
            signature: B64.encode(signature),
        },
    })
}

pub(crate) struct Raw {
    pub(crate) topic: String,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) timestamp: i64,
    pub(crate) value: Vec<u8>,
}

impl Raw {
    fn record(&self) -> TopicRecord {
        TopicRecord {
            topic: self.topic.clone(),
            partition: self.partition,
            offset: self.offset,
            value: B64.encode(&self.value),
        }
    }
}

/// Every record of the topics `select` keeps, from the beginning to the end as it was
/// when opened.
pub(crate) fn read_all(
    settings: &KafkaSettings,
    what: &str,
    select: impl Fn(&str) -> bool,
    timeout: Duration,
) -> anyhow::Result<Vec<Raw>> {
    let reader = match AssignedReader::new(settings, "audit", what, select, StartAt::Beginning) {
        Ok(r) => r,
        Err(ewn_kafka::Error::NoTopic(_)) => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("opening {what}")),
    };
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while !reader.caught_up()? {
        if Instant::now() >= deadline {
            bail!(
                "reading {what}: not at its end after {} s",
                timeout.as_secs()
            );
        }
        if let Some(Some(raw)) = reader.poll(Duration::from_millis(200), |r| {
            r.value.map(|v| Raw {
                topic: r.topic.to_string(),
                partition: r.partition,
                offset: r.offset,
                timestamp: r.timestamp_ms.unwrap_or(0),
                value: v.to_vec(),
            })
        })? {
            out.push(raw);
        }
    }
    Ok(out)
}

/// Assembles the bundle of the episode of `id` from the topics.
pub fn assemble(
    settings: &KafkaSettings,
    id: &str,
    signer: &AuditSigner,
    now: i64,
    timeout: Duration,
) -> anyhow::Result<Bundle> {
    let topics = Topics::new(&settings.topic_prefix);
    let alerts_topic = topics.alerts();
    let mut messages: Vec<(Raw, Alert)> =
        read_all(settings, "the alerts topic", |t| t == alerts_topic, timeout)?
            .into_iter()
            .filter_map(|r| Alert::from_avro(&r.value).ok().map(|a| (r, a)))
            .collect();
    let Some(found) = messages.iter().find(|(_, a)| a.alert_id == id) else {
        bail!("no alert `{}` on {alerts_topic}", printable(id));
    };
    let episode = ewn_fanout::index::episode_id(&found.1).to_string();
    let found_key = found.1.key.clone();
    messages.retain(|(_, a)| ewn_fanout::index::episode_id(a) == episode);
    // A reprocessed window repeats messages with the same id: keep the first of each.
    let mut seen = BTreeSet::new();
    messages.retain(|(_, a)| seen.insert(a.alert_id.clone()));
    let ids: BTreeSet<String> = messages.iter().map(|(_, a)| a.alert_id.clone()).collect();

    // Candidate incidents: in the window, of the episode's states and categories.
    let (lo, hi) = messages
        .iter()
        .fold((i64::MAX, i64::MIN), |(lo, hi), (_, a)| {
            (lo.min(a.window_start), hi.max(a.window_end))
        });
    let states: BTreeSet<&str> = messages
        .iter()
        .flat_map(|(_, a)| a.states.iter().map(String::as_str))
        .collect();
    let categories: BTreeSet<_> = messages
        .iter()
        .flat_map(|(_, a)| a.categories.iter().copied())
        .collect();
    let group_value = found_key
        .split_once(':')
        .map(|(g, v)| (g.to_string(), v.to_string()));
    let mut candidates: Vec<(Raw, Incident)> = read_all(
        settings,
        "the incident topics",
        |t| topics.is_incidents(t),
        timeout,
    )?
    .into_iter()
    .filter_map(|r| {
        let env = SignedIncident::from_avro(&r.value).ok()?;
        let i = Incident::from_avro(&env.payload).ok()?;
        (i.occurred_at >= lo
            && i.occurred_at <= hi
            && states.contains(i.reporter.state.as_str())
            && categories.contains(&i.category)
            && group_value.as_ref().is_none_or(|(g, v)| in_group(&i, g, v)))
        .then_some((r, i))
    })
    .collect();
    let mut seen = BTreeSet::new();
    candidates.retain(|(_, i)| seen.insert(i.incident_id.clone()));

    let mut used: BTreeSet<String> = BTreeSet::new();
    let mut message_items = Vec::new();
    for (raw, alert) in &messages {
        let members = find_members(alert, &candidates);
        used.extend(members.iter().cloned());
        let record = MessageRecord {
            record: raw.record(),
            members,
        };
        message_items.push(attest(signer, &episode, "messages", record, now)?);
    }
    let incident_items = candidates
        .iter()
        .filter(|(_, i)| used.contains(&i.incident_id))
        .map(|(r, _)| attest(signer, &episode, "incidents", r.record(), now))
        .collect::<anyhow::Result<Vec<_>>>()?;

    let deliveries = topics.deliveries();
    let receipts: Vec<(Raw, DeliveryReceipt)> = read_all(
        settings,
        "the deliveries topic",
        |t| t == deliveries,
        timeout,
    )?
    .into_iter()
    .filter_map(|r| DeliveryReceipt::from_avro(&r.value).ok().map(|d| (r, d)))
    .filter(|(_, d)| ids.contains(&d.alert_id))
    .collect();
    let acks_topic = topics.acks();
    let acks: Vec<Raw> = read_all(settings, "the acks topic", |t| t == acks_topic, timeout)?
        .into_iter()
        .filter(|r| Ack::from_avro(&r.value).is_ok_and(|a| ids.contains(&a.alert_id)))
        .collect();
    let subs_topic = topics.subscriptions();
    let versions: Vec<(Raw, Subscription)> = read_all(
        settings,
        "the subscriptions topic",
        |t| t == subs_topic,
        timeout,
    )?
    .into_iter()
    .filter_map(|r| {
        let body = ewn_fanout::sealed::body(&r.value)?;
        let mut sub = Subscription::from_avro(body).ok()?;
        sub.webhook_secret = None;
        Some((r, sub))
    })
    .collect();
    let mut in_force: BTreeMap<(String, i64), usize> = BTreeMap::new();
    for (_, d) in &receipts {
        if let Some(i) = version_in_force(&versions, &d.subscription_id, d.first_attempt_at) {
            in_force.insert((versions[i].1.id.clone(), versions[i].1.updated_at), i);
        }
    }
    let mut subscription_items = Vec::new();
    for i in in_force.values() {
        let (raw, sub) = &versions[*i];
        let record = TopicRecord {
            value: B64.encode(sub.to_avro()?),
            ..raw.record()
        };
        subscription_items.push(attest(signer, &episode, "subscriptions", record, now)?);
    }
    let header = Header {
        alert_id: id.to_string(),
        episode: episode.clone(),
        assembled_at: now,
        topic_prefix: settings.topic_prefix.clone(),
        limits: vec![
            "delivery receipts, acknowledgements, alert messages and subscription versions are \
             not signed by the service that wrote them: the bundle proves that the assembling \
             service read them so, not that the fan-out or processor wrote them so"
                .into(),
            "subscription versions are read from a compacted topic: a version compaction \
             removed cannot be shown"
                .into(),
        ],
    };
    // Case requests about the episode's messages, and the state's answers (outcome only).
    let requests_prefix = format!("{}requests.", settings.topic_prefix);
    let answers_topic = topics.responses();
    let requests: Vec<(Raw, CaseRequest)> = read_all(
        settings,
        "the requests topics",
        |t| t.starts_with(&requests_prefix),
        timeout,
    )?
    .into_iter()
    .filter_map(|r| CaseRequest::from_avro(&r.value).ok().map(|q| (r, q)))
    .filter(|(_, q)| ids.contains(&q.alert_id))
    .collect();
    let answers: Vec<CaseResponse> = if requests.is_empty() {
        Vec::new()
    } else {
        read_all(
            settings,
            "the responses topic",
            |t| t == answers_topic,
            timeout,
        )?
        .into_iter()
        .filter_map(|r| CaseResponse::from_avro(&r.value).ok())
        .collect()
    };
    let mut case_items = Vec::new();
    for (raw, q) in &requests {
        let answer = answers.iter().rev().find(|a| a.request_id == q.request_id);
        let outcome = CaseOutcome {
            request_id: q.request_id.clone(),
            alert_id: q.alert_id.clone(),
            incident_id: q.incident_id.clone(),
            state: q.state.clone(),
            agency: q.agency.clone(),
            subscription_id: q.subscription_id.clone(),
            requested_at: q.requested_at,
            request: raw.record(),
            decision: answer
                .map_or("PENDING", |a| a.decision.as_str())
                .to_string(),
            decided_by: answer.map(|a| a.decided_by.clone()),
            decided_at: answer.map(|a| a.decided_at),
            answer_key_id: answer.map(|a| a.key_id.clone()),
        };
        case_items.push(attest(signer, &episode, "cases", outcome, now)?);
    }
    Ok(Bundle {
        cases: case_items,
        format: FORMAT.into(),
        header: attest(signer, &episode, "header", header, now)?,
        messages: message_items,
        incidents: incident_items,
        receipts: receipts
            .iter()
            .map(|(r, _)| attest(signer, &episode, "receipts", r.record(), now))
            .collect::<anyhow::Result<_>>()?,
        acks: acks
            .iter()
            .map(|r| attest(signer, &episode, "acks", r.record(), now))
            .collect::<anyhow::Result<_>>()?,
        subscriptions: subscription_items,
    })
}

fn in_group(i: &Incident, group: &str, value: &str) -> bool {
    match group {
        "subject" => i.subjects.iter().any(|s| s.subject_ref == value),
        "area" => i.location.area == value,
        "crossing" => i.location.crossing.as_deref() == Some(value),
        "state" => i.reporter.state == value,
        "incident" => i.incident_id == value,
        _ => true,
    }
}

/// The members of `alert` among `candidates`: its sampled ids (members by construction),
/// completed by the first others in arrival order or in event-time order, whichever
/// reproduces the digest; none when neither does.
fn find_members(alert: &Alert, candidates: &[(Raw, Incident)]) -> Vec<String> {
    let n = usize::try_from(alert.incident_count).unwrap_or(0);
    let sampled: BTreeSet<&str> = alert.incident_ids.iter().map(String::as_str).collect();
    let mut by_arrival: Vec<&(Raw, Incident)> = candidates
        .iter()
        .filter(|(_, i)| !sampled.contains(i.incident_id.as_str()))
        .collect();
    by_arrival.sort_by_key(|(r, _)| (r.timestamp, r.offset));
    let mut by_event = by_arrival.clone();
    by_event.sort_by_key(|(_, i)| i.occurred_at);
    for order in [by_arrival, by_event] {
        let ids: Vec<String> = alert
            .incident_ids
            .iter()
            .cloned()
            .chain(order.iter().map(|(_, i)| i.incident_id.clone()))
            .take(n)
            .collect();
        if ids.len() == n
            && incident_digest(ids.iter().map(String::as_str)) == alert.incident_digest[..]
        {
            return ids;
        }
    }
    Vec::new()
}

/// The version of subscription `id` in force at `at`: the latest updated at or before it.
fn version_in_force(versions: &[(Raw, Subscription)], id: &str, at: i64) -> Option<usize> {
    versions
        .iter()
        .enumerate()
        .filter(|(_, (_, s))| s.id == id && s.updated_at <= at)
        .max_by_key(|(_, (_, s))| s.updated_at)
        .map(|(i, _)| i)
}

/// One check's verdict: `what` names the bundle path it concerns.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub check: &'static str,
    pub what: String,
    pub ok: bool,
    pub detail: String,
}

#[derive(Debug, Default)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    fn pass(&mut self, check: &'static str, what: impl Into<String>, detail: impl Into<String>) {
        self.checks.push(Check {
            check,
            what: what.into(),
            ok: true,
            detail: detail.into(),
        });
    }

    fn fail(&mut self, check: &'static str, what: impl Into<String>, detail: impl Into<String>) {
        self.checks.push(Check {
            check,
            what: what.into(),
            ok: false,
            detail: detail.into(),
        });
    }

    fn verdict(
        &mut self,
        check: &'static str,
        what: impl Into<String>,
        result: Result<String, String>,
    ) {
        match result {
            Ok(d) => self.pass(check, what, d),
            Err(d) => self.fail(check, what, d),
        }
    }

    pub fn ok(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.ok)
    }

    /// The failed checks.
    pub fn failures(&self) -> Vec<&Check> {
        self.checks.iter().filter(|c| !c.ok).collect()
    }

    pub fn to_json(&self) -> Value {
        json!({"ok": self.ok(), "checks": self.checks})
    }

    pub fn to_text(&self, path: &Path) -> String {
        let mut by_check: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
        let mut out = String::new();
        for c in &self.checks {
            let e = by_check.entry(c.check).or_default();
            if c.ok {
                e.0 += 1;
            } else {
                e.1 += 1;
                out.push_str(&format!("FAIL  {:<14} {}: {}\n", c.check, c.what, c.detail));
            }
        }
        for (check, (ok, failed)) in &by_check {
            let verdict = if *failed == 0 { "ok  " } else { "FAIL" };
            out.push_str(&format!(
                "{verdict}  {check:<14} {ok} passed, {failed} failed\n"
            ));
        }
        out.push_str(&format!(
            "{}: {}\n",
            path.display(),
            if self.ok() {
                "VERIFIED"
            } else {
                "NOT VERIFIED"
            }
        ));
        out
    }
}

/// Checks a bundle's text against a trust store, judging key validity at each signing time
/// with the clock `now` (a revoked key is refused whatever its signing time).
pub fn verify(text: &str, store: &TrustStore, now: i64) -> Report {
    let mut report = Report::default();
    let bundle: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            report.fail("format", "bundle", format!("not JSON: {e}"));
            return report;
        }
    };
    if bundle["format"] != FORMAT {
        report.fail("format", "format", format!("not `{FORMAT}`"));
        return report;
    }
    let parsed: Bundle = match serde_json::from_value(bundle.clone()) {
        Ok(b) => b,
        Err(e) => {
            report.fail("format", "bundle", format!("not a bundle: {e}"));
            return report;
        }
    };
    report.pass("format", "format", FORMAT);
    let episode = parsed.header.record.episode.clone();

    // Attestations: every item, under a service key valid at its signing time.
    for section in [
        "header",
        "messages",
        "incidents",
        "receipts",
        "acks",
        "subscriptions",
        "cases",
    ] {
        let items: Vec<(String, &Value)> = match &bundle[section] {
            // A bundle written before case requests has no `cases`.
            Value::Null if section == "cases" => Vec::new(),
            Value::Array(a) => a
                .iter()
                .enumerate()
                .map(|(i, v)| (format!("{section}[{i}]"), v))
                .collect(),
            v => vec![(section.to_string(), v)],
        };
        for (path, item) in items {
            report.verdict(
                "attestation",
                path,
                attestation(store, &episode, section, item, now),
            );
        }
    }
    let header = &parsed.header.record;
    if header.alert_id.is_empty() {
        report.fail("episode", "header.alert_id", "empty");
    }

    // Messages.
    let mut alerts: Vec<(String, Alert, &MessageRecord)> = Vec::new();
    for (i, item) in parsed.messages.iter().enumerate() {
        let path = format!("messages[{i}]");
        match decode::<Alert>(&item.record.record) {
            Ok(a) => alerts.push((path, a, &item.record)),
            Err(e) => report.fail("decode", path, e),
        }
    }
    let wanted_found = alerts.iter().any(|(_, a, _)| a.alert_id == header.alert_id);
    let first = alerts
        .iter()
        .find(|(_, a, _)| a.msg_type == MsgType::Alert && a.alert_id == episode);
    report.verdict(
        "episode",
        "header",
        match (first, wanted_found) {
            (Some(_), true) => Ok(format!("episode {episode} holds alert {}", header.alert_id)),
            (None, _) => Err(format!("no ALERT message with the episode id {episode}")),
            (_, false) => Err(format!("no message {}", printable(&header.alert_id))),
        },
    );
    for (path, a, _) in &alerts {
        report.verdict("derivation", path.clone(), derivation(a, &episode));
        let sum: i32 = a.reasons.iter().map(|r| r.contribution).sum();
        report.verdict(
            "score",
            path.clone(),
            if sum == a.score && (0..=100).contains(&a.score) {
                Ok(format!("{} reasons add up to {}", a.reasons.len(), a.score))
            } else {
                Err(format!("reasons add up to {sum}, the score is {}", a.score))
            },
        );
    }

    // Incidents: each signed by its state's key, valid at its signing time.
    let verifier = Verifier::new(
        std::sync::Arc::new(store_clone(store)),
        VerifyPolicy {
            max_record_bytes: usize::MAX,
            ..VerifyPolicy::default()
        },
    );
    let mut incidents: BTreeMap<String, (String, SignedIncident)> = BTreeMap::new();
    for (i, item) in parsed.incidents.iter().enumerate() {
        let path = format!("incidents[{i}]");
        let r = &item.record;
        let bytes = match B64.decode(&r.value) {
            Ok(b) => b,
            Err(e) => {
                report.fail("signature", path, format!("value: not base64: {e}"));
                continue;
            }
        };
        let topics = Topics::new(&header.topic_prefix);
        match verifier.verify(&bytes, topics.state_of(&r.topic), now) {
            Ok(v) => {
                report.pass(
                    "signature",
                    path.clone(),
                    format!(
                        "incident {} signed by {} for {}",
                        v.incident.incident_id, v.envelope.key_id, v.incident.reporter.state
                    ),
                );
                if incidents
                    .insert(v.incident.incident_id.clone(), (path.clone(), v.envelope))
                    .is_some()
                {
                    report.fail("incidents", path, "the same incident twice");
                }
            }
            Err(rej) => report.fail(
                "signature",
                path,
                format!("{}: {}", rej.reason.code(), rej.detail),
            ),
        }
    }

    // Each message's incident set against its digest and its evidence.
    for (path, a, m) in &alerts {
        report.verdict("digest", path.clone(), members(a, &m.members, &incidents));
    }

    // Clearance: each receipt's form is what the fan-out's policy decides.
    let mut ordered: Vec<&(String, Alert, &MessageRecord)> = alerts.iter().collect();
    ordered.sort_by_key(|(_, a, m)| (a.msg_type != MsgType::Alert, a.created_at, m.record.offset));
    let mut marking: Option<Marking> = None;
    let mut decided_on: BTreeMap<&str, Alert> = BTreeMap::new();
    for (_, a, _) in &ordered {
        let m = Marking::of(a);
        let union = match marking.take() {
            Some(mut u) => {
                u.absorb(&m);
                u
            }
            None => m,
        };
        decided_on.insert(&a.alert_id, union.apply(a));
        marking = Some(union);
    }
    let mut subs: Vec<Subscription> = Vec::new();
    for (i, item) in parsed.subscriptions.iter().enumerate() {
        match decode::<Subscription>(&item.record) {
            Ok(s) if s.webhook_secret.is_some() => report.fail(
                "subscriptions",
                format!("subscriptions[{i}]"),
                "carries a webhook secret",
            ),
            Ok(s) => subs.push(s),
            Err(e) => report.fail("decode", format!("subscriptions[{i}]"), e),
        }
    }
    for (i, item) in parsed.receipts.iter().enumerate() {
        let path = format!("receipts[{i}]");
        let d = match decode::<DeliveryReceipt>(&item.record) {
            Ok(d) => d,
            Err(e) => {
                report.fail("decode", path, e);
                continue;
            }
        };
        report.verdict("clearance", path, clearance(&d, &decided_on, &subs));
    }
    for (i, item) in parsed.cases.iter().enumerate() {
        let path = format!("cases[{i}]");
        let c = &item.record;
        let request = decode::<CaseRequest>(&c.request);
        match request {
            Ok(q) if decided_on.contains_key(q.alert_id.as_str())
                && q.request_id == c.request_id
                && q.alert_id == c.alert_id
                && q.incident_id == c.incident_id =>
            {
                let signed = ewn_trust::case::verify_request(store, &q, now, 0)
                    .map(|k| format!("signed by {} ({})", k.key_id, k.service))
                    .map_err(|e| e.to_string());
                match signed {
                    Ok(by) => report.pass(
                        "cases",
                        path,
                        format!(
                            "{} asked {} for incident {}, {by}: {}",
                            q.agency, q.state, q.incident_id, c.decision
                        ),
                    ),
                    Err(why) => report.fail("cases", path, format!("request: {why}")),
                }
            }
            Ok(_) => report.fail(
                "cases",
                path,
                "the request record does not match its outcome, or names an alert outside the episode",
            ),
            Err(e) => report.fail("decode", path, e),
        }
    }
    for (i, item) in parsed.acks.iter().enumerate() {
        let path = format!("acks[{i}]");
        match decode::<Ack>(&item.record) {
            Ok(a) if decided_on.contains_key(a.alert_id.as_str()) => report.pass(
                "acks",
                path,
                format!("{} acknowledged {}", a.agency, a.alert_id),
            ),
            Ok(a) => report.fail(
                "acks",
                path,
                format!("alert {} is not in the episode", printable(&a.alert_id)),
            ),
            Err(e) => report.fail("decode", path, e),
        }
    }
    report
}

fn store_clone(store: &TrustStore) -> TrustStore {
    let mut s = TrustStore::default();
    for k in store.entries() {
        s.insert(k.clone());
    }
    for k in store.service_keys() {
        s.insert_service(k.clone());
    }
    s
}

fn decode<T: AvroRecord>(r: &TopicRecord) -> Result<T, String> {
    let bytes = B64
        .decode(&r.value)
        .map_err(|e| format!("value: not base64: {e}"))?;
    T::from_avro(&bytes).map_err(|e| format!("value: {e}"))
}

fn attestation(
    store: &TrustStore,
    episode: &str,
    section: &str,
    item: &Value,
    now: i64,
) -> Result<String, String> {
    let a: Attestation = serde_json::from_value(item["attestation"].clone())
        .map_err(|e| format!("attestation: {e}"))?;
    let signature: [u8; 64] = B64
        .decode(&a.signature)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or("attestation.signature: not base64 of 64 bytes")?;
    let body = attested_body(episode, section, &item["record"]);
    let sig = AuditSignature {
        key_id: &a.key_id,
        signed_at: a.signed_at,
        signature: &signature,
    };
    verify_audit_signature(store, &sig, Some(&a.service), &body, now, 0)
        .map(|k| {
            format!(
                "signed by {} (service {}) at {}",
                k.key_id,
                k.service,
                rfc3339(a.signed_at)
            )
        })
        .map_err(|e| e.to_string())
}

fn derivation(a: &Alert, episode: &str) -> Result<String, String> {
    let expected: Vec<String> = match a.msg_type {
        MsgType::Alert => vec![alert_id(&a.rule, &a.key, a.window_start)],
        MsgType::Update => vec![
            update_id(
                episode,
                u64::try_from(a.incident_count).unwrap_or(0),
                u64::try_from(a.refused_count).unwrap_or(0),
            ),
            evicted_id(episode),
        ],
        MsgType::Cancel => vec![cancel_id(episode)],
    };
    if a.msg_type != MsgType::Alert && a.references.first().map(String::as_str) != Some(episode) {
        return Err(format!(
            "{} does not reference the episode {episode}",
            a.msg_type.as_str()
        ));
    }
    if expected.contains(&a.alert_id) {
        Ok(format!(
            "{} {} derives from its rule, key and window",
            a.msg_type.as_str(),
            a.alert_id
        ))
    } else {
        Err(format!(
            "{} id {} is not derived from rule `{}`, key and window (expected {})",
            a.msg_type.as_str(),
            printable(&a.alert_id),
            printable(&a.rule),
            expected.join(" or ")
        ))
    }
}

fn members(
    a: &Alert,
    ids: &[String],
    incidents: &BTreeMap<String, (String, SignedIncident)>,
) -> Result<String, String> {
    if usize::try_from(a.incident_count).ok() != Some(ids.len()) {
        return Err(format!(
            "{} members listed, the alert counts {}",
            ids.len(),
            a.incident_count
        ));
    }
    if incident_digest(ids.iter().map(String::as_str)) != a.incident_digest[..] {
        return Err("the members' digest is not the alert's incident_digest".into());
    }
    if let Some(missing) = ids.iter().find(|id| !incidents.contains_key(*id)) {
        return Err(format!(
            "member {} has no verified signed incident",
            printable(missing)
        ));
    }
    for (i, e) in a.evidence.iter().enumerate() {
        let Some((_, env)) = incidents.get(&e.incident_id) else {
            return Err(format!(
                "evidence[{i}]: incident {} not among the members",
                printable(&e.incident_id)
            ));
        };
        let sha: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(&env.payload).into();
        if env.key_id != e.key_id || env.signature != e.signature || sha != e.payload_sha256 {
            return Err(format!(
                "evidence[{i}]: not the signed incident {}",
                printable(&e.incident_id)
            ));
        }
    }
    if let Some(extra) = a.incident_ids.iter().find(|id| !ids.contains(id)) {
        return Err(format!(
            "incident_ids: {} is not a member",
            printable(extra)
        ));
    }
    Ok(format!("{} signed incidents match the digest", ids.len()))
}

fn clearance(
    d: &DeliveryReceipt,
    decided_on: &BTreeMap<&str, Alert>,
    subs: &[Subscription],
) -> Result<String, String> {
    let alert = decided_on
        .get(d.alert_id.as_str())
        .ok_or_else(|| format!("alert {} is not in the episode", printable(&d.alert_id)))?;
    let sub = subs
        .iter()
        .filter(|s| s.id == d.subscription_id && s.updated_at <= d.first_attempt_at)
        .max_by_key(|s| s.updated_at)
        .ok_or_else(|| {
            format!(
                "no version of subscription {} in force at {}",
                printable(&d.subscription_id),
                rfc3339(d.first_attempt_at)
            )
        })?;
    if sub.agency != d.agency {
        return Err(format!(
            "receipt names agency {}, the subscription {}",
            printable(&d.agency),
            printable(&sub.agency)
        ));
    }
    // The subscription as it stood, not as a later 410 disabled it.
    let decision = if d.escalation_step > 0 {
        policy::decide_named(sub, alert)
    } else {
        policy::decide(sub, alert)
    };
    let expected = match decision {
        Decision::Deliver(Form::Full) => (false, alert.tlp),
        Decision::Deliver(Form::Redacted) => (true, policy::redacted_tlp(sub)),
        Decision::Withheld | Decision::NotSubscribed => {
            return Err(format!(
                "{} ({}, clearance {}) was not entitled to alert {} at {}",
                printable(&d.subscription_id),
                printable(&d.agency),
                sub.clearance.as_str(),
                d.alert_id,
                alert.tlp.as_str()
            ));
        }
    };
    if (d.redacted, d.tlp) != expected {
        return Err(format!(
            "{} received {} at {}; its clearance {} allows {} at {}",
            printable(&d.subscription_id),
            if d.redacted {
                "the redacted form"
            } else {
                "the full alert"
            },
            d.tlp.as_str(),
            sub.clearance.as_str(),
            if expected.0 {
                "the redacted form"
            } else {
                "the full alert"
            },
            expected.1.as_str()
        ));
    }
    Ok(format!(
        "{} ({}, clearance {}) received {} at {}",
        d.subscription_id,
        d.agency,
        sub.clearance.as_str(),
        if d.redacted {
            "the redacted form"
        } else {
            "the full alert"
        },
        d.tlp.as_str()
    ))
}
