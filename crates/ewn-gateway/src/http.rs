//! The posts' HTTP intake: `POST /api/v1/incidents`, one JSON incident
//! (`Content-Type: application/json`) or JSON lines (any other type), authenticated with
//! the post's bearer token.
//!
//! Answers: `202` once every valid line is synced to the spool (the body says, line by
//! line, what was accepted, with the key id that signed it, and what was rejected and why);
//! `422` when no line was valid; `401` without a known token; `413` past
//! `gateway.max_body_bytes`; `507` past the spool's budget, with the reason, nothing of the
//! request accepted; `503` when the spool cannot be written.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::json;

use crate::intake::{Appended, Intake, PostTokens, Prepared, SpoolWriter};
use crate::metrics::GatewayMetrics;

#[derive(Clone)]
pub struct Api {
    pub intake: Arc<Intake>,
    pub tokens: Arc<PostTokens>,
    pub writer: SpoolWriter,
    pub metrics: GatewayMetrics,
    pub max_body_bytes: usize,
}

pub fn router(api: Api) -> Router {
    Router::new()
        .route("/api/v1/incidents", post(incidents))
        .with_state(api)
}

fn answer(status: StatusCode, body: serde_json::Value) -> Response {
    (status, axum::Json(body)).into_response()
}

fn lines_body(p: &Prepared) -> serde_json::Value {
    let accepted = p.results.iter().filter(|r| r.status == "accepted").count();
    json!({
        "accepted": accepted,
        "rejected": p.rejected(),
        "results": p.results,
    })
}

async fn incidents(State(api): State<Api>, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    let response = handle(&api, &headers, body).await;
    api.metrics
        .intake_seconds
        .observe(started.elapsed().as_secs_f64());
    response
}

async fn handle(api: &Api, headers: &HeaderMap, body: Body) -> Response {
    let Some(post) = ewn_ops::tokens::bearer(headers).and_then(|t| api.tokens.check(t)) else {
        api.metrics.unauthorized.inc();
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            axum::Json(
                json!({"error": "unauthorized", "reason": "a post's bearer token is required"}),
            ),
        )
            .into_response();
    };
    api.intake.contacts.heard(&post, (api.intake.clock)());
    let single = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim() == "application/json")
        });
    let bytes = match axum::body::to_bytes(body, api.max_body_bytes).await {
        Ok(b) => b,
        Err(e) => {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            return if too_large {
                answer(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    json!({"error": "too_large", "reason": format!("the body is larger than {} bytes: send fewer lines per request", api.max_body_bytes)}),
                )
            } else {
                answer(
                    StatusCode::BAD_REQUEST,
                    json!({"error": "body", "reason": "the request body could not be read"}),
                )
            };
        }
    };
    let intake = api.intake.clone();
    let post_id = post.clone();
    // Parsing, blinding and signing are CPU work: off the runtime's workers.
    let prepared =
        tokio::task::spawn_blocking(move || intake.prepare(&post_id, &bytes, single)).await;
    let mut prepared = match prepared {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "intake failed");
            return answer(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"error": "internal", "reason": "the reports could not be signed"}),
            );
        }
        Err(e) => {
            tracing::error!(error = %e, "intake task failed");
            return answer(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"error": "internal", "reason": "the reports could not be signed"}),
            );
        }
    };
    let invalid = prepared.rejected() as u64;
    api.metrics
        .intake
        .with_label_values(&["http", "invalid"])
        .inc_by(invalid);
    if prepared.records.is_empty() {
        return answer(StatusCode::UNPROCESSABLE_ENTITY, lines_body(&prepared));
    }
    let records = std::mem::take(&mut prepared.records);
    let n = records.len() as u64;
    match api.writer.append(&post, records).await {
        Appended::Stored => {
            api.metrics
                .intake
                .with_label_values(&["http", "accepted"])
                .inc_by(n);
            answer(StatusCode::ACCEPTED, lines_body(&prepared))
        }
        Appended::Full(reason) => {
            api.metrics
                .intake
                .with_label_values(&["http", "spool_full"])
                .inc_by(n);
            prepared.refuse();
            let mut body = lines_body(&prepared);
            body["error"] = json!("spool_full");
            body["reason"] = json!(reason);
            answer(StatusCode::INSUFFICIENT_STORAGE, body)
        }
        Appended::Failed(reason) => {
            api.metrics
                .intake
                .with_label_values(&["http", "error"])
                .inc_by(n);
            prepared.refuse();
            let mut body = lines_body(&prepared);
            body["error"] = json!("spool_unavailable");
            body["reason"] = json!(format!(
                "the spool could not be written ({reason}); nothing of this request was accepted"
            ));
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, "5")],
                axum::Json(body),
            )
                .into_response()
        }
    }
}
