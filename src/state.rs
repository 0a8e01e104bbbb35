//! `/var/lib/sightline/state.json`: what sightline owns and remembers.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::atomic::write_atomic;
use crate::config::Config;
use crate::decide::RecordedTier;
use crate::effects::Effect;
use crate::host::Component;
use crate::sysroot::Sysroot;

/// Current state-file format.
pub const STATE_VERSION: u32 = 1;

/// A file sightline wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagedFile {
    /// SHA-256 of the content sightline wrote.
    pub sha256: String,
    /// Mode sightline set.
    pub mode: u32,
    /// Owner component.
    pub component: Component,
    /// Host path of the copy of the file that was there before, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<String>,
}

/// A directory sightline created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagedDir {
    /// Mode sightline set.
    pub mode: u32,
    /// Owner component.
    pub component: Component,
    /// True when sightline created it (rather than fixing its mode).
    pub created: bool,
}

/// A configuration k3s refused to start with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejected {
    /// Digest of the rejected audit files.
    pub digest: String,
    /// When.
    pub at: String,
    /// Why.
    pub reason: String,
    /// Host directory holding the rejected files.
    pub kept_in: String,
}

/// What sightline knows about k3s.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct K3sState {
    /// Digest of the audit files the running k3s is known to have loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loaded_digest: Option<String>,
    /// The k3s start (InvocationID) that loaded `loaded_digest`: a later
    /// start loaded whatever was on disk then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loaded_invocation: Option<String>,
    /// When sightline started k3s lately (µs since the epoch), to stay
    /// within its start rate limit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent_starts_us: Vec<u64>,
    /// When the audit files were last written (µs since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub written_at_us: Option<u64>,
    /// The last configuration k3s rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected: Option<Rejected>,
}

/// Persistent counters behind sightline's own metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Managed files repaired after someone else changed them.
    pub drift_repairs: u64,
    /// k3s restarts sightline performed.
    pub k3s_restarts: u64,
    /// Automatic rollbacks.
    pub rollbacks: u64,
}

/// A rollout stage's state. Serialised in lower case, as state files of
/// earlier releases wrote it as a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageState {
    /// Not written yet.
    Pending,
    /// Being written.
    Applying,
    /// Written; waiting for its gates.
    Waiting,
    /// All gates hold.
    Healthy,
    /// A gate failed or timed out.
    Failed,
    /// Its file emptied after a tier or component change; waiting for k3s
    /// to delete its objects.
    Pruning,
    /// Removed after a tier or component change.
    Pruned,
}

impl StageState {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            StageState::Pending => "pending",
            StageState::Applying => "applying",
            StageState::Waiting => "waiting",
            StageState::Healthy => "healthy",
            StageState::Failed => "failed",
            StageState::Pruning => "pruning",
            StageState::Pruned => "pruned",
        }
    }
}

impl std::fmt::Display for StageState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A stage sightline placed in the manifests directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageRecord {
    /// File name in the manifests directory.
    pub file: String,
    /// SHA-256 of the file as written.
    pub sha256: String,
    /// Last known health.
    pub state: StageState,
    /// REST paths of the stage's objects, to wait for their deletion on prune.
    #[serde(default)]
    pub objects: Vec<String>,
}

/// The state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Format version.
    pub version: u32,
    /// Files sightline owns, by host path.
    #[serde(default)]
    pub files: BTreeMap<String, ManagedFile>,
    /// Directories sightline created or owns the mode of.
    #[serde(default)]
    pub dirs: BTreeMap<String, ManagedDir>,
    /// Effects not yet executed (e.g. after `apply --no-restart`).
    #[serde(default)]
    pub pending_effects: Vec<Effect>,
    /// The automatic tier decision being kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<RecordedTier>,
    /// k3s bookkeeping.
    #[serde(default)]
    pub k3s: K3sState,
    /// Counters for metrics.
    #[serde(default)]
    pub counters: Counters,
    /// Stages in the manifests directory, by stage name.
    #[serde(default)]
    pub stages: BTreeMap<String, StageRecord>,
}

impl Default for State {
    fn default() -> Self {
        State {
            version: STATE_VERSION,
            files: BTreeMap::new(),
            dirs: BTreeMap::new(),
            pending_effects: Vec::new(),
            tier: None,
            k3s: K3sState::default(),
            counters: Counters::default(),
            stages: BTreeMap::new(),
        }
    }
}

impl State {
    /// Host path of the state file.
    pub fn path(cfg: &Config) -> String {
        format!("{}/state.json", cfg.paths.state_dir)
    }

    /// Loads the state, or an empty one when there is none yet.
    pub fn load(root: &Sysroot, cfg: &Config) -> Result<State> {
        let path = Self::path(cfg);
        let text = root.read_to_string(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::PermissionDenied {
                anyhow::anyhow!("reading {path}: permission denied; sightline's state is readable by root only, so run this with sudo")
            } else {
                anyhow::Error::new(e).context(format!("reading {path}"))
            }
        })?;
        match text {
            None => Ok(State::default()),
            Some(text) => {
                let state: State = serde_json::from_str(&text).with_context(|| {
                    format!("{path} is corrupt; move it aside to start over (sightline then re-adopts the files it finds)")
                })?;
                // Saving a newer format through this release would drop the
                // fields it does not know, and with them what a newer
                // sightline recorded (backups, stages).
                if state.version > STATE_VERSION {
                    anyhow::bail!(
                        "{path} was written by a newer sightline (state format {}, this release reads up to {STATE_VERSION}); install that release again, or move the file aside to start over",
                        state.version
                    );
                }
                Ok(state)
            }
        }
    }

    /// Saves the state atomically, and only when its content changed: a
    /// re-check that finds nothing to do must not wear an SD card.
    pub fn save(&self, root: &Sysroot, cfg: &Config) -> Result<()> {
        let path = Self::path(cfg);
        let mut text = serde_json::to_string_pretty(self)?;
        text.push('\n');
        if root.read(&path).ok().flatten().as_deref() == Some(text.as_bytes()) {
            return Ok(());
        }
        write_atomic(&root.path(&path), text.as_bytes(), 0o600)
            .with_context(|| format!("writing {path}"))
    }
}
impl State {
    /// True when a managed path (host path) no longer matches what sightline
    /// recorded: content, mode, or existence. Paths it does not manage are
    /// never drifted.
    pub fn drifted(&self, root: &Sysroot, path: &str) -> bool {
        use std::os::unix::fs::PermissionsExt;
        let real = root.path(path);
        if let Some(f) = self.files.get(path) {
            return match (std::fs::read(&real), std::fs::metadata(&real)) {
                (Ok(data), Ok(m)) => {
                    crate::digest::sha256_hex(&data) != f.sha256
                        || m.permissions().mode() & 0o7777 != f.mode
                }
                _ => true,
            };
        }
        if let Some(d) = self.dirs.get(path) {
            return std::fs::metadata(&real)
                .map(|m| m.permissions().mode() & 0o7777 != d.mode)
                .unwrap_or(true);
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A state file as release 0.1.0 wrote it, stage states as strings.
    const V010: &str = r#"{
  "version": 1,
  "files": {
    "/etc/rancher/k3s/audit-policy.yaml": {
      "sha256": "ab",
      "mode": 384,
      "component": "audit",
      "backup": "/var/lib/sightline/backup/etc/rancher/k3s/audit-policy.yaml"
    }
  },
  "dirs": {
    "/var/log/k3s": { "mode": 448, "component": "audit", "created": true }
  },
  "pending_effects": [ { "effect": "daemon_reload" } ],
  "tier": { "tier": "light", "decided_at": "2026-11-21T01:01:01Z", "available_bytes": 1 },
  "k3s": { "loaded_digest": "cd", "written_at_us": 5 },
  "counters": { "drift_repairs": 1, "k3s_restarts": 2, "rollbacks": 0 },
  "stages": {
    "namespaces": { "file": "sightline-10-namespaces.yaml", "sha256": "ef", "state": "healthy", "objects": [] },
    "loki": { "file": "sightline-20-loki.yaml", "sha256": "01", "state": "waiting" }
  }
}"#;

    #[test]
    fn state_files_of_the_previous_release_load() {
        let s: State = serde_json::from_str(V010).unwrap();
        assert_eq!(s.stages["namespaces"].state, StageState::Healthy);
        assert_eq!(s.stages["loki"].state, StageState::Waiting);
        assert_eq!(s.counters.k3s_restarts, 2);
        // And what this release writes reads back the same.
        let again: State = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(again, s);
        assert!(
            serde_json::to_string(&s)
                .unwrap()
                .contains(r#""state":"healthy""#)
        );
    }

    #[test]
    fn a_state_file_from_a_newer_release_is_refused_not_rewritten() {
        let d = tempfile::tempdir().unwrap();
        let root = Sysroot::new(d.path());
        let cfg = Config::default();
        let newer = V010.replacen("\"version\": 1", "\"version\": 7", 1);
        let p = root.path(State::path(&cfg));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, &newer).unwrap();
        let e = State::load(&root, &cfg).unwrap_err().to_string();
        assert!(
            e.contains("newer sightline") && e.contains("state format 7"),
            "{e}"
        );
        assert_eq!(std::fs::read_to_string(&p).unwrap(), newer);
    }
}
