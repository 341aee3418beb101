//! `ewn metrics`: every metric family the services register, from the code itself (each
//! service's metrics registered into a scratch registry, as it does at start), so
//! `deploy/check.py`, the dashboard and the alert rules are checked against what really
//! exists rather than a copy.

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;

use anyhow::Context;
use ewn_ops::metrics::{MetricInfo, Registry, catalogue};
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

/// One family and the services (`process`, `fanout`) that export it.
#[derive(Serialize)]
pub struct Exported {
    #[serde(flatten)]
    pub info: MetricInfo,
    pub services: Vec<&'static str>,
}

/// The names a registration adds to the catalogue.
fn names_of(register: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<BTreeSet<String>> {
    let before: BTreeSet<String> = catalogue().into_iter().map(|m| m.name).collect();
    register()?;
    Ok(catalogue()
        .into_iter()
        .map(|m| m.name)
        .filter(|n| !before.contains(n))
        .collect())
}

/// Every family each service registers at start.
pub fn exported() -> anyhow::Result<Vec<Exported>> {
    // Parts registered once each, so each part's names are what it adds.
    let common = names_of(|| {
        ewn_ops::metrics::registry();
        Ok(())
    })?;
    let kafka = names_of(|| {
        ewn_kafka::KafkaMetrics::register(&prometheus_registry()).context("kafka metrics")?;
        Ok(())
    })?;
    let process = names_of(|| {
        ewn_processor::metrics::ProcessorMetrics::register(&prometheus_registry())
            .context("processor metrics")?;
        Ok(())
    })?;
    let fanout = names_of(|| {
        ewn_fanout::metrics::FanoutMetrics::register(&prometheus_registry())
            .context("fan-out metrics")?;
        Ok(())
    })?;
    let services: [(&'static str, Vec<&BTreeSet<String>>); 2] = [
        ("process", vec![&common, &kafka, &process]),
        ("fanout", vec![&common, &kafka, &fanout]),
    ];
    let mut by_name: BTreeMap<String, Vec<&'static str>> = BTreeMap::new();
    for (service, parts) in &services {
        for name in parts.iter().flat_map(|p| p.iter()) {
            by_name.entry(name.clone()).or_default().push(service);
        }
    }
    Ok(catalogue()
        .into_iter()
        .filter_map(|info| {
            let services = by_name.remove(&info.name)?;
            Some(Exported { info, services })
        })
        .collect())
}

/// A registry of its own for each part, as each service has.
fn prometheus_registry() -> Registry {
    Registry::new()
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
