//! Test doubles around the fan-out: local webhook endpoints that record every attempt, an
//! independent Standard Webhooks verifier, and an in-process fan-out.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ewn_fanout::auth::Principal;
use ewn_fanout::{FanoutConfig, FanoutSettings, SubscriptionConfig};
use ewn_kafka::KafkaSettings;
use ewn_model::{Alert, AvroRecord, Level, MsgType, Tlp};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::{InProcess, in_process, now_ms, serve_admin};

/// The fan-out key of in-process fan-outs, so tests can compute redacted ids.
pub const TEST_FANOUT_KEY: [u8; 32] = [7; 32];

/// How an endpoint answers.
#[derive(Clone, Debug)]
pub enum Mode {
    Ok,
    Status(u16),
    Slow(Duration),
    /// Accepts the request and never answers, until the mode changes (recorded with
    /// status 0: nothing was answered).
    Hang,
}

/// One request an endpoint received.
#[derive(Clone, Debug)]
pub struct Hit {
    pub name: String,
    pub webhook_id: String,
    pub timestamp: String,
    pub signature: String,
    pub content_type: String,
    pub body: Vec<u8>,
    /// What the endpoint answered.
    pub status: u16,
    pub at_ms: i64,
}

impl Hit {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    /// The alert id of a JSON delivery.
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn alert_id(&self) -> String {
        self.json()["data"]["alert_id"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

#[derive(Default)]
struct HookState {
    hits: Mutex<Vec<Hit>>,
    modes: Mutex<HashMap<String, Mode>>,
}

/// Local webhook endpoints `/hook/<name>` on one loopback port.
pub struct Hooks {
    pub addr: SocketAddr,
    state: Arc<HookState>,
    _thread: JoinHandle<()>,
}

async fn receive(
    State(state): State<Arc<HookState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let mode = state
        .modes
        .lock()
        .unwrap()
        .get(&name)
        .cloned()
        .unwrap_or(Mode::Ok);
    let (status, delay) = match mode {
        Mode::Ok => (200, None),
        Mode::Status(s) => (s, None),
        Mode::Slow(d) => (200, Some(d)),
        Mode::Hang => (0, None),
    };
    let hang = matches!(mode, Mode::Hang);
    let h = |k: &str| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let name_of = name.clone();
    let index = {
        let mut hits = state.hits.lock().unwrap();
        hits.push(Hit {
            name,
            webhook_id: h("webhook-id"),
            timestamp: h("webhook-timestamp"),
            signature: h("webhook-signature"),
            content_type: h("content-type"),
            body: body.to_vec(),
            status,
            at_ms: now_ms(),
        });
        hits.len() - 1
    };
    // Recorded on arrival, so a request cut off by a crash of the sender still counts.
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    if hang {
        while matches!(state.modes.lock().unwrap().get(&name_of), Some(Mode::Hang)) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Answered after all: a sender still waiting gets its 200, so the hit counts.
        if let Some(h) = state.hits.lock().unwrap().get_mut(index) {
            h.status = 200;
        }
        return StatusCode::OK;
    }
    StatusCode::from_u16(status).unwrap()
}

impl Hooks {
    pub fn start() -> Hooks {
        let state = Arc::new(HookState::default());
        let (tx, rx) = std::sync::mpsc::channel();
        let s = state.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                let app = Router::new()
                    .route("/hook/{name}", post(receive))
                    .with_state(s);
                axum::serve(listener, app).await.unwrap();
            });
        });
        Hooks {
            addr: rx.recv().unwrap(),
            state,
            _thread: thread,
        }
    }

    pub fn url(&self, name: &str) -> String {
        format!("http://{}/hook/{name}", self.addr)
    }

    pub fn set(&self, name: &str, mode: Mode) {
        self.state.modes.lock().unwrap().insert(name.into(), mode);
    }

    /// Every attempt at `name`, in arrival order.
    pub fn hits(&self, name: &str) -> Vec<Hit> {
        self.state
            .hits
            .lock()
            .unwrap()
            .iter()
            .filter(|h| h.name == name)
            .cloned()
            .collect()
    }

    /// The attempts `name` accepted (2xx), in arrival order.
    pub fn delivered(&self, name: &str) -> Vec<Hit> {
        self.hits(name)
            .into_iter()
            .filter(|h| (200..300).contains(&h.status))
            .collect()
    }

    pub fn all(&self) -> Vec<Hit> {
        self.state.hits.lock().unwrap().clone()
    }
}

/// Standard Webhooks verification, written from the specification and independent of
/// the sender's code: `whsec_` base64 secret, HMAC-SHA256 over `id.timestamp.body`, one
/// of the space-separated `v1,<base64>` signatures must match, timestamp within 5 min of
/// the request's arrival (a receiver judges it when the request comes, so a test may check
/// its hits long after).
pub fn verify_standard_webhook(secret: &str, hit: &Hit) -> Result<(), String> {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").ok_or("secret prefix")?)
        .map_err(|e| format!("secret base64: {e}"))?;
    if hit.webhook_id.is_empty() {
        return Err("no webhook-id".into());
    }
    let ts: i64 = hit
        .timestamp
        .parse()
        .map_err(|_| format!("webhook-timestamp `{}`", hit.timestamp))?;
    if (hit.at_ms / 1000 - ts).abs() > 300 {
        return Err(format!("timestamp {ts} outside the 5-minute tolerance"));
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{}.", hit.webhook_id, hit.timestamp).as_bytes());
    mac.update(&hit.body);
    let expected = STANDARD.encode(mac.finalize().into_bytes());
    let ok = hit
        .signature
        .split(' ')
        .filter_map(|s| s.strip_prefix("v1,"))
        .any(|s| s == expected);
    if ok {
        Ok(())
    } else {
        Err(format!("no matching v1 signature in `{}`", hit.signature))
    }
}

pub const DESK_TOKEN_PREFIX: &str = "desk-token-";
pub const ADMIN_TOKEN: &str = "admin-token-0123456789abcdef";

/// A subscription with a webhook at `hooks` named after its id.
pub fn webhook_sub(hooks: &Hooks, id: &str, agency: &str, clearance: Tlp) -> SubscriptionConfig {
    SubscriptionConfig::webhook(id, agency, clearance, hooks.url(id), secret_of(id))
}

/// A deterministic `whsec_` secret per subscription id.
pub fn secret_of(id: &str) -> String {
    let mut key = [7u8; 32];
    for (i, b) in id.bytes().enumerate() {
        key[i % 32] ^= b;
    }
    format!("whsec_{}", STANDARD.encode(key))
}

/// The receivers of these tests listen on 127.0.0.1 with plain http: the destination
/// policy refuses both by default, so the tests allow them explicitly.
pub fn loopback_webhooks(
    w: ewn_fanout::settings::WebhookSettings,
) -> ewn_fanout::settings::WebhookSettings {
    ewn_fanout::settings::WebhookSettings {
        allow_http_hosts: vec!["127.0.0.1".into()],
        allow_private_cidrs: vec!["127.0.0.1/32".into()],
        ..w
    }
}

/// The same, as lines of a `[fanout.webhook]` section.
pub const LOOPBACK_WEBHOOKS_TOML: &str =
    "allow_http_hosts = [\"127.0.0.1\"]\nallow_private_cidrs = [\"127.0.0.1/32\"]\n";

/// Fan-out settings for tests: any free port, quick retries, receivers on loopback.
pub fn fanout_config(settings: &KafkaSettings, subs: Vec<SubscriptionConfig>) -> FanoutConfig {
    let defaults = FanoutSettings::default();
    let fanout = FanoutSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        group_id: format!("{}fanout", settings.topic_prefix),
        batch_wait_ms: 10,
        webhook: ewn_fanout::settings::WebhookSettings {
            initial_backoff_ms: 100,
            max_backoff_ms: 2_000,
            timeout_ms: 5_000,
            ..loopback_webhooks(defaults.webhook.clone())
        },
        escalation: ewn_fanout::settings::EscalationSettings {
            tick_ms: 100,
            ..defaults.escalation.clone()
        },
        ..defaults
    };
    let mut tokens = vec![(
        ADMIN_TOKEN.to_string(),
        Principal::Admin {
            name: "test-admin".into(),
        },
    )];
    for s in &subs {
        tokens.push((
            format!("{DESK_TOKEN_PREFIX}{}", s.id),
            Principal::Desk {
                name: format!("{}-officer", s.id),
                subscription: s.id.clone(),
            },
        ));
    }
    FanoutConfig {
        kafka: settings.clone(),
        fanout,
        subscriptions: subs,
        tokens,
        key: Some(ewn_fanout::keys::FanoutKey::from_bytes(TEST_FANOUT_KEY)),
    }
}

/// A fan-out running in this process, with the address of its API and of its admin
/// server (`/metrics`, `/healthz`), served as `ewn fanout` serves it.
pub struct Fanout {
    pub api: SocketAddr,
    pub admin: SocketAddr,
    service: InProcess<ewn_fanout::Error>,
}

pub fn start_fanout(config: FanoutConfig) -> Fanout {
    let (tx, rx) = std::sync::mpsc::channel();
    let service = in_process(move |r, s| async move {
        let (health, admin) = serve_admin(&r, s.clone()).await;
        let running = ewn_fanout::start(config, &r, health, s).await?;
        tx.send((running.api, admin)).unwrap();
        running.task.await.unwrap()
    });
    let (api, admin) = match rx.recv_timeout(Duration::from_secs(90)) {
        Ok(a) => a,
        Err(_) => panic!("fan-out did not start: {:?}", service.outcome()),
    };
    Fanout {
        api,
        admin,
        service,
    }
}

impl Fanout {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.api)
    }

    pub fn metric(&self, name: &str, labels: &str) -> f64 {
        self.service.metric(name, labels)
    }

    /// The status `/healthz` of its admin server answers, and the body.
    pub fn healthz(&self) -> Result<(u16, String), String> {
        let r = reqwest::blocking::Client::new()
            .get(format!("http://{}/healthz", self.admin))
            .timeout(Duration::from_secs(5))
            .send()
            .map_err(|e| e.to_string())?;
        let status = r.status().as_u16();
        Ok((status, r.text().unwrap_or_default()))
    }

    pub fn stop(self) {
        self.service.stop();
    }
}

/// An alert with a unique id, built from the sample.
pub fn alert(n: u64, tlp: Tlp, level: Level) -> Alert {
    let mut a = ewn_model::samples::alert();
    a.alert_id = format!("al-{n:06}-{:x}", now_ms());
    a.msg_type = MsgType::Alert;
    a.references = vec![];
    a.tlp = tlp;
    a.level = level;
    a.created_at = now_ms();
    a.window_end = a.created_at - 1000;
    a.window_start = a.window_end - 3_600_000;
    a.named_agencies = vec![];
    a
}

impl super::Net {
    /// Produces alerts to `<prefix>alerts`, keyed by their correlation key, and waits for
    /// the broker to confirm them.
    pub fn publish_alerts(&mut self, alerts: &[Alert]) {
        let topic = self.topics().alerts();
        for a in alerts {
            let value = a.to_avro().unwrap();
            self.send(&topic, a.key.as_bytes(), &value);
        }
        self.flush();
    }
}
