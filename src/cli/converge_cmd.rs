//! `sightline plan`, `apply` and `uninstall`.

use anyhow::{Context, Result};

use super::{Ctx, EXIT_CHANGES, EXIT_CLUSTER_PENDING, EXIT_OK};
use crate::config::LoadedConfig;
use crate::engine::ops::LiveOps;
use crate::engine::{ConvergeOptions, State, converge};
use crate::facts::Facts;
use crate::lock::Lock;
use crate::rollout::Progress;
use crate::rollout::RolloutResult;
use crate::rollout::pass::ClusterOutcome;

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Connects to systemd when this root has one: the host's system bus for
/// `--root /`, or an explicit `--system-bus`.
pub async fn connect_ops(ctx: &Ctx, cfg: &LoadedConfig, needed: bool) -> Result<Option<LiveOps>> {
    if !needed || (!ctx.root.is_host() && ctx.system_bus.is_none()) {
        return Ok(None);
    }
    LiveOps::connect(&ctx.root, &cfg.config, ctx.system_bus.as_deref()).await.map(Some).context(
        "cannot reach systemd over D-Bus; run with --no-restart to write the files and list the follow-up effects",
    )
}

/// `sightline plan`.
pub fn plan(ctx: &Ctx, json: bool, exit_code: bool, host_only: bool) -> Result<u8> {
    let cfg = crate::config::load(&ctx.root)?;
    let facts = Facts::detect(&ctx.root);
    let mut state = State::load(&ctx.root, &cfg.config)?;
    let rt = runtime()?;
    let opts = ConvergeOptions {
        dry_run: true,
        ..Default::default()
    };
    let report = rt.block_on(converge::<LiveOps>(
        &ctx.root, &cfg, &facts, &mut state, None, opts,
    ))?;
    let cluster = if host_only {
        None
    } else {
        Some(cluster_plan(ctx, &cfg, &facts, &state)?)
    };
    let cluster_changes = cluster.as_ref().is_some_and(|c| {
        c.iter()
            .any(|s| s.action != "unchanged" && s.action != "skipped")
    });
    if json {
        let mut v = super::output::report_json(&facts, &report, &cfg);
        v["cluster"] = serde_json::to_value(&cluster)?;
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", super::output::render_plan(&facts, &report, &cfg));
        if let Some(c) = &cluster {
            print!("{}", super::output::render_cluster_plan(c));
        }
    }
    Ok(
        if exit_code && (!report.plan.is_converged() || cluster_changes) {
            EXIT_CHANGES
        } else {
            EXIT_OK
        },
    )
}

/// What the rollout would do to each stage file, without the API.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StagePlan {
    /// Stage name (or the reason, when skipped).
    pub stage: String,
    /// File name.
    pub file: String,
    /// create, update, unchanged, prune, skipped.
    pub action: String,
}

fn cluster_plan(
    ctx: &Ctx,
    cfg: &LoadedConfig,
    facts: &Facts,
    state: &State,
) -> Result<Vec<StagePlan>> {
    if let Some(reason) = crate::rollout::pass::not_applicable(facts) {
        return Ok(vec![StagePlan {
            stage: reason,
            file: String::new(),
            action: "skipped".into(),
        }]);
    }
    let (stages, _, _) = crate::rollout::pass::desired_stages(&ctx.root, cfg, facts, None, false)?;
    let mut out = Vec::new();
    for (name, rec) in &state.stages {
        if !stages.iter().any(|s| &s.stage.name == name) {
            out.push(StagePlan {
                stage: name.clone(),
                file: rec.file.clone(),
                action: "prune".into(),
            });
        }
    }
    for s in &stages {
        let path = format!("{}/{}", cfg.config.paths.manifests_dir, s.file_name);
        let current = ctx.root.read(&path)?;
        let action = match current {
            None => "create",
            Some(c) if c == s.content => "unchanged",
            Some(_) => "update",
        };
        out.push(StagePlan {
            stage: s.stage.name.clone(),
            file: s.file_name.clone(),
            action: action.into(),
        });
    }
    Ok(out)
}

/// `sightline apply`.
pub fn apply(ctx: &Ctx, no_restart: bool, host_only: bool, redecide: bool) -> Result<u8> {
    ctx.require_root_user("apply")?;
    let cfg = crate::config::load(&ctx.root)?;
    let facts = Facts::detect(&ctx.root);
    // Refuse bad input (an invalid custom policy, say) before touching
    // anything, the lock file included.
    crate::host::DesiredState::compute(&ctx.root, &cfg.config, &facts)
        .map_err(anyhow::Error::msg)?;
    let rt = runtime()?;
    let mode = crate::daemon::cycle::Mode::Cli {
        no_restart,
        redecide,
    };
    let outcome = rt.block_on(crate::daemon::cycle::converge_once(ctx, &cfg, mode));
    if let Some(e) = outcome.error {
        anyhow::bail!(e);
    }
    let report = outcome.report.expect("a successful converge has a report");
    print!("{}", super::output::render_apply(&report));
    if host_only {
        println!("\ncluster: left alone (--host-only)");
        return Ok(EXIT_OK);
    }
    println!("\ncluster:");
    let cluster = rt.block_on(crate::rollout::pass::run(
        &ctx.root,
        &cfg,
        Progress::for_stdout(),
        true,
    ))?;
    crate::daemon::cycle::publish_cluster(ctx, &cfg, &cluster);
    if let ClusterOutcome::Rollout(r) = &cluster {
        println!("\nstages:");
        for st in &r.stages {
            println!(
                "  {:<26} {:<8} {:>6.1}s  {}",
                st.name,
                st.state.name(),
                st.elapsed_s,
                st.detail.as_deref().unwrap_or("")
            );
        }
    }
    println!("{}", cluster.line());
    Ok(match &cluster {
        ClusterOutcome::Skipped { .. } => EXIT_OK,
        ClusterOutcome::Rollout(r) => match r.result {
            RolloutResult::Done => EXIT_OK,
            RolloutResult::ApiUnreachable { .. } => {
                eprintln!(
                    "the host layer is done; the cluster stages are pending until the k3s API answers (waited {} s). `sightline run` keeps retrying",
                    cfg.config.k3s.api_wait_seconds
                );
                EXIT_CLUSTER_PENDING
            }
            RolloutResult::Failed { .. } | RolloutResult::K3sTooOld(_) => super::EXIT_ERROR,
        },
    })
}

/// `sightline uninstall`.
pub fn uninstall(ctx: &Ctx, no_restart: bool) -> Result<u8> {
    ctx.require_root_user("uninstall")?;
    let cfg = crate::config::load(&ctx.root)?;
    let _lock = Lock::acquire(
        &ctx.root.path(cfg.config.lock_path()),
        crate::daemon::cycle::CLI_LOCK_WAIT,
    )?;
    let facts = Facts::detect(&ctx.root);
    let rt = runtime()?;
    let report = rt.block_on(async {
        let ops = connect_ops(ctx, &cfg, !no_restart).await?;
        crate::engine::uninstall::uninstall(&ctx.root, &cfg, &facts, ops.as_ref(), no_restart).await
    })?;
    print!("{}", super::output::render_apply(&report.host));
    for k in &report.kept {
        println!("kept {k}");
    }
    Ok(EXIT_OK)
}
