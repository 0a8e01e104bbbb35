//! Restarting k3s safely: restart, wait for the API, roll back if it does
//! not come back, and finish a change an earlier run left half-done.

use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use tracing::{info, warn};

use super::failpoint::hit;
use super::journal::{Journal, Phase};
use super::k3s_start::record_start;
use super::ops::{ActiveState, Ops};
use super::pacing;
use crate::config::Config;
use crate::host::Component;
use crate::state::{Rejected, State};
use crate::sysroot::Sysroot;

/// Automatic restarts within one wait that count as a crash loop.
const CRASH_LOOP_RESTARTS: u32 = 3;
/// Longest a restart job may take before it is considered stuck.
const JOB_TIMEOUT: Duration = Duration::from_secs(600);

/// Why k3s is not ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotReady(pub String);

/// Waits until the k3s API answers /readyz, the unit crash-loops, or the deadline passes.
pub async fn wait_ready<O: Ops>(ops: &O, unit: &str, timeout: Duration) -> Result<(), NotReady> {
    let deadline = Instant::now() + timeout;
    let start = ops
        .unit_status(unit)
        .await
        .map_err(|e| NotReady(e.to_string()))?;
    loop {
        hit("restart.wait");
        let last = match ops.k3s_ready().await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if let Ok(s) = ops.unit_status(unit).await {
            if s.active_state == ActiveState::Failed {
                return Err(NotReady(format!(
                    "{unit} failed ({}); last API answer: {last}",
                    s.sub_state
                )));
            }
            if s.n_restarts >= start.n_restarts + CRASH_LOOP_RESTARTS {
                return Err(NotReady(format!(
                    "{unit} is crash-looping ({} automatic restarts); last API answer: {last}",
                    s.n_restarts - start.n_restarts
                )));
            }
        }
        if Instant::now() >= deadline {
            return Err(NotReady(format!(
                "/readyz did not answer ok within {} s: {last}",
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Restarts the unit within its start rate limit and waits for readiness.
/// A unit left `failed` (a crash, or `start-limit-hit`) refuses starts until
/// reset, so it is reset first: the caller restarts k3s only for a change
/// of sightline's.
async fn restart_and_wait<O: Ops>(
    ops: &O,
    root: &Sysroot,
    cfg: &Config,
    state: &mut State,
    unit: &str,
    timeout: Duration,
) -> Result<(), NotReady> {
    pacing::before_start(ops, root, cfg, state, unit)
        .await
        .map_err(|e| NotReady(format!("{e:#}")))?;
    reset_if_held(ops, unit).await;
    hit("restart.before");
    let mut result = ops
        .restart_unit(unit, JOB_TIMEOUT)
        .await
        .map_err(|e| NotReady(format!("restart failed: {e:#}")))?;
    if result != super::ops::JobResult::Done
        && ops
            .unit_status(unit)
            .await
            .is_ok_and(|s| s.active_state == ActiveState::Failed)
    {
        // Refused at once: the crash loop of a change k3s rejected used up
        // the start limit, which only a reset clears.
        warn!(unit, job_result = %result, "the restart was refused; resetting the unit and restarting once more");
        reset_if_held(ops, unit).await;
        result = ops
            .restart_unit(unit, JOB_TIMEOUT)
            .await
            .map_err(|e| NotReady(format!("restart failed: {e:#}")))?;
    }
    hit("restart.after");
    info!(unit, job_result = %result, "restarted k3s; waiting for /readyz");
    // A failed start job is not final: k3s runs with Restart=always, and the
    // readiness wait notices a crash loop quickly.
    wait_ready(ops, unit, timeout).await
}

/// Resets a unit that is `failed` or waiting to restart after a crash: its
/// failures and start rate-limit counter come from sightline's change (the
/// caller restarts k3s only for one), and systemd refuses starts past the
/// limit until a reset (systemd src/core/unit.c `unit_reset_failed` clears
/// `start_ratelimit` and `start_limit_hit`).
async fn reset_if_held<O: Ops>(ops: &O, unit: &str) {
    let held = ops
        .unit_status(unit)
        .await
        .is_ok_and(|s| s.active_state == ActiveState::Failed || s.sub_state == "auto-restart");
    if held {
        info!(
            unit,
            "resetting the failed state and start limit before restarting"
        );
        hit("restart.reset_failed.before");
        if let Err(e) = ops.reset_failed(unit).await {
            warn!(unit, error = %format!("{e:#}"), "ResetFailedUnit failed");
        }
    }
}

/// Runs a k3s restart for a change recorded in `journal` (files already
/// written). Commits on success; on failure rolls back and returns an error
/// that says what failed, that the old configuration is back, and where the
/// rejected files are.
pub async fn restart_with_rollback<O: Ops>(
    ops: &O,
    root: &Sysroot,
    cfg: &Config,
    state: &mut State,
    mut journal: Journal,
) -> Result<()> {
    let timeout = Duration::from_secs(cfg.k3s.ready_timeout_seconds);
    journal.set_phase(root, cfg, Phase::Restarting)?;
    state.counters.k3s_restarts += 1;
    let unit = journal.unit.clone();
    match restart_and_wait(ops, root, cfg, state, &unit, timeout).await {
        Ok(()) => {
            info!(unit = %journal.unit, digest = ?journal.new_digest, "k3s is ready with the new audit configuration");
            state.k3s.loaded_digest = journal.new_digest.clone();
            record_start(ops, &unit, state).await;
            state.k3s.rejected = None;
            state.save(root, cfg)?;
            journal.finish(root, cfg)?;
            Ok(())
        }
        Err(NotReady(why)) => rollback(ops, root, cfg, state, journal, why).await,
    }
}

/// Restores the previous files, restarts k3s on them and reports.
async fn rollback<O: Ops>(
    ops: &O,
    root: &Sysroot,
    cfg: &Config,
    state: &mut State,
    mut journal: Journal,
    why: String,
) -> Result<()> {
    warn!(unit = %journal.unit, reason = %why, "k3s did not come back; rolling back the audit change");
    hit("rollback.before");
    journal.set_phase(root, cfg, Phase::RollingBack)?;
    let kept = journal.keep_rejected(root, cfg)?;
    let restored = journal.restore_previous(root)?;
    for p in &restored {
        match journal.previous_records.get(p) {
            Some(rec) => {
                state.files.insert(p.clone(), rec.clone());
            }
            None => {
                state.files.remove(p);
            }
        }
    }
    state.counters.rollbacks += 1;
    state.k3s.rejected = Some(Rejected {
        digest: journal.new_digest.clone().unwrap_or_default(),
        at: crate::clock::now_rfc3339(),
        reason: why.clone(),
        kept_in: kept.clone(),
    });
    state.save(root, cfg)?;
    info!(files = ?restored, rejected_copies = %kept, "restored the previous k3s files");
    let timeout = Duration::from_secs(cfg.k3s.ready_timeout_seconds);
    state.counters.k3s_restarts += 1;
    hit("rollback.restart.before");
    let unit = journal.unit.clone();
    let back = restart_and_wait(ops, root, cfg, state, &unit, timeout).await;
    state.k3s.loaded_digest = journal.previous_digest.clone();
    record_start(ops, &unit, state).await;
    state.save(root, cfg)?;
    let unit = journal.unit.clone();
    journal.finish(root, cfg)?;
    match back {
        Ok(()) => Err(anyhow!(
            "k3s did not become ready after the audit change: {why}.\n  The previous configuration is restored and {unit} is active and ready again.\n  The rejected files are kept for inspection in {kept}."
        )),
        Err(NotReady(again)) => Err(anyhow!(
            "k3s did not become ready after the audit change: {why}.\n  The previous configuration is restored, but {unit} is still not ready ({again}), so the cause is not (only) sightline's change: check `journalctl -u {unit}`.\n  The rejected files are kept in {kept}."
        )),
    }
}

/// Finishes or rolls back a change an interrupted run left behind. Without
/// ops (no systemd to talk to) only a change that never reached k3s can be
/// undone.
pub async fn recover<O: Ops>(
    ops: Option<&O>,
    root: &Sysroot,
    cfg: &Config,
    state: &mut State,
) -> Result<Option<String>> {
    let Some(journal) = Journal::load(root, cfg)? else {
        return Ok(None);
    };
    match (journal.phase, ops) {
        (Phase::Writing, _) => {
            // k3s never saw these files: put the old ones back; the normal
            // converge that follows redoes the change properly.
            let restored = journal.restore_previous(root)?;
            for p in &restored {
                match journal.previous_records.get(p) {
                    Some(rec) => state.files.insert(p.clone(), rec.clone()),
                    None => state.files.remove(p),
                };
            }
            state.save(root, cfg)?;
            journal.finish(root, cfg)?;
            Ok(Some(
                "an interrupted audit change was undone before k3s saw it; it is redone now".into(),
            ))
        }
        (_, None) => bail!(
            "an interrupted k3s restart ({}) must be finished; run `sightline apply` without --no-restart (and with systemd reachable)",
            super::journal::path(cfg)
        ),
        (Phase::Restarting, Some(ops)) => {
            let unit = journal.unit.clone();
            let status = ops.unit_status(&unit).await?;
            let started_after =
                status.exec_main_start_us >= journal.written_at_us && journal.written_at_us > 0;
            if status.active_state == ActiveState::Inactive {
                // Stopped by an administrator: it stays stopped, and loads
                // the new files when started. The restart stays owed.
                journal.finish(root, cfg)?;
                return Ok(Some(format!(
                    "an interrupted k3s restart found {unit} stopped; it stays stopped and loads the new audit configuration when started"
                )));
            }
            if started_after
                && status.active_state == ActiveState::Active
                && ops.k3s_ready().await.is_ok()
            {
                state.k3s.loaded_digest = journal.new_digest.clone();
                state.k3s.loaded_invocation = Some(status.invocation_id.clone());
                state.save(root, cfg)?;
                journal.finish(root, cfg)?;
                return Ok(Some(format!(
                    "an interrupted k3s restart had succeeded; {unit} runs the new audit configuration"
                )));
            }
            restart_with_rollback(ops, root, cfg, state, journal).await?;
            Ok(Some(format!(
                "finished an interrupted k3s restart; {unit} is ready"
            )))
        }
        (Phase::RollingBack, Some(ops)) => {
            let why = "an earlier run was interrupted while rolling back".to_string();
            rollback(ops, root, cfg, state, journal, why)
                .await
                .map(|_| None)
        }
    }
}

/// Handles a restart that is pending rather than caused by this run's
/// writes: if k3s has started since the files were written, it already runs
/// them and no restart is needed.
pub async fn already_loaded<O: Ops>(ops: &O, cfg: &Config, state: &State) -> bool {
    let Some(written) = state.k3s.written_at_us else {
        return false;
    };
    match ops.unit_status(&cfg.k3s.unit).await {
        Ok(s) => {
            s.active_state == ActiveState::Active
                && s.exec_main_start_us > written
                && ops.k3s_ready().await.is_ok()
        }
        Err(_) => false,
    }
}

/// The paths of the audit files (desired or managed), for the journal.
pub fn audit_paths(cfg: &Config, state: &State) -> Vec<String> {
    let mut v: Vec<String> = vec![
        cfg.paths.audit_policy.clone(),
        cfg.paths.k3s_audit_dropin.clone(),
    ];
    v.extend(
        state
            .files
            .iter()
            .filter(|(_, f)| f.component == Component::Audit)
            .map(|(p, _)| p.clone()),
    );
    v.sort();
    v.dedup();
    v
}
