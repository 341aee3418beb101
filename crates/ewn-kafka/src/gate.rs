//! The bound on records a producer has in flight (queued locally or awaiting the broker's
//! answer). A send takes a permit; the delivery report gives it back. Waiting for a permit
//! never spins: async waiters park on a `Notify`, blocking ones on a `Condvar`, and both
//! wait at most until a deadline. Releases only pay for a wake-up when someone waits, so the
//! common path is one atomic on each side.
//!
//! Kept apart from rdkafka so the waiting logic is tested without a broker.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use prometheus::IntGauge;

pub struct InFlight {
    limit: usize,
    count: AtomicUsize,
    /// Waiters of either kind, so `release` skips the wake-up when there are none.
    waiting: AtomicUsize,
    notify: tokio::sync::Notify,
    lock: Mutex<()>,
    changed: Condvar,
    gauge: Option<IntGauge>,
}

/// Counts a waiter for as long as it waits, including when an async wait is dropped.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(waiting: &'a AtomicUsize) -> Self {
        waiting.fetch_add(1, Ordering::SeqCst);
        Waiting(waiting)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl InFlight {
    /// At most `limit` permits (at least one); `gauge` follows the count.
    pub fn new(limit: usize, gauge: Option<IntGauge>) -> Self {
        InFlight {
            limit: limit.max(1),
            count: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            notify: tokio::sync::Notify::new(),
            lock: Mutex::new(()),
            changed: Condvar::new(),
            gauge,
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Permits taken and not yet released.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Takes a permit when one is free.
    pub fn try_acquire(&self) -> bool {
        let mut n = self.count.load(Ordering::Relaxed);
        loop {
            if n >= self.limit {
                return false;
            }
            match self
                .count
                .compare_exchange_weak(n, n + 1, Ordering::SeqCst, Ordering::Relaxed)
            {
                Ok(_) => {
                    if let Some(g) = &self.gauge {
                        g.inc();
                    }
                    return true;
                }
                Err(now) => n = now,
            }
        }
    }

    /// Waits for a permit without blocking the thread; false when none came `within`.
    pub async fn acquire(&self, within: Duration) -> bool {
        if self.try_acquire() {
            return true;
        }
        let deadline = tokio::time::Instant::now() + within;
        let _waiting = Waiting::new(&self.waiting);
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            // Registered before the check, so a release between the check and the await
            // still wakes this waiter.
            notified.as_mut().enable();
            if self.try_acquire() {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.try_acquire();
            }
        }
    }

    /// Waits for a permit, blocking the calling thread (never a runtime worker's) at most
    /// `within`; false when none came.
    pub fn acquire_blocking(&self, within: Duration) -> bool {
        if self.try_acquire() {
            return true;
        }
        let deadline = Instant::now() + within;
        let _waiting = Waiting::new(&self.waiting);
        let mut guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if self.try_acquire() {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            guard = self
                .changed
                .wait_timeout(guard, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Gives a permit back (on a record's delivery report, or when it was not queued).
    pub fn release(&self) {
        self.count.fetch_sub(1, Ordering::SeqCst);
        if let Some(g) = &self.gauge {
            g.dec();
        }
        if self.waiting.load(Ordering::SeqCst) > 0 {
            // Taking the lock orders this wake-up after a blocking waiter's failed check.
            drop(self.lock.lock().unwrap_or_else(|p| p.into_inner()));
            self.changed.notify_all();
            self.notify.notify_waiters();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn permits_are_bounded_and_come_back() {
        let gauge = IntGauge::new("g", "g").unwrap();
        let gate = InFlight::new(2, Some(gauge.clone()));
        assert!(gate.try_acquire());
        assert!(gate.try_acquire());
        assert!(!gate.try_acquire());
        assert_eq!((gate.count(), gauge.get()), (2, 2));
        gate.release();
        assert_eq!(gauge.get(), 1);
        assert!(gate.try_acquire());
        gate.release();
        gate.release();
        assert_eq!((gate.count(), gauge.get()), (0, 0));
    }

    #[test]
    fn a_zero_limit_still_lets_one_record_through() {
        let gate = InFlight::new(0, None);
        assert!(gate.try_acquire());
        assert!(!gate.try_acquire());
    }

    #[test]
    fn blocking_wait_gives_up_at_the_deadline() {
        let gate = InFlight::new(1, None);
        assert!(gate.try_acquire());
        let t = Instant::now();
        assert!(!gate.acquire_blocking(Duration::from_millis(50)));
        assert!(t.elapsed() >= Duration::from_millis(50));
    }

    #[test]
    fn blocking_wait_wakes_on_release() {
        let gate = Arc::new(InFlight::new(1, None));
        assert!(gate.try_acquire());
        let g = gate.clone();
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            g.release();
        });
        let t = Instant::now();
        assert!(gate.acquire_blocking(Duration::from_secs(10)));
        assert!(t.elapsed() < Duration::from_secs(5));
        releaser.join().unwrap();
        assert_eq!(gate.count(), 1);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn async_wait_gives_up_at_the_deadline() {
        let gate = InFlight::new(1, None);
        assert!(gate.try_acquire());
        let t = Instant::now();
        assert!(!gate.acquire(Duration::from_millis(50)).await);
        assert!(t.elapsed() >= Duration::from_millis(50));
    }

    /// On a single-threaded runtime a waiter that blocked its thread would starve the task
    /// that releases the permit: the wait completing proves it yields instead.
    #[tokio::test(flavor = "current_thread")]
    async fn async_wait_yields_the_thread_and_wakes_on_release() {
        let gate = Arc::new(InFlight::new(2, None));
        assert!(gate.try_acquire() && gate.try_acquire());
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let g = gate.clone();
                tokio::spawn(async move { g.acquire(Duration::from_secs(10)).await })
            })
            .collect();
        let g = gate.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            g.release();
            tokio::time::sleep(Duration::from_millis(20)).await;
            g.release();
        });
        for w in waiters {
            assert!(w.await.unwrap());
        }
        assert_eq!(gate.count(), 2);
        assert_eq!(gate.waiting.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_dropped_async_wait_stops_counting_as_a_waiter() {
        let gate = InFlight::new(1, None);
        assert!(gate.try_acquire());
        let _ = tokio::time::timeout(
            Duration::from_millis(10),
            gate.acquire(Duration::from_secs(10)),
        )
        .await;
        assert_eq!(gate.waiting.load(Ordering::SeqCst), 0);
    }

    /// Many threads contend for few permits; every acquire is matched by a release and
    /// nobody waits out the deadline (a lost wake-up would).
    #[test]
    fn no_wake_up_is_lost_under_contention() {
        let gate = Arc::new(InFlight::new(3, None));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let g = gate.clone();
                std::thread::spawn(move || {
                    for _ in 0..2_000 {
                        assert!(g.acquire_blocking(Duration::from_secs(20)));
                        assert!(g.count() <= 3);
                        g.release();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(gate.count(), 0);
    }
}
