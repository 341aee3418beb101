//! The demo's member-state gateway: Kazakhstan's `ewn gateway` at two border posts. One
//! post's uplink to the broker drops for 30 s while it keeps reporting (its gateway spools
//! and catches up); the other goes quiet for good, and the network raises `source_silent`.
//! With a case request ([`crate::case`]), the gateway keeps the raw line of each report it
//! signs and serves its operators' API, and the first post reports one watch-list hit,
//! after its uplink is back.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use ewn_gateway::{GatewayConfig, GatewaySettings};
use ewn_kafka::{AssignedReader, KafkaSettings, StartAt, Topics};
use ewn_model::{AvroRecord, Incident, SignedIncident};
use ewn_ops::http::Health;
use ewn_trust::{KeyEntry, TrustStore, keys};
use serde::Serialize;
use tokio::sync::mpsc::UnboundedSender;
use zeroize::Zeroizing;

use crate::case::CaseSite;
use crate::error::{Error, Result};
use crate::relay::LinkRelay;
use crate::{Event, now_ms};

/// The post whose uplink drops for a while.
pub const CUT_POST: &str = "KZ-DOSTYK-03";
/// The post that stops reporting.
pub const QUIET_POST: &str = "KZ-ZHARKENT-02";
/// The gateway's Kafka client id: what the relay cuts.
const GATEWAY_CLIENT: &str = "kz-dostyk-uplink";
/// How long the uplink is down.
pub const OUTAGE: Duration = Duration::from_secs(30);
/// When, after the start, the uplink drops; and when the quiet post stops.
const OUTAGE_AT: Duration = Duration::from_secs(12);
const QUIET_AFTER: Duration = Duration::from_secs(8);
/// When the watch-list hit is reported: once the uplink is back (its gateway reads case
/// requests and sends replies over that uplink too), or early in a run with no outage.
const HIT_AFTER_OUTAGE: Duration = Duration::from_secs(3);
const HIT_WITHOUT_OUTAGE: Duration = Duration::from_secs(2);

pub struct DemoGateway {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<ewn_gateway::Result<()>>,
    tokens: [(String, String); 2],
    /// Whether the cut post reports a watch-list hit (the gateway keeps details).
    case: bool,
    hit: OnceLock<WatchlistHit>,
}

/// The watch-list hit the cut post reported, as it sent it.
#[derive(Clone)]
pub struct WatchlistHit {
    pub incident_id: String,
    /// The report line, with the raw identifier only KZ keeps.
    pub line: Zeroizing<String>,
}

/// What the posts sent and what reached the broker.
#[derive(Serialize, Default, Clone, Debug)]
pub struct GatewayOutcome {
    pub post: String,
    /// Reports its gateway accepted (202), and of those while its uplink was down.
    pub accepted: usize,
    pub accepted_while_down: usize,
    /// Of the accepted, found on the broker at the end.
    pub on_broker: usize,
    pub lost: usize,
    pub outage_secs: u64,
}

fn token() -> String {
    use rand_core::{OsRng, RngCore};
    let mut b = [0u8; 24];
    OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

/// KZ's gateway signing key, made in `work` and entered in `trust_store`; its file.
pub fn enroll(work: &Path, trust_store: &Path) -> Result<PathBuf> {
    let dir = work.join("kz-gateway");
    std::fs::create_dir_all(&dir).map_err(|e| Error::Io("the gateway's directory", e))?;
    let key = keys::generate();
    let path = dir.join("signing.key");
    keys::save_signing_key(&path, &key)?;
    let now = now_ms();
    TrustStore::append_to_file(
        trust_store,
        &KeyEntry {
            key_id: "kz-gateway".into(),
            state: "KZ".into(),
            public_key: ewn_trust::PublicKey::from(&key),
            not_before: now - 3_600_000,
            not_after: now + 30 * 86_400_000,
            revoked_at: None,
        },
    )?;
    Ok(path)
}

/// Starts KZ's gateway for the two posts, signing with the key [`enroll`] made.
pub async fn start(
    work: &Path,
    kafka: &KafkaSettings,
    signing_key: PathBuf,
    blinding: &Path,
    case: Option<&CaseSite>,
    shutdown: Arc<AtomicBool>,
) -> Result<DemoGateway> {
    let dir = work.join("kz-gateway");
    let tokens = [
        (CUT_POST.to_string(), token()),
        (QUIET_POST.to_string(), token()),
    ];
    let mut file = String::new();
    for (post, t) in &tokens {
        let hash = hex::encode(ewn_ops::tokens::token_hash(t));
        file.push_str(&format!(
            "[[tokens]]\nname = \"{post}-terminal\"\npost_id = \"{post}\"\nsha256 = \"{hash}\"\n"
        ));
    }
    ewn_trust::secret::write_secret(&dir.join("tokens.toml"), &file)?;
    let mut g = GatewaySettings {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        state: "KZ".into(),
        key_id: "kz-gateway".into(),
        signing_key_file: Some(signing_key),
        blinding_key_file: Some(blinding.to_path_buf()),
        tokens_file: Some(dir.join("tokens.toml")),
        ..GatewaySettings::default()
    };
    g.spool.path = Some(dir.join("spool.db"));
    g.heartbeat.interval_secs = 2;
    g.forward.max_backoff_ms = 2_000;
    if let Some(site) = case {
        g.details.path = Some(site.details.clone());
        g.requests.enabled = true;
        g.requests.operators_file = Some(site.operators_file.clone());
        g.requests.trust_store = Some(site.trust_store.clone());
        g.requests.audit_signing_key_file = Some(site.gateway_audit_key.clone());
    }
    // A post's gateway on a link that drops: records wait in the client for the link to
    // return rather than time out (2 min; 30 s by default).
    let kafka = KafkaSettings {
        client_id: GATEWAY_CLIENT.into(),
        message_timeout_ms: 120_000,
        ..kafka.clone()
    };
    let registry = ewn_ops::metrics::registry();
    let running = ewn_gateway::start(
        GatewayConfig::new(kafka, Default::default(), g),
        &registry,
        Arc::new(Health::default()),
        shutdown,
    )
    .await?;
    Ok(DemoGateway {
        addr: running.addr,
        task: running.task,
        tokens,
        case: case.is_some(),
        hit: OnceLock::new(),
    })
}

/// A low-grade routine report of `post` (scored LOW: it raises no correlation alert).
fn report(post: &str, n: u64) -> String {
    let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    // A UUID of the post and the report's number (distinct per post and report).
    let post_no = u64::from(post != CUT_POST);
    let id = format!("00000000-0000-4000-8000-{:012x}", (post_no << 40) | n);
    serde_json::json!({
        "incident_id": id,
        "reporter": {"state": "KZ", "agency": "KZ-KNB-BORDER", "post_id": post},
        "source_reliability": "E", "info_credibility": 5, "tlp": "GREEN",
        "location": {"lat": 45.26, "lon": 82.47, "area": "KZ-ABY", "crossing": null},
        "occurred_at": at, "reported_at": at,
        "category": "OTHER", "severity": "LOW",
        "subjects": [], "summary": "Routine patrol report.", "attributes": {}
    })
    .to_string()
}

/// The watch-list hit of the cut post, report `n`: a person on the regional list entering
/// at Dostyk, named as only KZ's post knows them.
fn watchlist_hit(n: u64) -> WatchlistHit {
    let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let incident_id = format!("00000000-0000-4000-8000-{:012x}", (2u64 << 40) | n);
    let line = serde_json::json!({
        "incident_id": incident_id,
        "reporter": {"state": "KZ", "agency": "KZ-KNB-BORDER", "post_id": CUT_POST},
        "source_reliability": "B", "info_credibility": 2, "tlp": "AMBER",
        "location": {"lat": 45.25, "lon": 82.48, "area": "KZ-ABY", "crossing": "KZ-DOSTYK"},
        "direction": "ENTRY",
        "occurred_at": at, "reported_at": at,
        "category": "WATCHLIST_HIT", "severity": "HIGH",
        "subjects": [{"kind": "PERSON", "id": "NURLANOV ASKAR 1988-03-14", "watchlist": "regional"}],
        "summary": "Passenger of the Urumqi train matched the regional watch list at passport control.",
        "attributes": {}
    })
    .to_string();
    WatchlistHit {
        incident_id,
        line: Zeroizing::new(line),
    }
}

impl DemoGateway {
    /// The watch-list hit, once the gateway accepted it.
    pub fn watchlist_hit(&self) -> Option<WatchlistHit> {
        self.hit.get().cloned()
    }

    /// Runs the posts for `duration`, once `ready` resolves: one report a second from the
    /// cut post, whose uplink drops for [`OUTAGE`]; the quiet post reports for a few
    /// seconds, then stops. Returns the incident ids the cut post's gateway accepted, and
    /// how many of them while its uplink was down.
    pub async fn run_posts(
        &self,
        relay: &LinkRelay,
        duration: Duration,
        stop: &AtomicBool,
        ready: impl Future<Output = ()>,
        events: &UnboundedSender<Event>,
    ) -> Result<(Vec<String>, usize)> {
        ready.await;
        let client = reqwest::Client::new();
        let url = format!("http://{}/api/v1/incidents", self.addr);
        let started = Instant::now();
        let mut accepted = Vec::new();
        let mut while_down = 0usize;
        let mut down = false;
        let outage = duration >= OUTAGE_AT + OUTAGE + Duration::from_secs(10);
        let hit_at = if outage {
            OUTAGE_AT + OUTAGE + HIT_AFTER_OUTAGE
        } else {
            HIT_WITHOUT_OUTAGE
        };
        let mut n = 0u64;
        while started.elapsed() < duration && !stop.load(Ordering::Relaxed) {
            let t = started.elapsed();
            if outage && !down && t >= OUTAGE_AT && t < OUTAGE_AT + OUTAGE {
                relay.cut(GATEWAY_CLIENT);
                down = true;
                let _ = events.send(Event::UplinkDown {
                    post: CUT_POST.into(),
                    secs: OUTAGE.as_secs(),
                });
            } else if down && t >= OUTAGE_AT + OUTAGE {
                relay.restore(GATEWAY_CLIENT);
                down = false;
                let _ = events.send(Event::UplinkBack {
                    post: CUT_POST.into(),
                });
            }
            n += 1;
            for (post, token) in &self.tokens {
                if post == QUIET_POST && t >= QUIET_AFTER {
                    continue;
                }
                // The hit goes once, again each second until the gateway took it.
                let hit =
                    (self.case && post == CUT_POST && t >= hit_at && self.hit.get().is_none())
                        .then(|| watchlist_hit(n));
                let line = match &hit {
                    Some(h) => h.line.to_string(),
                    None => report(post, n),
                };
                let resp = client
                    .post(&url)
                    .bearer_auth(token)
                    .header("content-type", "application/x-ndjson")
                    .body(line)
                    .send()
                    .await;
                if let Ok(r) = resp
                    && r.status() == reqwest::StatusCode::ACCEPTED
                    && post == CUT_POST
                {
                    let v: serde_json::Value = r.json().await.unwrap_or_default();
                    for l in v["results"].as_array().into_iter().flatten() {
                        if let Some(id) = l["incident_id"].as_str() {
                            if let Some(h) = hit
                                .as_ref()
                                .filter(|h| h.incident_id == id && l["status"] == "accepted")
                            {
                                let _ = self.hit.set(h.clone());
                            }
                            accepted.push(id.to_string());
                            if down {
                                while_down += 1;
                            }
                        }
                    }
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        if down {
            relay.restore(GATEWAY_CLIENT);
        }
        Ok((accepted, while_down))
    }

    pub async fn stop(self) {
        let _ = self.task.await;
    }
}

/// How many of `ids` are on KZ's incidents topic: it reads until it has found them all
/// (the gateway forwards its spool after an outage) or `timeout` has passed; with
/// `until_end`, it stops at the end of the topic instead (a run cut short by Ctrl-C).
pub fn on_broker(
    kafka: &KafkaSettings,
    ids: &[String],
    timeout: Duration,
    until_end: bool,
) -> Result<usize> {
    let topic = Topics::new(&kafka.topic_prefix).incidents("KZ");
    let reader = AssignedReader::new(
        kafka,
        "demo-check",
        "incidents",
        |t| t == topic,
        StartAt::Beginning,
    )?;
    let want: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
    let mut found: BTreeSet<String> = BTreeSet::new();
    let deadline = Instant::now() + timeout;
    while found.len() < want.len() && Instant::now() < deadline {
        let got = reader.poll(Duration::from_millis(200), |r| {
            let s = SignedIncident::from_avro(r.value?).ok()?;
            Some(Incident::from_avro(&s.payload).ok()?.incident_id)
        })?;
        match got {
            Some(Some(id)) if want.contains(id.as_str()) => {
                found.insert(id);
            }
            Some(_) => {}
            None if until_end && reader.caught_up()? => break,
            None => {}
        }
    }
    Ok(found.len())
}
