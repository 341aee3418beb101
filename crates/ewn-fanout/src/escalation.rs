//! Escalation: an alert at or above `fanout.escalation.min_level` that no primary
//! recipient acknowledges goes, step by step, to each step's targets (at their
//! clearance). One chain per episode and primary subscription, however many messages
//! the episode has; it stands down once the episode is acknowledged or cancelled.
//!
//! Deadlines count from the episode's alert's `created_at`, so a restart re-arms the same
//! ones. A pending step holds its alert's offset uncommitted until it is taken or stands
//! down. Time comes from an injected [`Clock`], so the scheduler is tested without
//! waiting.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ewn_model::EscalationStep;

use crate::delivery::{Seen, Ticket, Work, pause};
use crate::policy::{self, Decision};
use crate::service::Core;

/// Where the scheduler reads the time (milliseconds since the epoch).
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> i64;
}

/// The wall clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        crate::service::now_ms()
    }
}

/// A pending escalation step of one alert, for one primary subscription.
pub(crate) struct Escalation {
    pub work: Arc<Work>,
    pub owner: String,
    pub step: usize,
    pub ticket: Arc<Ticket>,
}

pub(crate) struct Scheduler {
    pending: Mutex<BTreeMap<(i64, u64), Escalation>>,
    seq: AtomicU64,
    /// (episode, subscription) chains started; bounded, oldest forgotten first.
    chains: Mutex<Seen<(Arc<str>, String)>>,
    clock: Arc<dyn Clock>,
}

impl Scheduler {
    /// The scheduler's clock (injected, so tests need not wait).
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    pub fn new(max_chains: usize, clock: Arc<dyn Clock>) -> Scheduler {
        Scheduler {
            pending: Mutex::new(BTreeMap::new()),
            seq: AtomicU64::new(0),
            chains: Mutex::new(Seen::new(max_chains)),
            clock,
        }
    }

    /// Starts the chain of `owner` for `work`'s episode, unless one was started already.
    pub fn start_chain(
        &self,
        work: &Arc<Work>,
        owner: &str,
        steps: &[EscalationStep],
        ticket: &Arc<Ticket>,
    ) -> bool {
        let fresh = self
            .chains
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((work.episode.clone(), owner.to_string()));
        if fresh {
            self.schedule(work, owner, steps, 0, ticket);
        }
        fresh
    }

    /// Arms step `step` of `steps` (nothing when there is none), holding `ticket`.
    pub fn schedule(
        &self,
        work: &Arc<Work>,
        owner: &str,
        steps: &[EscalationStep],
        step: usize,
        ticket: &Arc<Ticket>,
    ) {
        let Some(s) = steps.get(step) else {
            return;
        };
        let due = work
            .alert
            .created_at
            .saturating_add(s.after_secs.saturating_mul(1000));
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        ticket.hold();
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                (due, seq),
                Escalation {
                    work: work.clone(),
                    owner: owner.to_string(),
                    step,
                    ticket: ticket.clone(),
                },
            );
    }

    /// The steps due now, earliest first.
    pub fn take_due(&self) -> Vec<Escalation> {
        let now = self.clock.now_ms();
        let mut map = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let later = map.split_off(&(now.saturating_add(1), 0));
        std::mem::replace(&mut *map, later).into_values().collect()
    }

    pub fn len(&self) -> usize {
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Chains started and remembered (one per episode and owner; the oldest forgotten
    /// past the bound).
    pub fn chains(&self) -> usize {
        self.chains.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// Takes the escalation steps that are due: an episode still unacknowledged and not
/// cancelled goes to the step's targets (at their clearance, decided now), and the next
/// step is armed.
pub(crate) async fn escalation_loop(core: Arc<Core>) {
    let tick = Duration::from_millis(core.config.fanout.escalation.tick_ms);
    while pause(&core, tick).await {
        for e in core.escalation.take_due() {
            take(&core, e);
        }
        core.metrics
            .escalations_pending
            .set(core.escalation.len() as i64);
    }
}

fn take(core: &Arc<Core>, e: Escalation) {
    let alert = &e.work.alert;
    if core.index.settled(&e.work.episode) {
        tracing::info!(alert_id = %alert.alert_id, "acknowledged or cancelled; escalation stands down");
        e.ticket.release();
        return;
    }
    let Some(owner) = core.subs.get(&e.owner) else {
        e.ticket.release();
        return;
    };
    let Some(step) = owner.escalation.get(e.step) else {
        e.ticket.release();
        return;
    };
    let n = (e.step + 1) as i32;
    core.metrics
        .escalations
        .with_label_values(&[&n.to_string()])
        .inc();
    tracing::warn!(alert_id = %alert.alert_id, step = n, subscription = %owner.id, "unacknowledged; escalating");
    core.audit.record(crate::audit::Act {
        actor: "system",
        action: "escalation",
        object: &alert.alert_id,
        at: core.escalation_now(),
        before: None,
        after: None,
        detail: Some(format!(
            "step {n} of subscription {} to {}",
            owner.id,
            step.targets.join(", ")
        )),
    });
    let view = &e.work.view;
    for target in &step.targets {
        let Some(t) = core.subs.get(target) else {
            tracing::warn!(target = %target, "escalation target is not a subscription");
            continue;
        };
        // Named targets take the alert whatever their filters, never above their
        // clearance.
        match policy::decide_named(&t, view) {
            Decision::Deliver(form) => {
                core.escalated
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert((e.work.episode.clone(), t.id.clone()));
                core.deliver(&e.work, &t, form, n, &e.ticket);
                if t.channel != ewn_model::Channel::Webhook {
                    // Its live stream and console show it now, though its filters would not.
                    core.hub.notify(e.work.alert.clone(), &t.id);
                }
            }
            Decision::Withheld => core
                .metrics
                .withheld
                .with_label_values(&[view.tlp.as_str()])
                .inc(),
            Decision::NotSubscribed => {}
        }
    }
    core.escalation
        .schedule(&e.work, &owner.id, &owner.escalation, e.step + 1, &e.ticket);
    e.ticket.release();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicI64;

    struct Manual(AtomicI64);

    impl Clock for Manual {
        fn now_ms(&self) -> i64 {
            self.0.load(Ordering::Relaxed)
        }
    }

    fn work(id: &str, created_at: i64) -> Arc<Work> {
        let mut a = ewn_model::samples::alert();
        a.alert_id = id.into();
        a.created_at = created_at;
        let idx = crate::index::AlertIndex::new(10);
        let known = idx.observe(&a);
        Work::new(Arc::new(a), known)
    }

    #[test]
    fn steps_fall_due_by_the_injected_clock_and_hold_their_ticket() {
        let clock = Arc::new(Manual(AtomicI64::new(1_000)));
        let s = Scheduler::new(10, clock.clone());
        let steps = [
            EscalationStep {
                after_secs: 60,
                targets: vec!["duty".into()],
            },
            EscalationStep {
                after_secs: 120,
                targets: vec!["chief".into()],
            },
        ];
        let ticket = Arc::new(Ticket::default());
        let w = work("a", 1_000);
        assert!(s.start_chain(&w, "desk", &steps, &ticket));
        // One chain per episode and owner, whatever other messages of it arrive.
        assert!(!s.start_chain(&work("a", 1_000), "desk", &steps, &ticket));
        assert!(!ticket.settled());
        clock.0.store(60_999, Ordering::Relaxed);
        assert!(s.take_due().is_empty());
        clock.0.store(61_000, Ordering::Relaxed);
        let due = s.take_due();
        assert_eq!(due.len(), 1);
        assert_eq!((due[0].owner.as_str(), due[0].step), ("desk", 0));
        assert_eq!(s.len(), 0);
        for e in due {
            e.ticket.release();
        }
        assert!(ticket.settled());
    }
}
