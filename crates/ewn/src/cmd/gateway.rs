//! `ewn gateway`: a member state's gateway, with `/metrics` and `/healthz` on its admin
//! listener (port 9103 in deploy/).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use ewn_gateway::GatewayConfig;

use crate::cli::Global;
use crate::cmd::run_service;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Address of the posts' intake, POST /api/v1/incidents (gateway.listen).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Address of /metrics and /healthz (gateway.admin.listen).
    #[arg(long, value_name = "ADDR")]
    pub admin_listen: Option<SocketAddr>,
    /// The member state this gateway signs for (gateway.state).
    #[arg(long)]
    pub state: Option<String>,
    /// The signing key, watched and reloaded when replaced (gateway.signing_key_file).
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// The key id when the key file does not name its own (gateway.key_id).
    #[arg(long)]
    pub key_id: Option<String>,
    /// The network blinding key (gateway.blinding_key_file).
    #[arg(long, value_name = "FILE")]
    pub blinding_key: Option<PathBuf>,
    /// The posts' tokens file (gateway.tokens_file).
    #[arg(long, value_name = "FILE")]
    pub tokens: Option<PathBuf>,
    /// The spool database (gateway.spool.path).
    #[arg(long, value_name = "FILE")]
    pub spool: Option<PathBuf>,
    /// The file-drop directory, one subdirectory per post (gateway.drop.dir).
    #[arg(long, value_name = "DIR")]
    pub drop_dir: Option<PathBuf>,
}

pub async fn run(global: &Global, args: Args) -> anyhow::Result<ExitCode> {
    let mut extra = Vec::new();
    let mut set = |key: &str, value: Option<String>| {
        if let Some(v) = value {
            extra.push((key.to_string(), v));
        }
    };
    let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
    set("gateway.listen", args.listen.map(|a| a.to_string()));
    set(
        "gateway.admin.listen",
        args.admin_listen.map(|a| a.to_string()),
    );
    set("gateway.state", args.state.map(|s| s.to_ascii_uppercase()));
    set("gateway.signing_key_file", path(&args.key));
    set("gateway.key_id", args.key_id.clone());
    set("gateway.blinding_key_file", path(&args.blinding_key));
    set("gateway.tokens_file", path(&args.tokens));
    set("gateway.spool.path", path(&args.spool));
    set("gateway.drop.dir", path(&args.drop_dir));
    let settings = global.settings(extra)?;
    let config = GatewayConfig::new(settings.kafka, settings.limits, settings.gateway);
    let admin = config.gateway.admin.clone();
    run_service(&admin, |registry, health, shutdown| async move {
        let running = ewn_gateway::start(config, &registry, health, shutdown).await?;
        Ok(running.task.await??)
    })
    .await
}
