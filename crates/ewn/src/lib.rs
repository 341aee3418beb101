//! The `ewn` command. Each subcommand is a thin layer over a library crate: it loads the
//! layered configuration, builds the pieces, and reports. Printing to stdout is this
//! crate's job alone (the libraries log to stderr through `tracing`).
#![allow(clippy::print_stdout)]

pub mod cli;
pub mod cmd;
pub mod settings;
pub mod view;
