//! `ewn fanout`: the alert fan-out, with its desk API and console, `/metrics` and `/healthz`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use ewn_fanout::FanoutConfig;
use ewn_ops::http::{Health, router, serve};
use ewn_trust::secret::read_secret;

use crate::cli::Global;
use crate::cmd::{shutdown_flag, wait_for};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Address of the desk API, live stream and console (fanout.listen).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Address of /metrics and /healthz (fanout.admin.listen).
    #[arg(long, value_name = "ADDR")]
    pub admin_listen: Option<SocketAddr>,
    /// The tokens file (fanout.tokens_file).
    #[arg(long, value_name = "FILE")]
    pub tokens: Option<PathBuf>,
    /// This instance's name in logs (fanout.instance_id).
    #[arg(long)]
    pub instance_id: Option<String>,
}

pub async fn run(global: &Global, args: Args) -> anyhow::Result<ExitCode> {
    let mut extra = Vec::new();
    if let Some(a) = args.listen {
        extra.push(("fanout.listen".to_string(), a.to_string()));
    }
    if let Some(a) = args.admin_listen {
        extra.push(("fanout.admin.listen".to_string(), a.to_string()));
    }
    if let Some(p) = &args.tokens {
        extra.push(("fanout.tokens_file".to_string(), p.display().to_string()));
    }
    if let Some(i) = &args.instance_id {
        extra.push(("fanout.instance_id".to_string(), i.clone()));
    }
    let settings = global.settings(extra)?;
    let token = match &settings.fanout.admin.metrics_token_file {
        Some(path) => Some(read_secret(path)?.trim().to_string()),
        None => None,
    };
    let config = FanoutConfig {
        kafka: settings.kafka,
        fanout: settings.fanout,
        subscriptions: settings.subscriptions,
        tokens: Vec::new(),
        key: None,
    };
    let registry = ewn_ops::metrics::registry();
    let health = Arc::new(Health::default());
    let shutdown = shutdown_flag();
    let (bound, server) = serve(
        config.fanout.admin.listen,
        router(registry.clone(), health.clone(), token),
        wait_for(shutdown.clone()),
    )
    .await?;
    tracing::info!(admin = %bound, "metrics on http://{bound}/metrics");
    let running = ewn_fanout::start(config, &registry, health, shutdown.clone()).await;
    let result = match running {
        Ok(r) => {
            tracing::info!(api = %r.api, "console on http://{}/console", r.api);
            r.task
                .await
                .map_err(anyhow::Error::from)
                .and_then(|r| r.map_err(Into::into))
        }
        Err(e) => Err(e.into()),
    };
    shutdown.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = server.await;
    result?;
    Ok(ExitCode::SUCCESS)
}
