//! One converge as the CLI and the daemon run it: lock, facts, converge,
//! then status and metrics.

use std::time::{Duration, Instant};

use anyhow::Result;
use tracing::warn;

use super::metrics;
use super::status::{LastConverge, Status};
use crate::cli::Ctx;
use crate::config::LoadedConfig;
use crate::engine::{ConvergeOptions, ConvergeReport, State, converge};
use crate::facts::Facts;
use crate::lock::Lock;

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

/// What a converge did, in brief.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Full report, when the converge got that far.
    pub report: Option<ConvergeReport>,
    /// Visible host changes.
    pub changes: usize,
    /// Of which drift repairs.
    pub drift_repairs: usize,
    /// How long it took.
    pub duration_ms: u64,
    /// The error, if it failed.
    pub error: Option<String>,
}

/// How long the daemon waits for a CLI run to release the lock.
const DAEMON_LOCK_WAIT: Duration = Duration::from_secs(30 * 60);
/// How long the CLI waits for the daemon.
pub const CLI_LOCK_WAIT: Duration = Duration::from_secs(60);

/// Takes the shared lock, converges, and writes status and metrics.
pub async fn converge_once(ctx: &Ctx, cfg: &LoadedConfig, mode: Mode) -> Outcome {
    let start = Instant::now();
    let result = run(ctx, cfg, mode).await;
    let duration_ms = start.elapsed().as_millis() as u64;
    let outcome = match result {
        Ok(report) => {
            let visible: Vec<_> = report
                .plan
                .changes
                .iter()
                .filter(|c| c.is_visible())
                .collect();
            Outcome {
                changes: visible.len(),
                drift_repairs: visible.iter().filter(|c| c.is_drift()).count(),
                report: Some(report),
                duration_ms,
                error: None,
            }
        }
        Err(e) => Outcome {
            report: None,
            changes: 0,
            drift_repairs: 0,
            duration_ms,
            error: Some(format!("{e:#}")),
        },
    };
    if let Err(e) = publish(ctx, cfg, mode, &outcome) {
        warn!(error = %format!("{e:#}"), "could not write status or metrics");
    }
    outcome
}

async fn run(ctx: &Ctx, cfg: &LoadedConfig, mode: Mode) -> Result<ConvergeReport> {
    let lock_path = ctx.root.path(cfg.config.lock_path());
    let wait = if mode == Mode::Daemon {
        DAEMON_LOCK_WAIT
    } else {
        CLI_LOCK_WAIT
    };
    let _lock = tokio::task::spawn_blocking(move || Lock::acquire(&lock_path, wait)).await??;
    let facts = Facts::detect(&ctx.root);
    let mut state = State::load(&ctx.root, &cfg.config)?;
    let (no_restart, redecide, explicit) = match mode {
        Mode::Daemon => (false, false, false),
        Mode::Cli {
            no_restart,
            redecide,
        } => (no_restart, redecide, true),
    };
    // A fresh D-Bus connection per converge: holding one open would keep
    // systemd's signal subscription alive and wake the daemon on every
    // unrelated unit change.
    let ops = crate::cli::connect_ops(ctx, cfg, !no_restart).await?;
    let opts = ConvergeOptions {
        no_restart,
        explicit,
        redecide,
        ..Default::default()
    };
    converge(&ctx.root, cfg, &facts, &mut state, ops.as_ref(), opts).await
}

fn publish(ctx: &Ctx, cfg: &LoadedConfig, mode: Mode, o: &Outcome) -> Result<()> {
    let state = State::load(&ctx.root, &cfg.config).unwrap_or_default();
    let mut st = Status::read(&ctx.root, &cfg.config).unwrap_or_default();
    st.version = env!("CARGO_PKG_VERSION").into();
    if mode == Mode::Daemon {
        st.daemon_pid = Some(std::process::id());
    }
    st.updated_at = crate::engine::now_rfc3339();
    st.last_converge = Some(LastConverge {
        at: st.updated_at.clone(),
        by: if mode == Mode::Daemon {
            "daemon".into()
        } else {
            "cli".into()
        },
        ok: o.error.is_none(),
        duration_ms: o.duration_ms,
        changes: o
            .report
            .as_ref()
            .map(|r| {
                r.plan
                    .changes
                    .iter()
                    .filter(|c| c.is_visible())
                    .map(|c| format!("{} {}", c.verb(), c.path))
                    .collect()
            })
            .unwrap_or_default(),
        error: o.error.clone(),
    });
    if let Some(r) = &o.report {
        st.pending_effects = r.pending_after.clone();
        st.warnings = r.plan.warnings.clone();
        st.tier = Some(r.decisions.tier.value.as_str().into());
        st.runtime_security = Some(r.decisions.runtime_security.value.name().into());
        st.alerting_configured = cfg.config.has_alert_channel();
    }
    st.errors = o.error.iter().cloned().collect();
    st.write(&ctx.root, &cfg.config)?;
    metrics::write(&ctx.root, &cfg.config, &state, &st)
}

/// Records the cluster pass in the status file and the metrics.
pub fn publish_cluster(
    ctx: &Ctx,
    cfg: &LoadedConfig,
    outcome: &crate::rollout::pass::ClusterOutcome,
) {
    let mut st = Status::read(&ctx.root, &cfg.config).unwrap_or_default();
    st.updated_at = crate::engine::now_rfc3339();
    st.cluster = Some(outcome.line());
    st.stages = match outcome {
        crate::rollout::pass::ClusterOutcome::Rollout(r) => crate::rollout::status_of(r),
        crate::rollout::pass::ClusterOutcome::Skipped { .. } => Vec::new(),
    };
    let state = State::load(&ctx.root, &cfg.config).unwrap_or_default();
    if let Err(e) = st
        .write(&ctx.root, &cfg.config)
        .and_then(|()| metrics::write(&ctx.root, &cfg.config, &state, &st))
    {
        warn!(error = %format!("{e:#}"), "could not write status or metrics");
    }
}

/// Records an error that did not come from a converge (e.g. a bad reload).
pub fn record_error(ctx: &Ctx, cfg: &LoadedConfig, error: &str) {
    let mut st = Status::read(&ctx.root, &cfg.config).unwrap_or_default();
    st.updated_at = crate::engine::now_rfc3339();
    st.errors = vec![error.to_string()];
    let _ = st.write(&ctx.root, &cfg.config);
}

/// The STATUS= line for systemd.
pub fn status_line(o: &Outcome) -> String {
    match &o.error {
        Some(e) => format!(
            "last converge failed: {}",
            e.lines().next().unwrap_or_default()
        ),
        None => {
            let pending = o.report.as_ref().map_or(0, |r| r.pending_after.len());
            format!(
                "converged at {} ({} change(s), {} drift repair(s){})",
                crate::engine::now_rfc3339(),
                o.changes,
                o.drift_repairs,
                if pending > 0 {
                    format!(", {pending} effect(s) pending")
                } else {
                    String::new()
                }
            )
        }
    }
}
