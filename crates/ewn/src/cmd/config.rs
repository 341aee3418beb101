//! `ewn config check|show`: the configuration every subcommand loads (built-in defaults,
//! `--config FILE`, `EWN__SECTION__KEY` variables, the global flags), validated, or shown
//! value by value with the layer that set it. Secrets are never printed.

use std::process::ExitCode;

use ewn_ops::config::{Explained, Origin, explain, load};
use serde_json::json;

use crate::cli::Global;
use crate::settings::Settings;

#[derive(clap::Args, Debug)]
#[command(after_help = "\
The global flags (--config, --brokers, --topic-prefix, --log-format, --log-level, -X) and the \
EWN__SECTION__KEY environment variables apply as they do for every subcommand; a \
subcommand's own flags (e.g. `process --rules`) are not part of this view.

Examples:
  ewn config check --config /etc/ewn/ewn.toml
  EWN__KAFKA__LINGER_MS=5 ewn config show --config ewn.toml --brokers k1:9092
  ewn config show --format json | jq -c 'select(.origin != \"default\")'

Exit codes: 0 valid, 1 invalid (every problem found is printed on stderr), 2 could not run.")]
pub struct Args {
    #[command(subcommand)]
    pub action: Action,
}

#[derive(clap::Subcommand, Debug)]
pub enum Action {
    /// Load the configuration and report its problems, each with its key and origin.
    Check,
    /// Print every effective value with the layer that set it; secrets redacted.
    Show {
        /// `text`: `key = value  # origin` lines; `json`: one object a line.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

pub fn run(global: &Global, args: Args) -> anyhow::Result<ExitCode> {
    let layers = global.layers(vec![]);
    let mut settings: Settings = match load(&layers) {
        Ok(s) => s,
        Err(ewn_ops::Error::Config(problems)) => return Ok(report(&problems)),
        Err(e) => return Err(e.into()),
    };
    let mut problems = global.complete(&mut settings);
    problems.extend(settings.problems());
    match args.action {
        Action::Check => {
            if !problems.is_empty() {
                return Ok(report(&problems));
            }
            let from = match &global.config {
                Some(path) => format!("defaults, {}, environment and flags", path.display()),
                None => "defaults, environment and flags (no --config file)".to_string(),
            };
            println!("configuration is valid ({from})");
            Ok(ExitCode::SUCCESS)
        }
        Action::Show { format } => {
            let mut entries = explain(&settings, &layers)?;
            // `-X` properties are added after the layers: a flag.
            for e in &mut entries {
                if global.kafka_property.iter().any(|(k, _)| {
                    e.key == format!("kafka.properties.\"{k}\"")
                        || e.key == format!("kafka.properties.{k}")
                }) {
                    e.origin = Origin::Flag;
                }
            }
            let width = entries.iter().map(|e| e.key.len()).max().unwrap_or(0);
            for entry in entries.into_iter().map(redact) {
                match format {
                    Format::Text => {
                        let line = format!("{:width$} = {}", entry.key, entry.value);
                        println!("{line:<60}  # {}", entry.origin);
                    }
                    Format::Json => {
                        let (origin, source) = match &entry.origin {
                            Origin::Default => ("default", None),
                            Origin::File(p) => ("file", Some(p.display().to_string())),
                            Origin::Env(var) => ("env", Some(var.clone())),
                            Origin::Flag => ("flag", None),
                        };
                        println!(
                            "{}",
                            json!({
                                "key": entry.key,
                                "value": entry.value,
                                "origin": origin,
                                "source": source,
                            })
                        );
                    }
                }
            }
            // What is shown is what a service would refuse to start with.
            Ok(if problems.is_empty() {
                ExitCode::SUCCESS
            } else {
                report(&problems)
            })
        }
    }
}

fn report(problems: &[String]) -> ExitCode {
    eprintln!("invalid configuration:");
    for p in problems {
        eprintln!("  {p}");
    }
    ExitCode::from(1)
}

/// Words that mark a value as a secret (a password, a webhook secret, a token, an inline
/// key), unless the key names a file or a location that holds it.
const SECRET_WORDS: [&str; 5] = ["secret", "password", "token", "credential", "pem"];

fn is_secret(key: &str) -> bool {
    let last = key
        .rsplit(['.', ']'])
        .next()
        .unwrap_or(key)
        .trim_matches('"')
        .to_ascii_lowercase();
    let names_a_file = ["_file", "_path", "location"]
        .iter()
        .any(|s| last.ends_with(s));
    !names_a_file && SECRET_WORDS.iter().any(|w| last.contains(w))
}

fn redact(mut entry: Explained) -> Explained {
    if is_secret(&entry.key) {
        entry.value = toml::Value::String("<redacted>".into());
    }
    entry
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_recognised_by_name_and_files_are_not() {
        for key in [
            "subscriptions[0].webhook.secret",
            "kafka.properties.\"sasl.password\"",
            "kafka.properties.\"ssl.key.pem\"",
            "fanout.admin_token",
        ] {
            assert!(is_secret(key), "{key}");
        }
        for key in [
            "fanout.tokens_file",
            "subscriptions[0].webhook.secret_file",
            "kafka.properties.\"ssl.key.location\"",
            "kafka.brokers",
            "trust.trust_store",
        ] {
            assert!(!is_secret(key), "{key}");
        }
    }
}
