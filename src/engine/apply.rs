//! Carrying out a plan's file changes on the sysroot.

use std::os::unix::fs::PermissionsExt;

use anyhow::{Context, Result};
use tracing::info;

use super::plan::{ChangeKind, Plan};
use crate::atomic::{create_dir_all, remove_file, write_atomic};
use crate::config::Config;
use crate::digest::sha256_hex;
use crate::state::{ManagedDir, ManagedFile, State};
use crate::sysroot::Sysroot;

/// Host path where the original of `path` is kept.
pub fn backup_path(cfg: &Config, path: &str) -> String {
    format!("{}/backup{}", cfg.paths.state_dir, path)
}

/// Applies the plan's changes and records them in `state` (the caller saves
/// it). Changes run in plan order: directories, then files, then removals.
pub fn apply_changes(root: &Sysroot, cfg: &Config, state: &mut State, plan: &Plan) -> Result<()> {
    for c in &plan.changes {
        let real = root.path(&c.path);
        match &c.kind {
            ChangeKind::CreateDir => {
                create_dir_all(&real, c.mode).with_context(|| format!("creating {}", c.path))?;
                state.dirs.insert(
                    c.path.clone(),
                    ManagedDir {
                        mode: c.mode,
                        component: c.component,
                        created: true,
                    },
                );
                info!(path = %c.path, mode = %format!("{:04o}", c.mode), component = c.component.name(), "created directory");
            }
            ChangeKind::ChmodDir { from, drift } => {
                if *drift {
                    state.counters.drift_repairs += 1;
                }
                std::fs::set_permissions(&real, std::fs::Permissions::from_mode(c.mode))
                    .with_context(|| format!("chmod {}", c.path))?;
                state.dirs.entry(c.path.clone()).or_insert(ManagedDir {
                    mode: c.mode,
                    component: c.component,
                    created: false,
                });
                info!(path = %c.path, from = %format!("{from:04o}"), mode = %format!("{:04o}", c.mode), component = c.component.name(), "changed directory mode");
            }
            ChangeKind::Create { .. }
            | ChangeKind::Update { .. }
            | ChangeKind::Chmod { .. }
            | ChangeKind::Adopt => {
                let content = c.content.as_deref().expect("file changes carry content");
                let mut backup = state.files.get(&c.path).and_then(|m| m.backup.clone());
                if let ChangeKind::Update { backup: true, .. } = c.kind {
                    backup = Some(take_backup(root, cfg, &c.path)?);
                } else if backup.is_none() {
                    // A crash after the backup but before the state was saved
                    // leaves the backup on disk; it is still the original.
                    let candidate = backup_path(cfg, &c.path);
                    if root.path(&candidate).is_file() {
                        backup = Some(candidate);
                    }
                }
                if !matches!(c.kind, ChangeKind::Adopt) {
                    write_atomic(&real, content, c.mode)
                        .with_context(|| format!("writing {}", c.path))?;
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
            }
            ChangeKind::Remove { restore } => {
                match restore {
                    Some(b) => {
                        let data = root
                            .read(b)?
                            .with_context(|| format!("backup {b} of {} is missing", c.path))?;
                        let mode = std::fs::metadata(root.path(b))?.permissions().mode() & 0o7777;
                        write_atomic(&real, &data, mode)
                            .with_context(|| format!("restoring {}", c.path))?;
                        remove_file(&root.path(b))?;
                        info!(path = %c.path, from = %b, component = c.component.name(), "restored original file");
                    }
                    None => {
                        remove_file(&real).with_context(|| format!("removing {}", c.path))?;
                        info!(path = %c.path, component = c.component.name(), "removed file");
                    }
                }
                state.files.remove(&c.path);
            }
        }
    }
    Ok(())
}

/// Copies the current file to its backup path, keeping its mode.
fn take_backup(root: &Sysroot, cfg: &Config, path: &str) -> Result<String> {
    let dest = backup_path(cfg, path);
    if root.path(&dest).is_file() {
        // Never overwrite the true original with a later version.
        return Ok(dest);
    }
    let real = root.path(path);
    let data = std::fs::read(&real).with_context(|| format!("reading {path} for backup"))?;
    let mode = std::fs::metadata(&real)?.permissions().mode() & 0o7777;
    write_atomic(&root.path(&dest), &data, mode).with_context(|| format!("backing up {path}"))?;
    info!(path = %path, backup = %dest, "backed up original file");
    Ok(dest)
}
