//! The desks' receiver over real HTTP on loopback: a delivery the fan-out's code signed is
//! accepted and recorded as verified; an altered body, a stale timestamp, another secret
//! or an unknown desk are not.

#![allow(clippy::unwrap_used)] // tests fail loudly on anything unexpected

use std::collections::BTreeMap;

use ewn_demo::desk::DeskReceiver;
use ewn_fanout::webhook::WebhookSecret;

async fn post(
    url: &str,
    secret: &WebhookSecret,
    id: &str,
    ts: i64,
    signed: &[u8],
    sent: &[u8],
) -> u16 {
    reqwest::Client::new()
        .post(url)
        .header("webhook-id", id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", secret.sign(id, ts, signed))
        .header("content-type", "application/json")
        .body(sent.to_vec())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn body(alert_id: &str) -> Vec<u8> {
    serde_json::json!({"type": "alert", "data": {"alert_id": alert_id}})
        .to_string()
        .into_bytes()
}

#[tokio::test]
async fn signed_deliveries_verify_and_anything_else_is_refused() {
    let text = WebhookSecret::generate();
    let secret = WebhookSecret::parse(&text).unwrap();
    let other = WebhookSecret::parse(&WebhookSecret::generate()).unwrap();
    let secrets = BTreeMap::from([("rcc-desk".to_string(), text)]);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let receiver = DeskReceiver::start(&secrets, async {
        let _ = stopped.await;
    })
    .await
    .unwrap();
    let url = receiver.url("rcc-desk");
    let now = chrono::Utc::now().timestamp();

    assert_eq!(
        post(&url, &secret, "m1", now, &body("a1"), &body("a1")).await,
        204
    );
    // The body altered after signing.
    assert_eq!(
        post(&url, &secret, "m2", now, &body("a2"), &body("a3")).await,
        401
    );
    // Signed ten minutes ago: outside the tolerance.
    assert_eq!(
        post(&url, &secret, "m4", now - 600, &body("a4"), &body("a4")).await,
        401
    );
    // Signed with another desk's secret.
    assert_eq!(
        post(&url, &other, "m5", now, &body("a5"), &body("a5")).await,
        401
    );
    // No such desk.
    let unknown = receiver.url("nobody");
    assert_eq!(
        post(&unknown, &secret, "m6", now, &body("a6"), &body("a6")).await,
        404
    );

    let got = receiver.received();
    assert!(got["a1"]["rcc-desk"], "{got:?}");
    for refused in ["a3", "a4", "a5"] {
        assert!(!got[refused]["rcc-desk"], "{refused}: {got:?}");
    }
    assert!(
        !got.contains_key("a2") && !got.contains_key("a6"),
        "{got:?}"
    );

    stop.send(()).unwrap();
    receiver.task.await.unwrap().unwrap();
}
