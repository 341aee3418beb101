//! `ewn topics create|check|list`. Creating topics is this command's job alone: the services
//! only check at start that theirs exist as they need them, so their principals need no
//! Create ACL (deploy/README.md, "Topics and ACLs").

use std::process::ExitCode;

use ewn_kafka::admin::{self, Created};
use ewn_kafka::{Error as KafkaError, TopicSpec, Topics};

use crate::cli::Global;
use crate::settings::Settings;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub action: Action,
}

#[derive(clap::Subcommand, Debug)]
pub enum Action {
    /// Create every topic of the network that does not exist yet (cleanup policy, retention
    /// from kafka.retention_ms), then check every one as the services will.
    Create,
    /// Check, without creating anything, that every topic of the network exists with its
    /// cleanup policy, partitions and retention; exit 1 naming each problem.
    Check,
    /// List the network's topics on the cluster.
    List,
}

/// Every topic of the network, the repartition topic included.
pub fn network_specs(settings: &Settings) -> Vec<TopicSpec> {
    let processor = ewn_processor::ProcessorConfig {
        kafka: settings.kafka.clone(),
        trust: settings.trust.clone(),
        limits: settings.limits,
        process: settings.process.clone(),
    };
    Topics::new(&settings.kafka.topic_prefix).network(
        &settings.kafka.states,
        settings.kafka.partitions,
        processor.rekeyed_partitions(),
    )
}

/// Checks the network's topics; prints notes and problems; false on a problem.
async fn check(settings: &Settings, specs: &[TopicSpec]) -> anyhow::Result<bool> {
    match admin::check_topics(&settings.kafka, specs).await {
        Ok(notes) => {
            for n in notes {
                println!("note     {n}");
            }
            println!("ok       {} topics as the services need them", specs.len());
            Ok(true)
        }
        Err(KafkaError::Topics(problems)) => {
            for p in problems {
                println!("PROBLEM  {p}");
            }
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn run(global: &Global, args: Args) -> anyhow::Result<ExitCode> {
    let settings = global.settings(vec![])?;
    let topics = Topics::new(&settings.kafka.topic_prefix);
    let specs = network_specs(&settings);
    match args.action {
        Action::Create => {
            for (name, what) in admin::ensure_topics(&settings.kafka, &specs).await? {
                let what = match what {
                    Created::Created => "created",
                    Created::Existed => "exists",
                };
                println!("{what:8} {name}");
            }
            if !check(&settings, &specs).await? {
                return Ok(ExitCode::from(1));
            }
        }
        Action::Check => {
            if !check(&settings, &specs).await? {
                return Ok(ExitCode::from(1));
            }
        }
        Action::List => {
            let kafka = settings.kafka.clone();
            let mut listed =
                tokio::task::spawn_blocking(move || admin::list_topics(&kafka)).await??;
            listed.retain(|(name, _)| name.starts_with(topics.prefix()));
            listed.sort();
            for (name, partitions) in listed {
                println!("{name} ({partitions} partitions)");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
