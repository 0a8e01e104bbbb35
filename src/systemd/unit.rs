//! The unit and job states systemd reports, as types.
//!
//! The names are systemd's own (`systemctl --state=help`,
//! `org.freedesktop.systemd1(5)`); a value this release does not know is
//! kept verbatim rather than refused, since newer systemd versions add
//! states.

use serde::{Deserialize, Serialize};

/// A unit's `ActiveState`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActiveState {
    /// Started and running.
    Active,
    /// Reloading its configuration.
    Reloading,
    /// Not running.
    #[default]
    Inactive,
    /// Stopped after a failure (exit code, signal, timeout, start limit).
    Failed,
    /// Starting.
    Activating,
    /// Stopping.
    Deactivating,
    /// Being cleaned or otherwise maintained.
    Maintenance,
    /// Extension images being refreshed (systemd 254+).
    Refreshing,
    /// A state newer than this release.
    #[serde(untagged)]
    Other(String),
}

impl ActiveState {
    /// Parses systemd's spelling.
    pub fn parse(s: &str) -> ActiveState {
        match s {
            "active" => ActiveState::Active,
            "reloading" => ActiveState::Reloading,
            "inactive" => ActiveState::Inactive,
            "failed" => ActiveState::Failed,
            "activating" => ActiveState::Activating,
            "deactivating" => ActiveState::Deactivating,
            "maintenance" => ActiveState::Maintenance,
            "refreshing" => ActiveState::Refreshing,
            other => ActiveState::Other(other.to_string()),
        }
    }

    /// systemd's spelling.
    pub fn as_str(&self) -> &str {
        match self {
            ActiveState::Active => "active",
            ActiveState::Reloading => "reloading",
            ActiveState::Inactive => "inactive",
            ActiveState::Failed => "failed",
            ActiveState::Activating => "activating",
            ActiveState::Deactivating => "deactivating",
            ActiveState::Maintenance => "maintenance",
            ActiveState::Refreshing => "refreshing",
            ActiveState::Other(s) => s,
        }
    }

    /// Running or on its way to running: a restart would interrupt it.
    pub fn is_running(&self) -> bool {
        matches!(
            self,
            ActiveState::Active | ActiveState::Activating | ActiveState::Reloading
        )
    }
}

impl std::fmt::Display for ActiveState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A unit's `LoadState`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LoadState {
    /// The unit file was found and parsed.
    Loaded,
    /// No unit file.
    #[default]
    NotFound,
    /// The unit file has errors.
    BadSetting,
    /// Loading failed.
    Error,
    /// Masked.
    Masked,
    /// A state newer than this release.
    #[serde(untagged)]
    Other(String),
}

impl LoadState {
    /// Parses systemd's spelling.
    pub fn parse(s: &str) -> LoadState {
        match s {
            "loaded" => LoadState::Loaded,
            "not-found" => LoadState::NotFound,
            "bad-setting" => LoadState::BadSetting,
            "error" => LoadState::Error,
            "masked" => LoadState::Masked,
            other => LoadState::Other(other.to_string()),
        }
    }

    /// systemd's spelling.
    pub fn as_str(&self) -> &str {
        match self {
            LoadState::Loaded => "loaded",
            LoadState::NotFound => "not-found",
            LoadState::BadSetting => "bad-setting",
            LoadState::Error => "error",
            LoadState::Masked => "masked",
            LoadState::Other(s) => s,
        }
    }
}

impl std::fmt::Display for LoadState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The result of a finished job, from the `JobRemoved` signal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobResult {
    /// The job succeeded.
    Done,
    /// Cancelled before it finished.
    Canceled,
    /// Timed out.
    Timeout,
    /// Failed.
    Failed,
    /// A dependency failed.
    Dependency,
    /// Not applicable to the unit's state.
    Skipped,
    /// A result newer than this release.
    #[serde(untagged)]
    Other(String),
}

impl JobResult {
    /// Parses systemd's spelling.
    pub fn parse(s: &str) -> JobResult {
        match s {
            "done" => JobResult::Done,
            "canceled" => JobResult::Canceled,
            "timeout" => JobResult::Timeout,
            "failed" => JobResult::Failed,
            "dependency" => JobResult::Dependency,
            "skipped" => JobResult::Skipped,
            other => JobResult::Other(other.to_string()),
        }
    }

    /// systemd's spelling.
    pub fn as_str(&self) -> &str {
        match self {
            JobResult::Done => "done",
            JobResult::Canceled => "canceled",
            JobResult::Timeout => "timeout",
            JobResult::Failed => "failed",
            JobResult::Dependency => "dependency",
            JobResult::Skipped => "skipped",
            JobResult::Other(s) => s,
        }
    }

    /// Fails unless the job succeeded.
    pub fn expect_done(&self, unit: &str, what: &str) -> anyhow::Result<()> {
        if *self != JobResult::Done {
            anyhow::bail!("{what} {unit}: job result {self}");
        }
        Ok(())
    }
}

impl std::fmt::Display for JobResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The properties of a unit that sightline reads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UnitStatus {
    /// `ActiveState`.
    pub active_state: ActiveState,
    /// `SubState`: `running`, `auto-restart`, `dead`... (unit-type specific,
    /// so kept as systemd spells it).
    pub sub_state: String,
    /// Hex InvocationID; changes on every start.
    pub invocation_id: String,
    /// Automatic restarts since the unit was last started by a job.
    pub n_restarts: u32,
    /// ExecMainStartTimestamp, µs since the epoch (0 when never started).
    pub exec_main_start_us: u64,
    /// `LoadState`.
    pub load_state: LoadState,
}

/// A unit's start rate limit: at most `burst` starts within `interval_us`;
/// one more and systemd fails the unit with `start-limit-hit` (systemd
/// src/core/unit.c `unit_test_start_limit`, src/basic/ratelimit.c).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StartLimit {
    /// The window, µs; 0 disables the limit.
    pub interval_us: u64,
    /// Starts allowed in the window; 0 disables the limit.
    pub burst: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_and_keep_unknown_values() {
        for s in ["active", "failed", "activating", "refreshing", "weird"] {
            assert_eq!(ActiveState::parse(s).as_str(), s);
            let json = serde_json::to_string(&ActiveState::parse(s)).unwrap();
            assert_eq!(json, format!("\"{s}\""));
            assert_eq!(
                serde_json::from_str::<ActiveState>(&json).unwrap(),
                ActiveState::parse(s)
            );
        }
        assert_eq!(LoadState::parse("not-found"), LoadState::NotFound);
        assert_eq!(JobResult::parse("done"), JobResult::Done);
        assert!(
            JobResult::parse("dependency")
                .expect_done("k3s.service", "RestartUnit")
                .is_err()
        );
        assert!(ActiveState::Activating.is_running());
        assert!(!ActiveState::Failed.is_running());
    }
}
