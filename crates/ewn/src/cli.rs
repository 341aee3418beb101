//! Argument parsing and the layered configuration shared by every subcommand.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ewn_ops::config::Layers;
use ewn_ops::logging::LogFormat;

use crate::cmd;
use crate::settings::{LIST_KEYS, Settings};

#[derive(Parser, Debug)]
#[command(
    name = "ewn",
    version,
    about = "EWN: the regional counter-terrorism early-warning network"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every subcommand takes. Flags override `EWN__*` variables, which override the
/// configuration file, which overrides the built-in defaults.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct Global {
    /// TOML configuration file.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Kafka bootstrap servers (kafka.brokers).
    #[arg(long, global = true, value_name = "HOST:PORT,...")]
    pub brokers: Option<String>,
    /// Prefix of every topic name (kafka.topic_prefix).
    #[arg(long, global = true, value_name = "PREFIX")]
    pub topic_prefix: Option<String>,
    /// Log format (log.format).
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormatArg>,
    /// Log filter, e.g. `info` or `debug,rdkafka=warn` (log.level).
    #[arg(long, global = true)]
    pub log_level: Option<String>,
    /// A librdkafka property, as kcat's -X (kafka.properties."KEY"; repeatable; overrides
    /// the file and the environment). `-X KEY_file=PATH` reads KEY's value from a file.
    #[arg(short = 'X', global = true, value_name = "KEY=VALUE", value_parser = parse_property)]
    pub kafka_property: Vec<(String, String)>,
}

fn parse_property(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}`: expected KEY=VALUE"))?;
    if k.trim().is_empty() {
        return Err(format!("`{s}`: empty key"));
    }
    Ok((k.trim().to_string(), v.to_string()))
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum LogFormatArg {
    Pretty,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a state's signing key (and its trust-store entry) or the network blinding key.
    Keygen(cmd::keygen::Args),
    /// Create or list the network's topics.
    Topics(cmd::topics::Args),
    /// Validate, blind, sign and publish incidents from a JSON-lines file.
    Publish(cmd::publish::Args),
    /// Read a topic, decode and (for incidents) verify every record; one JSON object a line.
    Tail(cmd::tail::Args),
    /// Print each wire schema's name, Parsing Canonical Form and fingerprints.
    Schemas(cmd::schemas::Args),
    /// Print every metric family the services export: name, type, services, labels, help.
    Metrics(cmd::metrics::Args),
    /// Check a rules file and explain each rule, or run rule fixtures through the engine.
    Rules(cmd::rules::Args),
    /// A desk's alerts through the fan-out's API: list (and follow), show, acknowledge.
    Alerts(cmd::alerts::Args),
    /// List, add or revoke trust-store keys; check a key or a signed record against it.
    Trust(cmd::trust::Args),
    /// Assemble the evidence of an alert into a bundle; verify a bundle offline.
    Audit(cmd::audit::Args),
    /// Case requests: a desk asks for an incident's details, the state's operators approve
    /// or decline at their gateway, the requesting agency opens the encrypted reply.
    Requests(cmd::requests::Args),
    /// Print the shell completion script for bash, zsh or fish.
    Completions(cmd::completions::Args),
    /// Check the configuration, or show the effective one with each value's origin.
    Config(cmd::config::Args),
    /// Run the stream processor: verify, score and correlate incidents into alerts.
    Process(cmd::process::Args),
    /// Run a member state's gateway: HTTP and file-drop intake from posts, a durable spool,
    /// forwarding to the broker in order per post, signing-key rotation without a restart.
    Gateway(cmd::gateway::Args),
    /// Run the alert fan-out: deliver alerts to subscribed desks at their clearance.
    Fanout(cmd::fanout::Args),
    /// Simulate a regional border network: background traffic and planted scenarios.
    Simulate(cmd::simulate::Args),
    /// The whole network on this machine: a local broker, five states' border posts, the
    /// processor, the fan-out with two desks and the console; prints alerts as they fire.
    Demo(cmd::demo::Args),
}

impl Global {
    /// The configuration layers: defaults (implied), file, `EWN__*` environment, then these
    /// flags and the subcommand's `extra` overrides.
    pub fn layers(&self, extra: Vec<(String, String)>) -> Layers<'_> {
        let mut overrides = Vec::new();
        let mut set = |key: &str, value: Option<String>| {
            if let Some(v) = value {
                overrides.push((key.to_string(), v));
            }
        };
        set("kafka.brokers", self.brokers.clone());
        set("kafka.topic_prefix", self.topic_prefix.clone());
        set(
            "log.format",
            self.log_format.map(|f| match f {
                LogFormatArg::Pretty => "pretty".to_string(),
                LogFormatArg::Json => "json".to_string(),
            }),
        );
        set("log.level", self.log_level.clone());
        overrides.extend(extra);
        Layers {
            file: self.config.as_deref(),
            env: std::env::vars().collect(),
            overrides,
            list_keys: LIST_KEYS,
        }
    }

    /// Adds the `-X` properties (the highest layer) and reads the Kafka properties files
    /// and `_file` secrets; the problems found.
    pub fn complete(&self, settings: &mut Settings) -> Vec<String> {
        for (k, v) in &self.kafka_property {
            settings.kafka.properties.insert(k.clone(), v.clone());
        }
        settings.kafka.read_files()
    }

    /// Loads and validates the settings (see [`Global::layers`]) and starts logging.
    pub fn settings(&self, extra: Vec<(String, String)>) -> anyhow::Result<Settings> {
        let mut settings: Settings = ewn_ops::config::load(&self.layers(extra))?;
        let mut problems = self.complete(&mut settings);
        problems.extend(settings.problems());
        if !problems.is_empty() {
            return Err(ewn_ops::Error::Config(problems).into());
        }
        // A second init (tests driving several commands in one process) keeps the first.
        let _ = ewn_ops::logging::init(&settings.log);
        Ok(settings)
    }
}

impl Default for LogFormatArg {
    fn default() -> Self {
        match LogFormat::default() {
            LogFormat::Pretty => LogFormatArg::Pretty,
            LogFormat::Json => LogFormatArg::Json,
        }
    }
}

/// Exit codes: 0 success, 1 the command ran but not everything succeeded (rejected lines,
/// unconfirmed records, unverified records when asked to fail on them), 2 it could not run.
pub fn main() -> ExitCode {
    ewn_ops::metrics::set_commit(env!("EWN_COMMIT"));
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Keygen(args) => cmd::keygen::run(&cli.global, args),
            Command::Topics(args) => cmd::topics::run(&cli.global, args).await,
            Command::Publish(args) => {
                tokio::task::block_in_place(|| cmd::publish::run(&cli.global, args))
            }
            Command::Tail(args) => {
                tokio::task::block_in_place(|| cmd::tail::run(&cli.global, args))
            }
            Command::Schemas(args) => cmd::schemas::run(args),
            Command::Rules(args) => cmd::rules::run(args),
            Command::Alerts(args) => cmd::alerts::run(args).await,
            Command::Trust(args) => cmd::trust::run(&cli.global, args),
            Command::Audit(args) => {
                tokio::task::block_in_place(|| cmd::audit::run(&cli.global, args))
            }
            Command::Requests(args) => cmd::requests::run(&cli.global, args).await,
            Command::Completions(args) => cmd::completions::run(args),
            Command::Metrics(args) => cmd::metrics::run(args),
            Command::Config(args) => cmd::config::run(&cli.global, args),
            Command::Process(args) => cmd::process::run(&cli.global, args).await,
            Command::Fanout(args) => cmd::fanout::run(&cli.global, args).await,
            Command::Gateway(args) => cmd::gateway::run(&cli.global, args).await,
            Command::Simulate(args) => cmd::simulate::run(&cli.global, args).await,
            Command::Demo(args) => cmd::demo::run(&cli.global, args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
