//! The alert observer: reads `<prefix>alerts` from the start, keeps every alert, and
//! hands each one on (as an [`Event::Alert`]) once every desk cleared for it has received
//! it, or after [`SHOW_AFTER`] when some delivery is still missing.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ewn_fanout::policy::{self, Decision, Form};
use ewn_kafka::{AssignedReader, KafkaSettings, StartAt, Topics};
use ewn_model::{Alert, AvroRecord, Subscription};
use tokio::sync::mpsc::UnboundedSender;

use crate::Event;
use crate::desk::Deliveries;
use crate::error::Result;

/// How long an alert waits for its deliveries before it is shown without them.
pub const SHOW_AFTER: Duration = Duration::from_secs(5);

#[derive(Default)]
struct Seen {
    alerts: Vec<Alert>,
    /// How many of `alerts` were handed on.
    shown: usize,
}

pub struct AlertObserver {
    seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<Result<()>>,
}

/// The desks the fan-out should deliver `a` to in full, by the rule it applies itself.
pub fn eligible(desks: &[Subscription], a: &Alert) -> Vec<String> {
    desks
        .iter()
        .filter(|s| policy::decide(s, a) == Decision::Deliver(Form::Full))
        .map(|s| s.id.clone())
        .collect()
}

impl AlertObserver {
    /// Starts reading on a thread of its own; it ends when `stop` is set.
    pub fn start(
        kafka: &KafkaSettings,
        deliveries: Deliveries,
        desks: Vec<Subscription>,
        events: UnboundedSender<Event>,
        stop: Arc<AtomicBool>,
    ) -> Result<AlertObserver> {
        let topic = Topics::new(&kafka.topic_prefix).alerts();
        let reader = AssignedReader::new(
            kafka,
            "demo-observer",
            "alerts",
            |t| t == topic,
            StartAt::Beginning,
        )?;
        let seen: Arc<Mutex<Seen>> = Arc::default();
        let shared = seen.clone();
        let task = tokio::task::spawn_blocking(move || {
            let mut waiting: Vec<(Alert, Instant)> = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let polled = reader.poll(Duration::from_millis(100), |r| {
                    r.value.map(Alert::from_avro)
                })?;
                let mut seen = shared.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(Some(Ok(a))) = polled {
                    seen.alerts.push(a.clone());
                    waiting.push((a, Instant::now()));
                }
                let received = deliveries.received();
                waiting.retain(|(a, since)| {
                    let got = received.get(&a.alert_id);
                    let complete = eligible(&desks, a)
                        .iter()
                        .all(|d| got.is_some_and(|m| m.contains_key(d)));
                    if complete || since.elapsed() > SHOW_AFTER {
                        let _ = events.send(Event::Alert {
                            alert: Box::new(a.clone()),
                            received: got.cloned().unwrap_or_default(),
                        });
                        seen.shown += 1;
                        false
                    } else {
                        true
                    }
                });
            }
            Ok(())
        });
        Ok(AlertObserver { seen, task })
    }

    /// Every alert read so far, in order.
    pub fn alerts(&self) -> Vec<Alert> {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .alerts
            .clone()
    }

    /// Every alert read so far has been handed on.
    pub fn all_shown(&self) -> bool {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.shown == seen.alerts.len()
    }

    /// Waits for the reader to end (after its `stop` flag is set).
    pub async fn join(self) -> Result<()> {
        self.task.await?
    }
}

/// Per desk, whether it received `a` (and verified it); see [`crate::desk::Received`].
pub type DeskOutcomes = BTreeMap<String, bool>;
