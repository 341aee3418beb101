//! The demo's case request, once: the coordination centre's desk (`rcc-desk`, agency RCC)
//! asks Kazakhstan for the details behind the watch-list hit one of its posts reported
//! through KZ's gateway; KZ's operator approves at the gateway; the desk opens the reply with
//! RCC's own key; and the alert's audit bundle is assembled and verified.
//!
//! The steps themselves are the `ewn requests` and `ewn audit` commands' code, which lives in
//! the binary's crate: the caller hands it in as [`CaseOps`]. This module makes what they
//! need (keys in the trust store, the operator's token: [`CaseSite`]), orders the steps,
//! holds each to a deadline, checks what each gave (the request pending at the gateway, the
//! opened details equal to the line the post sent, no failed check in the bundle), and says
//! what happened as it happens ([`Event::Case`]) and in the run's summary ([`CaseSummary`]).
//! A step that does not happen in time ends the case with [`CaseSummary::failed`] naming it;
//! the rest of the demo runs on.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ewn_kafka::KafkaSettings;
use ewn_model::MsgType;
use ewn_trust::case::AgencySecret;
use ewn_trust::{AgencyKey, AnyKey, ServiceKey, TrustStore, keys};
use serde::Serialize;
use tokio::sync::mpsc::UnboundedSender;
use zeroize::Zeroizing;

use crate::desk::DeskReceiver;
use crate::error::{Error, Result};
use crate::observer::AlertObserver;
use crate::posts::DemoGateway;
use crate::{Event, now_ms};

/// The desk that asks (one of [`crate::network::DESKS`]), and its agency.
pub const DESK: &str = "rcc-desk";
pub const AGENCY: &str = "RCC";
/// The state whose gateway holds the raw details.
pub const STATE: &str = "KZ";
/// The name of KZ's operator token: who decides.
pub const OPERATOR: &str = "kz-duty-officer";
pub const JUSTIFICATION: &str =
    "the watch-list hit at Dostyk matches a person the coordination centre is tracing";
pub const LEGAL_BASIS: &str = "Art. 7 of the regional agreement";
/// Key ids in the demo's trust store.
pub const AGENCY_KEY_ID: &str = "rcc-x25519";
pub const GATEWAY_AUDIT_KEY_ID: &str = "kz-gateway-audit";
pub const FANOUT_AUDIT_KEY_ID: &str = "fanout-audit";
pub const AUDITOR_KEY_ID: &str = "oversight-audit";

/// How long the watch-list alert may take to reach the desk once the post reported it.
pub const DELIVERED_WITHIN: Duration = Duration::from_secs(60);
/// How long each later step may take.
pub const STEP_WITHIN: Duration = Duration::from_secs(45);
const POLL: Duration = Duration::from_millis(200);

/// The steps, in order.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// KZ's post reported the watch-list hit through KZ's gateway, which kept the line.
    Reported,
    /// The processor's alert on it reached the desk.
    Delivered,
    /// The desk asked for the incident's details (`ewn requests create`).
    Requested,
    /// KZ's gateway holds the request for its operators (`ewn requests list`).
    Pending,
    /// KZ's operator approved (`ewn requests approve`).
    Approved,
    /// The desk opened the reply (`ewn requests open`).
    Opened,
    /// The alert's bundle verified (`ewn audit alert`, `ewn audit verify`).
    Verified,
}

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Reported => "reported",
            Step::Delivered => "delivered",
            Step::Requested => "requested",
            Step::Pending => "pending",
            Step::Approved => "approved",
            Step::Opened => "opened",
            Step::Verified => "verified",
        }
    }
}

/// Why the case request stopped at a step.
#[derive(Serialize, Clone, Debug)]
pub struct Failure {
    pub step: Step,
    pub why: String,
}

/// What the case request did: filled step by step (each [`Event::Case`] carries it as it
/// stands). Never the details themselves, nor a token.
#[derive(Serialize, Clone, Debug)]
pub struct CaseSummary {
    pub desk: String,
    pub agency: String,
    pub state: String,
    pub post: String,
    pub legal_basis: String,
    pub incident_id: Option<String>,
    pub alert_id: Option<String>,
    pub request_id: Option<String>,
    /// The operator who approved, as the signed reply names them.
    pub decided_by: Option<String>,
    /// The state's key that signed the reply, and the agency key it is encrypted to.
    pub signed_by: Option<String>,
    pub recipient_key_id: Option<String>,
    /// The fields of the report the reply revealed to the agency (names only).
    pub revealed_fields: Vec<String>,
    /// The opened details are byte for byte the line the post sent.
    pub details_match_report: bool,
    /// What the bundle holds (messages, incidents, receipts, ... case requests).
    pub bundle: BTreeMap<String, usize>,
    /// Passed checks of `ewn audit verify`, per check.
    pub checks: BTreeMap<String, usize>,
    pub checks_passed: usize,
    pub checks_failed: usize,
    /// The steps done, in order.
    pub done: Vec<Step>,
    pub failed: Option<Failure>,
    /// Why it did not run (the run was stopped, or too short for the post's report).
    pub skipped: Option<String>,
}

impl CaseSummary {
    fn new() -> CaseSummary {
        CaseSummary {
            desk: DESK.into(),
            agency: AGENCY.into(),
            state: STATE.into(),
            post: crate::posts::CUT_POST.into(),
            legal_basis: LEGAL_BASIS.into(),
            incident_id: None,
            alert_id: None,
            request_id: None,
            decided_by: None,
            signed_by: None,
            recipient_key_id: None,
            revealed_fields: Vec::new(),
            details_match_report: false,
            bundle: BTreeMap::new(),
            checks: BTreeMap::new(),
            checks_passed: 0,
            checks_failed: 0,
            done: Vec::new(),
            failed: None,
            skipped: None,
        }
    }

    /// Every step done, none failed.
    pub fn complete(&self) -> bool {
        self.failed.is_none() && self.done.last() == Some(&Step::Verified)
    }
}

/// The keys and files of the case request, made before the services start: RCC's X25519
/// key (its public half trusted for agency RCC), the audit keys of KZ's gateway, the
/// fan-out and the assembling service (role `service`), and KZ's operator token.
pub struct CaseSite {
    pub trust_store: PathBuf,
    /// RCC's X25519 secret key (mode 0600).
    pub agency_key: PathBuf,
    /// PKCS#8 PEM with its `key_id = ` line first, as the gateway reads it.
    pub gateway_audit_key: PathBuf,
    pub fanout_audit_key: PathBuf,
    pub auditor_key: PathBuf,
    /// KZ's operators (`[[tokens]]` of name and SHA-256), mode 0600.
    pub operators_file: PathBuf,
    /// Where KZ's gateway keeps the raw details.
    pub details: PathBuf,
    operator_token: Zeroizing<String>,
}

fn random_token() -> Zeroizing<String> {
    let mut raw = Zeroizing::new([0u8; 24]);
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut raw[..]);
    Zeroizing::new(hex::encode(&raw[..]))
}

/// Valid from an hour ago for 30 days.
fn validity() -> (i64, i64) {
    let now = now_ms();
    (now - 3_600_000, now + 30 * 86_400_000)
}

/// A new service key of `service`, trusted in `store`; written as PKCS#8 PEM, with the
/// key id first when `with_id` (the gateway's form).
fn service_key(
    store: &Path,
    path: &Path,
    key_id: &str,
    service: &str,
    with_id: bool,
) -> Result<()> {
    let key = keys::generate();
    keys::save_signing_key(path, &key)?;
    if with_id {
        let pem = ewn_trust::secret::read_secret(path)?;
        std::fs::remove_file(path).map_err(|e| Error::Io("the gateway's audit key", e))?;
        ewn_trust::secret::write_secret(path, &format!("key_id = {key_id}\n{}", pem.as_str()))?;
    }
    let (not_before, not_after) = validity();
    TrustStore::append_service_to_file(
        store,
        &ServiceKey {
            key_id: key_id.into(),
            service: service.into(),
            public_key: ewn_trust::PublicKey::from(&key),
            not_before,
            not_after,
            revoked_at: None,
        },
    )?;
    Ok(())
}

impl CaseSite {
    /// Makes the keys in `work/case` and enters their public halves in `trust_store`.
    pub fn enroll(work: &Path, trust_store: &Path) -> Result<CaseSite> {
        let dir = work.join("case");
        std::fs::create_dir_all(&dir).map_err(|e| Error::Io("the case directory", e))?;
        let site = CaseSite {
            trust_store: trust_store.to_path_buf(),
            agency_key: dir.join("rcc-x25519.key"),
            gateway_audit_key: dir.join("kz-gateway-audit.pem"),
            fanout_audit_key: dir.join("fanout-audit.pem"),
            auditor_key: dir.join("oversight-audit.pem"),
            operators_file: dir.join("kz-operators.toml"),
            details: dir.join("kz-details.db"),
            operator_token: random_token(),
        };
        let agency = AgencySecret::generate();
        agency.save(&site.agency_key)?;
        let (not_before, not_after) = validity();
        TrustStore::append_any_to_file(
            trust_store,
            &AnyKey::Agency(AgencyKey {
                key_id: AGENCY_KEY_ID.into(),
                agency: AGENCY.into(),
                public_key: agency.public_key(),
                not_before,
                not_after,
                revoked_at: None,
            }),
        )?;
        service_key(
            trust_store,
            &site.gateway_audit_key,
            GATEWAY_AUDIT_KEY_ID,
            "gateway",
            true,
        )?;
        service_key(
            trust_store,
            &site.fanout_audit_key,
            FANOUT_AUDIT_KEY_ID,
            "fanout",
            false,
        )?;
        service_key(
            trust_store,
            &site.auditor_key,
            AUDITOR_KEY_ID,
            "audit",
            false,
        )?;
        let hash = hex::encode(ewn_ops::tokens::token_hash(&site.operator_token));
        ewn_trust::secret::write_secret(
            &site.operators_file,
            &format!("[[tokens]]\nname = \"{OPERATOR}\"\nsha256 = \"{hash}\"\n"),
        )?;
        Ok(site)
    }
}

/// What the steps are given.
pub struct CaseDesk {
    pub kafka: KafkaSettings,
    /// The fan-out's API, where the desk asks.
    pub fanout_url: String,
    pub desk_token: Zeroizing<String>,
    /// KZ's gateway, where its operator decides.
    pub gateway_url: String,
    pub operator_token: Zeroizing<String>,
    pub agency_key: PathBuf,
    pub trust_store: PathBuf,
    /// The assembling service's key (service `audit`) and its id.
    pub auditor_key: PathBuf,
    pub auditor_key_id: String,
    pub alert_id: String,
    pub incident_id: String,
    pub justification: String,
    pub legal_basis: String,
}

/// An approval as the gateway answered it.
pub struct Approved {
    /// The state's key that signed the reply.
    pub signed_by: String,
    /// The agency key the details are encrypted to.
    pub recipient_key_id: String,
}

/// A reply as the agency opened it.
pub struct Opened {
    pub decision: String,
    pub decided_by: String,
    pub signed_by: String,
    /// The raw details: what the gateway kept of the post's line.
    pub details: Zeroizing<String>,
}

/// `ewn audit verify`'s verdict on the alert's bundle.
pub struct Verdict {
    /// What the bundle holds, by section.
    pub bundle: BTreeMap<String, usize>,
    /// Per check: (passed, failed).
    pub checks: BTreeMap<String, (usize, usize)>,
    /// Each failed check: `check what: detail`.
    pub failures: Vec<String>,
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
/// A step's outcome: its error says why, in words.
pub type StepResult<T> = std::result::Result<T, String>;

/// The steps, as the `ewn` commands perform them.
pub trait CaseOps: Send + Sync {
    /// As the desk (`ewn requests create`): the request id.
    fn request<'a>(&'a self, desk: &'a CaseDesk) -> BoxFuture<'a, StepResult<String>>;
    /// As KZ's operator (`ewn requests list`): whether the request is pending.
    fn pending<'a>(
        &'a self,
        desk: &'a CaseDesk,
        request: &'a str,
    ) -> BoxFuture<'a, StepResult<bool>>;
    /// As KZ's operator (`ewn requests approve`).
    fn approve<'a>(
        &'a self,
        desk: &'a CaseDesk,
        request: &'a str,
    ) -> BoxFuture<'a, StepResult<Approved>>;
    /// As the agency (`ewn requests open`), waiting for the reply on the topic.
    fn open<'a>(
        &'a self,
        desk: &'a CaseDesk,
        request: &'a str,
    ) -> BoxFuture<'a, StepResult<Opened>>;
    /// As an overseer (`ewn audit alert`, then `ewn audit verify`).
    fn verify_bundle<'a>(&'a self, desk: &'a CaseDesk) -> BoxFuture<'a, StepResult<Verdict>>;
}

/// What the case watches while the network runs.
pub(crate) struct Watch<'a> {
    pub kafka: &'a KafkaSettings,
    pub fanout_url: String,
    pub desk_token: Zeroizing<String>,
    pub gateway: &'a DemoGateway,
    pub observer: &'a AlertObserver,
    pub receiver: &'a DeskReceiver,
    /// Set when the posts have stopped reporting.
    pub posts_done: &'a AtomicBool,
    pub stop: &'a AtomicBool,
    pub events: &'a UnboundedSender<Event>,
}

/// How a step ended, short of success.
enum Halt {
    Failed(Step, String),
    Stopped,
}

async fn within<T>(
    step: Step,
    limit: Duration,
    stop: &AtomicBool,
    f: impl Future<Output = StepResult<T>>,
) -> std::result::Result<T, Halt> {
    let stopped = async {
        while !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(POLL).await;
        }
    };
    tokio::select! {
        r = f => r.map_err(|why| Halt::Failed(step, why)),
        () = tokio::time::sleep(limit) => Err(Halt::Failed(step, format!(
            "it did not happen within {limit:?}"))),
        () = stopped => Err(Halt::Stopped),
    }
}

/// Polls `found` until it gives a value, within `limit`.
async fn poll_until<T>(
    step: Step,
    limit: Duration,
    stop: &AtomicBool,
    mut found: impl FnMut() -> Option<T>,
) -> std::result::Result<T, Halt> {
    within(step, limit, stop, async {
        loop {
            if let Some(v) = found() {
                return Ok(v);
            }
            tokio::time::sleep(POLL).await;
        }
    })
    .await
}

/// Runs the case request; says each step as it is done.
pub(crate) async fn run(ops: &dyn CaseOps, site: &CaseSite, w: Watch<'_>) -> CaseSummary {
    let mut summary = CaseSummary::new();
    match steps(ops, site, &w, &mut summary).await {
        Ok(()) => {}
        Err(Halt::Stopped) => summary.skipped = Some("the run was stopped".into()),
        Err(Halt::Failed(step, why)) => {
            summary.failed = Some(Failure { step, why });
            let _ = w.events.send(Event::Case(Box::new(summary.clone())));
        }
    }
    summary
}

async fn steps(
    ops: &dyn CaseOps,
    site: &CaseSite,
    w: &Watch<'_>,
    s: &mut CaseSummary,
) -> std::result::Result<(), Halt> {
    let done = |s: &mut CaseSummary, step: Step| {
        s.done.push(step);
        let _ = w.events.send(Event::Case(Box::new(s.clone())));
    };
    // The post reports the hit during the run; a run too short for it has no case.
    let hit = loop {
        if let Some(hit) = w.gateway.watchlist_hit() {
            break hit;
        }
        if w.stop.load(Ordering::Relaxed) {
            return Err(Halt::Stopped);
        }
        if w.posts_done.load(Ordering::Relaxed) {
            s.skipped = Some("the run ended before the post reported its watch-list hit".into());
            return Ok(());
        }
        tokio::time::sleep(POLL).await;
    };
    s.incident_id = Some(hit.incident_id.clone());
    done(s, Step::Reported);

    let alert_id = poll_until(Step::Delivered, DELIVERED_WITHIN, w.stop, || {
        let alert =
            w.observer.alerts().into_iter().find(|a| {
                a.msg_type == MsgType::Alert && a.incident_ids.contains(&hit.incident_id)
            })?;
        let received = w.receiver.received();
        let verified = received
            .get(&alert.alert_id)
            .and_then(|m| m.get(DESK))
            .copied()?;
        verified.then_some(alert.alert_id)
    })
    .await?;
    s.alert_id = Some(alert_id.clone());
    done(s, Step::Delivered);

    let desk = CaseDesk {
        kafka: w.kafka.clone(),
        fanout_url: w.fanout_url.clone(),
        desk_token: w.desk_token.clone(),
        gateway_url: format!("http://{}", w.gateway.addr),
        operator_token: site.operator_token.clone(),
        agency_key: site.agency_key.clone(),
        trust_store: site.trust_store.clone(),
        auditor_key: site.auditor_key.clone(),
        auditor_key_id: AUDITOR_KEY_ID.into(),
        alert_id,
        incident_id: hit.incident_id.clone(),
        justification: JUSTIFICATION.into(),
        legal_basis: LEGAL_BASIS.into(),
    };
    let request = within(Step::Requested, STEP_WITHIN, w.stop, ops.request(&desk)).await?;
    s.request_id = Some(request.clone());
    done(s, Step::Requested);

    // The gateway reads the request from its topic; the operator sees it in the list.
    within(Step::Pending, STEP_WITHIN, w.stop, async {
        while !ops.pending(&desk, &request).await? {
            tokio::time::sleep(POLL).await;
        }
        Ok(())
    })
    .await?;
    done(s, Step::Pending);

    let approved = within(
        Step::Approved,
        STEP_WITHIN,
        w.stop,
        ops.approve(&desk, &request),
    )
    .await?;
    s.signed_by = Some(approved.signed_by);
    s.recipient_key_id = Some(approved.recipient_key_id);
    done(s, Step::Approved);

    let opened = within(Step::Opened, STEP_WITHIN, w.stop, ops.open(&desk, &request)).await?;
    if opened.decision != "APPROVE" {
        return Err(Halt::Failed(
            Step::Opened,
            format!("the reply says {}, not APPROVE", opened.decision),
        ));
    }
    s.decided_by = Some(opened.decided_by);
    s.signed_by = Some(opened.signed_by);
    s.details_match_report = opened.details.as_str() == hit.line.as_str();
    if !s.details_match_report {
        return Err(Halt::Failed(
            Step::Opened,
            "the opened details are not the line the post sent".into(),
        ));
    }
    s.revealed_fields = serde_json::from_str::<serde_json::Value>(&opened.details)
        .ok()
        .and_then(|v| v.as_object().map(|o| o.keys().cloned().collect()))
        .unwrap_or_default();
    done(s, Step::Opened);

    let verdict = within(
        Step::Verified,
        STEP_WITHIN,
        w.stop,
        ops.verify_bundle(&desk),
    )
    .await?;
    s.bundle = verdict.bundle;
    s.checks = verdict
        .checks
        .iter()
        .map(|(k, (passed, _))| (k.clone(), *passed))
        .collect();
    s.checks_passed = verdict.checks.values().map(|(p, _)| p).sum();
    s.checks_failed = verdict.checks.values().map(|(_, f)| f).sum();
    if s.checks_passed == 0 || s.checks_failed > 0 || !verdict.failures.is_empty() {
        return Err(Halt::Failed(
            Step::Verified,
            format!(
                "{} checks passed, {} failed: {}",
                s.checks_passed,
                s.checks_failed,
                verdict.failures.join("; ")
            ),
        ));
    }
    done(s, Step::Verified);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_step_past_its_deadline_fails_naming_the_step() {
        let stop = AtomicBool::new(false);
        let never = std::future::pending::<StepResult<()>>();
        match within(Step::Approved, Duration::from_millis(50), &stop, never).await {
            Err(Halt::Failed(step, why)) => {
                assert_eq!(step, Step::Approved);
                assert_eq!(why, "it did not happen within 50ms");
            }
            _ => panic!("a step that never ends must fail"),
        }
    }

    #[tokio::test]
    async fn a_failed_step_keeps_its_reason_and_a_stopped_run_is_no_failure() {
        let stop = AtomicBool::new(false);
        let refused = async { Err::<(), _>("refused: 409: no longer held".to_string()) };
        match within(Step::Approved, STEP_WITHIN, &stop, refused).await {
            Err(Halt::Failed(Step::Approved, why)) => assert!(why.contains("409"), "{why}"),
            _ => panic!("the step's own error"),
        }
        stop.store(true, Ordering::Relaxed);
        let never = std::future::pending::<StepResult<()>>();
        assert!(matches!(
            within(Step::Opened, STEP_WITHIN, &stop, never).await,
            Err(Halt::Stopped)
        ));
    }

    #[test]
    fn complete_means_every_step_and_no_failure() {
        let mut s = CaseSummary::new();
        assert!(!s.complete());
        s.done = vec![
            Step::Reported,
            Step::Delivered,
            Step::Requested,
            Step::Pending,
            Step::Approved,
            Step::Opened,
            Step::Verified,
        ];
        assert!(s.complete());
        s.failed = Some(Failure {
            step: Step::Verified,
            why: "x".into(),
        });
        assert!(!s.complete());
    }
}
