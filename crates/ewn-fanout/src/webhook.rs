//! Standard Webhooks (https://www.standardwebhooks.com): the signature scheme and one
//! delivery attempt.
//!
//! Headers: `webhook-id` (stable for a message across retries and restarts: derived from
//! the alert, the subscription and the escalation step), `webhook-timestamp` (seconds, the
//! attempt's time) and `webhook-signature` (`v1,` + base64 HMAC-SHA256 over
//! `id.timestamp.body` with the key of the `whsec_` secret).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::destination::{DestinationPolicy, PolicyResolver};
use crate::settings::WebhookSettings;

/// A subscriber's signing key: wiped on drop, never printed.
#[derive(Clone)]
pub struct WebhookSecret(zeroize::Zeroizing<Vec<u8>>);

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(..)")
    }
}

impl WebhookSecret {
    /// `whsec_` + base64 of 24 to 64 random bytes (the specification's range).
    pub fn parse(text: &str) -> Result<Self, String> {
        let body = text
            .strip_prefix("whsec_")
            .ok_or("a webhook secret starts with `whsec_`")?;
        let key = STANDARD
            .decode(body)
            .map_err(|_| "the part after `whsec_` is not base64".to_string())?;
        if !(24..=64).contains(&key.len()) {
            return Err(format!("the key is {} bytes; 24 to 64 expected", key.len()));
        }
        Ok(WebhookSecret(zeroize::Zeroizing::new(key)))
    }

    /// A fresh random secret, in its `whsec_` text form.
    pub fn generate() -> String {
        let mut key = [0u8; 32];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut key);
        format!("whsec_{}", STANDARD.encode(key))
    }

    /// The `webhook-signature` header value.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = <Hmac<Sha256>>::new_from_slice(&self.0).expect("hmac takes any key length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }

    /// What a receiver checks, with this same signing code: one of the space-separated
    /// signatures of a `webhook-signature` header is this secret's for `id`, `timestamp`
    /// and `body` (compared in constant time). The timestamp's age is the caller's to judge.
    pub fn verify(&self, id: &str, timestamp: i64, signatures: &str, body: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        let expected = self.sign(id, timestamp, body);
        signatures
            .split(' ')
            .any(|s| bool::from(s.as_bytes().ct_eq(expected.as_bytes())))
    }
}

/// The message id of one alert for one recipient: the same on every retry and after a
/// restart, different for each subscription and escalation step.
pub fn webhook_id(alert_id: &str, subscription_id: &str, step: i32) -> String {
    let mut h = Sha256::new();
    h.update(b"ewn/webhook-id/v1\0");
    h.update(alert_id.as_bytes());
    h.update(b"\0");
    h.update(subscription_id.as_bytes());
    h.update(b"\0");
    h.update(step.to_be_bytes());
    format!("msg_{}", hex::encode(&h.finalize()[..16]))
}

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// 2xx.
    Delivered { status: u16 },
    /// 410: the subscriber asks never to be called again.
    Gone,
    /// Anything else: try again later.
    Failed { status: Option<u16>, error: String },
}

/// Sends one signed request. `timeout` covers the whole attempt.
pub async fn attempt(
    client: &Client,
    url: &str,
    secret: &WebhookSecret,
    id: &str,
    content_type: &str,
    body: &[u8],
    timeout: Duration,
) -> (Attempt, Duration) {
    let started = Instant::now();
    // The resolver judges names; a URL naming an address is never resolved, so it is
    // judged here (and the scheme: the policy may have changed since the subscription).
    if let Err(e) = client.policy.check_url(url) {
        tracing::warn!(error = %e, "webhook destination refused by the policy");
        return (
            Attempt::Failed {
                status: None,
                error: "destination refused by the policy".into(),
            },
            started.elapsed(),
        );
    }
    let timestamp = chrono::Utc::now().timestamp();
    let signature = secret.sign(id, timestamp, body);
    let result = client
        .http
        .post(url)
        .timeout(timeout)
        .header("content-type", content_type)
        .header("webhook-id", id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body.to_vec())
        .send()
        .await;
    let outcome = match result {
        Ok(resp) => {
            let status = resp.status().as_u16();
            // The body is not needed; dropping the response returns the connection.
            match status {
                200..=299 => Attempt::Delivered { status },
                410 => Attempt::Gone,
                _ => Attempt::Failed {
                    status: Some(status),
                    error: format!("http {status}"),
                },
            }
        }
        Err(e) => Attempt::Failed {
            status: None,
            error: describe(&e),
        },
    };
    (outcome, started.elapsed())
}

/// A short error text without the URL (it may carry credentials in its query).
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "connection failed".into()
    } else if e.is_redirect() {
        "redirect refused".into()
    } else if e.is_body() || e.is_decode() {
        "response body error".into()
    } else {
        "request failed".into()
    }
}

/// The delay before attempt `n + 1` (n >= 1): exponential from `initial`, capped at `max`,
/// with "equal jitter" (half fixed, half random) so a crowd of failed deliveries does not
/// retry in lock-step yet never retries at once.
pub fn backoff(n: u32, initial: Duration, max: Duration) -> Duration {
    let exp = initial.saturating_mul(1u32 << (n.saturating_sub(1)).min(20));
    let d = exp.min(max);
    let half = d / 2;
    let jitter =
        rand_core::RngCore::next_u64(&mut rand_core::OsRng) % (half.as_millis() as u64 + 1);
    half + Duration::from_millis(jitter)
}

/// The HTTP client for every endpoint, with the destination policy it enforces.
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    policy: Arc<DestinationPolicy>,
}

/// The HTTP client for every endpoint: no redirects (a webhook URL is exactly where the
/// subscriber asked to be called, and a redirect would escape the destination policy), no
/// proxy from the environment (the policy must judge the address actually connected to),
/// names resolved through [`PolicyResolver`] (DNS rebinding). Up to 32 idle connections
/// per host are kept, so desks behind one gateway do not reconnect after each burst (with
/// 4, the bench's 100 endpoints on one port opened ~19,000 connections in 10 s of paced
/// load).
pub fn client(settings: &WebhookSettings) -> reqwest::Result<Client> {
    let policy = Arc::new(DestinationPolicy::new(settings));
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .dns_resolver(Arc::new(PolicyResolver::new(policy.clone())))
        .user_agent(&settings.user_agent)
        .pool_max_idle_per_host(32)
        .connect_timeout(Duration::from_secs(5))
        .build()?;
    Ok(Client { http, policy })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_specification_example_signs_as_published() {
        // The example of the Standard Webhooks specification (and its reference libraries'
        // tests): this secret, id, timestamp and payload give this signature.
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = secret.sign(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn verify_accepts_the_signature_among_several_and_nothing_altered() {
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let (id, ts, body) = (
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        let good = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
        assert!(secret.verify(id, ts, good, body));
        assert!(secret.verify(id, ts, &format!("v1,b3RoZXI= {good}"), body));
        assert!(!secret.verify(id, ts + 1, good, body));
        assert!(!secret.verify("msg_other", ts, good, body));
        assert!(!secret.verify(id, ts, good, br#"{"test": 2432232315}"#));
        assert!(!secret.verify(id, ts, "", body));
        let other = WebhookSecret::parse(&WebhookSecret::generate()).unwrap();
        assert!(!other.verify(id, ts, good, body));
    }

    #[test]
    fn ids_are_stable_and_distinct() {
        assert_eq!(webhook_id("a", "s", 0), webhook_id("a", "s", 0));
        assert_ne!(webhook_id("a", "s", 0), webhook_id("a", "s", 1));
        assert_ne!(webhook_id("a", "s", 0), webhook_id("a", "t", 0));
        assert_ne!(webhook_id("a\0s", "", 0), webhook_id("a", "\0s", 0));
    }

    #[test]
    fn secrets_are_checked_and_not_printed() {
        assert!(WebhookSecret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(WebhookSecret::parse("whsec_!!!").is_err());
        assert!(WebhookSecret::parse("whsec_AAAA").is_err());
        let s = WebhookSecret::parse(&WebhookSecret::generate()).unwrap();
        assert_eq!(format!("{s:?}"), "WebhookSecret(..)");
    }

    #[tokio::test]
    async fn a_refused_destination_is_not_contacted() {
        let c = client(&WebhookSettings::default()).unwrap();
        let secret = WebhookSecret::parse(&WebhookSecret::generate()).unwrap();
        for url in [
            "https://127.0.0.1:1/hook",
            "https://[::ffff:169.254.169.254]/",
            "http://desk.example/hook",
        ] {
            let (outcome, _) = attempt(
                &c,
                url,
                &secret,
                "msg_1",
                "text/plain",
                b"x",
                Duration::from_secs(1),
            )
            .await;
            assert_eq!(
                outcome,
                Attempt::Failed {
                    status: None,
                    error: "destination refused by the policy".into()
                },
                "{url}"
            );
        }
    }

    #[test]
    fn backoff_grows_and_stays_capped() {
        let (i, m) = (Duration::from_millis(100), Duration::from_secs(5));
        for n in 1..30 {
            let d = backoff(n, i, m);
            let cap = i.saturating_mul(1 << (n - 1).min(20)).min(m);
            assert!(
                d >= cap / 2 && d <= cap,
                "attempt {n}: {d:?} outside [{:?}, {cap:?}]",
                cap / 2
            );
        }
    }
}
