//! `ewn simulate`: a synthetic regional border network (ewn-sim) publishing signed,
//! blinded incidents from five member states: background traffic that raises no alert,
//! plus planted scenarios that each raise one alert of a default rule. A demo driver, and
//! a load generator against any cluster (`--rate`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use ewn_sim::keys::TRUST_STORE_FILE;
use ewn_sim::{DEFAULT_RATE, Scenario, SimConfig, SimKeys, Summary};

use crate::cli::Global;
use crate::cmd::{now_ms, shutdown_flag};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Directory of the simulated states' keys: `<cc>.pem` per state (kz, kg, tj, uz,
    /// tm), the network blinding key `blind.key`, and by default the trust store
    /// `trust.toml`. Each key id is looked up in the trust store by its public key.
    #[arg(long, value_name = "DIR")]
    pub keys: PathBuf,
    /// Create the keys in DIR (a signing key per state, their trust-store entries, the
    /// blinding key) and exit, so the processor can be started on the trust store first.
    #[arg(long)]
    pub init_keys: bool,
    /// The trust store with the keys' public halves (default DIR/trust.toml); give the
    /// processor the same file.
    #[arg(long, value_name = "FILE")]
    pub trust_store: Option<PathBuf>,
    /// Background incidents per second (0: scenarios only).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_RATE)]
    pub rate: f64,
    /// Run this long, then plant what is left and stop (default: until Ctrl-C).
    #[arg(long, value_name = "SECS")]
    pub duration: Option<u64>,
    /// Seed of the traffic; identifiers are also salted with the start time, so a rerun
    /// is never a replay.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Scenarios to plant: all, none, or a comma-separated list of border_hop,
    /// district_burst, watchlist_entry, vanished_exit, returnee_entry.
    #[arg(long, value_name = "LIST", default_value = "all")]
    pub scenarios: String,
    /// Print the summary as one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(global: &Global, args: Args) -> anyhow::Result<ExitCode> {
    let settings = global.settings(Vec::new())?;
    let scenarios = Scenario::parse_list(&args.scenarios)?;
    let trust_store = args
        .trust_store
        .clone()
        .unwrap_or_else(|| args.keys.join(TRUST_STORE_FILE));
    if args.init_keys {
        SimKeys::init(&args.keys, &trust_store, now_ms())?;
        println!(
            "wrote signing keys for {} and the blinding key to {} (mode 0600); public keys \
             added to {}",
            ewn_sim::network::state_codes().join(", "),
            args.keys.display(),
            trust_store.display()
        );
        println!(
            "next: ewn process --trust-store {}; then ewn simulate --keys {}",
            trust_store.display(),
            args.keys.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let keys = SimKeys::load(&args.keys, &trust_store, now_ms())?;
    let config = SimConfig {
        seed: args.seed,
        rate_per_sec: args.rate,
        duration: args.duration.map(Duration::from_secs),
        scenarios,
        ..SimConfig::new(settings.kafka)
    };
    let problems = config.problems();
    if !problems.is_empty() {
        return Err(ewn_sim::Error::Config(problems).into());
    }
    let summary = ewn_sim::run(config, keys, shutdown_flag()).await?;
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        print_summary(&summary);
    }
    Ok(if summary.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn print_summary(s: &Summary) {
    println!(
        "sent {} incidents in {:.1} s: {} confirmed by the broker, {} not confirmed",
        s.sent,
        s.elapsed_ms as f64 / 1000.0,
        s.confirmed,
        s.failed
    );
    for e in &s.errors {
        println!("  delivery error: {e}");
    }
    println!(
        "background: {} at {:.1}/s (target {}/s); scenarios: {}",
        s.background,
        s.background_rate(),
        s.target_rate,
        s.per_scenario.values().sum::<u64>()
    );
    let states: Vec<String> = s
        .per_state
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    println!("per state: {}", states.join(", "));
    if s.planted.is_empty() {
        println!("no scenario planted: expect no alert");
        return;
    }
    println!("planted scenarios and the alert each should raise:");
    for p in &s.planted {
        println!(
            "  {:<16} -> {:<22} key {} ({} report{})",
            p.scenario,
            p.rule,
            p.key,
            p.incident_ids.len(),
            if p.incident_ids.len() == 1 { "" } else { "s" }
        );
    }
}
