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
