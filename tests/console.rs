//! The desk console in a real headless Chromium, against an in-process fan-out on a real
//! broker (Tansu): an officer logs in with a desk token, sees the alert cleared for the
//! desk and not the one above its clearance, acknowledges it, and the acknowledgement is
//! on `<prefix>acks`. Plain HTTP checks cover the console's security headers and the ack
//! endpoint's refusals.
//!
//! The browser is driven by `tests/support/console_check.py` (selenium in the test venv,
//! Debian's `chromium` and `chromium-driver`; `make test` installs them). When any of these
//! is missing the test fails with the reason; it is never skipped.

#![allow(clippy::unwrap_used)] // tests fail loudly on anything unexpected

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::hooks::*;
use common::{Net, wait_until};
use ewn_fanout::settings::ChannelName;
use ewn_model::{Ack, AckVia, Level, Tlp};
use reqwest::blocking::{Client, Response};
use reqwest::header::{CONTENT_SECURITY_POLICY, CONTENT_TYPE, COOKIE, SET_COOKIE};

const SETUP_HINT: &str = "run `make test-deps` (make test does): it installs selenium into .venv \
                          and Debian's chromium and chromium-driver";
/// The driver's own deadline; the child is killed if it outlives `BROWSER_KILL_AFTER`.
const BROWSER_TIMEOUT_SECS: u64 = 60;
const BROWSER_KILL_AFTER: Duration = Duration::from_secs(120);

const DESK: &str = "kg-desk";
const DESK_AGENCY: &str = "KG-GKNB";
const HOOK: &str = "kz-hook";
const HOOK_AGENCY: &str = "KZ-KNB";
const ACTOR: &str = "officer-1";

fn driver() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/support/console_check.py")
}

/// What a finished child printed.
struct Finished {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

fn drain(mut from: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = from.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Runs `cmd` to completion, killing it if it is still running after `limit`.
fn run_with_limit(mut cmd: Command, limit: Duration) -> Finished {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run the test venv's python ({e}): {SETUP_HINT}"));
    // Read both pipes while waiting, so a chatty child never blocks on a full pipe.
    let stdout = drain(child.stdout.take().unwrap());
    let stderr = drain(child.stderr.take().unwrap());
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "console_check.py still running after {limit:?}; killed\nstdout: {}\nstderr: {}",
                stdout.join().unwrap(),
                stderr.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    Finished {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

fn header(r: &Response, name: impl reqwest::header::AsHeaderName) -> String {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// Runs the browser check with `args`, its JSON report on success.
fn browser_check(args: &[&str]) -> serde_json::Value {
    let mut cmd = Command::new(ewn_testkit::python().unwrap_or_else(|e| panic!("{e}")));
    cmd.arg(driver()).args(args);
    let started = Instant::now();
    let run = run_with_limit(cmd, BROWSER_KILL_AFTER);
    let browser_secs = started.elapsed().as_secs_f64();
    match run.status.code() {
        Some(0) => {}
        Some(2) => panic!(
            "the browser could not be started ({}): {SETUP_HINT}\nstdout: {}\nstderr: {}",
            run.status, run.stdout, run.stderr
        ),
        _ => panic!(
            "console check failed ({})\nstdout: {}\nstderr: {}",
            run.status, run.stdout, run.stderr
        ),
    }
    let shown: serde_json::Value = serde_json::from_str(run.stdout.trim())
        .unwrap_or_else(|e| panic!("console_check.py output is not JSON ({e}): {}", run.stdout));
    eprintln!("browser check took {browser_secs:.1}s: {shown}");
    shown
}

/// Issue 16: the officer switches the console to Russian. The alert is shown again with
/// its headline and instruction from the ru-RU catalogue, the console's own strings are
/// Russian, the acknowledgement still works, and after a reload the choice holds.
#[test]
fn the_console_switches_to_russian_and_remembers_the_choice() {
    let mut net = Net::new("console-ru");
    let hooks = Hooks::start();
    let mut desk = webhook_sub(&hooks, DESK, DESK_AGENCY, Tlp::Amber);
    desk.webhook = None;
    desk.channel = Some(ChannelName::Console);
    let fanout = start_fanout(fanout_config(&net.settings, vec![desk]));
    let desk_token = format!("{DESK_TOKEN_PREFIX}{DESK}");
    let mut a = alert(3, Tlp::Amber, Level::High);
    a.rule = "cross_border_movement".into();
    net.publish_alerts(std::slice::from_ref(&a));
    let headline = format!(
        "ВЫСОКИЙ: Пересечение границы между государствами (оценка {})",
        a.score
    );
    let shown = browser_check(&[
        "--url",
        &fanout.url(""),
        "--token",
        &desk_token,
        "--alert-id",
        &a.alert_id,
        "--actor",
        ACTOR,
        "--language",
        "ru-RU",
        "--expect-headline",
        &headline,
        "--expect-ack-label",
        "Подтвердить",
        "--expect-page-text",
        "Дежурная часть EWN",
        "--expect-page-text",
        "Сотрудник",
        "--expect-page-text",
        "Основания (",
        "--expect-page-text",
        "Язык",
        "--timeout",
        &BROWSER_TIMEOUT_SECS.to_string(),
    ]);
    let lang = &shown["language"];
    // First shown in English (a fresh browser profile, --lang=en-US), then in Russian.
    assert_eq!(lang["page_lang_before"], "en-US", "{shown}");
    assert_eq!(lang["headline_lang_before"], "en-US", "{shown}");
    assert_eq!(
        lang["headline_before"],
        format!("HIGH: Cross-border movement (score {})", a.score),
        "{shown}"
    );
    assert_eq!(lang["page_lang"], "ru-RU", "{shown}");
    assert_eq!(lang["selector"], "ru-RU", "{shown}");
    assert_eq!(lang["headline"], headline.as_str(), "{shown}");
    assert!(
        lang["instruction"]
            .as_str()
            .unwrap()
            .starts_with("Сверьте субъекта"),
        "{shown}"
    );
    assert_eq!(shown["ack_label"], "Подтвердить", "{shown}");
    assert_eq!(shown["ack_button_after"], "Подтверждено", "{shown}");
    // Remembered in the browser: after a reload, still Russian.
    let remembered = &shown["remembered"];
    assert_eq!(remembered["stored"], "ru-RU", "{shown}");
    assert_eq!(remembered["page_lang"], "ru-RU", "{shown}");
    assert_eq!(remembered["headline"], headline.as_str(), "{shown}");
    assert_eq!(shown["ack_button"], "Подтверждено", "{shown}");
    // The acknowledgement made in Russian is on the acks topic like any other.
    wait_until("the ack on <prefix>acks", Duration::from_secs(60), || {
        net.acks().iter().any(|k| k.alert_id == a.alert_id)
    });
    fanout.stop();
}

#[test]
fn an_officer_sees_and_acknowledges_a_cleared_alert_in_a_real_browser() {
    let mut net = Net::new("console");
    let hooks = Hooks::start();
    let mut desk = webhook_sub(&hooks, DESK, DESK_AGENCY, Tlp::Amber);
    desk.webhook = None;
    desk.channel = Some(ChannelName::Console);
    // Another agency, cleared for RED and named in the RED alert: proof that alert is live.
    let hook = webhook_sub(&hooks, HOOK, HOOK_AGENCY, Tlp::Red);
    let fanout = start_fanout(fanout_config(&net.settings, vec![desk, hook]));
    let desk_token = format!("{DESK_TOKEN_PREFIX}{DESK}");

    // The sample's reasons and evidence come along. Both alerts carry the sample's key, so
    // they share a partition and the RED one reaches the stream hub first: by the time the
    // browser shows the AMBER one, the RED one has been offered to the desk and withheld.
    let mut red = alert(1, Tlp::Red, Level::Critical);
    red.named_agencies = vec![HOOK_AGENCY.into()];
    let amber = alert(2, Tlp::Amber, Level::High);
    assert!(!amber.reasons.is_empty() && !amber.evidence.is_empty());
    assert_eq!(red.key, amber.key);
    net.publish_alerts(&[red.clone(), amber.clone()]);

    // The browser: log in, see the AMBER alert (not the RED one), acknowledge it.
    let shown = browser_check(&[
        "--url",
        &fanout.url(""),
        "--token",
        &desk_token,
        "--alert-id",
        &amber.alert_id,
        "--expect-absent",
        &red.alert_id,
        "--actor",
        ACTOR,
        "--expect-rule",
        &amber.rule,
        "--timeout",
        &BROWSER_TIMEOUT_SECS.to_string(),
    ]);
    assert_eq!(shown["level"], "HIGH", "{shown}");
    assert_eq!(shown["tlp"], "TLP:AMBER", "{shown}");
    assert_eq!(shown["redacted"], false, "{shown}");
    assert_eq!(shown["acked_on_arrival"], false, "{shown}");
    assert_eq!(shown["reasons_rows"], amber.reasons.len(), "{shown}");
    assert_eq!(shown["evidence_rows"], amber.evidence.len(), "{shown}");
    assert_eq!(shown["alerts_shown"], 1, "{shown}");

    // The console's pages carry a CSP without inline script; every answer is nosniff.
    let client = Client::new();
    let page = client.get(fanout.url("/console")).send().unwrap();
    assert_eq!(page.status(), 200);
    let csp = header(&page, CONTENT_SECURITY_POLICY);
    assert!(csp.contains("script-src 'self'"), "CSP: {csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "CSP: {csp}");
    assert!(!csp.contains("unsafe-inline"), "CSP: {csp}");
    assert_eq!(header(&page, "x-content-type-options"), "nosniff");

    // No credentials: 401, and the refusal is nosniff too.
    let ack_url = |id: &str| fanout.url(&format!("/api/v1/alerts/{id}/ack"));
    let anon = client.post(ack_url(&amber.alert_id)).send().unwrap();
    assert_eq!(anon.status(), 401);
    assert_eq!(header(&anon, "x-content-type-options"), "nosniff");

    // A session cookie, then an ack a cross-site form could send (not JSON): 415.
    let login = client
        .post(fanout.url("/api/v1/session"))
        .header(CONTENT_TYPE, "application/json")
        .body(serde_json::json!({ "token": desk_token }).to_string())
        .send()
        .unwrap();
    assert_eq!(login.status(), 204);
    let set_cookie = header(&login, SET_COOKIE);
    assert!(set_cookie.contains("HttpOnly"), "{set_cookie}");
    assert!(set_cookie.contains("SameSite=Strict"), "{set_cookie}");
    let cookie = set_cookie.split(';').next().unwrap().to_string();
    let me = client
        .get(fanout.url("/api/v1/me"))
        .header(COOKIE, &cookie)
        .send()
        .unwrap();
    assert_eq!(me.status(), 200, "the cookie authenticates");
    let form_ack = client
        .post(ack_url(&amber.alert_id))
        .header(COOKIE, &cookie)
        .header(CONTENT_TYPE, "text/plain")
        .body(format!(r#"{{"actor":"{ACTOR}"}}"#))
        .send()
        .unwrap();
    assert_eq!(form_ack.status(), 415);

    // Above the desk's clearance: "not found", though the server holds it, as the other
    // agency's successful ack shows.
    let above = client
        .post(ack_url(&red.alert_id))
        .bearer_auth(&desk_token)
        .send()
        .unwrap();
    assert_eq!(above.status(), 404);
    let named = client
        .post(ack_url(&red.alert_id))
        .bearer_auth(format!("{DESK_TOKEN_PREFIX}{HOOK}"))
        .send()
        .unwrap();
    assert_eq!(
        named.status(),
        201,
        "the RED alert is held and named agencies may ack it"
    );
    wait_until(
        "the RED alert delivered to the named agency's webhook",
        Duration::from_secs(60),
        || {
            hooks
                .delivered(HOOK)
                .iter()
                .any(|h| h.alert_id() == red.alert_id)
        },
    );

    // On the acks topic: the browser's ack, attributed to the desk, and the control ack;
    // none of the refused requests left a record.
    let mut acks: Vec<Ack> = Vec::new();
    wait_until("both acks on <prefix>acks", Duration::from_secs(60), || {
        acks = net.acks();
        acks.len() >= 2
    });
    let of = |id: &str| -> Vec<&Ack> { acks.iter().filter(|a| a.alert_id == id).collect() };
    let console_acks = of(&amber.alert_id);
    assert_eq!(console_acks.len(), 1, "{acks:?}");
    let ack = console_acks[0];
    assert_eq!(ack.agency, DESK_AGENCY);
    assert_eq!(ack.subscription_id.as_deref(), Some(DESK));
    assert_eq!(ack.via, AckVia::Console);
    assert_eq!(ack.actor, ACTOR);
    let control = of(&red.alert_id);
    assert_eq!(control.len(), 1, "{acks:?}");
    assert_eq!(
        (control[0].agency.as_str(), control[0].via),
        (HOOK_AGENCY, AckVia::Api)
    );
    assert_eq!(acks.len(), 2, "{acks:?}");
    fanout.stop();
}
