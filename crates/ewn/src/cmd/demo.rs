//! `ewn demo`: the whole network on one machine (the `ewn-demo` crate runs it): a local
//! Tansu broker, five member states' border posts, KZ's gateway, the processor, the
//! fan-out with two desks of different clearance, their webhook receiver and the console.
//! This command takes the arguments, finds the Tansu binary, and prints what happens: every
//! alert as it fires and who received it, the case request about KZ's watch-list hit step
//! by step, then a summary. It leaves nothing running.
//!
//! The case request's steps are the `ewn requests` and `ewn audit` commands' own functions
//! ([`CommandSteps`]); the demo library orders them and holds each to a deadline.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use ewn_demo::case::{
    Approved, BoxFuture, CaseDesk, CaseOps, CaseSummary, Opened, Step, StepResult, Verdict,
};
use ewn_demo::network::DESKS;
use ewn_demo::{DemoConfig, Event, Network, Summary};
use ewn_fanout::policy::{self, Decision};
use ewn_model::{Alert, MsgType, Subscription};
use ewn_sim::{DEFAULT_RATE, Scenario};

use crate::cli::Global;
use crate::cmd::{audit, now_ms, requests, shutdown_flag};

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  ewn demo                                   90 s, every planted scenario
  ewn demo --duration 300 --scenarios none   background traffic only (no alert expected)
  ewn demo --summary-json out.json           the summary for scripts as well

With planted scenarios, KZ's post also reports a watch-list hit through KZ's gateway, and
the coordination centre's desk requests its details: KZ's operator approves, the desk opens
the reply, and the alert's audit bundle is verified (each step printed).

Exit codes: 0 every planted scenario alerted and the case request went through (or Ctrl-C
stopped the run); 1 a planted scenario raised no alert, or a step of the case request did
not happen in time (the step named); 2 it could not run (bad arguments, no Tansu binary, a
service that did not start; the reason printed).")]
pub struct Args {
    /// How long the simulated network runs, in seconds (Ctrl-C stops it earlier).
    #[arg(long, value_name = "SECS", default_value_t = 90)]
    pub duration: u64,
    /// Background incidents per second.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_RATE)]
    pub rate: f64,
    /// Seed of the simulated traffic.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Scenarios to plant: all, none, or a comma-separated list (see `ewn simulate`).
    #[arg(long, value_name = "LIST", default_value = "all")]
    pub scenarios: String,
    /// Also write the summary as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub summary_json: Option<PathBuf>,
    /// The Tansu 0.6.0 binary of the local broker [default: `tansu` on PATH, else
    /// ~/.cargo/bin/tansu; `make broker` installs it].
    #[arg(long, value_name = "FILE", env = "TANSU_BIN")]
    pub tansu_bin: Option<PathBuf>,
}

/// The Tansu binary: the flag (or `TANSU_BIN`), else `tansu` on `PATH`, else
/// `~/.cargo/bin/tansu` (where `make broker` installs it).
fn tansu_bin(flag: Option<PathBuf>) -> PathBuf {
    ewn_demo::broker::tansu_bin(
        flag,
        std::env::var_os("PATH").as_deref(),
        std::env::var_os("HOME").map(PathBuf::from).as_deref(),
    )
}

/// Runs the demo. Prints for people; `--summary-json` is for scripts and the test.
#[allow(clippy::print_stdout)]
pub async fn run(global: &Global, args: Args) -> anyhow::Result<ExitCode> {
    let scenarios = Scenario::parse_list(&args.scenarios)?;
    let shutdown = shutdown_flag();
    // The demo's own lines are the show; service logs only when something is wrong.
    let mut global = global.clone();
    if global.log_level.is_none() {
        // The cut uplink makes the gateway's Kafka client, and its reader of case requests,
        // warn about its broker on every retry; the demo says what happens instead.
        global.log_level = Some("warn,librdkafka=error,ewn_gateway::requests=error".into());
    }
    let settings = global.settings(Vec::new())?;
    println!("== EWN demo: a simulated regional border network on a real (local) broker");
    let (events, mut shown) = tokio::sync::mpsc::unbounded_channel();
    let network = Network::start(
        DemoConfig {
            kafka: settings.kafka,
            tansu_bin: tansu_bin(args.tansu_bin.clone()),
            duration: std::time::Duration::from_secs(args.duration),
            rate: args.rate,
            seed: args.seed,
            scenarios: scenarios.clone(),
            // Background traffic alone stays alone: no post's hit, no request.
            case_request: !scenarios.is_empty(),
        },
        shutdown,
        events,
    )
    .await
    .context("the demo network did not start")?;
    print_started(&network, &args, &scenarios);
    let desks = network.desks().to_vec();
    let printer = tokio::spawn(async move {
        while let Some(event) = shown.recv().await {
            print_event(&event, &desks);
        }
    });
    let summary = network.run(Some(&CommandSteps)).await;
    // The network has stopped: every event it sent is in; they print before the summary.
    let _ = printer.await;
    let summary = summary?;
    print_summary(&summary);
    if let Some(path) = &args.summary_json {
        std::fs::write(path, serde_json::to_vec_pretty(&summary)?)
            .with_context(|| format!("write {}", path.display()))?;
    }
    println!("== stopped: broker, processor, fan-out and receiver are down; nothing left running");
    let missed = summary
        .scenarios
        .iter()
        .filter(|s| s.alert_id.is_none())
        .count();
    let case_failed = summary.case.as_ref().and_then(|c| c.failed.as_ref());
    if let Some(f) = case_failed {
        println!(
            "== FAILED: the case request stopped at step `{}`: {}",
            f.step.as_str(),
            f.why
        );
    }
    Ok(
        if (missed == 0 && case_failed.is_none()) || summary.interrupted {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        },
    )
}

#[allow(clippy::print_stdout)]
fn print_started(network: &Network, args: &Args, scenarios: &[Scenario]) {
    let s = network.started();
    println!(
        "   broker     Tansu at {} (sqlite, {})",
        s.broker,
        s.broker_dir.display()
    );
    println!(
        "   states     {} (a signing key each, in a trust store)",
        ewn_sim::network::state_codes().join(" ")
    );
    let desks: Vec<String> = DESKS
        .iter()
        .map(|(id, agency, clearance)| format!("{id} ({agency}, cleared {})", clearance.as_str()))
        .collect();
    println!(
        "   desks      {}, by signed webhook to a local receiver",
        desks.join(" and ")
    );
    println!("   console    http://{}/console", s.fanout_api);
    for (subscription, token) in &s.tokens {
        println!("                log in as {subscription:<9} with token {token}");
    }
    println!(
        "   metrics    http://{}/metrics (processor), http://{}/metrics (fan-out)",
        s.process_admin, s.fanout_admin
    );
    println!(
        "   gateway    KZ's gateway at http://{}/api/v1/incidents for posts {} and {}",
        s.gateway,
        ewn_demo::posts::CUT_POST,
        ewn_demo::posts::QUIET_POST
    );
    let names: Vec<&str> = scenarios.iter().map(|s| s.name()).collect();
    println!(
        "== running {} s: background {} incidents/s, planted scenarios: {}",
        args.duration,
        args.rate,
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        }
    );
}

#[allow(clippy::print_stdout)]
fn print_event(event: &Event, desks: &[Subscription]) {
    match event {
        Event::Alert { alert, received } => print!("{}", describe(alert, received, desks)),
        Event::UplinkDown { post, secs } => println!(
            "   --         {post}: its gateway's uplink to the broker is down for {secs} s; the post keeps reporting"
        ),
        Event::UplinkBack { post } => {
            println!("   --         {post}: uplink back; its gateway forwards what it spooled")
        }
        Event::Case(case) => print!("{}", case_line(case)),
    }
}

/// The line of the case request's latest step (or its failure), in plain words: names and
/// ids, never a token nor the details themselves.
fn case_line(c: &CaseSummary) -> String {
    let id = |v: &Option<String>| v.clone().unwrap_or_default();
    if let Some(f) = &c.failed {
        return format!(
            "   case       FAILED at step `{}`: {}\n",
            f.step.as_str(),
            f.why
        );
    }
    let Some(step) = c.done.last() else {
        return String::new();
    };
    let list = |m: &BTreeMap<String, usize>| {
        m.iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match step {
        Step::Reported => format!(
            "== case request: {} ({}) asks {} for the details behind a watch-list hit\n   \
             reported   {} reported a watch-list hit through {}'s gateway (incident {}); the \
             gateway keeps the raw line, the network gets blinded ids\n",
            c.desk,
            c.agency,
            c.state,
            c.post,
            c.state,
            id(&c.incident_id)
        ),
        Step::Delivered => format!(
            "   delivered  alert {} on it reached {} (signature verified)\n",
            id(&c.alert_id),
            c.desk
        ),
        Step::Requested => format!(
            "   requested  {} asked {} for the details of incident {} under \"{}\": request {}\n",
            c.desk,
            c.state,
            id(&c.incident_id),
            c.legal_basis,
            id(&c.request_id)
        ),
        Step::Pending => format!(
            "   pending    {}'s gateway verified the fan-out's signature on the request and holds it for its operators\n",
            c.state
        ),
        Step::Approved => format!(
            "   approved   {}'s operator approved: the details are encrypted to {}'s key {}, the reply signed with {}'s key {}\n",
            c.state,
            c.agency,
            id(&c.recipient_key_id),
            c.state,
            id(&c.signed_by)
        ),
        Step::Opened => format!(
            "   opened     {} opened the reply with its own key (signature verified; decided by {})\n              \
             revealed to {} only: {}, raw identifier included ({} fields: {})\n",
            c.agency,
            id(&c.decided_by),
            c.agency,
            if c.details_match_report {
                format!("the line {} sent", c.post)
            } else {
                format!("NOT the line {} sent", c.post)
            },
            c.revealed_fields.len(),
            c.revealed_fields.join(", "),
        ),
        Step::Verified => format!(
            "   verified   ewn audit alert + ewn audit verify on alert {}: {} checks passed, {} failed\n              \
             bundle: {}; checks: {}\n",
            id(&c.alert_id),
            c.checks_passed,
            c.checks_failed,
            list(&c.bundle),
            list(&c.checks)
        ),
    }
}

/// The case request's steps, done by the `ewn requests` and `ewn audit` commands' code.
pub struct CommandSteps;

/// Why a service said no: its status and reason.
fn refused(status: reqwest::StatusCode, body: &serde_json::Value) -> String {
    let why = body["reason"]
        .as_str()
        .or(body["error"].as_str())
        .unwrap_or("");
    format!("refused: {status}: {why}")
}

impl CaseOps for CommandSteps {
    fn request<'a>(&'a self, d: &'a CaseDesk) -> BoxFuture<'a, StepResult<String>> {
        Box::pin(async move {
            let call = requests::create_call(
                &d.alert_id,
                &d.incident_id,
                &d.justification,
                &d.legal_basis,
            )
            .map_err(|e| format!("{e:#}"))?;
            let (status, body) = requests::send(&d.fanout_url, &d.desk_token, call)
                .await
                .map_err(|e| format!("{e:#}"))?;
            if status != reqwest::StatusCode::CREATED {
                return Err(refused(status, &body));
            }
            body["request_id"]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| "the fan-out's answer names no request_id".into())
        })
    }

    fn pending<'a>(&'a self, d: &'a CaseDesk, request: &'a str) -> BoxFuture<'a, StepResult<bool>> {
        Box::pin(async move {
            let (status, body) = requests::send(
                &d.gateway_url,
                &d.operator_token,
                requests::list_call(false),
            )
            .await
            .map_err(|e| format!("{e:#}"))?;
            if !status.is_success() {
                return Err(refused(status, &body));
            }
            Ok(body["requests"]
                .as_array()
                .is_some_and(|l| l.iter().any(|r| r["request_id"] == request)))
        })
    }

    fn approve<'a>(
        &'a self,
        d: &'a CaseDesk,
        request: &'a str,
    ) -> BoxFuture<'a, StepResult<Approved>> {
        Box::pin(async move {
            let call = requests::approve_call(request).map_err(|e| format!("{e:#}"))?;
            let (status, body) = requests::send(&d.gateway_url, &d.operator_token, call)
                .await
                .map_err(|e| format!("{e:#}"))?;
            if !status.is_success() {
                return Err(refused(status, &body));
            }
            let text = |k: &str| body[k].as_str().unwrap_or_default().to_string();
            Ok(Approved {
                signed_by: text("key_id"),
                recipient_key_id: text("recipient_key_id"),
            })
        })
    }

    fn open<'a>(&'a self, d: &'a CaseDesk, request: &'a str) -> BoxFuture<'a, StepResult<Opened>> {
        Box::pin(async move {
            let (kafka, store, key, request) = (
                d.kafka.clone(),
                d.trust_store.clone(),
                d.agency_key.clone(),
                request.to_string(),
            );
            // The reply names neither: the desk knows them from its request.
            let (alert_id, incident_id) = (d.alert_id.clone(), d.incident_id.clone());
            let wait = ewn_demo::case::STEP_WITHIN;
            let opened = tokio::task::spawn_blocking(move || {
                let store = ewn_trust::TrustStore::load(&store)?;
                let secret = ewn_trust::case::AgencySecret::load(&key)?;
                let reply = requests::find_response(&kafka, &request, wait)?;
                requests::open_reply(&store, &secret, &reply, &alert_id, &incident_id)
                    .map(|(out, _)| out)
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("{e:#}"))?;
            let text = |k: &str| opened[k].as_str().unwrap_or_default().to_string();
            Ok(Opened {
                decision: text("decision"),
                decided_by: text("decided_by"),
                signed_by: text("signed_by"),
                details: zeroize::Zeroizing::new(text("details")),
            })
        })
    }

    fn verify_bundle<'a>(&'a self, d: &'a CaseDesk) -> BoxFuture<'a, StepResult<Verdict>> {
        Box::pin(async move {
            let (kafka, store, key, key_id, alert_id) = (
                d.kafka.clone(),
                d.trust_store.clone(),
                d.auditor_key.clone(),
                d.auditor_key_id.clone(),
                d.alert_id.clone(),
            );
            tokio::task::spawn_blocking(move || {
                let key = ewn_trust::keys::load_signing_key(&key)?;
                let signer = ewn_trust::audit::AuditSigner::new(key_id, audit::SERVICE, key);
                let bundle = audit::assemble(
                    &kafka,
                    &alert_id,
                    &signer,
                    now_ms(),
                    ewn_demo::case::STEP_WITHIN,
                )?;
                let text = serde_json::to_string(&bundle)?;
                let report = audit::verify(&text, &ewn_trust::TrustStore::load(&store)?, now_ms());
                let mut checks: BTreeMap<String, (usize, usize)> = BTreeMap::new();
                for c in &report.checks {
                    let e = checks.entry(c.check.to_string()).or_default();
                    if c.ok {
                        e.0 += 1;
                    } else {
                        e.1 += 1;
                    }
                }
                Ok::<_, anyhow::Error>(Verdict {
                    bundle: BTreeMap::from([
                        ("messages".to_string(), bundle.messages.len()),
                        ("signed incidents".to_string(), bundle.incidents.len()),
                        ("receipts".to_string(), bundle.receipts.len()),
                        ("case requests".to_string(), bundle.cases.len()),
                    ]),
                    checks,
                    failures: report
                        .failures()
                        .iter()
                        .map(|c| format!("{} {}: {}", c.check, c.what, c.detail))
                        .collect(),
                })
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("{e:#}"))
        })
    }
}

fn describe(a: &Alert, got: &BTreeMap<String, bool>, records: &[Subscription]) -> String {
    let time = chrono::DateTime::from_timestamp_millis(a.created_at)
        .map(|t| t.format("%H:%M:%S").to_string())
        .unwrap_or_default();
    let mut reasons: Vec<_> = a.reasons.iter().collect();
    reasons.sort_by_key(|r| -r.contribution);
    let top: Vec<String> = reasons
        .iter()
        .take(3)
        .map(|r| format!("{} +{} ({})", r.factor, r.contribution, r.detail))
        .collect();
    let desks: Vec<String> = records
        .iter()
        .map(|s| match got.get(&s.id) {
            Some(true) => format!("{} received (signature verified)", s.id),
            Some(false) => format!("{} received a delivery that did NOT verify", s.id),
            None => match policy::decide(s, a) {
                Decision::Deliver(_) => format!("{} pending", s.id),
                _ => format!(
                    "{} withheld (cleared {}, alert {})",
                    s.id, s.clearance, a.tlp
                ),
            },
        })
        .collect();
    let mut out = format!(
        "[{time}] {} {:<8} {:<22} score {:>3}  TLP:{:<6} states {}\n",
        a.msg_type,
        a.level.as_str(),
        a.rule,
        a.score,
        a.tlp.as_str(),
        a.states.join(","),
    );
    if !a.references.is_empty() {
        out.push_str(&format!(
            "           refers to {}\n",
            a.references.join(", ")
        ));
    }
    out.push_str(&format!("           reasons: {}\n", top.join("; ")));
    out.push_str(&format!(
        "           evidence: {} signed report(s); desks: {}\n",
        a.evidence.len(),
        desks.join("; ")
    ));
    out
}

#[allow(clippy::print_stdout)]
fn print_summary(s: &Summary) {
    println!("== summary");
    println!(
        "   incidents  {} confirmed ({}), background {:.1}/s, {} rejected{}",
        s.incidents_confirmed,
        s.per_state
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", "),
        s.background_rate,
        s.rejected,
        if s.rejected_by.is_empty() {
            String::new()
        } else {
            format!(
                " ({})",
                s.rejected_by
                    .iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    );
    let mut by_rule: BTreeMap<&str, usize> = BTreeMap::new();
    for a in s.alerts.iter().filter(|a| a.msg_type == MsgType::Alert) {
        *by_rule.entry(&a.rule).or_default() += 1;
    }
    let rules: Vec<String> = by_rule.iter().map(|(k, v)| format!("{k} {v}")).collect();
    if rules.is_empty() {
        println!("   alerts     {}", s.alerts.len());
    } else {
        println!("   alerts     {} ({})", s.alerts.len(), rules.join(", "));
    }
    for d in s.desks.keys() {
        let n = s
            .alerts
            .iter()
            .filter(|a| a.received_by.contains(d))
            .count();
        println!("   {d:<10} received {n} alert message(s)");
    }
    let g = &s.gateway;
    println!(
        "   gateway    {}: {} reports accepted by its gateway ({} while its uplink was down {} s), {} on the broker, {} lost",
        g.post, g.accepted, g.accepted_while_down, g.outage_secs, g.on_broker, g.lost
    );
    for a in &s.operational {
        let what = match a.msg_type {
            MsgType::Cancel => "cancelled (heard again)",
            _ => "raised",
        };
        println!(
            "   sources    {} {} {what}, received by {}",
            a.rule,
            a.key,
            if a.received_by.is_empty() {
                "nobody".into()
            } else {
                a.received_by.join(", ")
            }
        );
    }
    if let Some(c) = &s.case {
        let steps: Vec<&str> = c.done.iter().map(|d| d.as_str()).collect();
        let outcome = match (&c.failed, &c.skipped) {
            (Some(f), _) => format!("FAILED at `{}`", f.step.as_str()),
            (None, Some(why)) => format!("not run: {why}"),
            (None, None) => format!("{} checks of its bundle passed", c.checks_passed),
        };
        println!(
            "   case       {} asked {} about the watch-list hit: {}; {outcome}",
            c.desk,
            c.state,
            if steps.is_empty() {
                "no step done".to_string()
            } else {
                steps.join(", ")
            }
        );
    }
    for sc in &s.scenarios {
        match &sc.alert_id {
            Some(_) => println!(
                "   scenario   {:<16} -> {} alert, {} TLP:{}, received by {}",
                sc.scenario,
                sc.rule,
                sc.level.map_or("", |l| l.as_str()),
                sc.tlp.map_or("", |t| t.as_str()),
                if sc.received_by.is_empty() {
                    "nobody".into()
                } else {
                    sc.received_by.join(", ")
                }
            ),
            None => println!("   scenario   {:<16} -> NO {} alert", sc.scenario, sc.rule),
        }
    }
}
