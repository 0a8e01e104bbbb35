//! `sightline plan`, `apply` and `uninstall`.

use anyhow::Result;

use super::{EXIT_CHANGES, EXIT_CLUSTER_PENDING, EXIT_ERROR, EXIT_OK};
use crate::agent::{self, ClusterOutcome, Ctx, LiveOps, Mode};
use crate::engine::{ConvergeOptions, converge};
use crate::rollout::{Progress, RolloutReport, RolloutResult};
use crate::state::State;

/// `sightline plan`.
pub fn plan(ctx: &Ctx, json: bool, exit_code: bool, host_only: bool) -> Result<u8> {
    let cfg = crate::config::load(&ctx.root)?;
    let rt = agent::runtime()?;
    let (facts, cfg) = rt.block_on(agent::observe(ctx, &cfg));
    let mut state = State::load(&ctx.root, &cfg.config)?;
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
        Some(agent::cluster_plan(ctx, &cfg, &facts, &state)?)
    };
    let cluster_changes = cluster
        .as_ref()
        .is_some_and(|c| c.iter().any(|s| s.action.is_change()));
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

/// `sightline apply`.
pub fn apply(ctx: &Ctx, no_restart: bool, host_only: bool, redecide: bool) -> Result<u8> {
    ctx.require_root_user("apply")?;
    let cfg = crate::config::load(&ctx.root)?;
    let rt = agent::runtime()?;
    let (facts, followed) = rt.block_on(agent::observe(ctx, &cfg));
    // Refuse bad input (an invalid custom policy, say) before touching
    // anything, the lock file included.
    crate::host::DesiredState::compute(&ctx.root, &followed.config, &facts)
        .map_err(anyhow::Error::msg)?;
    let mode = Mode::Cli {
        no_restart,
        redecide,
    };
    let outcome = rt.block_on(agent::converge_once(ctx, &cfg, mode));
    let report = outcome.result?;
    print!("{}", super::output::render_apply(&report));
    if host_only {
        println!("\ncluster: left alone (--host-only)");
        return Ok(EXIT_OK);
    }
    println!("\ncluster:");
    let cluster = rt.block_on(agent::run_cluster(ctx, &cfg, Progress::for_stdout(), true))?;
    agent::publish_cluster(ctx, &cfg, &cluster);
    if let ClusterOutcome::Rollout(r) = &cluster {
        print_stages(r);
    }
    println!("{}", cluster.line());
    Ok(match &cluster {
        ClusterOutcome::Skipped { .. } => EXIT_OK,
        ClusterOutcome::Rollout(r) => match &r.result {
            RolloutResult::Done => EXIT_OK,
            RolloutResult::ApiUnreachable { waited_ms, .. } => {
                eprintln!(
                    "the host layer is done; the cluster stages are pending until the k3s API answers (waited {:.1} s). `sightline run` keeps retrying",
                    *waited_ms as f64 / 1000.0
                );
                EXIT_CLUSTER_PENDING
            }
            RolloutResult::Failed { .. } | RolloutResult::K3sTooOld(_) => EXIT_ERROR,
        },
    })
}

fn print_stages(r: &RolloutReport) {
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

/// `sightline uninstall`.
pub fn uninstall(ctx: &Ctx, no_restart: bool) -> Result<u8> {
    ctx.require_root_user("uninstall")?;
    let cfg = crate::config::load(&ctx.root)?;
    let rt = agent::runtime()?;
    let report = rt.block_on(async {
        let mode = Mode::Cli {
            no_restart,
            redecide: false,
        };
        let _lock = agent::lock(ctx, &cfg, mode).await?;
        let (facts, cfg) = agent::observe(ctx, &cfg).await;
        let ops = agent::connect_ops(ctx, &cfg, !no_restart).await?;
        crate::engine::uninstall::uninstall(&ctx.root, &cfg, &facts, ops.as_ref(), no_restart).await
    })?;
    print!("{}", super::output::render_apply(&report.host));
    for k in &report.kept {
        println!("kept {k}");
    }
    Ok(EXIT_OK)
}
