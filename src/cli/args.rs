//! Argument definitions.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::{CommandFactory, Parser, Subcommand};

/// Makes a k3s node observable and watched: audit log, hardware watchdog,
/// Raspberry Pi throttle metrics and the in-cluster monitoring stack.
#[derive(Debug, Parser)]
#[command(name = "sightline", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Read and write every host path under DIR (/etc, /var, /run, /proc, /sys, /usr).
    #[arg(
        long,
        global = true,
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
        value_name = "ADDRESS",
        env = "SIGHTLINE_SYSTEM_BUS"
    )]
    pub system_bus: Option<String>,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Detect the hardware and show the decisions made from it.
    Detect {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the merged configuration and where each value came from.
    Config {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show what `apply` would change, as a unified diff per file.
    Plan {
        /// Print JSON.
        #[arg(long)]
        json: bool,
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
    /// Remove what sightline wrote and restore the files it replaced.
    Uninstall {
        /// List follow-up effects instead of running them.
        #[arg(long)]
        no_restart: bool,
    },
    /// Run as a daemon: converge, then keep the host true (sightline.service).
    Run,
    /// Show what the daemon last did, pending effects and stage health.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show sightline's own notifications (open events, last delivery per
    /// channel), or send a test through every channel.
    Notify {
        /// Send a test message through every configured channel now; exit 1 if any fails.
        #[arg(long)]
        test: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write every stage file exactly as the rollout would place it (for review or GitOps).
    Render {
        /// Render this tier instead of the one decided for this machine.
        #[arg(long, value_enum)]
        tier: Option<TierArg>,
        /// Write the files into DIR instead of printing them.
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
        /// Output file (default: [throttle] output).
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
        /// Output directory.
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
    clap_complete::generate(
        shell,
        &mut Cli::command(),
        "sightline",
        &mut std::io::stdout(),
    );
    Ok(0)
}

/// `sightline manpage --out DIR`: sightline(1), a page per command and
/// sightline.toml(5) (see `manpage`).
pub fn manpages(out: &Path) -> Result<u8> {
    for page in super::manpage::write_all(out)? {
        println!("{}", out.join(page).display());
    }
    Ok(0)
}
