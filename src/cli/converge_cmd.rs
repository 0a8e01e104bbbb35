//! `sightline plan`, `apply` and `uninstall`.

use std::time::Duration;

use anyhow::{Context, Result};

use super::{Ctx, EXIT_CHANGES, EXIT_OK};
use crate::config::LoadedConfig;
use crate::engine::ops::LiveOps;
use crate::engine::{ConvergeOptions, ConvergeReport, State, converge};
use crate::facts::Facts;
use crate::lock::Lock;

/// How long a CLI run waits for the daemon to finish a converge.
const LOCK_WAIT: Duration = Duration::from_secs(60);

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the async runtime")
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
pub fn plan(ctx: &Ctx, json: bool, exit_code: bool, _host_only: bool) -> Result<u8> {
    let cfg = crate::config::load(&ctx.root)?;
    let facts = Facts::detect(&ctx.root);
    let mut state = State::load(&ctx.root, &cfg.config)?;
    let rt = runtime()?;
    let opts = ConvergeOptions { dry_run: true, ..Default::default() };
    let report = rt.block_on(converge::<LiveOps>(&ctx.root, &cfg, &facts, &mut state, None, opts))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&super::output::report_json(&facts, &report, &cfg))?);
    } else {
        print!("{}", super::output::render_plan(&facts, &report, &cfg));
    }
    Ok(if exit_code && !report.plan.is_converged() { EXIT_CHANGES } else { EXIT_OK })
}

/// `sightline apply`.
pub fn apply(ctx: &Ctx, no_restart: bool, _host_only: bool, redecide: bool) -> Result<u8> {
    ctx.require_root_user("apply")?;
    let cfg = crate::config::load(&ctx.root)?;
    let facts = Facts::detect(&ctx.root);
    // Refuse bad input (an invalid custom policy, say) before touching
    // anything, the lock file included.
    crate::host::DesiredState::compute(&ctx.root, &cfg.config, &facts).map_err(anyhow::Error::msg)?;
    let _lock = Lock::acquire(&ctx.root.path(cfg.config.lock_path()), LOCK_WAIT)?;
    let mut state = State::load(&ctx.root, &cfg.config)?;
    let rt = runtime()?;
    let result: Result<ConvergeReport> = rt.block_on(async {
        let ops = connect_ops(ctx, &cfg, !no_restart).await?;
        let opts = ConvergeOptions { no_restart, explicit: true, redecide, ..Default::default() };
        converge(&ctx.root, &cfg, &facts, &mut state, ops.as_ref(), opts).await
    });
    let report = result?;
    print!("{}", super::output::render_apply(&report));
    Ok(EXIT_OK)
}

/// `sightline uninstall`.
pub fn uninstall(ctx: &Ctx, no_restart: bool) -> Result<u8> {
    ctx.require_root_user("uninstall")?;
    let cfg = crate::config::load(&ctx.root)?;
    let _lock = Lock::acquire(&ctx.root.path(cfg.config.lock_path()), LOCK_WAIT)?;
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
