//! The admin HTTP server every service runs: `/metrics` (Prometheus text) and `/healthz`.
//!
//! Metrics reveal operational detail (agency and rule names, rates), so the server binds to
//! loopback by default and, when a token is configured, `/metrics` requires
//! `Authorization: Bearer <token>`. `/healthz` reveals nothing and stays open for probes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus::Registry;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;

use crate::metrics::render;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSettings {
    /// Where `/metrics` and `/healthz` listen.
    pub listen: SocketAddr,
    /// File holding a bearer token required for `/metrics` (mode 0600); none: open.
    pub metrics_token_file: Option<std::path::PathBuf>,
}

impl Default for AdminSettings {
    fn default() -> Self {
        AdminSettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 9101)),
            metrics_token_file: None,
        }
    }
}

/// Liveness of a service's loops: each loop beats; `/healthz` fails when one has not
/// beaten within `stale_after`.
#[derive(Default)]
pub struct Health {
    beats: Mutex<HashMap<&'static str, Instant>>,
}

impl Health {
    pub fn beat(&self, part: &'static str) {
        self.beats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(part, Instant::now());
    }

    /// Names of the parts that have not beaten within `stale_after`.
    pub fn stale(&self, stale_after: Duration) -> Vec<&'static str> {
        let beats = self.beats.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<&'static str> = beats
            .iter()
            .filter(|(_, t)| t.elapsed() > stale_after)
            .map(|(k, _)| *k)
            .collect();
        v.sort();
        v
    }
}

#[derive(Clone)]
struct AppState {
    registry: Registry,
    health: Arc<Health>,
    token: Option<Arc<str>>,
}

/// The admin routes, to serve alone or merge into a service's own router.
pub fn router(registry: Registry, health: Arc<Health>, token: Option<String>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(AppState {
            registry,
            health,
            token: token.map(Into::into),
        })
}

/// Binds `addr` and serves `router` until `shutdown` resolves. Returns the bound address
/// (useful with port 0) and the server task.
pub async fn serve(
    addr: SocketAddr,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>)> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let task = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await
    });
    Ok((bound, task))
}

/// Compares a presented bearer token with the expected one in constant time.
pub fn bearer_matches(headers: &HeaderMap, expected: &str) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some(presented) = value.strip_prefix("Bearer ") else {
        return false;
    };
    presented.len() == expected.len() && bool::from(presented.as_bytes().ct_eq(expected.as_bytes()))
}

async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(token) = &state.token
        && !bearer_matches(&headers, token)
    {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "unauthorized\n",
        )
            .into_response();
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        render(&state.registry),
    )
        .into_response()
}

async fn healthz(State(state): State<AppState>) -> Response {
    let stale = state.health.stale(Duration::from_secs(30));
    if stale.is_empty() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("stalled: {}\n", stale.join(", ")),
        )
            .into_response()
    }
}
