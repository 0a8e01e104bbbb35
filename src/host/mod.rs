//! The host layer's desired state: a pure function of (config, facts).
//!
//! Each component contributes directories and files, each file naming the
//! effects due when it changes. [`crate::engine`] diffs this against the
//! sysroot and converges it.

pub(crate) mod audit;
pub(crate) mod audit_policy;
mod guard;
pub(crate) mod k3s_flags;
pub(crate) mod throttle;
pub(crate) mod watchdog;

use serde::Serialize;

use crate::config::Config;
use crate::effects::Effect;
use crate::facts::Facts;
use crate::sysroot::Sysroot;

/// Which part of sightline owns a path.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Component {
    /// k3s API audit policy and flags.
    Audit,
    /// Hardware watchdog.
    Watchdog,
    /// Raspberry Pi throttle collector.
    Throttle,
}

impl Component {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Component::Audit => "audit",
            Component::Watchdog => "watchdog",
            Component::Throttle => "throttle",
        }
    }
}

/// A directory that must exist with a mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredDir {
    /// Host path.
    pub path: String,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub component: Component,
}

/// A file sightline owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredFile {
    /// Host path.
    pub path: String,
    /// Exact content.
    pub content: Vec<u8>,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub component: Component,
    /// Due when this file is created, changed or removed.
    pub effects: Vec<Effect>,
}

/// A condition that must hold on the host besides file contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// A timer unit must be enabled (its wants symlink present).
    TimerEnabled {
        /// Unit name.
        unit: String,
    },
}

/// Everything the host layer should look like.
#[derive(Debug, Clone, Default)]
pub struct DesiredState {
    /// Directories, in creation order.
    pub dirs: Vec<DesiredDir>,
    /// Files, in write order.
    pub files: Vec<DesiredFile>,
    /// Other conditions.
    pub requirements: Vec<Requirement>,
    /// Things a user should know (conflicting k3s flags, missing units).
    pub warnings: Vec<String>,
    /// Components left out, with the reason.
    pub skipped: Vec<(Component, String)>,
}

impl DesiredState {
    /// Computes the desired host state.
    pub fn compute(root: &Sysroot, cfg: &Config, facts: &Facts) -> Result<DesiredState, String> {
        let mut d = DesiredState::default();
        audit::contribute(root, cfg, facts, &mut d)?;
        watchdog::contribute(cfg, facts, &mut d);
        throttle::contribute(root, cfg, facts, &mut d);
        guard::check(cfg, facts, &d)?;
        Ok(d)
    }

    /// The desired file at a host path.
    pub fn file(&self, path: &str) -> Option<&DesiredFile> {
        self.files.iter().find(|f| f.path == path)
    }
}

/// The header every generated file starts with.
pub fn managed_header(comment: &str) -> String {
    format!(
        "{comment} Managed by sightline: edits are reverted. Configure /etc/sightline/config.toml instead.\n"
    )
}
