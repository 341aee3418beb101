//! The oversight role's read-only API: who received which alert, when, in which form and at
//! which TLP, who acknowledged it, which escalations it caused, and the audit log of
//! administrative acts. For an overseer (a token of role `oversight`), never alert content
//! above its own clearance.
//!
//! - `GET /api/v1/oversight/receipts?alert=ID` (the alert's episode) or `?since=RFC3339`,
//!   with `after=CURSOR` and `limit=N`: delivery receipts (escalations are receipts with
//!   `escalation_step > 0`) and acknowledgements, and for each alert they name what the
//!   overseer may know of it.
//! - `GET /api/v1/oversight/audit?since=RFC3339&actor=NAME&after=CURSOR&limit=N`: the
//!   records of `<prefix>audit`, each with its signature and Avro bytes, to check with
//!   `ewn audit log --verify` or independently.
//!
//! **Clearance.** An alert whose episode (the union of its messages' markings, as the alert
//! index knows it) is at or below the token's clearance is shown with its content, marked
//! as its episode is up to it (the same view a cleared desk gets). Any other alert is
//! metadata only: its id, episode, creation time, TLP, whether it was acknowledged or
//! cancelled, and its recipients (the receipts); never rule, reasons, key, states, areas,
//! incidents or evidence, nor the notes of its acknowledgements. An oversight token holds at
//! most AMBER (`auth::OVERSIGHT_MAX_CLEARANCE`): AMBER+STRICT and RED content goes only to
//! the agencies an alert names. An alert the index does not hold (forgotten at its bound,
//! or older than its rebuild) is metadata only too, since its marking is not known here.
//!
//! **Who may call.** Only oversight tokens: an admin or desk token gets 403. Separation of
//! duties: the operator who manages subscriptions is the one oversight checks, and an
//! overseer's reads are then attributable to overseers alone in the audit log. Oversight
//! tokens change nothing: every endpoint that does (subscriptions, acknowledgements, CAP
//! acks) takes an admin or desk token and answers them 403, and the console refuses them.
//!
//! **Every read is logged.** A read is answered only once its own `oversight_read` record
//! (actor: the token's name; object: the alert asked about, or the endpoint; detail: the
//! query and what it returned; `after_sha256`: the SHA-256 of the exact body returned) is
//! confirmed by the broker on `<prefix>audit`. A fan-out without an audit log
//! (`fanout.audit.signing_key_file`) answers 503, as does one whose audit queue is at its
//! bound or whose record the broker did not confirm: nothing is shown unlogged.
//!
//! **Read on demand, not indexed.** The topics are read for each request, from a cursor of
//! offsets (`after`), from a time (`since`, by the broker's offsets-for-times), or for an
//! alert from an hour before its creation as the index knows it; pages are bounded by
//! `fanout.oversight.max_page` and each read by `fanout.oversight.read_timeout_ms` (a page
//! cut there says so and carries its cursor). Chosen over an in-memory index of receipts
//! because oversight asks about the past: an index would hold only what fits its bound and
//! only what this instance read since its start, so its answers would depend on the
//! instance and the day; the topics hold the whole retained history, the same on every
//! instance. The price is latency (a consumer per read, a second or so on Tansu) and broker
//! load, bounded by `fanout.oversight.max_concurrent_reads` (past it 429).

// Handlers return their error as the response itself, the axum idiom.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ewn_kafka::{AssignedReader, StartAt};
use ewn_model::{Ack, AuditRecord, AvroRecord, DeliveryReceipt, Tlp};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::api::{error, unauthorized};
use crate::auth::{self, Principal};
use crate::render::{AlertJson, rfc3339};
use crate::service::{Core, now_ms};

/// How far before an alert's creation its receipts are looked for (clocks of the processor
/// and the fan-out may differ; a receipt is never written before its alert).
const ALERT_LOOKBACK_MS: i64 = 3_600_000;

pub(crate) struct Oversight {
    core: Arc<Core>,
    reads: Arc<Semaphore>,
}

pub(crate) fn router(core: Arc<Core>) -> Router {
    let max = core.config.fanout.oversight.max_concurrent_reads.max(1);
    core.metrics.oversight_in_flight_bound.set(max as i64);
    let o = Arc::new(Oversight {
        core,
        reads: Arc::new(Semaphore::new(max)),
    });
    Router::new()
        .route("/api/v1/oversight/receipts", get(receipts))
        .route("/api/v1/oversight/audit", get(audit))
        .with_state(o)
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Endpoint {
    Receipts,
    Audit,
}

impl Endpoint {
    fn label(self) -> &'static str {
        match self {
            Endpoint::Receipts => "receipts",
            Endpoint::Audit => "audit",
        }
    }

    fn params(self) -> &'static [&'static str] {
        match self {
            Endpoint::Receipts => &["alert", "since", "after", "limit"],
            Endpoint::Audit => &["since", "actor", "after", "limit"],
        }
    }
}

/// Next offset per (topic index, partition): where the following page starts.
type Cursor = BTreeMap<(usize, i32), i64>;

/// A parsed query.
#[derive(Debug, Default, PartialEq)]
struct ReadQuery {
    alert: Option<String>,
    since: Option<i64>,
    actor: Option<String>,
    after: Option<Cursor>,
    limit: usize,
}

fn parse_cursor(text: &str, topics: usize) -> Option<Cursor> {
    if text.len() > 4096 {
        return None;
    }
    let mut c = Cursor::new();
    for part in text.split(',').filter(|p| !p.is_empty()) {
        let (tp, o) = part.split_once(':')?;
        let (t, p) = tp.split_once('.')?;
        let (t, p, o): (usize, i32, i64) = (t.parse().ok()?, p.parse().ok()?, o.parse().ok()?);
        if t >= topics || p < 0 || o < 0 || c.insert((t, p), o).is_some() {
            return None;
        }
    }
    Some(c)
}

fn format_cursor(c: &Cursor) -> String {
    c.iter()
        .map(|((t, p), o)| format!("{t}.{p}:{o}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn printable_bounded(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && !s.chars().any(char::is_control)
}

/// Parses a query; the error names the parameter and never repeats its value.
fn parse_query(
    endpoint: Endpoint,
    pairs: &[(String, String)],
    max_page: usize,
) -> Result<ReadQuery, String> {
    let mut q = ReadQuery {
        limit: max_page,
        ..ReadQuery::default()
    };
    let mut seen = BTreeSet::new();
    let topics = match endpoint {
        Endpoint::Receipts => 2,
        Endpoint::Audit => 1,
    };
    for (k, v) in pairs {
        let Some(&name) = endpoint.params().iter().find(|p| **p == k) else {
            return Err(format!(
                "query: unknown parameter; this endpoint takes {}",
                endpoint.params().join(", ")
            ));
        };
        if !seen.insert(name) {
            return Err(format!("{name}: given twice"));
        }
        match name {
            "alert" => {
                if v.is_empty() || v.len() > 128 || !v.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err("alert: an alert id, printable ASCII, at most 128 bytes".into());
                }
                q.alert = Some(v.clone());
            }
            "since" => {
                let t = chrono::DateTime::parse_from_rfc3339(v)
                    .map_err(|_| "since: an RFC 3339 time, e.g. 2026-12-01T00:00:00Z")?;
                q.since = Some(t.timestamp_millis());
            }
            "actor" => {
                if !printable_bounded(v, 64) {
                    return Err("actor: 1 to 64 printable characters".into());
                }
                q.actor = Some(v.clone());
            }
            "after" => {
                q.after = Some(
                    parse_cursor(v, topics)
                        .ok_or("after: the `next` cursor of an earlier page of this endpoint")?,
                );
            }
            "limit" => match v.parse::<usize>() {
                Ok(n) if (1..=max_page).contains(&n) => q.limit = n,
                _ => {
                    return Err(format!(
                        "limit: 1 to {max_page} (fanout.oversight.max_page)"
                    ));
                }
            },
            _ => unreachable!("every parameter of params() is matched"),
        }
    }
    if endpoint == Endpoint::Receipts && q.alert.is_none() && q.since.is_none() && q.after.is_none()
    {
        return Err("query: give alert=ID, since=TIME or after=CURSOR".into());
    }
    Ok(q)
}

/// One record kept for a page.
enum Item {
    Receipt(DeliveryReceipt),
    Ack(Ack),
    Audit {
        partition: i32,
        offset: i64,
        record: AuditRecord,
        value: Vec<u8>,
    },
}

/// Why a page ended before the end of the topics.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Cut {
    Limit,
    Deadline,
}

struct Page {
    items: Vec<Item>,
    next: Cursor,
    cut: Option<Cut>,
    undecodable: usize,
}

/// Reads `topics` from the starts `start_of` gives (by topic index and partition) until
/// `limit` records are kept, the end (as it was when the read began) is reached, or the
/// deadline passes.
fn read_page(
    core: &Core,
    topics: &[String],
    start_of: impl Fn(usize, i32) -> StartAt,
    limit: usize,
    deadline: Instant,
    mut keep: impl FnMut(usize, i32, i64, &[u8]) -> Option<Item>,
    // Records whose key says they are not wanted, skipped without decoding them.
    skip_key: impl Fn(&[u8]) -> bool,
) -> ewn_kafka::Result<Page> {
    let index_of = |t: &str| topics.iter().position(|x| x == t);
    let reader = match AssignedReader::with_partition_starts(
        &core.config.kafka,
        "oversight",
        "the oversight read",
        |t| index_of(t).is_some(),
        |_| true,
        |t, p| index_of(t).map_or(StartAt::End, |i| start_of(i, p)),
    ) {
        Ok(r) => r,
        Err(ewn_kafka::Error::NoTopic(_)) => {
            return Ok(Page {
                items: Vec::new(),
                next: Cursor::new(),
                cut: None,
                undecodable: 0,
            });
        }
        Err(e) => return Err(e),
    };
    let mut next: Cursor = reader
        .starts()
        .into_iter()
        .filter_map(|(t, p, o)| Some(((index_of(&t)?, p), o)))
        .collect();
    let mut items = Vec::new();
    let mut undecodable = 0;
    let cut = loop {
        if items.len() >= limit {
            break Some(Cut::Limit);
        }
        if reader.caught_up()? {
            break None;
        }
        let now = Instant::now();
        if now >= deadline {
            break Some(Cut::Deadline);
        }
        let wait = (deadline - now).min(Duration::from_millis(100));
        reader.poll(wait, |r| {
            let Some(t) = index_of(r.topic) else { return };
            next.insert((t, r.partition), r.offset + 1);
            if r.key.is_some_and(&skip_key) {
                return;
            }
            if let Some(v) = r.value {
                match keep(t, r.partition, r.offset, v) {
                    Some(item) => items.push(item),
                    None if !decodes(t, topics.len(), v) => undecodable += 1,
                    None => {}
                }
            }
        })?;
    };
    Ok(Page {
        items,
        next,
        cut,
        undecodable,
    })
}

/// Does a value decode as its topic's record (to count those that do not)?
fn decodes(topic: usize, topics: usize, v: &[u8]) -> bool {
    match (topics, topic) {
        (2, 0) => DeliveryReceipt::from_avro(v).is_ok(),
        (2, _) => Ack::from_avro(v).is_ok(),
        _ => AuditRecord::from_avro(v).is_ok(),
    }
}

async fn receipts(
    State(o): State<Arc<Oversight>>,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    serve(o, Endpoint::Receipts, headers, pairs).await
}

async fn audit(
    State(o): State<Arc<Oversight>>,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    serve(o, Endpoint::Audit, headers, pairs).await
}

/// Lowers the in-flight gauge when a read ends, however it ends.
struct InFlight(Arc<Core>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.metrics.oversight_in_flight.dec();
    }
}

async fn serve(
    o: Arc<Oversight>,
    endpoint: Endpoint,
    headers: HeaderMap,
    pairs: Vec<(String, String)>,
) -> Response {
    let started = Instant::now();
    let core = o.core.clone();
    let (name, clearance) = match auth::authenticate(&core.tokens, &core.sessions, &headers) {
        None => return unauthorized(),
        Some((Principal::Oversight { name, clearance }, _)) => (name, clearance),
        Some(_) => return error(StatusCode::FORBIDDEN, "an oversight token is required"),
    };
    let count = |outcome: &str| {
        core.metrics
            .oversight_reads
            .with_label_values(&[endpoint.label(), outcome])
            .inc();
    };
    let settings = &core.config.fanout.oversight;
    let q = match parse_query(endpoint, &pairs, settings.max_page) {
        Ok(q) => q,
        Err(message) => {
            count("bad_request");
            return error(StatusCode::BAD_REQUEST, message);
        }
    };
    if !core.audit.enabled() {
        count("unlogged");
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "oversight reads are logged, and this fan-out writes no audit log \
             (fanout.audit.signing_key_file)",
        );
    }
    let Ok(_permit) = o.reads.clone().try_acquire_owned() else {
        count("busy");
        let mut r = error(
            StatusCode::TOO_MANY_REQUESTS,
            "too many oversight reads in progress (fanout.oversight.max_concurrent_reads); retry",
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return r;
    };
    core.metrics.oversight_in_flight.inc();
    let _in_flight = InFlight(core.clone());
    let timeout = Duration::from_millis(settings.read_timeout_ms);
    let deadline = started + timeout;

    // The alert asked about: its episode's messages and where to start reading.
    let episode = q.alert.as_deref().and_then(|id| core.index.episode_of(id));
    let wanted: Option<BTreeSet<String>> = q.alert.as_deref().map(|id| {
        core.index
            .episode_messages(id)
            .map(|ms| ms.iter().map(|m| m.to_string()).collect())
            .unwrap_or_else(|| BTreeSet::from([id.to_string()]))
    });
    let from_time = q
        .since
        .or_else(|| episode.as_ref().map(|e| e.created_at - ALERT_LOOKBACK_MS));
    let read = {
        let core = core.clone();
        let after = q.after.clone();
        let since = q.since;
        let actor = q.actor.clone();
        let limit = q.limit;
        tokio::task::spawn_blocking(move || {
            let topics = match endpoint {
                Endpoint::Receipts => vec![core.topics.deliveries(), core.topics.acks()],
                Endpoint::Audit => vec![core.topics.audit()],
            };
            let start_of = |t: usize, p: i32| match (after.as_ref(), from_time) {
                (Some(c), _) => c
                    .get(&(t, p))
                    .map_or(StartAt::Beginning, |o| StartAt::Offset(*o)),
                (None, Some(ms)) => StartAt::Time(ms),
                (None, None) => StartAt::Beginning,
            };
            let at_or_after = |at: i64| since.is_none_or(|s| at >= s);
            let of_alert = |id: &str| wanted.as_ref().is_none_or(|w| w.contains(id));
            read_page(
                &core,
                &topics,
                start_of,
                limit,
                deadline,
                |t, partition, offset, v| match (endpoint, t) {
                    (Endpoint::Receipts, 0) => DeliveryReceipt::from_avro(v)
                        .ok()
                        .filter(|r| of_alert(&r.alert_id) && at_or_after(r.completed_at))
                        .map(Item::Receipt),
                    (Endpoint::Receipts, _) => Ack::from_avro(v)
                        .ok()
                        .filter(|a| of_alert(&a.alert_id) && at_or_after(a.acked_at))
                        .map(Item::Ack),
                    (Endpoint::Audit, _) => AuditRecord::from_avro(v)
                        .ok()
                        .filter(|r| {
                            at_or_after(r.at) && actor.as_deref().is_none_or(|a| r.actor == a)
                        })
                        .map(|record| Item::Audit {
                            partition,
                            offset,
                            record,
                            value: v.to_vec(),
                        }),
                },
                // Receipts and acks are keyed by their alert id: for one episode, a record
                // keyed by another alert is not read any further.
                |key| {
                    endpoint == Endpoint::Receipts
                        && wanted
                            .as_ref()
                            .is_some_and(|w| std::str::from_utf8(key).is_ok_and(|k| !w.contains(k)))
                },
            )
        })
        .await
    };
    let page = match read {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => {
            tracing::error!(error = %e, endpoint = endpoint.label(), "oversight read failed");
            count("failed");
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the topics could not be read; retry",
            );
        }
        Err(e) => {
            tracing::error!(error = %e, "oversight read task");
            count("failed");
            return error(StatusCode::INTERNAL_SERVER_ERROR, "the read failed");
        }
    };
    let body = match endpoint {
        Endpoint::Receipts => receipts_body(&core, clearance, &page),
        Endpoint::Audit => audit_body(&page),
    };
    let text = body.to_string();
    let kept = page.items.len();

    // The read's own record, confirmed before anything is shown.
    let object = match (&q.alert, endpoint) {
        (Some(id), _) => id.clone(),
        (None, e) => e.label().to_string(),
    };
    let detail = format!(
        "{} read{}{}{}{}, limit {}: {} records{}",
        endpoint.label(),
        q.alert
            .as_ref()
            .map_or(String::new(), |_| " of the alert's episode".into()),
        q.since
            .map_or(String::new(), |s| format!(" since {}", rfc3339(s))),
        q.actor
            .as_ref()
            .map_or(String::new(), |a| format!(" of actor {a}")),
        if q.after.is_some() {
            " after a cursor"
        } else {
            ""
        },
        q.limit,
        kept,
        match page.cut {
            Some(Cut::Deadline) => ", cut at the deadline",
            Some(Cut::Limit) => ", more to read",
            None => "",
        }
    );
    let act = crate::audit::Act {
        actor: &name,
        action: "oversight_read",
        object: &object,
        at: now_ms(),
        before: None,
        after: Some(crate::audit::digest(text.as_bytes())),
        detail: Some(detail),
    };
    let confirmed = match core.audit.record_confirmed(act) {
        Some(rx) => {
            let left = deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_secs(5));
            matches!(tokio::time::timeout(left, rx).await, Ok(Ok(true)))
        }
        None => false,
    };
    if !confirmed {
        count("unlogged");
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "this read could not be logged on the audit topic, so nothing is shown; retry",
        );
    }
    count(if page.cut == Some(Cut::Deadline) {
        "deadline"
    } else {
        "served"
    });
    core.metrics
        .oversight_read_seconds
        .with_label_values(&[endpoint.label()])
        .observe(started.elapsed().as_secs_f64());
    tracing::info!(
        endpoint = endpoint.label(),
        overseer = %name,
        records = kept,
        "oversight read"
    );
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        text,
    )
        .into_response()
}

/// The page's end: its cursor, and why it stopped short of the topics' end.
fn page_end(page: &Page) -> Value {
    json!({
        "next": format_cursor(&page.next),
        "more": page.cut.is_some(),
        "cut_at_deadline": page.cut == Some(Cut::Deadline),
        "undecodable": page.undecodable,
    })
}

/// May an overseer at `clearance` see the content of an episode marked `tlp`?
pub fn oversight_cleared(clearance: Tlp, tlp: Tlp) -> bool {
    tlp <= clearance && tlp < Tlp::AmberStrict
}

fn receipts_body(core: &Core, clearance: Tlp, page: &Page) -> Value {
    let ids: BTreeSet<&str> = page
        .items
        .iter()
        .filter_map(|i| match i {
            Item::Receipt(r) => Some(r.alert_id.as_str()),
            Item::Ack(a) => Some(a.alert_id.as_str()),
            Item::Audit { .. } => None,
        })
        .collect();
    let mut cleared_ids = BTreeSet::new();
    let mut alerts = serde_json::Map::new();
    for id in ids {
        let v = match core.index.episode_of(id) {
            Some(ep) => {
                let cleared = oversight_cleared(clearance, ep.view.tlp);
                let content = if cleared {
                    cleared_ids.insert(id);
                    core.hub.find(id).and_then(|a| {
                        let view = core.index.view(&a);
                        serde_json::to_value(AlertJson::new(&view, false)).ok()
                    })
                } else {
                    None
                };
                let shown = match (cleared, &content) {
                    (false, _) => "metadata_only",
                    (true, Some(_)) => "content",
                    // Cleared, but the message is no longer in this instance's buffer
                    // (fanout.stream.buffer_alerts): `ewn audit alert` assembles it.
                    (true, None) => "content_not_held",
                };
                json!({
                    "episode_id": &*ep.episode_id,
                    "created_at": rfc3339(ep.created_at),
                    "tlp": ep.view.tlp,
                    "acknowledged_at": ep.acked_at.map(rfc3339),
                    "cancelled": ep.cancelled,
                    "shown": shown,
                    "content": content,
                })
            }
            // Not in the alert index: its marking is not known here, so nothing of it is.
            None => json!({ "shown": "metadata_only", "tlp": null, "content": null }),
        };
        alerts.insert(id.to_string(), v);
    }
    let receipts: Vec<Value> = page
        .items
        .iter()
        .filter_map(|i| match i {
            Item::Receipt(r) => Some(json!({
                "alert_id": r.alert_id,
                "subscription_id": r.subscription_id,
                "agency": r.agency,
                "channel": r.channel,
                "format": r.format,
                "outcome": r.outcome,
                "tlp": r.tlp,
                "redacted": r.redacted,
                "escalation_step": r.escalation_step,
                "attempts": r.attempts,
                "status_code": r.status_code,
                "first_attempt_at": rfc3339(r.first_attempt_at),
                "completed_at": rfc3339(r.completed_at),
            })),
            _ => None,
        })
        .collect();
    let acks: Vec<Value> = page
        .items
        .iter()
        .filter_map(|i| match i {
            Item::Ack(a) => Some(json!({
                "alert_id": a.alert_id,
                "agency": a.agency,
                "subscription_id": a.subscription_id,
                "actor": a.actor,
                "via": a.via,
                "acked_at": rfc3339(a.acked_at),
                // A desk's free text may repeat the alert: only at the overseer's clearance.
                "note": if cleared_ids.contains(a.alert_id.as_str()) { a.note.clone() } else { None },
            })),
            _ => None,
        })
        .collect();
    let mut body = json!({
        "clearance": clearance,
        "receipts": receipts,
        "acks": acks,
        "alerts": alerts,
    });
    if let (Value::Object(b), Value::Object(end)) = (&mut body, page_end(page)) {
        b.extend(end);
    }
    body
}

fn audit_body(page: &Page) -> Value {
    let mut records: Vec<(i64, Value)> = page
        .items
        .iter()
        .filter_map(|i| match i {
            Item::Audit {
                partition,
                offset,
                record: r,
                value,
            } => Some((
                r.at,
                json!({
                    "partition": partition,
                    "offset": offset,
                    "record_id": r.record_id,
                    "at": rfc3339(r.at),
                    "service": r.service,
                    "instance_id": r.instance_id,
                    "actor": r.actor,
                    "action": r.action,
                    "object": r.object,
                    "before_sha256": r.before_sha256,
                    "after_sha256": r.after_sha256,
                    "detail": r.detail,
                    "key_id": r.key_id,
                    "signed_at": rfc3339(r.signed_at),
                    "signature": B64.encode(r.signature),
                    // The record as the topic holds it, to verify independently.
                    "avro": B64.encode(value),
                }),
            )),
            _ => None,
        })
        .collect();
    records.sort_by_key(|(at, _)| *at);
    let mut body = json!({
        "records": records.into_iter().map(|(_, v)| v).collect::<Vec<_>>(),
    });
    if let (Value::Object(b), Value::Object(end)) = (&mut body, page_end(page)) {
        b.extend(end);
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(q: &[(&str, &str)]) -> Vec<(String, String)> {
        q.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn queries_are_checked_and_errors_name_the_parameter_not_its_value() {
        let ok = parse_query(
            Endpoint::Receipts,
            &pairs(&[("alert", "a1"), ("limit", "5"), ("after", "0.0:3,1.2:7")]),
            50,
        )
        .unwrap();
        assert_eq!(ok.alert.as_deref(), Some("a1"));
        assert_eq!(ok.limit, 5);
        assert_eq!(ok.after.unwrap(), Cursor::from([((0, 0), 3), ((1, 2), 7)]));
        let audit = parse_query(Endpoint::Audit, &pairs(&[]), 50).unwrap();
        assert_eq!(audit.limit, 50);
        for (endpoint, q, field) in [
            (Endpoint::Receipts, vec![], "query"),
            (Endpoint::Receipts, vec![("alert", "x y")], "alert"),
            (
                Endpoint::Receipts,
                vec![("since", "yesterday-SECRET")],
                "since",
            ),
            (
                Endpoint::Receipts,
                vec![("alert", "a"), ("limit", "51")],
                "limit",
            ),
            (
                Endpoint::Receipts,
                vec![("alert", "a"), ("limit", "0")],
                "limit",
            ),
            (Endpoint::Receipts, vec![("after", "2.0:1")], "after"),
            (Endpoint::Receipts, vec![("after", "0.0:1,0.0:2")], "after"),
            (Endpoint::Receipts, vec![("actor", "ops")], "query"),
            (Endpoint::Audit, vec![("alert", "a")], "query"),
            (Endpoint::Audit, vec![("after", "1.0:1")], "after"),
            (Endpoint::Audit, vec![("actor", "")], "actor"),
            (
                Endpoint::Audit,
                vec![
                    ("since", "2026-12-01T00:00:00Z"),
                    ("since", "2026-12-01T00:00:00Z"),
                ],
                "since",
            ),
        ] {
            let e = parse_query(endpoint, &pairs(&q), 50).unwrap_err();
            assert!(e.starts_with(&format!("{field}:")), "{q:?}: {e}");
            assert!(!e.contains("SECRET") && !e.contains("x y"), "{e}");
        }
        let c = Cursor::from([((0, 1), 9), ((1, 0), 0)]);
        assert_eq!(parse_cursor(&format_cursor(&c), 2), Some(c));
    }

    #[test]
    fn content_is_shown_only_at_or_below_the_clearance_and_never_for_strict_marks() {
        for c in [Tlp::Clear, Tlp::Green, Tlp::Amber] {
            for t in Tlp::ALL {
                assert_eq!(
                    oversight_cleared(c, *t),
                    *t <= c,
                    "clearance {c}, marking {t}"
                );
            }
        }
        assert!(!oversight_cleared(Tlp::Red, Tlp::AmberStrict));
        assert!(!oversight_cleared(Tlp::Red, Tlp::Red));
    }
}
