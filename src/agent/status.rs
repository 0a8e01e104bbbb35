//! `/run/sightline/status.json`, written after a converge or cluster pass
//! whenever its content changed, and read by `sightline status`.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::atomic::{Durability, write_if_changed};
use crate::config::Config;
use crate::effects::Effect;
use crate::sysroot::Sysroot;

/// The last converge.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LastConverge {
    /// When it finished.
    pub at: String,
    /// `daemon` or `cli`.
    pub by: String,
    /// Whether it succeeded.
    pub ok: bool,
    /// How long it took.
    pub duration_ms: u64,
    /// What it changed.
    pub changes: Vec<String>,
    /// Why it failed.
    pub error: Option<String>,
}

/// State of one rollout stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageStatus {
    /// Stage name.
    pub name: String,
    /// Its state.
    pub state: crate::state::StageState,
    /// Why (for failed or waiting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The status file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// sightline version.
    pub version: String,
    /// PID of the daemon, when it wrote this.
    pub daemon_pid: Option<u32>,
    /// When this was written.
    pub updated_at: String,
    /// The last converge.
    pub last_converge: Option<LastConverge>,
    /// Effects still owed.
    pub pending_effects: Vec<Effect>,
    /// Warnings from the last converge.
    pub warnings: Vec<String>,
    /// Errors.
    pub errors: Vec<String>,
    /// The tier in use.
    pub tier: Option<String>,
    /// The runtime-security engine in use.
    pub runtime_security: Option<String>,
    /// Whether any alert channel is configured.
    #[serde(default)]
    pub alerting_configured: bool,
    /// Cluster rollout: what happened last and each stage's state.
    #[serde(default)]
    pub cluster: Option<String>,
    /// Stage states.
    #[serde(default)]
    pub stages: Vec<StageStatus>,
}

impl Status {
    /// Host path of the status file.
    pub fn path(cfg: &Config) -> String {
        format!("{}/status.json", cfg.paths.run_dir)
    }

    /// Reads the status file.
    pub fn read(root: &Sysroot, cfg: &Config) -> Result<Status> {
        let p = Self::path(cfg);
        let text = root.read_to_string(&p)?.with_context(|| format!("no status at {p}: sightline has not converged on this machine yet (is sightline.service running?)"))?;
        serde_json::from_str(&text).with_context(|| format!("{p} is corrupt"))
    }

    /// Writes the status file (world-readable: it holds no secrets) when
    /// its content changed. It lives on tmpfs, so no fsync.
    pub fn write(&self, root: &Sysroot, cfg: &Config) -> Result<()> {
        let text = serde_json::to_string_pretty(self)? + "\n";
        let path = Self::path(cfg);
        write_if_changed(
            &root.path(&path),
            text.as_bytes(),
            0o644,
            Durability::Volatile,
        )
        .map(|_| ())
        .with_context(|| format!("writing {path}"))
    }
}
