//! `sightline run`: converge at start, then keep the host true — repair
//! drift on inotify events within a second, re-check on an interval, reload
//! on SIGHUP, stop cleanly on SIGTERM — and report status and metrics.
//!
//! One thread runs everything. The cluster rollout runs as a local task
//! beside the main loop, so a stage that takes minutes to become healthy
//! never delays drift repair; the two are serialised only around their
//! writes, by the application layer's lock, which never blocks the thread.

mod watch;

use std::time::Duration;

use anyhow::Result;
use tokio::signal::unix::{SignalKind, signal};
use tokio::time::{Interval, MissedTickBehavior};
use tracing::{error, info, warn};

use crate::agent::{self, ClusterOutcome, Ctx, Mode, Outcome};
use crate::config::LoadedConfig;
use crate::state::State;
use crate::systemd::notify;

/// How long to gather more file events before repairing.
const DEBOUNCE: Duration = Duration::from_millis(100);

/// Runs the daemon until SIGTERM.
pub fn run(ctx: &Ctx) -> Result<u8> {
    ctx.require_root_user("run")?;
    let rt = agent::runtime()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, run_async(ctx))
}

type ClusterTask = tokio::task::JoinHandle<Result<ClusterOutcome>>;

/// Why the main loop woke up.
enum Wake {
    Stop,
    Reload,
    ClusterDone(Result<Result<ClusterOutcome>, tokio::task::JoinError>),
    Recheck,
    FileEvent(Result<std::path::PathBuf>),
}

struct Daemon<'a> {
    ctx: &'a Ctx,
    cfg: LoadedConfig,
    watcher: watch::Watcher,
    recheck: Interval,
    cluster: Option<ClusterTask>,
    /// The Lease and what was read with it, kept from one cluster pass to
    /// the next so a pass at rest is one round trip.
    cluster_memory: agent::coordination::Memory,
    /// sightline's own notifications (a local task; never awaited here).
    notifier: Option<tokio::task::JoinHandle<()>>,
}

async fn run_async(ctx: &Ctx) -> Result<u8> {
    let cfg = crate::config::load(&ctx.root)?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut d = Daemon {
        ctx,
        recheck: recheck_interval(&cfg),
        cfg,
        watcher: watch::Watcher::new()?,
        cluster: None,
        cluster_memory: agent::coordination::Memory::in_process(),
        notifier: None,
    };
    // Before the first converge, which may restart k3s for minutes: an
    // unclean restart is reported at once.
    d.notifier = agent::spawn_notifier(ctx, &d.cfg, true);

    notify::status("first converge");
    let first = agent::converge_once(ctx, &d.cfg, Mode::Daemon).await;
    if let Some(code) = d.after_converge(&first) {
        return Ok(code);
    }
    notify::ready();
    // The first tick is immediate; the first converge already ran.
    d.recheck.tick().await;
    let mut watchdog = WatchdogPinger::new();
    d.start_cluster_pass();

    loop {
        let wake = tokio::select! {
            _ = term.recv() => Wake::Stop,
            _ = int.recv() => Wake::Stop,
            _ = hup.recv() => Wake::Reload,
            done = cluster_done(&mut d.cluster) => Wake::ClusterDone(done),
            _ = d.recheck.tick() => Wake::Recheck,
            ev = d.watcher.next_relevant() => Wake::FileEvent(ev),
            _ = watchdog.due() => { notify::watchdog(); continue; }
        };
        let reason = match wake {
            Wake::Stop => break,
            Wake::Reload => match d.reload().await {
                Some(r) => r,
                None => continue,
            },
            Wake::ClusterDone(done) => {
                if let Some(code) = d.cluster_finished(done) {
                    return Ok(code);
                }
                continue;
            }
            Wake::Recheck => {
                d.start_cluster_pass();
                "periodic re-check"
            }
            Wake::FileEvent(ev) => {
                if d.drifted(ev?).await.is_empty() {
                    continue;
                }
                "drift"
            }
        };
        notify::status(&format!("converging ({reason})"));
        let outcome = agent::converge_once(ctx, &d.cfg, Mode::Daemon).await;
        if let Some(code) = d.after_converge(&outcome) {
            return Ok(code);
        }
    }
    notify::stopping();
    if let Some(task) = d.notifier.take() {
        task.abort();
    }
    crate::notify::record_clean_stop(&ctx.root, &d.cfg.config);
    if let Some(task) = d.cluster.take() {
        // A stage file already written stays; the next start continues.
        task.abort();
    }
    info!("stopping");
    Ok(0)
}

/// Resolves when the cluster task ends; never while there is none.
async fn cluster_done(
    task: &mut Option<ClusterTask>,
) -> Result<Result<ClusterOutcome>, tokio::task::JoinError> {
    match task.as_mut() {
        Some(t) => t.await,
        None => std::future::pending().await,
    }
}

fn recheck_interval(cfg: &LoadedConfig) -> Interval {
    let mut i = tokio::time::interval(Duration::from_secs(
        cfg.config.daemon.recheck_interval_seconds,
    ));
    i.set_missed_tick_behavior(MissedTickBehavior::Delay);
    i
}

impl Daemon<'_> {
    fn start_cluster_pass(&mut self) {
        if self.cluster.is_some() {
            return;
        }
        let ctx = self.ctx.clone();
        let cfg = self.cfg.clone();
        let memory = self.cluster_memory.clone();
        self.cluster = Some(tokio::task::spawn_local(async move {
            agent::run_cluster(&ctx, &cfg, crate::rollout::Progress::Log, false, &memory).await
        }));
    }

    /// Records a finished cluster pass; returns an exit code when the
    /// process must restart.
    fn cluster_finished(
        &mut self,
        done: Result<Result<ClusterOutcome>, tokio::task::JoinError>,
    ) -> Option<u8> {
        self.cluster = None;
        match done {
            Ok(Ok(outcome)) => {
                info!(cluster = %outcome.line(), "cluster pass finished");
                agent::publish_cluster(self.ctx, &self.cfg, &outcome);
                None
            }
            Ok(Err(e)) => {
                let msg = format!("{e:#}");
                error!(error = %msg, "cluster pass failed");
                agent::record_error(self.ctx, &self.cfg, &format!("cluster: {msg}"));
                agent::is_read_only_fs(&e).then(exit_for_stale_sandbox)
            }
            Err(e) => {
                error!(error = %e, "cluster task panicked");
                None
            }
        }
    }

    /// Loads the configuration again; returns the converge reason, or `None`
    /// when the new configuration is invalid and the old one stays.
    async fn reload(&mut self) -> Option<&'static str> {
        // systemd keeps the unit "reloading" from RELOADING=1 until READY=1.
        // MONOTONIC_USEC is what 253+ requires beside RELOADING=1 (for
        // Type=notify-reload); 252 ignores the field it does not know.
        let mut reloading = vec![sd_notify::NotifyState::Reloading];
        reloading.extend(sd_notify::NotifyState::monotonic_usec_now().ok());
        let _ = sd_notify::notify(&reloading);
        let reason = self.load_new_config().await;
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
        reason
    }

    async fn load_new_config(&mut self) -> Option<&'static str> {
        match crate::config::load(&self.ctx.root) {
            Ok(new) => {
                info!("configuration reloaded (SIGHUP)");
                if new.config.daemon.recheck_interval_seconds
                    != self.cfg.config.daemon.recheck_interval_seconds
                {
                    self.recheck = recheck_interval(&new);
                    self.recheck.tick().await;
                }
                self.cfg = new;
                if let Some(task) = self.notifier.take() {
                    task.abort();
                }
                self.notifier = agent::spawn_notifier(self.ctx, &self.cfg, false);
                Some("configuration reloaded")
            }
            Err(e) => {
                error!(error = %e, "SIGHUP: the new configuration is invalid; keeping the previous one");
                notify::status(&format!("config error: {}", e.message));
                agent::record_error(
                    self.ctx,
                    &self.cfg,
                    &format!("configuration reload failed: {e}"),
                );
                None
            }
        }
    }

    /// The managed paths (host paths) that an event batch changed away from
    /// the record. Our own atomic writes raise events too; only a path that
    /// no longer matches the record is drift.
    async fn drifted(&mut self, first: std::path::PathBuf) -> Vec<String> {
        // Editors and tools often write several times in a row.
        tokio::time::sleep(DEBOUNCE).await;
        let mut paths = self.watcher.drain();
        paths.push(first);
        let state = State::load(&self.ctx.root, &self.cfg.config).unwrap_or_default();
        let drifted: Vec<String> = paths
            .iter()
            .filter_map(|p| self.ctx.root.host_path(p))
            .map(|p| p.display().to_string())
            .filter(|p| state.drifted(&self.ctx.root, p))
            .collect();
        if !drifted.is_empty() {
            info!(paths = ?drifted, "managed file changed; repairing");
        }
        drifted
    }

    /// Logs a converge, refreshes the file watches, and tells systemd;
    /// returns an exit code when the process must restart.
    fn after_converge(&mut self, o: &Outcome) -> Option<u8> {
        match &o.result {
            Ok(_) => info!(
                changes = o.changes(),
                drift_repairs = o.drift_repairs(),
                duration_ms = o.duration.as_millis() as u64,
                "converged"
            ),
            Err(e) => {
                error!(error = %e, "converge failed");
                if e.is_stale_sandbox() {
                    return Some(exit_for_stale_sandbox());
                }
            }
        }
        // Events caused by our own writes are drained so they do not trigger
        // another pass.
        self.watcher.drain();
        if let Err(e) = self.watcher.sync(&self.ctx.root, &self.cfg) {
            warn!(error = %format!("{e:#}"), "could not update file watches");
        }
        notify::status(&o.status_line());
        None
    }
}

/// Some failures cannot be fixed by trying again in this process: the
/// sandbox was set up before a path it needs existed. Exiting lets systemd
/// (Restart=on-failure) start a fresh one.
fn exit_for_stale_sandbox() -> u8 {
    error!(
        "a path sightline writes is read-only in this sandbox (it appeared after sightline started); exiting so systemd restarts sightline with a fresh sandbox"
    );
    1
}

/// Pings the service watchdog at half the unit's WatchdogSec; without one
/// it never wakes the process.
struct WatchdogPinger {
    tick: Option<Interval>,
}

impl WatchdogPinger {
    fn new() -> WatchdogPinger {
        let tick = notify::watchdog_interval().map(|d| {
            notify::watchdog();
            let mut i = tokio::time::interval_at(tokio::time::Instant::now() + d / 2, d / 2);
            i.set_missed_tick_behavior(MissedTickBehavior::Delay);
            i
        });
        WatchdogPinger { tick }
    }

    async fn due(&mut self) {
        match self.tick.as_mut() {
            Some(i) => {
                i.tick().await;
            }
            None => std::future::pending().await,
        }
    }
}
