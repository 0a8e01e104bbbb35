//! systemd over D-Bus (zbus, async on tokio) and the sd_notify protocol.

mod client;
mod health;
pub(crate) mod notify;
mod object_path;
mod proxy;
mod unit_info;

mod unit;

pub use client::SystemdClient;
pub use health::UnitHealth;
pub use object_path::unit_object_path;
pub use unit::{ActiveState, JobResult, LoadState, StartLimit, UnitStatus};
pub use unit_info::{EnvironmentFile, UnitInfo};
