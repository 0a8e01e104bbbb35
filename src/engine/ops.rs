//! What the engine needs from the init system and from k3s, as a trait so
//! the restart/rollback logic can be exercised against a scripted fake as
//! well as the real systemd.

use std::time::Duration;

use anyhow::Result;

pub use crate::systemd::{ActiveState, JobResult, LoadState, StartLimit, UnitStatus};

/// Operations on the host's init system and on k3s.
#[allow(async_fn_in_trait)]
pub trait Ops {
    /// Reloads unit files.
    async fn daemon_reload(&self) -> Result<()>;
    /// Sets RuntimeWatchdogUSec and returns the value read back.
    async fn set_runtime_watchdog(&self, usec: u64) -> Result<u64>;
    /// Enables a unit and restarts it.
    async fn enable_and_restart(&self, unit: &str) -> Result<()>;
    /// Stops and disables a unit.
    async fn disable_and_stop(&self, unit: &str) -> Result<()>;
    /// Restarts a unit (mode "replace") and returns the job result.
    async fn restart_unit(&self, unit: &str, job_timeout: Duration) -> Result<JobResult>;
    /// Reads a unit's status.
    async fn unit_status(&self, unit: &str) -> Result<UnitStatus>;
    /// One readiness probe of the k3s API: Ok when /readyz answers 200.
    async fn k3s_ready(&self) -> Result<(), String>;
    /// The unit's start rate limit; `None` when it cannot be read, and
    /// restarts are then not paced.
    async fn start_limit(&self, _unit: &str) -> Result<Option<StartLimit>> {
        Ok(None)
    }
    /// Clears a unit's `failed` state and start rate-limit counter.
    async fn reset_failed(&self, unit: &str) -> Result<()> {
        anyhow::bail!("cannot reset the failed state of {unit} here")
    }
}
