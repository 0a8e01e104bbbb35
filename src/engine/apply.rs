//! Carrying out a plan's file changes on the sysroot.

use std::os::unix::fs::PermissionsExt;

use anyhow::{Context, Result};
use tracing::{info, warn};

use super::failpoint::hit;
use super::plan::{Change, ChangeKind, Plan};
use crate::atomic::{create_dir_all, remove_file, symlink_atomic, write_atomic};
use crate::config::Config;
use crate::digest::sha256_hex;
use crate::state::{ManagedDir, ManagedFile, State};
use crate::sysroot::Sysroot;

pub use super::intent::backup_path;

/// Applies the plan's changes and records them in `state` (the caller saves
/// it). Changes run in plan order: directories, then files, then removals.
/// `done(i)` is called after change `i` is complete on disk. Returns what the
/// user must know (an original that could not be restored, say).
pub fn apply_changes(
    root: &Sysroot,
    cfg: &Config,
    state: &mut State,
    plan: &Plan,
    done: &mut dyn FnMut(usize) -> Result<()>,
) -> Result<Vec<String>> {
    let mut notes = Vec::new();
    for (i, c) in plan.changes.iter().enumerate() {
        hit("apply.change.before");
        match &c.kind {
            ChangeKind::CreateDir => create_dir(root, state, c)?,
            ChangeKind::ChmodDir { drift, .. } => chmod_dir(root, state, c, *drift)?,
            ChangeKind::Create { .. }
            | ChangeKind::Update { .. }
            | ChangeKind::Chmod { .. }
            | ChangeKind::Adopt => write_file(root, cfg, state, c)?,
            ChangeKind::Remove { restore } => {
                notes.extend(remove_or_restore(root, state, c, restore.as_deref())?)
            }
        }
        hit("apply.change.after");
        done(i)?;
    }
    Ok(notes)
}

fn create_dir(root: &Sysroot, state: &mut State, c: &Change) -> Result<()> {
    create_dir_all(&root.path(&c.path), c.mode).with_context(|| format!("creating {}", c.path))?;
    state.dirs.insert(
        c.path.clone(),
        ManagedDir {
            mode: c.mode,
            component: c.component,
            created: true,
        },
    );
    info!(path = %c.path, mode = %format!("{:04o}", c.mode), component = c.component.name(), "created directory");
    Ok(())
}

fn chmod_dir(root: &Sysroot, state: &mut State, c: &Change, drift: bool) -> Result<()> {
    if drift {
        state.counters.drift_repairs += 1;
    }
    std::fs::set_permissions(root.path(&c.path), std::fs::Permissions::from_mode(c.mode))
        .with_context(|| format!("chmod {}", c.path))?;
    state.dirs.entry(c.path.clone()).or_insert(ManagedDir {
        mode: c.mode,
        component: c.component,
        created: false,
    });
    info!(path = %c.path, mode = %format!("{:04o}", c.mode), component = c.component.name(), "changed directory mode");
    Ok(())
}

fn write_file(root: &Sysroot, cfg: &Config, state: &mut State, c: &Change) -> Result<()> {
    let content = c.content.as_deref().expect("file changes carry content");
    let mut backup = state.files.get(&c.path).and_then(|m| m.backup.clone());
    if let ChangeKind::Update { backup: true, .. } = c.kind {
        backup = Some(take_backup(root, cfg, &c.path)?);
    } else if backup.is_none() {
        // A crash after the backup but before the state was saved leaves the
        // backup on disk; it is still the original.
        let candidate = backup_path(cfg, &c.path);
        let real = root.path(&candidate);
        if real.is_file() || real.is_symlink() {
            backup = Some(candidate);
        }
    }
    if !matches!(c.kind, ChangeKind::Adopt) {
        hit("apply.write.before");
        write_atomic(&root.path(&c.path), content, c.mode)
            .with_context(|| format!("writing {}", c.path))?;
        hit("apply.write.after");
    }
    state.files.insert(
        c.path.clone(),
        ManagedFile {
            sha256: sha256_hex(content),
            mode: c.mode,
            component: c.component,
            backup,
        },
    );
    if c.is_visible() {
        info!(
            path = %c.path,
            action = c.verb(),
            mode = %format!("{:04o}", c.mode),
            sha256 = %sha256_hex(content),
            component = c.component.name(),
            drift = c.is_drift(),
            "wrote file"
        );
    }
    if c.is_drift() {
        state.counters.drift_repairs += 1;
    }
    Ok(())
}

/// Removes sightline's file, putting the original back when there is one.
/// A missing backup does not stop the rest: the file is removed and the
/// returned note says which original could not be restored.
fn remove_or_restore(
    root: &Sysroot,
    state: &mut State,
    c: &Change,
    restore: Option<&str>,
) -> Result<Option<String>> {
    let real = root.path(&c.path);
    let mut note = None;
    match restore {
        Some(b) if root.path(b).is_symlink() => {
            let target =
                std::fs::read_link(root.path(b)).with_context(|| format!("reading {b}"))?;
            hit("restore.before");
            symlink_atomic(&target, &real).with_context(|| format!("restoring {}", c.path))?;
            remove_file(&root.path(b))?;
            info!(path = %c.path, target = %target.display(), "restored original symlink");
        }
        Some(b) if root.path(b).is_file() => {
            let data = std::fs::read(root.path(b)).with_context(|| format!("reading {b}"))?;
            let mode = std::fs::metadata(root.path(b))?.permissions().mode() & 0o7777;
            hit("restore.before");
            write_atomic(&real, &data, mode).with_context(|| format!("restoring {}", c.path))?;
            remove_file(&root.path(b))?;
            info!(path = %c.path, from = %b, component = c.component.name(), "restored original file");
        }
        Some(b) => {
            remove_file(&real).with_context(|| format!("removing {}", c.path))?;
            warn!(path = %c.path, backup = %b, "the original's backup is missing; removed sightline's file");
            note = Some(format!(
                "could not restore the original {}: its backup {b} is missing; sightline's version was removed",
                c.path
            ));
        }
        None => {
            remove_file(&real).with_context(|| format!("removing {}", c.path))?;
            info!(path = %c.path, component = c.component.name(), "removed file");
        }
    }
    state.files.remove(&c.path);
    Ok(note)
}

/// Keeps the current file at its backup path: its content and mode, or the
/// link itself when it is a symlink (restored as a symlink).
fn take_backup(root: &Sysroot, cfg: &Config, path: &str) -> Result<String> {
    let dest = backup_path(cfg, path);
    let dest_real = root.path(&dest);
    if dest_real.is_file() || dest_real.is_symlink() {
        // Never overwrite the true original with a later version.
        return Ok(dest);
    }
    let real = root.path(path);
    hit("backup.before");
    if real.is_symlink() {
        let target = std::fs::read_link(&real).with_context(|| format!("reading {path}"))?;
        symlink_atomic(&target, &dest_real).with_context(|| format!("backing up {path}"))?;
    } else {
        let data = std::fs::read(&real).with_context(|| format!("reading {path} for backup"))?;
        let mode = std::fs::metadata(&real)?.permissions().mode() & 0o7777;
        write_atomic(&dest_real, &data, mode).with_context(|| format!("backing up {path}"))?;
    }
    hit("backup.after");
    info!(path = %path, backup = %dest, "backed up original file");
    Ok(dest)
}
