//! What both intake paths (HTTP and file-drop) do with a post's lines: check them exactly
//! as `ewn publish` does ([`prepare_line`]), bind them to the post, sign them with the
//! current key ([`seal`]), and hand them to the spool writer, which answers only once they
//! are synced to disk or refused whole.

use std::collections::BTreeSet;
use std::io::BufRead;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError, sync_channel};
use std::time::Duration;

use ewn_kafka::Topics;
use ewn_model::validate::Limits;
use ewn_ops::tokens::{HashedTokens, parse_hash};
use ewn_trust::BlindingKey;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::forward::Wake;
use crate::input::{InputError, Line, LineReader, MAX_LINE_BYTES, prepare_line};
use crate::metrics::GatewayMetrics;
use crate::publish::seal;
use crate::signer::ReloadingSigner;
use crate::spool::{Fate, SharedDepth, Spool, SpoolRecord, count_in};

/// Milliseconds since the Unix epoch; injected so tests can move time.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

pub fn system_clock() -> Clock {
    Arc::new(|| chrono::Utc::now().timestamp_millis())
}

/// A post id, as the tokens file and the file-drop directories name it: 1-64 characters
/// of `A-Z a-z 0-9 - _ .`, not starting with a dot.
pub fn is_post_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default)]
    tokens: Vec<TokenEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    /// Who holds the token (a terminal, a desk), for the operator's records.
    name: String,
    /// The post the token posts for.
    post_id: String,
    /// Hex SHA-256 of the token.
    sha256: String,
}

/// The posts' tokens, kept as hashes ([`ewn_ops::tokens`], as the fan-out keeps its own).
pub type PostTokens = HashedTokens<String>;

/// Reads a tokens file (refused when group or others may read it); every problem at once.
pub fn load_tokens(path: &Path) -> Result<PostTokens> {
    let text = ewn_trust::secret::read_secret(path)?;
    parse_tokens(&text).map_err(|p| {
        Error::Config(
            p.into_iter()
                .map(|e| format!("{}: {e}", path.display()))
                .collect(),
        )
    })
}

pub fn parse_tokens(text: &str) -> std::result::Result<PostTokens, Vec<String>> {
    let file: TokensFile = toml::from_str(text).map_err(|e| vec![e.to_string()])?;
    let mut problems = Vec::new();
    let mut tokens = PostTokens::default();
    for (i, t) in file.tokens.into_iter().enumerate() {
        let at = format!("tokens[{i}]");
        if t.name.trim().is_empty() {
            problems.push(format!("{at}.name: is empty"));
        }
        if !is_post_id(&t.post_id) {
            problems.push(format!(
                "{at}.post_id: 1-64 characters of A-Z a-z 0-9 - _ ."
            ));
        }
        match parse_hash(&t.sha256) {
            Some(h) => tokens.push(h, t.post_id),
            None => problems.push(format!("{at}.sha256: 64 hex digits expected")),
        }
    }
    if problems.is_empty() {
        Ok(tokens)
    } else {
        Err(problems)
    }
}

/// What became of one input line.
#[derive(Clone, Debug, Serialize)]
pub struct LineResult {
    pub line: usize,
    /// `accepted` (spooled and synced), `rejected` (invalid), or `not_accepted` (valid, but
    /// the spool refused the request: send it again later).
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incident_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<LineError>,
}

/// One problem of a line, as `ewn publish` prints it (`error`) and in parts.
#[derive(Clone, Debug, Serialize)]
pub struct LineError {
    pub field: String,
    pub message: String,
    pub error: String,
}

impl From<&InputError> for LineError {
    fn from(e: &InputError) -> Self {
        LineError {
            field: e.field.clone(),
            message: e.message.clone(),
            error: e.to_string(),
        }
    }
}

/// A request's lines, checked and signed, before the spool has them.
pub struct Prepared {
    pub results: Vec<LineResult>,
    pub records: Vec<SpoolRecord>,
}

impl Prepared {
    pub fn rejected(&self) -> usize {
        self.results
            .iter()
            .filter(|r| r.status == "rejected")
            .count()
    }

    /// Applies the spool's fates to the accepted lines, in order: a report accepted before
    /// becomes `duplicate` (already accepted, not sent again: its first signed record
    /// stands), one whose incident id another report took becomes `rejected`.
    pub fn settle(&mut self, fates: &[Fate]) {
        let accepted = self.results.iter_mut().filter(|r| r.status == "accepted");
        for (r, fate) in accepted.zip(fates) {
            match fate {
                Fate::Stored => {}
                Fate::Duplicate { .. } => r.status = "duplicate",
                Fate::Conflict { accepted_ms } => {
                    r.status = "rejected";
                    r.key_id = None;
                    let message = format!(
                        "is already the id of a different report, accepted at {}",
                        chrono::DateTime::from_timestamp_millis(*accepted_ms)
                            .map(|t| t.to_rfc3339())
                            .unwrap_or_default()
                    );
                    r.errors = vec![LineError {
                        field: "incident_id".into(),
                        error: format!("line {}: incident_id: {message}", r.line),
                        message,
                    }];
                }
            }
        }
    }

    /// Lines by status after [`Prepared::settle`]: (accepted, duplicate, rejected).
    pub fn counts(&self) -> (u64, u64, u64) {
        let n = |s: &str| self.results.iter().filter(|r| r.status == s).count() as u64;
        (n("accepted"), n("duplicate"), n("rejected"))
    }

    /// The accepted lines become `not_accepted` (the spool refused them).
    pub fn refuse(&mut self) {
        for r in &mut self.results {
            if r.status == "accepted" {
                r.status = "not_accepted";
            }
        }
    }
}

/// Checks and signs what posts send.
/// When each post last reached the gateway (a request with its token, or a dropped file),
/// by the gateway's clock: what heartbeats report as the post's last contact. A post with
/// nothing to report keeps its line alive with an empty `POST /api/v1/incidents`.
#[derive(Default)]
pub struct Contacts(std::sync::Mutex<std::collections::BTreeMap<String, i64>>);

impl Contacts {
    pub fn heard(&self, post: &str, now_ms: i64) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match m.get_mut(post) {
            Some(t) => *t = (*t).max(now_ms),
            None => {
                m.insert(post.to_string(), now_ms);
            }
        }
    }

    pub fn last(&self, post: &str) -> Option<i64> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(post)
            .copied()
    }
}

pub struct Intake {
    pub state: String,
    /// Posts' last contacts (for heartbeats); posts come from the tokens file and the drop
    /// directories, so the map is bounded by them.
    pub contacts: Arc<Contacts>,
    pub blinding: BlindingKey,
    pub limits: Limits,
    pub signer: Arc<ReloadingSigner>,
    pub topics: Topics,
    pub clock: Clock,
    /// Keep each report's raw line for the case store (`gateway.details.path` is set).
    pub keep_details: bool,
}

impl Intake {
    /// Checks, binds to `post` and signs every line of `body`. `single`: the body is one
    /// JSON incident (which may span lines) rather than JSON lines.
    pub fn prepare(&self, post: &str, body: &[u8], single: bool) -> Result<Prepared> {
        let mut out = Prepared {
            results: Vec::new(),
            records: Vec::new(),
        };
        if single {
            let line = if body.len() > MAX_LINE_BYTES {
                Line::TooLong
            } else {
                match std::str::from_utf8(body) {
                    Ok(t) => Line::Text(t),
                    Err(_) => Line::NotUtf8,
                }
            };
            self.one(post, 1, line, &mut out)?;
        } else {
            let mut reader = LineReader::new(body);
            while let Some((n, line)) = reader.next_line().map_err(Error::Input)? {
                self.one(post, n, line, &mut out)?;
            }
        }
        Ok(out)
    }

    /// Like [`Intake::prepare`], from a reader (a dropped file).
    pub fn prepare_reader(&self, post: &str, input: impl BufRead) -> Result<Prepared> {
        self.contacts.heard(post, (self.clock)());
        let mut out = Prepared {
            results: Vec::new(),
            records: Vec::new(),
        };
        let mut reader = LineReader::new(input);
        while let Some((n, line)) = reader.next_line().map_err(Error::Input)? {
            self.one(post, n, line, &mut out)?;
        }
        Ok(out)
    }

    fn one(&self, post: &str, n: usize, line: Line<'_>, out: &mut Prepared) -> Result<()> {
        let mut state = Some(self.state.clone());
        let now = (self.clock)();
        let rejected = |errors: Vec<InputError>| LineResult {
            line: n,
            status: "rejected",
            incident_id: None,
            key_id: None,
            errors: errors.iter().map(LineError::from).collect(),
        };
        let raw = match (&line, self.keep_details) {
            (Line::Text(t), true) => Some(crate::spool::RawDetails(zeroize::Zeroizing::new(
                t.trim().as_bytes().to_vec(),
            ))),
            _ => None,
        };
        let mut incident =
            match prepare_line(line, n, &self.blinding, &self.limits, now, &mut state) {
                Ok(Some(i)) => i,
                Ok(None) => return Ok(()),
                Err(errors) => {
                    out.results.push(rejected(errors));
                    return Ok(());
                }
            };
        // A token posts for one post: a report may name it or leave it to the gateway.
        match &incident.reporter.post_id {
            None => incident.reporter.post_id = Some(post.to_string()),
            Some(p) if p == post => {}
            Some(p) => {
                out.results.push(rejected(vec![InputError {
                    line: n,
                    field: "reporter.post_id".into(),
                    message: format!("is {p}, but this sender posts for {post}"),
                }]));
                return Ok(());
            }
        }
        let mut value = Vec::with_capacity(1024);
        let (key, key_id) = self.signer.with(|signer| -> Result<(Vec<u8>, String)> {
            // Signed when accepted: a spooled report stays valid however long it waits.
            let key = seal(signer, &incident, now, &mut value)?.to_vec();
            Ok((key, signer.key_id().to_string()))
        })?;
        // What makes a resend the same report: its incident id and its payload.
        let digest: [u8; 32] = {
            use ewn_model::AvroRecord;
            use sha2::Digest;
            sha2::Sha256::digest(incident.to_avro()?).into()
        };
        out.records.push(SpoolRecord {
            incident_id: incident.incident_id.clone(),
            digest,
            topic: self.topics.incidents(&incident.reporter.state),
            key,
            value,
            details: raw,
        });
        out.results.push(LineResult {
            line: n,
            status: "accepted",
            incident_id: Some(incident.incident_id),
            key_id: Some(key_id),
            errors: Vec::new(),
        });
        Ok(())
    }
}

/// The spool writer's answer to one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Appended {
    /// Synced to disk: what became of each record (a report accepted before is not
    /// stored again).
    Stored(Vec<Fate>),
    /// Past the spool's budget: nothing of the request was stored (the reason says why).
    Full(String),
    /// The spool could not be written; nothing of the request was stored.
    Failed(String),
}

struct AppendRequest {
    post: String,
    records: Vec<SpoolRecord>,
    marker: Option<(String, String)>,
    reply: tokio::sync::oneshot::Sender<Appended>,
}

/// The budget the writer holds the spool to.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    pub max_records: u64,
    pub max_bytes: u64,
}

/// Hands requests to the one thread that writes the spool.
#[derive(Clone)]
pub struct SpoolWriter {
    tx: SyncSender<AppendRequest>,
}

impl SpoolWriter {
    /// Starts the writer thread on its own connection to the spool. `group`: commit every
    /// request waiting at once in one synced transaction (up to `group_max`), rather than
    /// one transaction per request.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        spool: Spool,
        depth: SharedDepth,
        budget: Budget,
        group: bool,
        group_max: usize,
        clock: Clock,
        metrics: GatewayMetrics,
        wake: Wake,
        shutdown: Arc<AtomicBool>,
        cases: Option<Arc<crate::cases::CaseStore>>,
    ) -> Result<(SpoolWriter, std::thread::JoinHandle<()>)> {
        let (tx, rx) = sync_channel(4 * group_max.max(1));
        let handle = std::thread::Builder::new()
            .name("gateway-spool".into())
            .spawn(move || {
                write_loop(
                    spool,
                    rx,
                    depth,
                    budget,
                    if group { group_max.max(1) } else { 1 },
                    clock,
                    metrics,
                    wake,
                    shutdown,
                    cases,
                )
            })
            .map_err(|e| Error::Stopped(format!("cannot start the spool writer: {e}")))?;
        Ok((SpoolWriter { tx }, handle))
    }

    fn request(
        &self,
        post: &str,
        records: Vec<SpoolRecord>,
        marker: Option<(String, String)>,
    ) -> std::result::Result<tokio::sync::oneshot::Receiver<Appended>, Appended> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.tx
            .send(AppendRequest {
                post: post.to_string(),
                records,
                marker,
                reply,
            })
            .map_err(|_| Appended::Failed("the spool writer has stopped".into()))?;
        Ok(rx)
    }

    /// Appends `records` for `post` and waits until they are synced or refused.
    pub async fn append(&self, post: &str, records: Vec<SpoolRecord>) -> Appended {
        let tx = self.clone();
        let post = post.to_string();
        // The channel may be full for a moment (the writer is syncing): wait off the runtime.
        let rx = match tokio::task::spawn_blocking(move || tx.request(&post, records, None)).await {
            Ok(Ok(rx)) => rx,
            Ok(Err(e)) => return e,
            Err(e) => return Appended::Failed(format!("intake task: {e}")),
        };
        rx.await
            .unwrap_or_else(|_| Appended::Failed("the spool writer has stopped".into()))
    }

    /// [`SpoolWriter::append`] from a plain thread, with a file-drop marker stored in the
    /// same transaction.
    pub fn append_blocking(
        &self,
        post: &str,
        records: Vec<SpoolRecord>,
        marker: Option<(String, String)>,
    ) -> Appended {
        match self.request(post, records, marker) {
            Ok(rx) => rx
                .blocking_recv()
                .unwrap_or_else(|_| Appended::Failed("the spool writer has stopped".into())),
            Err(e) => e,
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn write_loop(
    mut spool: Spool,
    rx: Receiver<AppendRequest>,
    depth: SharedDepth,
    budget: Budget,
    group_max: usize,
    clock: Clock,
    metrics: GatewayMetrics,
    wake: Wake,
    shutdown: Arc<AtomicBool>,
    cases: Option<Arc<crate::cases::CaseStore>>,
) {
    let _span = tracing::info_span!("gateway", stage = "spool").entered();
    loop {
        // Ends when every sender is gone, or at shutdown once nothing is waiting (a
        // connection the server could not close in time must not hold the writer).
        let first = match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(r) => r,
            Err(RecvTimeoutError::Timeout) if shutdown.load(Ordering::Relaxed) => return,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let mut group = vec![first];
        while group.len() < group_max {
            match rx.try_recv() {
                Ok(r) => group.push(r),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        // The budget, judged request by request against what the spool holds now (the
        // forwarder only ever lowers it meanwhile).
        let (mut records, mut bytes) = {
            let d = depth.lock().unwrap_or_else(|p| p.into_inner());
            (d.records, d.bytes)
        };
        let mut admitted = Vec::with_capacity(group.len());
        for req in group {
            let n = req.records.len() as u64;
            let b: u64 = req.records.iter().map(SpoolRecord::bytes).sum();
            if n > 0 && (records + n > budget.max_records || bytes + b > budget.max_bytes) {
                let reason = format!(
                    "the spool is full: it holds {records} of {} reports and {bytes} of {} \
                     bytes awaiting the broker, and this request brings {n} reports of {b} \
                     bytes; none of them was accepted, nothing accepted before is lost; send \
                     them again later",
                    budget.max_records, budget.max_bytes
                );
                let _ = req.reply.send(Appended::Full(reason));
                continue;
            }
            records += n;
            bytes += b;
            admitted.push((req, n, b));
        }
        if admitted.is_empty() {
            continue;
        }
        let batches: Vec<(&str, &[SpoolRecord])> = admitted
            .iter()
            .filter(|(r, _, _)| !r.records.is_empty())
            .map(|(r, _, _)| (r.post.as_str(), r.records.as_slice()))
            .collect();
        let markers: Vec<(&str, &str)> = admitted
            .iter()
            .filter_map(|(r, _, _)| r.marker.as_ref().map(|(k, v)| (k.as_str(), v.as_str())))
            .collect();
        let result = spool.append(&batches, clock(), &markers);
        let posts: BTreeSet<String> = admitted.iter().map(|(r, _, _)| r.post.clone()).collect();
        match result {
            Ok(fates) => {
                // Fates come per batch, and only requests with records made a batch.
                let mut fates = fates.into_iter();
                let mut replies = Vec::with_capacity(admitted.len());
                for (req, _, _) in &admitted {
                    let mine = if req.records.is_empty() {
                        Vec::new()
                    } else {
                        fates.next().unwrap_or_default()
                    };
                    let (n, b) = req
                        .records
                        .iter()
                        .zip(&mine)
                        .filter(|(_, f)| **f == Fate::Stored)
                        .fold((0u64, 0u64), |(n, b), (r, _)| (n + 1, b + r.bytes()));
                    count_in(&depth, &req.post, n, b);
                    if let Some(cases) = &cases {
                        // Only what was stored now: a duplicate's details are those of its
                        // first acceptance, a conflicting report's are never kept.
                        let kept: Vec<(&str, &[u8])> = req
                            .records
                            .iter()
                            .zip(&mine)
                            .filter(|(_, f)| **f == Fate::Stored)
                            .filter_map(|(r, _)| {
                                r.details
                                    .as_ref()
                                    .map(|d| (r.incident_id.as_str(), &d.0[..]))
                            })
                            .collect();
                        if let Err(e) = cases.keep(&kept, clock()) {
                            tracing::error!(error = %e, "raw details not kept for case requests");
                        }
                    }
                    replies.push(mine);
                }
                {
                    let d = depth.lock().unwrap_or_else(|p| p.into_inner());
                    for post in &posts {
                        if let Some(pd) = d.posts.get(post) {
                            metrics.spool_depth(post, pd);
                        }
                    }
                }
                wake.wake();
                for ((req, _, _), mine) in admitted.into_iter().zip(replies) {
                    let _ = req.reply.send(Appended::Stored(mine));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "spool write failed: the requests are refused");
                for (req, _, _) in admitted {
                    let _ = req.reply.send(Appended::Failed(e.to_string()));
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn tokens_name_their_post() {
        let h = hex::encode(ewn_ops::tokens::token_hash("t1"));
        let t = parse_tokens(&format!(
            "[[tokens]]\nname = \"terminal\"\npost_id = \"KZ-KHORGOS-01\"\nsha256 = \"{h}\"\n"
        ))
        .unwrap();
        assert_eq!(t.check("t1").as_deref(), Some("KZ-KHORGOS-01"));
        assert_eq!(t.check("t2"), None);
        let bad = parse_tokens("[[tokens]]\nname = \"\"\npost_id = \"a b\"\nsha256 = \"zz\"\n")
            .unwrap_err();
        assert_eq!(bad.len(), 3, "{bad:?}");
        assert!(is_post_id("KZ-KHORGOS-01") && !is_post_id(".hidden") && !is_post_id("a/b"));
    }
}
