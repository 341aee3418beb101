//! `ewn process`: the stream processor, with `/metrics` and `/healthz`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use ewn_ops::http::{Health, router, serve};
use ewn_processor::ProcessorConfig;
use ewn_trust::secret::read_secret;

use crate::cli::Global;
use crate::cmd::{shutdown_flag, wait_for};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The trust store (trust.trust_store); reloaded when it changes.
    #[arg(long, value_name = "FILE")]
    pub trust_store: Option<PathBuf>,
    /// A TOML file of [[rules]] (process.rules_file); reloaded when it changes.
    #[arg(long, value_name = "FILE")]
    pub rules: Option<PathBuf>,
    /// Address of /metrics and /healthz (process.admin.listen).
    #[arg(long, value_name = "ADDR")]
    pub admin_listen: Option<SocketAddr>,
    /// This instance's name in rejections and logs (process.instance_id).
    #[arg(long)]
    pub instance_id: Option<String>,
}

pub async fn run(global: &Global, args: Args) -> anyhow::Result<ExitCode> {
    let mut extra = Vec::new();
    if let Some(p) = &args.trust_store {
        extra.push(("trust.trust_store".to_string(), p.display().to_string()));
    }
    if let Some(p) = &args.rules {
        extra.push(("process.rules_file".to_string(), p.display().to_string()));
    }
    if let Some(a) = args.admin_listen {
        extra.push(("process.admin.listen".to_string(), a.to_string()));
    }
    if let Some(i) = &args.instance_id {
        extra.push(("process.instance_id".to_string(), i.clone()));
    }
    let settings = global.settings(extra)?;
    let config = ProcessorConfig {
        kafka: settings.kafka,
        trust: settings.trust,
        limits: settings.limits,
        process: settings.process,
    };
    let token = match &config.process.admin.metrics_token_file {
        Some(path) => Some(read_secret(path)?.trim().to_string()),
        None => None,
    };
    let registry = ewn_ops::metrics::registry();
    let health = Arc::new(Health::default());
    let shutdown = shutdown_flag();
    let (bound, server) = serve(
        config.process.admin.listen,
        router(registry.clone(), health.clone(), token),
        wait_for(shutdown.clone()),
    )
    .await?;
    tracing::info!(admin = %bound, "metrics on http://{bound}/metrics");
    let result = ewn_processor::run(config, &registry, health, shutdown.clone()).await;
    shutdown.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = server.await;
    result?;
    Ok(ExitCode::SUCCESS)
}
