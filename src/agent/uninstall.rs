//! `uninstall` as a whole: first the cluster (every recorded stage pruned
//! through the rollout's own prune: file emptied, objects waited for, file
//! removed), then sightline's own metrics textfiles, then the host files
//! (`engine::uninstall`).
//!
//! The stage records in state.json are the only list of what sightline put
//! into k3s. The engine clears the state directory once the host is clean,
//! so the records of stages that could not be pruned (API down, prune timed
//! out, `--keep-cluster`) are written back afterwards: a later `uninstall`
//! finishes the job.

use anyhow::{Context, Result};
use serde::Serialize;

use super::{Ctx, Mode};
use crate::config::LoadedConfig;
use crate::engine::ops::Ops as _;
use crate::engine::{ConvergeOptions, ConvergeReport};
use crate::host::DesiredState;
use crate::rollout::{Progress, Rollout, RolloutResult, StageReport, Timing};
use crate::state::{StageRecord, State};

/// What to do.
#[derive(Debug, Clone, Copy, Default)]
pub struct UninstallOptions {
    /// List follow-up effects instead of running them.
    pub no_restart: bool,
    /// Leave the stages in the cluster (and their record).
    pub keep_cluster: bool,
}

/// What happened to the stages sightline deployed.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum ClusterRemoval {
    /// No stage was recorded.
    NothingDeployed,
    /// Every stage was pruned and its file removed.
    Pruned {
        /// Each stage.
        stages: Vec<StageReport>,
    },
    /// `--keep-cluster`: the stage files stay, and so does their record.
    KeptOnRequest {
        /// Host paths of the stage files left.
        files: Vec<String>,
    },
    /// The prune could not finish; the files and records of the stages not
    /// pruned stay.
    Left {
        /// Why.
        reason: String,
        /// Host paths of the stage files left.
        files: Vec<String>,
        /// Each stage the prune reached.
        stages: Vec<StageReport>,
    },
}

impl ClusterRemoval {
    /// The stage files left in k3s's manifests directory.
    pub fn files_left(&self) -> &[String] {
        match self {
            ClusterRemoval::KeptOnRequest { files } | ClusterRemoval::Left { files, .. } => files,
            _ => &[],
        }
    }
}

/// What `uninstall` did.
#[derive(Debug, Serialize)]
pub struct UninstallOutcome {
    /// The stages.
    pub cluster: ClusterRemoval,
    /// The host converge to "nothing".
    pub host: ConvergeReport,
    /// What the host half left in place, and why.
    pub kept: Vec<String>,
    /// sightline's own metrics textfiles removed.
    pub removed_metrics: Vec<String>,
    /// True when `sightline.service` was running and uninstall stopped
    /// and disabled it.
    pub daemon_stopped: bool,
}

/// The daemon's unit.
const DAEMON_UNIT: &str = "sightline.service";

/// Stops and disables the daemon when it runs: it keeps the host files and
/// the stages as configured, so beside uninstall it would put back what
/// uninstall removes. Returns whether it did.
async fn stop_daemon(ctx: &Ctx, cfg: &LoadedConfig, opts: UninstallOptions) -> Result<bool> {
    use crate::systemd::ActiveState;
    // Without systemd (a scratch root) there is no daemon to race.
    let Some(ops) = super::connect_ops(ctx, cfg, true).await.ok().flatten() else {
        return Ok(false);
    };
    let status = ops.unit_status(DAEMON_UNIT).await?;
    if matches!(
        status.active_state,
        ActiveState::Inactive | ActiveState::Failed
    ) {
        return Ok(false);
    }
    if opts.no_restart {
        anyhow::bail!(
            "{DAEMON_UNIT} is {} and would put back what uninstall removes; stop it first (`sudo systemctl disable --now sightline`), or run uninstall without --no-restart, which stops it",
            status.active_state
        );
    }
    ops.disable_and_stop(DAEMON_UNIT)
        .await
        .with_context(|| format!("stopping {DAEMON_UNIT} before uninstalling"))?;
    tracing::info!(unit = DAEMON_UNIT, "stopped and disabled the daemon");
    Ok(true)
}

/// What `uninstall` would do (`uninstall --dry-run`).
#[derive(Debug, Serialize)]
pub struct UninstallPreview {
    /// Stage files that would be pruned (or left with `--keep-cluster`).
    pub stage_files: Vec<String>,
    /// True with `--keep-cluster`.
    pub keep_cluster: bool,
    /// The host changes.
    pub host: ConvergeReport,
    /// Metrics textfiles that would be removed.
    pub metrics_files: Vec<String>,
}

/// sightline's own `.prom` files (`[daemon] metrics_file`, `[throttle] output`), as host paths.
fn metrics_files(cfg: &LoadedConfig) -> Vec<String> {
    let c = &cfg.config;
    let mut v = vec![c.daemon.metrics_file.clone(), c.throttle.output.clone()];
    v.dedup();
    v
}

fn stage_files(cfg: &LoadedConfig, stages: &[(&String, &StageRecord)]) -> Vec<String> {
    stages
        .iter()
        .map(|(_, r)| format!("{}/{}", cfg.config.paths.manifests_dir, r.file))
        .collect()
}

/// Shows what `uninstall` would do, writing nothing.
pub async fn preview(
    ctx: &Ctx,
    cfg: &LoadedConfig,
    opts: UninstallOptions,
) -> Result<UninstallPreview> {
    let (facts, cfg) = super::observe(ctx, cfg).await;
    let mut state = State::load(&ctx.root, &cfg.config)?;
    let stage_files = stage_files(&cfg, &state.stages.iter().collect::<Vec<_>>());
    let host = crate::engine::converge::converge_to::<super::LiveOps>(
        &ctx.root,
        &cfg,
        &facts,
        &mut state,
        None,
        ConvergeOptions {
            dry_run: true,
            explicit: true,
            ..Default::default()
        },
        &DesiredState::default(),
    )
    .await?;
    Ok(UninstallPreview {
        stage_files,
        keep_cluster: opts.keep_cluster,
        host,
        metrics_files: metrics_files(&cfg)
            .into_iter()
            .filter(|p| ctx.root.exists(p))
            .collect(),
    })
}

/// Prunes every recorded stage (unless kept), removes the host files, then
/// sightline's metrics textfiles.
pub async fn uninstall(
    ctx: &Ctx,
    cfg: &LoadedConfig,
    opts: UninstallOptions,
    progress: Progress,
) -> Result<UninstallOutcome> {
    let mode = Mode::Cli {
        no_restart: opts.no_restart,
        redecide: false,
    };
    let daemon_stopped = stop_daemon(ctx, cfg, opts).await?;
    // The prune takes the state lock for each of its short writes, so it
    // runs before (not under) the lock the host half holds.
    let cluster = remove_stages(ctx, cfg, opts, progress).await?;
    let _lock = super::lock(ctx, cfg, mode).await?;
    let (facts, cfg) = super::observe(ctx, cfg).await;
    let c = &cfg.config;
    let left = State::load(&ctx.root, c)?.stages;
    // Before the host half, so that the textfile directory sightline
    // created is empty and goes with it.
    let mut removed_metrics = Vec::new();
    for p in metrics_files(&cfg) {
        if crate::atomic::remove_file(&ctx.root.path(&p))
            .with_context(|| format!("removing {p}"))?
        {
            tracing::info!(path = %p, "removed metrics textfile");
            removed_metrics.push(p);
        }
    }
    let ops = super::connect_ops(ctx, &cfg, !opts.no_restart).await?;
    let report =
        crate::engine::uninstall::uninstall(&ctx.root, &cfg, &facts, ops.as_ref(), opts.no_restart)
            .await?;
    let mut kept = report.kept;
    if !left.is_empty() {
        // The engine cleared the state once the host was clean; the
        // records of the stages still in the cluster go back.
        let mut state = State::load(&ctx.root, c)?;
        state.stages = left;
        state.save(&ctx.root, c)?;
        kept.push(format!(
            "{} (records the stage files left in the cluster; `sightline uninstall` removes them once the k3s API answers)",
            State::path(c)
        ));
    }
    Ok(UninstallOutcome {
        cluster,
        host: report.host,
        kept,
        removed_metrics,
        daemon_stopped,
    })
}

/// The cluster half: a rollout to no stages at all is exactly a prune of
/// every recorded one, last first.
async fn remove_stages(
    ctx: &Ctx,
    cfg: &LoadedConfig,
    opts: UninstallOptions,
    progress: Progress,
) -> Result<ClusterRemoval> {
    let c = &cfg.config;
    let state = State::load(&ctx.root, c)?;
    if state.stages.is_empty() {
        return Ok(ClusterRemoval::NothingDeployed);
    }
    if opts.keep_cluster {
        return Ok(ClusterRemoval::KeptOnRequest {
            files: stage_files(cfg, &state.stages.iter().collect::<Vec<_>>()),
        });
    }
    let api = crate::k3s::K3sApi::from_config(&ctx.root, c).map_err(|e| format!("{e:#}"));
    let rollout = Rollout {
        root: &ctx.root,
        cfg: c,
        api,
        stages: Vec::new(),
        airgap_charts: Vec::new(),
        timing: Timing::from_config(c),
        progress,
        wait_for_api: true,
        skipped_by_k3s: Default::default(),
    };
    let report = rollout.run().await?;
    let after = State::load(&ctx.root, c)?;
    let files = stage_files(cfg, &after.stages.iter().collect::<Vec<_>>());
    let reason = match report.result {
        RolloutResult::Done if files.is_empty() => {
            return Ok(ClusterRemoval::Pruned {
                stages: report.stages,
            });
        }
        RolloutResult::Done => "some stages are still recorded".to_string(),
        RolloutResult::ApiUnreachable { reason, .. } => {
            format!("the k3s API does not answer ({reason})")
        }
        RolloutResult::Failed { stage, reason } => format!("stage {stage}: {reason}"),
        RolloutResult::K3sTooOld(t) => t.to_string(),
    };
    tracing::warn!(reason = %reason, files = files.len(), "stage files left in the cluster");
    Ok(ClusterRemoval::Left {
        reason,
        files,
        stages: report.stages,
    })
}
