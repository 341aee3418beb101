//! Keeping a service's blocking stage running through transient failures.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Runs `stage` until it returns `Ok` or `shutdown` is set. A failure `fatal` says is
/// final (a configuration error) is returned; any other (the broker away) restarts the
/// stage after a backoff that doubles from 200 ms up to 10 s.
pub fn supervise<E: std::fmt::Display>(
    name: &'static str,
    shutdown: &AtomicBool,
    mut stage: impl FnMut() -> Result<(), E>,
    fatal: impl Fn(&E) -> bool,
) -> Result<(), E> {
    let mut backoff = Duration::from_millis(200);
    while !shutdown.load(Ordering::Relaxed) {
        match stage() {
            Ok(()) => return Ok(()),
            Err(e) if fatal(&e) => return Err(e),
            Err(e) => {
                tracing::warn!(stage = name, error = %e, retry_in_ms = backoff.as_millis() as u64, "stage failed; restarting from committed offsets");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_failures_restart_and_fatal_ones_stop() {
        let stop = AtomicBool::new(false);
        let mut runs = 0;
        let r: Result<(), String> = supervise(
            "t",
            &stop,
            || {
                runs += 1;
                if runs < 2 {
                    Err("away".into())
                } else {
                    Err("config".into())
                }
            },
            |e| e == "config",
        );
        assert_eq!((r, runs), (Err("config".into()), 2));
    }
}
