//! One converge of the host layer as the CLI and the daemon run it: lock,
//! facts, converge, then status and metrics.

use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};

use super::Ctx;
use crate::config::LoadedConfig;
use crate::engine::converge::converge_to;
use crate::engine::{ConvergeOptions, ConvergeReport};
use crate::host::DesiredState;
use crate::lock::Lock;
use crate::state::State;

/// Who runs the converge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The daemon: does not retry a configuration k3s rejected.
    Daemon,
    /// A person: retries, and may skip effects.
    Cli {
        /// List effects instead of running them.
        no_restart: bool,
        /// Decide the tier again.
        redecide: bool,
    },
}

impl Mode {
    /// `daemon` or `cli`, for status.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Daemon => "daemon",
            Mode::Cli { .. } => "cli",
        }
    }
}

/// Why a converge failed.
#[derive(Debug, thiserror::Error)]
pub enum ConvergeError {
    /// The input was refused before anything was touched (an invalid
    /// custom policy, say).
    #[error("{0:#}")]
    Refused(anyhow::Error),
    /// It failed on the way.
    #[error("{0:#}")]
    Failed(anyhow::Error),
}

impl ConvergeError {
    /// True when a path sightline writes is read-only in this process's
    /// sandbox. k3s creates its manifests directory on first start; when
    /// sightline started before that, systemd skipped its `-`-prefixed
    /// ReadWritePaths entry, and only a fresh sandbox can write there.
    pub fn is_stale_sandbox(&self) -> bool {
        match self {
            ConvergeError::Refused(_) => false,
            ConvergeError::Failed(e) => is_read_only_fs(e),
        }
    }
}

/// True when an `io::Error` in the chain says "read-only file system".
pub fn is_read_only_fs(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ReadOnlyFilesystem)
    })
}

/// What a converge did.
#[derive(Debug)]
pub struct Outcome {
    /// The report, or why it failed.
    pub result: Result<ConvergeReport, ConvergeError>,
    /// How long it took.
    pub duration: Duration,
    /// When it finished: the time the metrics report, whenever they are
    /// written.
    pub finished_at: SystemTime,
    /// The state as the converge left it, so publishing need not read
    /// state.json again; `None` when the converge never loaded it.
    pub state: Option<State>,
}

impl Outcome {
    /// Visible host changes.
    pub fn changes(&self) -> usize {
        self.result.as_ref().map_or(0, |r| {
            r.plan.changes.iter().filter(|c| c.is_visible()).count()
        })
    }

    /// Visible changes that repaired drift.
    pub fn drift_repairs(&self) -> usize {
        self.result.as_ref().map_or(0, |r| {
            r.plan
                .changes
                .iter()
                .filter(|c| c.is_visible() && c.is_drift())
                .count()
        })
    }

    /// The STATUS= line for systemd.
    pub fn status_line(&self) -> String {
        match &self.result {
            Err(e) => format!(
                "last converge failed: {}",
                e.to_string().lines().next().unwrap_or_default()
            ),
            Ok(r) => {
                let pending = r.pending_after.len();
                format!(
                    "converged at {} ({} change(s), {} drift repair(s){})",
                    crate::clock::rfc3339(self.finished_at),
                    self.changes(),
                    self.drift_repairs(),
                    if pending > 0 {
                        format!(", {pending} effect(s) pending")
                    } else {
                        String::new()
                    }
                )
            }
        }
    }
}

/// How long the daemon waits for a CLI run to release the lock.
const DAEMON_LOCK_WAIT: Duration = Duration::from_secs(30 * 60);
/// How long the CLI waits for the daemon.
pub const CLI_LOCK_WAIT: Duration = Duration::from_secs(60);

/// Takes the state lock as `mode` does.
pub async fn lock(ctx: &Ctx, cfg: &LoadedConfig, mode: Mode) -> Result<Lock> {
    let wait = if mode == Mode::Daemon {
        DAEMON_LOCK_WAIT
    } else {
        CLI_LOCK_WAIT
    };
    Lock::acquire(&ctx.root.path(cfg.config.lock_path()), wait).await
}

/// Takes the shared lock, converges, and publishes status and metrics.
pub async fn converge_once(ctx: &Ctx, cfg: &LoadedConfig, mode: Mode) -> Outcome {
    let start = Instant::now();
    let mut state = None;
    let result = run(ctx, cfg, mode, &mut state).await;
    let outcome = Outcome {
        result,
        duration: start.elapsed(),
        finished_at: SystemTime::now(),
        state,
    };
    // A person sees a refusal on the terminal, and bad input writes
    // nothing; the daemon has only its status to say it.
    let refused = matches!(outcome.result, Err(ConvergeError::Refused(_)));
    if !(refused && mode != Mode::Daemon) {
        super::publish::publish(ctx, cfg, mode, &outcome);
    }
    outcome
}

async fn run(
    ctx: &Ctx,
    cfg: &LoadedConfig,
    mode: Mode,
    state_out: &mut Option<State>,
) -> Result<ConvergeReport, ConvergeError> {
    // What the machine is and what it should get, before the lock: bad
    // input (an invalid custom policy, say) is refused without touching
    // anything, the lock file included.
    let (facts, cfg, bus) = super::observe_keeping_bus(ctx, cfg).await;
    let cfg = &cfg;
    let desired = DesiredState::compute(&ctx.root, &cfg.config, &facts)
        .map_err(|e| ConvergeError::Refused(anyhow::Error::msg(e)))?;
    // A tampered bundle must be refused before the host layer is touched:
    // the host converge may restart k3s for a release that then cannot roll
    // out. Unlike bad input it is published, so `status` shows it.
    let marker = format!("{}/bundle-verified", cfg.config.paths.run_dir);
    crate::bundle::Bundle::check(&ctx.root, &cfg.config, &marker)
        .context("the bundle is refused; nothing on the host was changed")
        .map_err(ConvergeError::Failed)?;
    converge_locked(ctx, cfg, mode, &facts, &desired, bus, state_out)
        .await
        .map_err(ConvergeError::Failed)
}

/// Whether this daemon process has swept for temp files yet. Writers
/// outside the converge lock (the notifier's queue) can only have left one
/// behind if an earlier daemon was killed, so its successor sweeps once.
static DAEMON_SWEPT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

async fn converge_locked(
    ctx: &Ctx,
    cfg: &LoadedConfig,
    mode: Mode,
    facts: &crate::facts::Facts,
    desired: &DesiredState,
    bus: Option<crate::systemd::SystemdClient>,
    state_out: &mut Option<State>,
) -> Result<ConvergeReport> {
    let lock = lock(ctx, cfg, mode).await?;
    let first_daemon_pass =
        mode == Mode::Daemon && !DAEMON_SWEPT.swap(true, std::sync::atomic::Ordering::Relaxed);
    let mut state = State::load(&ctx.root, &cfg.config)?;
    let (no_restart, redecide, explicit) = match mode {
        Mode::Daemon => (false, false, false),
        Mode::Cli {
            no_restart,
            redecide,
        } => (no_restart, redecide, true),
    };
    // A fresh D-Bus connection per converge (the one observing used):
    // holding one open across converges would keep systemd's signal
    // subscription alive and wake the daemon on every unrelated unit change.
    let ops = super::live::connect_ops_over(ctx, cfg, !no_restart, bus).await?;
    let opts = ConvergeOptions {
        no_restart,
        explicit,
        redecide,
        no_dead_writer: !lock.previous_holder_died() && !first_daemon_pass,
        ..Default::default()
    };
    let report = converge_to(
        &ctx.root,
        cfg,
        facts,
        &mut state,
        ops.as_ref(),
        opts,
        desired,
    )
    .await;
    *state_out = Some(state);
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_only_fs_is_found_in_the_chain_not_in_the_text() {
        let io = std::io::Error::from_raw_os_error(nix::libc::EROFS);
        let e = anyhow::Error::new(io)
            .context("writing /var/lib/rancher/k3s/server/manifests/sightline-00.yaml")
            .context("stage 00-namespaces");
        assert!(ConvergeError::Failed(e).is_stale_sandbox());
        // The same words in a message without the error kind decide nothing.
        let text = anyhow::anyhow!("Read-only file system (os error 30)");
        assert!(!ConvergeError::Failed(text).is_stale_sandbox());
    }
}
