//! Is k3s down, and if so, on purpose or by failure?
//!
//! The unit's state over D-Bus answers it:
//! - the unit file is `disabled` or `masked` and the unit is not running:
//!   the administrator does not want k3s to run — on purpose;
//! - `inactive` with `Result=success` after having been active this boot:
//!   a stop job someone started (`systemctl stop k3s`) ended it cleanly —
//!   on purpose. systemd only leaves `Result=success` when the processes
//!   exited cleanly under a stop job (systemd src/core/service.c);
//! - `failed`, `activating (auto-restart)`, or `inactive` with any other
//!   Result: a failure, and systemd is (or gave up) restarting it;
//! - `inactive`, enabled, never active since boot: it has not started —
//!   a failure once it lasts past the threshold;
//! - `active` but `/readyz` does not answer `ok`: down too.

use serde::{Deserialize, Serialize};

use crate::systemd::{ActiveState, LoadState, UnitHealth};

/// What the unit and `/readyz` say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum K3sHealth {
    /// Active and `/readyz` answers `ok`.
    Ready,
    /// No such unit: nothing to watch.
    NotInstalled,
    /// Stopped by the administrator.
    OnPurpose {
        /// How that was told.
        how: OnPurpose,
    },
    /// Down by failure.
    Down {
        /// When it stopped being active, seconds since the epoch (0: unknown).
        since: u64,
        /// What the state says.
        cause: DownCause,
    },
}

/// How a stop on purpose was recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnPurpose {
    /// UnitFileState is `disabled` or `masked`.
    Disabled,
    /// `inactive` with `Result=success`: a stop job ended it cleanly.
    StoppedByJob,
}

/// Why k3s counts as down.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "detail")]
pub enum DownCause {
    /// `failed` (systemd gave up), with the Result.
    Failed(String),
    /// Waiting to be restarted after a failure, with the Result.
    Restarting(String),
    /// Stopped with a Result other than success.
    Stopped(String),
    /// Enabled but not started since boot.
    NotStarted,
    /// Still starting.
    Starting,
    /// Stopping.
    Stopping,
    /// Active, but the API is not ready.
    NotReady(String),
}

impl std::fmt::Display for OnPurpose {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OnPurpose::Disabled => "the unit is disabled",
            OnPurpose::StoppedByJob => {
                "it was stopped by a stop job and exited cleanly (inactive, Result=success)"
            }
        })
    }
}

impl std::fmt::Display for DownCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DownCause::Failed(r) => write!(
                f,
                "the unit failed (Result={r}) and systemd stopped restarting it"
            ),
            DownCause::Restarting(r) => {
                write!(f, "it keeps failing (Result={r}); systemd is restarting it")
            }
            DownCause::Stopped(r) => write!(f, "it stopped with Result={r}, not by a clean stop"),
            DownCause::NotStarted => {
                f.write_str("it is enabled but has not started since the node booted")
            }
            DownCause::Starting => f.write_str("it is still starting"),
            DownCause::Stopping => f.write_str("it is stopping"),
            DownCause::NotReady(why) => write!(f, "it runs, but the API is not ready: {why}"),
        }
    }
}

/// Classifies the unit's state and one `/readyz` probe (only asked when
/// the unit is active).
pub fn classify(unit: &UnitHealth, readyz: impl FnOnce() -> Result<(), String>) -> K3sHealth {
    if unit.load_state == LoadState::NotFound {
        return K3sHealth::NotInstalled;
    }
    let since = unit.down_since_us / 1_000_000;
    let down = |cause| K3sHealth::Down { since, cause };
    let running = matches!(
        unit.active_state,
        ActiveState::Active | ActiveState::Reloading | ActiveState::Refreshing
    );
    if !running && matches!(unit.unit_file_state.as_str(), "disabled" | "masked") {
        return K3sHealth::OnPurpose {
            how: OnPurpose::Disabled,
        };
    }
    match &unit.active_state {
        ActiveState::Active | ActiveState::Reloading | ActiveState::Refreshing => match readyz() {
            Ok(()) => K3sHealth::Ready,
            Err(why) => K3sHealth::Down {
                since: 0,
                cause: DownCause::NotReady(why),
            },
        },
        ActiveState::Failed => down(DownCause::Failed(unit.result.clone())),
        // Between two attempts (auto-restart), or starting again after a
        // failed one: the last Result still names the failure.
        ActiveState::Activating
            if unit.sub_state.starts_with("auto-restart") || unit.result != "success" =>
        {
            down(DownCause::Restarting(unit.result.clone()))
        }
        ActiveState::Activating => down(DownCause::Starting),
        ActiveState::Deactivating => down(DownCause::Stopping),
        ActiveState::Inactive if unit.result == "success" && unit.active_enter_us > 0 => {
            K3sHealth::OnPurpose {
                how: OnPurpose::StoppedByJob,
            }
        }
        ActiveState::Inactive if unit.result == "success" => down(DownCause::NotStarted),
        ActiveState::Inactive => down(DownCause::Stopped(unit.result.clone())),
        ActiveState::Maintenance | ActiveState::Other(_) => down(DownCause::Starting),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(active: ActiveState, sub: &str, result: &str, file: &str, entered: u64) -> UnitHealth {
        UnitHealth {
            load_state: LoadState::Loaded,
            active_state: active,
            sub_state: sub.into(),
            result: result.into(),
            unit_file_state: file.into(),
            active_enter_us: entered,
            down_since_us: 5_000_000,
        }
    }

    #[test]
    fn tells_purpose_from_failure() {
        let ok = || Ok(());
        let u = unit(ActiveState::Inactive, "dead", "success", "enabled", 1);
        assert_eq!(
            classify(&u, ok),
            K3sHealth::OnPurpose {
                how: OnPurpose::StoppedByJob
            }
        );
        let u = unit(ActiveState::Failed, "failed", "exit-code", "disabled", 1);
        assert_eq!(
            classify(&u, ok),
            K3sHealth::OnPurpose {
                how: OnPurpose::Disabled
            }
        );
        let u = unit(ActiveState::Failed, "failed", "exit-code", "enabled", 1);
        assert_eq!(
            classify(&u, ok),
            K3sHealth::Down {
                since: 5,
                cause: DownCause::Failed("exit-code".into())
            }
        );
        let u = unit(
            ActiveState::Activating,
            "auto-restart",
            "signal",
            "enabled",
            1,
        );
        assert!(matches!(
            classify(&u, ok),
            K3sHealth::Down {
                cause: DownCause::Restarting(_),
                ..
            }
        ));
        let u = unit(ActiveState::Inactive, "dead", "success", "enabled", 0);
        assert!(matches!(
            classify(&u, ok),
            K3sHealth::Down {
                cause: DownCause::NotStarted,
                ..
            }
        ));
        let u = unit(ActiveState::Active, "running", "success", "enabled", 1);
        assert_eq!(classify(&u, ok), K3sHealth::Ready);
        assert!(matches!(
            classify(&u, || Err("503".into())),
            K3sHealth::Down {
                cause: DownCause::NotReady(_),
                ..
            }
        ));
    }
}
