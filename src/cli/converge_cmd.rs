//! `sightline plan` and `apply`.

use super::out;
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
        Some(rt.block_on(agent::cluster_plan(ctx, &cfg, &facts, &state))?)
    };
    let cluster_changes = cluster
        .as_ref()
        .is_some_and(|(c, _)| c.iter().any(|s| s.action.is_change()));
    if json {
        let mut v = super::output::report_json(&facts, &report, &cfg);
        v["cluster"] = serde_json::to_value(cluster.as_ref().map(|(c, _)| c))?;
        if let Some((_, source)) = &cluster {
            v["cluster_source"] = source.name().into();
            if let Some(why) = source.unavailable() {
                v["cluster_unavailable"] = why.into();
            }
        }
        out::outln!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        out::out!("{}", super::output::render_plan(&facts, &report, &cfg));
        if let Some((c, source)) = &cluster {
            out::out!("{}", super::output::render_cluster_plan(c));
            if let Some(line) = source.line() {
                out::outln!("  {line}");
            }
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

/// `apply`'s switches.
#[derive(Debug, Clone, Copy)]
pub struct ApplyArgs {
    /// List follow-up effects instead of running them.
    pub no_restart: bool,
    /// Leave the cluster alone.
    pub host_only: bool,
    /// Decide the tier again.
    pub redecide: bool,
}

/// `sightline apply`.
pub fn apply(ctx: &Ctx, json: bool, args: ApplyArgs) -> Result<u8> {
    ctx.require_root_user("apply")?;
    let cfg = crate::config::load(&ctx.root)?;
    let rt = agent::runtime()?;
    let mode = Mode::Cli {
        no_restart: args.no_restart,
        redecide: args.redecide,
    };
    let outcome = rt.block_on(agent::converge_once(ctx, &cfg, mode));
    let report = outcome.result?;
    if !json {
        out::out!("{}", super::output::render_apply(&report));
    }
    if args.host_only {
        if json {
            super::print_json(&serde_json::json!({ "host": report, "cluster": null }))?;
        } else {
            out::outln!("\ncluster: left alone (--host-only)");
        }
        return Ok(EXIT_OK);
    }
    // With -o json, stdout carries the one document; progress goes to the log.
    let progress = if json {
        Progress::Log
    } else {
        out::outln!("\ncluster:");
        Progress::for_stdout()
    };
    let memory = agent::coordination::Memory::on_tmpfs();
    let cluster = rt.block_on(agent::run_cluster(ctx, &cfg, progress, true, &memory))?;
    agent::publish_cluster(ctx, &cfg, &cluster);
    if json {
        super::print_json(&serde_json::json!({ "host": report, "cluster": cluster }))?;
    } else {
        if let ClusterOutcome::Rollout(r) = &cluster {
            print_stages(r);
        }
        out::outln!("{}", cluster.line());
    }
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
    out::outln!("\nstages:");
    for st in &r.stages {
        out::outln!(
            "  {:<26} {:<8} {:>6.1}s  {}",
            st.name,
            st.state.name(),
            st.elapsed_s,
            st.detail.as_deref().unwrap_or("")
        );
    }
}
