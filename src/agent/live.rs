//! The live adapters: systemd over D-Bus and the k3s API over TLS, behind
//! the engine's [`Ops`] trait.

use std::time::Duration;

use anyhow::{Context, Result};

use super::Ctx;
use crate::config::LoadedConfig;
use crate::engine::ops::{JobResult, Ops, StartLimit, UnitStatus};

/// Connects to systemd when this root has one: the host's system bus for
/// `--root /`, or an explicit `--system-bus`.
pub async fn connect_ops(ctx: &Ctx, cfg: &LoadedConfig, needed: bool) -> Result<Option<LiveOps>> {
    connect_ops_over(ctx, cfg, needed, None).await
}

/// [`connect_ops`] over a connection already open to the same systemd
/// (the one [`super::observe_keeping_bus`] used), when there is one.
pub async fn connect_ops_over(
    ctx: &Ctx,
    cfg: &LoadedConfig,
    needed: bool,
    open: Option<crate::systemd::SystemdClient>,
) -> Result<Option<LiveOps>> {
    if !needed || (!ctx.root.is_host() && ctx.system_bus.is_none()) {
        return Ok(None);
    }
    if let Some(systemd) = open {
        return Ok(Some(LiveOps::over(systemd, &ctx.root, &cfg.config)));
    }
    LiveOps::connect(&ctx.root, &cfg.config, ctx.system_bus.as_deref()).await.map(Some).context(
        "cannot reach systemd over D-Bus; run with --no-restart to write the files and list the follow-up effects",
    )
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
        Ok(LiveOps::over(
            crate::systemd::SystemdClient::connect(bus).await?,
            root,
            cfg,
        ))
    }

    /// Over a connection already open.
    fn over(
        systemd: crate::systemd::SystemdClient,
        root: &crate::sysroot::Sysroot,
        cfg: &crate::config::Config,
    ) -> LiveOps {
        LiveOps {
            systemd,
            root: root.clone(),
            cfg: cfg.clone(),
            api: std::cell::OnceCell::new(),
        }
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
        self.systemd
            .restart_unit(unit, "replace", Duration::from_secs(60))
            .await?
            .expect_done(unit, "RestartUnit")
    }

    async fn disable_and_stop(&self, unit: &str) -> Result<()> {
        self.systemd
            .stop_unit(unit, "replace", Duration::from_secs(60))
            .await?
            .expect_done(unit, "StopUnit")?;
        self.systemd.disable(unit).await
    }

    async fn restart_unit(&self, unit: &str, job_timeout: Duration) -> Result<JobResult> {
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

    async fn start_limit(&self, unit: &str) -> Result<Option<StartLimit>> {
        self.systemd.start_limit(unit).await.map(Some)
    }

    async fn reset_failed(&self, unit: &str) -> Result<()> {
        self.systemd.reset_failed(unit).await
    }
}
