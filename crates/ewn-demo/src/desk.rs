//! Stand-ins for the desks' own systems: a webhook receiver at `/desk/<subscription>`
//! that checks every delivery with the fan-out's own Standard Webhooks code
//! ([`WebhookSecret::verify`]) and records, per alert, which desk received it and whether
//! its signature verified. A delivery that does not verify is answered `401`.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use ewn_fanout::webhook::WebhookSecret;

use crate::error::{Error, Result};

/// How far a delivery's `webhook-timestamp` may be from the receiver's clock (the
/// specification's suggested tolerance).
pub const TOLERANCE_SECS: i64 = 300;

/// Per alert id: per desk, whether the delivery's signature verified.
pub type Received = HashMap<String, BTreeMap<String, bool>>;

struct ReceiverState {
    received: Mutex<Received>,
    secrets: BTreeMap<String, WebhookSecret>,
}

pub struct DeskReceiver {
    pub addr: SocketAddr,
    deliveries: Deliveries,
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// A reader of what the receiver recorded, for other tasks.
#[derive(Clone)]
pub struct Deliveries(Arc<ReceiverState>);

impl Deliveries {
    /// What was received so far.
    pub fn received(&self) -> Received {
        self.0
            .received
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

async fn receive(
    State(state): State<Arc<ReceiverState>>,
    Path(desk): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let Some(secret) = state.secrets.get(&desk) else {
        return StatusCode::NOT_FOUND;
    };
    let h = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).unwrap_or("");
    let now = chrono::Utc::now().timestamp();
    let verified = h("webhook-timestamp").parse::<i64>().is_ok_and(|ts| {
        (now - ts).abs() <= TOLERANCE_SECS
            && secret.verify(h("webhook-id"), ts, h("webhook-signature"), &body)
    });
    let alert_id = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["data"]["alert_id"].as_str().map(str::to_string));
    let Some(alert_id) = alert_id else {
        return StatusCode::BAD_REQUEST;
    };
    state
        .received
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(alert_id)
        .or_default()
        .insert(desk, verified);
    if verified {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::UNAUTHORIZED
    }
}

impl DeskReceiver {
    /// Listens on a free loopback port for the desks of `secrets` (subscription id ->
    /// `whsec_` secret) until `shutdown` resolves. Returns once the listener is bound.
    pub async fn start(
        secrets: &BTreeMap<String, String>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<DeskReceiver> {
        let secrets = secrets
            .iter()
            .map(|(desk, text)| {
                WebhookSecret::parse(text)
                    .map(|s| (desk.clone(), s))
                    .map_err(|e| Error::Setup(format!("desk {desk}'s webhook secret: {e}")))
            })
            .collect::<Result<_>>()?;
        let state = Arc::new(ReceiverState {
            received: Mutex::default(),
            secrets,
        });
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let (addr, task) = ewn_ops::http::serve(
            loopback,
            axum::Router::new()
                .route("/desk/{desk}", axum::routing::post(receive))
                .with_state(state.clone()),
            shutdown,
        )
        .await
        .map_err(|e| Error::Io("desk receiver", e))?;
        Ok(DeskReceiver {
            addr,
            deliveries: Deliveries(state),
            task,
        })
    }

    /// The webhook URL of `desk`.
    pub fn url(&self, desk: &str) -> String {
        format!("http://{}/desk/{desk}", self.addr)
    }

    /// What was received so far.
    pub fn received(&self) -> Received {
        self.deliveries.received()
    }

    pub fn deliveries(&self) -> Deliveries {
        self.deliveries.clone()
    }
}
