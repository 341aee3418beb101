//! `ewn rules check` and `ewn rules test`, run as a user runs them: the default rules and
//! their own fixtures pass, and a broken rule or a wrong expectation is named.

#![allow(clippy::unwrap_used)] // tests fail loudly on anything unexpected

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

fn ewn(args: &[&str]) -> (i32, String) {
    let out: Output = Command::new(env!("CARGO_BIN_EXE_ewn"))
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap(), text)
}

#[test]
fn the_default_rules_check_and_are_explained_in_words() {
    let file = repo("deploy/config/rules.default.toml");
    let (code, out) = ewn(&["rules", "check", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("5 rules, valid"), "{out}");
    assert!(
        out.contains(
            "cross_border_movement (distinct, HIGH): an alert on incidents from 2 or more \
             distinct states for the same subject within 72 h."
        ),
        "{out}"
    );
    assert!(
        out.contains("exit_without_entry (absence, MEDIUM)"),
        "{out}"
    );
    let (code, out) = ewn(&["rules", "check", "--quiet", file.to_str().unwrap()]);
    assert_eq!((code, out.as_str()), (0, ""));
}

#[test]
fn a_broken_rules_file_is_refused_naming_the_rule_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rules.toml");
    let text = std::fs::read_to_string(repo("deploy/config/rules.default.toml"))
        .unwrap()
        .replacen("count = 5", "count = 0", 1);
    std::fs::write(&path, text).unwrap();
    let (code, out) = ewn(&["rules", "check", path.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("area_burst") && out.contains("count"), "{out}");
    std::fs::write(&path, "[[rules]]\nname = \"x\"\nkind = \"sometimes\"\n").unwrap();
    let (code, out) = ewn(&["rules", "check", path.to_str().unwrap()]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("sometimes"), "{out}");
}

#[test]
fn the_default_rules_pass_their_own_fixtures() {
    let (code, out) = ewn(&[
        "rules",
        "test",
        repo("deploy/config/rules.default.test.toml")
            .to_str()
            .unwrap(),
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(" 0 failed"), "{out}");
    assert!(!out.contains("FAILED"), "{out}");
}

#[test]
fn a_wrong_expectation_or_an_unexpected_alert_fails_and_is_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        repo("deploy/config/rules.default.toml"),
        dir.path().join("rules.default.toml"),
    )
    .unwrap();
    let fixtures = std::fs::read_to_string(repo("deploy/config/rules.default.test.toml")).unwrap();
    // The area burst of five now expects six alerts; the watch-list case expects nothing.
    let wrong = fixtures
        .replacen(
            "rule = \"area_burst\"\nmsg_type = \"ALERT\"\ncount = 1",
            "rule = \"area_burst\"\nmsg_type = \"ALERT\"\ncount = 6",
            1,
        )
        .replacen(
            "[[cases.expect]]\nrule = \"watchlist_hit\"\nmsg_type = \"ALERT\"\ncount = 1\nstates = [\"KZ\"]\n",
            "",
            1,
        );
    assert_ne!(wrong, fixtures);
    let path = dir.path().join("fixtures.toml");
    std::fs::write(&path, wrong).unwrap();
    let (code, out) = ewn(&["rules", "test", path.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("expected 6 x area_burst ALERT level HIGH states [\"KZ\"], got 1"),
        "{out}"
    );
    assert!(out.contains("unexpected: 1 x watchlist_hit ALERT"), "{out}");
    assert!(out.contains("2 failed"), "{out}");
}
