//! `ewn completions SHELL`: the shell completion script, generated from the same argument
//! definitions the command parses with, so it never falls behind a new flag.

use std::process::ExitCode;

use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::Cli;

#[derive(clap::Args, Debug)]
#[command(after_help = "\
Examples:
  ewn completions bash > ~/.local/share/bash-completion/completions/ewn
  ewn completions zsh > \"${fpath[1]}/_ewn\"
  ewn completions fish > ~/.config/fish/completions/ewn.fish

Exit codes: 0 printed, 2 unknown shell.")]
pub struct Args {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: ShellArg,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum ShellArg {
    Bash,
    Zsh,
    Fish,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let shell = match args.shell {
        ShellArg::Bash => Shell::Bash,
        ShellArg::Zsh => Shell::Zsh,
        ShellArg::Fish => Shell::Fish,
    };
    let mut command = Cli::command();
    clap_complete::generate(shell, &mut command, "ewn", &mut std::io::stdout().lock());
    Ok(ExitCode::SUCCESS)
}
