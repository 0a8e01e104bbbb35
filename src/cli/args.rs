//! Argument definitions.

use super::out;
use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::{CommandFactory, Parser, Subcommand};

/// Makes a k3s node observable and watched: audit log, hardware watchdog,
/// Raspberry Pi throttle metrics and the in-cluster monitoring stack.
#[derive(Debug, Parser)]
#[command(
    name = "sightline",
    version,
    long_version = LONG_VERSION,
    about,
    long_about = None,
    propagate_version = true
)]
pub struct Cli {
    /// Read and write every host path under DIR (/etc, /var, /run, /proc, /sys, /usr).
    #[arg(
        long,
        global = true,
        help_heading = GLOBAL,
        value_name = "DIR",
        default_value = "/",
        env = "SIGHTLINE_ROOT"
    )]
    pub root: PathBuf,
    /// D-Bus address of the systemd to drive. Defaults to the system bus
    /// when --root is /; with another root, effects are only listed unless this is given.
    #[arg(
        long,
        global = true,
        help_heading = GLOBAL,
        value_name = "ADDRESS",
        env = "SIGHTLINE_SYSTEM_BUS"
    )]
    pub system_bus: Option<String>,
    /// How commands report: text for people, json for scripts (one JSON document on stdout).
    #[arg(
        short = 'o',
        long = "format",
        global = true,
        help_heading = GLOBAL,
        value_enum,
        default_value_t = Format::Text
    )]
    pub format: Format,
    /// Same as `-o json`.
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub json: bool,
    /// Log more: -v for debug, -vv for trace (SIGHTLINE_LOG, when set, wins).
    #[arg(short, long, global = true, help_heading = GLOBAL, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,
    /// Log errors only (SIGHTLINE_LOG, when set, wins).
    #[arg(short, long, global = true, help_heading = GLOBAL)]
    pub quiet: bool,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The `--help` heading of the options every command takes.
const GLOBAL: &str = "Global options";

/// `sightline --version`: the version, the commit it was built from and the
/// digest of the bundle compiled in, which together say exactly what it
/// would deploy.
const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    "\ncommit ",
    env!("SIGHTLINE_GIT_COMMIT"),
    "\nbundle ",
    env!("SIGHTLINE_BUNDLE_SUMS_SHA256"),
);

/// How a command reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// Text for people.
    #[default]
    Text,
    /// One JSON document on stdout.
    Json,
}

impl Cli {
    /// The output format, `--json` included.
    pub fn output(&self) -> Format {
        if self.json { Format::Json } else { self.format }
    }

    /// The log level `-q` or `-v` asks for, if either was given.
    pub fn log_level(&self) -> Option<&'static str> {
        match (self.quiet, self.verbose) {
            (true, _) => Some("error"),
            (_, 0) => None,
            (_, 1) => Some("debug"),
            _ => Some("trace"),
        }
    }
}

/// Commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Detect the hardware and show the decisions made from it.
    Detect,
    /// Print the merged configuration and where each value came from.
    Config {
        /// Only check that the configuration loads and is valid (for ExecReload=); print nothing on success.
        #[arg(long)]
        check: bool,
    },
    /// Show what `apply` would change, as a unified diff per file.
    Plan {
        /// Exit 0 when there is nothing to do and 2 when changes are pending.
        #[arg(long)]
        exit_code: bool,
        /// Only the host layer; leave the in-cluster stages alone.
        #[arg(long)]
        host_only: bool,
    },
    /// Converge the host (and the in-cluster stages when k3s answers).
    Apply {
        /// List follow-up effects (k3s restart, watchdog, timers) instead of running them.
        #[arg(long)]
        no_restart: bool,
        /// Only the host layer; leave the in-cluster stages alone.
        #[arg(long)]
        host_only: bool,
        /// Measure memory and decide the tier again.
        #[arg(long)]
        redecide: bool,
    },
    /// Prune the in-cluster stages, then remove what sightline wrote on the host and restore the files it replaced.
    Uninstall {
        /// List follow-up effects instead of running them.
        #[arg(long)]
        no_restart: bool,
        /// Leave the in-cluster stages (and their record in state.json) in place.
        #[arg(long)]
        keep_cluster: bool,
        /// Only show what uninstall would remove.
        #[arg(long)]
        dry_run: bool,
    },
    /// Run as a daemon: converge, then keep the host true (sightline.service).
    Run,
    /// Show what the daemon last did, pending effects and stage health.
    Status,
    /// Show sightline's own notifications (open events, last delivery per
    /// channel), or send a test through every channel.
    Notify {
        /// Send a test message through every configured channel now; exit 1 if any fails.
        #[arg(long)]
        test: bool,
    },
    /// Write every stage file exactly as the rollout would place it (for review or GitOps).
    Render {
        /// Render this tier instead of the one decided for this machine.
        #[arg(long, value_enum)]
        tier: Option<TierArg>,
        /// Write the files into DIR instead of printing them; `-` prints them. DIR is taken as
        /// given, not under --root.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Export or verify the stack bundle.
    Bundle {
        /// What to do.
        #[command(subcommand)]
        action: BundleAction,
    },
    /// Write the Raspberry Pi throttle state as node_exporter textfile metrics.
    CollectThrottle {
        /// Output file; `-` prints the metrics. A FILE given here is taken as given; without
        /// it, [throttle] output is used, under --root.
        #[arg(long, value_name = "FILE")]
        output: Option<String>,
    },
    /// Print shell completions.
    #[command(hide = true)]
    Completions {
        /// Shell.
        shell: clap_complete::Shell,
    },
    /// Write the man pages (sightline(1), one per command, sightline.toml(5)) into a directory.
    #[command(hide = true)]
    Manpage {
        /// Output directory.
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
}

/// `bundle` subcommands.
#[derive(Debug, Subcommand)]
pub enum BundleAction {
    /// Write the bundle built into this binary to DIR/bundle.tar (for packages).
    Export {
        /// Output directory (taken as given, not under --root); `-` writes the archive to stdout.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Verify a bundle archive against this binary.
    Verify {
        /// The archive.
        file: PathBuf,
    },
}

/// A tier on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TierArg {
    /// The full tier.
    Full,
    /// The light tier.
    Light,
}

impl From<TierArg> for crate::decide::Tier {
    fn from(t: TierArg) -> Self {
        match t {
            TierArg::Full => crate::decide::Tier::Full,
            TierArg::Light => crate::decide::Tier::Light,
        }
    }
}

impl Command {
    /// Commands that change things log at info; read-only ones only warn.
    pub fn default_log_level(&self) -> &'static str {
        match self {
            Command::Apply { .. } | Command::Uninstall { .. } | Command::Run => "info",
            _ => "warn",
        }
    }
}

/// `sightline completions SHELL`.
pub fn completions(shell: clap_complete::Shell) -> Result<u8> {
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut completion_command(), "sightline", &mut buf);
    std::io::Write::write_all(&mut std::io::stdout(), &buf)
        .unwrap_or_else(|e| super::out::failed(&e));
    Ok(0)
}

/// The command line without its hidden commands: some generators (bash)
/// list every subcommand, hidden or not, and clap cannot remove one.
fn completion_command() -> clap::Command {
    let full = Cli::command();
    let mut cmd = clap::Command::new("sightline").args(full.get_arguments().cloned());
    for sub in full.get_subcommands().filter(|s| !s.is_hide_set()) {
        cmd = cmd.subcommand(sub.clone());
    }
    cmd
}

/// `sightline manpage --out DIR`: sightline(1), a page per command and
/// sightline.toml(5) (see `manpage`).
pub fn manpages(out: &Path) -> Result<u8> {
    for page in super::manpage::write_all(out)? {
        out::outln!("{}", out.join(page).display());
    }
    Ok(0)
}
