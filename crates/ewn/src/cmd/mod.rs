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
