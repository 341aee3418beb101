//! `ewn completions`: each script loads in its real shell and completes subcommands and
//! flags of the real command. bash, zsh and fish come from Debian (`make test-deps`); a
//! missing shell fails the test with the reason, it is never skipped.

#![allow(clippy::unwrap_used)] // tests fail loudly on anything unexpected

use std::process::{Command, Output};

fn script(shell: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ewn"))
        .args(["completions", shell])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `code` in `shell` with the completion script as its last argument (`$1` in bash
/// and zsh, `$argv[-1]` in fish).
fn in_shell(shell: &str, code: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("ewn.{shell}"));
    std::fs::write(&path, script(shell)).unwrap();
    let out: Output = Command::new(shell)
        .args(["-c", code, shell])
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {shell} ({e}): run `make test-deps`"));
    assert!(
        out.status.success(),
        "{shell}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn bash_completes_subcommands_flags_and_values() {
    // What bash does on TAB: set COMP_* and call the function `complete -p` names.
    let got = in_shell(
        "bash",
        r#"source "$1"
        complete -p ewn | grep -q -- '-F _ewn ewn' || exit 3
        t() { COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}
              COMPREPLY=(); _ewn ewn "${COMP_WORDS[-1]}" "${COMP_WORDS[-2]}"; echo "${COMPREPLY[*]}"; }
        t ewn sch; t ewn schemas --f; t ewn completions z; t ewn ta"#,
    );
    let lines: Vec<&str> = got.lines().collect();
    assert_eq!(lines[0], "schemas", "{got}");
    assert_eq!(lines[1], "--format", "{got}");
    assert!(lines[2].split(' ').any(|w| w == "zsh"), "{got}");
    assert_eq!(lines[3], "tail", "{got}");
}

#[test]
fn fish_completes_subcommands_and_flags() {
    let got = in_shell(
        "fish",
        r#"source $argv[-1]; complete -C "ewn sch"; complete -C "ewn schemas --f"; complete -C "ewn key""#,
    );
    let words: Vec<&str> = got.lines().map(|l| l.split('\t').next().unwrap()).collect();
    assert_eq!(words, ["schemas", "--format", "keygen"], "{got}");
}

#[test]
fn zsh_script_parses_and_defines_the_completer() {
    let text = script("zsh");
    assert!(text.starts_with("#compdef ewn\n"), "{}", &text[..40]);
    for sub in [
        "keygen",
        "topics",
        "publish",
        "tail",
        "schemas",
        "process",
        "fanout",
        "gateway",
        "simulate",
        "demo",
        "completions",
        "alerts",
        "trust",
    ] {
        assert!(text.contains(&format!("'{sub}:")), "{sub} is offered");
    }
    let got = in_shell(
        "zsh",
        r#"zsh -n "$1" || exit 3
        autoload -U compinit && compinit -u -d "${TMPDIR:-/tmp}/ewn-zcompdump-$$"
        source "$1"; echo "$+functions[_ewn]""#,
    );
    assert_eq!(got.trim(), "1");
}
