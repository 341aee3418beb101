//! `ewn publish`: JSON lines in, signed blinded incidents out, every record confirmed.

use std::fs::File;
use std::io::{self, BufRead, BufReader, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use ewn_gateway::{PublishOptions, publish};
use ewn_trust::keys::load_signing_key;
use ewn_trust::{BlindingKey, IncidentSigner};
use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::Global;
use crate::cmd::now_ms;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The state's signing key (PKCS#8 PEM, mode 0600).
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// The signing key's id in the trust store.
    #[arg(long)]
    pub key_id: String,
    /// The network blinding key (mode 0600).
    #[arg(long, value_name = "FILE")]
    pub blinding_key: PathBuf,
    /// JSON-lines input, or `-` for standard input.
    #[arg(long, value_name = "FILE|-")]
    pub input: String,
    /// The key's member state; lines from other states are rejected (default: the first
    /// valid line's state).
    #[arg(long)]
    pub state: Option<String>,
    /// Write the lines the broker did not confirm to FILE (mode 0600) for a later retry.
    #[arg(long, value_name = "FILE")]
    pub unsent: Option<PathBuf>,
    /// How long to keep retrying each record before giving up (kafka.message_timeout_ms).
    #[arg(long, value_name = "MS")]
    pub timeout_ms: Option<u64>,
    /// Never draw a progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

pub fn run(global: &Global, args: Args) -> anyhow::Result<ExitCode> {
    let extra = args
        .timeout_ms
        .map(|t| ("kafka.message_timeout_ms".to_string(), t.to_string()));
    let settings = global.settings(extra.into_iter().collect())?;
    let mut signer = IncidentSigner::new(args.key_id.clone(), load_signing_key(&args.key)?);
    let blinding = BlindingKey::load(&args.blinding_key)?;
    let (input, size): (Box<dyn BufRead>, Option<u64>) = if args.input == "-" {
        (Box::new(io::stdin().lock()), None)
    } else {
        let file = File::open(&args.input).with_context(|| format!("opening {}", args.input))?;
        let size = file.metadata().ok().map(|m| m.len());
        (Box::new(BufReader::with_capacity(256 * 1024, file)), size)
    };
    let bar = progress_bar(size, args.no_progress);
    let options = PublishOptions {
        kafka: settings.kafka.clone(),
        limits: settings.limits,
        state: args.state.map(|s| s.to_ascii_uppercase()),
        unsent_out: args.unsent.clone(),
    };
    let outcome = publish(
        input,
        &options,
        &mut signer,
        &blinding,
        None,
        now_ms,
        |e| bar.suspend(|| eprintln!("{e}")),
        |bytes| bar.set_position(bytes),
    )?;
    bar.finish_and_clear();
    for (line, error) in outcome.report.failed.iter().take(10) {
        eprintln!("line {line}: not confirmed by the broker: {error}");
    }
    if outcome.report.failed.len() > 10 {
        eprintln!(
            "... and {} more not confirmed",
            outcome.report.failed.len() - 10
        );
    }
    let secs = outcome.elapsed.as_secs_f64().max(1e-9);
    println!(
        "published {} of {} records ({} rejected); {} confirmed by the broker, {} not confirmed; {:.0} records/s",
        outcome.queued,
        outcome.queued + outcome.rejected.len(),
        outcome.rejected.len(),
        outcome.report.confirmed,
        outcome.unconfirmed(),
        outcome.report.confirmed as f64 / secs,
    );
    if let (Some(path), true) = (&args.unsent, outcome.unconfirmed() > 0) {
        println!("unconfirmed lines written to {}", path.display());
    }
    Ok(if outcome.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn progress_bar(size: Option<u64>, disabled: bool) -> ProgressBar {
    if disabled || !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    match size {
        Some(len) if len > 1 << 20 => {
            let bar = ProgressBar::new(len);
            bar.set_style(
                ProgressStyle::with_template(
                    "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar
        }
        Some(_) => ProgressBar::hidden(),
        None => ProgressBar::new_spinner(),
    }
}
