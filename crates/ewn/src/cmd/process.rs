//! `ewn process`: the stream processor, with `/metrics` and `/healthz`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use ewn_processor::ProcessorConfig;

use crate::cli::Global;
use crate::cmd::run_service;

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
    let admin = config.process.admin.clone();
    run_service(&admin, |registry, health, shutdown| async move {
        Ok(ewn_processor::run(config, &registry, health, shutdown).await?)
    })
    .await
}
