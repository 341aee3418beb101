//! `ewn metrics`: every metric family the services register, from the code itself (each
//! service's metrics registered into a scratch registry, as it does at start), so
//! `deploy/check.py`, the dashboard and the alert rules are checked against what really
//! exists rather than a copy.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::Context;
use ewn_ops::metrics::{MetricInfo, Registry};
use serde::Serialize;

#[derive(clap::Args, Debug)]
#[command(after_help = "\
Examples:
  ewn metrics
  ewn metrics --format json | jq -r 'select(.services | index(\"process\")) | .name'

One line per family: name, type, the services that export it, label names, help.")]
pub struct Args {
    /// `text` for people, `json` for one object a line.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// One family and the services (`process`, `fanout`, `gateway`) that export it.
#[derive(Serialize)]
pub struct Exported {
    #[serde(flatten)]
    pub info: MetricInfo,
    pub services: Vec<&'static str>,
}

/// The families a registration describes (each part into a registry of its own, as each
/// service has), whatever this process registered before.
fn part(register: impl FnOnce(&Registry) -> anyhow::Result<()>) -> anyhow::Result<Vec<MetricInfo>> {
    let (result, seen) = ewn_ops::metrics::recording(|| register(&Registry::new()));
    result?;
    Ok(seen)
}

/// Every family each service registers at start.
pub fn exported() -> anyhow::Result<Vec<Exported>> {
    let common = part(|_| {
        ewn_ops::metrics::registry();
        Ok(())
    })?;
    let kafka = part(|r| {
        ewn_kafka::KafkaMetrics::register(r).context("kafka metrics")?;
        Ok(())
    })?;
    let process = part(|r| {
        ewn_processor::metrics::ProcessorMetrics::register(r).context("processor metrics")?;
        Ok(())
    })?;
    let fanout = part(|r| {
        ewn_fanout::metrics::FanoutMetrics::register(r).context("fan-out metrics")?;
        Ok(())
    })?;
    let gateway = part(|r| {
        ewn_gateway::metrics::GatewayMetrics::register(r, []).context("gateway metrics")?;
        ewn_gateway::heartbeat::HeartbeatMetrics::register(r)
            .context("gateway heartbeat metrics")?;
        Ok(())
    })?;
    let services: [(&'static str, [&Vec<MetricInfo>; 3]); 3] = [
        ("process", [&common, &kafka, &process]),
        ("fanout", [&common, &kafka, &fanout]),
        ("gateway", [&common, &kafka, &gateway]),
    ];
    let mut by_name: BTreeMap<String, (MetricInfo, Vec<&'static str>)> = BTreeMap::new();
    for (service, parts) in services {
        for info in parts.into_iter().flatten() {
            let entry = by_name
                .entry(info.name.clone())
                .or_insert_with(|| (info.clone(), Vec::new()));
            if !entry.1.contains(&service) {
                entry.1.push(service);
            }
        }
    }
    Ok(by_name
        .into_values()
        .map(|(info, services)| Exported { info, services })
        .collect())
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    for e in exported()? {
        match args.format {
            Format::Json => println!("{}", serde_json::to_string(&e)?),
            Format::Text => println!(
                "{:<52} {:<9} {:<14} {:<28} {}",
                e.info.name,
                e.info.kind,
                e.services.join(","),
                if e.info.labels.is_empty() {
                    "-".to_string()
                } else {
                    e.info.labels.join(",")
                },
                e.info.help
            ),
        }
    }
    Ok(ExitCode::SUCCESS)
}
