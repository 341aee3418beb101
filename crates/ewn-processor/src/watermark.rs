//! Event-time progress of one partition, tracked per source so no source steers another.
//!
//! A source is a reporting post (state and post id; a state's reports without a post are
//! one source). Each keeps the highest event time it sent, *clamped to the processor's
//! clock at arrival*: a clock that runs ahead counts as "now", never more (and ingest
//! rejects anything beyond `trust.max_future_skew_secs` as `FUTURE`). A source not heard
//! from for the idle timeout stops counting. The frontier is the highest (clamped) event
//! time the partition has seen. The partition's watermark is
//!
//! ```text
//! max(lowest active source, frontier - idle) - allowed lateness
//! ```
//!
//! never moving back. So a source ahead of the others moves nobody's lateness beyond what
//! a punctual honest post does (Flink's per-split minimum, with the clock as the ceiling),
//! and a source whose clock lags holds the others' windows back by the idle timeout at
//! most; its own reports then arrive late and are reported `LATE`. Everything here is
//! event time except the clamp and idleness: a replay after a restart reads old reports
//! with a clock far ahead, so a report that was clamped at first is not clamped then, and
//! lateness at the edges (within the future skew) can be judged differently.
//!
//! Sources are bounded (`process.state.max_sources` per partition): a new source beyond
//! the bound is not tracked (its reports are still correlated, judged against the
//! watermark of the others) and counted in `untracked`.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

#[derive(Debug)]
struct Source {
    progress: i64,
    seen: i64,
}

#[derive(Debug)]
pub struct Watermarks {
    lateness_ms: i64,
    idle_ms: i64,
    max_sources: usize,
    sources: HashMap<Arc<str>, Source>,
    by_progress: BTreeSet<(i64, Arc<str>)>,
    by_seen: BTreeSet<(i64, Arc<str>)>,
    /// The highest clamped event time seen.
    frontier: Option<i64>,
    watermark: Option<i64>,
    /// New sources not tracked at the bound, since the last [`Watermarks::take_untracked`].
    untracked: u64,
}

impl Watermarks {
    pub fn new(lateness_ms: i64, idle_ms: i64, max_sources: usize) -> Self {
        Watermarks {
            lateness_ms,
            idle_ms,
            max_sources,
            sources: HashMap::new(),
            by_progress: BTreeSet::new(),
            by_seen: BTreeSet::new(),
            frontier: None,
            watermark: None,
            untracked: 0,
        }
    }

    /// The source id of a report: its state and post.
    pub fn source_id(state: &str, post: Option<&str>) -> String {
        match post {
            Some(p) => format!("{state}/{p}"),
            None => state.to_string(),
        }
    }

    /// The partition's watermark: events before it are late.
    pub fn watermark(&self) -> Option<i64> {
        self.watermark
    }

    /// Whether any report was observed.
    pub fn has_seen(&self) -> bool {
        self.frontier.is_some()
    }

    /// Sources active now.
    pub fn active(&self) -> usize {
        self.sources.len()
    }

    pub fn take_untracked(&mut self) -> u64 {
        std::mem::take(&mut self.untracked)
    }

    /// Forgets the sources idle at `now` (cost: what expires).
    pub fn expire(&mut self, now: i64) {
        let cutoff = now.saturating_sub(self.idle_ms);
        while let Some((seen, id)) = self.by_seen.first().cloned() {
            if seen >= cutoff {
                break;
            }
            self.by_seen.pop_first();
            if let Some(s) = self.sources.remove(&id) {
                self.by_progress.remove(&(s.progress, id));
            }
        }
    }

    /// Records an event of `source` at event time `t`, arriving at `now`.
    pub fn observe(&mut self, source: &str, t: i64, now: i64) {
        self.expire(now);
        let progress = t.min(now);
        self.frontier = Some(self.frontier.map_or(progress, |f| f.max(progress)));
        let full = self.sources.len() >= self.max_sources;
        if let Some(s) = self.sources.get_mut(source) {
            let id: Arc<str> = Arc::from(source);
            self.by_seen.remove(&(s.seen, id.clone()));
            s.seen = now;
            self.by_seen.insert((now, id.clone()));
            if progress > s.progress {
                self.by_progress.remove(&(s.progress, id.clone()));
                s.progress = progress;
                self.by_progress.insert((progress, id));
            }
        } else if full {
            self.untracked += 1;
        } else {
            let id: Arc<str> = Arc::from(source);
            self.sources.insert(
                id.clone(),
                Source {
                    progress,
                    seen: now,
                },
            );
            self.by_seen.insert((now, id.clone()));
            self.by_progress.insert((progress, id));
        }
        self.advance();
    }

    fn advance(&mut self) {
        let Some(frontier) = self.frontier else {
            return;
        };
        let floor = frontier.saturating_sub(self.idle_ms);
        let low = self.by_progress.first().map_or(floor, |(p, _)| *p);
        let candidate = low.max(floor).saturating_sub(self.lateness_ms);
        self.watermark = Some(self.watermark.map_or(candidate, |w| w.max(candidate)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1000;
    const NOW: i64 = 1_800_000_000_000;

    #[test]
    fn a_source_ahead_moves_nobody() {
        let mut w = Watermarks::new(300 * S, 10 * S, 100);
        // KG dated 280 s ahead: counts as now.
        w.observe("KG", NOW + 280 * S, NOW);
        assert_eq!(w.watermark(), Some(NOW - 300 * S));
        // KZ's report 90 s old: now the lowest source, it keeps the watermark where it was.
        w.observe("KZ/post-1", NOW - 90 * S, NOW + S);
        assert_eq!(w.watermark(), Some(NOW - 300 * S));
        assert!(NOW - 90 * S >= w.watermark().unwrap());
    }

    #[test]
    fn a_lagging_source_holds_back_by_the_idle_timeout_at_most() {
        let mut w = Watermarks::new(300 * S, 10 * S, 100);
        w.observe("TJ", NOW - 3600 * S, NOW);
        assert_eq!(w.watermark(), Some(NOW - 3600 * S - 300 * S));
        w.observe("KZ", NOW, NOW);
        assert_eq!(w.watermark(), Some(NOW - 10 * S - 300 * S));
        // KZ falls silent; TJ, an hour behind, is the only active source and keeps
        // sending: the watermark stays with the frontier.
        w.observe("TJ", NOW - 3590 * S, NOW + 60 * S);
        assert_eq!(w.active(), 1);
        assert_eq!(w.watermark(), Some(NOW - 10 * S - 300 * S));
    }

    #[test]
    fn idle_sources_stop_counting_and_the_watermark_never_goes_back() {
        let mut w = Watermarks::new(300 * S, 10 * S, 100);
        w.observe("KZ", NOW, NOW);
        w.observe("KG", NOW + 5 * S, NOW + 5 * S);
        let before = w.watermark();
        w.observe("TJ", NOW - 100 * S, NOW + 6 * S);
        assert_eq!(w.watermark(), before, "monotone");
        w.expire(NOW + 20 * S);
        assert_eq!(w.active(), 0);
    }

    #[test]
    fn sources_are_bounded() {
        let mut w = Watermarks::new(300 * S, 10 * S, 2);
        for i in 0..5 {
            w.observe(&format!("KZ/{i}"), NOW, NOW);
        }
        assert_eq!(w.active(), 2);
        assert_eq!(w.take_untracked(), 3);
    }

    proptest::proptest! {
        /// Any event time and clock: never a panic.
        #[test]
        fn no_overflow(t in proptest::num::i64::ANY, now in proptest::num::i64::ANY) {
            let mut w = Watermarks::new(300 * S, 10 * S, 10);
            w.observe("a", t, now);
            w.observe("b", t.wrapping_add(1), now);
        }
    }
}
