//! What the fan-out tests draw their cases from: the markings, levels and names of the
//! network, a small seeded generator, and a wait for a fan-out to settle.

use std::time::Duration;

use ewn_model::{Level, Tlp};

use super::hooks::Fanout;
use super::wait_until;

/// TLP marks, least to most restricted.
pub const TLPS: [Tlp; 5] = [
    Tlp::Clear,
    Tlp::Green,
    Tlp::Amber,
    Tlp::AmberStrict,
    Tlp::Red,
];
pub const LEVELS: [Level; 4] = [Level::Low, Level::Medium, Level::High, Level::Critical];
pub const AGENCIES: [&str; 4] = ["KZ-KNB", "KG-GKNB", "TJ-GKNB", "UZ-SGB"];
pub const STATES: [&str; 5] = ["KZ", "KG", "TJ", "UZ", "TM"];
pub const RULES: [&str; 3] = ["cross_border_movement", "area_burst", "watchlist_hit"];

/// A small deterministic generator (xorshift64*), seeded per run and printed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    pub fn pick<T: Clone>(&mut self, from: &[T]) -> T {
        from[self.below(from.len())].clone()
    }

    /// Up to `max` distinct members of `from`.
    pub fn subset<T: Clone + PartialEq>(&mut self, from: &[T], max: usize) -> Vec<T> {
        let n = self.below(max + 1);
        let mut v = Vec::new();
        for _ in 0..n {
            let x = self.pick(from);
            if !v.contains(&x) {
                v.push(x);
            }
        }
        v
    }
}

/// Waits (at most `timeout`) until the fan-out has read `n` alerts and every delivery they
/// caused is terminal, the parked ones included.
pub fn wait_settled(f: &Fanout, n: u64, timeout: Duration) {
    wait_until(&format!("{n} alerts read and settled"), timeout, || {
        f.metric("ewn_fanout_alerts_total", "") as u64 >= n
            && f.metric("ewn_fanout_pending_alerts", "") == 0.0
            && f.metric("ewn_fanout_retries_settled_total", "")
                >= f.metric("ewn_fanout_parked_deliveries_total", "")
    });
}
