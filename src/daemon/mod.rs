//! `sightline run`: converge at start, then keep the host true — repair
//! drift on inotify events within a second, re-check on an interval, reload
//! on SIGHUP, stop cleanly on SIGTERM — and report status and metrics.

pub mod cycle;
pub mod metrics;
pub mod status;
mod watch;

use std::time::Duration;

use anyhow::{Context, Result};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

use crate::cli::Ctx;
use crate::systemd::notify;

/// How long to gather more file events before repairing.
const DEBOUNCE: Duration = Duration::from_millis(100);

/// Runs the daemon until SIGTERM.
pub fn run(ctx: &Ctx) -> Result<u8> {
    ctx.require_root_user("run")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    // The cluster rollout runs as a local task beside the main loop, so a
    // stage that takes minutes to become healthy never delays drift repair.
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, run_async(ctx))
}

type ClusterTask = tokio::task::JoinHandle<Result<crate::rollout::pass::ClusterOutcome>>;

fn start_cluster_pass(ctx: &Ctx, cfg: &crate::config::LoadedConfig) -> ClusterTask {
    let root = ctx.root.clone();
    let cfg = cfg.clone();
    tokio::task::spawn_local(async move {
        crate::rollout::pass::run(&root, &cfg, crate::rollout::Progress::Log, false).await
    })
}

async fn run_async(ctx: &Ctx) -> Result<u8> {
    let mut cfg = crate::config::load(&ctx.root)?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut watcher = watch::Watcher::new()?;

    notify::status("first converge");
    let first = cycle::converge_once(ctx, &cfg, cycle::Mode::Daemon).await;
    log_outcome(&first);
    if let Some(code) = fatal(&first) {
        return Ok(code);
    }
    watcher.sync(&ctx.root, &cfg)?;
    notify::ready();
    notify::status(&cycle::status_line(&first));

    // Ping at half the unit's WatchdogSec; otherwise never wake for it.
    let wd_period = notify::watchdog_interval().map(|d| d / 2);
    let mut wd_tick = tokio::time::interval(wd_period.unwrap_or(Duration::from_secs(86_400 * 365)));
    wd_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut recheck = tokio::time::interval(Duration::from_secs(
        cfg.config.daemon.recheck_interval_seconds,
    ));
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    recheck.tick().await; // the first tick is immediate; the first converge already ran
    if wd_period.is_some() {
        notify::watchdog();
    }
    wd_tick.tick().await;
    let mut cluster: Option<ClusterTask> = Some(start_cluster_pass(ctx, &cfg));

    loop {
        let reason: &str = tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = wd_tick.tick(), if wd_period.is_some() => { notify::watchdog(); continue; }
            _ = hup.recv() => {
                match crate::config::load(&ctx.root) {
                    Ok(new) => {
                        info!("configuration reloaded (SIGHUP)");
                        if new.config.daemon.recheck_interval_seconds != cfg.config.daemon.recheck_interval_seconds {
                            recheck = tokio::time::interval(Duration::from_secs(new.config.daemon.recheck_interval_seconds));
                            recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                            recheck.tick().await;
                        }
                        cfg = new;
                    }
                    Err(e) => {
                        error!(error = %e, "SIGHUP: the new configuration is invalid; keeping the previous one");
                        notify::status(&format!("config error: {}", e.message));
                        cycle::record_error(ctx, &cfg, &format!("configuration reload failed: {e}"));
                        continue;
                    }
                }
                "configuration reloaded"
            }
            done = async { cluster.as_mut().expect("guarded").await }, if cluster.is_some() => {
                cluster = None;
                match done {
                    Ok(Ok(outcome)) => {
                        info!(cluster = %outcome.line(), "cluster pass finished");
                        cycle::publish_cluster(ctx, &cfg, &outcome);
                    }
                    Ok(Err(e)) => {
                        let msg = format!("{e:#}");
                        error!(error = %msg, "cluster pass failed");
                        cycle::record_error(ctx, &cfg, &format!("cluster: {msg}"));
                        if let Some(code) = sandbox_stale(&msg) {
                            return Ok(code);
                        }
                    }
                    Err(e) => error!(error = %e, "cluster task panicked"),
                }
                continue;
            }
            _ = recheck.tick() => {
                if cluster.is_none() {
                    cluster = Some(start_cluster_pass(ctx, &cfg));
                }
                "periodic re-check"
            }
            changed = watcher.next_relevant() => {
                let first = changed?;
                // Editors and tools often write several times in a row.
                tokio::time::sleep(DEBOUNCE).await;
                let mut paths = watcher.drain();
                paths.push(first);
                // Our own atomic writes raise events too; only a path that no
                // longer matches the record is drift.
                let state = crate::engine::State::load(&ctx.root, &cfg.config).unwrap_or_default();
                let drifted: Vec<String> = paths
                    .iter()
                    .filter_map(|p| ctx.root.host_path(p))
                    .map(|p| p.display().to_string())
                    .filter(|p| state.drifted(&ctx.root, p))
                    .collect();
                if drifted.is_empty() {
                    continue;
                }
                info!(paths = ?drifted, "managed file changed; repairing");
                "drift"
            }
        };
        notify::status(&format!("converging ({reason})"));
        let outcome = cycle::converge_once(ctx, &cfg, cycle::Mode::Daemon).await;
        log_outcome(&outcome);
        if let Some(code) = fatal(&outcome) {
            return Ok(code);
        }
        // Events caused by our own writes are drained so they do not trigger
        // another pass.
        watcher.drain();
        if let Err(e) = watcher.sync(&ctx.root, &cfg) {
            warn!(error = %format!("{e:#}"), "could not update file watches");
        }
        notify::status(&cycle::status_line(&outcome));
    }
    notify::stopping();
    if let Some(task) = cluster.take() {
        // A stage file already written stays; the next start continues.
        task.abort();
    }
    info!("stopping");
    Ok(0)
}

fn log_outcome(o: &cycle::Outcome) {
    match &o.error {
        None => info!(
            changes = o.changes,
            drift_repairs = o.drift_repairs,
            duration_ms = o.duration_ms,
            "converged"
        ),
        Some(e) => error!(error = %e, "converge failed"),
    }
}

/// Some failures cannot be fixed by trying again in this process: the
/// sandbox was set up before a path it needs existed. Exiting lets systemd
/// (Restart=on-failure) start a fresh one.
fn fatal(o: &cycle::Outcome) -> Option<u8> {
    sandbox_stale(o.error.as_deref()?)
}

/// k3s creates its manifests directory on first start; when sightline
/// started before that, its `-`-prefixed ReadWritePaths entry was skipped
/// and the directory is read-only in this sandbox.
fn sandbox_stale(error: &str) -> Option<u8> {
    if error.contains("Read-only file system") {
        error!(
            "a path sightline writes is read-only in this sandbox (it appeared after sightline started); exiting so systemd restarts sightline with a fresh sandbox"
        );
        return Some(1);
    }
    None
}
