//! The fan-out's HTTP API: subscriptions (admin), acknowledgements and the live stream
//! (desks), the desk console, and the oversight role's read-only endpoints (`oversight.rs`).
//!
//! Every endpoint that reveals or changes data is authenticated (bearer token, or the
//! console's session cookie). A cookie-authenticated request that changes something must
//! be `Content-Type: application/json`, which a cross-site form cannot send without a CORS
//! preflight this server never grants; the cookie is also `SameSite=Strict`.

// Handlers return their error as the response itself, the axum idiom; its size is
// irrelevant next to a network round trip.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ewn_model::{Ack, AckVia, Subscription};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use crate::auth::{self, Principal, Via};
use crate::policy::{self, Decision};
use crate::render::AlertJson;
use crate::service::{Core, now_ms};
use crate::settings::{SubscriptionConfig, SubscriptionView, is_name};
use crate::stream::{HubEvent, parse_cursor};

const INDEX_HTML: &str = include_str!("console/index.html");
const APP_JS: &str = include_str!("console/app.js");
const APP_CSS: &str = include_str!("console/app.css");
const CONSOLE_CSP: &str = "default-src 'self'; connect-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

struct Api {
    core: Arc<Core>,
    /// Open stream connections per subscription.
    clients: Mutex<HashMap<String, usize>>,
}

type Shared = State<Arc<Api>>;

pub(crate) fn router(core: Arc<Core>) -> Router {
    let api = Arc::new(Api {
        core,
        clients: Mutex::new(HashMap::new()),
    });
    let core = api.core.clone();
    Router::new()
        .route("/console", get(console_index))
        .route("/console/app.js", get(console_js))
        .route("/console/app.css", get(console_css))
        .route("/api/v1/session", post(login).delete(logout))
        .route("/api/v1/me", get(me))
        .route("/api/v1/stream", get(stream))
        .route("/api/v1/alerts/{id}/ack", post(ack))
        .route("/api/v1/alerts/{id}/requests", post(case_request))
        .route("/api/v1/cap", post(cap_ack))
        .route(
            "/api/v1/subscriptions",
            get(list_subscriptions).post(create_subscription),
        )
        .route(
            "/api/v1/subscriptions/{id}",
            get(get_subscription)
                .put(put_subscription)
                .delete(delete_subscription),
        )
        .with_state(api)
        .merge(crate::oversight::router(core))
        .layer(DefaultBodyLimit::max(64 * 1024))
        .layer(axum::middleware::map_response(security_headers))
}

async fn security_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into() }))).into_response()
}

pub(crate) fn unauthorized() -> Response {
    let mut r = error(
        StatusCode::UNAUTHORIZED,
        "a valid bearer token or session is required",
    );
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
        })
}

/// The caller; for a request that changes something, a cookie caller must send JSON.
fn caller(api: &Api, headers: &HeaderMap, changes: bool) -> Result<(Principal, Via), Response> {
    let (p, via) = auth::authenticate(&api.core.tokens, &api.core.sessions, headers)
        .ok_or_else(unauthorized)?;
    if changes && via == Via::Cookie && !is_json(headers) {
        return Err(error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type: application/json required",
        ));
    }
    Ok((p, via))
}

/// A request that changes something: anything but GET and HEAD.
fn changes(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD)
}

/// Any authenticated caller (extractor).
struct Caller(Principal);

impl FromRequestParts<Arc<Api>> for Caller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, api: &Arc<Api>) -> Result<Self, Response> {
        caller(api, &parts.headers, changes(&parts.method)).map(|(p, _)| Caller(p))
    }
}

/// An admin caller (extractor): its name.
struct AdminCaller(String);

impl FromRequestParts<Arc<Api>> for AdminCaller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, api: &Arc<Api>) -> Result<Self, Response> {
        admin(api, &parts.headers, changes(&parts.method)).map(AdminCaller)
    }
}

/// A desk caller and its subscription as it stands now (extractor).
struct DeskCaller {
    name: String,
    sub: Arc<Subscription>,
    via: Via,
}

impl FromRequestParts<Arc<Api>> for DeskCaller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, api: &Arc<Api>) -> Result<Self, Response> {
        desk(api, &parts.headers, changes(&parts.method)).map(|(name, sub, via)| DeskCaller {
            name,
            sub,
            via,
        })
    }
}

fn admin(api: &Api, headers: &HeaderMap, changes: bool) -> Result<String, Response> {
    match caller(api, headers, changes)? {
        (Principal::Admin { name }, _) => Ok(name),
        _ => Err(error(StatusCode::FORBIDDEN, "an admin token is required")),
    }
}

/// A desk caller and its subscription as it stands now.
fn desk(
    api: &Api,
    headers: &HeaderMap,
    changes: bool,
) -> Result<(String, Arc<Subscription>, Via), Response> {
    match caller(api, headers, changes)? {
        (Principal::Desk { name, subscription }, via) => match api.core.subs.get(&subscription) {
            Some(s) => Ok((name, s, via)),
            None => Err(error(
                StatusCode::FORBIDDEN,
                "this desk's subscription does not exist",
            )),
        },
        _ => Err(error(StatusCode::FORBIDDEN, "a desk token is required")),
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Response> {
    parse_body(body).map_err(|message| error(StatusCode::BAD_REQUEST, message))
}

/// Decodes a JSON request body; the error names the field (`body: webhook.url: ...`). The
/// API's one parser of bodies (subscriptions, acknowledgements, log-in), which the fuzz
/// targets drive.
pub fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        format!("body: {path}: {}", e.into_inner())
    })
}

async fn console_index() -> Response {
    static_file(INDEX_HTML, "text/html; charset=utf-8")
}

async fn console_js() -> Response {
    static_file(APP_JS, "text/javascript; charset=utf-8")
}

async fn console_css() -> Response {
    static_file(APP_CSS, "text/css; charset=utf-8")
}

fn static_file(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CONSOLE_CSP),
            (header::X_FRAME_OPTIONS, "DENY"),
        ],
        body,
    )
        .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    token: String,
}

async fn login(State(api): Shared, headers: HeaderMap, body: Bytes) -> Response {
    if !is_json(&headers) {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type: application/json required",
        );
    }
    let login: Login = match parse_json(&body) {
        Ok(l) => l,
        Err(r) => return r,
    };
    match api.core.tokens.check(&login.token) {
        Some(Principal::Desk { .. }) => {
            let value = api.core.sessions.create(&login.token);
            let cookie = api.core.sessions.cookie(&value);
            (StatusCode::NO_CONTENT, [(header::SET_COOKIE, cookie)]).into_response()
        }
        Some(Principal::Admin { .. } | Principal::Oversight { .. }) => error(
            StatusCode::FORBIDDEN,
            "the console is for desks; use a desk token",
        ),
        None => unauthorized(),
    }
}

async fn logout(State(api): Shared, headers: HeaderMap) -> Response {
    if let Some(id) = auth::session_cookie(&headers) {
        api.core.sessions.remove(id);
    }
    (
        StatusCode::NO_CONTENT,
        [(
            header::SET_COOKIE,
            format!(
                "{}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0",
                auth::COOKIE
            ),
        )],
    )
        .into_response()
}

async fn me(State(api): Shared, Caller(principal): Caller) -> Response {
    match principal {
        Principal::Admin { name } => {
            axum::Json(json!({ "name": name, "role": "admin" })).into_response()
        }
        Principal::Desk { name, subscription } => {
            let sub = api.core.subs.get(&subscription);
            axum::Json(json!({
                "name": name,
                "role": "desk",
                "subscription": subscription,
                "agency": sub.as_ref().map(|s| s.agency.clone()),
                "clearance": sub.as_ref().map(|s| s.clearance),
            }))
            .into_response()
        }
        Principal::Oversight { name, clearance } => {
            axum::Json(json!({ "name": name, "role": "oversight", "clearance": clearance }))
                .into_response()
        }
    }
}

/// The body of `POST .../ack`: who acknowledged (default: the desk's name) and a note.
#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
pub struct AckBody {
    pub actor: Option<String>,
    pub note: Option<String>,
}

impl AckBody {
    /// Parses and bounds an acknowledgement body (an empty body is allowed); `desk` is the
    /// actor when the body names none. Returns the actor and the note.
    pub fn parse(body: &[u8], desk: String) -> Result<(String, Option<String>), String> {
        let body: AckBody = if body.is_empty() {
            AckBody::default()
        } else {
            parse_body(body)?
        };
        let actor = body.actor.filter(|a| !a.trim().is_empty()).unwrap_or(desk);
        if !bounded_text(&actor, 64) {
            return Err("actor: at most 64 printable characters".into());
        }
        if body.note.as_deref().is_some_and(|n| !bounded_text(n, 1000)) {
            return Err("note: at most 1000 printable characters".into());
        }
        Ok((actor, body.note))
    }
}

fn bounded_text(s: &str, max: usize) -> bool {
    s.len() <= max && !s.chars().any(|c| c.is_control() && c != '\n')
}

async fn ack(
    State(api): Shared,
    DeskCaller { name, sub, via }: DeskCaller,
    Path(alert_id): Path<String>,
    body: Bytes,
) -> Response {
    let (actor, note) = match AckBody::parse(&body, name) {
        Ok(b) => b,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    if alert_id.len() > 128 || !alert_id.bytes().all(|b| b.is_ascii_graphic()) {
        return error(
            StatusCode::BAD_REQUEST,
            "alert id: printable ASCII, at most 128 bytes",
        );
    }
    let via = match via {
        Via::Cookie => AckVia::Console,
        Via::Bearer => AckVia::Api,
    };
    match record_ack(&api, &sub, &alert_id, actor, note, via).await {
        Ok(now) => (
            StatusCode::CREATED,
            axum::Json(json!({ "alert_id": alert_id, "acked_at": crate::render::rfc3339(now) })),
        )
            .into_response(),
        Err(r) => r,
    }
}

/// A desk's case request about one incident of an alert (`requests.rs`).
async fn case_request(
    State(api): Shared,
    DeskCaller { name, sub, .. }: DeskCaller,
    Path(alert_id): Path<String>,
    body: Bytes,
) -> Response {
    crate::requests::create(&api.core, &name, &sub, &alert_id, &body).await
}

/// The episode `alert_id` belongs to, if `sub` may acknowledge it: only a recipient
/// cleared for it in full may. Anything else is "not found" (a redacted recipient knows
/// alerts by ids of its own, which name nothing here), so the answer reveals nothing about
/// alerts above its clearance. Visibility comes from the alert index, not from the live
/// stream's buffer.
fn acknowledgeable(
    api: &Api,
    sub: &Subscription,
    alert_id: &str,
) -> Result<crate::index::EpisodeState, Response> {
    if !api.core.index_ready() {
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "starting: the alert index is being rebuilt; retry",
        ));
    }
    match api.core.index.episode_of(alert_id) {
        Some(ep)
            if policy::may_acknowledge(
                sub,
                &ep.view,
                api.core.escalated_to(&ep.episode_id, &sub.id),
            ) =>
        {
            Ok(ep)
        }
        _ => Err(error(StatusCode::NOT_FOUND, "no such alert")),
    }
}

/// Records a desk's acknowledgement of one alert; returns when it was recorded.
async fn record_ack(
    api: &Api,
    sub: &Subscription,
    alert_id: &str,
    actor: String,
    note: Option<String>,
    via: AckVia,
) -> Result<i64, Response> {
    let episode = acknowledgeable(api, sub, alert_id)?;
    let now = now_ms();
    let record = Ack {
        alert_id: alert_id.to_string(),
        agency: sub.agency.clone(),
        subscription_id: Some(sub.id.clone()),
        actor,
        via,
        note,
        acked_at: now,
    };
    if let Err(e) = api.core.record_ack(&record).await {
        tracing::error!(error = %e, "ack not recorded");
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the acknowledgement could not be recorded; retry",
        ));
    }
    api.core.audit.record(crate::audit::Act {
        actor: &record.actor,
        action: "ack",
        object: alert_id,
        at: now,
        before: None,
        after: ewn_model::AvroRecord::to_avro(&record)
            .ok()
            .map(|b| crate::audit::digest(&b)),
        detail: Some(format!(
            "agency {} (subscription {}) via {}",
            record.agency,
            sub.id,
            via.as_str()
        )),
    });
    let m = &api.core.metrics;
    m.acks
        .with_label_values(&[&sub.agency, &via.as_str().to_ascii_lowercase()])
        .inc();
    m.ack_seconds
        .observe(((now - episode.created_at).max(0)) as f64 / 1000.0);
    tracing::info!(alert_id = %alert_id, agency = %sub.agency, "acknowledged");
    Ok(now)
}

/// `POST /api/v1/cap`: a CAP 1.2 `Ack` from a desk's warning system (bearer token only:
/// machine to machine). Every referenced alert is acknowledged, or none is.
async fn cap_ack(
    State(api): Shared,
    DeskCaller { name, sub, via }: DeskCaller,
    body: Bytes,
) -> Response {
    if via != Via::Bearer {
        return error(
            StatusCode::FORBIDDEN,
            "CAP acknowledgements take a bearer token",
        );
    }
    let ack = match crate::cap_ack::parse_ack(&body) {
        Ok(a) => a,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("CAP Ack: {e}")),
    };
    let note = ack.note.map(|n| n.chars().take(1000).collect::<String>());
    // Check them all first, so a bad reference acknowledges nothing.
    for id in &ack.acknowledged {
        if let Err(r) = acknowledgeable(&api, &sub, id) {
            return r;
        }
    }
    let mut done = Vec::new();
    for id in &ack.acknowledged {
        match record_ack(&api, &sub, id, name.clone(), note.clone(), AckVia::Cap).await {
            Ok(at) => done.push(json!({ "alert_id": id, "acked_at": crate::render::rfc3339(at) })),
            Err(r) => return r,
        }
    }
    (
        StatusCode::CREATED,
        axum::Json(json!({ "acknowledged": done })),
    )
        .into_response()
}

/// The SSE comment sent once the backlog (`?history=N`, or the events after a
/// `Last-Event-ID`) has been sent and live events follow.
pub const BACKLOG_END: &str = "backlog-end";

#[derive(Deserialize)]
struct StreamQuery {
    #[serde(default)]
    history: usize,
}

#[derive(Serialize)]
struct StreamAlert<'a> {
    #[serde(flatten)]
    alert: AlertJson<'a>,
    acked: bool,
}

/// Releases a stream slot when the connection ends.
struct Slot {
    api: Arc<Api>,
    subscription: String,
    agency: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.api.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = c.get_mut(&self.subscription) {
            *n = n.saturating_sub(1);
        }
        self.api
            .core
            .metrics
            .stream_clients
            .with_label_values(&[&self.agency])
            .dec();
    }
}

async fn stream(
    State(api): Shared,
    DeskCaller { sub, .. }: DeskCaller,
    headers: HeaderMap,
    Query(q): Query<StreamQuery>,
) -> Response {
    let cursor = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_cursor);
    {
        let mut c = api.clients.lock().unwrap_or_else(|p| p.into_inner());
        let n = c.entry(sub.id.clone()).or_default();
        if *n >= api.core.config.fanout.stream.max_clients_per_subscription {
            return error(
                StatusCode::TOO_MANY_REQUESTS,
                "too many stream connections for this subscription",
            );
        }
        *n += 1;
    }
    api.core
        .metrics
        .stream_clients
        .with_label_values(&[&sub.agency])
        .inc();
    let slot = Slot {
        api: api.clone(),
        subscription: sub.id.clone(),
        agency: sub.agency.clone(),
    };
    let (tx, rx) = mpsc::channel::<Result<Event, Infallible>>(64);
    let history = q.history.min(500);
    tokio::spawn(feed(api.clone(), sub.id.clone(), cursor, history, tx, slot));
    let keepalive = Duration::from_secs(api.core.config.fanout.stream.keepalive_secs.max(1));
    Sse::new(ReceiverStream::new(rx))
        .keep_alive(KeepAlive::new().interval(keepalive))
        .into_response()
}

/// The SSE event for `sub`, if it may see the alert at all: decided when it is pushed,
/// on the subscription as it stands and the episode's marking.
fn event_for(api: &Api, sub_id: &str, e: &HubEvent) -> Option<Event> {
    if e.target.as_deref().is_some_and(|t| t != sub_id) {
        return None;
    }
    let sub = api.core.subs.get(sub_id)?;
    let view = api.core.index.view(&e.alert);
    // An escalation step that named this subscription shows it the episode whatever its
    // filters; its clearance still applies.
    let decision = if api
        .core
        .escalated_to(crate::index::episode_id(&e.alert), sub_id)
    {
        policy::decide_named(&sub, &view)
    } else {
        policy::decide(&sub, &view)
    };
    let Decision::Deliver(form) = decision else {
        return None;
    };
    let (shaped, redacted) = policy::shape(&sub, &view, form, &api.core.ids);
    let data = serde_json::to_string(&StreamAlert {
        // Every configured language: the console switches between them in the page.
        alert: AlertJson::new(
            &shaped,
            redacted,
            crate::render::all_local_texts(&shaped, &api.core.catalogue),
        ),
        // Whether it was acknowledged is part of the alert: not for a redacted recipient.
        acked: !redacted && api.core.index.acked_at(&e.alert.alert_id).is_some(),
    })
    .ok()?;
    Some(
        Event::default()
            .id(e.cursor.clone())
            .event("alert")
            .data(data),
    )
}

async fn feed(
    api: Arc<Api>,
    sub_id: String,
    cursor: Option<std::collections::BTreeMap<i32, i64>>,
    history: usize,
    tx: mpsc::Sender<Result<Event, Infallible>>,
    _slot: Slot,
) {
    let hub = &api.core.hub;
    // Subscribe before reading the backlog, then skip what the backlog covered: no gap
    // and no repeat between the two.
    let mut live = hub.subscribe();
    let backlog = hub.backlog(cursor.as_ref(), history);
    if !backlog.gap.is_empty() {
        let data = json!({ "message": "some alerts since your last event are no longer held; ask the coordination centre for the missed period" }).to_string();
        if tx
            .send(Ok(Event::default().event("gap").data(data)))
            .await
            .is_err()
        {
            return;
        }
    }
    for e in &backlog.events {
        if let Some(ev) = event_for(&api, &sub_id, e)
            && tx.send(Ok(ev)).await.is_err()
        {
            return;
        }
    }
    // A comment (which EventSource and every SSE client ignore) marking the end of the
    // backlog, so a reader such as `ewn alerts list` knows it has what it asked for
    // without guessing from a quiet period. It carries nothing about any alert.
    if tx
        .send(Ok(Event::default().comment(BACKLOG_END)))
        .await
        .is_err()
    {
        return;
    }
    let mut stop = api.core.stop.clone();
    loop {
        let e = tokio::select! {
            r = live.recv() => r,
            _ = stop.changed() => return,
            _ = tx.closed() => return,
        };
        match e {
            Ok(e) if e.seq <= backlog.upto_seq => {}
            Ok(e) => {
                if let Some(ev) = event_for(&api, &sub_id, &e)
                    && tx.send(Ok(ev)).await.is_err()
                {
                    return;
                }
            }
            // Too slow a reader: end the stream; the client reconnects with its
            // Last-Event-ID and resumes from the buffer, exactly.
            Err(broadcast::error::RecvError::Lagged(_)) => return,
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

async fn list_subscriptions(State(api): Shared, _admin: AdminCaller) -> Response {
    let subs = api.core.subs.snapshot();
    let views: Vec<SubscriptionView<'_>> =
        subs.iter().map(|s| SubscriptionView::from(&**s)).collect();
    axum::Json(views).into_response()
}

async fn get_subscription(
    State(api): Shared,
    _admin: AdminCaller,
    Path(id): Path<String>,
) -> Response {
    match api.core.subs.get(&id) {
        Some(s) => axum::Json(SubscriptionView::from(&*s)).into_response(),
        None => error(StatusCode::NOT_FOUND, "no such subscription"),
    }
}

async fn create_subscription(
    State(api): Shared,
    AdminCaller(admin): AdminCaller,
    body: Bytes,
) -> Response {
    let config: SubscriptionConfig = match parse_json(&body) {
        Ok(c) => c,
        Err(r) => return r,
    };
    if api.core.subs.get(&config.id).is_some() {
        return error(
            StatusCode::CONFLICT,
            "a subscription with this id exists; use PUT to replace it",
        );
    }
    store(&api, &admin, config, StatusCode::CREATED).await
}

async fn put_subscription(
    State(api): Shared,
    AdminCaller(admin): AdminCaller,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let mut config: SubscriptionConfig = match parse_json(&body) {
        Ok(c) => c,
        Err(r) => return r,
    };
    if config.id != id {
        return error(StatusCode::BAD_REQUEST, "body id differs from the path");
    }
    let held = api.core.subs.get(&id);
    // An update that leaves the URL alone may leave the secret out: it is kept.
    if let (Some(held), Some(w)) = (&held, &mut config.webhook)
        && w.secret.is_none()
        && w.secret_file.is_none()
        && held.webhook_url.as_deref() == Some(w.url.as_str())
    {
        w.secret = held.webhook_secret.clone();
    }
    let status = if held.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    store(&api, &admin, config, status).await
}

async fn store(api: &Api, admin: &str, config: SubscriptionConfig, status: StatusCode) -> Response {
    if config
        .webhook
        .as_ref()
        .is_some_and(|w| w.secret_file.is_some())
    {
        return error(
            StatusCode::BAD_REQUEST,
            "webhook.secret_file: only the configuration file may name files; send the secret",
        );
    }
    if api.core.subs.is_full_for(&config.id) {
        return error(
            StatusCode::INSUFFICIENT_STORAGE,
            format!(
                "the fan-out holds fanout.max_subscriptions ({}) subscriptions; delete one \
                 or raise the bound",
                api.core.subs.capacity()
            ),
        );
    }
    // Every problem at once. A language this fan-out does not serve makes it a 422 (the
    // body is well formed; the fan-out cannot honour it), naming the field and the
    // languages it serves; any other problem alone stays a 400.
    let language_problems = config.language_problems("body", &api.core.config.fanout.languages);
    let refused = if language_problems.is_empty() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    let mut problems = config.problems("body", &api.core.config.fanout.webhook);
    problems.extend(language_problems);
    if !problems.is_empty() {
        return (
            refused,
            axum::Json(json!({ "error": "invalid subscription", "problems": problems })),
        )
            .into_response();
    }
    let record = match config.to_record(now_ms()) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let held = api.core.subs.get(&record.id);
    if let Err(e) = api.core.put_subscription(record.clone()).await {
        tracing::error!(error = %e, "subscription not stored");
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the subscription could not be stored; retry",
        );
    }
    tracing::info!(subscription = %record.id, admin, "subscription stored");
    api.core
        .audit_subscription(admin, held.as_deref(), Some(&record));
    (status, axum::Json(SubscriptionView::from(&record))).into_response()
}

async fn delete_subscription(
    State(api): Shared,
    AdminCaller(admin): AdminCaller,
    Path(id): Path<String>,
) -> Response {
    let Some(held) = api.core.subs.get(&id).filter(|_| is_name(&id)) else {
        return error(StatusCode::NOT_FOUND, "no such subscription");
    };
    tracing::info!(subscription = %id, admin, "subscription deleted");
    if let Err(e) = api.core.delete_subscription(&id).await {
        tracing::error!(error = %e, "subscription not deleted");
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the subscription could not be deleted; retry",
        );
    }
    api.core.audit_subscription(&admin, Some(&held), None);
    StatusCode::NO_CONTENT.into_response()
}
