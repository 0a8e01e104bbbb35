//! What a unit's state says about *why* it is not running: the properties
//! that tell "stopped by a job someone started" from "stopped by failure".
//!
//! systemd sets a service's `Result` to `success` when it was stopped by a
//! job and its processes exited cleanly, and to `exit-code`, `signal`,
//! `timeout`, `core-dump`, `watchdog`, `start-limit-hit`... otherwise
//! (systemd src/core/service.c, `service_result_to_string`). A unit waiting
//! to be restarted after a failure is `activating` with sub-state
//! `auto-restart` (systemd ≥ 254: `auto-restart`/`auto-restart-queued`).

use anyhow::Result;
use serde::{Deserialize, Serialize};
use zbus::proxy;
use zbus::proxy::CacheProperties;

use super::{ActiveState, LoadState, SystemdClient};

/// org.freedesktop.systemd1.Unit: the properties read here.
#[proxy(
    interface = "org.freedesktop.systemd1.Unit",
    default_service = "org.freedesktop.systemd1"
)]
trait UnitHealthProps {
    /// `enabled`, `disabled`, `masked`, `static`...
    #[zbus(property)]
    fn unit_file_state(&self) -> zbus::Result<String>;
    /// When the unit last entered `active`, µs since the epoch (0: never this boot).
    #[zbus(property)]
    fn active_enter_timestamp(&self) -> zbus::Result<u64>;
    /// When the unit last entered `inactive` or `failed`, µs since the epoch.
    #[zbus(property)]
    fn inactive_enter_timestamp(&self) -> zbus::Result<u64>;
    /// When the unit last left `active`, µs since the epoch.
    #[zbus(property)]
    fn active_exit_timestamp(&self) -> zbus::Result<u64>;
}

/// org.freedesktop.systemd1.Service: `Result`.
#[proxy(
    interface = "org.freedesktop.systemd1.Service",
    default_service = "org.freedesktop.systemd1"
)]
trait ServiceResult {
    /// `success`, `exit-code`, `signal`, `core-dump`, `timeout`, `watchdog`, `start-limit-hit`...
    #[zbus(property)]
    fn result(&self) -> zbus::Result<String>;
}

/// The state of a unit as far as "is it down, and on purpose?" goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitHealth {
    /// LoadState.
    pub load_state: LoadState,
    /// ActiveState.
    pub active_state: ActiveState,
    /// SubState (`running`, `auto-restart`, `dead`...).
    pub sub_state: String,
    /// The service's Result (`success` after a clean stop).
    pub result: String,
    /// UnitFileState (`enabled`, `disabled`, `masked`...).
    pub unit_file_state: String,
    /// ActiveEnterTimestamp, µs since the epoch (0: not active since boot).
    pub active_enter_us: u64,
    /// When it stopped being active (the later of ActiveExit and InactiveEnter), µs.
    pub down_since_us: u64,
}

impl SystemdClient {
    /// Reads the properties that tell a stop on purpose from a failure, all
    /// sent at once: the notifier asks this of every watched unit on each
    /// poll.
    pub async fn unit_health(&self, unit: &str) -> Result<UnitHealth> {
        let path = super::unit_object_path(unit)?;
        let u = super::proxy::UnitProxy::builder(self.connection())
            .path(path.clone())
            .cache_properties(CacheProperties::No)
            .build()
            .await?;
        let h = UnitHealthPropsProxy::builder(self.connection())
            .path(path.clone())
            .cache_properties(CacheProperties::No)
            .build()
            .await?;
        let s = ServiceResultProxy::builder(self.connection())
            .path(path)
            .cache_properties(CacheProperties::No)
            .build()
            .await?;
        // Asked of every unit with the rest, a service's Result is used
        // only when it loaded (any other unit answers an error).
        let (
            load_state,
            active_state,
            sub_state,
            unit_file_state,
            active_enter,
            active_exit,
            inactive_enter,
            result,
        ) = tokio::join!(
            u.load_state(),
            u.active_state(),
            u.sub_state(),
            h.unit_file_state(),
            h.active_enter_timestamp(),
            h.active_exit_timestamp(),
            h.inactive_enter_timestamp(),
            s.result()
        );
        let load_state = LoadState::parse(&load_state?);
        let result = if unit.ends_with(".service") && load_state == LoadState::Loaded {
            result?
        } else {
            String::new()
        };
        Ok(UnitHealth {
            active_state: ActiveState::parse(&active_state?),
            sub_state: sub_state?,
            result,
            unit_file_state: unit_file_state.unwrap_or_default(),
            active_enter_us: active_enter?,
            down_since_us: active_exit?.max(inactive_enter?),
            load_state,
        })
    }
}
