//! What `apply` would change, computed without touching anything.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::config::Config;
use crate::digest::{digest_of, sha256_hex};
use crate::effects::{Effect, normalize};
use crate::host::{Component, DesiredState, Requirement};
use crate::state::State;
use crate::sysroot::Sysroot;

/// What happens to one path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum ChangeKind {
    /// Create a directory.
    CreateDir,
    /// Change a directory's mode.
    ChmodDir {
        /// Current mode.
        from: u32,
        /// True when sightline set the mode and someone else changed it.
        drift: bool,
    },
    /// Create a file.
    Create {
        /// True when sightline wrote it before and someone removed it.
        drift: bool,
    },
    /// Replace a file's content (and possibly mode).
    Update {
        /// True when the file was not written by sightline and will be backed up.
        backup: bool,
        /// True when sightline wrote it and someone else changed it since.
        drift: bool,
    },
    /// Change only a file's mode.
    Chmod {
        /// Current mode.
        from: u32,
        /// True when sightline set the mode and someone else changed it.
        drift: bool,
    },
    /// Remove a file sightline no longer wants (restoring the original, if any).
    Remove {
        /// Host path of the original being restored.
        restore: Option<String>,
    },
    /// Record an existing, already correct file as managed.
    Adopt,
}

/// One planned change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// Host path.
    pub path: String,
    /// What happens.
    #[serde(flatten)]
    pub kind: ChangeKind,
    /// Mode after the change.
    pub mode: u32,
    /// Owner.
    pub component: Component,
    /// Unified diff for content changes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    /// New content, for files.
    #[serde(skip)]
    pub content: Option<Vec<u8>>,
}

impl Change {
    /// True for changes that alter the filesystem (Adopt only records).
    pub fn is_visible(&self) -> bool {
        !matches!(self.kind, ChangeKind::Adopt)
    }

    /// True when this repairs drift from what sightline wrote.
    pub fn is_drift(&self) -> bool {
        matches!(
            self.kind,
            ChangeKind::Create { drift: true }
                | ChangeKind::Update { drift: true, .. }
                | ChangeKind::Chmod { drift: true, .. }
                | ChangeKind::ChmodDir { drift: true, .. }
        )
    }

    /// A short verb for listings.
    pub fn verb(&self) -> &'static str {
        match self.kind {
            ChangeKind::CreateDir => "mkdir",
            ChangeKind::ChmodDir { .. } | ChangeKind::Chmod { .. } => "chmod",
            ChangeKind::Create { drift: true } => "recreate",
            ChangeKind::Create { .. } => "create",
            ChangeKind::Update { drift: true, .. } => "repair",
            ChangeKind::Update { .. } => "update",
            ChangeKind::Remove { restore: Some(_) } => "restore",
            ChangeKind::Remove { restore: None } => "remove",
            ChangeKind::Adopt => "adopt",
        }
    }
}

/// Everything `apply` would do on the host.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Plan {
    /// Changes in the order they are applied.
    pub changes: Vec<Change>,
    /// Effects due because of these changes.
    pub effects: Vec<Effect>,
    /// Effects left over from earlier runs.
    pub pending_effects: Vec<Effect>,
    /// Things the user should know.
    pub warnings: Vec<String>,
    /// Components left out, and why.
    pub skipped: Vec<SkippedComponent>,
    /// Digest of the audit files after the change (`None`: no audit files).
    #[serde(skip)]
    pub audit_digest: Option<String>,
}

/// A component that does not apply to this machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SkippedComponent {
    /// Which.
    pub component: Component,
    /// Why.
    pub reason: String,
}

impl Plan {
    /// True when there is nothing to change and nothing to run.
    pub fn is_converged(&self) -> bool {
        !self.changes.iter().any(Change::is_visible)
            && self.effects.is_empty()
            && self.pending_effects.is_empty()
    }

    /// Every effect to run now: due plus pending, in execution order.
    pub fn all_effects(&self) -> Vec<Effect> {
        let mut v: Vec<Effect> = self
            .effects
            .iter()
            .chain(&self.pending_effects)
            .cloned()
            .collect();
        normalize(&mut v);
        v
    }

    /// True when any audit file changes.
    pub fn touches_audit(&self) -> bool {
        self.changes.iter().any(|c| {
            c.component == Component::Audit
                && matches!(
                    c.kind,
                    ChangeKind::Create { .. }
                        | ChangeKind::Update { .. }
                        | ChangeKind::Remove { .. }
                )
        })
    }
}

/// Diffs the desired state against the sysroot.
pub fn plan(root: &Sysroot, cfg: &Config, desired: &DesiredState, state: &State) -> Result<Plan> {
    let mut p = Plan {
        warnings: desired.warnings.clone(),
        skipped: desired
            .skipped
            .iter()
            .map(|(component, reason)| SkippedComponent {
                component: *component,
                reason: reason.clone(),
            })
            .collect(),
        ..Plan::default()
    };
    plan_dirs(root, desired, state, &mut p)?;
    // Each audit file is hashed once, for the audit digest and for the
    // adopt check alike: hashing is most of a no-op plan's own work.
    let audit_files: BTreeMap<&str, String> = desired
        .files
        .iter()
        .filter(|f| f.component == Component::Audit)
        .map(|f| (f.path.as_str(), sha256_hex(&f.content)))
        .collect();
    let mut effects = plan_files(root, desired, state, &audit_files, &mut p)?;
    effects.extend(plan_removals(cfg, desired, state, &mut p));
    p.audit_digest = digest_of(audit_files.iter().map(|(a, b)| (*a, b.as_str())));
    plan_effects(root, cfg, desired, state, effects, &mut p);
    Ok(p)
}

/// Directories to create or whose mode to fix.
fn plan_dirs(root: &Sysroot, desired: &DesiredState, state: &State, p: &mut Plan) -> Result<()> {
    for dir in &desired.dirs {
        let real = root.path(&dir.path);
        let kind = match std::fs::metadata(&real) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => ChangeKind::CreateDir,
            Err(e) => return Err(e).with_context(|| format!("inspecting {}", dir.path)),
            Ok(m) if m.permissions().mode() & 0o7777 != dir.mode => {
                let from = m.permissions().mode() & 0o7777;
                // Only a directory sightline created is its to chmod: a
                // log path in /etc must not turn /etc into 0700.
                if !state.dirs.get(&dir.path).is_some_and(|d| d.created) {
                    p.warnings.push(format!(
                        "{} has mode {from:04o}, not {:04o}; sightline changes the mode only of directories it created, so set it yourself if you want it",
                        dir.path, dir.mode
                    ));
                    continue;
                }
                ChangeKind::ChmodDir {
                    from,
                    drift: state
                        .dirs
                        .get(&dir.path)
                        .is_some_and(|d| d.mode == dir.mode),
                }
            }
            Ok(_) => continue,
        };
        p.changes.push(Change {
            path: dir.path.clone(),
            kind,
            mode: dir.mode,
            component: dir.component,
            diff: None,
            content: None,
        });
    }
    Ok(())
}

/// Files to create, update, chmod or adopt; returns the effects their
/// changes make due.
fn plan_files(
    root: &Sysroot,
    desired: &DesiredState,
    state: &State,
    known_digests: &BTreeMap<&str, String>,
    p: &mut Plan,
) -> Result<Vec<Effect>> {
    let mut effects = Vec::new();
    for f in &desired.files {
        let real = root.path(&f.path);
        let managed = state.files.get(&f.path);
        let current = match std::fs::read(&real) {
            Ok(bytes) => Some((
                bytes,
                std::fs::metadata(&real)?.permissions().mode() & 0o7777,
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(|| format!("reading {}", f.path)),
        };
        let (kind, diff) = match current {
            None => (
                ChangeKind::Create {
                    drift: managed.is_some(),
                },
                Some(unified_diff(&f.path, b"", &f.content)),
            ),
            Some((bytes, _)) if bytes != f.content => (
                ChangeKind::Update {
                    backup: managed.is_none(),
                    drift: managed.is_some_and(|m| m.sha256 != sha256_hex(&bytes)),
                },
                Some(unified_diff(&f.path, &bytes, &f.content)),
            ),
            Some((_, mode)) if mode != f.mode => (
                ChangeKind::Chmod {
                    from: mode,
                    drift: managed.is_some_and(|m| m.mode == f.mode),
                },
                None,
            ),
            Some(_)
                if managed.is_none_or(|m| {
                    m.mode != f.mode
                        || match known_digests.get(f.path.as_str()) {
                            Some(d) => m.sha256 != *d,
                            None => m.sha256 != sha256_hex(&f.content),
                        }
                }) =>
            {
                (ChangeKind::Adopt, None)
            }
            Some(_) => continue,
        };
        if matches!(kind, ChangeKind::Create { .. } | ChangeKind::Update { .. }) {
            effects.extend(f.effects.iter().cloned());
        }
        p.changes.push(Change {
            path: f.path.clone(),
            kind,
            mode: f.mode,
            component: f.component,
            diff,
            content: Some(f.content.clone()),
        });
    }
    Ok(effects)
}

/// Managed files no longer wanted; returns the effects their removal owes.
fn plan_removals(cfg: &Config, desired: &DesiredState, state: &State, p: &mut Plan) -> Vec<Effect> {
    let mut effects = Vec::new();
    for (path, m) in &state.files {
        if desired.file(path).is_none() {
            p.changes.push(Change {
                path: path.clone(),
                kind: ChangeKind::Remove {
                    restore: m.backup.clone(),
                },
                mode: m.mode,
                component: m.component,
                diff: None,
                content: None,
            });
            effects.extend(removal_effects(m.component, cfg));
        }
    }
    effects
}

/// Sorts the effects into due (caused by this run's changes) and pending
/// (owed from an earlier run).
fn plan_effects(
    root: &Sysroot,
    cfg: &Config,
    desired: &DesiredState,
    state: &State,
    mut effects: Vec<Effect>,
    p: &mut Plan,
) {
    // Whether k3s must restart follows from what it has loaded, not from
    // which files changed: repairing a tampered file back to what k3s runs
    // needs no restart, and a restart skipped earlier stays due.
    let audit_changes = p.touches_audit();
    effects.retain(|e| !matches!(e, Effect::RestartK3s { .. }));
    let mut pending: Vec<Effect> = state
        .pending_effects
        .iter()
        .filter(|e| !matches!(e, Effect::RestartK3s { .. }) && !effects.contains(e))
        .cloned()
        .collect();
    // Conditions that do not hold although no file changed are owed from
    // an earlier run: list them as pending.
    for r in &desired.requirements {
        match r {
            Requirement::TimerEnabled { unit } => {
                // The link points at a host path, so it dangles under a
                // scratch root: look at the link itself.
                if std::fs::symlink_metadata(root.path(crate::host::throttle::wants_link(unit)))
                    .is_err()
                {
                    pending.push(Effect::EnableTimer { unit: unit.clone() });
                }
            }
        }
    }
    // A due effect supersedes a pending one of the same kind (a new
    // watchdog value, disabling a timer that was to be enabled).
    pending.retain(|pe| !effects.iter().any(|e| supersedes(e, pe)));
    if p.audit_digest != state.k3s.loaded_digest {
        let restart = Effect::RestartK3s {
            unit: cfg.k3s.unit.clone(),
        };
        if audit_changes {
            effects.push(restart)
        } else {
            pending.push(restart)
        }
    }
    normalize(&mut effects);
    normalize(&mut pending);
    p.effects = effects;
    p.pending_effects = pending;
}

fn supersedes(due: &Effect, pending: &Effect) -> bool {
    use Effect::*;
    match (due, pending) {
        (ApplyWatchdog { .. }, ApplyWatchdog { .. }) => true,
        (
            EnableTimer { unit: a } | DisableTimer { unit: a },
            EnableTimer { unit: b } | DisableTimer { unit: b },
        ) => a == b,
        (a, b) => a == b,
    }
}

/// Effects due when a component's file is removed.
pub fn removal_effects(component: Component, cfg: &Config) -> Vec<Effect> {
    match component {
        Component::Audit => vec![Effect::RestartK3s {
            unit: cfg.k3s.unit.clone(),
        }],
        Component::Watchdog => vec![Effect::ApplyWatchdog { runtime_usec: 0 }],
        Component::Throttle => vec![
            Effect::DaemonReload,
            Effect::DisableTimer {
                unit: crate::host::throttle::TIMER.into(),
            },
        ],
    }
}

/// A unified diff with `a/` and `b/` headers, or a note for binary content.
pub fn unified_diff(path: &str, old: &[u8], new: &[u8]) -> String {
    match (std::str::from_utf8(old), std::str::from_utf8(new)) {
        (Ok(o), Ok(n)) => similar::TextDiff::from_lines(o, n)
            .unified_diff()
            .context_radius(3)
            .header(&format!("a{path}"), &format!("b{path}"))
            .to_string(),
        _ => format!("Binary files a{path} and b{path} differ\n"),
    }
}
