//! Case requests from desks: `POST /api/v1/alerts/{id}/requests` with
//! `{"incident_id", "justification", "legal_basis"}` (desk token or console session).
//!
//! A desk may ask for the details of an incident only when it received the alert in full:
//! the same rule as acknowledging it (selected by its filters or named by escalation, and
//! cleared for the episode's marking). Anything else, an alert never delivered to it, one
//! above its clearance, or one it does not know, is refused with the same `403`, so the
//! answer reveals nothing about alerts it may not see; an incident the alert's evidence does
//! not name is refused too. The request, signed by the fan-out's service key on behalf of
//! the desk (`ewn_trust::case`), goes to the originating state on `<prefix>requests.<cc>`
//! (readable by that state's gateway only), and the act is an audit record
//! (`case_requested`) that names the request, not the alert or the incident.

// Handlers return their error as the response itself, the axum idiom (as api.rs); its
// size is irrelevant next to a network round trip.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ewn_model::validate::is_uuid;
use ewn_model::{AvroRecord, CaseRequest, Subscription};
use serde::Deserialize;
use serde_json::json;

use crate::policy;
use crate::service::{Core, now_ms};

/// Longest justification accepted, in bytes.
pub const MAX_JUSTIFICATION_BYTES: usize = 2000;
/// Longest legal basis accepted, in bytes.
pub const MAX_LEGAL_BASIS_BYTES: usize = 256;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    incident_id: String,
    justification: String,
    legal_basis: String,
}

fn refuse(status: StatusCode, field: Option<&str>, reason: &str) -> Response {
    let body = match field {
        Some(f) => json!({"error": reason, "field": f}),
        None => json!({"error": reason}),
    };
    (status, axum::Json(body)).into_response()
}

fn text(field: &'static str, value: &str, max: usize) -> Result<String, Response> {
    let v = value.trim();
    if v.is_empty() || v.len() > max || v.chars().any(|c| c.is_control() && c != '\n') {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            Some(field),
            &format!("{field}: 1..{max} bytes of printable text"),
        ));
    }
    Ok(v.to_string())
}

/// Handles one request of desk `name` (subscription `sub`) about `alert_id`, counted by
/// outcome.
pub(crate) async fn create(
    core: &Arc<Core>,
    name: &str,
    sub: &Subscription,
    alert_id: &str,
    body: &[u8],
) -> Response {
    let response = handle(core, name, sub, alert_id, body).await;
    let outcome = match response.status() {
        StatusCode::CREATED => "sent",
        StatusCode::FORBIDDEN => "refused",
        StatusCode::BAD_REQUEST => "invalid",
        _ => "failed",
    };
    core.metrics
        .case_requests
        .with_label_values(&[outcome])
        .inc();
    response
}

async fn handle(
    core: &Arc<Core>,
    name: &str,
    sub: &Subscription,
    alert_id: &str,
    body: &[u8],
) -> Response {
    // Never echo the body: serde's messages may quote its values.
    let body: Body = match serde_json::from_slice(body) {
        Ok(b) => b,
        Err(_) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                None,
                "the body must be JSON {\"incident_id\", \"justification\", \"legal_basis\"} and nothing else",
            );
        }
    };
    if alert_id.len() > 128 || !alert_id.bytes().all(|b| b.is_ascii_graphic()) {
        return refuse(
            StatusCode::BAD_REQUEST,
            Some("alert_id"),
            "alert id: printable ASCII, at most 128 bytes",
        );
    }
    if !is_uuid(&body.incident_id) {
        return refuse(
            StatusCode::BAD_REQUEST,
            Some("incident_id"),
            "incident_id: a UUID is expected",
        );
    }
    let justification = match text(
        "justification",
        &body.justification,
        MAX_JUSTIFICATION_BYTES,
    ) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let legal_basis = match text("legal_basis", &body.legal_basis, MAX_LEGAL_BASIS_BYTES) {
        Ok(t) => t,
        Err(r) => return r,
    };
    if !core.index_ready() {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            None,
            "starting: the alert index is being rebuilt; retry",
        );
    }
    let received = core.index.episode_of(alert_id).is_some_and(|ep| {
        policy::may_acknowledge(sub, &ep.view, core.escalated_to(&ep.episode_id, &sub.id))
    });
    if !received {
        return refuse(
            StatusCode::FORBIDDEN,
            None,
            "this desk did not receive this alert in full (never delivered to it, or above \
             its clearance): it may not request the details of its incidents",
        );
    }
    let Some(incident) = core.index.incident_of(alert_id, &body.incident_id) else {
        return refuse(
            StatusCode::FORBIDDEN,
            Some("incident_id"),
            "incident_id is not an incident of this alert (as its evidence names them)",
        );
    };
    let Some(state) = core.topics.state_of(&incident.topic) else {
        return refuse(
            StatusCode::CONFLICT,
            Some("incident_id"),
            "the incident's origin is not a member state's topic",
        );
    };
    let state = state.to_ascii_uppercase();
    let Some(signer) = core.case_signer.clone() else {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            None,
            "case requests are off: the fan-out has no service key (fanout.audit.signing_key_file)",
        );
    };
    let now = now_ms();
    let request = CaseRequest {
        request_id: uuid_v4(),
        alert_id: alert_id.to_string(),
        incident_id: body.incident_id,
        incident_sha256: hex::encode(incident.payload_sha256),
        state: state.clone(),
        agency: sub.agency.clone(),
        subscription_id: sub.id.clone(),
        requester: name.to_string(),
        justification,
        legal_basis,
        requested_at: now,
        key_id: String::new(),
        signed_at: 0,
        signature: [0; 64],
    };
    let value = match ewn_trust::case::sign_request(&signer, request.clone(), now)
        .and_then(|r| Ok(r.to_avro()?))
    {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(error = %e, "case request not signed");
            return refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                None,
                "the request could not be signed",
            );
        }
    };
    let topic = core.topics.requests(&state);
    if let Err(e) = core
        .produce_confirmed(&topic, &request.request_id, Some(&value))
        .await
    {
        tracing::error!(error = %e, "case request not written");
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            None,
            "the request could not be sent to the originating state; retry",
        );
    }
    // The record names the request, never the alert or the incident: overseers of any
    // clearance read the audit log, and an alert above theirs must stay metadata only.
    // `ewn audit alert` links the requests to their alert from the requests topics.
    core.audit.record(crate::audit::Act {
        actor: name,
        action: "case_requested",
        object: &request.request_id,
        at: now,
        before: None,
        after: Some(crate::audit::digest(&value)),
        detail: Some(format!(
            "request {} state {} agency {}",
            request.request_id, state, request.agency
        )),
    });
    (
        StatusCode::CREATED,
        axum::Json(json!({
            "request_id": request.request_id,
            "alert_id": request.alert_id,
            "incident_id": request.incident_id,
            "state": state,
            "agency": request.agency,
            "requested_at": crate::render::rfc3339(now),
        })),
    )
        .into_response()
}

/// A random (version 4) UUID.
fn uuid_v4() -> String {
    use rand_core::RngCore;
    let mut b = [0u8; 16];
    rand_core::OsRng.fill_bytes(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn request_ids_are_uuids() {
        let id = super::uuid_v4();
        assert!(ewn_model::validate::is_uuid(&id), "{id}");
        assert_ne!(id, super::uuid_v4());
    }
}
