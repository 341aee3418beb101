//! `ewn keygen`: a member state's signing key plus its trust-store entry, the network
//! blinding key, or the fan-out key. Secret files are created with mode 0600 and never overwritten.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use chrono::{DateTime, Duration, Utc};
use ewn_model::validate::is_state_code;
use ewn_trust::{BlindingKey, KeyEntry, TrustStore, keys};

use crate::cli::Global;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Member state the key signs for (ISO 3166-1 alpha-2).
    #[arg(long, requires_all = ["key_id", "secret_out", "trust_store"], conflicts_with_all = ["blinding_out", "fanout_key"])]
    pub state: Option<String>,
    /// Identifier of the new key, e.g. kz-2026-01.
    #[arg(long)]
    pub key_id: Option<String>,
    /// Where to write the private key (PKCS#8 PEM, mode 0600).
    #[arg(long, value_name = "FILE")]
    pub secret_out: Option<PathBuf>,
    /// Trust store to add the public key to (created if missing).
    #[arg(long, value_name = "FILE")]
    pub trust_store: Option<PathBuf>,
    /// Start of the key's validity (RFC 3339); default now.
    #[arg(long)]
    pub not_before: Option<DateTime<Utc>>,
    /// Length of the key's validity in days.
    #[arg(long, default_value_t = 365)]
    pub valid_days: i64,
    /// Create the network blinding key instead (32 random bytes, base64, mode 0600).
    #[arg(long, value_name = "FILE", conflicts_with = "fanout_key")]
    pub blinding_out: Option<PathBuf>,
    /// Create a fan-out key instead (`fanout.key_file`: 64 hex digits, mode 0600), to be
    /// shared by every fan-out instance of the network.
    #[arg(long, value_name = "FILE")]
    pub fanout_key: Option<PathBuf>,
}

pub fn run(_global: &Global, args: Args) -> anyhow::Result<ExitCode> {
    if let Some(path) = &args.fanout_key {
        let key = ewn_fanout::keys::FanoutKey::generate();
        ewn_trust::secret::write_secret(path, &key.to_file_text())
            .with_context(|| format!("--fanout-key {}", path.display()))?;
        println!("wrote fan-out key to {} (mode 0600)", path.display());
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(path) = &args.blinding_out {
        BlindingKey::generate().save(path)?;
        println!(
            "wrote network blinding key to {} (mode 0600)",
            path.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let (Some(state), Some(key_id), Some(secret_out), Some(store)) =
        (args.state, args.key_id, args.secret_out, args.trust_store)
    else {
        bail!(
            "give either --blinding-out FILE, --fanout-key FILE, or --state, --key-id, --secret-out and --trust-store"
        );
    };
    let state = state.to_ascii_uppercase();
    if !is_state_code(&state) {
        bail!("--state `{state}` is not an ISO 3166-1 alpha-2 code");
    }
    if args.valid_days < 1 {
        bail!("--valid-days must be at least 1");
    }
    let not_before = args.not_before.unwrap_or_else(Utc::now);
    let not_after = not_before + Duration::days(args.valid_days);
    let key = keys::generate();
    let entry = KeyEntry {
        key_id: key_id.clone(),
        state: state.clone(),
        public_key: ewn_trust::PublicKey::from(&key),
        not_before: not_before.timestamp_millis(),
        not_after: not_after.timestamp_millis(),
        revoked_at: None,
    };
    // The trust store is checked first, so a duplicate key id leaves no orphan secret.
    if let Ok(existing) = TrustStore::load(&store)
        && existing.get(&key_id).is_some()
    {
        bail!("{}: already holds key `{key_id}`", store.display());
    }
    keys::save_signing_key(&secret_out, &key)?;
    TrustStore::append_to_file(&store, &entry)
        .with_context(|| format!("adding {key_id} to {}", store.display()))?;
    println!(
        "wrote signing key {key_id} ({state}) to {} (mode 0600); public key added to {}",
        secret_out.display(),
        store.display()
    );
    Ok(ExitCode::SUCCESS)
}
