//! Issue 16 end to end on a real broker (Tansu): JSON webhooks carry the alert's texts in
//! the languages their subscription asked for (from the same Fluent catalogue as CAP), and
//! the admin API refuses a language the fan-out does not serve.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::Net;
use common::cases::wait_settled;
use common::hooks::*;
use ewn_model::{Level, Tlp};

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
    let r = post(body(serde_json::json!(["ru-RU"])));
    assert_eq!(r.status(), 201);
    let v: serde_json::Value = r.json().unwrap();
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
    let t = texts(&hooks.delivered("default")[0]);
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
