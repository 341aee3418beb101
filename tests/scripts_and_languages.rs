//! Issue 16 end to end on a real broker (Tansu): one person reported in Kazakh Cyrillic by
//! one state and in ICAO Latin by another, and one document written with Cyrillic
//! look-alike letters by one and in Latin by the other, are each recognised as one subject
//! by the real processor (`cross_border_movement`); JSON webhooks carry the alert's texts
//! in the languages their subscription asked for (from the same Fluent catalogue as CAP),
//! and the admin API refuses a language the fan-out does not serve.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::cases::wait_settled;
use common::hooks::*;
use common::{HOUR, Net, blinding, now_ms, rekeyed_count, start};
use ewn_model::validate::Limits;
use ewn_model::{Incident, Level, SubjectKind, Tlp};
use serde_json::json;

const SETTLE: Duration = Duration::from_secs(120);

fn texts(hit: &Hit) -> Vec<serde_json::Value> {
    hit.json()["data"]["texts"].as_array().unwrap().clone()
}

fn tags(texts: &[serde_json::Value]) -> Vec<String> {
    texts
        .iter()
        .map(|t| t["language"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn json_webhooks_carry_the_languages_their_subscription_asked_for() {
    let mut net = Net::new("languages");
    let hooks = Hooks::start();
    let mut ru_en = webhook_sub(&hooks, "ru-en", "KZ-KNB", Tlp::Amber);
    ru_en.languages = vec!["ru-RU".into(), "en-US".into()];
    let default = webhook_sub(&hooks, "default", "UZ-SGB", Tlp::Amber);
    // Cleared below the alert: it gets the redacted form, in Russian.
    let mut redacted = webhook_sub(&hooks, "redacted", "TJ-GKNB", Tlp::Green);
    redacted.redacted = true;
    redacted.languages = vec!["ru-RU".into()];
    let fanout = start_fanout(fanout_config(&net.settings, vec![ru_en, default, redacted]));

    // The admin API: a language outside fanout.languages is a 422 naming the field; a
    // served one is stored and shown.
    let client = reqwest::blocking::Client::new();
    let post = |body: serde_json::Value| {
        client
            .post(fanout.url("/api/v1/subscriptions"))
            .bearer_auth(ADMIN_TOKEN)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .unwrap()
    };
    let body = |langs: serde_json::Value| {
        serde_json::json!({
            "id": "api-desk", "agency": "KG-GKNB", "clearance": "AMBER",
            "channel": "stream", "languages": langs,
        })
    };
    let r = post(body(serde_json::json!(["ru-RU", "kk-KZ"])));
    assert_eq!(r.status(), 422);
    let v: serde_json::Value = r.json().unwrap();
    let problems = v["problems"].to_string();
    assert!(
        problems
            .contains("body.languages[1]: `kk-KZ` is not one of fanout.languages (en-US, ru-RU)"),
        "{v}"
    );
    let r = post(body(serde_json::json!(["<img src=x>"])));
    assert_eq!(r.status(), 422);
    let text = r.text().unwrap();
    assert!(text.contains("body.languages[0]: the tag"), "{text}");
    assert!(!text.contains("img"), "a hostile tag is not echoed: {text}");
    // Every problem at once: a bad id and a bad language, both named.
    let mut both = body(serde_json::json!(["kk-KZ"]));
    both["id"] = "bad id".into();
    let r = post(both);
    assert_eq!(r.status(), 422);
    let v: serde_json::Value = r.json().unwrap();
    let problems = v["problems"].to_string();
    assert!(
        problems.contains("body.id:") && problems.contains("body.languages[0]:"),
        "{v}"
    );
    let r = post(body(serde_json::json!(["ru-RU"])));
    let status = r.status();
    let v: serde_json::Value = r.json().unwrap();
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["languages"], serde_json::json!(["ru-RU"]));

    let mut a = alert(1, Tlp::Amber, Level::High);
    a.rule = "cross_border_movement".into();
    a.score = 61;
    net.publish_alerts(std::slice::from_ref(&a));
    wait_settled(&fanout, 1, SETTLE);

    let hit = &hooks.delivered("ru-en")[0];
    verify_standard_webhook(&secret_of("ru-en"), hit).unwrap();
    let t = texts(hit);
    assert_eq!(tags(&t), ["ru-RU", "en-US"]);
    assert_eq!(
        t[0]["headline"],
        "ВЫСОКИЙ: Пересечение границы между государствами (оценка 61)"
    );
    assert_eq!(
        t[0]["description"],
        "Правило cross_border_movement подняло уровень ВЫСОКИЙ с оценкой 61."
    );
    assert!(
        t[0]["instruction"]
            .as_str()
            .unwrap()
            .starts_with("Сверьте субъекта")
    );
    assert_eq!(t[1]["headline"], "HIGH: Cross-border movement (score 61)");

    // No languages asked: the first of fanout.languages.
    let plain = &hooks.delivered("default")[0];
    eprintln!(
        "webhook body: {} bytes with en-US texts, {} bytes with ru-RU + en-US",
        plain.body.len(),
        hit.body.len()
    );
    let t = texts(plain);
    assert_eq!(tags(&t), ["en-US"]);
    assert_eq!(t[0]["event"], "Cross-border movement");

    // The redacted form's texts are built from the redacted alert: nothing the form
    // hides appears in them.
    let hit = &hooks.delivered("redacted")[0];
    let data = &hit.json()["data"];
    assert_eq!(data["redacted"], true);
    let t = texts(hit);
    assert_eq!(tags(&t), ["ru-RU"]);
    let shown = serde_json::to_string(&t).unwrap();
    for hidden in std::iter::once(a.key.as_str())
        .chain(a.incident_ids.iter().map(String::as_str))
        .chain(a.reasons.iter().map(|r| r.detail.as_str()))
        .chain(std::iter::once(a.alert_id.as_str()))
    {
        assert!(!shown.contains(hidden), "`{hidden}` in {shown}");
    }
    assert!(
        t[0]["headline"]
            .as_str()
            .unwrap()
            .contains(&format!("(оценка {})", data["score"])),
        "{shown}"
    );
    fanout.stop();
}

/// One report as a border post writes it (the JSON input of `ewn publish` and the
/// gateway), validated and blinded by the same code they use.
fn report(n: u32, state: &str, occurred_at: i64, subjects: serde_json::Value) -> Incident {
    let occurred = chrono::DateTime::from_timestamp_millis(occurred_at)
        .unwrap()
        .to_rfc3339();
    let line = json!({
        "incident_id": format!("16160000-0000-4000-8000-{n:012x}"),
        "occurred_at": occurred,
        "reporter": { "state": state, "agency": format!("{state}-BORDER"), "post_id": null },
        "category": "SUSPICIOUS_CROSSING",
        "severity": "MEDIUM",
        "source_reliability": "B",
        "info_credibility": 2,
        "tlp": "GREEN",
        "location": { "lat": 41.3, "lon": 69.2, "area": format!("{state}-AREA"), "crossing": null },
        "subjects": subjects,
        "summary": "issue 16 end to end",
        "attributes": {},
    })
    .to_string();
    ewn_gateway::parse_incident(&line, 1, &blinding(), &Limits::default(), now_ms())
        .unwrap_or_else(|e| panic!("{e:?}"))
}

#[test]
fn one_person_in_cyrillic_and_in_latin_raises_cross_border_movement() {
    let mut net = Net::new("scripts");
    let p = start(net.config(100 * 3600));
    // A desk that reads its warnings in Russian, cleared for what the reports are marked.
    let hooks = Hooks::start();
    let mut desk = webhook_sub(&hooks, "uz-desk", "UZ-SGB", Tlp::Green);
    desk.languages = vec!["ru-RU".into()];
    desk.rules = vec!["cross_border_movement".into()];
    let fanout = start_fanout(fanout_config(&net.settings, vec![desk]));
    let t = now_ms() - 6 * HOUR;
    // Kazakhstan: the national ID in Kazakh Cyrillic, with patronymic, date as written
    // there; a watch-listed passport number typed with Cyrillic А and В.
    let kz = report(
        1,
        "KZ",
        t,
        json!([
            {"kind": "PERSON", "person": {"surname": "Жұмабаев", "given_names": "Қайрат",
             "patronymic": "Серікұлы", "date_of_birth": "30.01.1972"}},
            {"kind": "DOCUMENT", "id": "АВ 1234567", "watchlist": "KZ-WL-2026"},
        ]),
    );
    // Uzbekistan, two hours later: the passport's ICAO Latin (no patronymic, ISO date)
    // and the same passport number in Latin letters.
    let uz = report(
        2,
        "UZ",
        t + 2 * HOUR,
        json!([
            {"kind": "PERSON", "person": {"surname": "ZHUMABAEV", "given_names": "KAYRAT",
             "date_of_birth": "1972-01-30"}},
            {"kind": "DOCUMENT", "id": "AB1234567"},
        ]),
    );
    // Kyrgyzstan: a near miss, the same name born a day later (another person), and a
    // document one digit apart: neither may join the pair above.
    let kg = report(
        3,
        "KG",
        t + 3 * HOUR,
        json!([
            {"kind": "PERSON", "id": "Жумабаев Кайрат 31.01.1972"},
            {"kind": "DOCUMENT", "id": "AB1234568"},
        ]),
    );
    let person = kz.subjects[0].subject_ref.clone();
    let document = kz.subjects[1].subject_ref.clone();
    assert_eq!(
        uz.subjects[0].subject_ref, person,
        "one person, two scripts"
    );
    assert_eq!(
        uz.subjects[1].subject_ref, document,
        "one document, look-alikes folded"
    );
    assert_ne!(kg.subjects[0].subject_ref, person);
    assert_ne!(kg.subjects[1].subject_ref, document);
    assert_eq!(
        person,
        blinding()
            .blind(SubjectKind::Person, "KAYRAT ZHUMABAEV 1972-01-30")
            .unwrap()
    );

    let incidents = [kz, uz, kg];
    net.publish(&incidents);
    p.wait_correlated(rekeyed_count(&incidents));
    let alerts = net.alerts();
    let mut cross: Vec<_> = alerts
        .iter()
        .filter(|a| a.rule == "cross_border_movement")
        .collect();
    cross.sort_by_key(|a| a.key.clone());
    let mut expected = vec![format!("subject:{person}"), format!("subject:{document}")];
    expected.sort();
    assert_eq!(
        cross.iter().map(|a| a.key.clone()).collect::<Vec<_>>(),
        expected,
        "{alerts:?}"
    );
    for a in &cross {
        assert_eq!(a.states, ["KZ", "UZ"], "{a:?}");
        assert_eq!(a.incident_ids.len(), 2, "{a:?}");
        assert_eq!(a.evidence.len(), 2, "the signed evidence of both reports");
    }
    // The watch-listed document (Cyrillic look-alikes) is a watch-list hit as well.
    assert!(
        alerts.iter().any(|a| a.rule == "watchlist_hit"
            && a.states == ["KZ"]
            && a.incident_ids == [incidents[0].incident_id.clone()]),
        "{alerts:?}"
    );
    // Both reach the desk, in Russian.
    common::wait_until(
        "both cross-border alerts at the desk",
        Duration::from_secs(120),
        || hooks.delivered("uz-desk").len() >= 2,
    );
    let hits = hooks.delivered("uz-desk");
    assert_eq!(hits.len(), 2);
    for hit in &hits {
        verify_standard_webhook(&secret_of("uz-desk"), hit).unwrap();
        let t = texts(hit);
        assert_eq!(tags(&t), ["ru-RU"]);
        assert_eq!(t[0]["event"], "Пересечение границы между государствами");
        assert!(expected.contains(&hit.json()["data"]["key"].as_str().unwrap().to_string()));
    }
    fanout.stop();
    p.stop();
}
