//! Follow-up effects of host changes: what systemd must do so that a written
//! file takes effect. `apply` executes them over D-Bus (see [`crate::systemd`]);
//! with `--no-restart` they are listed and kept as pending.

use serde::{Deserialize, Serialize};

/// One follow-up action. The variant order is the execution order: reload
/// first, the risky k3s restart last.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "effect", rename_all = "snake_case")]
pub enum Effect {
    /// `systemctl daemon-reload`: unit files or drop-ins changed.
    DaemonReload,
    /// Set the manager's RuntimeWatchdogUSec at runtime (0 disarms).
    ApplyWatchdog {
        /// Microseconds.
        runtime_usec: u64,
    },
    /// Enable and (re)start a timer.
    EnableTimer {
        /// Unit name.
        unit: String,
    },
    /// Stop and disable a timer.
    DisableTimer {
        /// Unit name.
        unit: String,
    },
    /// Restart k3s and wait for its API to be ready; roll back if it is not.
    RestartK3s {
        /// Unit name.
        unit: String,
    },
}

impl std::fmt::Display for Effect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Effect::DaemonReload => f.write_str("reload systemd (daemon-reload)"),
            Effect::ApplyWatchdog { runtime_usec: 0 } => {
                f.write_str("disarm the runtime watchdog (RuntimeWatchdogUSec=0)")
            }
            Effect::ApplyWatchdog { runtime_usec } => {
                write!(
                    f,
                    "apply the watchdog setting (RuntimeWatchdogUSec={}s)",
                    runtime_usec / 1_000_000
                )
            }
            Effect::EnableTimer { unit } => write!(f, "enable and start {unit}"),
            Effect::DisableTimer { unit } => write!(f, "stop and disable {unit}"),
            Effect::RestartK3s { unit } => write!(f, "restart {unit} and wait for /readyz"),
        }
    }
}

/// Sorts and de-duplicates a list of effects into execution order.
pub fn normalize(effects: &mut Vec<Effect>) {
    effects.sort();
    effects.dedup();
    // Only the last watchdog value matters.
    let mut seen_watchdog = false;
    for i in (0..effects.len()).rev() {
        if matches!(effects[i], Effect::ApplyWatchdog { .. }) {
            if seen_watchdog {
                effects.remove(i);
            }
            seen_watchdog = true;
        }
    }
}
