#!/usr/bin/env python3
"""Drive the fan-out desk console in a real headless Chromium.

Used by the Rust integration tests: opens <url>/console, logs in through the form, waits
for one alert, checks that its rule and reasons are shown, acknowledges it and waits for
the page to show it acknowledged. Also fails when the page logs a CSP violation or an
uncaught error, or when server data turned into markup inside the alert (img, script, svg
and the like). Prints one line of JSON on success (exit 0). On failure
prints the reason, the browser's console log and the page text to stderr (exit 1; exit 2
when the browser cannot be started at all).

    python3 tests/support/console_check.py --url http://127.0.0.1:PORT --token TOKEN \
        --alert-id ID [--timeout 60] [--actor NAME] [--expect-absent ID ...] \
        [--language ru-RU --expect-headline TEXT --expect-page-text TEXT ...]

With --language, the alert is first seen in the page's initial language, then the officer
switches the language selector: the alert must be shown again with its headline and
instruction in that language (--expect-headline), the page's own strings too
(--expect-page-text, --expect-ack-label), and after a reload the choice must still hold
(remembered in the browser's localStorage).

Needs selenium (tests/requirements.txt) and Debian's `chromium` and `chromium-driver`; `make test-deps`
installs them.

DOM contract with crates/ewn-fanout/src/console (keep both sides in step):
  login:  form#login-form, input#token, button[data-action="login"], p#login-error
  desk:   #desk (hidden until logged in), input#actor, #conn[data-status],
          select#language (option values are language tags; <html lang> follows it)
  alert:  [data-alert-id="<id>"] with data-acked="true"|"false", data-redacted="true",
          [data-field="rule"|"level"|"tlp"|"score"|"headline"|"instruction"] (the last two
          with lang="<tag>"), details[data-section="reasons"|
          "evidence"] > table > tbody > tr, button[data-action="ack"]
"""

import argparse
import json
import os
import sys
import tempfile
import time

EXIT_FAIL = 1
EXIT_SETUP = 2

# Looks an alert up by comparing attribute values, so no selector is built from an id.
FIND_ALERT_JS = """
for (const e of document.querySelectorAll('[data-alert-id]')) {
  if (e.getAttribute('data-alert-id') === arguments[0]) return e;
}
return null;
"""
ALERT_IDS_JS = "return [...document.querySelectorAll('[data-alert-id]')].map(e => e.getAttribute('data-alert-id'));"
TABLE_ROWS_JS = """
const t = arguments[0].querySelector('details[data-section="' + arguments[1] + '"] tbody');
return t ? [...t.rows].map(r => [...r.cells].map(c => c.textContent)) : [];
"""
# Any of these inside an alert means server data became markup.
INJECTED_JS = "return arguments[0].querySelectorAll('img, script, iframe, object, embed, svg, style, link').length;"


class CheckFailed(Exception):
    pass


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True, help="fan-out base URL, e.g. http://127.0.0.1:8080")
    p.add_argument("--token", required=True, help="desk token typed into the login form")
    p.add_argument("--alert-id", required=True, help="the alert that must appear and be acknowledged")
    p.add_argument("--timeout", type=float, default=60.0, help="overall deadline in seconds (default 60)")
    p.add_argument("--actor", help="name typed into the header's acknowledgement field")
    p.add_argument("--expect-rule", help="the rule text the alert must show")
    p.add_argument("--min-reasons", type=int, default=1, help="reasons rows required (default 1)")
    p.add_argument("--expect-absent", action="append", default=[], metavar="ID",
                   help="an alert id that must not be shown (repeatable)")
    p.add_argument("--language", help="switch the console to this language tag once the alert is shown")
    p.add_argument("--expect-headline", help="the alert's headline after the switch")
    p.add_argument("--expect-ack-label", help="the Acknowledge button's label after the switch")
    p.add_argument("--expect-page-text", action="append", default=[], metavar="TEXT",
                   help="text the page must show after the switch (repeatable)")
    p.add_argument("--chromium", default=os.environ.get("CHROMIUM_BIN", "/usr/bin/chromium"))
    p.add_argument("--chromedriver", default=os.environ.get("CHROMEDRIVER_BIN", "/usr/bin/chromedriver"))
    return p.parse_args()


def start_browser(args, profile_dir):
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as e:
        print(f"console_check: selenium is not installed ({e}); run `make test-deps` (it builds .venv)", file=sys.stderr)
        sys.exit(EXIT_SETUP)
    for path in (args.chromium, args.chromedriver):
        if not os.access(path, os.X_OK):
            print(f"console_check: {path} is missing; run `make test-deps` (it installs chromium and chromium-driver)",
                  file=sys.stderr)
            sys.exit(EXIT_SETUP)
    opts = webdriver.ChromeOptions()
    opts.binary_location = args.chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                 "--window-size=1280,1024", "--lang=en-US", f"--user-data-dir={profile_dir}"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        return webdriver.Chrome(service=Service(executable_path=args.chromedriver), options=opts)
    except Exception as e:  # noqa: BLE001 - any start-up failure is reported the same way
        print(f"console_check: cannot start Chromium: {e}", file=sys.stderr)
        sys.exit(EXIT_SETUP)


class Run:
    def __init__(self, driver, deadline):
        self.d = driver
        self.deadline = deadline
        self.log = []

    def drain_log(self):
        try:
            self.log.extend(self.d.get_log("browser"))
        except Exception:  # noqa: BLE001 - the log is diagnostics only
            pass

    def wait(self, what, probe, poll=0.1):
        """Polls `probe` until it returns something truthy or the deadline passes."""
        last_err = None
        while True:
            try:
                got = probe()
                if got:
                    return got
            except CheckFailed:
                raise
            except Exception as e:  # noqa: BLE001 - stale elements while the page re-renders
                last_err = e
            if time.monotonic() >= self.deadline:
                extra = f" (last error: {last_err})" if last_err else ""
                raise CheckFailed(f"timed out waiting for {what}{extra}")
            time.sleep(poll)

    def js(self, script, *args):
        return self.d.execute_script(script, *args)

    def visible(self, element_id):
        return self.js("const e = document.getElementById(arguments[0]); return !!e && !e.closest('[hidden]');",
                       element_id)


def check(args, run):
    from selenium.webdriver.common.by import By

    d = run.d
    base = args.url.rstrip("/")
    d.get(base + "/console")

    run.wait("the login form", lambda: run.visible("login-form") or run.visible("desk"))
    if not run.visible("desk"):
        d.find_element(By.ID, "token").send_keys(args.token)
        d.find_element(By.CSS_SELECTOR, '#login-form [data-action="login"]').click()

        def logged_in():
            if run.visible("login-error"):
                msg = d.find_element(By.ID, "login-error").text
                if msg and "retrying" not in msg:
                    raise CheckFailed(f"login refused: {msg}")
            return run.visible("desk")

        run.wait("the desk after login", logged_in)

    if args.actor is not None:
        actor = d.find_element(By.ID, "actor")
        actor.clear()
        actor.send_keys(args.actor)

    t0 = time.monotonic()
    alert = run.wait(f"alert {args.alert_id}", lambda: run.js(FIND_ALERT_JS, args.alert_id))
    seen_after = time.monotonic() - t0

    def assert_absent(when):
        present = set(run.js(ALERT_IDS_JS)) & set(args.expect_absent)
        if present:
            raise CheckFailed(f"alerts that must not be shown are shown ({when}): {sorted(present)}")

    assert_absent("when the wanted alert appeared")

    language = None
    if args.language is not None:
        language = switch_language(args, run, alert)
        alert = language.pop("alert")

    rule = alert.find_element(By.CSS_SELECTOR, '[data-field="rule"]').text.strip()
    if not rule:
        raise CheckFailed("the alert shows no rule")
    if args.expect_rule is not None and rule != args.expect_rule:
        raise CheckFailed(f"the alert shows rule {rule!r}, expected {args.expect_rule!r}")

    # Open the Reasons section so its rows are rendered, then read them as the officer sees them.
    summary = alert.find_element(By.CSS_SELECTOR, 'details[data-section="reasons"] > summary')
    if alert.find_element(By.CSS_SELECTOR, 'details[data-section="reasons"]').get_attribute("open") is None:
        summary.click()
    reasons = run.js(TABLE_ROWS_JS, alert, "reasons")
    if len(reasons) < args.min_reasons:
        raise CheckFailed(f"the alert shows {len(reasons)} reasons rows, expected at least {args.min_reasons}")
    shown_text = alert.text
    for row in reasons:
        if row and row[0].strip() and row[0].strip() not in shown_text:
            raise CheckFailed(f"reason factor {row[0]!r} is not visible in the alert")
    evidence = run.js(TABLE_ROWS_JS, alert, "evidence")
    injected = run.js(INJECTED_JS, alert)
    if injected:
        raise CheckFailed(f"the alert contains {injected} element(s) built from server data (HTML injection)")

    acked_on_arrival = alert.get_attribute("data-acked") == "true"
    button = alert.find_element(By.CSS_SELECTOR, 'button[data-action="ack"]')
    ack_label = button.text
    if args.expect_ack_label is not None and ack_label != args.expect_ack_label:
        raise CheckFailed(f"the Acknowledge button reads {ack_label!r}, expected {args.expect_ack_label!r}")
    if not acked_on_arrival:
        button.click()
    run.wait("the alert to show data-acked=\"true\"",
             lambda: run.js(FIND_ALERT_JS, args.alert_id).get_attribute("data-acked") == "true")
    alert = run.js(FIND_ALERT_JS, args.alert_id)
    button = alert.find_element(By.CSS_SELECTOR, 'button[data-action="ack"]')
    if button.is_enabled():
        raise CheckFailed("the Acknowledge button is still enabled after the ack")
    assert_absent("after the acknowledgement")
    result_extra = {}
    if language is not None:
        result_extra["language"] = language
        result_extra["ack_label"] = ack_label
        result_extra["ack_button_after"] = button.text
        result_extra["remembered"] = check_remembered(args, run)
        alert = run.js(FIND_ALERT_JS, args.alert_id)
        button = alert.find_element(By.CSS_SELECTOR, 'button[data-action="ack"]')

    run.drain_log()
    bad = [e for e in run.log
           if "Content Security Policy" in e.get("message", "") or "Uncaught" in e.get("message", "")]
    if bad:
        raise CheckFailed("the page logged CSP violations or uncaught errors: "
                          + "; ".join(e.get("message", "") for e in bad))

    def field(name):
        return alert.find_element(By.CSS_SELECTOR, f'[data-field="{name}"]').text

    return {
        "ok": True,
        "alert_id": args.alert_id,
        "rule": rule,
        "level": field("level"),
        "tlp": field("tlp"),
        "score": field("score"),
        "msg_type": alert.get_attribute("data-msg-type"),
        "redacted": alert.get_attribute("data-redacted") == "true",
        "reasons_rows": len(reasons),
        "reasons": reasons,
        "evidence_rows": len(evidence),
        "acked_on_arrival": acked_on_arrival,
        "ack_button": button.text,
        "ack_status": alert.find_element(By.CSS_SELECTOR, ".ack-status").text,
        "alerts_shown": len(run.js(ALERT_IDS_JS)),
        "connection": d.find_element(By.ID, "conn").get_attribute("data-status"),
        "seen_after_login_secs": round(seen_after, 3),
        **result_extra,
    }


def local_field(alert, name):
    """(text, lang) of the alert's [data-field=name], or (None, None) when it has none."""
    from selenium.webdriver.common.by import By

    found = alert.find_elements(By.CSS_SELECTOR, f'[data-field="{name}"]')
    if not found:
        return None, None
    return found[0].text, found[0].get_attribute("lang")


def switch_language(args, run, alert):
    """Switches the selector to --language; the alert must be shown again in it."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    before, before_lang = local_field(alert, "headline")
    page_lang_before = run.js("return document.documentElement.lang")
    Select(run.d.find_element(By.ID, "language")).select_by_value(args.language)
    run.wait(f"<html lang={args.language}>", lambda: run.js("return document.documentElement.lang") == args.language)

    def relocalised():
        a = run.js(FIND_ALERT_JS, args.alert_id)
        return a if a is not None and local_field(a, "headline")[1] == args.language else None

    alert = run.wait(f"the alert's headline in {args.language}", relocalised)
    headline, _ = local_field(alert, "headline")
    instruction, instruction_lang = local_field(alert, "instruction")
    if args.expect_headline is not None and headline != args.expect_headline:
        raise CheckFailed(f"the headline reads {headline!r}, expected {args.expect_headline!r}")
    if instruction_lang != args.language or not instruction:
        raise CheckFailed(f"the instruction is not in {args.language}: {instruction!r} ({instruction_lang})")
    page = run.js("return document.body.innerText")
    for text in args.expect_page_text:
        if text not in page:
            raise CheckFailed(f"the page does not show {text!r} in {args.language}")
    return {
        "alert": alert,
        "page_lang_before": page_lang_before,
        "headline_before": before,
        "headline_lang_before": before_lang,
        "page_lang": run.js("return document.documentElement.lang"),
        "headline": headline,
        "instruction": instruction,
        "selector": Select(run.d.find_element(By.ID, "language")).first_selected_option.get_attribute("value"),
    }


def check_remembered(args, run):
    """After a reload (the session cookie keeps the desk logged in), the language holds."""
    from selenium.webdriver.common.by import By

    run.d.refresh()
    run.wait("the desk after a reload", lambda: run.visible("desk"))
    alert = run.wait(f"alert {args.alert_id} after a reload", lambda: run.js(FIND_ALERT_JS, args.alert_id))
    headline, lang = local_field(alert, "headline")
    selector = run.d.find_element(By.ID, "language").get_attribute("value")
    page_lang = run.js("return document.documentElement.lang")
    stored = run.js("return localStorage.getItem('ewn.console.language')")
    if (selector, page_lang, lang) != (args.language, args.language, args.language):
        raise CheckFailed(f"after a reload the console is not in {args.language}: selector {selector!r}, "
                          f"<html lang> {page_lang!r}, headline lang {lang!r}")
    return {"selector": selector, "page_lang": page_lang, "headline": headline, "stored": stored}


def report_failure(run, message):
    print(f"console_check: FAIL: {message}", file=sys.stderr)
    if run is None:
        return
    run.drain_log()
    print("---- browser console log ----", file=sys.stderr)
    for e in run.log:
        print(f"{e.get('level', '?')} {e.get('source', '')} {e.get('message', '')}", file=sys.stderr)
    print("---- page text ----", file=sys.stderr)
    try:
        print(run.d.current_url, file=sys.stderr)
        print(run.js("return document.body ? document.body.innerText : ''"), file=sys.stderr)
    except Exception as e:  # noqa: BLE001
        print(f"(page text unavailable: {e})", file=sys.stderr)


def main():
    args = parse_args()
    deadline = time.monotonic() + args.timeout
    with tempfile.TemporaryDirectory(prefix="ewn-console-") as profile:
        driver = start_browser(args, profile)
        run = Run(driver, deadline)
        try:
            result = check(args, run)
        except CheckFailed as e:
            report_failure(run, str(e))
            return EXIT_FAIL
        except Exception as e:  # noqa: BLE001 - WebDriver errors are failures too, with context
            report_failure(run, f"{type(e).__name__}: {e}")
            return EXIT_FAIL
        finally:
            try:
                driver.quit()
            except Exception:  # noqa: BLE001
                pass
    print(json.dumps(result, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
