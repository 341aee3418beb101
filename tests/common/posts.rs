//! A member state's border posts sending report lines to its gateway (`ewn gateway`), as
//! the gateway tests and the chaos campaign drive it: each post retries a report until the
//! gateway acknowledges it (a post never skips one) and keeps a ledger of what it was told.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The bearer token of `post`.
pub fn token(post: &str) -> String {
    format!("token-of-{post}")
}

/// The posts' HTTP client.
pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Posts `body` as `post`; the status and the JSON answer (or the transport error).
pub fn send(
    http: &reqwest::blocking::Client,
    addr: &str,
    post: &str,
    body: String,
    content_type: &str,
) -> Result<(u16, Value), String> {
    let r = http
        .post(format!("http://{addr}/api/v1/incidents"))
        .bearer_auth(token(post))
        .header("content-type", content_type)
        .body(body)
        .send()
        .map_err(|e| e.to_string())?;
    let status = r.status().as_u16();
    let text = r.text().map_err(|e| e.to_string())?;
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok((status, body))
}

/// What the posts were told: incident id -> acknowledged.
#[derive(Default)]
pub struct Ledger {
    pub acked: Mutex<BTreeSet<String>>,
    /// Per post, the ids in the order they were acknowledged.
    pub order: Mutex<BTreeMap<usize, Vec<u64>>>,
    pub refused: AtomicU64,
    /// Resends answered `duplicate` (the first answer was lost).
    pub duplicates: AtomicU64,
}

/// Posts that each send one report a request, in order, retrying a report until it is
/// acknowledged (a post never skips one), pacing every `every`.
pub fn posts_sending(
    line: fn(usize, &str, u64) -> String,
    addr: Arc<Mutex<String>>,
    posts: Vec<String>,
    every: Duration,
    stop: Arc<AtomicBool>,
    ledger: Arc<Ledger>,
) -> Vec<JoinHandle<()>> {
    posts
        .into_iter()
        .enumerate()
        .map(|(i, post)| {
            let (addr, stop, ledger) = (addr.clone(), stop.clone(), ledger.clone());
            std::thread::spawn(move || {
                let http = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .unwrap();
                let mut n = 0u64;
                let mut text = line(i, &post, n);
                while !stop.load(Ordering::Relaxed) {
                    let next = Instant::now() + every;
                    let a = addr.lock().unwrap().clone();
                    match send(&http, &a, &post, text.clone(), "application/x-ndjson") {
                        Ok((202, body)) => {
                            // A report sent again after a lost answer: `duplicate`.
                            let taken = body["accepted"].as_u64().unwrap_or(0)
                                + body["duplicate"].as_u64().unwrap_or(0);
                            assert_eq!(taken, 1, "{body}");
                            if body["duplicate"] == 1 {
                                ledger.duplicates.fetch_add(1, Ordering::Relaxed);
                            }
                            ledger.acked.lock().unwrap().insert(id(i, n));
                            ledger.order.lock().unwrap().entry(i).or_default().push(n);
                            n += 1;
                            text = line(i, &post, n);
                        }
                        Ok((status, body)) => {
                            assert!(status == 507 || status == 503, "{status} {body}");
                            ledger.refused.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => {
                            ledger.refused.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    while Instant::now() < next && !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            })
        })
        .collect()
}

/// The incident id of report `n` of post number `post_index`: a UUID made of both.
pub fn id(post_index: usize, n: u64) -> String {
    format!("{:08x}-0000-4000-8000-{:012x}", post_index, n)
}

/// The (post number, report number) of an id made by [`id`].
pub fn seq_of(incident_id: &str) -> (usize, u64) {
    let post = usize::from_str_radix(&incident_id[..8], 16).unwrap();
    let n = u64::from_str_radix(&incident_id[24..], 16).unwrap();
    (post, n)
}
