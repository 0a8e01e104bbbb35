//! The command line: `sightline [--root DIR] <command>`.

mod args;
mod config_cmd;
mod converge_cmd;
mod detect;
mod manpage;
mod notify_cmd;
pub mod out;
mod output;
mod render_cmd;
mod status_cmd;
mod throttle_cmd;
mod uninstall_cmd;

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;

use crate::agent::Ctx;
use crate::sysroot::Sysroot;
pub use args::{Cli, Command, Format};

/// Exit code: success.
pub const EXIT_OK: u8 = 0;
/// Exit code: error.
pub const EXIT_ERROR: u8 = 1;
/// Exit code: `plan --exit-code` found pending changes.
pub const EXIT_CHANGES: u8 = 2;
/// Exit code: host layer converged, cluster stages pending (API unreachable).
pub const EXIT_CLUSTER_PENDING: u8 = 3;
/// Exit code: `status` found the node degraded: a stage failed or still
/// pending, or effects still owed.
pub const EXIT_DEGRADED: u8 = 4;

/// The daemon's entry point. The binary passes it in, so that the command
/// line and the daemon, both on top of the application layer, never import
/// each other.
pub type DaemonMain = fn(&Ctx) -> Result<u8>;

/// Parses arguments, runs the command, maps errors to exit codes.
pub fn main(daemon: DaemonMain) -> ExitCode {
    out::exit_quietly_on_closed_stdout();
    let cli = Cli::parse();
    crate::logging::init(cli.command.default_log_level(), cli.log_level());
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
    let json = cli.output() == Format::Json;
    match cli.command {
        Command::Detect => detect::run(&ctx, json),
        Command::Config { check } => config_cmd::run(&ctx, json, check),
        Command::Plan {
            exit_code,
            host_only,
        } => converge_cmd::plan(&ctx, json, exit_code, host_only),
        Command::Apply {
            no_restart,
            host_only,
            redecide,
        } => converge_cmd::apply(
            &ctx,
            json,
            converge_cmd::ApplyArgs {
                no_restart,
                host_only,
                redecide,
            },
        ),
        Command::Uninstall {
            no_restart,
            keep_cluster,
            dry_run,
        } => uninstall_cmd::run(
            &ctx,
            json,
            dry_run,
            crate::agent::uninstall::UninstallOptions {
                no_restart,
                keep_cluster,
            },
        ),
        Command::Run => daemon(&ctx),
        Command::Render { tier, out } => {
            render_cmd::run(&ctx, json, tier.map(Into::into), out.as_deref())
        }
        Command::Bundle {
            action: args::BundleAction::Export { out },
        } => render_cmd::export(&out, json),
        Command::Bundle {
            action: args::BundleAction::Verify { file },
        } => render_cmd::verify(&file, json),
        Command::Status => status_cmd::run(&ctx, json),
        Command::Notify { test } => notify_cmd::run(&ctx, test, json),
        Command::CollectThrottle { output } => throttle_cmd::run(&ctx, output.as_deref()),
        Command::Completions { shell } => args::completions(shell),
        Command::Manpage { out } => args::manpages(&out),
    }
}

/// Prints a value as the one JSON document of a command's report.
pub fn print_json(v: &impl serde::Serialize) -> Result<()> {
    out::outln!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}
