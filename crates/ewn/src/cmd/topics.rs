//! `ewn topics create|list`.

use std::process::ExitCode;

use ewn_kafka::Topics;
use ewn_kafka::admin::{self, Created};

use crate::cli::Global;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub action: Action,
}

#[derive(clap::Subcommand, Debug)]
pub enum Action {
    /// Create every topic of the network that does not exist yet (idempotent).
    Create,
    /// List the network's topics on the cluster.
    List,
}

pub async fn run(global: &Global, args: Args) -> anyhow::Result<ExitCode> {
    let settings = global.settings(vec![])?;
    let topics = Topics::new(&settings.kafka.topic_prefix);
    match args.action {
        Action::Create => {
            let specs = topics.all(&settings.kafka.states, settings.kafka.partitions);
            for (name, what) in admin::ensure_topics(&settings.kafka, &specs).await? {
                let what = match what {
                    Created::Created => "created",
                    Created::Existed => "exists",
                };
                println!("{what:8} {name}");
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
