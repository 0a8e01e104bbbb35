//! A systemd client: jobs with results, unit properties, enablement and the
//! manager's runtime watchdog.

use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use futures_util::StreamExt;
use zbus::Connection;
use zbus::proxy::CacheProperties;

use super::proxy::{ManagerProxy, ServiceProxy, UnitProxy};
use super::unit::{ActiveState, JobResult, LoadState, StartLimit, UnitStatus};

/// A connection to one systemd instance.
#[derive(Debug, Clone)]
pub struct SystemdClient {
    conn: Connection,
    subscribed: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl SystemdClient {
    /// Connects to the system bus, or to `address` (e.g.
    /// `unix:path=/proc/PID/root/run/dbus/system_bus_socket`).
    pub async fn connect(address: Option<&str>) -> Result<SystemdClient> {
        let conn = match address {
            Some(a) => zbus::connection::Builder::address(a)
                .build()
                .await
                .with_context(|| format!("connecting to the D-Bus system bus at {a}"))?,
            None => Connection::system()
                .await
                .context("connecting to the D-Bus system bus")?,
        };
        Ok(SystemdClient {
            conn,
            subscribed: Default::default(),
        })
    }

    /// The bus connection, for the reads defined beside this client.
    pub(super) fn connection(&self) -> &Connection {
        &self.conn
    }

    async fn manager(&self) -> Result<ManagerProxy<'static>> {
        Ok(ManagerProxy::builder(&self.conn)
            .cache_properties(CacheProperties::No)
            .build()
            .await?)
    }

    /// `daemon-reload`.
    pub async fn reload(&self) -> Result<()> {
        self.manager().await?.reload().await.context("Reload")
    }

    /// Restarts a unit with an explicit job mode and waits for the job.
    pub async fn restart_unit(
        &self,
        unit: &str,
        mode: &str,
        timeout: Duration,
    ) -> Result<JobResult> {
        self.run_job(unit, "RestartUnit", timeout, |m| async move {
            m.restart_unit(unit, mode).await
        })
        .await
    }

    /// Stops a unit with an explicit job mode and waits for the job.
    pub async fn stop_unit(&self, unit: &str, mode: &str, timeout: Duration) -> Result<JobResult> {
        self.run_job(unit, "StopUnit", timeout, |m| async move {
            m.stop_unit(unit, mode).await
        })
        .await
    }

    /// Subscribes to JobRemoved *before* queueing the job, so its completion
    /// cannot be missed, then waits for it.
    async fn run_job<F, Fut>(
        &self,
        unit: &str,
        what: &str,
        timeout: Duration,
        queue: F,
    ) -> Result<JobResult>
    where
        F: FnOnce(ManagerProxy<'static>) -> Fut,
        Fut: std::future::Future<Output = zbus::Result<zbus::OwnedObjectPath>>,
    {
        let m = self.manager().await?;
        // systemd refuses a second Subscribe on the same connection.
        if !self
            .subscribed
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            match m.subscribe().await {
                Ok(()) => {}
                Err(zbus::Error::MethodError(name, _, _))
                    if name.as_str().ends_with("AlreadySubscribed") => {}
                Err(e) => {
                    self.subscribed
                        .store(false, std::sync::atomic::Ordering::SeqCst);
                    return Err(e).context("Subscribe");
                }
            }
        }
        let mut removed = m
            .receive_job_removed()
            .await
            .context("watching JobRemoved")?;
        let job = queue(m.clone())
            .await
            .with_context(|| format!("{what} {unit}"))?;
        let wait = async {
            while let Some(sig) = removed.next().await {
                let args = sig.args().context("decoding JobRemoved")?;
                if *args.job() == job {
                    return Ok(JobResult::parse(args.result()));
                }
            }
            Err(anyhow!(
                "the D-Bus connection closed while waiting for the {what} job of {unit}"
            ))
        };
        tokio::time::timeout(timeout, wait).await.map_err(|_| {
            anyhow!(
                "the {what} job of {unit} did not finish within {} s",
                timeout.as_secs()
            )
        })?
    }

    /// Reads the properties sightline acts on. Every converge asks this of
    /// k3s, so the reads go out together, at the path systemd serves the
    /// unit at: one round trip to the bus, not one per property.
    pub async fn unit_status(&self, unit: &str) -> Result<UnitStatus> {
        self.unit_status_at(unit)
            .await
            .with_context(|| format!("reading the state of {unit} from systemd"))
    }

    async fn unit_status_at(&self, unit: &str) -> Result<UnitStatus> {
        let path = super::unit_object_path(unit)?;
        let u = UnitProxy::builder(&self.conn)
            .path(path.clone())
            .cache_properties(CacheProperties::No)
            .build()
            .await?;
        let s = ServiceProxy::builder(&self.conn)
            .path(path)
            .cache_properties(CacheProperties::No)
            .build()
            .await?;
        // Asked of every unit with the rest, the service's two reads are
        // used only for a service that loaded (any other answers an error).
        let (load_state, active_state, sub_state, invocation_id, n_restarts, exec_main_start) = tokio::join!(
            u.load_state(),
            u.active_state(),
            u.sub_state(),
            u.invocation_id(),
            s.n_restarts(),
            s.exec_main_start_timestamp()
        );
        let mut status = UnitStatus {
            active_state: ActiveState::parse(&active_state?),
            sub_state: sub_state?,
            invocation_id: hex::encode(invocation_id.unwrap_or_default()),
            load_state: LoadState::parse(&load_state?),
            ..UnitStatus::default()
        };
        if unit.ends_with(".service") && status.load_state == LoadState::Loaded {
            status.n_restarts = n_restarts?;
            status.exec_main_start_us = exec_main_start?;
        }
        Ok(status)
    }

    /// `systemctl reset-failed UNIT`: a unit that hit its start rate limit
    /// refuses every start until this (or the window passes).
    pub async fn reset_failed(&self, unit: &str) -> Result<()> {
        self.manager()
            .await?
            .reset_failed_unit(unit)
            .await
            .with_context(|| format!("ResetFailedUnit {unit}"))
    }

    /// The unit's start rate limit (`StartLimitIntervalUSec`,
    /// `StartLimitBurst`).
    pub async fn start_limit(&self, unit: &str) -> Result<StartLimit> {
        let u = UnitProxy::builder(&self.conn)
            .path(super::unit_object_path(unit)?)
            .cache_properties(CacheProperties::No)
            .build()
            .await?;
        let (interval_us, burst) =
            tokio::join!(u.start_limit_interval_usec(), u.start_limit_burst());
        let context = || format!("reading the start limit of {unit} from systemd");
        Ok(StartLimit {
            interval_us: interval_us.with_context(context)?,
            burst: burst.with_context(context)?,
        })
    }

    /// `systemctl enable UNIT`.
    pub async fn enable(&self, unit: &str) -> Result<()> {
        self.manager()
            .await?
            .enable_unit_files(&[unit], false, true)
            .await
            .with_context(|| format!("EnableUnitFiles {unit}"))?;
        Ok(())
    }

    /// `systemctl disable UNIT`.
    pub async fn disable(&self, unit: &str) -> Result<()> {
        self.manager()
            .await?
            .disable_unit_files(&[unit], false)
            .await
            .with_context(|| format!("DisableUnitFiles {unit}"))?;
        Ok(())
    }

    /// Sets the manager's RuntimeWatchdogUSec and returns what it reads back.
    pub async fn set_runtime_watchdog(&self, usec: u64) -> Result<u64> {
        let m = self.manager().await?;
        m.set_runtime_watchdog_usec(usec)
            .await
            .context("setting RuntimeWatchdogUSec")?;
        m.runtime_watchdog_usec()
            .await
            .context("reading RuntimeWatchdogUSec")
    }
}
