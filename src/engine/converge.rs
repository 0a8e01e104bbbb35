//! One converge of the host layer: recover, decide, plan, write, run effects.

use anyhow::{Context, Result};
use serde::Serialize;
use tracing::{info, warn};

use super::apply::apply_changes;
use super::failpoint::hit;
use super::intent::{self, Intent, owed};
use super::journal::Journal;
use super::ops::Ops;
use super::plan::{Plan, plan};
use super::restart::{already_loaded, audit_paths, recover, restart_with_rollback};
use crate::clock::{now_rfc3339, now_us};
use crate::config::{Config, LoadedConfig};
use crate::decide::{Decisions, RecordedTier};
use crate::effects::Effect;
use crate::facts::Facts;
use crate::host::{Component, DesiredState};
use crate::state::State;
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
    /// The lock showed that every earlier writer released it: no temp
    /// file of a killed write can be lying around, so the directory scans
    /// that look for them are skipped.
    pub no_dead_writer: bool,
}

/// How an effect ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum EffectOutcome {
    /// It ran.
    Done {
        /// What it found, e.g. the watchdog value read back.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    /// It was not needed, or not allowed now.
    Skipped {
        /// Why.
        reason: String,
    },
    /// It failed and stays pending.
    Failed {
        /// Why.
        error: String,
    },
    /// k3s did not come back with the change, which was rolled back.
    RolledBack {
        /// Why.
        error: String,
    },
}

impl EffectOutcome {
    fn done() -> EffectOutcome {
        EffectOutcome::Done { detail: None }
    }

    fn skipped(reason: impl Into<String>) -> EffectOutcome {
        EffectOutcome::Skipped {
            reason: reason.into(),
        }
    }
}

impl std::fmt::Display for EffectOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EffectOutcome::Done { detail: None } => f.write_str("done"),
            EffectOutcome::Done { detail: Some(d) } => write!(f, "done ({d})"),
            EffectOutcome::Skipped { reason } => write!(f, "skipped: {reason}"),
            EffectOutcome::Failed { error } => write!(f, "failed: {error}"),
            EffectOutcome::RolledBack { .. } => f.write_str("failed: rolled back"),
        }
    }
}

/// The outcome of an effect.
#[derive(Debug, Clone, Serialize)]
pub struct EffectResult {
    /// Which.
    pub effect: Effect,
    /// How it ended.
    pub outcome: EffectOutcome,
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
            decided_at: now_rfc3339(),
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
        let settled = intent::recover(root, c, state)?;
        let restarted = recover(live, root, c, state).await?;
        let swept = if opts.no_dead_writer {
            Vec::new()
        } else {
            intent::clean_temp_files(
                root,
                c,
                state,
                desired
                    .files
                    .iter()
                    .filter_map(|f| intent::parent(&f.path))
                    .chain(desired.dirs.iter().map(|d| d.path.clone())),
            )
        };
        for t in swept {
            info!(path = %t.display(), "removed a temp file an interrupted write left");
        }
        let started = match live {
            Some(ops) if c.k3s.allow_restart => {
                super::k3s_start::note_start(ops, root, &c.k3s.unit, desired, state)
                    .await
                    .unwrap_or_else(|e| {
                        warn!(error = %format!("{e:#}"), "cannot read which k3s start loaded the audit files");
                        None
                    })
            }
            _ => None,
        };
        let notes: Vec<String> = [settled, restarted, started]
            .into_iter()
            .flatten()
            .collect();
        (!notes.is_empty()).then(|| notes.join("; "))
    };
    let decisions = decisions(cfg, facts, state, opts.redecide);
    let mut p = plan(root, c, desired, state)?;
    if !opts.explicit {
        hold_back_rejected(&mut p, state);
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
    let (journal, notes) = write_changes(root, c, state, &p, live.is_some())?;
    report.plan.warnings.extend(notes);
    report.applied = true;
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
    let failures = run_effects(ops, root, cfg, state, &p, journal, &mut report).await?;
    state.save(root, c)?;
    report.pending_after = state.pending_effects.clone();
    if failures.is_empty() {
        Ok(report)
    } else {
        Err(anyhow::anyhow!(failures.join("\n"))).context("not every follow-up effect succeeded")
    }
}

/// The daemon must not retry a configuration k3s just rejected: that would
/// restart k3s into the same failure every interval.
fn hold_back_rejected(p: &mut Plan, state: &State) {
    let Some(rej) = &state.k3s.rejected else {
        return;
    };
    if p.audit_digest.as_deref() != Some(rej.digest.as_str()) {
        return;
    }
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

/// Writes the plan's changes and records them, under an intent record so
/// that a kill half-way is settled by the next run. Whenever this run will
/// restart k3s, the k3s files are journaled first, so an interruption can be
/// finished or undone; that journal is returned for the restart.
fn write_changes(
    root: &Sysroot,
    c: &Config,
    state: &mut State,
    p: &Plan,
    live: bool,
) -> Result<(Option<Journal>, Vec<String>)> {
    let restart_due = p
        .all_effects()
        .iter()
        .any(|e| matches!(e, Effect::RestartK3s { .. }));
    let journal = if restart_due && live && c.k3s.allow_restart && p.touches_audit() {
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
    // A no-op writes nothing, not even the intent record.
    let mut intent = if p.changes.is_empty() {
        None
    } else {
        hit("converge.intent.before");
        let i = Intent::begin(root, c, state, p)?;
        hit("converge.intent.after");
        Some(i)
    };
    let applied = apply_changes(root, c, state, p, &mut |i| match intent.as_mut() {
        Some(intent) => intent.mark_done(root, c, i),
        None => Ok(()),
    });
    let notes = match applied {
        Ok(notes) => notes,
        Err(err) => {
            // What was written stays recorded (backups above all), and the
            // effects it owes stay pending: the next run or an uninstall
            // must know about them.
            if let Some(Err(e)) = intent.map(|i| i.settle(root, c, state)) {
                warn!(error = %format!("{e:#}"), "cannot record the changes made before the failure");
            }
            if let Some(j) = journal {
                let _ = j.finish(root, c);
            }
            return Err(err);
        }
    };
    if p.touches_audit() {
        state.k3s.written_at_us = Some(now_us());
    }
    state.pending_effects = owed(p);
    hit("converge.state.before");
    state.save(root, c)?;
    hit("converge.state.after");
    if let Some(i) = intent {
        i.finish(root, c)?;
    }
    Ok((journal, notes))
}

/// Runs every due effect in order, recording each outcome in the report;
/// returns the failures.
async fn run_effects<O: Ops>(
    ops: &O,
    root: &Sysroot,
    cfg: &LoadedConfig,
    state: &mut State,
    p: &Plan,
    mut journal: Option<Journal>,
    report: &mut ConvergeReport,
) -> Result<Vec<String>> {
    let c = &cfg.config;
    let mut failures = Vec::new();
    for e in &p.all_effects() {
        let outcome = match e {
            Effect::RestartK3s { .. } if !c.k3s.allow_restart => {
                EffectOutcome::skipped("k3s.allow_restart = false")
            }
            Effect::RestartK3s { unit } => match journal.take() {
                Some(j) => restart_journaled(ops, root, c, state, unit, j, &mut failures).await?,
                None if already_loaded(ops, c, state).await => {
                    state.k3s.loaded_digest = p.audit_digest.clone();
                    super::k3s_start::record_start(ops, unit, state).await;
                    EffectOutcome::skipped(format!(
                        "{unit} started after the files were written and is ready"
                    ))
                }
                None => run_pending_restart(ops, root, cfg, state, p)
                    .await
                    .unwrap_or_else(|err| {
                        let error = format!("{err:#}");
                        failures.push(error.clone());
                        EffectOutcome::Failed { error }
                    }),
            },
            other => match run_simple(ops, other).await {
                Ok(outcome) => {
                    state.pending_effects.retain(|x| x != other);
                    outcome
                }
                Err(err) => {
                    warn!(effect = %other, error = %format!("{err:#}"), "effect failed; it stays pending");
                    failures.push(format!("{other}: {err:#}"));
                    EffectOutcome::Failed {
                        error: format!("{err:#}"),
                    }
                }
            },
        };
        info!(effect = %e, outcome = %outcome, "effect");
        report.effects_run.push(EffectResult {
            effect: e.clone(),
            outcome,
        });
    }
    Ok(failures)
}

/// The restart for this run's own writes, journaled before they were made.
async fn restart_journaled<O: Ops>(
    ops: &O,
    root: &Sysroot,
    c: &Config,
    state: &mut State,
    unit: &str,
    mut j: Journal,
    failures: &mut Vec<String>,
) -> Result<EffectOutcome> {
    j.written_at_us = state.k3s.written_at_us.unwrap_or_else(now_us);
    j.save(root, c)?;
    // Never start a k3s someone stopped: it reads the new files when it
    // starts, and the restart stays owed.
    let status = ops.unit_status(unit).await?;
    if let Some(why) = not_running(unit, &status) {
        j.finish(root, c)?;
        return Ok(why);
    }
    Ok(match restart_with_rollback(ops, root, c, state, j).await {
        Ok(()) => EffectOutcome::done(),
        Err(err) => {
            let error = format!("{err:#}");
            failures.push(error.clone());
            EffectOutcome::RolledBack { error }
        }
    })
}

/// A restart left pending by an earlier run: the files on disk are already
/// the new ones, so journal them as they are and restart with rollback.
async fn run_pending_restart<O: Ops>(
    ops: &O,
    root: &Sysroot,
    cfg: &LoadedConfig,
    state: &mut State,
    p: &Plan,
) -> Result<EffectOutcome> {
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
    Ok(EffectOutcome::done())
}

/// Why a unit is not to be restarted now: not installed, or stopped.
fn not_running(unit: &str, status: &super::ops::UnitStatus) -> Option<EffectOutcome> {
    use super::ops::LoadState;
    if status.load_state != LoadState::Loaded {
        return Some(EffectOutcome::skipped(format!(
            "{unit} is not installed ({})",
            status.load_state
        )));
    }
    // A failed k3s with a restart owed by sightline is sightline's to bring
    // back (a restart killed half-way, the start limit hit): the restart
    // resets it first. Only a stopped one is left alone.
    if status.active_state.is_running() || status.active_state == super::ops::ActiveState::Failed {
        return None;
    }
    Some(EffectOutcome::skipped(format!(
        "{unit} is {}; it loads the audit settings when it starts",
        status.active_state
    )))
}

async fn run_simple<O: Ops>(ops: &O, e: &Effect) -> Result<EffectOutcome> {
    match e {
        Effect::DaemonReload => ops.daemon_reload().await.map(|_| EffectOutcome::done()),
        Effect::ApplyWatchdog { runtime_usec } => {
            let got = ops.set_runtime_watchdog(*runtime_usec).await?;
            if got != *runtime_usec {
                anyhow::bail!(
                    "RuntimeWatchdogUSec reads back {got} after setting {runtime_usec}; the device may not accept that timeout"
                );
            }
            Ok(EffectOutcome::Done {
                detail: Some(format!("RuntimeWatchdogUSec={got}")),
            })
        }
        Effect::EnableTimer { unit } => ops
            .enable_and_restart(unit)
            .await
            .map(|_| EffectOutcome::done()),
        Effect::DisableTimer { unit } => ops
            .disable_and_stop(unit)
            .await
            .map(|_| EffectOutcome::done()),
        Effect::RestartK3s { .. } => unreachable!("handled by the caller"),
    }
}
