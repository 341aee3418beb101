//! Case requests at the originating state's gateway.
//!
//! A reader thread follows `<prefix>requests.<cc>` from its start (the store skips the
//! requests it holds already, so a restart loses and repeats nothing) and keeps each request
//! whose signature verifies under a `fanout` service key of the trust store and that names
//! this state, as `pending` in the case store ([`crate::cases`]). Operators list them and
//! approve or decline them through an authenticated API on the gateway's listener:
//!
//! - `GET /api/v1/requests[?all=true]`: pending requests (or every one held) as JSON;
//! - `POST /api/v1/requests/{id}/approve`: the raw details the gateway kept for the
//!   incident are encrypted (HPKE) to the requesting agency's key (role `agency` in the
//!   trust store, re-read for each answer), the reply signed with the state's key and put on
//!   `<prefix>responses`;
//! - `POST /api/v1/requests/{id}/decline` with `{"reason": "..."}`: a signed reply whose
//!   reason is sealed to the requesting agency as an approval's details are (when the trust
//!   store holds no key of the agency, the decline is sent with nothing sealed: no reason).
//!
//! `<prefix>responses` is readable by every desk: a reply's clear fields name neither the
//! alert nor the incident (`schemas/CaseResponse.avsc`, version 2), and the audit records of
//! answers name the request, not the alert or incident.
//!
//! Operators authenticate with a bearer token of `gateway.requests.operators_file`
//! (`[[tokens]]` of `name` and `sha256`, mode 0600). Every answer is also an audit record on
//! `<prefix>audit` (`case_approved`, `case_declined`), signed with the gateway's service key
//! (`gateway.requests.audit_signing_key_file`, role `service`, service `gateway`); an
//! answer is reported done only once the broker confirmed both the reply and its record.

// Handlers return their error as the response itself, the axum idiom (as api.rs); its
// size is irrelevant next to a network round trip.
#![allow(clippy::result_large_err)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ewn_kafka::{ConfirmingProducer, KafkaSettings, Topics};
use ewn_model::validate::printable;
use ewn_model::{AuditRecord, AvroRecord, CaseDecision, CaseRequest, CaseResponse};
use ewn_ops::tokens::{HashedTokens, parse_hash};
use ewn_trust::TrustStore;
use ewn_trust::audit::{AuditSigner, sign_record};
use ewn_trust::case::{SealedAnswer, sign_response, verify_request};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::cases::{CaseStore, Offered, StoredRequest};
use crate::error::{Error, Result};
use crate::intake::Clock;
use crate::metrics::GatewayMetrics;
use crate::signer::ReloadingSigner;

/// `[gateway.requests]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RequestsSettings {
    /// Read case requests and serve the operators' API. Needs `gateway.details.path` and
    /// the files below.
    pub enabled: bool,
    /// `[[tokens]]` of `name` and `sha256` (hex SHA-256 of the token), mode 0600: the
    /// operators who may list, approve and decline requests.
    pub operators_file: Option<PathBuf>,
    /// The trust store: `fanout` service keys verify requests; `agency` keys receive replies.
    pub trust_store: Option<PathBuf>,
    /// The gateway's own service key (PKCS#8 PEM, optionally `key_id = <id>` first) that
    /// signs its audit records (role `service`, service `gateway` in the trust store).
    pub audit_signing_key_file: Option<PathBuf>,
    /// Requests waiting for an operator, at most; past it new ones are not kept (counted
    /// `over_bound`).
    pub max_pending: u64,
    /// Longest decline reason accepted.
    pub max_reason_bytes: usize,
    /// How far a request's signing time may be ahead of this clock.
    pub signing_skew_ms: i64,
}

impl Default for RequestsSettings {
    fn default() -> Self {
        RequestsSettings {
            enabled: false,
            operators_file: None,
            trust_store: None,
            audit_signing_key_file: None,
            max_pending: 10_000,
            max_reason_bytes: 1024,
            signing_skew_ms: 60_000,
        }
    }
}

impl RequestsSettings {
    pub fn problems(&self, details_path: Option<&Path>) -> Vec<String> {
        let mut p = Vec::new();
        if self.max_pending == 0 {
            p.push("gateway.requests.max_pending: must be positive".into());
        }
        if !(16..=16_384).contains(&self.max_reason_bytes) {
            p.push("gateway.requests.max_reason_bytes: 16..=16384".into());
        }
        if self.enabled {
            for (key, v) in [
                ("gateway.requests.operators_file", &self.operators_file),
                ("gateway.requests.trust_store", &self.trust_store),
                (
                    "gateway.requests.audit_signing_key_file",
                    &self.audit_signing_key_file,
                ),
            ] {
                if v.is_none() {
                    p.push(format!("{key}: is required when gateway.requests.enabled"));
                }
            }
            if details_path.is_none() {
                p.push("gateway.details.path: is required when gateway.requests.enabled".into());
            }
        }
        p
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OperatorsFile {
    #[serde(default)]
    tokens: Vec<OperatorEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OperatorEntry {
    name: String,
    sha256: String,
}

/// Reads the operators' tokens (refused when group or others may read the file).
pub fn load_operators(path: &Path) -> Result<HashedTokens<String>> {
    let text = ewn_trust::secret::read_secret(path)?;
    let at = |e: String| Error::Config(vec![format!("{}: {e}", path.display())]);
    let file: OperatorsFile = toml::from_str(&text).map_err(|e| at(e.to_string()))?;
    let mut tokens = HashedTokens::default();
    for (i, t) in file.tokens.into_iter().enumerate() {
        if !crate::intake::is_post_id(&t.name) {
            return Err(at(format!(
                "tokens[{i}].name: 1-64 characters of A-Z a-z 0-9 - _ ."
            )));
        }
        let hash = parse_hash(&t.sha256)
            .ok_or_else(|| at(format!("tokens[{i}].sha256: 64 hex digits expected")))?;
        tokens.push(hash, t.name);
    }
    Ok(tokens)
}

/// The gateway's side of case requests: the reader, the operators' decisions, the replies.
pub struct CaseDesk {
    pub store: Arc<CaseStore>,
    pub trust_store: PathBuf,
    pub signer: Arc<ReloadingSigner>,
    pub audit: AuditSigner,
    pub producer: ConfirmingProducer,
    pub kafka: KafkaSettings,
    pub topics: Topics,
    pub state: String,
    pub instance: String,
    pub operators: HashedTokens<String>,
    pub settings: RequestsSettings,
    pub clock: Clock,
    pub metrics: GatewayMetrics,
}

/// Why an operator's decision was not carried out.
#[derive(Debug)]
pub enum Refusal {
    NotFound,
    /// Decided already (its status).
    Decided(String),
    /// The request cannot be answered as asked (no details, no agency key...): 409.
    Conflict(String),
    /// The answer could not be sent; the request is pending again: 503.
    Unavailable(String),
}

impl CaseDesk {
    fn trust(&self) -> std::result::Result<TrustStore, String> {
        TrustStore::load(&self.trust_store).map_err(|e| e.to_string())
    }

    /// Handles one record of the requests topic.
    pub fn take(&self, value: Option<&[u8]>) -> &'static str {
        let now = (self.clock)();
        let Some(value) = value else { return "invalid" };
        let request = match CaseRequest::from_avro(value) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "case request undecodable: skipped");
                return "invalid";
            }
        };
        let trust = match self.trust() {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "trust store unreadable: case request skipped");
                return "invalid";
            }
        };
        if let Err(why) = verify_request(&trust, &request, now, self.settings.signing_skew_ms) {
            tracing::warn!(reason = %why, "case request signature refused: skipped");
            return "invalid";
        }
        if request.state != self.state {
            tracing::warn!("case request for another state: skipped");
            return "invalid";
        }
        match self.store.offer(&request, now) {
            Ok(Offered::Stored) => "received",
            Ok(Offered::Known) => "known",
            Ok(Offered::OverBound) => {
                tracing::warn!(
                    max = self.settings.max_pending,
                    "gateway.requests.max_pending reached: case request not kept"
                );
                "over_bound"
            }
            Err(e) => {
                tracing::error!(error = %e, "case store: request not kept");
                "invalid"
            }
        }
    }

    /// Reads the requests topic until shutdown (from its start; see the module docs).
    pub fn read_loop(self: Arc<Self>, shutdown: Arc<AtomicBool>) {
        let _span = tracing::info_span!("gateway", stage = "requests").entered();
        let topic = self.topics.requests(&self.state);
        let mut backoff = Duration::from_millis(500);
        while !shutdown.load(Ordering::Relaxed) {
            let reader = match ewn_kafka::reader::AssignedReader::new(
                &self.kafka,
                "gateway-requests",
                "case requests",
                |t| t == topic,
                ewn_kafka::reader::StartAt::Beginning,
            ) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the requests topic yet; retrying");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    continue;
                }
            };
            while !shutdown.load(Ordering::Relaxed) {
                match reader.poll(Duration::from_millis(200), |r| self.take(r.value)) {
                    Ok(Some(outcome)) => {
                        self.metrics
                            .case_requests
                            .with_label_values(&[outcome])
                            .inc();
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "reading case requests"),
                }
            }
        }
    }

    /// Approves (`reason` None) or declines a pending request, as operator `operator`.
    pub async fn decide(
        &self,
        request_id: &str,
        operator: &str,
        decline: Option<String>,
    ) -> std::result::Result<CaseResponse, Refusal> {
        let held = self
            .store
            .get(request_id)
            .map_err(|e| Refusal::Unavailable(e.to_string()))?
            .ok_or(Refusal::NotFound)?;
        if held.status != "pending" {
            return Err(Refusal::Decided(held.status));
        }
        let request = held.request;
        let now = (self.clock)();
        let mut response = CaseResponse {
            request_id: request.request_id.clone(),
            state: self.state.clone(),
            agency: request.agency.clone(),
            decision: CaseDecision::Decline,
            recipient_key_id: None,
            encapsulated_key: None,
            ciphertext: None,
            decided_by: operator.to_string(),
            decided_at: now,
            key_id: String::new(),
            signed_at: 0,
            signature: [0; 64],
        };
        // Every desk reads <prefix>responses: the alert, the incident and the answer itself
        // are sealed to the requesting agency, a decline's reason as much as the details.
        let mut sealed = SealedAnswer {
            request_id: request.request_id.clone(),
            alert_id: request.alert_id.clone(),
            incident_id: request.incident_id.clone(),
            state: self.state.clone(),
            decision: CaseDecision::Decline.as_str().to_string(),
            reason: decline.clone(),
            details: None,
        };
        let trust = self.trust().map_err(Refusal::Unavailable)?;
        let key = trust.agency_key_for(&request.agency, now);
        if decline.is_none() {
            let details = self
                .store
                .details(&request.incident_id)
                .map_err(|e| Refusal::Unavailable(e.to_string()))?
                .ok_or_else(|| {
                    Refusal::Conflict(
                        "the raw details of this incident are no longer held (erased \
                         after gateway.details.retention_secs, or never signed here): \
                         decline it"
                            .into(),
                    )
                })?;
            if key.is_none() {
                return Err(Refusal::Conflict(format!(
                    "the trust store holds no valid key of role agency for {}: add one \
                     (ewn trust add --role agency) or decline",
                    printable(&request.agency)
                )));
            }
            response.decision = CaseDecision::Approve;
            sealed.decision = CaseDecision::Approve.as_str().to_string();
            sealed.details = Some(String::from_utf8_lossy(&details).into_owned());
        }
        // A decline to an agency without a key still tells it "declined", with no reason:
        // the reason is never sent in clear (the operator's answer says so).
        if let Some(key) = key {
            let (enc, ct) = sealed
                .seal(&key.public_key, &key.key_id)
                .map_err(Refusal::Conflict)?;
            response.recipient_key_id = Some(key.key_id.clone());
            response.encapsulated_key = Some(enc);
            response.ciphertext = Some(ct);
        }
        drop(sealed);
        let approved = decline.is_none();
        if !self
            .store
            .decide(request_id, approved, now)
            .map_err(|e| Refusal::Unavailable(e.to_string()))?
        {
            return Err(Refusal::Decided("decided meanwhile".into()));
        }
        let sent = self.send(&request, &response, operator, now).await;
        match sent {
            Ok(signed) => {
                let outcome = if approved { "approved" } else { "declined" };
                self.metrics
                    .case_requests
                    .with_label_values(&[outcome])
                    .inc();
                Ok(signed)
            }
            Err(why) => {
                let _ = self.store.reopen(request_id);
                self.metrics
                    .case_requests
                    .with_label_values(&["failed"])
                    .inc();
                Err(Refusal::Unavailable(why))
            }
        }
    }

    async fn send(
        &self,
        request: &CaseRequest,
        response: &CaseResponse,
        operator: &str,
        now: i64,
    ) -> std::result::Result<CaseResponse, String> {
        let signed = self
            .signer
            .with(|s| sign_response(s, response.clone(), now))
            .map_err(|e| e.to_string())?;
        let value = signed.to_avro().map_err(|e| e.to_string())?;
        let approved = signed.decision == CaseDecision::Approve;
        let record = AuditRecord {
            record_id: random_id(),
            service: String::new(),
            instance_id: self.instance.clone(),
            actor: operator.to_string(),
            action: if approved {
                "case_approved"
            } else {
                "case_declined"
            }
            .to_string(),
            // The request id, never the alert's or the incident's: the audit log is read by
            // overseers of any clearance; `ewn audit alert` links requests to their alert.
            object: request.request_id.clone(),
            at: now,
            before_sha256: Some(hex::encode(Sha256::digest(
                request.to_avro().map_err(|e| e.to_string())?,
            ))),
            after_sha256: Some(hex::encode(Sha256::digest(&value))),
            detail: Some(format!(
                "request {} state {} agency {}",
                request.request_id, self.state, request.agency
            )),
            key_id: String::new(),
            signed_at: 0,
            signature: [0; 64],
        };
        let audit = sign_record(&self.audit, record, now)
            .and_then(|r| Ok(r.to_avro()?))
            .map_err(|e| e.to_string())?;
        let key = signed.request_id.as_bytes();
        let reply = self
            .producer
            .send_async(&self.topics.responses(), Some(key), Some(&value))
            .await
            .map_err(|e| e.to_string())?;
        let logged = self
            .producer
            .send_async(
                &self.topics.audit(),
                Some(request.request_id.as_bytes()),
                Some(&audit),
            )
            .await
            .map_err(|e| e.to_string())?;
        reply.await.map_err(|e| format!("the reply: {e}"))?;
        logged.await.map_err(|e| format!("its audit record: {e}"))?;
        Ok(signed)
    }
}

fn random_id() -> String {
    use rand_core::RngCore;
    let mut b = [0u8; 16];
    rand_core::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

/// The request as operators see it: never the details, only what was asked and by whom.
pub fn request_json(r: &StoredRequest) -> serde_json::Value {
    let q = &r.request;
    json!({
        "request_id": q.request_id,
        "alert_id": q.alert_id,
        "incident_id": q.incident_id,
        "agency": q.agency,
        "subscription_id": q.subscription_id,
        "requester": q.requester,
        "justification": q.justification,
        "legal_basis": q.legal_basis,
        "requested_at": rfc3339(q.requested_at),
        "received_at": rfc3339(r.received_ms),
        "status": r.status,
        "decided_at": r.decided_ms.map(rfc3339),
    })
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

pub fn router(desk: Arc<CaseDesk>) -> Router {
    Router::new()
        .route("/api/v1/requests", get(list))
        .route("/api/v1/requests/{id}/approve", post(approve))
        .route("/api/v1/requests/{id}/decline", post(decline))
        .with_state(desk)
}

fn answer(status: StatusCode, body: serde_json::Value) -> Response {
    (status, axum::Json(body)).into_response()
}

fn operator(desk: &CaseDesk, headers: &HeaderMap) -> std::result::Result<String, Response> {
    ewn_ops::tokens::bearer(headers)
        .and_then(|t| desk.operators.check(t))
        .ok_or_else(|| {
            (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                axum::Json(json!({"error": "unauthorized", "reason": "an operator's bearer token (gateway.requests.operators_file) is required"})),
            )
                .into_response()
        })
}

#[derive(Deserialize)]
struct ListQuery {
    #[serde(default)]
    all: bool,
}

async fn list(
    State(desk): State<Arc<CaseDesk>>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Response {
    if let Err(r) = operator(&desk, &headers) {
        return r;
    }
    let store = desk.store.clone();
    match tokio::task::spawn_blocking(move || store.list(!q.all, 1000)).await {
        Ok(Ok(rows)) => answer(
            StatusCode::OK,
            json!({"requests": rows.iter().map(request_json).collect::<Vec<_>>()}),
        ),
        _ => answer(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": "store", "reason": "the case store could not be read"}),
        ),
    }
}

fn refusal(r: Refusal) -> Response {
    match r {
        Refusal::NotFound => answer(
            StatusCode::NOT_FOUND,
            json!({"error": "not_found", "reason": "no such request"}),
        ),
        Refusal::Decided(status) => answer(
            StatusCode::CONFLICT,
            json!({"error": "decided", "reason": format!("the request is {status} already")}),
        ),
        Refusal::Conflict(reason) => answer(
            StatusCode::CONFLICT,
            json!({"error": "cannot_approve", "reason": reason}),
        ),
        Refusal::Unavailable(reason) => {
            tracing::error!(error = %reason, "case answer not sent; the request is pending again");
            answer(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": "unavailable", "reason": "the answer could not be sent; the request is pending again"}),
            )
        }
    }
}

fn decided(response: &CaseResponse) -> Response {
    answer(
        StatusCode::OK,
        json!({
            "request_id": response.request_id,
            "decision": response.decision.as_str(),
            "recipient_key_id": response.recipient_key_id,
            // A decline to an agency the trust store holds no key of carries no reason.
            "sealed": response.ciphertext.is_some(),
            "key_id": response.key_id,
        }),
    )
}

async fn approve(
    State(desk): State<Arc<CaseDesk>>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> Response {
    let who = match operator(&desk, &headers) {
        Ok(w) => w,
        Err(r) => return r,
    };
    match desk.decide(&id, &who, None).await {
        Ok(r) => decided(&r),
        Err(e) => refusal(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeclineBody {
    reason: String,
}

async fn decline(
    State(desk): State<Arc<CaseDesk>>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
    body: axum::body::Bytes,
) -> Response {
    let who = match operator(&desk, &headers) {
        Ok(w) => w,
        Err(r) => return r,
    };
    let reason = match serde_json::from_slice::<DeclineBody>(&body) {
        Ok(b) => b.reason,
        Err(_) => {
            return answer(
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({"error": "invalid", "field": "reason", "reason": "a JSON body {\"reason\": \"...\"} (and nothing else) is required"}),
            );
        }
    };
    let reason = reason.trim().to_string();
    if reason.is_empty()
        || reason.len() > desk.settings.max_reason_bytes
        || reason.chars().any(char::is_control)
    {
        return answer(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"error": "invalid", "field": "reason", "reason": format!("1..{} bytes of printable text", desk.settings.max_reason_bytes)}),
        );
    }
    match desk.decide(&id, &who, Some(reason)).await {
        Ok(r) => decided(&r),
        Err(e) => refusal(e),
    }
}
