//! The command line: `sightline [--root DIR] <command>`.

mod args;
mod config_cmd;
mod converge_cmd;
mod detect;
mod manpage;
mod notify_cmd;
mod output;
mod render_cmd;
mod status_cmd;
mod throttle_cmd;

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;

use crate::agent::Ctx;
use crate::sysroot::Sysroot;
pub use args::{Cli, Command};

/// Exit code: success.
pub const EXIT_OK: u8 = 0;
/// Exit code: error.
pub const EXIT_ERROR: u8 = 1;
/// Exit code: `plan --exit-code` found pending changes.
pub const EXIT_CHANGES: u8 = 2;
/// Exit code: host layer converged, cluster stages pending (API unreachable).
pub const EXIT_CLUSTER_PENDING: u8 = 3;

/// The daemon's entry point. The binary passes it in, so that the command
/// line and the daemon, both on top of the application layer, never import
/// each other.
pub type DaemonMain = fn(&Ctx) -> Result<u8>;

/// Parses arguments, runs the command, maps errors to exit codes.
pub fn main(daemon: DaemonMain) -> ExitCode {
    let cli = Cli::parse();
    crate::logging::init(cli.command.default_log_level());
    match run(cli, daemon) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// Runs a parsed command line and returns the exit code.
pub fn run(cli: Cli, daemon: DaemonMain) -> Result<u8> {
    let root = Sysroot::new(&cli.root);
    let ctx = Ctx {
        root,
        system_bus: cli.system_bus.clone(),
    };
    match cli.command {
        Command::Detect { json } => detect::run(&ctx, json),
        Command::Config { json } => config_cmd::run(&ctx, json),
        Command::Plan {
            json,
            exit_code,
            host_only,
        } => converge_cmd::plan(&ctx, json, exit_code, host_only),
        Command::Apply {
            no_restart,
            host_only,
            redecide,
        } => converge_cmd::apply(&ctx, no_restart, host_only, redecide),
        Command::Uninstall { no_restart } => converge_cmd::uninstall(&ctx, no_restart),
        Command::Run => daemon(&ctx),
        Command::Render { tier, out } => {
            render_cmd::run(&ctx, tier.map(Into::into), out.as_deref())
        }
        Command::Bundle {
            action: args::BundleAction::Export { out },
        } => render_cmd::export(&out),
        Command::Bundle {
            action: args::BundleAction::Verify { file },
        } => render_cmd::verify(&file),
        Command::Status { json } => status_cmd::run(&ctx, json),
        Command::Notify { test, json } => notify_cmd::run(&ctx, test, json),
        Command::CollectThrottle { output } => throttle_cmd::run(&ctx, output.as_deref()),
        Command::Completions { shell } => args::completions(shell),
        Command::Manpage { out } => args::manpages(&out),
    }
}
