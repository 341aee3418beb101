pub mod alerts;
pub mod audit;
pub mod completions;
pub mod config;
pub mod demo;
pub mod fanout;
pub mod gateway;
pub mod keygen;
pub mod metrics;
pub mod process;
pub mod publish;
pub mod remote;
pub mod requests;
pub mod rules;
pub mod schemas;
pub mod simulate;
pub mod tail;
pub mod topics;
pub mod trust;

/// Milliseconds since the Unix epoch, from the system clock.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// `--since`: an RFC 3339 time, or a duration back from now (90s, 30m, 6h, 2d), as
/// milliseconds since the Unix epoch.
pub fn parse_since(s: &str) -> Result<i64, String> {
    parse_since_at(s, now_ms())
}

/// [`parse_since`] with the clock given.
fn parse_since_at(s: &str, now: i64) -> Result<i64, String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    let (number, unit) = s
        .char_indices()
        .last()
        .map_or(("", ' '), |(i, c)| (&s[..i], c));
    let scale = match unit {
        's' => 1_000,
        'm' => 60_000,
        'h' => 3_600_000,
        'd' => 86_400_000,
        _ => 0,
    };
    let back = number
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| number.parse::<i64>().ok())
        .flatten()
        .filter(|_| scale > 0)
        .and_then(|n| n.checked_mul(scale))
        .and_then(|ms| now.checked_sub(ms))
        .filter(|t| *t >= 0);
    match back {
        Some(t) => Ok(t),
        None => Err(format!(
            "`{}` is neither an RFC 3339 time nor a duration such as 90s, 30m, 6h, 2d (back to 1970 at most)",
            ewn_model::validate::printable(s)
        )),
    }
}

/// A flag set on Ctrl-C or SIGTERM, for the services' loops to poll.
pub fn shutdown_flag() -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let flag = Arc::new(AtomicBool::new(false));
    let set = flag.clone();
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for SIGTERM");
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
        set.store(true, Ordering::Relaxed);
    });
    flag
}

/// Resolves once `flag` is set.
pub async fn wait_for(flag: std::sync::Arc<std::sync::atomic::AtomicBool>) {
    while !flag.load(std::sync::atomic::Ordering::Relaxed) {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Runs a service as every service command does: its admin server on `admin.listen`
/// (`/healthz`, and `/metrics` behind the token of `admin.metrics_token_file` when one is
/// named), then the service until it ends, or Ctrl-C or SIGTERM asks it to; then the admin
/// server stops, and the service's outcome is the command's.
pub async fn run_service<F, Fut>(
    admin: &ewn_ops::http::AdminSettings,
    service: F,
) -> anyhow::Result<std::process::ExitCode>
where
    F: FnOnce(
        prometheus::Registry,
        std::sync::Arc<ewn_ops::http::Health>,
        std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let token = match &admin.metrics_token_file {
        Some(path) => Some(ewn_trust::secret::read_secret(path)?.trim().to_string()),
        None => None,
    };
    let registry = ewn_ops::metrics::registry();
    let health = std::sync::Arc::new(ewn_ops::http::Health::default());
    let shutdown = shutdown_flag();
    let (bound, server) = ewn_ops::http::serve(
        admin.listen,
        ewn_ops::http::router(registry.clone(), health.clone(), token),
        wait_for(shutdown.clone()),
    )
    .await?;
    tracing::info!(admin = %bound, "metrics on http://{bound}/metrics");
    let result = service(registry, health, shutdown.clone()).await;
    shutdown.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = server.await;
    result?;
    Ok(std::process::ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_times_and_durations() {
        assert_eq!(parse_since("2027-01-01T00:00:00Z"), Ok(1_798_761_600_000));
        let now = 1_800_000_000_000;
        assert_eq!(parse_since_at("6h", now), Ok(now - 6 * 3_600_000));
        assert_eq!(parse_since_at("90s", now), Ok(now - 90_000));
        assert_eq!(parse_since_at("2d", now), Ok(now - 2 * 86_400_000));
        assert_eq!(parse_since_at("0m", now), Ok(now));
        for bad in [
            "6x",
            "h",
            "",
            "-1h",
            "+6h",
            "6й",
            "1.5h",
            "6 h",
            "9223372036854775807d",
            "100000000d",
        ] {
            let e = parse_since_at(bad, now).unwrap_err();
            assert!(e.contains("is neither an RFC 3339 time"), "{bad}: {e}");
        }
        assert!(
            parse_since_at("\u{1b}[31m6x", now)
                .unwrap_err()
                .contains("`?[31m6x`")
        );
    }
}
