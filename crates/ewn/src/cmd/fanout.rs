//! `ewn fanout`: the alert fan-out, with its desk API and console, `/metrics` and `/healthz`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use ewn_fanout::FanoutConfig;

use crate::cli::Global;
use crate::cmd::run_service;

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
    let config = FanoutConfig {
        kafka: settings.kafka,
        fanout: settings.fanout,
        subscriptions: settings.subscriptions,
        tokens: Vec::new(),
        key: None,
    };
    let admin = config.fanout.admin.clone();
    run_service(&admin, |registry, health, shutdown| async move {
        let running = ewn_fanout::start(config, &registry, health, shutdown).await?;
        tracing::info!(api = %running.api, "console on http://{}/console", running.api);
        Ok(running.task.await??)
    })
    .await
}
