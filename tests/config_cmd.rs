//! `ewn config check|show` through the real binary: every layer (defaults, file,
//! environment, flags) named as the origin of the values it set, secrets never printed,
//! and every problem reported with its key and where it came from.

#![allow(clippy::unwrap_used)] // tests fail loudly on anything unexpected

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

const SASL_PASSWORD: &str = "hunter2-sasl-password";
const WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn ewn(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ewn"));
    cmd.args(args);
    // Only the variables a case sets: none inherited from whoever runs the tests.
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("EWN__")) {
        cmd.env_remove(k);
    }
    cmd.envs(env.iter().copied()).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn config_file(dir: &Path, extra: &str) -> String {
    let path = dir.join("ewn.toml");
    std::fs::write(
        &path,
        format!(
            r#"[kafka]
brokers = "file-host:9092"
[kafka.properties]
"sasl.password" = "{SASL_PASSWORD}"

[[subscriptions]]
id = "kg-desk"
agency = "KG-GKNB"
clearance = "AMBER"
webhook = {{ url = "https://desk.kg.example/hook", secret = "{WEBHOOK_SECRET}" }}
{extra}"#
        ),
    )
    .unwrap();
    path.display().to_string()
}

#[test]
fn show_names_the_origin_of_every_value_and_redacts_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let file = config_file(dir.path(), "");
    let args = [
        "config",
        "show",
        "--format",
        "json",
        "--config",
        &file,
        "--topic-prefix",
        "t1.",
    ];
    let out = ewn(&args, &[("EWN__KAFKA__LINGER_MS", "7")]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    let entries: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let get = |key: &str| {
        entries
            .iter()
            .find(|e| e["key"] == key)
            .unwrap_or_else(|| panic!("{key} is shown:\n{stdout}"))
    };
    let brokers = get("kafka.brokers");
    assert_eq!(brokers["value"], "file-host:9092");
    assert_eq!(brokers["origin"], "file");
    assert_eq!(brokers["source"], file.as_str());
    let linger = get("kafka.linger_ms");
    assert_eq!(linger["value"], 7);
    assert_eq!(linger["origin"], "env");
    assert_eq!(linger["source"], "EWN__KAFKA__LINGER_MS");
    let prefix = get("kafka.topic_prefix");
    assert_eq!(
        (&prefix["value"], &prefix["origin"]),
        (&"t1.".into(), &"flag".into())
    );
    assert_eq!(get("kafka.partitions")["origin"], "default");
    let password = get(r#"kafka.properties."sasl.password""#);
    assert_eq!(password["value"], "<redacted>");
    assert_eq!(password["origin"], "file");
    let sub = get("subscriptions[0].id");
    assert_eq!(
        (&sub["value"], &sub["origin"]),
        (&"kg-desk".into(), &"file".into())
    );
    assert!(
        entries.len() > 40,
        "every setting is listed ({})",
        entries.len()
    );
    assert!(!stdout.contains(SASL_PASSWORD) && !stdout.contains("MfKQ9r8"));

    // The same for people: one `key = value  # origin` line each.
    let mut args = args.to_vec();
    args.drain(2..4);
    let out = ewn(&args, &[("EWN__KAFKA__LINGER_MS", "7")]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let line = stdout
        .lines()
        .find(|l| l.starts_with("kafka.linger_ms "))
        .unwrap();
    assert!(
        line.contains("= 7") && line.ends_with("# env EWN__KAFKA__LINGER_MS"),
        "{line}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("kafka.brokers ") && l.ends_with(&format!("# file {file}")))
    );
    assert!(!stdout.contains(SASL_PASSWORD) && !stdout.contains("MfKQ9r8"));
}

#[test]
fn check_accepts_a_valid_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let file = config_file(dir.path(), "");
    let out = ewn(&["config", "check", "--config", &file], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("configuration is valid"));
    // The example configuration shipped in deploy/ is valid too.
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/config/ewn.example.toml"
    );
    let out = ewn(&["config", "check", "--config", example], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn check_reports_every_problem_with_its_key_and_origin() {
    let dir = tempfile::tempdir().unwrap();
    // An unknown key: named with the file it is in.
    let file = config_file(dir.path(), "[trust]\nmax_record_bytez = 4096\n");
    let out = ewn(&["config", "check", "--config", &file], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("trust.max_record_bytez") && err.contains(&file),
        "{err}"
    );

    // A bad value from the environment: named with its variable.
    let file = config_file(dir.path(), "");
    let out = ewn(
        &["config", "check", "--config", &file],
        &[("EWN__KAFKA__PARTITIONS", "many")],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("EWN__KAFKA__PARTITIONS"), "{err}");

    // Values that parse but are wrong: all of them at once, and `show` says so too.
    let file = config_file(dir.path(), "[trust]\nmax_record_bytes = 10\n");
    let out = ewn(
        &["config", "check", "--config", &file],
        &[("EWN__KAFKA__PARTITIONS", "0")],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("trust.max_record_bytes"), "{err}");
    assert!(err.contains("kafka.partitions"), "{err}");
    let out = ewn(&["config", "show", "--config", &file], &[]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("trust.max_record_bytes "))
        .unwrap();
    assert!(
        line.contains("= 10") && line.ends_with(&format!("# file {file}")),
        "{line}"
    );
    assert!(text(&out.stderr).contains("trust.max_record_bytes"));
}
