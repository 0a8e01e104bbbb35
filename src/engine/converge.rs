//! One converge of the host layer: recover, decide, plan, write, run effects.

use anyhow::{Context, Result};
use serde::Serialize;
use tracing::{info, warn};

use super::apply::apply_changes;
use super::journal::Journal;
use super::ops::Ops;
use super::plan::{Plan, plan};
use super::restart::{already_loaded, audit_paths, recover, restart_with_rollback};
use super::state::State;
use crate::config::LoadedConfig;
use crate::decide::{Decisions, RecordedTier};
use crate::effects::Effect;
use crate::facts::Facts;
use crate::host::{Component, DesiredState};
use crate::sysroot::Sysroot;

/// How to converge.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConvergeOptions {
    /// Only compute the plan.
    pub dry_run: bool,
    /// List effects instead of running them.
    pub no_restart: bool,
    /// Invoked by a person (CLI) rather than the daemon: retries a
    /// configuration k3s rejected before.
    pub explicit: bool,
    /// Measure memory and decide the tier again.
    pub redecide: bool,
}

/// The outcome of an effect.
#[derive(Debug, Clone, Serialize)]
pub struct EffectResult {
    /// Which.
    pub effect: Effect,
    /// `done`, `skipped: ...` or `failed: ...`.
    pub outcome: String,
}

/// What a converge did.
#[derive(Debug, Clone, Serialize)]
pub struct ConvergeReport {
    /// Decisions used.
    pub decisions: Decisions,
    /// The host plan (changes, due and pending effects, warnings).
    pub plan: Plan,
    /// True when the changes were written.
    pub applied: bool,
    /// Effects executed and their outcome.
    pub effects_run: Vec<EffectResult>,
    /// Effects still pending afterwards.
    pub pending_after: Vec<Effect>,
    /// Notes from recovering an interrupted run.
    pub recovered: Option<String>,
    /// Why effects were not run, when they were not.
    pub effects_skipped_because: Option<String>,
}

/// The decisions for this run, recording a new automatic tier decision.
pub fn decisions(
    cfg: &LoadedConfig,
    facts: &Facts,
    state: &mut State,
    redecide: bool,
) -> Decisions {
    let recorded = if redecide { None } else { state.tier.clone() };
    let d = Decisions::make(cfg, facts, recorded.as_ref());
    if cfg.config.tier == crate::config::TierChoice::Auto && (state.tier.is_none() || redecide) {
        state.tier = Some(RecordedTier {
            tier: d.tier.value,
            decided_at: super::now_rfc3339(),
            available_bytes: facts.memory.available_bytes,
        });
    }
    d
}

/// Converges the host layer. `ops` is `None` when no systemd can be reached
/// (a scratch root); effects are then listed and kept pending.
pub async fn converge<O: Ops>(
    root: &Sysroot,
    cfg: &LoadedConfig,
    facts: &Facts,
    state: &mut State,
    ops: Option<&O>,
    opts: ConvergeOptions,
) -> Result<ConvergeReport> {
    let desired = DesiredState::compute(root, &cfg.config, facts).map_err(anyhow::Error::msg)?;
    converge_to(root, cfg, facts, state, ops, opts, &desired).await
}

/// Converges the host layer to an explicit desired state (empty for uninstall).
pub async fn converge_to<O: Ops>(
    root: &Sysroot,
    cfg: &LoadedConfig,
    facts: &Facts,
    state: &mut State,
    ops: Option<&O>,
    opts: ConvergeOptions,
    desired: &DesiredState,
) -> Result<ConvergeReport> {
    let c = &cfg.config;
    let live = if opts.no_restart || opts.dry_run {
        None
    } else {
        ops
    };
    let recovered = if opts.dry_run {
        None
    } else {
        recover(live, root, c, state).await?
    };
    let decisions = decisions(cfg, facts, state, opts.redecide);
    let mut p = plan(root, c, desired, state)?;

    // The daemon must not retry a configuration k3s just rejected: that
    // would restart k3s into the same failure every interval.
    if !opts.explicit
        && let Some(rej) = &state.k3s.rejected
        && p.audit_digest.as_deref() == Some(rej.digest.as_str())
    {
        p.changes.retain(|ch| ch.component != Component::Audit);
        p.effects
            .retain(|e| !matches!(e, Effect::RestartK3s { .. }));
        p.pending_effects
            .retain(|e| !matches!(e, Effect::RestartK3s { .. }));
        p.warnings.push(format!(
            "k3s rejected this audit configuration at {} ({}); not retrying automatically. Fix the configuration or run `sightline apply` to try again; the rejected files are in {}",
            rej.at, rej.reason, rej.kept_in
        ));
    }

    let mut report = ConvergeReport {
        decisions,
        plan: p.clone(),
        applied: false,
        effects_run: Vec::new(),
        pending_after: p.all_effects(),
        recovered,
        effects_skipped_because: None,
    };
    if opts.dry_run {
        return Ok(report);
    }

    let effects = p.all_effects();
    let restart_due = effects
        .iter()
        .any(|e| matches!(e, Effect::RestartK3s { .. }));
    let can_restart = live.is_some() && c.k3s.allow_restart;
    // Journal the k3s files before touching them whenever this run will
    // restart k3s, so an interruption can be finished or undone.
    let journal = if restart_due && can_restart && p.touches_audit() {
        let previous_records = state
            .files
            .iter()
            .filter(|(_, f)| f.component == Component::Audit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Some(Journal::begin(
            root,
            c,
            &audit_paths(c, state),
            previous_records,
            state.k3s.loaded_digest.clone(),
            p.audit_digest.clone(),
        )?)
    } else {
        None
    };

    apply_changes(root, c, state, &p)?;
    if p.touches_audit() {
        state.k3s.written_at_us = Some(now_us());
    }
    report.applied = true;
    state.pending_effects = effects
        .iter()
        .filter(|e| !matches!(e, Effect::RestartK3s { .. }))
        .cloned()
        .collect();
    state.save(root, c)?;

    let Some(ops) = live else {
        report.effects_skipped_because = Some(if opts.no_restart {
            "--no-restart: effects are listed, not run".into()
        } else {
            "no systemd reachable for this root: effects are listed, not run".into()
        });
        if let Some(j) = journal {
            j.finish(root, c)?;
        }
        return Ok(report);
    };

    let mut journal = journal;
    let mut failures = Vec::new();
    for e in &effects {
        let outcome = match e {
            Effect::RestartK3s { unit } => {
                if !c.k3s.allow_restart {
                    "skipped: k3s.allow_restart = false".to_string()
                } else if let Some(mut j) = journal.take() {
                    j.written_at_us = state.k3s.written_at_us.unwrap_or_else(now_us);
                    j.save(root, c)?;
                    // Never start a k3s someone stopped: it reads the new
                    // files when it starts, and the restart stays owed.
                    let status = ops.unit_status(unit).await?;
                    if let Some(why) = not_running(unit, &status) {
                        j.finish(root, c)?;
                        why
                    } else {
                        match restart_with_rollback(ops, root, c, state, j).await {
                            Ok(()) => "done".into(),
                            Err(err) => {
                                failures.push(format!("{err:#}"));
                                "failed: rolled back".into()
                            }
                        }
                    }
                } else if already_loaded(ops, c, state).await {
                    state.k3s.loaded_digest = p.audit_digest.clone();
                    format!("skipped: {unit} started after the files were written and is ready")
                } else {
                    run_pending_restart(ops, root, cfg, state, &p)
                        .await
                        .unwrap_or_else(|err| {
                            failures.push(format!("{err:#}"));
                            "failed".into()
                        })
                }
            }
            other => match run_simple(ops, other).await {
                Ok(msg) => {
                    state.pending_effects.retain(|x| x != other);
                    msg
                }
                Err(err) => {
                    warn!(effect = %other, error = %format!("{err:#}"), "effect failed; it stays pending");
                    failures.push(format!("{other}: {err:#}"));
                    format!("failed: {err:#}")
                }
            },
        };
        info!(effect = %e, outcome = %outcome, "effect");
        report.effects_run.push(EffectResult {
            effect: e.clone(),
            outcome,
        });
    }
    state.save(root, c)?;
    report.pending_after = state.pending_effects.clone();
    if failures.is_empty() {
        Ok(report)
    } else {
        Err(anyhow::anyhow!(failures.join("\n"))).context("not every follow-up effect succeeded")
    }
}

/// A restart left pending by an earlier run: the files on disk are already
/// the new ones, so journal them as they are and restart with rollback.
async fn run_pending_restart<O: Ops>(
    ops: &O,
    root: &Sysroot,
    cfg: &LoadedConfig,
    state: &mut State,
    p: &Plan,
) -> Result<String> {
    let c = &cfg.config;
    let status = ops.unit_status(&c.k3s.unit).await?;
    if let Some(why) = not_running(&c.k3s.unit, &status) {
        return Ok(why);
    }
    // The previous configuration k3s ran is unknown here (it predates this
    // run), so a failed restart rolls back to "no audit files".
    let mut j = Journal::begin(
        root,
        c,
        &[],
        Default::default(),
        state.k3s.loaded_digest.clone(),
        p.audit_digest.clone(),
    )?;
    j.files = audit_paths(c, state)
        .into_iter()
        .map(|path| super::journal::JournalFile {
            path,
            previous: None,
        })
        .collect();
    j.written_at_us = state.k3s.written_at_us.unwrap_or_else(now_us);
    j.save(root, c)?;
    restart_with_rollback(ops, root, c, state, j).await?;
    Ok("done".into())
}

/// Why a unit is not to be restarted now: not installed, or stopped.
fn not_running(unit: &str, status: &super::ops::UnitStatus) -> Option<String> {
    if status.load_state != "loaded" {
        return Some(format!(
            "skipped: {unit} is not installed ({})",
            status.load_state
        ));
    }
    match status.active_state.as_str() {
        "active" | "activating" | "reloading" => None,
        other => Some(format!(
            "skipped: {unit} is {other}; it loads the audit settings when it starts"
        )),
    }
}

async fn run_simple<O: Ops>(ops: &O, e: &Effect) -> Result<String> {
    match e {
        Effect::DaemonReload => ops.daemon_reload().await.map(|_| "done".into()),
        Effect::ApplyWatchdog { runtime_usec } => {
            let got = ops.set_runtime_watchdog(*runtime_usec).await?;
            if got != *runtime_usec {
                anyhow::bail!(
                    "RuntimeWatchdogUSec reads back {got} after setting {runtime_usec}; the device may not accept that timeout"
                );
            }
            Ok(format!("done (RuntimeWatchdogUSec={got})"))
        }
        Effect::EnableTimer { unit } => ops.enable_and_restart(unit).await.map(|_| "done".into()),
        Effect::DisableTimer { unit } => ops.disable_and_stop(unit).await.map(|_| "done".into()),
        Effect::RestartK3s { .. } => unreachable!("handled by the caller"),
    }
}

/// Microseconds since the epoch.
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}
