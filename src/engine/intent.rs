//! The intent journal: `/var/lib/sightline/intent.json`.
//!
//! Before the first file of a converge is touched, sightline records every
//! change it is about to make (with the backup each one takes) and the
//! effects the converge will owe (daemon-reload, watchdog, timers). Each
//! change is marked done as it completes. A run killed half-way leaves the
//! record behind, and the next run (CLI or daemon) settles it before
//! planning: it records the files and directories that were written, keeps
//! the backups' records, adds the owed effects to the pending ones, and
//! removes sightline's temp files. The changes not yet made are then simply
//! planned again. The k3s restart has its own journal ([`super::journal`]),
//! which can roll the audit files back.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::plan::{Change, ChangeKind, Plan};
use crate::atomic::{remove_file, remove_temp_files, write_atomic};
use crate::config::Config;
use crate::digest::sha256_hex;
use crate::effects::Effect;
use crate::host::Component;
use crate::state::{ManagedDir, ManagedFile, State};
use crate::sysroot::Sysroot;

/// What one step does, with what the state must record once it is done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Create a directory that did not exist.
    CreateDir,
    /// Set the mode of an existing directory.
    ChmodDir,
    /// Write (or adopt) a file with this content digest.
    Write {
        /// SHA-256 of the content.
        sha256: String,
        /// Host path of the original's backup, when there is one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        backup: Option<String>,
    },
    /// Remove a file, restoring its original when there is one.
    Remove {
        /// Host path of the backup being restored.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        restore: Option<String>,
    },
}

/// One change of the converge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// Host path.
    pub path: String,
    /// What happens.
    #[serde(flatten)]
    pub action: Action,
    /// Mode after the change.
    pub mode: u32,
    /// Owner.
    pub component: Component,
    /// True once the change is complete on disk.
    pub done: bool,
}

/// The record of a converge in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    /// Changes in the order they are made.
    pub steps: Vec<Step>,
    /// Effects the converge owes once any step is done.
    pub owed_effects: Vec<Effect>,
}

/// Host path of the intent journal.
pub fn path(cfg: &Config) -> String {
    format!("{}/intent.json", cfg.paths.state_dir)
}

/// Host path where the original of `path` is kept.
pub fn backup_path(cfg: &Config, path: &str) -> String {
    format!("{}/backup{}", cfg.paths.state_dir, path)
}

fn step_of(cfg: &Config, state: &State, c: &Change) -> Step {
    let action = match &c.kind {
        ChangeKind::CreateDir => Action::CreateDir,
        ChangeKind::ChmodDir { .. } => Action::ChmodDir,
        ChangeKind::Remove { restore } => Action::Remove {
            restore: restore.clone(),
        },
        ChangeKind::Create { .. }
        | ChangeKind::Update { .. }
        | ChangeKind::Chmod { .. }
        | ChangeKind::Adopt => {
            let recorded = state.files.get(&c.path).and_then(|m| m.backup.clone());
            let backup = match c.kind {
                ChangeKind::Update { backup: true, .. } => Some(backup_path(cfg, &c.path)),
                _ => recorded,
            };
            Action::Write {
                sha256: sha256_hex(c.content.as_deref().unwrap_or_default()),
                backup,
            }
        }
    };
    Step {
        path: c.path.clone(),
        action,
        mode: c.mode,
        component: c.component,
        done: false,
    }
}

impl Intent {
    /// Records the plan's changes and owed effects before any is made.
    pub fn begin(root: &Sysroot, cfg: &Config, state: &State, plan: &Plan) -> Result<Intent> {
        let intent = Intent {
            steps: plan
                .changes
                .iter()
                .map(|c| step_of(cfg, state, c))
                .collect(),
            owed_effects: owed(plan),
        };
        intent.save(root, cfg)?;
        Ok(intent)
    }

    /// Loads an unsettled intent, if any.
    pub fn load(root: &Sysroot, cfg: &Config) -> Result<Option<Intent>> {
        let p = path(cfg);
        match root.read_to_string(&p).with_context(|| format!("reading {p}"))? {
            None => Ok(None),
            Some(t) => serde_json::from_str(&t).map(Some).with_context(|| {
                format!("{p} is corrupt; move it aside and run `sightline apply` (it plans every change again)")
            }),
        }
    }

    fn save(&self, root: &Sysroot, cfg: &Config) -> Result<()> {
        let text = serde_json::to_string_pretty(self)? + "\n";
        let p = path(cfg);
        super::failpoint::hit("intent.save.before");
        write_atomic(&root.path(&p), text.as_bytes(), 0o600).with_context(|| format!("writing {p}"))
    }

    /// Marks step `i` done and persists that.
    pub fn mark_done(&mut self, root: &Sysroot, cfg: &Config, i: usize) -> Result<()> {
        if let Some(s) = self.steps.get_mut(i) {
            s.done = true;
        }
        self.save(root, cfg)
    }

    /// Brings `state` in line with what is on disk after an interruption or
    /// a failed write, then removes the record. Steps found complete are
    /// recorded even when not marked done (the kill came between the rename
    /// and the mark); steps not made are left to the next plan.
    pub fn settle(self, root: &Sysroot, cfg: &Config, state: &mut State) -> Result<Vec<String>> {
        let mut notes = Vec::new();
        let mut any_done = false;
        for s in &self.steps {
            let real = root.path(&s.path);
            match &s.action {
                Action::CreateDir => {
                    if real.is_dir() {
                        any_done = true;
                        state.dirs.entry(s.path.clone()).or_insert(ManagedDir {
                            mode: s.mode,
                            component: s.component,
                            created: true,
                        });
                    }
                }
                Action::ChmodDir => {
                    let mode = std::fs::metadata(&real).map(|m| m.permissions().mode() & 0o7777);
                    if mode.is_ok_and(|m| m == s.mode) {
                        any_done = true;
                        state.dirs.entry(s.path.clone()).or_insert(ManagedDir {
                            mode: s.mode,
                            component: s.component,
                            created: false,
                        });
                    }
                }
                Action::Write { sha256, backup } => {
                    let backup = backup
                        .clone()
                        .filter(|b| root.path(b).is_file() || root.path(b).is_symlink());
                    let on_disk = std::fs::read(&real).ok().map(|d| sha256_hex(&d));
                    if on_disk.as_deref() == Some(sha256.as_str()) {
                        any_done |= s.done || !state.files.contains_key(&s.path);
                        state.files.insert(
                            s.path.clone(),
                            ManagedFile {
                                sha256: sha256.clone(),
                                mode: s.mode,
                                component: s.component,
                                backup,
                            },
                        );
                    } else if let Some(b) = backup {
                        // The original is saved but sightline's file never
                        // landed: keep the record so uninstall restores it.
                        notes.push(format!(
                            "{} was not written; its original is kept in {b}",
                            s.path
                        ));
                    }
                }
                Action::Remove { .. } => {
                    let gone = !real.exists() && !real.is_symlink();
                    let restored = std::fs::read(&real).is_ok_and(|d| {
                        state
                            .files
                            .get(&s.path)
                            .is_none_or(|f| sha256_hex(&d) != f.sha256)
                    });
                    if s.done || gone || restored {
                        any_done = true;
                        state.files.remove(&s.path);
                    }
                }
            }
        }
        if any_done {
            for e in &self.owed_effects {
                if !state.pending_effects.contains(e) {
                    state.pending_effects.push(e.clone());
                }
            }
        }
        let removed = clean_temp_files(
            root,
            cfg,
            state,
            self.steps.iter().filter_map(|s| parent(&s.path)),
        );
        for t in &removed {
            info!(path = %t.display(), "removed a temp file an interrupted write left");
        }
        state.save(root, cfg)?;
        remove_file(&root.path(path(cfg))).with_context(|| format!("removing {}", path(cfg)))?;
        Ok(notes)
    }

    /// Ends a converge whose every step completed.
    pub fn finish(self, root: &Sysroot, cfg: &Config) -> Result<()> {
        super::failpoint::hit("intent.finish.before");
        remove_file(&root.path(path(cfg))).with_context(|| format!("removing {}", path(cfg)))?;
        Ok(())
    }
}

/// The effects a plan owes; a k3s restart is owed through the audit digest
/// and the k3s journal instead, so it is not listed here.
pub fn owed(plan: &Plan) -> Vec<Effect> {
    plan.all_effects()
        .into_iter()
        .filter(|e| !matches!(e, Effect::RestartK3s { .. }))
        .collect()
}

/// Settles an intent an interrupted run left, if any.
pub fn recover(root: &Sysroot, cfg: &Config, state: &mut State) -> Result<Option<String>> {
    let Some(intent) = Intent::load(root, cfg)? else {
        return Ok(None);
    };
    let total = intent.steps.len();
    let done = intent.steps.iter().filter(|s| s.done).count();
    warn!(done, total, "settling an interrupted converge");
    let notes = intent.settle(root, cfg, state)?;
    let mut msg = format!(
        "an interrupted converge ({done} of {total} change(s) marked done) was recorded; the rest is done now"
    );
    for n in notes {
        msg.push_str("; ");
        msg.push_str(&n);
    }
    Ok(Some(msg))
}

/// The directory of a host path.
pub fn parent(p: &str) -> Option<String> {
    std::path::Path::new(p)
        .parent()
        .map(|d| d.to_string_lossy().into_owned())
}

/// Removes sightline's temp files in `dirs`, in the directories of every
/// managed file and directory, and in the state directory tree.
pub fn clean_temp_files(
    root: &Sysroot,
    cfg: &Config,
    state: &State,
    extra_dirs: impl Iterator<Item = String>,
) -> Vec<std::path::PathBuf> {
    let mut dirs: BTreeSet<String> = extra_dirs.collect();
    for p in state.files.keys() {
        dirs.extend(parent(p));
    }
    dirs.extend(state.dirs.keys().cloned());
    let sd = cfg.paths.state_dir.clone();
    let mut removed = Vec::new();
    for d in dirs {
        match remove_temp_files(&root.path(&d), false) {
            Ok(r) => removed.extend(r),
            Err(e) => warn!(dir = %d, error = %e, "cannot clean temp files"),
        }
    }
    match remove_temp_files(&root.path(&sd), true) {
        Ok(r) => removed.extend(r),
        Err(e) => warn!(dir = %sd, error = %e, "cannot clean temp files"),
    }
    removed
}
