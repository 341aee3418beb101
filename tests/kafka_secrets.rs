//! Kafka credentials from files: a `sasl.password_file` and a `kafka.properties_files`
//! client.properties reach librdkafka's configuration, and the secret never appears in
//! `Debug` output, in the logs of a command that connects to the broker (at trace level),
//! or in `ewn config show`. `-X` sets properties on any subcommand; aliases of pinned
//! settings are refused; a setting EWN overrides is named in a warning.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ewn::cli::Global;
use ewn_testkit::{broker, unique_prefix};

const PASSWORD: &str = "pw-from-a-file-7f3a9c1e";
const KEY_PASSWORD: &str = "props-file-secret-51d0b2";

fn private(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// A configuration on the test broker whose SASL password and a properties file's
/// password come from files.
fn setup(dir: &Path) -> PathBuf {
    let secret = private(dir, "kafka-password", &format!("{PASSWORD}\n"));
    let props = private(
        dir,
        "client.properties",
        &format!(
            "# a Kafka client.properties\nsasl.username = ewn-processor\nssl.key.password={KEY_PASSWORD}\n"
        ),
    );
    let config = dir.join("ewn.toml");
    std::fs::write(
        &config,
        format!(
            r#"[kafka]
brokers = "{}"
topic_prefix = "{}"
properties_files = ["{}"]
[kafka.properties]
"sasl.password_file" = "{}"
"#,
            broker().addr,
            unique_prefix("secrets"),
            props.display(),
            secret.display()
        ),
    )
    .unwrap();
    config
}

fn ewn(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ewn"));
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("EWN__")) {
        cmd.env_remove(k);
    }
    cmd.args(args).output().unwrap()
}

fn all_output(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn a_secret_from_a_file_reaches_librdkafka_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path());
    let global = Global {
        config: Some(config.clone()),
        ..Global::default()
    };
    let settings = global.settings(vec![]).unwrap();
    // What librdkafka is given, for every kind of client.
    for c in [
        settings.kafka.producer_config("p"),
        settings.kafka.consumer_config("c", Some("g")),
        settings.kafka.admin_config(),
    ] {
        assert_eq!(c.get("sasl.password"), Some(PASSWORD));
        assert_eq!(c.get("ssl.key.password"), Some(KEY_PASSWORD));
        assert_eq!(c.get("sasl.username"), Some("ewn-processor"));
    }
    // Debug output of the settings, at every level.
    for debug in [format!("{settings:?}"), format!("{:#?}", settings.kafka)] {
        assert!(!debug.contains(PASSWORD), "{debug}");
        assert!(!debug.contains(KEY_PASSWORD), "{debug}");
        assert!(debug.contains("sasl.password"), "the key is named: {debug}");
    }
    // A command that connects to the broker, logging everything it logs.
    let config = config.display().to_string();
    let run = ewn(&[
        "topics",
        "list",
        "--config",
        &config,
        "--log-level",
        "trace",
    ]);
    assert!(run.status.success(), "{}", all_output(&run));
    let out = all_output(&run);
    assert!(
        !out.contains(PASSWORD) && !out.contains(KEY_PASSWORD),
        "{out}"
    );
    // `ewn config show`, text and JSON: the file's path, never its content.
    for format in ["text", "json"] {
        let show = ewn(&["config", "show", "--config", &config, "--format", format]);
        let out = all_output(&show);
        assert!(show.status.success(), "{out}");
        assert!(
            !out.contains(PASSWORD) && !out.contains(KEY_PASSWORD),
            "{out}"
        );
        assert!(out.contains("kafka-password"), "the path is shown: {out}");
    }
}

#[test]
fn a_misnamed_property_is_named_without_its_secret_value() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path());
    // librdkafka has no such property; its own message would print the value.
    let wrong = private(dir.path(), "wrong", &format!("{PASSWORD}\n"));
    let arg = format!("ssl.truststore.password_file={}", wrong.display());
    let out = ewn(&[
        "topics",
        "list",
        "--config",
        &config.display().to_string(),
        "-X",
        &arg,
    ]);
    let text = all_output(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("kafka.properties.ssl.truststore.password"),
        "{text}"
    );
    assert!(!text.contains(PASSWORD), "{text}");
}

#[test]
fn a_readable_secret_file_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path());
    std::fs::set_permissions(
        dir.path().join("kafka-password"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let out = ewn(&["config", "check", "--config", &config.display().to_string()]);
    let text = all_output(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("kafka.properties.sasl.password_file:") && text.contains("chmod 600"),
        "{text}"
    );
    assert!(!text.contains(PASSWORD), "{text}");
}

#[test]
fn x_sets_properties_on_any_subcommand_aliases_of_pinned_settings_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path()).display().to_string();
    // -X reaches the settings with its origin.
    let show = ewn(&[
        "config",
        "show",
        "--config",
        &config,
        "-X",
        "socket.timeout.ms=12345",
    ]);
    let out = all_output(&show);
    assert!(show.status.success(), "{out}");
    let line = out
        .lines()
        .find(|l| l.contains("socket.timeout.ms"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(line.contains("12345") && line.contains("# flag"), "{line}");
    // librdkafka's alias of acks, from a flag, from the table, from a properties file.
    let props = private(dir.path(), "bad.properties", "request.required.acks=1\n");
    let by_file = format!("properties_files = [\"{}\"]", props.display());
    for args in [
        vec![
            "config",
            "check",
            "--config",
            &config,
            "-X",
            "request.required.acks=1",
        ],
        vec![
            "topics",
            "list",
            "--config",
            &config,
            "-X",
            "metadata.broker.list=x:1",
        ],
    ] {
        let o = ewn(&args);
        let text = all_output(&o);
        assert_ne!(o.status.code(), Some(0), "{args:?}: {text}");
        assert!(
            text.contains("is set by EWN and may not be overridden"),
            "{text}"
        );
    }
    let o = ewn(&["config", "check", "--config", &config]);
    assert!(o.status.success(), "{}", all_output(&o));
    let with_file = dir.path().join("with-file.toml");
    std::fs::write(
        &with_file,
        std::fs::read_to_string(&config)
            .unwrap()
            .replace(
                "[kafka.properties]",
                &format!("{by_file}\n[kafka.properties]"),
            )
            .replacen("properties_files = [", "# properties_files = [", 1),
    )
    .unwrap();
    let o = ewn(&[
        "config",
        "check",
        "--config",
        &with_file.display().to_string(),
    ]);
    let text = all_output(&o);
    assert_eq!(o.status.code(), Some(1), "{text}");
    assert!(
        text.contains("kafka.properties_files: `request.required.acks` (librdkafka's acks)"),
        "{text}"
    );
}

#[test]
fn a_setting_ewn_overrides_is_named_in_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path()).display().to_string();
    let o = ewn(&[
        "topics",
        "list",
        "--config",
        &config,
        "-X",
        "request.timeout.ms=99999",
    ]);
    let text = all_output(&o);
    assert!(o.status.success(), "{text}");
    assert!(
        text.contains("kafka property overridden by EWN") && text.contains("request.timeout.ms"),
        "{text}"
    );
    // Nothing to warn about without it.
    let o = ewn(&["topics", "list", "--config", &config]);
    let text = all_output(&o);
    assert!(!text.contains("overridden"), "{text}");
}

#[test]
fn properties_files_from_the_environment_are_a_list() {
    let dir = tempfile::tempdir().unwrap();
    let a = private(dir.path(), "a.properties", "sasl.username=from-a\n");
    let b = private(dir.path(), "b.properties", "sasl.username=from-b\n");
    let out = Command::new(env!("CARGO_BIN_EXE_ewn"))
        .args(["config", "show", "--format", "json"])
        .env(
            "EWN__KAFKA__PROPERTIES_FILES",
            format!("{},{}", a.display(), b.display()),
        )
        .output()
        .unwrap();
    let text = all_output(&out);
    assert!(out.status.success(), "{text}");
    for p in [&a, &b] {
        assert!(text.contains(&p.display().to_string()), "{text}");
    }
    // The later file wins.
    let global = Global {
        config: Some(setup(dir.path())),
        ..Global::default()
    };
    let mut settings = global.settings(vec![]).unwrap();
    settings.kafka.properties_files = vec![a, b];
    assert!(settings.kafka.read_files().is_empty());
    assert_eq!(
        settings.kafka.admin_config().get("sasl.username"),
        Some("from-b")
    );
}
