//! The events sightline reports on its own, and the notices the monitor
//! emits for them.

use serde::{Deserialize, Serialize};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// k3s is not active, or not ready, and was not stopped on purpose.
    K3sDown,
    /// A k3s change did not come up and sightline restored the previous files.
    K3sRolledBack,
    /// The node came back from a power loss, a watchdog reset or a panic.
    UncleanRestart,
    /// Alertmanager's always-firing Watchdog alert went silent.
    PipelineDead,
    /// A rollout stage failed and stays failed.
    StageFailed,
    /// Under-voltage or throttling occurred since boot (Raspberry Pi).
    PowerTrouble,
    /// `sightline notify --test`.
    Test,
}

/// How urgent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Someone should look now.
    Critical,
    /// Someone should look soon.
    Warning,
    /// Nothing is wrong (tests).
    Info,
}

impl EventKind {
    /// Its severity.
    pub fn severity(self) -> Severity {
        match self {
            EventKind::StageFailed | EventKind::PowerTrouble => Severity::Warning,
            EventKind::Test => Severity::Info,
            _ => Severity::Critical,
        }
    }

    /// What happened, in a few words.
    pub fn headline(self) -> &'static str {
        match self {
            EventKind::K3sDown => "k3s is down",
            EventKind::K3sRolledBack => "a k3s change was rolled back",
            EventKind::UncleanRestart => "the node came back from an unclean restart",
            EventKind::PipelineDead => "the in-cluster alert pipeline is silent",
            EventKind::StageFailed => "a monitoring stage failed",
            EventKind::PowerTrouble => "under-voltage or throttling since boot",
            EventKind::Test => "test notification",
        }
    }

    /// True for conditions that last and end with a "resolved" message;
    /// false for one-off facts.
    pub fn lasting(self) -> bool {
        matches!(
            self,
            EventKind::K3sDown | EventKind::PipelineDead | EventKind::StageFailed
        )
    }
}

/// Where in its life an event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// It started (or, for a one-off fact, it happened).
    Firing,
    /// It still lasts; sent again after `repeat_hours`.
    Repeat,
    /// It ended.
    Resolved,
}

/// One thing to tell the user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    /// What.
    pub kind: EventKind,
    /// Which one, for kinds that can happen to several things (a stage name).
    pub subject: String,
    /// Started, still going, or ended.
    pub phase: Phase,
    /// When it started, seconds since the epoch.
    pub since: u64,
    /// When this notice was made, seconds since the epoch.
    pub at: u64,
    /// What the user should know, one line each.
    pub details: Vec<String>,
}
