//! systemd over D-Bus (zbus, async on tokio) and the sd_notify protocol.

mod client;
pub mod notify;
mod proxy;
mod unit_info;

pub use client::{JobResult, SystemdClient, expect_done};
pub use unit_info::{EnvironmentFile, UnitInfo};
