//! `sightline uninstall`: put the host back the way sightline found it.

use anyhow::{Context, Result};
use tracing::info;

use super::converge::{ConvergeOptions, ConvergeReport, converge_to};
use super::ops::Ops;
use crate::config::LoadedConfig;
use crate::facts::Facts;
use crate::host::DesiredState;
use crate::state::State;
use crate::sysroot::Sysroot;

/// What uninstall did.
#[derive(Debug)]
pub struct UninstallReport {
    /// The host converge to "nothing".
    pub host: ConvergeReport,
    /// Directories left in place, and why.
    pub kept: Vec<String>,
}

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
    let opts = ConvergeOptions {
        no_restart,
        explicit: true,
        ..Default::default()
    };
    let host = converge_to(
        root,
        cfg,
        facts,
        &mut state,
        ops,
        opts,
        &DesiredState::default(),
    )
    .await?;
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
        let sd = root.path(&c.paths.state_dir);
        if sd.exists() {
            std::fs::remove_dir_all(&sd)
                .with_context(|| format!("removing {}", c.paths.state_dir))?;
            info!(path = %c.paths.state_dir, "removed sightline state");
        }
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
