//! `sightline uninstall`: put the host back the way sightline found it.
//!
//! Only what sightline recorded creating is removed: its managed files (the
//! originals restored), the directories it created once empty, and its own
//! files in the state directory. A configured directory is never removed as
//! a tree, so a mistaken `state_dir` cannot take the system with it.

use std::path::Path;

use anyhow::{Context, Result};
use tracing::{info, warn};

use super::converge::{ConvergeOptions, ConvergeReport, converge_to};
use super::ops::Ops;
use crate::atomic::{remove_file, write_atomic};
use crate::config::{Config, LoadedConfig};
use crate::digest::sha256_hex;
use crate::facts::Facts;
use crate::host::DesiredState;
use crate::state::State;
use crate::sysroot::Sysroot;

/// What uninstall did.
#[derive(Debug)]
pub struct UninstallReport {
    /// The host converge to "nothing". Its plan's warnings name the
    /// originals that could not be restored and the edited files kept.
    pub host: ConvergeReport,
    /// Directories left in place, and why.
    pub kept: Vec<String>,
}

/// sightline's own files in the state directory, relative to it.
const OWN_FILES: &[&str] = &[
    "state.json",
    "intent.json",
    "k3s-journal.json",
    "secrets/grafana-admin-password",
];
/// Subdirectories of the state directory only sightline writes into.
const OWN_TREES: &[&str] = &["txn", "rejected"];
/// Subdirectories of the state directory whose empty directories are
/// sightline's (its backups mirror the host paths below `backup`).
const OWN_DIRS: &[&str] = &["backup", "secrets"];

/// Removes every file sightline wrote (restoring originals), runs the
/// follow-up effects, and clears sightline's state.
pub async fn uninstall<O: Ops>(
    root: &Sysroot,
    cfg: &LoadedConfig,
    facts: &Facts,
    ops: Option<&O>,
    no_restart: bool,
) -> Result<UninstallReport> {
    let c = &cfg.config;
    let mut state = State::load(root, c)?;
    // An interrupted converge may hold the only record of a backup.
    super::intent::recover(root, c, &mut state)?;
    let edited = keep_edited(root, c, &state)?;
    let opts = ConvergeOptions {
        no_restart,
        explicit: true,
        ..Default::default()
    };
    let mut host = converge_to(
        root,
        cfg,
        facts,
        &mut state,
        ops,
        opts,
        &DesiredState::default(),
    )
    .await?;
    host.plan.warnings.splice(0..0, edited);
    let mut kept = Vec::new();
    for (dir, d) in &state.dirs {
        let real = root.path(dir);
        let empty = std::fs::read_dir(&real)
            .map(|mut r| r.next().is_none())
            .unwrap_or(false);
        if d.created && empty {
            std::fs::remove_dir(&real).with_context(|| format!("removing {dir}"))?;
            info!(path = %dir, "removed directory");
        } else if real.exists() {
            kept.push(format!(
                "{dir} (holds data written by others, e.g. audit logs)"
            ));
        }
    }
    if host.pending_after.is_empty() {
        kept.extend(remove_own_state(root, c)?);
    } else {
        // Keep the record of what is still owed (e.g. a k3s restart) so a
        // later `sightline uninstall` can finish it.
        state.dirs.clear();
        state.save(root, c)?;
        kept.push(format!(
            "{} (follow-up effects still pending; run uninstall again with systemd reachable)",
            c.paths.state_dir
        ));
    }
    Ok(UninstallReport { host, kept })
}

/// Copies every managed file an administrator changed since sightline wrote
/// it to `<state_dir>/edited/<path>` before uninstall removes it, and says so.
fn keep_edited(root: &Sysroot, cfg: &Config, state: &State) -> Result<Vec<String>> {
    let mut notes = Vec::new();
    for (path, f) in &state.files {
        let Ok(data) = std::fs::read(root.path(path)) else {
            continue;
        };
        if sha256_hex(&data) == f.sha256 {
            continue;
        }
        let copy = format!("{}/edited{path}", cfg.paths.state_dir);
        write_atomic(&root.path(&copy), &data, 0o600)
            .with_context(|| format!("keeping a copy of the edited {path}"))?;
        warn!(path = %path, copy = %copy, "a managed file was edited since sightline wrote it; a copy is kept");
        notes.push(format!(
            "{path} was edited since sightline wrote it; uninstall removes it, and a copy of the edited file is kept in {copy}"
        ));
    }
    Ok(notes)
}

/// Removes sightline's own files in the state directory, then every
/// directory there left empty. Returns what stays, and why.
fn remove_own_state(root: &Sysroot, cfg: &Config) -> Result<Vec<String>> {
    let sd = &cfg.paths.state_dir;
    for f in OWN_FILES {
        remove_file(&root.path(format!("{sd}/{f}")))
            .with_context(|| format!("removing {sd}/{f}"))?;
    }
    for t in OWN_TREES {
        let real = root.path(format!("{sd}/{t}"));
        if real.is_dir() && !real.is_symlink() {
            std::fs::remove_dir_all(&real).with_context(|| format!("removing {sd}/{t}"))?;
        }
    }
    // Only sightline's own subdirectories are pruned: an empty directory
    // elsewhere in a mistaken state_dir may be another program's.
    for t in OWN_DIRS {
        prune_empty(&root.path(format!("{sd}/{t}")))?;
    }
    let real = root.path(sd);
    if std::fs::read_dir(&real).is_ok_and(|mut r| r.next().is_none()) {
        std::fs::remove_dir(&real).with_context(|| format!("removing {sd}"))?;
    }
    if real.exists() {
        let mut left = Vec::new();
        list_files(&real, &real, &mut left);
        warn!(path = %sd, files = ?left, "files sightline does not own are left in the state directory");
        return Ok(vec![format!(
            "{sd} (holds files sightline did not write or must keep: {})",
            left.join(", ")
        )]);
    }
    info!(path = %sd, "removed sightline state");
    Ok(Vec::new())
}

/// Removes `dir` and the directories below it that are (or become) empty.
fn prune_empty(dir: &Path) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            prune_empty(&e.path())?;
        }
    }
    if std::fs::read_dir(dir).is_ok_and(|mut r| r.next().is_none()) {
        std::fs::remove_dir(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    Ok(())
}

fn list_files(base: &Path, dir: &Path, out: &mut Vec<String>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            list_files(base, &e.path(), out);
        } else {
            out.push(
                e.path()
                    .strip_prefix(base)
                    .unwrap_or(&e.path())
                    .display()
                    .to_string(),
            );
        }
    }
}
