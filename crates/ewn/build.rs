#![allow(clippy::print_stdout)] // a build script speaks to cargo on stdout
//! `EWN_COMMIT` for `ewn_build_info`: the variable when set (release builds from a tarball),
//! else `git rev-parse`, else `unknown`.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

fn main() {
    println!("cargo:rerun-if-env-changed=EWN_COMMIT");
    let commit = std::env::var("EWN_COMMIT")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    // Rebuild when HEAD moves: HEAD itself, and the branch it points at.
    for path in [git(&["rev-parse", "--git-path", "HEAD"])]
        .into_iter()
        .chain(git(&["symbolic-ref", "-q", "HEAD"]).map(|r| git(&["rev-parse", "--git-path", &r])))
        .flatten()
    {
        println!("cargo:rerun-if-changed={path}");
    }
    println!("cargo:rustc-env=EWN_COMMIT={commit}");
}
