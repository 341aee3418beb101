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
/// beaten within `stale_after`. Also the parts' start-up signals: a part says once it is
/// ready for work (a consumer given its partitions), and whoever started the service can
/// wait for that (the demo starts its traffic then) rather than guess from metrics.
pub struct Health {
    beats: Mutex<HashMap<&'static str, Instant>>,
    ready: tokio::sync::watch::Sender<std::collections::BTreeSet<&'static str>>,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            beats: Mutex::default(),
            ready: tokio::sync::watch::Sender::new(Default::default()),
        }
    }
}

impl Health {
    /// `part` is ready for work; it stays so (a later rebalance does not take it back).
    pub fn set_ready(&self, part: &'static str) {
        self.ready.send_if_modified(|s| s.insert(part));
    }

    /// Resolves once every one of `parts` has said it is ready.
    pub async fn ready(&self, parts: &[&str]) {
        let mut rx = self.ready.subscribe();
        // The sender lives in `self`, so the channel cannot close while this waits.
        let _ = rx.wait_for(|s| parts.iter().all(|p| s.contains(p))).await;
    }

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

/// What one HTTP server bears: a client that sends its request head too slowly is cut
/// off (slow-loris), and connections beyond the bound wait in the kernel's backlog rather
/// than costing a task each.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpLimits {
    /// Time to receive a request's head (line and headers), per request.
    pub header_read_timeout_ms: u64,
    /// Time to receive a request's body, per request (a stalled upload ends with 408).
    pub body_read_timeout_ms: u64,
    /// Open connections served at once.
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 10_000,
            max_connections: 1_024,
        }
    }
}

impl HttpLimits {
    pub fn problems(&self, at: &str) -> Vec<String> {
        let mut p = Vec::new();
        if self.header_read_timeout_ms == 0 {
            p.push(format!("{at}.header_read_timeout_ms: must be positive"));
        }
        if self.body_read_timeout_ms == 0 {
            p.push(format!("{at}.body_read_timeout_ms: must be positive"));
        }
        if self.max_connections == 0 {
            p.push(format!("{at}.max_connections: must be at least 1"));
        }
        p
    }
}

/// Binds `addr` and serves `router` with the default [`HttpLimits`] until `shutdown`
/// resolves. Returns the bound address (useful with port 0) and the server task.
pub async fn serve(
    addr: SocketAddr,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>)> {
    serve_with(addr, router, shutdown, HttpLimits::default()).await
}

/// [`serve`] with explicit limits. On shutdown it stops accepting and gives open
/// connections (live streams end with the service) five seconds to finish.
pub async fn serve_with(
    addr: SocketAddr,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    limits: HttpLimits,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>)> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let router = router.layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
        Duration::from_millis(limits.body_read_timeout_ms.max(1)),
    ));
    let task = tokio::spawn(async move {
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
        let header_timeout = Duration::from_millis(limits.header_read_timeout_ms.max(1));
        tokio::pin!(shutdown);
        loop {
            let permit = tokio::select! {
                p = permits.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
                _ = &mut shutdown => break,
            };
            let stream = tokio::select! {
                r = listener.accept() => match r {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of descriptors and the like: pause rather than spin.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = &mut shutdown => break,
            };
            let service = hyper_util::service::TowerToHyperService::new(router.clone());
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            let conn = graceful.watch(conn);
            tokio::spawn(async move {
                // A client going away mid-request is its business, not an error here.
                let _ = conn.await;
                drop(permit);
            });
        }
        drop(listener);
        let _ = tokio::time::timeout(Duration::from_secs(5), graceful.shutdown()).await;
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn ready_resolves_once_every_named_part_said_so() {
        let health = Arc::new(Health::default());
        let waiting = {
            let h = health.clone();
            tokio::spawn(async move { h.ready(&["ingest", "correlate"]).await })
        };
        health.set_ready("ingest");
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "one of two parts is not enough");
        health.set_ready("correlate");
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("ready within 5 s")
            .unwrap();
        // Already ready: resolves at once.
        health.ready(&["correlate"]).await;
    }

    #[tokio::test]
    async fn a_client_that_never_finishes_its_headers_is_cut_off() {
        let limits = HttpLimits {
            header_read_timeout_ms: 200,
            ..HttpLimits::default()
        };
        let router = Router::new().route("/", get(|| async { "ok" }));
        let (addr, _task) = serve_with(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            router,
            std::future::pending(),
            limits,
        )
        .await
        .unwrap();
        let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        // The server closes the connection (possibly after a 408) instead of waiting;
        // the deadline here is generous, the server's is 200 ms.
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(20), slow.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "connection still open after 20 s");
        // A well-behaved client is served meanwhile.
        let mut ok = tokio::net::TcpStream::connect(addr).await.unwrap();
        ok.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut body = String::new();
        ok.read_to_string(&mut body).await.unwrap();
        assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    }
}
