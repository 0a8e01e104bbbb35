//! What the engine needs from the init system and from k3s, as a trait so
//! the restart/rollback logic can be exercised against a scripted fake as
//! well as the real systemd.

use std::time::Duration;

use anyhow::Result;
use serde::Serialize;

/// The properties of a unit that sightline reads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UnitStatus {
    /// `active`, `activating`, `failed`, `inactive`...
    pub active_state: String,
    /// `running`, `auto-restart`, `dead`...
    pub sub_state: String,
    /// Hex InvocationID; changes on every start.
    pub invocation_id: String,
    /// Automatic restarts since the unit was last started by a job.
    pub n_restarts: u32,
    /// ExecMainStartTimestamp, µs since the epoch (0 when never started).
    pub exec_main_start_us: u64,
    /// LoadState: `loaded`, `not-found`...
    pub load_state: String,
}

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
    async fn restart_unit(&self, unit: &str, job_timeout: Duration) -> Result<String>;
    /// Reads a unit's status.
    async fn unit_status(&self, unit: &str) -> Result<UnitStatus>;
    /// One readiness probe of the k3s API: Ok when /readyz answers 200.
    async fn k3s_ready(&self) -> Result<(), String>;
}

/// The real thing: systemd over D-Bus and the k3s API over TLS.
#[derive(Debug)]
pub struct LiveOps {
    systemd: crate::systemd::SystemdClient,
    root: crate::sysroot::Sysroot,
    cfg: crate::config::Config,
    api: std::cell::OnceCell<crate::k3s::K3sApi>,
}

impl LiveOps {
    /// Connects to systemd; the k3s API client is built on first use, since
    /// its certificates only exist once k3s has started.
    pub async fn connect(
        root: &crate::sysroot::Sysroot,
        cfg: &crate::config::Config,
        bus: Option<&str>,
    ) -> Result<LiveOps> {
        Ok(LiveOps {
            systemd: crate::systemd::SystemdClient::connect(bus).await?,
            root: root.clone(),
            cfg: cfg.clone(),
            api: std::cell::OnceCell::new(),
        })
    }

    fn api(&self) -> Result<&crate::k3s::K3sApi, String> {
        if let Some(a) = self.api.get() {
            return Ok(a);
        }
        let a =
            crate::k3s::K3sApi::from_config(&self.root, &self.cfg).map_err(|e| format!("{e:#}"))?;
        Ok(self.api.get_or_init(|| a))
    }
}

impl Ops for LiveOps {
    async fn daemon_reload(&self) -> Result<()> {
        self.systemd.reload().await
    }

    async fn set_runtime_watchdog(&self, usec: u64) -> Result<u64> {
        self.systemd.set_runtime_watchdog(usec).await
    }

    async fn enable_and_restart(&self, unit: &str) -> Result<()> {
        self.systemd.enable(unit).await?;
        let r = self
            .systemd
            .restart_unit(unit, "replace", Duration::from_secs(60))
            .await?;
        crate::systemd::expect_done(unit, "RestartUnit", &r)
    }

    async fn disable_and_stop(&self, unit: &str) -> Result<()> {
        let r = self
            .systemd
            .stop_unit(unit, "replace", Duration::from_secs(60))
            .await?;
        crate::systemd::expect_done(unit, "StopUnit", &r)?;
        self.systemd.disable(unit).await
    }

    async fn restart_unit(&self, unit: &str, job_timeout: Duration) -> Result<String> {
        self.systemd
            .restart_unit(unit, "replace", job_timeout)
            .await
    }

    async fn unit_status(&self, unit: &str) -> Result<UnitStatus> {
        self.systemd.unit_status(unit).await
    }

    async fn k3s_ready(&self) -> Result<(), String> {
        self.api()?.readyz().await
    }
}
