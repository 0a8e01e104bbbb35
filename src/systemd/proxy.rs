//! The small slice of systemd's D-Bus API that sightline uses.

use zbus::OwnedObjectPath;
use zbus::proxy;

/// org.freedesktop.systemd1.Manager
#[proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1"
)]
pub trait Manager {
    /// Reload unit files (daemon-reload).
    fn reload(&self) -> zbus::Result<()>;
    /// Ask for JobRemoved and other signals to be sent to this client.
    fn subscribe(&self) -> zbus::Result<()>;
    /// Start a unit; returns the job.
    fn start_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    /// Stop a unit; returns the job.
    fn stop_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    /// Restart a unit (start it when stopped); returns the job.
    fn restart_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    /// Clear a unit's `failed` state and its start rate-limit counter
    /// (`systemctl reset-failed`).
    fn reset_failed_unit(&self, name: &str) -> zbus::Result<()>;
    /// `systemctl enable`.
    fn enable_unit_files(
        &self,
        files: &[&str],
        runtime: bool,
        force: bool,
    ) -> zbus::Result<(bool, Vec<(String, String, String)>)>;
    /// `systemctl disable`.
    fn disable_unit_files(
        &self,
        files: &[&str],
        runtime: bool,
    ) -> zbus::Result<Vec<(String, String, String)>>;
    /// A job finished.
    #[zbus(signal)]
    fn job_removed(
        &self,
        id: u32,
        job: OwnedObjectPath,
        unit: String,
        result: String,
    ) -> zbus::Result<()>;
    /// The runtime hardware watchdog timeout, µs (writable).
    #[zbus(property, name = "RuntimeWatchdogUSec")]
    fn runtime_watchdog_usec(&self) -> zbus::Result<u64>;
    /// Sets the runtime hardware watchdog timeout.
    #[zbus(property, name = "RuntimeWatchdogUSec")]
    fn set_runtime_watchdog_usec(&self, value: u64) -> zbus::Result<()>;
}

/// org.freedesktop.systemd1.Unit
#[proxy(
    interface = "org.freedesktop.systemd1.Unit",
    default_service = "org.freedesktop.systemd1"
)]
pub trait Unit {
    /// `loaded`, `not-found`, `masked`...
    #[zbus(property)]
    fn load_state(&self) -> zbus::Result<String>;
    /// `active`, `failed`...
    #[zbus(property)]
    fn active_state(&self) -> zbus::Result<String>;
    /// `running`, `dead`...
    #[zbus(property)]
    fn sub_state(&self) -> zbus::Result<String>;
    /// The start rate-limit window, µs (0: no limit).
    #[zbus(property, name = "StartLimitIntervalUSec")]
    fn start_limit_interval_usec(&self) -> zbus::Result<u64>;
    /// Starts allowed within the window (0: no limit).
    #[zbus(property)]
    fn start_limit_burst(&self) -> zbus::Result<u32>;
    /// 128-bit id of the current invocation.
    #[zbus(property, name = "InvocationID")]
    fn invocation_id(&self) -> zbus::Result<Vec<u8>>;
}

/// org.freedesktop.systemd1.Service
#[proxy(
    interface = "org.freedesktop.systemd1.Service",
    default_service = "org.freedesktop.systemd1"
)]
pub trait Service {
    /// Automatic restarts since the last job-initiated start.
    #[zbus(property, name = "NRestarts")]
    fn n_restarts(&self) -> zbus::Result<u32>;
    /// When the main process started, µs since the epoch.
    #[zbus(property)]
    fn exec_main_start_timestamp(&self) -> zbus::Result<u64>;
}
